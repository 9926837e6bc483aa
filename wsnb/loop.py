"""wsnb's own event-loop thread, and how public coroutines cross loops.

On ipykernel 7 a task started from a cell may stall until the next cell runs
(ipykernel #1510) and a blocking cell stalls the kernel loop outright, so
clients, servers and proxies created from a notebook (or from code with no
running loop) live on one background loop thread per process. Their public
coroutines may be awaited from any loop: `on_own_loop` hops to the owner's
loop and back. A script that runs its own loop passes ``loop="current"``.
"""

from __future__ import annotations

import asyncio
import functools
import sys
import threading
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, Literal, ParamSpec, TypeVar

P = ParamSpec("P")
T = TypeVar("T")

LoopChoice = Literal["auto", "thread", "current"] | asyncio.AbstractEventLoop

_thread_loop: asyncio.AbstractEventLoop | None = None
_thread_lock = threading.Lock()


def background_loop() -> asyncio.AbstractEventLoop:
    """Return wsnb's event-loop thread, starting it on first use."""
    global _thread_loop
    with _thread_lock:
        if _thread_loop is None or _thread_loop.is_closed():
            loop = asyncio.new_event_loop()
            started = threading.Event()

            def run() -> None:
                asyncio.set_event_loop(loop)
                loop.call_soon(started.set)
                loop.run_forever()

            threading.Thread(target=run, name="wsnb-loop", daemon=True).start()
            started.wait(5)
            _thread_loop = loop
        return _thread_loop


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


def in_kernel() -> bool:
    """True inside an IPython kernel (Jupyter), where the cell loop is unreliable."""
    ipython = sys.modules.get("IPython")
    if ipython is None or "ipykernel" not in sys.modules:
        return False
    shell = ipython.get_ipython()
    return shell is not None and getattr(shell, "kernel", None) is not None


def choose_loop(loop: LoopChoice = "auto") -> asyncio.AbstractEventLoop:
    """Pick the loop an object lives on.

    ``"auto"``: the running loop in a plain script or test, wsnb's thread in a
    notebook or when no loop runs. ``"thread"``: always wsnb's thread.
    ``"current"``: the running loop (error if none).
    """
    if isinstance(loop, asyncio.AbstractEventLoop):
        return loop
    if loop == "thread":
        return background_loop()
    running = _running_loop()
    if loop == "current":
        if running is None:
            raise RuntimeError('loop="current" needs a running event loop; use loop="thread"')
        return running
    if loop != "auto":
        raise ValueError(f'loop must be "auto", "thread", "current" or an event loop, not {loop!r}')
    if running is None or in_kernel():
        return background_loop()
    return running


async def call_on(loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, T]) -> T:
    """Await `coro` on `loop`, from whatever loop is running now."""
    if _running_loop() is loop:
        return await coro
    return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coro, loop))


def on_own_loop(
    method: Callable[..., Coroutine[Any, Any, T]],
) -> Callable[..., Coroutine[Any, Any, T]]:
    """Decorate an async method so it always runs on ``self._loop``."""

    @functools.wraps(method)
    async def wrapper(self: Any, *args: Any, **kwargs: Any) -> T:
        return await call_on(self._loop, method(self, *args, **kwargs))

    return wrapper


def call_soon(loop: asyncio.AbstractEventLoop, fn: Callable[..., Any], *args: Any) -> None:
    """Run `fn(*args)` on `loop`, thread-safely."""
    if _running_loop() is loop:
        loop.call_soon(fn, *args)
    else:
        loop.call_soon_threadsafe(fn, *args)


def run(awaitable: Awaitable[T]) -> T:
    """Run `awaitable` to completion from synchronous code.

    In a script this is `asyncio.run`. Inside a running loop (a Jupyter cell,
    where `asyncio.run` fails with "cannot be called from a running event
    loop") it applies nest-asyncio2 to that loop, lazily, on first need, and
    runs the awaitable there.
    """
    running = _running_loop()

    async def main() -> T:
        return await awaitable

    if running is None:
        return asyncio.run(main())
    import nest_asyncio2  # only here: patching asyncio is a global side effect

    nest_asyncio2.apply(running)
    return running.run_until_complete(main())
