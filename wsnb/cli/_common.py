"""What every ``wsnb`` command shares: exit codes and one-line errors."""

from __future__ import annotations

import argparse
import sys

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
