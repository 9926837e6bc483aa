"""The checks that run after protocol detection, one module each, and their runners."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from wsnb.doctor.checks.close import _check_close
from wsnb.doctor.checks.handshake import _check_handshake, _tls_rows
from wsnb.doctor.checks.idle import _check_idle
from wsnb.doctor.checks.liveness import _app_ping, _check_liveness, _heartbeat_rows, _watched
from wsnb.doctor.checks.reconnect import _check_reconnect
from wsnb.doctor.checks.size import _check_size, _probe_floor, _probe_text, _roundest
from wsnb.doctor.probe import _Ctx

_RUNNERS: dict[str, Callable[[_Ctx], Awaitable[None]]] = {
    "liveness": _check_liveness,
    "idle": _check_idle,
    "size": _check_size,
    "close": _check_close,
    "reconnect": _check_reconnect,
}
#: Checks that need a session the protocol's greeting opened (skipped when it was refused).
_NEED_SESSION = ("liveness", "idle", "size", "reconnect")

__all__ = ["_NEED_SESSION", "_RUNNERS", "_app_ping", "_check_close", "_check_handshake",
           "_check_idle", "_check_liveness", "_check_reconnect", "_check_size",
           "_heartbeat_rows", "_probe_floor", "_probe_text", "_roundest", "_tls_rows",
           "_watched"]
