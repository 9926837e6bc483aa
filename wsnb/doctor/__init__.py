"""`wsnb.doctor`: point it at any WebSocket server and learn how it will fail your clients.

Owns the checks (handshake, protocol, liveness, idle, size, close, reconnect),
the `Report` they produce, and ``wsnb doctor URL`` (`cli_main`). The doctor
uses bare ``websockets`` connections, so it works against any server, whether
or not it speaks wsnb's protocol. Each check is bounded in time and bytes,
ramps up (one ping at a time, doubling message sizes, one reconnect at a
time) and stops at its first failure, so it never floods the server.

"Idle" means the doctor sends no data. It still behaves like a conforming
client of the protocol it found: it answers WebSocket pings (as every client
library does) and the protocol's own heartbeats (wsnb ``ping``, Engine.IO
``2``, graphql-ws ``ping``, SignalR pings), because a real client would.

The package, by concern: `report` (findings, `Report`, wording), `probe` (the
probing connection and its greeting), `detect` (which protocol a server
speaks; echo servers first), `checks` (one module per check), `runner`
(`adoctor`, `doctor`) and `command` (`cli_main`).
"""

from __future__ import annotations

from wsnb._format import fmt_bytes, parse_bytes
from wsnb.doctor.command import cli_main
from wsnb.doctor.probe import (
    DEFAULT_CAP,
    ECHO_PROTOCOL,
    KNOWN_SUBPROTOCOLS,
    LOGGER,
    PINGS,
    RECONNECTS,
    SIGNALR_HANDSHAKE,
    THROTTLE_CODES,
    USER_AGENT,
    WSNB_ERROR_CODES,
    Progress,
)
from wsnb.doctor.report import (
    CHECKS,
    COLUMNS,
    SEVERITIES,
    SEVERITY_COLOURS,
    Finding,
    Report,
)
from wsnb.doctor.runner import _parse_checks, adoctor, doctor
from wsnb.failures import THROTTLE_STATUSES

__all__ = [
    "CHECKS",
    "COLUMNS",
    "DEFAULT_CAP",
    "ECHO_PROTOCOL",
    "KNOWN_SUBPROTOCOLS",
    "LOGGER",
    "PINGS",
    "RECONNECTS",
    "SEVERITIES",
    "SEVERITY_COLOURS",
    "SIGNALR_HANDSHAKE",
    "THROTTLE_CODES",
    "THROTTLE_STATUSES",
    "USER_AGENT",
    "WSNB_ERROR_CODES",
    "Finding",
    "Progress",
    "Report",
    "_parse_checks",
    "adoctor",
    "cli_main",
    "doctor",
    "fmt_bytes",
    "parse_bytes",
]
