"""What every ``wsnb`` command shares: exit codes and one-line errors."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import time
from collections.abc import Callable
from typing import TextIO

# Exit codes of `wsnb probe` (and the kinds of failure they stand for).
EXIT_OK, EXIT_CLOSED, EXIT_USAGE = 0, 1, 2
EXIT_CODES = {"closed": 1, "protocol": 1, "url": 2, "dns": 3, "refused": 4, "tls": 5,
              "upgrade": 6, "timeout": 7, "handshake": 8, "network": 9}


def err(command: str, message: str) -> None:
    """``wsnb COMMAND: message`` on stderr, one line."""
    print(f"wsnb {command}: {message}", file=sys.stderr, flush=True)


def header(text: str) -> tuple[str, str]:
    """``"Name: value"`` -> ``("Name", "value")`` (for ``--header``)."""
    name, sep, value = text.partition(":")
    if not sep or not name.strip() or name != name.strip() or " " in name:
        raise argparse.ArgumentTypeError(f"not a header: {text!r} (use NAME:VALUE)")
    return name, value.strip()


async def status_lines(stop: asyncio.Event, out: TextIO, *, interval: float, quiet: bool,
                       count: Callable[[], int], render: Callable[[float], str]) -> None:
    """Print a status line every `interval` s until `stop` is set: rewritten in place on
    a terminal, printed when it changes otherwise. `render` gets the message rate."""
    tty = out.isatty()
    last_line = ""
    last_count, last_time = count(), time.monotonic()
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), max(0.05, interval))
        if quiet:
            continue
        now = time.monotonic()
        current = count()
        rate = (current - last_count) / max(now - last_time, 1e-9)
        last_count, last_time = current, now
        line = render(rate)
        if tty:
            out.write("\r" + line + "\x1b[K")
            out.flush()
        elif line != last_line:
            print(line, file=out, flush=True)
        last_line = line
