"""``python -m wsnb ...`` is the ``wsnb`` command (`wsnb.cli`), e.g. ``python -m wsnb serve``."""

from __future__ import annotations

import sys

from wsnb.cli import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
