"""Frames on the wire: strict JSON, the ``msg`` envelope, signatures, compression, chunks.

Pure functions and one small class; no I/O. Errors about a peer's frame are
`ProtocolError` with the wire code to answer with; errors about the user's own
payload are `TypeError`/`ValueError` naming the path of the bad value.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import math
import zlib
from typing import Any

from wsnb.errors import ProtocolError

try:  # orjson is a dependency; the stdlib path stays for exotic values and as the reference
    import orjson as _orjson
except ImportError:  # pragma: no cover
    _orjson = None  # type: ignore[assignment]

_FAST_OPTIONS = 0 if _orjson is None else (
    _orjson.OPT_SORT_KEYS | _orjson.OPT_PASSTHROUGH_DATETIME
    | _orjson.OPT_PASSTHROUGH_DATACLASS | _orjson.OPT_PASSTHROUGH_SUBCLASS)

VERSION = 1

#: Fields each frame type must carry, with their JSON types (PROTOCOL.md table).
_REQUIRED: dict[str, dict[str, type | tuple[type, ...]]] = {
    "handshake": {"v": int},
    "handshake_ack": {"v": int, "session": str, "resumed": bool, "last_acked": int,
                      "heartbeat_ms": int, "max_size": int},
    "msg": {"v": int, "id": int, "ts": int, "z": int},
    "ack": {},
    "nack": {"id": int, "code": str, "reason": str},
    "chunk": {"id": int, "i": int, "n": int, "data": str},
    "ping": {"ts": (int, float)},
    "pong": {"ts": (int, float)},
    "error": {"code": str, "reason": str},
}
FRAME_TYPES = frozenset(_REQUIRED)
#: Integers on the wire fit a signed 64-bit slot (ids, counters, timestamps).
MAX_INT = 2**63 - 1
_INT_FIELDS = frozenset(("id", "upto", "i", "n", "ts", "v", "z", "last_seen", "last_acked",
                         "heartbeat_ms", "max_size"))

_DUMPS = json.JSONEncoder(
    sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
).encode


def dumps(obj: Any) -> str:
    """Canonical JSON: keys sorted, no spaces, UTF-8 kept, no NaN/Infinity."""
    return _DUMPS(obj)


def _utf8_ok(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _bad_path(value: Any, path: str, depth: int = 0) -> tuple[str, str, type[Exception]] | None:
    """Find the first value JSON cannot carry: (path, why, exception type)."""
    if depth > 900:
        return path, "nested too deeply (over 900 levels)", ValueError
    if isinstance(value, str):
        if _utf8_ok(value):
            return None
        return path, f"{value[:40]!r} is not valid UTF-8 (lone surrogate)", ValueError
    if value is None or isinstance(value, (bool, int)):
        return None
    if isinstance(value, float):
        if math.isfinite(value):
            return None
        return path, f"{value!r} is not valid JSON (RFC 8259 has no NaN/Infinity)", ValueError
    if isinstance(value, dict):
        if len({type(k) is str for k in value}) > 1:
            return path, "dict mixes str and non-str keys (JSON keys are str)", TypeError
        for key, item in value.items():
            if not isinstance(key, (str, int, float, bool)) and key is not None:
                return path, f"dict key {key!r} is a {type(key).__name__}, JSON keys are str", \
                    TypeError
            if isinstance(key, str) and not _utf8_ok(key):
                return path, f"dict key {key!r} is not valid UTF-8 (lone surrogate)", ValueError
            found = _bad_path(item, f"{path}[{key!r}]", depth + 1)
            if found:
                return found
        try:
            sorted(value)
        except TypeError:
            return path, "dict keys of these types cannot be sorted (use str keys)", TypeError
        return None
    if isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            found = _bad_path(item, f"{path}[{index}]", depth + 1)
            if found:
                return found
        return None
    hint = " (decode bytes or base64-encode them)" if isinstance(value, (bytes, bytearray)) else ""
    if isinstance(value, (set, frozenset)):
        hint = " (use a list)"
    return path, f"{type(value).__name__} is not JSON-serializable{hint}", TypeError


def payload_text(payload: Any, canonical: bool = False) -> str:
    """Serialize a user's payload, or raise naming the bad value's path.

    Keys are sorted and there are no spaces either way. ``canonical=True``
    (needed for signatures) formats numbers exactly as PROTOCOL.md's
    canonical JSON (Python's `json`); otherwise orjson may write floats
    differently (``1.5e-7`` for ``1.5e-07``), ten times faster. Non-str dict
    keys are coerced like `json` does (1 -> "1"), unless mixed with str keys.

    >>> payload_text({"a": [1, 2, float("nan")]})
    Traceback (most recent call last):
    ValueError: payload['a'][2]: nan is not valid JSON (RFC 8259 has no NaN/Infinity)
    """
    if not canonical and _orjson is not None:
        try:
            fast = _orjson.dumps(payload, option=_FAST_OPTIONS)
        except (TypeError, _orjson.JSONEncodeError):
            pass  # the stdlib path below explains what is wrong, or handles it
        else:
            if b"null" not in fast:  # orjson writes NaN as null: let json judge those
                return fast.decode()
    try:
        text = _DUMPS(payload)
    except (TypeError, ValueError, RecursionError):
        bad = _bad_path(payload, "payload")
        if bad is None:
            raise
    else:
        if text.isascii() or _utf8_ok(text):
            return text
        # A lone surrogate: json accepts it, but it is not UTF-8 and cannot go on the wire.
        bad = _bad_path(payload, "payload") or (
            "payload", "is not valid UTF-8 (lone surrogate)", ValueError)
    path, why, exc = bad
    raise exc(f"{path}: {why}") from None


def sign(canonical_text: str, secret: bytes) -> str:
    """Lowercase hex HMAC-SHA256 of a frame's canonical JSON without ``s``."""
    return hmac.new(secret, canonical_text.encode(), hashlib.sha256).hexdigest()


def encode_msg(
    id: int,
    data: str,
    *,
    ts: int,
    z: int = 0,
    secret: bytes | None = None,
) -> str:
    """Build a ``msg`` frame from already-serialized payload text `data`.

    With `secret`, the frame is signed; `data` must then be canonical (from
    `payload_text`) or base64 text when ``z=1``.
    """
    d = data if z == 0 else f'"{data}"'
    base = f'{{"d":{d},"id":{id},"ts":{ts},"type":"msg","v":{VERSION},"z":{z}}}'
    if secret is None:
        return base
    s = sign(base, secret)
    return f'{{"d":{d},"id":{id},"s":"{s}","ts":{ts},"type":"msg","v":{VERSION},"z":{z}}}'


def handshake_frame(token: str | None = None, *, session: str | None = None,
                    last_seen: int = 0, features: tuple[str, ...] = ("chunk", "z", "upto"),
                    ) -> str:
    """The client's ``handshake`` frame: the one place it is built (client, doctor, CLI)."""
    return dumps({"type": "handshake", "v": VERSION, "token": token, "session": session,
                  "last_seen": last_seen, "features": list(features)})


def compress(data: str) -> str:
    """zlib (RFC 1950) of the UTF-8 text, as base64 text."""
    return base64.b64encode(zlib.compress(data.encode(), 6)).decode("ascii")


def maybe_compress(data: str, threshold: int | None) -> tuple[str, int]:
    """Return ``(d_text, z)``: compressed only when over `threshold` and smaller."""
    if threshold is None or len(data) < threshold:
        return data, 0
    packed = compress(data)
    if len(packed) + 2 < len(data):
        return packed, 1
    return data, 0


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise ValueError(f"duplicate key {key!r}")
            seen.add(key)
    return obj


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):  # 1e999 would parse as inf
        raise ValueError(f"number {text[:40]} is out of range")
    return value


