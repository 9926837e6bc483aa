"""The doctor's findings: `Finding` rows, the `Report` and how numbers are worded."""

from __future__ import annotations

import html
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

import pandas as pd

from wsnb._secret import masked_url

CHECKS: dict[str, str] = {
    "handshake": "The HTTP upgrade: status, Upgrade/Connection headers, subprotocol, "
                 "extensions (permessage-deflate), Server header and time to open; TLS "
                 "version and certificate for wss://.",
    "protocol": "Which application protocol the server speaks: wsnb (handshake_ack), "
                "Socket.IO / Engine.IO, graphql-ws, SignalR, or plain frames; an echo "
                "server (echo/raw) is found first and never taken for another.",
    "liveness": "Whether the server answers WebSocket pings (p50/p99 of 20) and sends its "
                "own pings or application heartbeats, and how often.",
    "idle": "How long a connection that sends no data survives (up to the budget), and "
            "the close code it ends with.",
    "size": "The largest text message the server accepts (doubling, then bisecting, up to "
            "the cap) and how it refuses a larger one.",
    "close": "Whether a normal close (1000) gets a close frame back with the same code, or "
             "a dropped TCP connection.",
    "reconnect": "Five quick reconnects in a row: accepted, throttled (429, 4429, 1013) or "
                 "refused.",
}

#: Severities from best to worst; "skipped" means the check could not say.
SEVERITIES = ("ok", "info", "warning", "error", "skipped")
SEVERITY_COLOURS = {"ok": "#16a34a", "info": "#2563eb", "warning": "#d97706",
                    "error": "#dc2626", "skipped": "#6b7280"}
COLUMNS = ["check", "item", "result", "value", "severity", "advice"]


# ----- findings and the report ------------------------------------------------------------


@dataclass
class Finding:
    """One row of the report."""

    check: str
    item: str
    result: str
    value: Any = None
    severity: str = "info"
    advice: str = ""


def _jsonable(value: Any) -> Any:
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    return str(value)


#: How rows combine into one verdict: a check with "ok" rows and "info" notes is "ok".
_RANK = {"skipped": 0, "info": 1, "ok": 2, "warning": 3, "error": 4}


def _worst(severities: Iterable[str]) -> str:
    return max(severities, key=lambda s: _RANK.get(s, 0), default="skipped")


