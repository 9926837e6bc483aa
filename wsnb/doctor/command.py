"""``wsnb doctor URL [...]``: the command line."""

from __future__ import annotations

import argparse
import os
import ssl as ssl_module
import sys
import textwrap

from wsnb._format import parse_bytes
from wsnb.cli._common import header as _header
from wsnb.doctor.probe import (
    DEFAULT_CAP,
)
from wsnb.doctor.report import CHECKS
from wsnb.doctor.runner import doctor


def cli_main(argv: list[str]) -> int:
    """``wsnb doctor URL [...]``: print the report; exit 0 healthy, 1 problems, 2 usage, 3 down."""
    parser = argparse.ArgumentParser(
        prog="wsnb doctor", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Check any WebSocket server for the failure modes tutorials teach.\n\n"
                    + "\n".join(textwrap.fill(v, 78, initial_indent=f"  {k:<10} ",
                                               subsequent_indent=" " * 13)
                                 for k, v in CHECKS.items()),
        epilog="Exit status: 0 no problems, 1 warnings or errors found, 2 usage error, "
               "3 could not connect.")
    parser.add_argument("url", help="ws:// or wss:// URL of the server")
    parser.add_argument("--token", default=None,
                        help="token for wsnb's handshake (default: $WSNB_TOKEN)")
    parser.add_argument("--budget", type=float, default=60.0, metavar="SECONDS",
                        help="how long to watch an idle connection (default 60)")
    parser.add_argument("--checks", default=",".join(CHECKS),
                        help=f"comma-separated subset of {','.join(CHECKS)}")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument("--max-size-cap", type=parse_bytes, default=DEFAULT_CAP,
                        metavar="BYTES", help="largest message to try (default 4MiB)")
    parser.add_argument("--cafile", default=None, help="trust this CA bundle for wss://")
    parser.add_argument("--insecure", action="store_true",
                        help="do not verify the wss:// certificate (still reports it)")
    parser.add_argument("--header", action="append", default=[], type=_header,
                        metavar="NAME:VALUE", dest="headers",
                        help="an extra header for the upgrade request (repeatable)")
    parser.add_argument("--subprotocol", action="append", default=[], dest="subprotocols",
                        metavar="NAME", help="a subprotocol to offer (repeatable)")
    parser.add_argument("--origin", default=None, help="the Origin header to send")
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help (0) or a usage error (2): return, never exit
        return int(exc.code or 0) if not isinstance(exc.code, str) else 2
    ssl_ctx = None
    if args.cafile or args.insecure:
        ssl_ctx = ssl_module.create_default_context(cafile=args.cafile)
        if args.insecure:
            ssl_ctx.check_hostname = False
            ssl_ctx.verify_mode = ssl_module.CERT_NONE
    progress = None
    if not args.json and sys.stderr.isatty():
        def progress(check: str, fraction: float, status: str) -> None:
            if fraction >= 1.0:
                print(f"  {check:<10} {status}", file=sys.stderr)
    try:
        report = doctor(args.url, args.token or os.environ.get("WSNB_TOKEN"),
                        checks=args.checks, budget_s=args.budget,
                        max_size_cap=args.max_size_cap, ssl=ssl_ctx,
                        headers=dict(args.headers), subprotocols=args.subprotocols,
                        origin=args.origin, progress=progress)
    except ValueError as exc:
        print(f"wsnb doctor: error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(report.to_json())
    else:
        print(report.summary())
        print()
        print(report.findings.drop(columns=["advice"]).to_string(index=False, max_colwidth=60))
    return report.exit_code