_STRICT = json.JSONDecoder(object_pairs_hook=_no_duplicate_keys, parse_constant=_refuse_constant,
                           parse_float=_finite_float)


def loads(text: str | bytes) -> Any:
    """Strict RFC 8259 parse: no NaN/Infinity, no duplicate keys; `ProtocolError` otherwise.

    Fast path: orjson parses, and re-serializing gives back the exact input,
    which proves nothing was lost (no duplicate key, no int rounded to a
    float). Anything else takes the strict stdlib parser.
    """
    if _orjson is not None:
        try:
            value = _orjson.loads(text)
            again = _orjson.dumps(value)
        except (_orjson.JSONDecodeError, TypeError):
            pass
        else:
            raw = text if isinstance(text, bytes) else None
            if raw is None and isinstance(text, str):
                raw = text.encode("utf-8", "surrogatepass")
            if again == raw:
                return value
    try:
        if isinstance(text, (bytes, bytearray, memoryview)):
            text = bytes(text).decode("utf-8")
        return _STRICT.decode(text)
    except RecursionError:
        raise ProtocolError("bad_json", "JSON nested too deeply") from None
    except UnicodeDecodeError as exc:
        raise ProtocolError("bad_json", f"not UTF-8: {exc.reason} at byte {exc.start}") from None
    except json.JSONDecodeError as exc:
        raise ProtocolError(
            "bad_json", f"{exc.msg} at line {exc.lineno} column {exc.colno}"
        ) from None
    except ValueError as exc:
        raise ProtocolError("bad_json", str(exc)) from None


