"""Shared machinery for the panels: the coalescing refresher, commands, errors, static text.

Panels live in the kernel, but the objects they watch live on wsnb's
event-loop thread. A `Refresher` polls a cheap change key on that thread
(at most ``1 / interval`` times a second) and redraws only when the key
changed; button callbacks hand coroutines to the owner's loop with
`Panel.command`, whose errors land in the panel and on the timeline.
Nothing here ever uses ``with output:`` (not thread-safe, ipywidgets #2358).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import html
import threading
import time
from collections.abc import Callable, Coroutine, Hashable
from typing import Any

import ipywidgets as widgets
import traitlets
from IPython.display import DisplayHandle, display

from wsnb.timeline import Timeline

#: Fastest refresh allowed: 10 per second.
MIN_INTERVAL = 0.1


class Refresher:
    """Call `redraw` on `loop` every `interval` s, but only when `key()` changed.

    One call chain (``loop.call_later``), so redraws never overlap or queue up:
    a flood of events costs at most one redraw per tick. `stop` is final.
    """

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        key: Callable[[], Hashable],
        redraw: Callable[[], None],
        *,
        interval: float = MIN_INTERVAL,
        on_error: Callable[[BaseException], None] | None = None,
    ) -> None:
        self.loop = loop
        self.key = key
        self.redraw = redraw
        self.interval = max(MIN_INTERVAL, interval)
        self.on_error = on_error
        self.ticks = 0
        self.redraws = 0
        self._last: Any = object()
        self._handle: asyncio.TimerHandle | None = None
        self._stopped = threading.Event()
        self._failing = False
        loop.call_soon_threadsafe(self._tick)

    @property
    def running(self) -> bool:
        return not self._stopped.is_set()

    def poke(self) -> None:
        """Force a redraw on the next tick even if the key did not change."""
        self._last = object()

    def _tick(self) -> None:
        self._handle = None
        if self._stopped.is_set():
            return
        self.ticks += 1
        try:
            key = self.key()
            if key != self._last:
                self._last = key
                self.redraws += 1
                self.redraw()
            self._failing = False
        except Exception as exc:  # a redraw bug must show, never kill the chain
            self._last = object()
            if not self._failing and self.on_error is not None:
                self.on_error(exc)
            self._failing = True
        if not self._stopped.is_set():
            self._handle = self.loop.call_later(self.interval, self._tick)

    def stop(self) -> None:
        """Stop for good; safe from any thread, and more than once."""
        if self._stopped.is_set():
            return
        self._stopped.set()

        def cancel() -> None:
            if self._handle is not None:
                self._handle.cancel()
                self._handle = None

        if not self.loop.is_closed():
            self.loop.call_soon_threadsafe(cancel)


def esc(value: object) -> str:
    """HTML-escape any value's str()."""
    return html.escape(str(value), quote=True)


def close_tree(widget: widgets.Widget) -> None:
    """Close `widget` and, for boxes, everything inside it."""
    if isinstance(widget, Panel):
        widget.close()
        return
    for child in getattr(widget, "children", ()):
        close_tree(child)
    widget.close()


