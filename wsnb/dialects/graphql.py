"""GraphQL over WebSocket, the ``graphql-transport-ws`` subprotocol.

``Client(url, dialect="graphql-transport-ws")`` (or ``dialect=graphql.dialect(
payload={"token": ...})`` to send connection parameters) offers the
subprotocol, and after every (re)connect sends ``connection_init`` and waits
for ``connection_ack`` before anything else goes out: what the application
queued meanwhile follows the ack. No ack within `ack_timeout`: an ``error`` row
on the timeline, and the client closes with 4504 and reconnects. The server's
``ping`` is answered with ``pong``.

Operations::

    data = await graphql.query(client, "{ hello }")          # one result
    async with await graphql.subscribe(client, "subscription { count }") as sub:
        async for result in sub:                              # each `next` payload
            ...                                               # ends at `complete`

`query` is `Client.request` (``request``/``reply`` rows, `Timeline.requests`):
``client.request({"query": ..., "variables": ...})`` sends ``subscribe`` with
the id the client counts and returns the first ``next`` (or the ``error``)
message; the ``complete`` that follows is consumed. Use it for queries and
mutations. A `Subscription` is re-subscribed with the same id after every
reconnect (a query in flight when the connection drops is not resent: it
times out). Frames of other types, or for ids nobody waits for, go to the inbox
parsed.

Close codes (`CLOSE_CODES`): 4401 (unauthorized) and 4403 (forbidden: the
server refused ``connection_init``) and 4406 (subprotocol not acceptable) are
final. 4409 (subscriber for an id already exists) and 4400 (bad request) are
final for the message that caused them, not for the connection: the client
reconnects and the subscription to blame (4409: the id in the reason; 4400:
those sent on that connection that had received nothing yet) ends with
`GraphQLError` instead of being sent again. 4400 before ``connection_ack``
means ``connection_init`` was refused: the client keeps retrying with backoff
(pass ``final_codes={4400}`` to stop). 4408 (init timeout), 4429 (too many
initialisation requests; waits the backoff cap), 4499 (terminated), 4500
(internal server error) and 4504 (no ack, closed by this client) reconnect.
"""

from __future__ import annotations

import asyncio
import math
import re
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import orjson

from wsnb.dialects import CONSUMED, Dialect
from wsnb.errors import NotOpen, WsnbError
from wsnb.loop import call_on

if TYPE_CHECKING:
    from wsnb._receipt import Receipt
    from wsnb.client import Client

__all__ = ["CLOSE_CODES", "DIALECT", "SUBPROTOCOL", "GraphQLError", "Subscription", "ack_payload",
           "dialect", "make_request", "ping", "query", "reply_key", "subscribe"]

SUBPROTOCOL = "graphql-transport-ws"

#: graphql-transport-ws close codes, what they mean and what the client does.
CLOSE_CODES = {
    4400: "bad request: the server could not use a message (that subscription ends; reconnect)",
    4401: "unauthorized: subscribe before connection_ack, or credentials refused (final)",
    4403: "forbidden: the server refused connection_init (final)",
    4406: "subprotocol not acceptable (final)",
    4408: "connection_init timeout (reconnect)",
    4409: "subscriber for that id already exists (that subscription ends; reconnect)",
    4429: "too many initialisation requests (reconnect after the backoff cap)",
    4499: "terminated (reconnect)",
    4500: "internal server error (reconnect)",
    4504: "no connection_ack in time: closed by this client (reconnect)",
}
FINAL_CODES = frozenset({4401, 4403, 4406})
ACK_TIMEOUT_CODE = 4504

_DUPLICATE = re.compile(r"subscriber for (.+?) already exists", re.IGNORECASE)


class GraphQLError(WsnbError):
    """The server answered an operation with errors (an ``error`` message, or ``errors``
    in a result), or a close code ended a subscription.

    ``errors`` is the list of GraphQL error objects, ``data`` the partial data
    (if any), ``id`` the operation id and ``close_code`` the close code that
    ended it (None unless a close did).
    """

    def __init__(self, errors: Any, *, data: Any = None, id: str | None = None,
                 close_code: int | None = None) -> None:
        self.errors = errors if isinstance(errors, list) else [errors]
        self.data = data
        self.id = id
        self.close_code = close_code
        words = "; ".join(str(e.get("message", e)) if isinstance(e, dict) else str(e)
                          for e in self.errors)
        where = f"operation {id}: " if id is not None else ""
        super().__init__(f"{where}{words}" if words else f"{where}GraphQL error")


