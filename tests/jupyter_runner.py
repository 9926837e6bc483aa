"""Run JupyterLab or Notebook 7 on loopback for the browser tests (both suites use this).

`run_jupyter` starts `jupyter <app>` on 127.0.0.1 with temp runtime, config and
settings dirs and user settings that turn autosave off, waits until it answers
(bounded), and stops it when the block ends. `poll` is the bounded wait the
page tests use.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

SETTINGS = {  # user settings for a deterministic, non-writing session
    "@jupyterlab/docmanager-extension/plugin.jupyterlab-settings": {"autosave": False},
    "@jupyterlab/notebook-extension/tracker.jupyterlab-settings": {"windowingMode": "none"},
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {
        "fetchNews": "false", "checkForUpdates": False},
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def poll(predicate: Callable[[], Any], timeout: float, what: str, step: float = 0.1) -> Any:
    """Call `predicate` until it returns something truthy; fail after `timeout` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"not within {timeout} s: {what}")
        time.sleep(step)


@contextmanager
def run_jupyter(app: str, app_class: str, tmp_path: Path, root: Path, *, token: str = "",
                env: Mapping[str, str] | None = None, extra_args: Sequence[str] = (),
                timeout: float = 40) -> Iterator[str]:
    """Run `jupyter <app>` serving `root` until the block ends; yields its base URL.

    `app_class` is the app's traitlets class (LabApp, JupyterNotebookApp) that
    takes the settings/workspaces dirs; the log goes to tmp_path / "<app>.log".
    """
    port = free_port()
    settings = tmp_path / "settings"
    for name, value in SETTINGS.items():
        path = settings / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(value))
    full_env = {
        **os.environ,
        "JUPYTER_RUNTIME_DIR": str(tmp_path / "runtime"),
        "JUPYTER_CONFIG_DIR": str(tmp_path / "config"),
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        **(env or {}),
    }
    log_path = tmp_path / f"{app}.log"
    with log_path.open("w") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "jupyter", app, "--no-browser", "--allow-root",
             "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={port}",
             "--ServerApp.port_retries=0", f"--IdentityProvider.token={token}",
             "--ServerApp.password=", f"--ServerApp.root_dir={root}",
             f"--{app_class}.user_settings_dir={settings}",
             f"--{app_class}.workspaces_dir={tmp_path / 'workspaces'}",
             f"--{app_class}.expose_app_in_browser=True", *extra_args],
            env=full_env, stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path)
        base = f"http://127.0.0.1:{port}"

        def up() -> bool:
            if proc.poll() is not None:
                pytest.fail(f"jupyter {app} exited: {log_path.read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(f"{base}/api/status?token={token}",
                                            timeout=1) as reply:
                    return bool(reply.status == 200)
            except OSError:
                return False

        try:
            poll(up, timeout, f"jupyter {app} answering")
            yield base
        finally:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
