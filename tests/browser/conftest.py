"""Browser tests' fixtures: a Jupyter server (JupyterLab or Notebook 7) on loopback.

The server runs on a random port with a token, temp runtime/config/settings
dirs, and user settings that turn autosave off so the committed notebook is
never written. Helpers for driving the page are in browser_helpers.py.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import pytest
from browser_helpers import CHROMIUM, NOTEBOOK, REPO
from jupyter_runner import run_jupyter


@contextmanager
def serve(app: str, app_class: str, tmp_path: Path, extra_args: tuple[str, ...]
          ) -> Iterator[tuple[str, str]]:
    """Run `jupyter <app>` serving the repository; yields (base URL, token)."""
    token = secrets.token_hex(16)
    with run_jupyter(app, app_class, tmp_path, REPO, token=token,
                     extra_args=extra_args, timeout=30) as base:
        yield base, token


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