@dataclass(eq=False)
class _State:
    """One client's graphql-transport-ws state (kept on the client)."""

    serial: int = 0  # connections greeted so far
    opened: bool = False
    link: Any = None  # the connection the current greeting is for
    ack: asyncio.Event | None = None  # set by its connection_ack
    ack_payload: Any = None
    counter: int = 0
    subs: dict[str, Subscription] = field(default_factory=dict)
    stopped: set[str] = field(default_factory=set)
    pongs: deque[asyncio.Future[None]] = field(default_factory=deque)
    tasks: set[asyncio.Future[Any]] = field(default_factory=set)


def _state(client: Client) -> _State:
    found = client.dialect_state.get("graphql-transport-ws")
    if found is None:
        found = client.dialect_state["graphql-transport-ws"] = _State()
    return found  # type: ignore[no-any-return]


def _acked(client: Client, state: _State) -> bool:
    """The current connection has its ``connection_ack``."""
    link = client.link
    return (link is not None and state.link is link and state.ack is not None
            and state.ack.is_set())


async def _until_acked(client: Client, state: _State, timeout: float | None) -> None:
    """Until acked, or not READY (then a send waits in the outbox, after the greeting).

    Anything `Client.send` is given while ``on_open`` runs jumps the queue as part
    of the greeting, so an operation sent between ``connection_init`` and
    ``connection_ack`` would reach the server before the ack (4401 on strict
    servers): the helpers wait here first.
    """
    await client.wait_until(lambda c: not c.ready or _acked(c, state), timeout=timeout)


def _stopped_for_good(client: Client, state: _State) -> bool:
    """The client was open once and will not reconnect (closed by the user, or a final code)."""
    return state.opened and client.ready_state.name == "CLOSED" and client.next_retry_at is None


def _spawn(state: _State, coro: Any) -> None:
    task = asyncio.ensure_future(coro)
    state.tasks.add(task)
    task.add_done_callback(state.tasks.discard)


# ----- the hooks ---------------------------------------------------------------


def make_request(payload: Any, key: Any) -> dict[str, Any]:
    """``subscribe`` for `payload` (``{"query", "variables", "operationName"}`` or the
    query text) under the id ``str(key)``."""
    if isinstance(payload, str):
        payload = {"query": payload}
    if not isinstance(payload, dict) or not isinstance(payload.get("query"), str):
        raise ValueError('a GraphQL request is a dict with a "query" string (and optional '
                         f'"variables", "operationName", "extensions"), got {payload!r:.120}')
    body = {k: v for k, v in payload.items() if v is not None}
    return {"id": str(key), "type": "subscribe", "payload": body}


def reply_key(frame: Any) -> Any:
    """The request a ``next``/``error`` message answers (ids made by `make_request`)."""
    if isinstance(frame, dict) and frame.get("type") in ("next", "error"):
        key = frame.get("id")
        if isinstance(key, str) and key.isdigit():
            return int(key)
    return None


