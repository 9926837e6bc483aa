"""wsnb.run: sync entry point in a script and inside a running notebook loop."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import nbformat
import pytest
from nbclient import NotebookClient

SCRIPT = textwrap.dedent("""
    import asyncio, sys
    original_run, original_task = asyncio.run, asyncio.Task
    import wsnb
    assert asyncio.run is original_run and asyncio.Task is original_task
    assert not hasattr(asyncio, "_nest_patched"), "import wsnb patched asyncio"
    assert "nest_asyncio2" not in sys.modules

    async def main(x):
        await asyncio.sleep(0.01)
        return x * 2

    assert wsnb.run(main(21)) == 42
    assert "nest_asyncio2" not in sys.modules  # no running loop: plain asyncio.run
    print("ok")
""")


def test_run_in_a_plain_script_and_import_does_not_patch() -> None:
    out = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


NOTEBOOK_CELLS = [
    """
    import asyncio, sys
    import wsnb
    assert not hasattr(asyncio, "_nest_patched"), "import wsnb patched asyncio"
    assert "nest_asyncio2" not in sys.modules
    asyncio.get_running_loop()  # the kernel's loop runs under every cell
    """,
    """
    async def main(x):
        await asyncio.sleep(0.01)
        return x * 2

    coro = main(1)
    try:
        asyncio.run(coro)
    except RuntimeError as exc:
        error = str(exc)
    coro.close()
    assert "cannot be called from a running event loop" in error, error
    """,
    """
    assert wsnb.run(main(21)) == 42
    assert hasattr(asyncio, "_nest_patched")  # applied lazily, on first need
    assert wsnb.run(main(2)) == 4  # and again
    """,
    """
    dash = wsnb.demo()
    await dash.client.connect(timeout=10)
    receipt = wsnb.run(dash.client.send({"from": "sync code"}))
    assert wsnb.run(receipt.wait(5)).state == "acked"
    dash.shutdown()
    """,
]


@pytest.mark.slow
def test_run_inside_a_notebook_kernel() -> None:
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(textwrap.dedent(c)) for c in NOTEBOOK_CELLS]
    NotebookClient(nb, timeout=60, kernel_name="python3").execute()
    errors = [o for cell in nb.cells for o in cell.outputs if o.output_type == "error"]
    assert not errors
