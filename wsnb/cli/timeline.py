"""``wsnb timeline FILE``: print or convert a saved timeline (csv, parquet, HAR)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from wsnb.cli._common import EXIT_OK, EXIT_USAGE, err


def add_parser(sub: Any) -> None:
    timeline = sub.add_parser(
        "timeline", help="print or convert a saved timeline (csv, parquet, har)",
        description="Print a timeline saved as .csv (timeline.events().to_csv(path, "
                    "index=False)), .parquet (timeline.to_parquet) or .har/.json (browser "
                    "devtools or timeline.to_har), or convert it with --to.")
    timeline.add_argument("file")
    timeline.add_argument("--to", choices=("csv", "parquet", "har"), help="convert")
    timeline.add_argument("-o", "--output", help="where to write (default: FILE with the new "
                                                 "suffix)")
    timeline.add_argument("--last", type=int, default=50, metavar="N",
                          help="rows to print (default 50; 0: all)")
    timeline.add_argument("--type", metavar="T1,T2", help="only these event types")
    timeline.add_argument("--url", help="--to har: URL for peers that are not ws:// URLs")
    timeline.set_defaults(run=cmd_timeline)



def cmd_timeline(args: argparse.Namespace) -> int:
    import pandas as pd

    from wsnb import har

    path = Path(args.file)
    try:
        timeline = har.read_timeline(path)
    except FileNotFoundError:
        err("timeline", f"no such file: {path}")
        return 1
    except (ValueError, KeyError, ImportError, OSError) as exc:
        err("timeline", f"cannot read {path}: {exc}")
        return 1
    if args.to:
        target = Path(args.output) if args.output else path.with_suffix(
            {"csv": ".csv", "parquet": ".parquet", "har": ".har"}[args.to])
        if target.resolve() == path.resolve():
            err("timeline", f"refusing to overwrite the input {path}; pass -o OUT")
            return EXIT_USAGE
        try:
            har.write_timeline(timeline, target, args.to, url=args.url)
        except (ImportError, OSError, ValueError) as exc:
            err("timeline", f"cannot write {target}: {exc}")
            return 1
        print(f"wrote {len(timeline)} events to {target} ({args.to})")
        return EXIT_OK
    df = timeline.events()
    if args.type:
        wanted = [t.strip() for t in args.type.split(",") if t.strip()]
        df = df[df["type"].isin(wanted)]
    counts = {k: v for k, v in timeline.counts().items() if v and k != "dropped_events"}
    print(f"{path}: {len(timeline)} events; " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    shown = df if args.last <= 0 else df.tail(args.last)
    if len(shown) < len(df):
        print(f"(last {len(shown)} of {len(df)} rows; --last 0 prints all)")
    with pd.option_context("display.width", 200, "display.max_columns", 20,
                           "display.max_colwidth", 60):
        print(shown.to_string(index=False) if len(shown) else "(no events)")
    return EXIT_OK
