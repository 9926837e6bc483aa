"""Crash scenarios of ``benchmarks/crash.py`` at small sizes, and bad ``--store`` input at the CLI.

Every server is a real subprocess on loopback, SIGKILLed mid-stream while a
`wsnb.Client` sends numbered messages; what the server delivered is counted
from its evidence (the store's delivered log; for the memory store, a file
its handler fsyncs before the ack). Durable stores: nothing lost, nothing
repeated, in order, every ``handshake_ack`` durable and every reconnect a
resume. Memory store: nothing lost, and every repeated message is one the
client marked as resent into a new session (at-least-once).
"""

from __future__ import annotations

import contextlib
import importlib.util
import subprocess
import sys
import warnings
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

import wsnb

CRASH = Path(__file__).resolve().parents[2] / "benchmarks" / "crash.py"
MESSAGES, CRASHES = 300, 3  # ~6 s a scenario (the stream lasts 1.5 s per kill)

pytestmark = pytest.mark.timeout(90)


def load_crash() -> ModuleType:
    """Import ``benchmarks/crash.py`` by path (``benchmarks/`` is not an installed package)."""
    if not CRASH.is_file():
        pytest.skip("benchmarks/crash.py not in this tree")
    name = "wsnb_benchmarks_crash"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, CRASH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up while the file executes
    spec.loader.exec_module(module)
    return module


def need_redis() -> None:
    """Skip, loudly (a warning in the summary as well as the skip reason), without Redis."""
    why = load_crash().redis_unavailable()
    if why:
        warnings.warn(f"Redis crash scenarios NOT run: {why}", UserWarning, stacklevel=2)
        pytest.skip(f"Redis crash scenarios NOT run: {why} (apt-get install redis-server)")


async def run(scenario: str, store: str, tmp_path: Path) -> Any:
    crash = load_crash()
    result = await crash.run_scenario(scenario, store, messages=MESSAGES, crashes=CRASHES,
                                      workdir=tmp_path)
    assert not result.skipped, result.skipped
    assert not result.error, result.details()
    return result


def assert_exactly_once(result: Any) -> None:
    """Durable store: every kill done mid-stream, nothing lost or repeated, in order, resumed."""
    info = result.details()
    assert result.crashes == CRASHES, info
    assert all(n > 0 for n in result.in_flight_at_kills), info  # each kill found messages in flight
    assert result.unacked == 0, info
    assert (result.lost, result.repeated, result.out_of_order) == (0, 0, 0), info
    # handshake_ack said durable every time (wsnb.Client.durable, read at each READY)
    assert len(result.readies) >= 1 + CRASHES, info
    assert result.durable is True, info
    assert result.new_sessions == 0, info  # every reconnect resumed the session
    assert result.marked_rows == 0, info  # nothing resent as at-least-once
    assert "0 repeated, 0 missing (exactly once)" in result.dump, info
    assert result.ok, info


async def test_sqlite_server_killed_mid_stream_loses_and_repeats_nothing(tmp_path: Path) -> None:
    assert_exactly_once(await run("crash", "sqlite", tmp_path))


async def test_redis_server_killed_mid_stream_loses_and_repeats_nothing(tmp_path: Path) -> None:
    need_redis()
    assert_exactly_once(await run("crash", "redis", tmp_path))


async def test_sqlite_workers_killed_mid_stream_lose_and_repeat_nothing(tmp_path: Path) -> None:
    result = await run("workers", "sqlite", tmp_path)
    assert_exactly_once(result)
    assert not any("no worker" in note for note in result.notes), result.details()


async def test_redis_workers_killed_mid_stream_lose_and_repeat_nothing(tmp_path: Path) -> None:
    need_redis()
    result = await run("workers", "redis", tmp_path)
    assert_exactly_once(result)
    assert not any("no worker" in note for note in result.notes), result.details()


async def test_redis_gone_mid_stream_closes_1011_and_nothing_is_lost(tmp_path: Path) -> None:
    need_redis()
    result = await run("redis-down", "redis", tmp_path)
    assert_exactly_once(result)
    unavailable = [d for d in result.close_details if d.startswith("1011")
                   and "session store unavailable" in d]
    assert len(unavailable) >= CRASHES, result.details()  # at least one per outage
    assert set(result.closes) <= {"1011", "1006", "1012"}, result.details()


