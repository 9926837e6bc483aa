"""Frames on the wire: strict JSON, the ``msg`` envelope, signatures, compression, chunks.

Pure functions and one small class; no I/O. Errors about a peer's frame are
`ProtocolError` with the wire code to answer with; errors about the user's own
payload are `TypeError`/`ValueError` naming the path of the bad value.
Protocol revision 1.1 (docs/protocol.md): integers on the wire in
``[0, 2**53 - 1]``, duplicate keys refused in a frame's top level, signatures
over ``session + "\n" + JCS(frame without s)`` (RFC 8785).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import math
import re
import zlib
from collections.abc import Iterator
from typing import Any

import orjson
import rfc8785

from wsnb.errors import ProtocolError

_SORTED = orjson.OPT_SORT_KEYS | orjson.OPT_PASSTHROUGH_DATETIME | \
    orjson.OPT_PASSTHROUGH_DATACLASS | orjson.OPT_PASSTHROUGH_SUBCLASS

VERSION = 1

#: Fields each frame type must carry, with their JSON types (PROTOCOL.md table).
_REQUIRED: dict[str, dict[str, type | tuple[type, ...]]] = {
    "handshake": {},
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
#: Integers on the wire: ``[0, 2**53 - 1]``, what JavaScript represents exactly.
MAX_INT = 2**53 - 1
#: The smallest ``max_size`` a server may advertise (smaller is a protocol violation).
MIN_MAX_SIZE = 4096

_DUMPS = json.JSONEncoder(
    sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
).encode


def dumps(obj: Any) -> str:
    """Compact JSON with sorted keys, UTF-8 kept, no NaN/Infinity (control frames)."""
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


# Strings, then anything in a number that makes it a float (JCS writes floats its own way).
_STRINGS = re.compile(rb'"(?:[^"\\]|\\.)*"')
_FLOAT_OR_BIG = re.compile(rb"[0-9][.eE]|[0-9]{16}")


def _orjson_is_jcs(text: bytes) -> bool:
    """Whether orjson's sorted output is already RFC 8785 (no floats, no big ints, no
    astral-plane characters whose UTF-16 order differs from code-point order)."""
    if not text.isascii() and re.search(rb"[\xf0-\xf4]", text):
        return False
    return _FLOAT_OR_BIG.search(_STRINGS.sub(b'""', text)) is None


def payload_text(payload: Any, canonical: bool = False) -> str:
    """Serialize a user's payload, or raise naming the bad value's path.

    ``canonical=True`` (needed for signatures) gives RFC 8785 JCS text: keys in
    UTF-16 order, numbers as ECMAScript writes them, integers within
    ``±(2**53 - 1)``. Otherwise the text is compact JSON with sorted keys.
    Non-str dict keys are coerced like `json` does (1 -> "1").

    >>> payload_text({"a": [1, 2, float("nan")]})
    Traceback (most recent call last):
    ValueError: payload['a'][2]: nan is not valid JSON (RFC 8259 has no NaN/Infinity)
    """
    try:
        fast = orjson.dumps(payload, option=_SORTED)
    except (TypeError, orjson.JSONEncodeError):
        fast = None  # the stdlib path below explains what is wrong, or handles it
    # orjson writes NaN as null: let json judge those
    if fast is not None and b"null" not in fast and (not canonical or _orjson_is_jcs(fast)):
        return fast.decode()
    try:
        text = _DUMPS(payload)
    except (TypeError, ValueError, RecursionError):
        bad = _bad_path(payload, "payload")
        if bad is None:
            raise
    else:
        if text.isascii() or _utf8_ok(text):
            if not canonical:
                return text
            try:
                return rfc8785.dumps(json.loads(text)).decode()
            except rfc8785.IntegerDomainError as exc:
                raise ValueError(f"payload: integer {exc.args[0]} is outside ±(2**53 - 1), "
                                 "which signed payloads (RFC 8785) cannot carry") from None
            except (rfc8785.FloatDomainError, RecursionError) as exc:
                raise ValueError(f"payload: {exc}") from None
        # A lone surrogate: json accepts it, but it is not UTF-8 and cannot go on the wire.
        bad = _bad_path(payload, "payload") or (
            "payload", "is not valid UTF-8 (lone surrogate)", ValueError)
    path, why, exc_type = bad
    raise exc_type(f"{path}: {why}") from None


#: Items serialized per orjson call by `payload_text_batched`.
BATCH_ITEMS = 4096


def _dumps_batched(value: Any) -> bytes:
    """orjson in small calls: big lists in slices of `BATCH_ITEMS`, dict values one by
    one, so a thread doing this lets go of the interpreter lock between calls."""
    kind = type(value)
    if kind is list and len(value) > BATCH_ITEMS:
        parts = [orjson.dumps(value[i:i + BATCH_ITEMS], option=_SORTED)[1:-1]
                 for i in range(0, len(value), BATCH_ITEMS)]
        return b"[" + b",".join(parts) + b"]"
    if kind is dict and all(type(k) is str for k in value):
        items = sorted(value.items())
        return b"{" + b",".join(orjson.dumps(k) + b":" + _dumps_batched(v)
                                for k, v in items) + b"}"
    return orjson.dumps(value, option=_SORTED)


def payload_text_batched(payload: Any) -> str:
    """`payload_text` (not canonical) for big payloads, in many short orjson calls.

    Meant for a worker thread: orjson holds the interpreter lock for a whole
    call, so one 20 MB call would stall the event loop thread for ~60 ms.
    Anything unusual (NaN, odd keys) takes `payload_text`, which explains errors.
    """
    try:
        fast = _dumps_batched(payload)
    except (TypeError, orjson.JSONEncodeError):
        return payload_text(payload)
    if b"null" in fast:  # NaN is written as null by orjson: let payload_text judge
        return payload_text(payload)
    return fast.decode()


def utf8_size(text: str) -> int:
    """Bytes of `text` in UTF-8 (the unit every size limit counts in)."""
    return len(text) if text.isascii() else len(text.encode("utf-8", "surrogatepass"))


def sign(session: str, unsigned_jcs: str | bytes, secret: bytes) -> str:
    """Lowercase hex HMAC-SHA256 of ``session + "\n" + JCS(frame without s)``."""
    mac = hmac.new(secret, session.encode() + b"\n", hashlib.sha256)
    mac.update(unsigned_jcs.encode() if isinstance(unsigned_jcs, str) else unsigned_jcs)
    return mac.hexdigest()


def encode_msg(
    id: int,
    data: str,
    *,
    ts: int,
    z: int = 0,
    secret: bytes | None = None,
    session: str = "",
) -> str:
    """Build a ``msg`` frame from already-serialized payload text `data`.

    With `secret`, the frame is signed for `session`; `data` must then be JCS
    (``payload_text(..., canonical=True)``) or base64 text when ``z=1``. The
    keys are in JCS order, so the frame without ``s`` is exactly what is signed.
    """
    d = data if z == 0 else f'"{data}"'
    if secret is None:
        return f'{{"d":{d},"id":{id},"ts":{ts},"type":"msg","v":{VERSION},"z":{z}}}'
    s = sign(session, f'{{"d":{d},"id":{id},"ts":{ts},"type":"msg","v":{VERSION},"z":{z}}}',
             secret)
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


class _DuplicateKey(ValueError):
    pass


def _top_level_once(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise _DuplicateKey(f"duplicate key {key!r}")
            seen.add(key)
    return obj


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):  # 1e999 would parse as inf
        raise ValueError(f"number {text[:40]} is out of range")
    return value


# Duplicate keys are refused everywhere by this reference parser (PROTOCOL.md lets a
# receiver refuse them inside d); the fast path below refuses them in the top level only.
_STRICT = json.JSONDecoder(object_pairs_hook=_top_level_once, parse_constant=_refuse_constant,
                           parse_float=_finite_float)


def _as_text(raw: str | bytes) -> str:
    try:
        return bytes(raw).decode("utf-8") if isinstance(raw, (bytes, bytearray, memoryview)) \
            else raw
    except UnicodeDecodeError as exc:
        raise ProtocolError("bad_json", f"not UTF-8: {exc.reason} at byte {exc.start}") from None


def loads(raw: str | bytes) -> Any:
    """Strict RFC 8259 parse: no NaN/Infinity, no duplicate keys; `ProtocolError` otherwise."""
    text = _as_text(raw)
    try:
        return _STRICT.decode(text)
    except RecursionError:
        raise ProtocolError("bad_json", "JSON nested too deeply") from None
    except json.JSONDecodeError as exc:
        raise ProtocolError(
            "bad_json", f"{exc.msg} at line {exc.lineno} column {exc.colno}"
        ) from None
    except ValueError as exc:
        raise ProtocolError("bad_json", str(exc)) from None


# The tail of a msg frame exactly as wsnb writes it: no duplicate key can hide in it.
_MSG_TAIL = re.compile(rb',"id":([1-9][0-9]{0,15}),(?:"s":"([0-9a-f]{64})",)?'
                       rb'"ts":([0-9]{1,16}),"type":"msg","v":1,"z":([01])}')


def _fast_msg(raw: bytes) -> dict[str, Any] | None:
    """A ``msg`` frame in wsnb's own layout, parsed without the strict parser (hot path)."""
    cut = raw.rfind(b',"id":')
    tail = _MSG_TAIL.fullmatch(raw, cut) if cut > 5 else None
    if tail is None:
        return None
    msg_id, ts = int(tail.group(1)), int(tail.group(3))
    if msg_id > MAX_INT or ts > MAX_INT:
        return None  # the slow path names the problem
    try:
        d = orjson.loads(raw[5:cut])
    except orjson.JSONDecodeError:
        return None
    z = 1 if tail.group(4) == b"1" else 0
    if z and not isinstance(d, str):
        return None
    frame = {"type": "msg", "v": VERSION, "id": msg_id, "ts": ts, "z": z, "d": d}
    if tail.group(2) is not None:
        frame["s"] = tail.group(2).decode()
    return frame


