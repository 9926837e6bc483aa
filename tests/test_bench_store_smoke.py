"""Smoke test of ``benchmarks/bench_store.py --quick``: every row runs; no timing assertions."""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path
from types import ModuleType

import pytest

BENCH_STORE = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_store.py"


def load_bench_store() -> ModuleType:
    """Import ``benchmarks/bench_store.py`` by path (``benchmarks/`` is not a package)."""
    if not BENCH_STORE.is_file():
        pytest.skip("benchmarks/bench_store.py not in this tree")
    name = "wsnb_benchmarks_bench_store"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, BENCH_STORE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def test_quick_run_prints_memory_and_sqlite_rows(capsys: pytest.CaptureFixture[str],
                                                 tmp_path: Path) -> None:
    bench_store = load_bench_store()
    pytest.importorskip("psutil")  # row 2 finds the worker holding the connection with it
    code = bench_store.main(["--quick", "--quiet", "--dir", str(tmp_path)])
    out = capsys.readouterr().out
    assert code == 0
    assert "command: python benchmarks/bench_store.py --quick" in out, out
    assert "| # | measurement" in out, out
    table = [line for line in out.splitlines() if line.startswith("| ")]
    for label in ("acked msg/s, 100 B, memory://", "acked msg/s, 100 B, sqlite sync=full",
                  "acked msg/s, 100 B, sqlite sync=normal", "group commit, sqlite sync=full",
                  "kill -9 worker → READY on another, sqlite sync=full",
                  "delivered log after 1 kills, sqlite sync=full",
                  "bytes per un-acked 100 B msg, server → away client, sqlite",
                  "bytes per un-acked 100 B msg, Client(store=) outbox, sqlite"):
        assert any(label in line for line in table), out
    # redis rows are either measured or say why they were skipped; none failed
    assert any("redis" in line for line in table), out
    assert not re.search(r"\|\s*error\s*\|", out), out
    assert list(tmp_path.iterdir()) == []  # the store files were cleaned up


def test_only_rejects_unknown_rows() -> None:
    bench_store = load_bench_store()
    with pytest.raises(SystemExit):
        bench_store.parse_args(["--only", "4"])
