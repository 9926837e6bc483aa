"""wsnb: WebSocket behaviour made visible and reliable inside Jupyter.

Start with `Client`, `Server` and `FaultProxy`; every layer writes to a
`Timeline` you read as pandas DataFrames. `demo()` starts all three with a
dashboard; `doctor(url)` checks any server; `open_store(url)` reads a session
store. See docs/protocol.md for the wire, docs/durability.md for the stores.
"""

from wsnb._receipt import Receipt
from wsnb.client import CLOSE_CODES, Client, ReadyState, describe_close
from wsnb.demo import demo
from wsnb.doctor import Report, adoctor, doctor
from wsnb.errors import (
    AuthError,
    Backpressure,
    HandshakeTimeout,
    NotOpen,
    ProtocolError,
    Refused,
    WsnbError,
)
from wsnb.loop import run
from wsnb.progress import send_with_progress
from wsnb.protocol.backoff import Backoff
from wsnb.proxy import FaultProxy
from wsnb.server import Server, ServerSession
from wsnb.store import StaleSession, StoreError, open_store
from wsnb.timeline import EVENT_TYPES, Timeline

__version__ = "0.1.0"

# Panels import ipywidgets, so they load on first use (`wsnb.Dashboard`, ...).
_PANELS = ("ChaosPanel", "ConnectionPanel", "Dashboard", "DoctorPanel", "SendPanel",
           "TimelinePanel")


def __getattr__(name: str) -> object:
    if name in _PANELS:
        import wsnb.widgets

        return getattr(wsnb.widgets, name)
    raise AttributeError(f"module 'wsnb' has no attribute {name!r}")


__all__ = [
    "CLOSE_CODES",
    "EVENT_TYPES",
    "AuthError",
    "Backoff",
    "Backpressure",
    "Client",
    "FaultProxy",
    "HandshakeTimeout",
    "NotOpen",
    "ProtocolError",
    "ReadyState",
    "Receipt",
    "Refused",
    "Report",
    "Server",
    "ServerSession",
    "StaleSession",
    "StoreError",
    "Timeline",
    "WsnbError",
    "adoctor",
    "demo",
    "describe_close",
    "doctor",
    "open_store",
    "run",
    "send_with_progress",
    *_PANELS,
]
