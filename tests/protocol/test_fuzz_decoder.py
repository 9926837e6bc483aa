"""Fuzz the frame decoder: whatever a peer sends, the only exception is `ProtocolError`.

PROTOCOL.md: unknown or malformed frames are answered, never a crash. Every
decoder entry point a receiver calls on peer input is fed here: `parse_frame`,
then `verify_msg` + `decode_payload` for ``msg`` frames that parse and
`ChunkAssembler.add` for ``chunk`` frames (and the joined text it returns).
"""

from __future__ import annotations

import base64
import functools
import json
import zlib
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from wsnb.errors import ProtocolError
from wsnb.protocol.envelope import (
    FRAME_TYPES,
    ChunkAssembler,
    decode_payload,
    encode_msg,
    parse_frame,
    verify_msg,
)

SECRET = b"fuzz"
BOMB = base64.b64encode(zlib.compress(b"[" + b"0," * 40_000 + b"0]", 9)).decode()  # 80 kB
FUZZ = settings(
    max_examples=2000,
    deadline=None,
    database=None,  # write nothing into the repository
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

KEYS = ["type", "id", "v", "z", "d", "s", "i", "n", "data", "upto", "ts", "token", "session",
        "last_seen", "features", "resumed", "last_acked", "heartbeat_ms", "max_size", "code",
        "reason"]
TYPES = sorted(FRAME_TYPES) + ["msg"] * 6 + ["", "MSG", "msg ", "subscribe", "chunk\x00"]

ints = st.one_of(
    st.integers(-3, 5),
    st.integers(-(2**70), 2**70),
    st.sampled_from([0, 1, 2, 2**31, 2**63, 10**30]),
)
scalars = st.one_of(
    st.none(),
    st.booleans(),
    ints,
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=12),
)
json_values = st.recursive(
    scalars,
    lambda kids: st.one_of(
        st.lists(kids, max_size=3),
        st.dictionaries(st.sampled_from(KEYS + ["", "é", "x"]), kids, max_size=3),
    ),
    max_leaves=6,
)


@st.composite
def zlib_text(draw: st.DrawFn) -> str:
    """Mostly-valid base64 of zlib data: good, truncated, trailing junk, non-JSON, a bomb."""
    kind = draw(st.sampled_from(["json", "bytes", "truncated", "trailing", "bomb", "raw"]))
    if kind == "raw":
        return draw(st.text(max_size=24))
    if kind == "bomb":
        return BOMB
    if kind == "bytes":
        packed = zlib.compress(draw(st.binary(max_size=40)))
    else:
        packed = zlib.compress(json.dumps(draw(json_values)).encode())
        if kind == "truncated":
            packed = packed[: draw(st.integers(0, len(packed) - 1))]
        elif kind == "trailing":
            packed += draw(st.binary(min_size=1, max_size=8))
    return base64.b64encode(packed).decode()


@functools.cache  # build each strategy once: fresh strategy objects are slow to draw from
def field_value(key: str) -> st.SearchStrategy[Any]:
    """Plausible values for a known key, with junk mixed in."""
    if key == "type":
        return st.sampled_from(TYPES)
    if key == "v":
        return st.one_of(st.integers(-1, 3), json_values)
    if key in ("z", "i"):
        return st.one_of(st.integers(-1, 3), json_values)
    if key == "n":
        return st.one_of(st.integers(0, 5), json_values)
    if key in ("id", "upto", "ts", "last_seen", "last_acked", "heartbeat_ms", "max_size"):
        return st.one_of(ints, json_values)
    if key == "d":
        return st.one_of(json_values, zlib_text())
    if key == "s":
        return st.one_of(st.text(alphabet="0123456789abcdef", min_size=64, max_size=64),
                         json_values)
    if key == "features":
        return st.one_of(st.lists(st.text(max_size=5), max_size=3), json_values)
    return json_values


