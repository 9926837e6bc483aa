"""A real ``redis-server`` on loopback for the store tests.

``running_redis(directory)`` starts one on a free port with its files in
`directory` (AOF, fsync at every write; ``persist=False``: no AOF, no RDB),
waits until it answers PING (polled, with a deadline), yields a `RedisServer`
and kills it at the end. `RedisServer.restart` SIGKILLs it and starts it again
on the same port and directory: what Redis persisted is what comes back.

``redis_server`` and ``redis_server_nopersist`` are the same as pytest
fixtures; a test module imports `running_redis` and wraps it in its own
fixture (pytest finds fixtures only in the module or a conftest). Without
``redis-server`` on PATH they skip, saying so.
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

START_TIMEOUT = 10.0  # seconds for a fresh redis-server to answer PING


def redis_server_path() -> str | None:
    """The redis-server executable, or None."""
    return shutil.which("redis-server")


def require_redis_server() -> str:
    """The redis-server executable; skips the test (with the reason) when there is none."""
    path = redis_server_path()
    if path is None:
        pytest.skip("redis-server is not on PATH: the Redis store tests need a real Redis "
                    "(apt-get install redis-server)")
    return path


def free_port() -> int:
    """A loopback TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class RedisServer:
    """One redis-server process: `url`, `kill`, `start`, `restart`, `stop`."""

    def __init__(self, directory: Path, *, persist: bool = True, executable: str | None = None,
                 port: int | None = None) -> None:
        self.directory = directory
        self.persist = persist
        self.executable = executable or require_redis_server()
        self.port = port or free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def command(self) -> list[str]:
        persistence = (["--appendonly", "yes", "--appendfsync", "always"] if self.persist
                       else ["--appendonly", "no"])
        return [self.executable, "--port", str(self.port), "--bind", "127.0.0.1",
                "--save", "", *persistence, "--dir", str(self.directory),
                "--logfile", str(self.directory / "redis.log"), "--daemonize", "no"]

    def start(self) -> RedisServer:
        """Start redis-server and return once it answers PING; raises with its log if not."""
        assert self.process is None or self.process.poll() is not None, "already running"
        self.directory.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(self.command(), stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL)  # it logs to redis.log
        self.starts += 1
        self.wait_ready()
        return self

    def wait_ready(self, timeout: float = START_TIMEOUT) -> None:
        assert self.process is not None
        deadline = time.monotonic() + timeout
        client = redis.Redis(host="127.0.0.1", port=self.port, socket_connect_timeout=0.5,
                             socket_timeout=0.5, retry=None)
        try:
            while True:
                if self.process.poll() is not None:
                    raise RuntimeError(f"redis-server exited with {self.process.returncode}:\n"
                                       f"{self.log()}")
                with contextlib.suppress(redis.ConnectionError, redis.BusyLoadingError,
                                         redis.TimeoutError):
                    if client.ping():
                        return
                if time.monotonic() > deadline:
                    raise RuntimeError(f"redis-server on port {self.port} did not answer PING "
                                       f"within {timeout} s:\n{self.log()}")
                time.sleep(0.02)  # poll interval; the deadline above bounds the wait
        finally:
            client.close()

    def log(self) -> str:
        path = self.directory / "redis.log"
        text = path.read_text(errors="replace") if path.exists() else ""
        return text[-4000:]

    def kill(self) -> None:
        """SIGKILL: no shutdown save, no AOF rewrite; what was fsynced is what is left."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=10)

    def restart(self) -> RedisServer:
        """Kill and start again on the same port and directory."""
        self.kill()
        return self.start()

    def stop(self) -> None:
        self.kill()


@contextlib.contextmanager
def running_redis(directory: Path, *, persist: bool = True) -> Iterator[RedisServer]:
    """A started `RedisServer` in `directory`, killed on exit (a taken port: another one)."""
    executable = require_redis_server()
    server = None
    for _ in range(3):  # free_port() races with other processes taking the port
        candidate = RedisServer(directory, persist=persist, executable=executable)
        try:
            server = candidate.start()
            break
        except RuntimeError:
            candidate.stop()
            if "Address already in use" not in candidate.log():
                raise
    if server is None:
        raise RuntimeError("no free port for redis-server after 3 tries")
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server with AOF (appendfsync always)."""
    with running_redis(tmp_path / "redis") as server:
        yield server


@pytest.fixture
def redis_server_nopersist(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server that persists nothing: a restart loses every key."""
    with running_redis(tmp_path / "redis-nopersist", persist=False) as server:
        yield server
