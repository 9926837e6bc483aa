"""``wsnb doctor URL [...]``: delegates to `wsnb.doctor.command.cli_main`, imported lazily."""

from __future__ import annotations

from wsnb.cli._common import EXIT_USAGE, err


def run(argv: list[str]) -> int:
    try:
        from wsnb.doctor import cli_main
    except ImportError as exc:
        err("doctor", f"not available in this installation ({exc})")
        return EXIT_USAGE
    return int(cli_main(argv))