@functools.cache
def good_value(key: str, z: int) -> st.SearchStrategy[Any]:
    """A value that passes the checks for `key` most of the time."""
    if key == "v":
        return st.just(1)
    if key == "z":
        return st.just(z)
    if key == "d":
        return zlib_text() if z else json_values
    if key in ("id", "upto", "ts", "last_seen", "last_acked", "heartbeat_ms", "max_size"):
        return st.one_of(st.integers(1, 5), st.integers(0, 2**70))
    if key in ("i", "n"):
        return st.integers(0, 4)
    if key == "resumed":
        return st.booleans()
    if key in ("token", "session"):
        return st.one_of(st.none(), st.text(max_size=8))
    if key == "features":
        return st.lists(st.text(max_size=5), max_size=3)
    if key == "s":
        return st.one_of(st.text(alphabet="0123456789abcdef", min_size=64, max_size=64),
                         st.text(max_size=70))
    return st.text(max_size=12)


TEMPLATES: dict[str, list[str]] = {
    "handshake": ["v", "token", "session", "last_seen", "features"],
    "handshake_ack": ["v", "session", "resumed", "last_acked", "heartbeat_ms", "max_size"],
    "msg": ["v", "id", "ts", "z", "d", "s"],
    "ack": ["id", "upto"],
    "nack": ["id", "code", "reason"],
    "chunk": ["id", "i", "n", "data"],
    "ping": ["ts"],
    "pong": ["ts"],
    "error": ["code", "reason", "id"],
}


# Strategies drawn from in loops, built once.
_KIND = st.sampled_from(TYPES)
_BIT = st.integers(0, 1)
_N_MUTATIONS = st.integers(0, 3)
_HOW = st.integers(0, 2)
_ANY_KEY = st.sampled_from(KEYS)
_OWN_KEY = {kind: st.sampled_from(keys) for kind, keys in TEMPLATES.items()}
_RANDOM_KEYS = st.lists(_ANY_KEY, unique=True, max_size=6)
_EXTRA_KEY = st.text(max_size=6)


@st.composite
def frame_dicts(draw: st.DrawFn) -> dict[str, Any]:
    """A valid frame of a drawn type, then 0-3 mutations (deletions, junk values, extras)."""
    kind = draw(_KIND)
    z = draw(_BIT)
    keys = TEMPLATES.get(kind) or draw(_RANDOM_KEYS)
    frame: dict[str, Any] = {"type": kind}
    for key in keys:
        frame[key] = draw(good_value(key, z))
    for _ in range(draw(_N_MUTATIONS)):
        key = draw(_OWN_KEY.get(kind, _ANY_KEY) if draw(_BIT) else _ANY_KEY)
        how = draw(_HOW)
        if how == 0:
            frame.pop(key, None)
        elif how == 1:
            frame[key] = draw(field_value(key))
        else:
            frame.setdefault(draw(_EXTRA_KEY), draw(json_values))
    return frame


@st.composite
def frame_texts(draw: st.DrawFn) -> str | bytes:
    """Serialized frame dicts, sometimes mangled at the text level or sent as bytes."""
    frame = draw(frame_dicts())
    text = json.dumps(frame, ensure_ascii=draw(st.booleans()),
                      separators=draw(st.sampled_from([(",", ":"), (", ", ": ")])))
    how = draw(st.sampled_from(["plain", "plain", "plain", "splice", "cut", "dup", "bytes"]))
    if how == "splice":
        at = draw(st.integers(0, len(text)))
        junk = draw(st.sampled_from(["NaN", "Infinity", "1e999", "[", "]", "{", '"', "\\",
                                     "\\ud800", ",", '"type":"msg",', "\x00", "\ufeff"]))
        text = text[:at] + junk + text[at:]
    elif how == "cut":
        text = text[: draw(st.integers(0, len(text)))]
    elif how == "dup" and len(text) > 2 and frame:
        key = json.dumps(next(iter(frame)))
        text = text[:-1] + f",{key}:1}}"
    elif how == "bytes":
        raw = text.encode("utf-8", "surrogatepass")
        at = draw(st.integers(0, len(raw)))
        return raw[:at] + draw(st.binary(max_size=3)) + raw[at:]
    return text