def describe_exc(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class Panel(widgets.VBox):
    """Base of every panel: an error line, a refresher, commands, a static fallback."""

    #: The last error from a command or a redraw ("" when none).
    error = traitlets.Unicode("")

    def __init__(self, *, timeline: Timeline | None, loop: asyncio.AbstractEventLoop,
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._timeline = timeline
        self._loop = loop
        self._refresher: Refresher | None = None
        self.error_label = widgets.HTML("")
        self.error_label.add_class("wsnb-error")
        self.pending_commands: set[concurrent.futures.Future[Any]] = set()
        self._static_hider: widgets.HTML | None = None
        self._static_displays: list[DisplayHandle] = []
        self.add_class("wsnb-panel")

    # ----- refreshing ---------------------------------------------------------

    def _start_refresher(self, interval: float = MIN_INTERVAL) -> None:
        self._refresher = Refresher(self._loop, self._key, self._redraw, interval=interval,
                                    on_error=lambda exc: self.show_error(f"redraw failed: "
                                                                         f"{describe_exc(exc)}"))

    @property
    def refresher(self) -> Refresher | None:
        return self._refresher

    def _key(self) -> Hashable:
        """What the panel shows depends on; redraw when it changes."""
        return None

    def _redraw(self) -> None:
        """Copy the watched objects' state into traits and widgets (loop thread)."""

    def close(self) -> None:
        """Stop refreshing, then close the widget and its children."""
        if self._refresher is not None:
            self._refresher.stop()
        for child in self.children:
            close_tree(child)
        super().close()

    # ----- commands -----------------------------------------------------------

    def command(
        self,
        coro: Coroutine[Any, Any, Any],
        what: str,
        *,
        loop: asyncio.AbstractEventLoop | None = None,
        done: Callable[[Any], None] | None = None,
    ) -> concurrent.futures.Future[Any]:
        """Run `coro` on `loop` (the watched object's); its error shows here and on the timeline.

        `done(result)` is called on success, on the loop thread.
        """
        future = asyncio.run_coroutine_threadsafe(coro, loop or self._loop)
        self.pending_commands.add(future)

        def finished(fut: concurrent.futures.Future[Any]) -> None:
            self.pending_commands.discard(fut)
            if fut.cancelled():
                return
            exc = fut.exception()
            if exc is not None:
                self.show_error(f"{what} failed: {describe_exc(exc)}")
            elif done is not None:
                try:
                    done(fut.result())
                except Exception as err:
                    self.show_error(f"{what}: {describe_exc(err)}")

        future.add_done_callback(finished)
        return future

    def show_error(self, text: str) -> None:
        """Show `text` in the error line and record it on the timeline (any thread)."""
        self.error = text
        stamp = time.strftime("%H:%M:%S")
        self.error_label.value = (
            f'<span style="color:#b91c1c">⚠ {stamp} {esc(text)}</span>' if text else "")
        if text and self._timeline is not None:
            self._timeline.record("error", detail=text[:200], peer="panel")

    def clear_error(self) -> None:
        self.error = ""
        self.error_label.value = ""

    # ----- static rendering -----------------------------------------------------

    def text_summary(self) -> str:
        """One or a few lines of plain text describing what the panel shows."""
        return type(self).__name__

    def static_html(self) -> str:
        """HTML fallback shown where widgets do not render (static notebook views)."""
        return f"<pre>{esc(self.text_summary())}</pre>"

    def _repr_mimebundle_(self, **kwargs: Any) -> dict[str, Any]:
        """The widget view plus text/plain and text/html summaries (ipywidgets 8 + keys)."""
        data = dict(super()._repr_mimebundle_(**kwargs) or {})
        data["text/plain"] = self.text_summary()
        data["text/html"] = self.static_html()
        return data

    # Where a panel is shown in a cell, one bundle is not enough: `jupyter nbconvert
    # --execute` stores the widget state by default, and then the HTML export renders the
    # widget view (a script that fetches the widget manager from a CDN: blank offline)
    # and never the bundle's text/html. So displaying a panel publishes two outputs:
    #
    # 1. the widget view with the text/plain summary (what live front ends render), its
    #    text/html only a comment so static views do not show the summary twice;
    # 2. the static summary alone, as text/html inside <div class="wsnb-static
    #    wsnb-static-MODEL_ID">, under a display id (`refresh_static` redraws it).
    #
    # The panel carries a hidden HTML child whose <style> hides output 2: wherever the
    # widget renders (JupyterLab, Notebook, VS Code, an online nbconvert/nbviewer page with
    # widget state) the summary disappears; wherever it does not (offline exports, GitHub,
    # a notebook reopened without its kernel) the summary stays.

    def static_class(self) -> str:
        """CSS class of this panel's static-summary outputs."""
        return f"wsnb-static-{self.model_id}"

    def _static_output(self) -> dict[str, str]:
        return {"text/html": f'<div class="wsnb-static {self.static_class()}">'
                             f"{self.static_html()}</div>"}

    def _ensure_static_hider(self) -> None:
        hider = self._static_hider
        if hider is None:
            hider = widgets.HTML(f"<style>.{self.static_class()}{{display:none}}</style>",
                                 layout=widgets.Layout(display="none"))
            hider.add_class("wsnb-static-hider")
            self._static_hider = hider
        if hider not in self.children:
            self.children = (*self.children, hider)

    def _ipython_display_(self, **kwargs: Any) -> None:
        self._ensure_static_hider()
        data = self._repr_mimebundle_()
        data["text/html"] = (f"<!-- {type(self).__name__}: interactive widget; "
                             f"its static summary is the next output -->")
        display(data, raw=True)
        handle = display(self._static_output(), raw=True, display_id=True)
        if isinstance(handle, DisplayHandle):
            self._static_displays.append(handle)

    def refresh_static(self) -> None:
        """Redraw the static summaries this panel left in the notebook (kernel thread only).

        Call it from a cell: output from other threads may be attributed to another cell.
        """
        for handle in self._static_displays:
            handle.update(self._static_output(), raw=True)
