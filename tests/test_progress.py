"""Progress bars (issue 6): the shared helper, large sends with a bar, ``wsnb soak``.

Everything on 127.0.0.1; the soak runs as a subprocess, like a user would run it.
"""

from __future__ import annotations

import asyncio
import io
import os
import random
import re
import string
import subprocess
import sys
import time

import pytest

import wsnb
from wsnb import cli
from wsnb import progress as progress_module
from wsnb.progress import NoBar, progress, send_with_progress

CLI = [sys.executable, "-m", "wsnb"]
ENV = {k: v for k, v in os.environ.items() if k not in ("WSNB_TOKEN", "WSNB_SECRET")}
MAX_SIZE = 64 * 1024


def incompressible(n: int, seed: int = 3) -> str:
    """Random letters: payloads over 64 KiB are deflated, and this must stay big."""
    return "".join(random.Random(seed).choices(string.ascii_letters + string.digits, k=n))


@pytest.fixture
def bars(monkeypatch: pytest.MonkeyPatch) -> list:
    """Every bar `send_with_progress` makes, kept for inspection after it closed them."""
    made: list = []

    def spy(*args: object, **kwargs: object) -> object:
        bar = progress(*args, **kwargs)  # type: ignore[arg-type]
        made.append(bar)
        return bar

    monkeypatch.setattr(progress_module, "progress", spy)
    return made


# ----- the helper ----------------------------------------------------------------------