def _fast_split(raw: bytes) -> dict[str, Any] | None:
    """Parse a frame whose first key is ``d`` or ``data`` (as wsnb writes them) quickly.

    The big value is parsed by orjson and the small rest by the strict parser;
    the frame is accepted only if the rest is a duplicate-free object that
    repeats neither key, which proves the whole text is an object without
    top-level duplicates. Anything else returns None (the slow path decides).
    """
    if raw.startswith(b'{"d":'):
        key, start = "d", 5
    elif raw.startswith(b'{"data":'):
        key, start = "data", 8
    else:
        return None
    cut = raw.rfind(b',"i')
    if cut <= start:
        return None
    try:
        value = orjson.loads(raw[start:cut])
        rest = _STRICT.decode(b"{".join((b"", raw[cut + 1:])).decode("utf-8"))
    except (orjson.JSONDecodeError, ValueError, RecursionError):
        return None
    if not isinstance(rest, dict) or key in rest:
        return None
    rest[key] = value
    return rest


def parse_frame(raw: str | bytes) -> dict[str, Any]:
    """Parse and check one frame; raise `ProtocolError` with the code to answer with.

    Errors about a ``msg`` or ``chunk`` frame carry its ``id`` and
    ``frame_type``: the receiver answers them with ``nack``.
    """
    if isinstance(raw, bytes) and raw.startswith(b'{"d":'):
        fast = _fast_msg(raw)
        if fast is not None:
            return fast  # every field checked by the pattern
    frame = _fast_split(raw) if isinstance(raw, bytes) else None
    if frame is None:
        frame = loads(raw)
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


