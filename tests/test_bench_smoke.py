"""Smoke test of ``benchmarks/bench.py``: a few rows at tiny sizes; no timing assertions."""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path
from types import ModuleType

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "bench.py"


def load_bench() -> ModuleType:
    """Import ``benchmarks/bench.py`` by path (``benchmarks/`` is not an installed package)."""
    if not BENCH.is_file():
        pytest.skip("benchmarks/bench.py not in this tree")
    name = "wsnb_benchmarks_bench"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, BENCH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up while the file executes
    spec.loader.exec_module(module)
    return module


def test_bench_rows_print_a_table(capsys: pytest.CaptureFixture[str]) -> None:
    bench = load_bench()
    # rows 1, 3, 8 and 9 need only websockets (no socketio, no tqdm); servers run in
    # subprocesses; --quick with a small scale keeps it to a few seconds
    code = bench.main(["--quick", "--only", "1,3,8,9", "--runs", "1", "--scale", "0.1",
                       "--no-progress"])
    out = capsys.readouterr().out
    assert code == 0
    assert "| # | measurement" in out
    for label in ("acked msg/s vs raw echo, 100 B", "acked msg/s vs raw echo, 10 KB",
                  "one-at-a-time ack p50 vs ping-pong", "acked MB/s vs raw send",
                  "loop stall during a", "reconnects during the"):
        assert label in out, out
    table = [line for line in out.splitlines() if line.startswith("| ")]
    assert len(table) >= 8, out
    assert not re.search(r"\|\s*error\s*\|", out), out  # no row failed
    assert re.search(r"\|\s*(PASS|MISS)\s*\|", out), out


def test_payload_sizes_are_exact() -> None:
    bench = load_bench()
    for size in bench.SIZES:
        assert len(bench.payload_text(bench.make_payload(size))) == size
    big = bench.make_big_payload(300_000)
    assert len(bench.payload_text(big)) == 300_000


def test_peak_in_window() -> None:
    bench = load_bench()
    assert bench.peak_in_window([]) == 0
    assert bench.peak_in_window([0.0, 0.05, 0.09, 0.2, 0.25]) == 3
    assert bench.peak_in_window([0.0, 0.1, 0.2]) == 1  # the window is half-open


def test_only_rejects_unknown_rows() -> None:
    bench = load_bench()
    with pytest.raises(SystemExit):
        bench.parse_args(["--only", "99"])