class Report:
    """What `doctor` found: ``findings`` (a DataFrame), ``summary()``, HTML, ``to_json()``.

    ``facts`` holds the measurements as plain values (``idle_timeout_s``,
    ``max_message_bytes``, ``ping_p50_ms``, ``protocol``, ...) for code that
    wants numbers rather than sentences.
    """

    def __init__(self, url: str, rows: Sequence[Finding], *, facts: Mapping[str, Any],
                 timings: Mapping[str, float], checks: Sequence[str], started: datetime,
                 duration_s: float) -> None:
        self.url = masked_url(url)
        self.rows = list(rows)
        self.facts = dict(facts)
        self.timings = dict(timings)
        self.checks = list(checks)
        self.started = started
        self.duration_s = duration_s

    @property
    def findings(self) -> pd.DataFrame:
        """One row per finding: check, item, result, value, severity, advice."""
        frame = pd.DataFrame([asdict(r) for r in self.rows], columns=COLUMNS, dtype=object)
        frame["severity"] = pd.Categorical(frame["severity"], categories=list(SEVERITIES))
        return frame

    @property
    def problems(self) -> pd.DataFrame:
        """Only the warnings and errors."""
        frame = self.findings
        return frame[frame["severity"].isin(["warning", "error"])].reset_index(drop=True)

    @property
    def ok(self) -> bool:
        """True when nothing is worse than "info"."""
        return not any(r.severity in ("warning", "error") for r in self.rows)

    @property
    def worst(self) -> str:
        return _worst(r.severity for r in self.rows)

    def severity(self, check: str) -> str:
        """The worst severity among one check's rows ("skipped" if it has none)."""
        return _worst(r.severity for r in self.rows if r.check == check)

    def get(self, check: str, item: str | None = None) -> list[Finding]:
        """The rows of one check (and item)."""
        return [r for r in self.rows if r.check == check and (item is None or r.item == item)]

    @property
    def exit_code(self) -> int:
        """0 healthy, 1 warnings or errors found, 3 could not connect at all."""
        if any(r.check == "handshake" and r.item == "connect" and r.severity == "error"
               for r in self.rows):
            return 3
        return 0 if self.ok else 1

    def summary(self) -> str:
        """The findings in plain words: problems with their fixes first, then what is fine."""
        problems = [r for r in self.rows if r.severity in ("error", "warning")]
        problems.sort(key=lambda r: -SEVERITIES.index(r.severity))
        errors = sum(r.severity == "error" for r in problems)
        protocol = self.facts.get("protocol")
        head = f"Doctor report for {self.url}" + (f" ({protocol})" if protocol else "")
        if problems:
            verdict = (f"{len(problems)} problem{'s' if len(problems) != 1 else ''} "
                       f"({errors} error{'s' if errors != 1 else ''}, "
                       f"{len(problems) - errors} warning"
                       f"{'s' if len(problems) - errors != 1 else ''})")
        else:
            verdict = "no problems found"
        lines = [f"{head}: {verdict}, {len(self.checks)} checks in {self.duration_s:.1f} s."]
        if problems:
            lines.append("Problems:")
            for r in problems:
                fix = f" Fix: {r.advice}" if r.advice else ""
                lines.append(f"  - [{r.severity}] {r.check} / {r.item}: {r.result}.{fix}")
        fine = [r for r in self.rows if r.severity == "ok"]
        if fine:
            lines.append("Fine:")
            lines += [f"  - {r.check} / {r.item}: {r.result}" for r in fine]
        notes = [r for r in self.rows if r.severity in ("info", "skipped")]
        if notes:
            lines.append("Notes:")
            for r in notes:
                extra = f" ({r.advice})" if r.advice else ""
                lines.append(f"  - {r.check} / {r.item}: {r.result}{extra}")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {
            "url": self.url,
            "started": self.started.isoformat(),
            "duration_s": round(self.duration_s, 3),
            "checks": self.checks,
            "ok": self.ok,
            "worst": self.worst,
            "findings": [{k: _jsonable(v) for k, v in asdict(r).items()} for r in self.rows],
            "facts": _jsonable(self.facts),
            "timings_s": {k: round(v, 3) for k, v in self.timings.items()},
        }

    def to_json(self, indent: int | None = 2) -> str:
        """The report as JSON (URL without query string or credentials)."""
        return json.dumps(self.to_dict(), indent=indent, ensure_ascii=False)

    def _repr_html_(self) -> str:
        esc = html.escape
        head = "".join(f"<th style='text-align:left;padding:2px 8px'>{c}</th>"
                       for c in COLUMNS)
        body = []
        for r in self.rows:
            colour = SEVERITY_COLOURS.get(r.severity, "#6b7280")
            value = "" if r.value is None else str(r.value)
            body.append(
                f"<tr class='wsnb-doctor-{esc(r.severity)}'>"
                f"<td style='padding:2px 8px' title='{esc(CHECKS.get(r.check, ''))}'>"
                f"{esc(r.check)}</td>"
                f"<td style='padding:2px 8px'>{esc(r.item)}</td>"
                f"<td style='padding:2px 8px'>{esc(r.result)}</td>"
                f"<td style='padding:2px 8px;font-family:monospace'>{esc(value[:120])}</td>"
                f"<td style='padding:2px 8px'><span style='background:{colour};color:#fff;"
                f"padding:1px 8px;border-radius:8px;font-weight:600'>{esc(r.severity)}</span>"
                f"</td><td style='padding:2px 8px'>{esc(r.advice)}</td></tr>")
        problems = sum(r.severity in ("warning", "error") for r in self.rows)
        verdict = (f"<b style='color:{SEVERITY_COLOURS['ok']}'>no problems found</b>"
                   if not problems else
                   f"<b style='color:{SEVERITY_COLOURS[self.worst]}'>{problems} "
                   f"problem{'s' if problems != 1 else ''}</b>")
        return (f"<div class='wsnb-doctor-report'><p>Doctor report for <code>{esc(self.url)}"
                f"</code>: {verdict} ({len(self.checks)} checks, {self.duration_s:.1f} s)</p>"
                f"<table style='border-collapse:collapse'><thead><tr>{head}</tr></thead>"
                f"<tbody>{''.join(body)}</tbody></table></div>")

    def __repr__(self) -> str:
        return (f"<wsnb.doctor.Report {self.url} {self.worst} rows={len(self.rows)} "
                f"problems={sum(r.severity in ('warning', 'error') for r in self.rows)}>")


# ----- helpers ----------------------------------------------------------------------------


def _clamp(x: float, lo: float, hi: float) -> float:
    return max(lo, min(hi, x))


def _ms(seconds: float) -> str:
    ms = seconds * 1000
    if ms < 1:
        return f"{ms:.2f} ms"
    return f"{ms:.1f} ms" if ms < 10 else f"{ms:.0f} ms"


def _secs(seconds: float) -> str:
    return f"{seconds:.2f} s" if seconds < 10 else f"{seconds:.0f} s"


def _short(x: str | bytes, n: int = 80) -> str:
    text = x if isinstance(x, str) else f"<{len(x)} bytes binary>"
    text = text.replace("\x1e", "\\x1e")
    return text if len(text) <= n else text[: n - 1] + "…"