def _is_int(value: Any) -> bool:
    return type(value) is int


def _check_frame(kind: str, frame: dict[str, Any]) -> None:
    required = _REQUIRED.get(kind)
    if required is None:
        raise ProtocolError("unknown_type", f"unknown frame type {kind[:40]!r}")
    for field, value in frame.items():  # every top-level integer: [0, 2**53 - 1]
        if type(value) is int and not 0 <= value <= MAX_INT:
            raise ProtocolError("bad_envelope",
                                f"{kind} frame field {field[:40]!r} is outside [0, 2**53 - 1]")
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
    elif kind == "handshake_ack" and "durable" in frame and type(frame["durable"]) is not bool:
        raise ProtocolError("bad_envelope", "handshake_ack durable must be a bool")


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
    """Fill 1.1's defaults (``v`` 1, ``session`` null, ``last_seen`` 0) and check types."""
    frame.setdefault("v", VERSION)
    frame.setdefault("token", None)
    frame.setdefault("session", None)
    frame.setdefault("last_seen", 0)
    if not _is_int(frame["v"]):
        raise ProtocolError("bad_envelope", "handshake v must be an int")
    if frame["v"] != VERSION:
        raise ProtocolError("version", f"version {frame['v']} is not supported (only 1)")
    for field in ("token", "session"):
        if frame[field] is not None and not isinstance(frame[field], str):
            raise ProtocolError("bad_envelope", f"handshake {field} must be a string or null")
    if not _is_int(frame["last_seen"]):
        raise ProtocolError("bad_envelope", "handshake last_seen must be an int >= 0")
    features = frame.get("features", [])
    if not isinstance(features, list) or not all(isinstance(f, str) for f in features):
        raise ProtocolError("bad_envelope", "handshake features must be a list of strings")


