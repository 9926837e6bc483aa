"""Stock third-party WebSocket servers on 127.0.0.1 for the doctor tests.

Each helper is an async context manager yielding a ``ws://`` URL. A helper
whose tool is absent calls ``pytest.skip`` with the reason (and how to get
the tool); nothing else skips. Python servers run on the test's event loop
on a socket bound before they start, so no readiness wait is needed; Node
and nginx run as child processes and say when they are ready (Node prints
its port; nginx is polled with bounded connection attempts).
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import json
import logging
import shutil
import socket
import subprocess
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

NODE_DIR = Path(__file__).parent / "node"
NGINX = "/usr/sbin/nginx"


def need(module: str, pip_name: str | None = None) -> ModuleType:
    """Import `module` or skip the test, saying what to install."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        pytest.skip(f"{module} is not installed ({exc}): pip install {pip_name or module}")


def _bound() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    sock.setblocking(False)
    return sock


# ----- Node ws ---------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def node_ws_echo(**options: Any) -> AsyncIterator[str]:
    """``new WebSocketServer(options)`` from the `ws` package, echoing every message."""
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed: Node `ws` server tests need Node.js")
    if not (NODE_DIR / "node_modules" / "ws" / "package.json").is_file():
        pytest.skip(f"the `ws` package is not installed: run `npm ci --prefix {NODE_DIR}`")
    proc = await asyncio.create_subprocess_exec(
        node, str(NODE_DIR / "echo_server.mjs"), json.dumps(options),
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), 15)
        if not line:
            err = await proc.stderr.read() if proc.stderr else b""
            raise RuntimeError(f"the Node ws server did not start: {err.decode()[-500:]}")
        yield f"ws://127.0.0.1:{json.loads(line)['port']}"
    finally:
        if proc.returncode is None:
            assert proc.stdin is not None
            proc.stdin.close()  # the script exits when stdin closes
            try:
                await asyncio.wait_for(proc.wait(), 5)
            except TimeoutError:
                proc.kill()
                await proc.wait()


# ----- uvicorn (FastAPI, python-socketio) ------------------------------------------------


@contextlib.asynccontextmanager
async def uvicorn_serving(app: Any, **config: Any) -> AsyncIterator[str]:
    """`app` on uvicorn (its default WebSocket implementation) on the test's loop."""
    uvicorn = need("uvicorn")
    sock = _bound()
    server = uvicorn.Server(uvicorn.Config(app, lifespan="off", log_level="critical",
                                           timeout_graceful_shutdown=2, **config))
    server.capture_signals = contextlib.nullcontext  # leave pytest's signal handlers alone
    task = asyncio.ensure_future(server.serve(sockets=[sock]))
    try:
        yield f"ws://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        try:
            await asyncio.wait_for(task, 10)
        finally:
            sock.close()


@contextlib.asynccontextmanager
async def fastapi_echo(**config: Any) -> AsyncIterator[str]:
    """A FastAPI echo endpoint at /ws on uvicorn (e.g. ``ws_max_size=``)."""
    need("uvicorn")
    fastapi = need("fastapi")
    app = fastapi.FastAPI()

    async def echo(ws: Any) -> None:
        await ws.accept()
        with contextlib.suppress(fastapi.WebSocketDisconnect):
            while True:
                await ws.send_text(await ws.receive_text())

    echo.__annotations__["ws"] = fastapi.WebSocket  # FastAPI injects by annotation
    app.add_api_websocket_route("/ws", echo)
    async with uvicorn_serving(app, **config) as base:
        yield base + "/ws"


@contextlib.asynccontextmanager
async def socketio_asgi(**options: Any) -> AsyncIterator[str]:
    """A python-socketio ASGI app on uvicorn; yields its Engine.IO WebSocket URL."""
    need("uvicorn")
    socketio = need("socketio", "python-socketio")
    sio = socketio.AsyncServer(async_mode="asgi", logger=False, engineio_logger=False,
                               **options)

    @sio.event
    async def message(sid: str, data: Any) -> None:
        await sio.send(data, to=sid)

    async with uvicorn_serving(socketio.ASGIApp(sio)) as base:
        yield base + "/socket.io/?EIO=4&transport=websocket"


