"""Helpers for the widget tests: bounded polling and running coroutines on wsnb's loop."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Coroutine
from typing import Any

import pytest

import wsnb
from wsnb.loop import background_loop

FAST = wsnb.Backoff(base=0.05, cap=0.5, jitter=False)


def wait_for(predicate: Callable[[], object], timeout: float = 5.0, what: str = "") -> None:
    """Poll `predicate` every 10 ms until true; fail after `timeout` s."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"not true within {timeout} s: {what or predicate}")
        time.sleep(0.01)


def run(coro: Coroutine[Any, Any, Any], timeout: float = 10.0) -> Any:
    """Run `coro` on wsnb's loop thread and wait for its result."""
    return asyncio.run_coroutine_threadsafe(coro, background_loop()).result(timeout)