def intercept(client: Client, frame: Any) -> Any:
    """Ack, ping/pong and subscription messages are handled here; the rest goes on."""
    message = orjson.loads(frame) if isinstance(frame, (str, bytes)) else frame
    if not isinstance(message, dict) or not isinstance(message.get("type"), str):
        raise ValueError(f"not a graphql-transport-ws message: {message!r:.100}")
    state = _state(client)
    kind = message["type"]
    if kind == "connection_ack":
        state.ack_payload = message.get("payload")
        if state.ack is not None:
            state.ack.set()
        return CONSUMED
    if kind == "ping":
        client.timeline.record("ping", direction="in", peer=client.name, detail=SUBPROTOCOL)
        _spawn(state, client.send({"type": "pong"}))
        client.timeline.record("pong", direction="out", peer=client.name, detail=SUBPROTOCOL)
        return CONSUMED
    if kind == "pong":
        while state.pongs:
            waiter = state.pongs.popleft()
            if not waiter.done():
                waiter.set_result(None)
                break
        return CONSUMED
    if kind in ("next", "error", "complete"):
        op_id = message.get("id")
        sub = state.subs.get(op_id) if isinstance(op_id, str) else None
        if sub is not None:
            if kind != "next":
                state.subs.pop(op_id, None)  # type: ignore[arg-type]
            sub._feed(message)
            return CONSUMED
        if op_id in state.stopped:
            if kind != "next":
                state.stopped.discard(op_id)  # type: ignore[arg-type]
            return CONSUMED
        if kind == "complete":
            return CONSUMED  # the end of a query already answered by its `next`
    return message


def _blame(client: Client, state: _State) -> None:
    """After a 4409 or 4400 close, end the subscription that caused it (not resent)."""
    code, reason = client.close_code, client.close_reason or ""
    if state.serial < 2 or code not in (4400, 4409):
        return
    if code == 4409:
        match = _DUPLICATE.search(reason)
        ids = [match.group(1)] if match and match.group(1) in state.subs else []
    else:
        ids = [sid for sid, sub in state.subs.items()
               if sub._sent_on == state.serial - 1 and not sub.received]
        if not ids:
            client.timeline.record("error", peer=client.name, detail=(
                f"{SUBPROTOCOL}: 4400 {reason} with no subscription to blame (a query's, or "
                "connection_init refused? retrying; final_codes={4400} stops)")[:200])
    for sid in ids:
        sub = state.subs.pop(sid)
        sub._fail(GraphQLError([{"message": f"closed {code}: {reason or CLOSE_CODES[code]}"}],
                               id=sid, close_code=code))
        client.timeline.record("error", peer=client.name, detail=(
            f"{SUBPROTOCOL}: subscription {sid} ended by close {code} ({reason}); "
            "not sent again")[:200])