# ----- aiohttp --------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def aiohttp_echo(**ws_options: Any) -> AsyncIterator[str]:
    """An aiohttp ``WebSocketResponse(**ws_options)`` echo handler at /ws."""
    web = need("aiohttp.web", "aiohttp")

    async def handler(request: Any) -> Any:
        ws = web.WebSocketResponse(**ws_options)
        await ws.prepare(request)
        async for msg in ws:
            if msg.type == web.WSMsgType.TEXT:
                await ws.send_str(msg.data)
            elif msg.type == web.WSMsgType.BINARY:
                await ws.send_bytes(msg.data)
        return ws

    app = web.Application()
    app.router.add_get("/ws", handler)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    sock = _bound()
    site = web.SockSite(runner, sock)
    await site.start()
    try:
        yield f"ws://127.0.0.1:{sock.getsockname()[1]}/ws"
    finally:
        await runner.cleanup()
        sock.close()


# ----- nginx ----------------------------------------------------------------------------

_NGINX_CONF = """\
daemon off;
master_process off;
worker_processes 1;
pid {tmp}/nginx.pid;
error_log {tmp}/error.log warn;
events {{ worker_connections 256; }}
http {{
    access_log off;
    client_body_temp_path {tmp}/body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://127.0.0.1:{upstream};
            proxy_http_version 1.1;
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection "upgrade";
            proxy_read_timeout {read_timeout};
        }}
    }}
}}
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def _accepts(port: int) -> bool:
    try:
        _, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError:
        return False
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return True


@contextlib.asynccontextmanager
async def nginx_proxy(upstream_url: str, read_timeout: str = "2s") -> AsyncIterator[str]:
    """nginx on 127.0.0.1 proxying WebSocket upgrades to `upstream_url`."""
    if not Path(NGINX).is_file():
        pytest.skip(f"nginx is not installed ({NGINX} missing): apt-get install nginx")
    upstream = int(upstream_url.rsplit(":", 1)[1].split("/")[0])
    with tempfile.TemporaryDirectory(prefix="wsnb-nginx-") as tmp:
        for attempt in range(3):  # a free port may be taken between probing and binding
            port = _free_port()
            conf = Path(tmp) / "nginx.conf"
            conf.write_text(_NGINX_CONF.format(tmp=tmp, port=port, upstream=upstream,
                                               read_timeout=read_timeout))
            proc = await asyncio.create_subprocess_exec(
                NGINX, "-p", tmp, "-c", str(conf), stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            for _ in range(250):  # bounded: about 5 s of connection attempts
                if proc.returncode is not None or await _accepts(port):
                    break
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(proc.wait(), 0.02)  # returns early if nginx died
            if proc.returncode is None and await _accepts(port):
                break
            err = await proc.stderr.read() if proc.stderr else b""
            if proc.returncode is None:
                proc.kill()
            await proc.wait()
            if attempt == 2:
                raise RuntimeError(f"nginx did not start: {err.decode()[-800:]}")
        try:
            yield f"ws://127.0.0.1:{port}" + upstream_url.split(str(upstream), 1)[1]
        finally:
            proc.terminate()
            try:
                await asyncio.wait_for(proc.wait(), 5)
            except TimeoutError:
                proc.kill()
                await proc.wait()


# ----- a bare websockets echo (nginx's upstream) -----------------------------------------


@contextlib.asynccontextmanager
async def websockets_echo(**options: Any) -> AsyncIterator[str]:
    from websockets.asyncio.server import serve

    async def echo(ws: Any) -> None:
        async for message in ws:
            await ws.send(message)

    quiet = logging.getLogger("tests.doctor.servers")
    quiet.setLevel(logging.CRITICAL)
    async with serve(echo, "127.0.0.1", 0, logger=quiet, **options) as server:
        yield f"ws://127.0.0.1:{server.sockets[0].getsockname()[1]}"
