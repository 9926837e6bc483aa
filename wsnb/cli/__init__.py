"""The ``wsnb`` command (also ``python -m wsnb``), one module per command.

``wsnb serve``     the reference server in the foreground, with a live status line;
                   ``--echo`` / ``--raw``: a plain WebSocket echo or recording server;
``wsnb probe URL`` connect once like wscat/websocat and show everything that happened;
``wsnb timeline``  print or convert a saved timeline (csv, parquet, HAR);
``wsnb bench``     benchmarks (runs ``benchmarks/bench.py`` of a checkout);
``wsnb doctor``    diagnose a server (`wsnb.doctor`);
``wsnb soak``      a bounded chaos soak on loopback: nothing lost, duplicated or reordered;
``wsnb store dump URL``  the delivered log of a session store, checked for exactly-once.

Tokens and HMAC keys are never printed. They may come from ``--token`` /
``--secret`` or, to keep them out of ``ps`` and shell history, from the
environment variables ``WSNB_TOKEN`` / ``WSNB_SECRET``.
"""

from __future__ import annotations

import argparse
import sys

from wsnb.cli import bench, doctor, probe, serve, soak, store, timeline
from wsnb.cli._common import EXIT_CLOSED, EXIT_CODES, EXIT_OK, EXIT_USAGE
from wsnb.cli.serve import CHAOS_KEYS, parse_chaos
from wsnb.cli.soak import SOAK_MESSAGES, tally

__all__ = ["CHAOS_KEYS", "EXIT_CLOSED", "EXIT_CODES", "EXIT_OK", "EXIT_USAGE", "SOAK_MESSAGES",
           "build_parser", "main", "parse_chaos", "tally"]

#: Commands that parse their own arguments (everything after the command name).
_PASS_THROUGH = {"bench": bench.run, "doctor": doctor.run}


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``wsnb`` console script; returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] and argv[0] in _PASS_THROUGH:
        return _PASS_THROUGH[argv[0]](argv[1:])
    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = argv  # as given: `wsnb serve --workers` starts its workers with it
    if args.command is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    try:
        return int(args.run(args))
    except KeyboardInterrupt:
        print(f"wsnb {args.command}: interrupted", file=sys.stderr)
        return 130


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="wsnb", description="WebSocket behaviour made visible: serve, probe, timelines.",
        epilog="Also: wsnb bench [...] (benchmarks), wsnb doctor URL [...] (diagnosis).")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for command in (serve, probe, timeline, soak, store):
        command.add_parser(sub)
    return parser