def feed(payload: str | bytes, asm: ChunkAssembler, depth: int = 0) -> None:
    """Everything a receiver does with one incoming frame; only ProtocolError may escape."""
    try:
        frame = parse_frame(payload)
    except ProtocolError:
        return
    assert isinstance(frame, dict) and isinstance(frame["type"], str)
    kind = frame["type"]
    if kind == "msg":
        assert type(frame["id"]) is int and frame["id"] >= 1 and frame["z"] in (0, 1)
        try:
            verify_msg(frame, SECRET, now_ms=frame["ts"])
        except ProtocolError as exc:
            assert exc.code == "bad_signature" and exc.id == frame["id"]
        try:
            decode_payload(frame, max_bytes=4096)
        except ProtocolError as exc:
            assert exc.id == frame["id"]
    elif kind == "chunk":
        assert 0 <= frame["i"] < frame["n"] and frame["n"] >= 2
        try:
            joined = asm.add(frame)
        except ProtocolError as exc:
            assert exc.id == frame["id"]
            assert not asm.partial
            return
        if joined is not None and depth < 2:
            feed(joined, asm, depth + 1)


def expect_only_protocol_errors(payload: str | bytes, asm: ChunkAssembler) -> None:
    try:
        feed(payload, asm)
    except ProtocolError:
        raise AssertionError("feed() must catch ProtocolError itself") from None


@FUZZ
@given(st.one_of(st.text(), st.text(st.characters(exclude_categories=()))))  # + lone surrogates
def test_arbitrary_text(text: str) -> None:
    expect_only_protocol_errors(text, ChunkAssembler(max_chunks=8, max_bytes=64))


@FUZZ
@given(st.binary())
def test_arbitrary_bytes(raw: bytes) -> None:
    expect_only_protocol_errors(raw, ChunkAssembler(max_chunks=8, max_bytes=64))


@FUZZ
@given(frame_texts())
def test_json_shaped_frames(text: str | bytes) -> None:
    expect_only_protocol_errors(text, ChunkAssembler(max_chunks=4, max_bytes=200))


_CHUNK_PAYLOAD = st.one_of(  # cheaper than json_values: the content matters little here
    st.text(max_size=60),
    st.lists(st.integers(), max_size=6),
    st.dictionaries(st.sampled_from(KEYS), st.text(max_size=6), max_size=3),
)
_SECRET_OR_NOT = st.sampled_from([None, SECRET])
_SMALL_ID = st.integers(1, 3)
_N = st.integers(2, 8)
_SERIES_OP = st.sampled_from(["clean", "clean", "shuffle", "drop", "dup", "mutate"])
_CHUNK_FIELD = st.sampled_from(["id", "i", "n", "data"])
_JUNK = st.text(max_size=3)


@st.composite
def chunk_series(draw: st.DrawFn) -> list[str]:
    """Chunk frames of a real msg, shuffled/dropped/duplicated/mutated, maybe corrupted."""
    payload = json.dumps(draw(_CHUNK_PAYLOAD), ensure_ascii=False)
    z = draw(_BIT)
    if z:
        payload = base64.b64encode(zlib.compress(payload.encode())).decode()
    text = encode_msg(draw(_SMALL_ID), payload, ts=0, z=z, secret=draw(_SECRET_OR_NOT))
    if draw(_BIT):  # corrupt the joined text
        at = draw(st.integers(0, len(text)))
        text = text[:at] + draw(_JUNK) + text[at:]
    n = draw(_N)
    size = -(-len(text) // n)
    id = draw(_SMALL_ID)
    frames = [
        {"type": "chunk", "id": id, "i": i, "n": n, "data": text[i * size:(i + 1) * size]}
        for i in range(n)
    ]
    op = draw(_SERIES_OP)
    if op == "shuffle":
        frames = draw(st.permutations(frames))
    elif op == "drop":
        del frames[draw(st.integers(0, len(frames) - 1))]
    elif op == "dup":
        frames.insert(draw(st.integers(0, len(frames))), frames[0])
    elif op == "mutate":
        victim = frames[draw(st.integers(0, len(frames) - 1))]
        victim[draw(_CHUNK_FIELD)] = draw(field_value("i"))
    return [json.dumps(f, ensure_ascii=False) for f in frames]


@FUZZ
@given(st.lists(chunk_series(), min_size=1, max_size=2),
       st.integers(2, 12), st.integers(10, 400))
def test_chunk_series(series: list[list[str]], max_chunks: int, max_chars: int) -> None:
    asm = ChunkAssembler(max_chunks=max_chunks, max_bytes=max_chars)
    for frames in series:
        for text in frames:
            expect_only_protocol_errors(text, asm)
