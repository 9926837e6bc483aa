"""Numbers in words: the one percentile and the one byte formatter wsnb and its benchmarks use."""

from __future__ import annotations

import math
import re
from collections.abc import Iterable

__all__ = ["fmt_bytes", "parse_bytes", "percentile"]

_UNITS = (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10))


def percentile(values: Iterable[float], q: float) -> float:
    """The `q`-th percentile (0..100) of `values`, linear between closest ranks.

    The same method as ``numpy.percentile``'s default and
    ``statistics.quantiles(method="inclusive")``: ``q=50`` is the median,
    ``q=0`` the smallest and ``q=100`` the largest value. NaN when `values`
    is empty.
    """
    if not 0 <= q <= 100:
        raise ValueError(f"q is a percentage, 0..100, not {q!r}")
    ordered = sorted(values)
    if not ordered:
        return math.nan
    k = (len(ordered) - 1) * q / 100
    lo, hi = math.floor(k), math.ceil(k)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def fmt_bytes(n: float | None, *, exact: bool = True) -> str:
    """Bytes in words: ``65536`` -> ``"64 KiB"``, ``1536`` -> ``"1.5 KiB (1,536 bytes)"``.

    Binary units (KiB = 1024 bytes); below 1 KiB, ``"512 bytes"``. A whole
    number of the largest unit that divides it is shown alone (``"1536 KiB"``);
    otherwise one or two decimals and the exact count, unless ``exact=False``
    (tables of averages). Fractions are rounded; None is ``"?"``.
    """
    if n is None or (isinstance(n, float) and not math.isfinite(n)):
        return "?"
    n = round(n)
    for unit, size in _UNITS:
        if abs(n) >= size and n % size == 0:
            return f"{n // size} {unit}"
    for unit, size in _UNITS:
        if abs(n) >= size:
            digits = 1 if size == 1 << 10 else 2
            text = f"{n / size:,.{digits}f} {unit}"
            return text + (f" ({n:,} bytes)" if exact else "")
    return f"{n} bytes"


def parse_bytes(text: str) -> int:
    """``"4MiB"``, ``"256k"``, ``"1048576"`` -> bytes (K/M/G = 1024 based)."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kKmMgG]?)(?:i?[bB])?\s*", text)
    if not match:
        raise ValueError(f"not a size: {text!r} (try 4MiB, 256KiB or 1048576)")
    scale = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}[match.group(2).lower()]
    return int(float(match.group(1)) * scale)