_S_FIELD = re.compile(rb',"s":"[0-9a-f]{64}"')


def verify_msg(frame: dict[str, Any], secret: bytes, *, now_ms: int, session: str = "",
               replay_window_ms: int = 300_000, raw: bytes | None = None) -> None:
    """Check a ``msg`` frame's signature (bound to `session`) and freshness.

    `raw` is the frame's text as received: when it is wsnb's own layout, the
    bytes without ``s`` are what was signed and no re-canonicalization is
    needed. Raises `ProtocolError` (``bad_signature``) when refused.
    """
    given = frame.get("s")
    if not isinstance(given, str):
        raise ProtocolError("bad_signature", "signature missing", frame["id"], "msg")
    # compare_digest raises TypeError on non-ASCII str: a peer must not be able to crash us.
    ok = False
    if given.isascii():
        if raw is not None and raw.startswith(b'{"d":'):
            unsigned, count = _S_FIELD.subn(b"", raw, count=1)
            ok = count == 1 and hmac.compare_digest(given, sign(session, unsigned, secret))
        if not ok:
            try:
                canonical = rfc8785.dumps({k: v for k, v in frame.items() if k != "s"})
            except (rfc8785.CanonicalizationError, RecursionError, UnicodeError):
                raise ProtocolError("bad_signature", "frame cannot be canonicalized (RFC 8785)",
                                    frame["id"], "msg") from None
            ok = hmac.compare_digest(given, sign(session, canonical, secret))
    if not ok:
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
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        pass
    try:
        return loads(raw)
    except ProtocolError as exc:
        raise ProtocolError(exc.code, exc.reason, frame["id"], "msg") from None


def frame_text(kind: str, **fields: Any) -> str:
    """Serialize a control frame (``ack``, ``ping``, ``error``...)."""
    fields["type"] = kind
    return dumps(fields)


#: Bytes a chunk frame adds around its slice (keys, id, i, n).
CHUNK_OVERHEAD = 128
#: UTF-8 bytes one code point can take once escaped inside a JSON string (``\u001f``).
MAX_ESCAPED_BYTES = 6


