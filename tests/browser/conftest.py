"""Browser tests' fixtures: a Jupyter server (JupyterLab or Notebook 7) on loopback.

The server runs on a random port with a token, temp runtime/config/settings
dirs, and user settings that turn autosave off so the committed notebook is
never written. Helpers for driving the page are in browser_helpers.py.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import subprocess
import sys
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import pytest
from browser_helpers import CHROMIUM, NOTEBOOK, REPO, poll

SETTINGS = {  # user settings for a deterministic, non-writing session
    "@jupyterlab/docmanager-extension/plugin.jupyterlab-settings": {"autosave": False},
    "@jupyterlab/notebook-extension/tracker.jupyterlab-settings": {"windowingMode": "none"},
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {
        "fetchNews": "false", "checkForUpdates": False},
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def serve(app: str, app_class: str, tmp_path: Path, extra_args: tuple[str, ...]
          ) -> Iterator[tuple[str, str]]:
    """Run `jupyter <app>` on 127.0.0.1 until the block ends; yields (base URL, token).

    `app_class` is the app's traitlets class (LabApp, JupyterNotebookApp) that takes
    the settings/workspaces dirs; its log goes to tmp_path / "<app>.log".
    """
    port, token = free_port(), secrets.token_hex(16)
    settings = tmp_path / "settings"
    for name, value in SETTINGS.items():
        path = settings / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(value))
    env = {
        **os.environ,
        "JUPYTER_RUNTIME_DIR": str(tmp_path / "runtime"),
        "JUPYTER_CONFIG_DIR": str(tmp_path / "config"),
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    log_path = tmp_path / f"{app}.log"
    log = log_path.open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "jupyter", app, "--no-browser", "--allow-root",
         "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={port}",
         "--ServerApp.port_retries=0", f"--IdentityProvider.token={token}",
         f"--ServerApp.root_dir={REPO}",
         f"--{app_class}.user_settings_dir={settings}",
         f"--{app_class}.workspaces_dir={tmp_path / 'workspaces'}",
         f"--{app_class}.expose_app_in_browser=True", *extra_args],
        env=env, stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path)
    base = f"http://127.0.0.1:{port}"

    def up() -> bool:
        if proc.poll() is not None:
            pytest.fail(f"jupyter {app} exited: {log_path.read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(f"{base}/api/status?token={token}", timeout=1) as r:
                return r.status == 200
        except OSError:
            return False

    try:
        poll(up, 30, f"jupyter {app} answering")
        yield base, token
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        log.close()


@pytest.fixture
def jupyter_server(tmp_path: Path) -> Iterator[Callable[..., str]]:
    """Start Jupyter servers: `jupyter_server(app, app_class, url_path, *extra_args)`.

    Returns the URL (with the token) of NOTEBOOK under `url_path` ("lab/tree",
    "notebooks"), e.g. http://127.0.0.1:PORT/lab/tree/notebooks/....ipynb?token=...
    Skips the test first when /usr/bin/chromium or playwright is missing; every
    server started is stopped after the test.
    """
    if not os.path.exists(CHROMIUM):
        pytest.skip(f"{CHROMIUM} not found")
    pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    with ExitStack() as stack:

        def start(app: str, app_class: str, url_path: str, *extra_args: str) -> str:
            base, token = stack.enter_context(serve(app, app_class, tmp_path, extra_args))
            return f"{base}/{url_path}/{NOTEBOOK}?token={token}"

        yield start
