"""JSON-RPC 2.0 over a WebSocket: ``Client(url, dialect="jsonrpc")``.

``client.request({"method": "add", "params": [1, 2]})`` sends
``{"jsonrpc": "2.0", "method": "add", "params": [1, 2], "id": N}`` (``N`` counts
up per client) and returns the reply that carries the same ``id``, parsed: a
dict with ``result`` or ``error``. `call` does the same and returns the
``result``, or raises `JsonRpcError` for an ``error`` reply::

    total = await jsonrpc.call(client, "add", [1, 2])

Every incoming text frame is parsed (strict JSON): replies go to their request;
notifications (``method`` and no ``id``) and requests from the server
(``method`` and an ``id``) go to the inbox as dicts. A batch reply (a JSON
array) is not paired: wsnb never sends a batch, so one answers a batch the
application sent itself with `Client.send`; it goes to the inbox as a list,
with an ``error`` row saying so. A reply whose ``id`` matches no waiting
request (late, after its timeout, or never asked) goes to the inbox with an
``error`` row; an ``error`` reply with ``id`` null (the server could not read
a request) goes to the inbox with an ``error`` row naming the error.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import orjson

from wsnb.dialects import Dialect
from wsnb.errors import WsnbError

if TYPE_CHECKING:
    from wsnb.client import Client

__all__ = ["DIALECT", "JsonRpcError", "call", "make_request", "notify", "reply_key"]

#: Standard error codes (JSON-RPC 2.0, section 5.1) in words.
ERROR_CODES = {-32700: "parse error", -32600: "invalid request", -32601: "method not found",
               -32602: "invalid params", -32603: "internal error"}


class JsonRpcError(WsnbError):
    """The server answered a call with an ``error`` object.

    ``code``, ``message`` and ``data`` are the error object's members; ``id`` is
    the request's id and ``method`` the method called (when known).
    """

    def __init__(self, code: Any, message: str, data: Any = None, *, id: Any = None,
                 method: str | None = None) -> None:
        self.code = code
        self.message = message
        self.data = data
        self.id = id
        self.method = method
        words = ERROR_CODES.get(code) if isinstance(code, int) else None
        if words is None and isinstance(code, int) and -32099 <= code <= -32000:
            words = "server error"
        where = f"{method}(): " if method else ""
        text = f"{where}JSON-RPC error {code}"
        if words and words != str(message).lower():
            text += f" ({words})"
        text += f": {message}"
        if data is not None:
            text += f" [data: {_short(data)}]"
        super().__init__(text)

    @classmethod
    def from_reply(cls, reply: dict[str, Any], method: str | None = None) -> JsonRpcError:
        error = reply.get("error")
        if not isinstance(error, dict):
            return cls(None, f"malformed error member: {_short(error)}", id=reply.get("id"),
                       method=method)
        return cls(error.get("code"), str(error.get("message", "")), error.get("data"),
                   id=reply.get("id"), method=method)


def _short(value: Any, limit: int = 120) -> str:
    try:
        text = orjson.dumps(value).decode()
    except TypeError:
        text = repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def make_request(payload: Any, key: Any) -> dict[str, Any]:
    """The request object for `payload` (``{"method": ..., "params": ...}``) with id `key`.

    ``params`` may be a list (by position), a dict (by name) or absent. A
    payload that already says ``"jsonrpc": "2.0"`` keeps its other members; its
    ``id`` is replaced by `key`, the id the reply is paired by.
    """
    if isinstance(payload, str):
        payload = {"method": payload}
    if not isinstance(payload, dict) or not isinstance(payload.get("method"), str):
        raise ValueError('a JSON-RPC request is a dict with a "method" string (and optional '
                         f'"params": list or dict), got {_short(payload)}')
    params = payload.get("params")
    if params is not None and not isinstance(params, (list, dict)):
        raise ValueError(f'JSON-RPC "params" must be a list or a dict, got {_short(params)} '
                         f"(wrap a single value: [value])")
    request = {key_: value for key_, value in payload.items() if key_ != "id"}
    request["jsonrpc"] = "2.0"
    request["id"] = key
    return request


def reply_key(frame: Any) -> Any:
    """The id a response carries (None for notifications, server requests and batches)."""
    if isinstance(frame, dict) and ("result" in frame or "error" in frame) \
            and "method" not in frame:
        return frame.get("id")
    return None


def _parse(frame: Any) -> Any:
    if isinstance(frame, (bytes, bytearray, memoryview)):
        frame = bytes(frame)
    elif not isinstance(frame, str):
        return frame
    try:
        return orjson.loads(frame)
    except orjson.JSONDecodeError as exc:
        raise ValueError(f"frame is not JSON ({exc}); delivered as is") from None


def intercept(client: Client, frame: Any) -> Any:
    """Parse each frame; say on the timeline what cannot be paired with a request."""
    message = _parse(frame)
    record = client.timeline.record
    if isinstance(message, list):
        record("error", direction="in", peer=client.name,
               detail=f"jsonrpc: a batch reply ({len(message)} items) is not paired with "
                      "requests (wsnb sends no batches): delivered to the inbox as a list")
        return message
    key = reply_key(message)
    if key is None:
        if isinstance(message, dict) and "error" in message and "method" not in message:
            record("error", direction="in", peer=client.name,
                   detail=f"jsonrpc: error reply with id null: "
                          f"{JsonRpcError.from_reply(message)}"[:200])
        return message
    return message


async def call(client: Client, method: str, params: list[Any] | dict[str, Any] | None = None,
               *, timeout: float | None = 10.0) -> Any:
    """Call `method` and return its ``result``; raise `JsonRpcError` for an ``error`` reply.

    Pairing, latency and the timeline rows are `Client.request`'s (the client
    must use this dialect). `TimeoutError` if no reply comes within `timeout`.
    """
    _check(client)
    payload: dict[str, Any] = {"method": method}
    if params is not None:
        payload["params"] = params
    reply = await client.request(payload, timeout=timeout)
    if not isinstance(reply, dict):
        raise JsonRpcError(None, f"reply is not a JSON-RPC response: {_short(reply)}",
                           method=method)
    if "error" in reply:
        raise JsonRpcError.from_reply(reply, method)
    return reply.get("result")


async def notify(client: Client, method: str,
                 params: list[Any] | dict[str, Any] | None = None) -> Any:
    """Send a notification (no ``id``: the server sends no reply); returns the receipt."""
    payload: dict[str, Any] = {"jsonrpc": "2.0", "method": method}
    if params is not None:
        payload["params"] = params
    return await client.send(payload)


def _check(client: Client) -> None:
    if client.dialect is None or client.dialect.make_request is not make_request:
        raise ValueError("jsonrpc.call needs a client made with dialect='jsonrpc'")


DIALECT = Dialect(name="jsonrpc", intercept=intercept, reply_key=reply_key,
                  make_request=make_request)
