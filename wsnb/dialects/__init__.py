"""Dialects: what a client needs to speak an application protocol it did not define.

A `Dialect` bundles the hooks `wsnb.Client` already has: a greeting redone on
every (re)connect (`on_open`), an `intercept` that answers the protocol's own
heartbeats and turns its frames into what the application sees, the rule that
pairs replies with requests (`reply_key`, `make_request`), the subprotocol to
offer, and which close codes are final. ``Client(url, dialect="jsonrpc")``
picks one by name; each protocol lives in its own module here.
"""

from __future__ import annotations

import importlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from wsnb.client import Client

#: Returned by `Dialect.intercept` for a frame the dialect consumed itself.
CONSUMED: Any = object()

#: Dialect names and the module that defines ``DIALECT`` for each.
KNOWN = {"jsonrpc": "wsnb.dialects.jsonrpc", "graphql-transport-ws": "wsnb.dialects.graphql",
         "socketio": "wsnb.dialects.socketio"}


@dataclass(frozen=True)
class Dialect:
    """The hooks one application protocol needs (all optional).

    ``on_open(client)``: the greeting, sync or async, run before the outbox
    flushes after every (re)connect. ``intercept(client, frame)``: called with
    each incoming frame (raw text or bytes); returns what the application
    receives, or `CONSUMED`. ``reply_key(frame)``: the application id a reply
    carries (None: not a reply). ``make_request(payload, key)``: the frame a
    `Client.request` sends (None: the payload as is). ``request_key(payload)``:
    the id of an outgoing request (None: `reply_key` of the payload).
    """

    name: str
    on_open: Callable[[Client], Awaitable[None] | None] | None = None
    intercept: Callable[[Client, Any], Any] | None = None
    reply_key: Callable[[Any], Any] | None = None
    request_key: Callable[[Any], Any] | None = None
    make_request: Callable[[Any, Any], Any] | None = None
    subprotocols: tuple[str, ...] = ()
    final_codes: frozenset[int] = frozenset()
    retry_codes: frozenset[int] = frozenset()


def get(dialect: str | Dialect) -> Dialect:
    """The dialect named `dialect` (or `dialect` itself); ValueError lists the names."""
    if isinstance(dialect, Dialect):
        return dialect
    module = KNOWN.get(dialect)
    if module is None:
        raise ValueError(f"unknown dialect {dialect!r}; known: {', '.join(sorted(KNOWN))}")
    found: Dialect = importlib.import_module(module).DIALECT
    return found


__all__ = ["CONSUMED", "KNOWN", "Dialect", "get"]