async def test_memory_server_killed_mid_stream_repeats_only_what_the_client_marked(
        tmp_path: Path) -> None:
    result = await run("crash", "memory", tmp_path)
    info = result.details()
    assert result.crashes == CRASHES, info
    assert result.unacked == 0, info
    assert result.lost == 0, info
    assert result.out_of_order == 0, info
    assert result.durable is False, info  # the memory store never claims durability
    assert result.new_sessions == result.crashes, info  # each kill lost the session
    # at-least-once: a number delivered twice is one the client resent into a new session
    assert set(result.repeated_ids) <= result.marked_ids, info
    assert result.repeated_unmarked == [], info
    if result.marked_rows:
        assert result.marked_ids, info


# ----- bad input at the CLI ---------------------------------------------------------------


def wsnb_cli(*args: str, timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "wsnb", *args], capture_output=True,
                          text=True, timeout=timeout, stdin=subprocess.DEVNULL)


def assert_one_line_error(done: subprocess.CompletedProcess[str], url: str) -> None:
    assert done.returncode != 0, done
    assert not done.stdout.startswith("ws://"), done.stdout  # never listened
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("wsnb serve: "), lines
    assert url in lines[0], lines


def test_serve_store_in_a_missing_directory_fails_naming_the_url(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'nonexistent-dir' / 'x.db'}"
    done = wsnb_cli("serve", "--port", "0", "--quiet", "--store", url)
    assert_one_line_error(done, url)
    assert not (tmp_path / "nonexistent-dir").exists()


def test_serve_store_on_a_corrupt_sqlite_file_fails_naming_the_url(tmp_path: Path) -> None:
    path = tmp_path / "garbage.db"
    garbage = bytes(range(256)) * 32  # 8 KiB, no SQLite header
    path.write_bytes(garbage)
    url = f"sqlite:///{path}"
    done = wsnb_cli("serve", "--port", "0", "--quiet", "--store", url)
    assert_one_line_error(done, url)
    assert path.read_bytes() == garbage  # a file that is not a store is left as it was


def test_serve_workers_without_a_store_is_a_usage_error() -> None:
    done = wsnb_cli("serve", "--port", "0", "--quiet", "--workers", "2")
    assert done.returncode == 2, done
    assert "--store" in done.stderr and not done.stdout, done


async def test_store_dump_of_a_good_store_says_exactly_once(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'good.db'}"
    async with wsnb.Server(port=0, heartbeat_ms=0, store=url, log_delivered=True) as server:
        client = wsnb.Client(server.url, heartbeat=False)
        try:
            await client.connect(timeout=10)
            assert client.durable is True  # handshake_ack said durable
            receipts = [await client.send({"n": n}) for n in range(1, 21)]
            await client.drain(timeout=10)
            assert all(r.state == "acked" for r in receipts)
        finally:
            await client.close()
    done = wsnb_cli("store", "dump", url)
    assert done.returncode == 0, done
    last = done.stdout.strip().splitlines()[-1]
    assert last == "20 messages in 1 sessions: 0 repeated, 0 missing (exactly once)", done.stdout


def test_workers_stop_when_their_supervisor_is_killed(tmp_path: Path) -> None:
    """No orphans: SIGKILL of `wsnb serve --workers` leaves no worker process behind."""
    import psutil

    workers: list[Any] = []
    supervisor = subprocess.Popen(
        [sys.executable, "-m", "wsnb", "serve", "--port", "0", "--quiet", "--workers", "2",
         "--store", f"sqlite://{tmp_path}/s.db"], stdout=subprocess.PIPE, text=True)
    try:
        assert supervisor.stdout is not None
        assert supervisor.stdout.readline().startswith("ws://")  # every worker listens
        workers = psutil.Process(supervisor.pid).children()
        assert len(workers) == 2
        supervisor.kill()
        supervisor.wait(timeout=10)
        gone, alive = psutil.wait_procs(workers, timeout=10)
        assert not alive, f"orphaned workers: {[p.pid for p in alive]}"
    finally:
        supervisor.kill()
        for worker in workers:
            with contextlib.suppress(psutil.NoSuchProcess):
                worker.kill()
        if supervisor.stdout is not None:
            supervisor.stdout.close()
