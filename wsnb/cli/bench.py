"""``wsnb bench [...]``: run ``benchmarks/bench.py`` of a checkout (it is not installed)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from wsnb.cli._common import EXIT_USAGE, err


def run(argv: list[str]) -> int:
    here = Path(__file__).resolve().parents[2]  # wsnb/cli/bench.py -> the checkout
    found = [p / "benchmarks" / "bench.py" for p in (here, Path.cwd())]
    found = [p for p in found if p.is_file()]
    if not found:
        err("bench", "the benchmarks live in the source tree, not in the installed package; "
                     "from a checkout run: python benchmarks/bench.py [--quick] [--only ROWS]")
        return EXIT_USAGE
    return subprocess.call([sys.executable, str(found[0]), *argv])
