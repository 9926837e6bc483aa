"""``python -m wsnb ...`` is the ``wsnb`` command (`wsnb.cli`), e.g. ``python -m wsnb bench``."""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        from wsnb.cli import main as cli_main
    except ImportError:  # no CLI module: only the benchmark is reachable
        if argv[:1] == ["bench"]:
            from wsnb.bench import main as bench_main

            return bench_main(argv[1:])
        print("usage: python -m wsnb bench [--quick] [--only 1,3] [--runs 3]", file=sys.stderr)
        return 2
    return cli_main(argv)


if __name__ == "__main__":
    sys.exit(main())