async def _greet(client: Client, payload: Any, ack_timeout: float) -> None:
    state = _state(client)
    state.serial += 1
    state.opened = True
    state.ack = ack = asyncio.Event()
    state.stopped.clear()  # a new connection: the server knows none of the old ids
    state.link = link = client.link
    _blame(client, state)
    if client.subprotocol != SUBPROTOCOL:
        client.timeline.record("error", peer=client.name, detail=(
            f"{SUBPROTOCOL}: the server picked subprotocol {client.subprotocol!r}; "
            "it may not speak graphql-transport-ws")[:200])
    init: dict[str, Any] = {"type": "connection_init"}
    params = payload() if callable(payload) else payload
    if params is not None:
        init["payload"] = params
    await client.send(init)
    timeout = min(ack_timeout, client.handshake_timeout * 0.9)
    waiter = asyncio.ensure_future(ack.wait())
    waits: set[asyncio.Future[Any]] = {waiter}
    if link is not None:
        waits.add(link.closed)
    try:
        await asyncio.wait(waits, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        waiter.cancel()
    if not ack.is_set():
        if link is None or link.closed.done():
            return  # closed before the ack: the client shows the close
        client.timeline.record("error", peer=client.name, detail=(
            f"{SUBPROTOCOL}: no connection_ack within {timeout:g} s; closing "
            f"({ACK_TIMEOUT_CODE}) to reconnect"))
        link.close(ACK_TIMEOUT_CODE, "Connection acknowledgement timeout")
        # hold the outbox until the link is gone: what is queued waits for the next one
        await asyncio.wait({link.closed}, timeout=max(0.1, client.handshake_timeout - timeout))
        return
    for sub in list(state.subs.values()):
        if sub._sent_on == state.serial or sub.id not in state.subs:
            continue  # sent on this connection already (by `subscribe`), or ended
        if sub._receipt is not None and sub._receipt.state == "queued":
            sub._sent_on = state.serial  # still in the outbox: it goes out after the greeting
            continue
        if sub._sent_on:
            sub.resubscribes += 1
        await sub._send(state)


def dialect(payload: dict[str, Any] | Callable[[], Any] | None = None, *,
            ack_timeout: float = 5.0) -> Dialect:
    """graphql-transport-ws with `payload` as ``connection_init``'s payload (connection
    parameters such as a token; a function is called on every connect)."""

    async def on_open(client: Client) -> None:
        await _greet(client, payload, ack_timeout)

    return Dialect(name=SUBPROTOCOL, on_open=on_open, intercept=intercept,
                   reply_key=reply_key, make_request=make_request,
                   subprotocols=(SUBPROTOCOL,), final_codes=FINAL_CODES)


DIALECT = dialect()


# ----- operations ----------------------------------------------------------------


def _check(client: Client) -> None:
    if client.dialect is None or client.dialect.intercept is not intercept:
        raise ValueError("needs a client made with dialect='graphql-transport-ws' "
                         "(or graphql.dialect(...))")


def _operation(query_text: str, variables: dict[str, Any] | None,
               operation_name: str | None) -> dict[str, Any]:
    body: dict[str, Any] = {"query": query_text}
    if variables is not None:
        body["variables"] = variables
    if operation_name is not None:
        body["operationName"] = operation_name
    return body


async def query(client: Client, query_text: str, variables: dict[str, Any] | None = None,
                *, operation_name: str | None = None, timeout: float | None = 10.0) -> Any:
    """Run a query or mutation; return its ``data``. `GraphQLError` for an ``error``
    message or a result with ``errors`` (its ``data`` holds any partial data)."""
    _check(client)
    body = _operation(query_text, variables, operation_name)
    reply = await call_on(client.loop, _request(client, body, timeout))
    op_id = reply.get("id") if isinstance(reply, dict) else None
    if not isinstance(reply, dict) or reply.get("type") not in ("next", "error"):
        raise GraphQLError([{"message": f"unexpected reply {reply!r:.120}"}], id=op_id)
    if reply["type"] == "error":
        raise GraphQLError(reply.get("payload"), id=op_id)
    result = reply.get("payload") or {}
    if result.get("errors"):
        raise GraphQLError(result["errors"], data=result.get("data"), id=op_id)
    return result.get("data")


async def _request(client: Client, body: dict[str, Any], timeout: float | None) -> Any:
    started = time.monotonic()
    try:
        await _until_acked(client, _state(client), timeout)
    except TimeoutError:
        raise TimeoutError(f"no {SUBPROTOCOL} connection_ack within {timeout} s: "
                           "the operation was not sent") from None
    left = None if timeout is None else max(0.001, timeout - (time.monotonic() - started))
    return await client.request(body, timeout=left)


async def subscribe(client: Client, query_text: str, variables: dict[str, Any] | None = None,
                    *, operation_name: str | None = None) -> Subscription:
    """Start a subscription; iterate the returned `Subscription` for its results.

    Sent now if the connection is acknowledged, otherwise right after the next
    ``connection_ack``; sent again after every reconnect until it ends.
    """
    _check(client)
    body = _operation(query_text, variables, operation_name)
    return await call_on(client.loop, _subscribe(client, body))


async def _subscribe(client: Client, body: dict[str, Any]) -> Subscription:
    state = _state(client)
    state.counter += 1
    sub = Subscription(client, f"s{state.counter}", body)
    state.subs[sub.id] = sub
    if _acked(client, state):
        await sub._send(state)
    return sub


def ack_payload(client: Client) -> Any:
    """The payload of the last ``connection_ack`` (None if it had none)."""
    return _state(client).ack_payload


async def ping(client: Client, timeout: float = 5.0) -> float:
    """Send the protocol's ``ping``; the round trip to its ``pong`` in ms."""
    _check(client)
    return await call_on(client.loop, _ping(client, timeout))


async def _ping(client: Client, timeout: float) -> float:
    state = _state(client)
    waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    state.pongs.append(waiter)
    started = time.monotonic()
    await client.send({"type": "ping"})
    client.timeline.record("ping", direction="out", peer=client.name, detail=SUBPROTOCOL)
    try:
        await asyncio.wait_for(waiter, timeout)
    except TimeoutError:
        raise TimeoutError(f"no {SUBPROTOCOL} pong within {timeout} s") from None
    rtt = (time.monotonic() - started) * 1000
    client.timeline.record("pong", direction="in", peer=client.name, detail=SUBPROTOCOL,
                           latency_ms=rtt)
    return rtt


class Subscription:
    """One subscription: ``async for result in sub`` yields each ``next`` payload
    (``{"data": ..., "errors"?: ...}``) and stops at ``complete``; an ``error``
    message raises `GraphQLError`; a client closed for good raises `NotOpen`.

    ``await sub.next(timeout)`` takes one result (`StopAsyncIteration` at the
    end). ``await sub.stop()`` (or leaving ``async with``) sends ``complete``.
    ``received`` counts results, ``resubscribes`` the reconnects it survived.
    Results wait in memory until read.
    """

    def __init__(self, client: Client, id: str, payload: dict[str, Any]) -> None:
        self.client = client
        self.id = id
        self.payload = payload
        self.received = 0
        self.resubscribes = 0
        self.done = False
        self._items: deque[tuple[str, Any]] = deque()
        self._wake = asyncio.Event()
        self._receipt: Receipt | None = None
        self._sent_on = 0  # the connection (state.serial) it was last sent on

    def __repr__(self) -> str:
        end = " done" if self.done else ""
        return f"<graphql.Subscription {self.id} received={self.received}{end}>"

    async def _send(self, state: _State) -> None:
        self._sent_on = state.serial
        self._receipt = await self.client.send(
            {"id": self.id, "type": "subscribe", "payload": self.payload})

    def _feed(self, message: dict[str, Any]) -> None:
        kind = message["type"]
        if kind == "next":
            self.received += 1
            self._items.append(("next", message.get("payload")))
        elif kind == "error":
            self._items.append(("error", GraphQLError(message.get("payload"), id=self.id)))
        else:
            self._items.append(("complete", None))
        self._wake.set()

    def _fail(self, error: Exception) -> None:
        self._items.append(("error", error))
        self._wake.set()

    def __aiter__(self) -> AsyncIterator[Any]:
        return self

    async def __anext__(self) -> Any:
        return await call_on(self.client.loop, self._next(None))

    async def next(self, timeout: float | None = None) -> Any:
        """The next result; `TimeoutError` after `timeout` s, `StopAsyncIteration` at the end."""
        return await call_on(self.client.loop, self._next(timeout))

    async def _next(self, timeout: float | None) -> Any:
        state = _state(self.client)
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            if self._items:
                kind, value = self._items.popleft()
                if kind == "next":
                    return value
                self.done = True
                if kind == "complete":
                    raise StopAsyncIteration
                raise value
            if self.done:
                raise StopAsyncIteration
            if _stopped_for_good(self.client, state):
                self.done = True
                state.subs.pop(self.id, None)
                raise NotOpen(f"subscription {self.id} ended without complete: the client is "
                              f"closed ({self.client.close_text})")
            left = math.inf if deadline is None else deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no result for subscription {self.id} within {timeout} s")
            self._wake.clear()
            woken = asyncio.ensure_future(self._wake.wait())
            closed = asyncio.ensure_future(self.client.wait_until(
                lambda c: _stopped_for_good(c, state), timeout=None))
            try:
                await asyncio.wait({woken, closed}, timeout=None if deadline is None else left,
                                   return_when=asyncio.FIRST_COMPLETED)
            finally:
                woken.cancel()
                closed.cancel()

    async def stop(self) -> None:
        """End the subscription: ``complete`` to the server, and the iteration stops."""
        await call_on(self.client.loop, self._stop())

    async def _stop(self) -> None:
        state = _state(self.client)
        if state.subs.pop(self.id, None) is None:
            return
        self._items.append(("complete", None))
        self._wake.set()
        if self._receipt is not None:
            state.stopped.add(self.id)  # late results for it are dropped
            if self.client.ready:
                await self.client.send({"id": self.id, "type": "complete"})

    async def __aenter__(self) -> Subscription:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()
