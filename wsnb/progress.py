"""Progress bars for anything that takes more than a second (issue 6).

`progress` returns a bar from ``tqdm.auto``: an ipywidgets bar inside a
Jupyter kernel, a text bar on a terminal. Off a terminal and outside a kernel
(pipes, CI logs, subprocesses) it returns a quiet `NoBar` unless asked with
``enabled=True``. tqdm is optional: it is imported only when a bar is shown,
and without it every bar is a `NoBar`.

`send_with_progress` sends one message and, if it goes out as chunks, shows a
bar of chunks written (``Receipt.chunks``) until the ack arrives.
"""

from __future__ import annotations

import asyncio
import sys
import time
from typing import TYPE_CHECKING, Any

from wsnb.loop import in_kernel

if TYPE_CHECKING:
    from wsnb._receipt import Receipt

__all__ = ["NoBar", "POLL_INTERVAL", "progress", "send_with_progress"]

#: Seconds between two reads of ``Receipt.chunks`` (10 Hz at most).
POLL_INTERVAL = 0.1


class NoBar:
    """A bar that shows nothing but counts like one (``n``, ``total``, ``desc``).

    Has the part of tqdm's interface wsnb uses: `update`, `set_description`,
    `set_postfix_str`, `refresh`, `close`, and ``with`` blocks.
    """

    disable = True

    def __init__(self, total: float | None = None, desc: str = "", **_: Any) -> None:
        self.total = total
        self.desc = desc or ""
        self.postfix = ""
        self.n: float = 0

    def update(self, n: float = 1) -> None:
        self.n += n

    def set_description(self, desc: str | None = None, refresh: bool = True) -> None:
        self.desc = desc or ""

    def set_postfix_str(self, s: str = "", refresh: bool = True) -> None:
        self.postfix = s

    def refresh(self) -> None:
        pass

    def close(self) -> None:
        pass

    def __enter__(self) -> NoBar:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<NoBar {self.desc!r} {self.n}/{self.total}>"


def _isatty(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or a closed file
        return False


def progress(total: float | None, desc: str = "", *, enabled: bool | None = None,
             **kwargs: Any) -> Any:
    """A progress bar for `total` steps: a tqdm bar, or a `NoBar`.

    ``enabled=None`` (the default) shows a bar inside a Jupyter kernel (an
    ipywidgets bar) or when the bar's stream (``file=``, default stderr) is a
    terminal; ``True`` always shows one (if tqdm is installed), ``False`` never.
    Other keyword arguments go to tqdm (``unit=``, ``file=``, ``leave=``...).
    """
    if enabled is None:
        enabled = in_kernel() or _isatty(kwargs.get("file") or sys.stderr)
    if not enabled:
        return NoBar(total, desc)
    try:
        from tqdm.auto import tqdm
    except ImportError:  # tqdm is optional (the `bench` and `test` extras)
        return NoBar(total, desc)
    return tqdm(total=total, desc=desc, **kwargs)


async def send_with_progress(client: Any, payload: Any, *, desc: str | None = None,
                             enabled: bool | None = None,
                             timeout: float | None = None) -> Receipt:
    """``await client.send(payload)`` and wait for the ack, with a bar for chunked messages.

    The bar appears once the message starts going out as chunks and follows
    ``receipt.chunks`` (``(written, total)``), read at most 10 times a second;
    a resend after a reconnect takes it back to 0. Single-frame messages show
    no bar. Returns the acked receipt; raises what ``await receipt`` raises
    (`Refused`...) or `TimeoutError` after `timeout` seconds (None: no limit).
    """
    receipt: Receipt = await client.send(payload)
    deadline = None if timeout is None else time.monotonic() + timeout
    ack = asyncio.ensure_future(receipt.wait())
    bar: Any = None
    try:
        # Each turn waits for the ack up to POLL_INTERVAL; the loop ends when the ack
        # comes (or fails), at the deadline, or once the message went out as one frame.
        while not ack.done():
            chunks = receipt.chunks
            if chunks is not None:
                written, total = chunks
                if bar is None:
                    bar = progress(total, desc or f"message {receipt.id}", enabled=enabled,
                                   unit="chunk")
                if written != bar.n:
                    bar.update(written - bar.n)
                    bar.set_postfix_str("waiting for the ack" if written >= total else "")
            elif receipt.state != "queued":  # written as one frame: nothing to show
                break
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                break
            await asyncio.wait({ack}, timeout=POLL_INTERVAL if left is None
                               else min(POLL_INTERVAL, left))
        left = None if deadline is None else max(0.0, deadline - time.monotonic())
        try:
            await asyncio.wait_for(asyncio.shield(ack), left)
        except TimeoutError:
            raise TimeoutError(f"message {receipt.id} not acked within {timeout} s "
                               f"(state {receipt.state}, chunks {receipt.chunks})") from None
        if receipt.chunks is not None:  # also when it all happened between two polls
            if bar is None:
                bar = progress(receipt.chunks[1], desc or f"message {receipt.id}",
                               enabled=enabled, unit="chunk")
            bar.update(receipt.chunks[0] - bar.n)
            bar.set_postfix_str("acked", refresh=False)
        return ack.result()
    finally:
        if not ack.done():
            ack.cancel()
        if bar is not None:
            bar.close()