def _is_int(value: Any) -> bool:
    return type(value) is int


def parse_frame(text: str | bytes) -> dict[str, Any]:
    """Parse and check one frame; raise `ProtocolError` with the code to answer with.

    Errors about a ``msg`` or ``chunk`` frame carry its ``id`` and
    ``frame_type``: the receiver answers them with ``nack``.
    """
    frame = loads(text)
    if not isinstance(frame, dict):
        raise ProtocolError("bad_envelope", f"a frame is a JSON object, got {type(frame).__name__}")
    kind = frame.get("type")
    if not isinstance(kind, str):
        raise ProtocolError("bad_envelope", 'a frame needs a string field "type"')
    try:
        _check_frame(kind, frame)
    except ProtocolError as exc:
        if kind in ("msg", "chunk") and _is_int(frame.get("id")) and 1 <= frame["id"] <= MAX_INT:
            exc.id, exc.frame_type = frame["id"], kind
        else:
            exc.id = None
        raise
    return frame


def _check_frame(kind: str, frame: dict[str, Any]) -> None:
    required = _REQUIRED.get(kind)
    if required is None:
        raise ProtocolError("unknown_type", f"unknown frame type {kind[:40]!r}")
    for field in _INT_FIELDS.intersection(frame):  # usually 3 or 4 fields, not 11
        value = frame[field]
        if type(value) is int and not -MAX_INT <= value <= MAX_INT:
            raise ProtocolError("bad_envelope", f"{kind} frame field {field!r} is out of range")
    for field, types in required.items():
        value = frame.get(field)
        if field not in frame or not isinstance(value, types) or (
            type(value) is bool and types is not bool
        ):
            names = types.__name__ if isinstance(types, type) else "number"
            raise ProtocolError("bad_envelope", f"{kind} frame needs {field!r} as {names}")
    if kind == "msg":
        _check_msg(frame)
    elif kind == "ack":
        if not (_is_int(frame.get("id")) or _is_int(frame.get("upto"))):
            raise ProtocolError("bad_envelope", 'ack frame needs an int "id" or "upto"')
    elif kind == "chunk":
        if frame["n"] < 2 or not 0 <= frame["i"] < frame["n"] or frame["id"] < 1:
            raise ProtocolError("bad_envelope", "chunk needs n >= 2, 0 <= i < n and id >= 1")
    elif kind == "handshake":
        _check_handshake(frame)


def _check_msg(frame: dict[str, Any]) -> None:
    msg_id = frame["id"]
    if frame["v"] != VERSION:
        raise ProtocolError("version", f"version {frame['v']} is not supported (only 1)", msg_id)
    if msg_id < 1:
        raise ProtocolError("bad_envelope", "msg id must be >= 1", msg_id)
    if frame["z"] not in (0, 1):
        raise ProtocolError("bad_envelope", "msg z must be 0 or 1", msg_id)
    if "d" not in frame:
        raise ProtocolError("bad_envelope", 'msg frame needs "d"', msg_id)
    if frame["z"] == 1 and not isinstance(frame["d"], str):
        raise ProtocolError("bad_envelope", "compressed d must be base64 text", msg_id)
    if "s" in frame and not isinstance(frame["s"], str):
        raise ProtocolError("bad_envelope", "msg s must be a string", msg_id)


def _check_handshake(frame: dict[str, Any]) -> None:
    if frame["v"] != VERSION:
        raise ProtocolError("version", f"version {frame['v']} is not supported (only 1)")
    for field in ("token", "session"):
        if frame.get(field) is not None and not isinstance(frame[field], str):
            raise ProtocolError("bad_envelope", f"handshake {field} must be a string or null")
    last_seen = frame.get("last_seen", 0)
    if not _is_int(last_seen) or last_seen < 0:
        raise ProtocolError("bad_envelope", "handshake last_seen must be an int >= 0")
    features = frame.get("features", [])
    if not isinstance(features, list) or not all(isinstance(f, str) for f in features):
        raise ProtocolError("bad_envelope", "handshake features must be a list of strings")