def test_no_op_bar_when_tqdm_is_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [m for m in sys.modules if m == "tqdm" or m.startswith("tqdm.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "tqdm", None)  # `import tqdm...` raises ImportError
    monkeypatch.setitem(sys.modules, "tqdm.auto", None)
    with pytest.raises(ImportError):
        import tqdm.auto  # noqa: F401

    bar = progress(10, "upload", enabled=True)
    assert isinstance(bar, NoBar)
    with bar as same:
        assert same is bar
        bar.update()
        bar.update(4)
        bar.set_description("renamed")
        bar.set_postfix_str("half")
        bar.refresh()
    bar.close()  # closing twice is harmless
    assert (bar.n, bar.total, bar.desc, bar.postfix) == (5, 10, "renamed", "half")


def test_wsnb_imports_without_tqdm() -> None:
    code = ("import sys; sys.modules['tqdm'] = None\n"
            "import wsnb, wsnb.cli, wsnb.progress\n"
            "bar = wsnb.progress.progress(3, 'x', enabled=True)\n"
            "print(type(bar).__name__)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, env=ENV)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "NoBar"


def test_bar_only_on_a_terminal_or_in_a_kernel(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("tqdm")
    monkeypatch.setattr(progress_module, "in_kernel", lambda: False)
    assert isinstance(progress(5, "quiet", file=io.StringIO()), NoBar)  # not a TTY
    assert isinstance(progress(5, "off", enabled=False), NoBar)

    out = io.StringIO()
    with progress(5, "forced", enabled=True, file=out) as bar:
        assert not isinstance(bar, NoBar)
        bar.update(5)
    assert "forced" in out.getvalue() and "5/5" in out.getvalue()

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    bar = progress(5, "tty", file=Terminal())
    assert not isinstance(bar, NoBar)
    bar.close()

    monkeypatch.setattr(progress_module, "in_kernel", lambda: True)  # a Jupyter kernel
    bar = progress(5, "kernel", file=io.StringIO())
    assert not isinstance(bar, NoBar)
    bar.close()


# ----- large sends -----------------------------------------------------------------------


@pytest.mark.parametrize("enabled", [True, None])
async def test_send_with_progress_follows_the_chunks_to_the_ack(make_client, bars,
                                                                enabled) -> None:
    payload = incompressible(600_000)
    async with wsnb.Server(port=0, token="demo", max_size=MAX_SIZE) as srv:
        client = make_client(srv.url)
        await client.connect(timeout=5)
        receipt = await send_with_progress(client, payload, desc="upload", enabled=enabled)
        assert receipt.state == "acked"
        assert receipt.chunks is not None
        written, total = receipt.chunks
        assert written == total > 8  # 600 kB over 64 KiB frames
        assert len(bars) == 1
        bar = bars[0]
        assert isinstance(bar, NoBar) == (enabled is None)  # pytest's stderr is not a TTY
        assert bar.total == total and bar.n == total
        assert bar.desc.startswith("upload")
        assert srv.delivered == [payload]


async def test_send_with_progress_from_another_loop(make_client, bars) -> None:
    """The client on wsnb's loop thread, as in a notebook: the bar is polled across threads."""
    payload = incompressible(1_500_000, seed=4)
    async with wsnb.Server(port=0, token="demo", max_size=MAX_SIZE) as srv:
        client = make_client(srv.url, loop="thread")
        await client.connect(timeout=5)
        receipt = await send_with_progress(client, payload, timeout=30)
        assert receipt.state == "acked"
        assert receipt.chunks is not None and receipt.chunks[0] == receipt.chunks[1] > 20
        assert [(b.n, b.total) for b in bars] == [(receipt.chunks[1],) * 2]
        await client.drain(timeout=10)
        assert srv.delivered == [payload]


async def test_single_frame_messages_show_no_bar(make_client, server, bars) -> None:
    client = make_client(server.url)
    await client.connect(timeout=5)
    receipt = await send_with_progress(client, {"small": 1})
    assert receipt.state == "acked" and receipt.chunks is None
    assert bars == []


async def test_send_with_progress_times_out_while_queued(make_client, server, bars) -> None:
    client = make_client(server.url)  # never connected: the message waits in the outbox
    started = time.monotonic()
    with pytest.raises(TimeoutError, match="not acked within 0.3 s"):
        await send_with_progress(client, {"x": 1}, timeout=0.3)
    assert time.monotonic() - started < 5
    assert bars == []


KERNEL_CELL = """
import random, string, wsnb
from wsnb.progress import NoBar, send_with_progress
server = wsnb.Server(port=0, token="demo", max_size=64 * 1024)
await server.start()
client = wsnb.Client(server.url, token="demo")
await client.connect(timeout=5)
payload = "".join(random.Random(1).choices(string.ascii_letters, k=1_000_000))
receipt = await send_with_progress(client, payload, desc="upload")
assert receipt.state == "acked" and receipt.chunks[0] == receipt.chunks[1] > 8
assert server.delivered == [payload]
await client.close(); await server.close()
print("ok", receipt.chunks)
"""


def test_send_with_progress_shows_an_ipywidgets_bar_in_a_kernel(tmp_path) -> None:
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    pytest.importorskip("tqdm")
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(KERNEL_CELL.strip())]
    runner = nbclient.NotebookClient(nb, timeout=60, kernel_name="python3",
                                     resources={"metadata": {"path": str(tmp_path)}})
    try:
        runner.execute()
    except Exception as exc:  # show the failing cell's traceback in the test output
        pytest.fail(str(exc)[-3000:])
    outputs = nb.cells[0].outputs
    widgets = [o for o in outputs if o["output_type"] == "display_data"
               and "application/vnd.jupyter.widget-view+json" in o["data"]]
    assert len(widgets) == 1, outputs  # one tqdm.notebook bar (an ipywidgets HBox)
    assert "upload" in widgets[0]["data"]["text/plain"], widgets[0]["data"]["text/plain"]
    assert any(o.get("text", "").startswith("ok") for o in outputs), outputs


# ----- wsnb soak -------------------------------------------------------------------------


def test_tally_counts_lost_duplicated_and_out_of_order() -> None:
    assert cli.tally([0, 1, 2, 3], 4) == (4, 0, 0, 0)
    assert cli.tally([0, 2, 1, 1, 3], 5) == (4, 1, 1, 1)  # 4 lost, 1 twice, 1 after 2
    assert cli.tally([], 3) == (0, 3, 0, 0)


def test_soak_rejects_bad_arguments(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["soak", "--messages", "0"]) == cli.EXIT_USAGE
    assert "--messages must be >= 1" in capsys.readouterr().err


def test_soak_fails_when_out_of_time(capsys: pytest.CaptureFixture[str]) -> None:
    code = cli.main(["soak", "--messages", "1000000", "--cuts", "1", "--blackholes", "0",
                     "--seconds", "0.5", "--seed", "1"])
    out = capsys.readouterr().out
    assert code == 1, out
    assert out.startswith("wsnb soak: FAIL") and "timed out after 0.5 s" in out


def test_soak_subprocess_passes_and_prints_a_verdict() -> None:
    started = time.monotonic()
    done = subprocess.run([*CLI, "soak", "--messages", "500", "--cuts", "3", "--blackholes",
                           "1"], capture_output=True, text=True, timeout=20, env=ENV)
    took = time.monotonic() - started
    assert done.returncode == 0, (done.stdout, done.stderr)
    lines = done.stdout.splitlines()
    assert len(lines) == 1, done.stdout
    verdict = lines[0]
    assert verdict.startswith("wsnb soak: PASS"), verdict
    for way in ("client->server", "server->client"):
        assert re.search(rf"{way} 500/500 delivered, 0 lost, 0 duplicated, 0 out of order",
                         verdict), verdict
    assert "faults 3 cuts, 1 blackhole, 0 restarts" in verdict, verdict
    assert "session resumed" in verdict, verdict
    reconnects = int(re.search(r"(\d+) reconnects", verdict).group(1))  # type: ignore[union-attr]
    assert reconnects >= 4, verdict  # every fault broke a live link
    assert done.stderr == "", done.stderr  # not a TTY: no bar, no noise
    assert took < 20


async def test_single_frames_never_wait_for_a_poll(make_client, server) -> None:
    """`send_with_progress` on a single frame costs one send and one ack, no poll wait."""
    client = make_client(server.url)
    await client.connect(timeout=5)
    started = time.monotonic()
    for i in range(20):
        await send_with_progress(client, {"i": i})
    assert time.monotonic() - started < 1.5  # 20 acks, never 20 × POLL_INTERVAL
    await asyncio.wait_for(client.drain(), 5)
