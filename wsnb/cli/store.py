"""``wsnb store dump URL``: the delivered log of a session store, with an exactly-once check."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from wsnb.cli._common import EXIT_CLOSED, EXIT_OK, err


def add_parser(sub: Any) -> None:
    store = sub.add_parser(
        "store", help="read a session store (wsnb serve --store URL)",
        description="Read what a session store recorded. 'dump' prints its delivered log "
                    "(session, id, payload, time: one row per message the server delivered) "
                    "and checks it: per session, every id once and no gap.")
    actions = store.add_subparsers(dest="action", metavar="ACTION", required=True)
    dump = actions.add_parser("dump", help="print the delivered log and check it")
    dump.add_argument("url", help="sqlite:///abs/path.db, sqlite:rel/path.db or "
                                  "redis://host:port/db")
    dump.add_argument("--format", choices=("table", "csv", "jsonl"), default="table",
                      help="table (default), csv or jsonl (one JSON object per line)")
    dump.add_argument("--last", type=int, default=50, metavar="N",
                      help="table: rows to print (default 50; 0: all)")
    dump.set_defaults(run=cmd_store)


def check(frame: Any) -> dict[str, int]:
    """Count messages, sessions, repeated ids and missing ids (gaps below the highest id)."""
    repeated = int(frame.duplicated(["session", "id"]).sum())
    missing = 0
    for _, ids in frame.groupby("session")["id"]:
        unique = ids.drop_duplicates()
        missing += int(unique.max() - unique.min() + 1 - len(unique))
    return {"messages": len(frame), "sessions": int(frame["session"].nunique()),
            "repeated": repeated, "missing": missing}


def cmd_store(args: argparse.Namespace) -> int:
    import pandas as pd  # type: ignore[import-untyped,unused-ignore]

    from wsnb.store import StoreError, open_store

    try:
        frame = open_store(args.url).delivered()
    except StoreError as exc:
        err("store", str(exc))
        return 1
    counts = check(frame)
    if args.format == "csv":
        frame.to_csv(sys.stdout, index=False)
    elif args.format == "jsonl":
        frame.assign(time=frame["time"].astype(str)).to_json(sys.stdout, orient="records",
                                                               lines=True)
        sys.stdout.write("\n" if len(frame) else "")
    else:
        shown = frame if args.last <= 0 else frame.tail(args.last)
        if len(shown) < len(frame):
            print(f"(last {len(shown)} of {len(frame)} rows; --last 0 prints all)")
        with pd.option_context("display.width", 200, "display.max_colwidth", 60):
            print(shown.to_string(index=False) if len(shown) else "(nothing delivered)")
    verdict = "exactly once" if not counts["repeated"] and not counts["missing"] else \
        "NOT exactly once"
    print(f"{counts['messages']} messages in {counts['sessions']} sessions: "
          f"{counts['repeated']} repeated, {counts['missing']} missing ({verdict})",
          file=sys.stderr if args.format != "table" else sys.stdout, flush=True)
    return EXIT_OK if verdict == "exactly once" else EXIT_CLOSED