def verify_msg(
    frame: dict[str, Any], secret: bytes, *, now_ms: int, replay_window_ms: int = 300_000
) -> None:
    """Check a ``msg`` frame's signature and freshness; `ProtocolError` if refused."""
    given = frame.get("s")
    if not isinstance(given, str):
        raise ProtocolError("bad_signature", "signature missing", frame["id"], "msg")
    unsigned = {k: v for k, v in frame.items() if k != "s"}
    try:
        expected = sign(dumps(unsigned), secret)
    except (TypeError, ValueError):
        raise ProtocolError("bad_signature", "frame cannot be canonicalized", frame["id"],
                            "msg") from None
    # compare_digest raises TypeError on non-ASCII str: a peer must not be able to crash us.
    if not given.isascii() or not hmac.compare_digest(given, expected):
        raise ProtocolError("bad_signature", "signature does not match", frame["id"], "msg")
    if abs(now_ms - frame["ts"]) > replay_window_ms:
        raise ProtocolError("bad_signature", "outside replay window", frame["id"], "msg")


def decode_payload(frame: dict[str, Any], max_bytes: int = 64 * 1024 * 1024) -> Any:
    """The payload of a checked ``msg`` frame, decompressed when ``z`` is 1."""
    if frame["z"] == 0:
        return frame["d"]
    try:
        packed = base64.b64decode(frame["d"], validate=True)
        inflater = zlib.decompressobj()
        raw = inflater.decompress(packed, max_bytes + 1)
    except (binascii.Error, ValueError, zlib.error) as exc:
        raise ProtocolError("bad_envelope", f"compressed d is not zlib+base64: {exc}",
                            frame["id"], "msg") from None
    if len(raw) > max_bytes or inflater.unconsumed_tail:
        raise ProtocolError("too_large", f"payload inflates past {max_bytes} bytes", frame["id"],
                            "msg")
    if not inflater.eof or inflater.unused_data:  # truncated (no checksum) or trailing bytes
        raise ProtocolError("bad_envelope", "compressed d is truncated or has trailing data",
                            frame["id"], "msg")
    try:
        return loads(raw)
    except ProtocolError as exc:
        raise ProtocolError(exc.code, exc.reason, frame["id"], "msg") from None


def frame_text(kind: str, **fields: Any) -> str:
    """Serialize a control frame (``ack``, ``ping``, ``error``...)."""
    fields["type"] = kind
    return dumps(fields)


def split_chunks(text: str, id: int, chunk_size: int) -> list[str]:
    """Slice a serialized ``msg`` frame into ``chunk`` frames of ≤ `chunk_size` characters."""
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    n = -(-len(text) // chunk_size)
    return [
        dumps({"type": "chunk", "id": id, "i": i, "n": n,
               "data": text[i * chunk_size:(i + 1) * chunk_size]})
        for i in range(n)
    ]


class ChunkAssembler:
    """Joins one connection's ``chunk`` series; at most one partial message at a time."""

    def __init__(self, max_chunks: int, max_chars: int) -> None:
        self.max_chunks = max_chunks
        self.max_chars = max_chars
        self._id: int | None = None
        self._n = 0
        self._parts: list[str] = []
        self._chars = 0

    @property
    def partial(self) -> bool:
        return self._id is not None

    def reset(self) -> None:
        """Discard a partial series (the connection closed)."""
        self._id, self._n, self._parts, self._chars = None, 0, [], 0

    def add(self, frame: dict[str, Any]) -> str | None:
        """Take one checked chunk frame; return the joined text when the series completes."""
        msg_id, i, n, data = frame["id"], frame["i"], frame["n"], frame["data"]
        if n > self.max_chunks:
            self.reset()
            raise ProtocolError("too_large", f"{n} chunks exceed the limit of {self.max_chunks}",
                                msg_id, "chunk")
        if self._id is None:
            if i != 0:
                raise ProtocolError("bad_envelope", f"chunk series {msg_id} must start at i=0",
                                    msg_id, "chunk")
            self._id, self._n = msg_id, n
        elif msg_id != self._id or n != self._n or i != len(self._parts):
            self.reset()
            raise ProtocolError("bad_envelope", "chunks of another message interleaved or out "
                                "of order; partial message discarded", msg_id, "chunk")
        self._chars += len(data)
        if self._chars > self.max_chars:
            self.reset()
            raise ProtocolError("too_large", f"chunked message exceeds {self.max_chars} chars",
                                msg_id, "chunk")
        self._parts.append(data)
        if len(self._parts) < self._n:
            return None
        text = "".join(self._parts)
        self.reset()
        return text