def slice_chars(chunk_size: int, peer_max_size: int) -> int:
    """Code points per slice so a chunk frame fits `peer_max_size` bytes, escaped."""
    return max(1, min(chunk_size, (peer_max_size - CHUNK_OVERHEAD) // MAX_ESCAPED_BYTES))


def chunk_frame(id: int, i: int, n: int, data: str) -> str:
    """One ``chunk`` frame (``data`` first, as `parse_frame`'s fast path expects)."""
    return f'{{"data":{orjson.dumps(data).decode()},"i":{i},"id":{id},"n":{n},"type":"chunk"}}'


def iter_chunks(text: str, id: int, slice_size: int) -> Iterator[str]:
    """Slice a serialized ``msg`` frame into ``chunk`` frames of ≤ `slice_size` code points.

    Python strings index code points, so a slice never splits a surrogate pair.
    """
    if slice_size < 1:
        raise ValueError(f"chunk_size (code points per slice) must be >= 1, got {slice_size}")
    n = -(-len(text) // slice_size)
    for i in range(n):
        yield chunk_frame(id, i, n, text[i * slice_size:(i + 1) * slice_size])


def _escaped_size(part: str) -> int:
    """UTF-8 bytes of `part` once written inside a JSON string (serialized JSON text
    holds no raw control characters, so only quotes and backslashes grow)."""
    return utf8_size(part) + part.count('"') + part.count("\\")


def plan_slices(text: str, max_chars: int, max_bytes: int) -> list[tuple[int, int]]:
    """Slice bounds of serialized JSON `text`: each ≤ `max_chars` code points and
    ≤ `max_bytes` once escaped, as few as that allows (sized by the real text,
    not by the worst case of six bytes per code point)."""
    if max_chars < 1 or max_bytes < MAX_ESCAPED_BYTES:
        raise ValueError(f"slices need max_chars >= 1 and max_bytes >= {MAX_ESCAPED_BYTES}")
    bounds: list[tuple[int, int]] = []
    start, end_of_text = 0, len(text)
    while start < end_of_text:
        end = min(start + max_chars, end_of_text)
        while end - start > 1 and _escaped_size(text[start:end]) > max_bytes:
            end = start + max(1, (end - start) * 3 // 4)
        bounds.append((start, end))
        start = end
    return bounds


def iter_planned_chunks(text: str, id: int, bounds: list[tuple[int, int]]) -> Iterator[str]:
    """``chunk`` frames for the slices `plan_slices` chose."""
    n = len(bounds)
    for i, (start, end) in enumerate(bounds):
        yield chunk_frame(id, i, n, text[start:end])


def split_chunks(text: str, id: int, slice_size: int) -> list[str]:
    """`iter_chunks` as a list."""
    return list(iter_chunks(text, id, slice_size))


class ChunkAssembler:
    """Joins one connection's ``chunk`` series; at most one partial message at a time.

    Sizes count UTF-8 bytes. A slice holding half of a surrogate pair (a sender
    that cut a pair in two) makes the message ``bad_json``.
    """

    def __init__(self, max_chunks: int, max_bytes: int) -> None:
        self.max_chunks = max_chunks
        self.max_bytes = max_bytes
        self._id: int | None = None
        self._n = 0
        self._parts: list[str] = []
        self._bytes = 0

    @property
    def partial(self) -> bool:
        """Whether a series is being joined."""
        return self._id is not None

    def reset(self) -> None:
        """Discard a partial series (the connection closed)."""
        self._id, self._n, self._parts, self._bytes = None, 0, [], 0

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
        size = utf8_size(data) if data.isascii() or _utf8_ok(data) else -1
        if size < 0:
            self.reset()
            raise ProtocolError("bad_json", f"chunk {i} of message {msg_id} splits a surrogate "
                                "pair (slices are cut between code points)", msg_id, "chunk")
        self._bytes += size
        if self._bytes > self.max_bytes:
            self.reset()
            raise ProtocolError("too_large", f"chunked message exceeds {self.max_bytes} bytes",
                                msg_id, "chunk")
        self._parts.append(data)
        if len(self._parts) < self._n:
            return None
        text = "".join(self._parts)
        self.reset()
        return text
