"""wsnb keeps heartbeating and acking while a notebook cell blocks (issue 2, "Where it runs").

On ipykernel 7 a blocking cell stalls the kernel's own loop; wsnb's loop
thread must not stall with it. Executed through a real kernel with nbclient.
"""

from __future__ import annotations

import nbformat
import pytest
from nbclient import NotebookClient

CELLS = [
    # 1: connect; the server is slow on purpose, so acks arrive during cell 2
    """
import time, wsnb
server = wsnb.Server(port=0, token="demo", heartbeat_ms=200, workers=1,
                     process_delay=(0.01, 0.01))
await server.start()
client = wsnb.Client(server.url, token="demo")
await client.connect(timeout=5)
receipts = [await client.send({"i": i}) for i in range(100)]
assert not all(r.state == "acked" for r in receipts)
""",
    # 2: block the kernel across ~7 heartbeat periods (the point of the test, not a wait)
    """
t0 = time.time()
time.sleep(1.5)
t1 = time.time()
""",
    # 3: nothing went dead, and the work got done during the sleep
    """
import pandas as pd
assert client.ready and client.reconnects == 0
assert all(r.state == "acked" for r in receipts), [r.state for r in receipts][-5:]
acks = client.timeline.acks()
during = acks[(acks.time >= pd.Timestamp(t0, unit="s", tz="UTC"))
              & (acks.time <= pd.Timestamp(t1, unit="s", tz="UTC"))]
assert len(during) > 0, "no ack arrived while the cell blocked"
pings = client.timeline.events().query("type == 'ping' and direction == 'in'")
pings_during = pings[(pings.time >= pd.Timestamp(t0, unit="s", tz="UTC"))
                     & (pings.time <= pd.Timestamp(t1, unit="s", tz="UTC"))]
assert len(pings_during) >= 4, len(pings_during)
states = client.timeline.states()
assert not states.detail.str.contains("dead link").any()
assert server.delivered == [{"i": i} for i in range(100)]
await client.close(); await server.close()
print("ok", len(during), len(pings_during))
""",
]


def test_blocking_cell_does_not_stall_wsnb(tmp_path) -> None:
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(src.strip()) for src in CELLS]
    client = NotebookClient(nb, timeout=60, kernel_name="python3",
                            resources={"metadata": {"path": str(tmp_path)}})
    try:
        client.execute()
    except Exception as exc:  # show the failing cell's traceback in the test output
        pytest.fail(str(exc)[-3000:])
    assert nb.cells[2].outputs[0]["text"].startswith("ok")
