"""Frames on the wire (PROTOCOL.md "Frames", "Envelope"): strict JSON, signatures,
compression, chunks. Pure functions: no sockets, no sleeps."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import math
import random
import re
import string
import zlib
from typing import Any

import pytest

from wsnb.errors import ProtocolError
from wsnb.protocol import envelope
from wsnb.protocol.envelope import (
    ChunkAssembler,
    decode_payload,
    dumps,
    encode_msg,
    frame_text,
    parse_frame,
    payload_text,
    split_chunks,
    verify_msg,
)

SECRET = b"s3cret-\xff-key"
TS = 1_700_000_000_000


def independent_signature(frame: dict[str, Any], secret: bytes, session: str = "") -> str:
    """HMAC-SHA256 over session + "\\n" + RFC 8785 JCS of the frame without ``s`` (1.1)."""
    import rfc8785

    unsigned = {k: v for k, v in frame.items() if k != "s"}
    canonical = rfc8785.dumps(unsigned)
    return hmac.new(secret, session.encode() + b"\n" + canonical, hashlib.sha256).hexdigest()


def perr(text: str | bytes) -> ProtocolError:
    with pytest.raises(ProtocolError) as info:
        parse_frame(text)
    assert type(info.value) is ProtocolError
    return info.value


# --------------------------------------------------------------------------- dumps


class TestDumps:
    def test_sorted_keys_no_spaces(self) -> None:
        assert dumps({"b": 1, "a": [1, 2, {"d": None, "c": True}]}) == (
            '{"a":[1,2,{"c":true,"d":null}],"b":1}'
        )

    def test_utf8_kept_not_escaped(self) -> None:
        text = dumps({"k": "héllo wörld ✓ 😀"})
        assert text == '{"k":"héllo wörld ✓ 😀"}'
        assert "\\u" not in text

    def test_control_characters_still_escaped(self) -> None:
        assert dumps("a\nb\"c\\") == '"a\\nb\\"c\\\\"'

    @pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
    def test_nan_and_infinity_refused(self, bad: float) -> None:
        with pytest.raises(ValueError):
            dumps({"x": bad})

    def test_matches_independent_canonical_form(self) -> None:
        obj = {"z": 1.5, "é": ["ü", 0, -3], "a": {"y": False, "x": None}}
        assert dumps(obj) == json.dumps(
            obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False
        )

    def test_frame_text(self) -> None:
        assert frame_text("ack", upto=5) == '{"type":"ack","upto":5}'
        assert parse_frame(frame_text("pong", ts=12)) == {"type": "pong", "ts": 12}
        assert parse_frame(frame_text("error", code="x", reason="é", id=3))["reason"] == "é"


# --------------------------------------------------------------------------- payload_text


class TestPayloadText:
    def test_ok_is_canonical(self) -> None:
        assert payload_text({"b": [1, "é"], "a": None}) == '{"a":null,"b":[1,"é"]}'

    def test_int_keys_coerced_like_json(self) -> None:
        assert payload_text({2: "b", 1: "a"}) == '{"1":"a","2":"b"}'

    def test_top_level_object(self) -> None:
        with pytest.raises(TypeError, match=r"^payload: object is not JSON-serializable"):
            payload_text(object())

    def test_set_suggests_list(self) -> None:
        with pytest.raises(TypeError, match=r"^payload\['s'\]: set .*use a list"):
            payload_text({"s": {1, 2}})

    def test_frozenset(self) -> None:
        with pytest.raises(TypeError, match=r"^payload\[0\]: frozenset"):
            payload_text([frozenset()])

    def test_nan_nested_path_is_value_error(self) -> None:
        with pytest.raises(ValueError, match=r"^payload\['a'\]\[2\]: nan is not valid JSON"):
            payload_text({"a": [1, 2, float("nan")]})

    def test_nan_is_not_type_error(self) -> None:
        with pytest.raises(ValueError) as info:
            payload_text({"a": [1, 2, float("nan")]})
        assert not isinstance(info.value, TypeError)

    @pytest.mark.parametrize("bad", [math.inf, -math.inf])
    def test_infinity(self, bad: float) -> None:
        with pytest.raises(ValueError, match=r"^payload\['x'\]\[0\]\['y'\]: -?inf "):
            payload_text({"x": [{"y": bad}]})

    def test_bytes_in_dict(self) -> None:
        with pytest.raises(TypeError, match=r"^payload\['blob'\]: bytes .*base64"):
            payload_text({"ok": 1, "blob": b"\x00\x01"})

    def test_bytearray_in_list(self) -> None:
        with pytest.raises(TypeError, match=r"^payload\[1\]: bytearray"):
            payload_text([1, bytearray(b"x")])

    def test_object_deep_in_tuple(self) -> None:
        with pytest.raises(TypeError, match=r"^payload\['a'\]\[0\]\['b'\]\[1\]: object"):
            payload_text({"a": ({"b": (1, object())},)})

    def test_tuple_key(self) -> None:
        with pytest.raises(TypeError, match=r"^payload\['d'\]: dict key \(1, 2\) is a tuple"):
            payload_text({"d": {(1, 2): "x"}})

    def test_mixed_str_and_int_keys_refused(self) -> None:
        with pytest.raises(TypeError, match=r"^payload: dict mixes str and non-str keys"):
            payload_text({"1": "a", 1: "b"})

    def test_unsortable_keys_name_their_path(self) -> None:
        with pytest.raises(TypeError, match=r"^payload\['x'\]: dict keys"):
            payload_text({"x": {1: "a", None: "b"}})

    def test_lone_surrogate_refused_with_path(self) -> None:
        # json would accept it, but it is not UTF-8 and cannot go on the wire.
        with pytest.raises(ValueError, match=r"^payload\['a'\]\[1\]: .*lone surrogate"):
            payload_text({"a": ["ok", "x\ud800y"]})
        with pytest.raises(ValueError, match=r"^payload\['k'\]: dict key .*lone surrogate"):
            payload_text({"k": {"\udc00": 1}})

    def test_nesting_too_deep_is_value_error(self) -> None:
        deep: list[Any] = []
        for _ in range(5000):
            deep = [deep]
        with pytest.raises(ValueError, match=r"^payload\[0\]\[0\].*nested too deeply"):
            payload_text(deep)

    def test_first_bad_value_reported(self) -> None:
        with pytest.raises(TypeError, match=r"^payload\[0\]: set"):
            payload_text([{1}, float("nan")])


# --------------------------------------------------------------------------- msg round trip


PAYLOADS: list[Any] = [
    {"a": 1},
    [1, 2.5, -0.0, None, True, "x"],
    "héllo ✓ 😀",
    0,
    None,
    {"nested": {"é": [{"deep": [1, [2, [3]]]}]}, "big": 2**53 - 1},
    "",
    [],
    {},
]


class TestEncodeParse:
    @pytest.mark.parametrize("payload", PAYLOADS)
    def test_round_trip_without_secret(self, payload: Any) -> None:
        text = encode_msg(7, payload_text(payload), ts=TS)
        frame = parse_frame(text)
        assert frame == {"type": "msg", "v": 1, "id": 7, "ts": TS, "z": 0, "d": payload}
        assert "s" not in frame
        assert decode_payload(frame) == payload
        assert text == dumps(frame)  # the frame itself is canonical

    @pytest.mark.parametrize("payload", PAYLOADS)
    def test_round_trip_with_secret(self, payload: Any) -> None:
        text = encode_msg(3, payload_text(payload, canonical=True), ts=TS, secret=SECRET)
        frame = parse_frame(text)
        assert frame["d"] == payload and frame["id"] == 3 and frame["ts"] == TS
        assert isinstance(frame["s"], str) and len(frame["s"]) == 64
        assert frame["s"] == frame["s"].lower()
        assert all(c in string.hexdigits for c in frame["s"])
        verify_msg(frame, SECRET, now_ms=TS)
        assert decode_payload(frame) == payload
        assert text == dumps(frame)

    @pytest.mark.parametrize("payload", PAYLOADS)
    def test_signature_matches_independent_hmac(self, payload: Any) -> None:
        text = payload_text(payload, canonical=True)
        frame = parse_frame(encode_msg(11, text, ts=TS, secret=SECRET))
        assert frame["s"] == independent_signature(frame, SECRET)

    def test_signature_over_compressed_frame(self) -> None:
        data = envelope.compress(payload_text({"x": "é" * 500}, canonical=True))
        frame = parse_frame(encode_msg(2, data, ts=TS, z=1, secret=SECRET))
        assert frame["z"] == 1
        assert frame["s"] == independent_signature(frame, SECRET)
        verify_msg(frame, SECRET, now_ms=TS)
        assert decode_payload(frame) == {"x": "é" * 500}

    def test_foreign_signer_with_other_formatting_verifies(self) -> None:
        # A server in another language signs the canonical form but sends any JSON layout.
        frame = {"type": "msg", "v": 1, "id": 4, "ts": TS, "z": 0, "d": {"ü": [1, "✓"], "a": 0}}
        frame["s"] = independent_signature(frame, SECRET)
        text = json.dumps(frame, indent=2, ensure_ascii=True)
        parsed = parse_frame(text.encode("utf-8"))
        verify_msg(parsed, SECRET, now_ms=TS)

    def test_bytes_input_parses(self) -> None:
        text = encode_msg(1, payload_text("é"), ts=TS)
        assert parse_frame(text.encode()) == parse_frame(text)
        assert parse_frame(bytearray(text.encode()))["d"] == "é"
        assert parse_frame(memoryview(text.encode()))["d"] == "é"


# --------------------------------------------------------------------------- verify_msg


def signed(payload: Any = None, id: int = 5, ts: int = TS) -> dict[str, Any]:
    text = payload_text(payload or {"k": "v"}, canonical=True)
    return parse_frame(encode_msg(id, text, ts=ts, secret=SECRET))


def reparse(frame: dict[str, Any]) -> dict[str, Any]:
    return parse_frame(json.dumps(frame))


class TestVerify:
    def test_good_signature_passes(self) -> None:
        verify_msg(signed(), SECRET, now_ms=TS)

    @pytest.mark.parametrize(
        "field,value",
        [("d", {"k": "w"}), ("id", 6), ("ts", TS + 1), ("z", 1), ("d", {"k": "v", "x": 1})],
    )
    def test_tampered_field_fails(self, field: str, value: Any) -> None:
        frame = signed()
        frame[field] = value
        if field == "z":
            frame["d"] = envelope.compress(payload_text({"k": "v"}))
        frame = reparse(frame)
        with pytest.raises(ProtocolError) as info:
            verify_msg(frame, SECRET, now_ms=TS)
        assert info.value.code == "bad_signature"
        assert info.value.id == frame["id"]

    def test_extra_field_breaks_signature(self) -> None:
        frame = signed()
        frame["extra"] = 1
        with pytest.raises(ProtocolError, match="bad_signature"):
            verify_msg(reparse(frame), SECRET, now_ms=TS)

    def test_missing_signature(self) -> None:
        frame = parse_frame(encode_msg(5, payload_text(1), ts=TS))
        with pytest.raises(ProtocolError) as info:
            verify_msg(frame, SECRET, now_ms=TS)
        assert info.value.code == "bad_signature" and info.value.id == 5
        assert "missing" in info.value.reason

    def test_wrong_secret(self) -> None:
        with pytest.raises(ProtocolError, match="bad_signature"):
            verify_msg(signed(), b"other", now_ms=TS)

    def test_garbage_signature(self) -> None:
        frame = signed()
        frame["s"] = "0" * 64
        with pytest.raises(ProtocolError, match="bad_signature"):
            verify_msg(frame, SECRET, now_ms=TS)
        frame["s"] = ""
        with pytest.raises(ProtocolError, match="bad_signature"):
            verify_msg(frame, SECRET, now_ms=TS)

    @pytest.mark.parametrize("s", ["é" * 64, "\ud800", "0" * 63 + "é", "😀"])
    def test_non_ascii_signature_refused_not_crash(self, s: str) -> None:
        # hmac.compare_digest raises TypeError on non-ASCII str; a peer must not crash us
        frame = signed()
        frame["s"] = s
        with pytest.raises(ProtocolError) as info:
            verify_msg(frame, SECRET, now_ms=TS)
        assert info.value.code == "bad_signature" and info.value.id == frame["id"]

    def test_uppercase_hex_signature_refused(self) -> None:
        frame = signed()
        frame["s"] = frame["s"].upper()
        with pytest.raises(ProtocolError, match="bad_signature"):
            verify_msg(frame, SECRET, now_ms=TS)

    def test_uncanonicalizable_frame_is_bad_signature(self) -> None:
        # A lone surrogate escape is legal JSON but has no UTF-8 canonical form.
        frame = parse_frame(
            f'{{"type":"msg","v":1,"id":9,"ts":{TS},"z":0,"d":"\\ud800","s":"{"0" * 64}"}}'
        )
        with pytest.raises(ProtocolError) as info:
            verify_msg(frame, SECRET, now_ms=TS)
        assert info.value.code == "bad_signature" and info.value.id == 9

    @pytest.mark.parametrize("delta", [300_000, -300_000, 0, 1, -1])
    def test_inside_replay_window(self, delta: int) -> None:
        verify_msg(signed(), SECRET, now_ms=TS + delta)

    @pytest.mark.parametrize("delta", [300_001, -300_001, 10**9])
    def test_outside_replay_window(self, delta: int) -> None:
        with pytest.raises(ProtocolError) as info:
            verify_msg(signed(), SECRET, now_ms=TS + delta)
        assert info.value.code == "bad_signature" and "replay" in info.value.reason

    def test_custom_replay_window(self) -> None:
        verify_msg(signed(), SECRET, now_ms=TS + 1000, replay_window_ms=1000)
        with pytest.raises(ProtocolError, match="bad_signature"):
            verify_msg(signed(), SECRET, now_ms=TS + 1001, replay_window_ms=1000)


# --------------------------------------------------------------------------- compression


def incompressible(n: int, seed: int = 1) -> str:
    rng = random.Random(seed)
    alphabet = string.ascii_letters + string.digits + "-_"
    return json.dumps("".join(rng.choice(alphabet) for _ in range(n)))


def zframe(packed: bytes | str, id: int = 8) -> dict[str, Any]:
    d = packed if isinstance(packed, str) else base64.b64encode(packed).decode()
    return {"type": "msg", "v": 1, "id": id, "ts": TS, "z": 1, "d": d}


def derr(frame: dict[str, Any], **kw: Any) -> ProtocolError:
    with pytest.raises(ProtocolError) as info:
        decode_payload(frame, **kw)
    assert type(info.value) is ProtocolError
    assert info.value.id == frame["id"]
    return info.value


class TestCompression:
    def test_no_threshold_never_compresses(self) -> None:
        text = json.dumps("a" * 10_000)
        assert envelope.maybe_compress(text, None) == (text, 0)

    def test_below_threshold_not_compressed(self) -> None:
        text = json.dumps("a" * 998)  # 1000 chars
        assert envelope.maybe_compress(text, 1001) == (text, 0)

    def test_at_and_over_threshold_compressed_when_smaller(self) -> None:
        text = json.dumps("a" * 998)
        for threshold in (1000, 10):
            d, z = envelope.maybe_compress(text, threshold)
            assert z == 1 and len(d) < len(text)
            assert decode_payload(zframe(d)) == "a" * 998

    def test_incompressible_sent_plain(self) -> None:
        text = incompressible(400)
        assert envelope.maybe_compress(text, 10) == (text, 0)

    def test_compressing_must_make_frame_smaller(self) -> None:
        # Compressed text must beat the original by more than the two quotes it adds.
        for n in range(1, 80):
            text = json.dumps("ab" * n)
            d, z = envelope.maybe_compress(text, 1)
            if z:
                assert len(d) + 2 < len(text)
            else:
                assert d == text

    def test_compress_is_zlib_base64(self) -> None:
        text = payload_text({"é": "x" * 100})
        packed = base64.b64decode(envelope.compress(text), validate=True)
        assert zlib.decompress(packed).decode("utf-8") == text

    def test_z0_returned_as_is(self) -> None:
        frame = parse_frame(encode_msg(1, payload_text({"a": [1]}), ts=TS))
        assert decode_payload(frame) == {"a": [1]}

    @pytest.mark.parametrize("payload", PAYLOADS)
    def test_z1_round_trip(self, payload: Any) -> None:
        data = envelope.compress(payload_text(payload))
        frame = parse_frame(encode_msg(4, data, ts=TS, z=1))
        assert decode_payload(frame) == payload

    def test_independent_zlib_accepted(self) -> None:
        raw = json.dumps({"ü": list(range(50))}, ensure_ascii=False).encode()
        for level in (0, 1, 9):
            assert decode_payload(zframe(zlib.compress(raw, level))) == {"ü": list(range(50))}

    @pytest.mark.parametrize("d", ["!!!!", "abc", "YWJj=", "é", "YW Jj", "####===="])
    def test_corrupt_base64(self, d: str) -> None:
        assert derr(zframe(d)).code == "bad_envelope"

    def test_base64_but_not_zlib(self) -> None:
        assert derr(zframe(b"not zlib at all")).code == "bad_envelope"

    def test_truncated_zlib_refused(self) -> None:
        packed = zlib.compress(b"1234567890" * 3)
        for cut in (1, 2, 4, 6):
            assert derr(zframe(packed[:-cut])).code == "bad_envelope"

    def test_trailing_bytes_after_zlib_refused(self) -> None:
        packed = zlib.compress(b"[1,2,3]")
        assert derr(zframe(packed + b"junk")).code == "bad_envelope"

    def test_zlib_of_non_json(self) -> None:
        assert derr(zframe(zlib.compress(b"{not json"))).code == "bad_json"

    def test_zlib_of_non_utf8(self) -> None:
        assert derr(zframe(zlib.compress(b'"\xff\xfe"'))).code == "bad_json"

    def test_zlib_of_nan(self) -> None:
        assert derr(zframe(zlib.compress(b"[NaN]"))).code == "bad_json"

    def test_max_bytes_boundary(self) -> None:
        raw = json.dumps("x" * 998).encode()  # exactly 1000 bytes
        assert decode_payload(zframe(zlib.compress(raw)), max_bytes=1000) == "x" * 998
        err = derr(zframe(zlib.compress(raw)), max_bytes=999)
        assert err.code == "too_large"

    def test_zip_bomb_stops_at_max_bytes(self) -> None:
        raw = b'"' + b" " * 20_000_000 + b'"'  # 20 MB inflating from ~20 kB
        packed = zlib.compress(raw, 9)
        assert len(packed) < 100_000
        err = derr(zframe(packed), max_bytes=1 << 20)
        assert err.code == "too_large"


# --------------------------------------------------------------------------- parse_frame

VALID: dict[str, dict[str, Any]] = {
    "handshake": {"type": "handshake", "v": 1, "token": "t", "session": None, "last_seen": 0,
                  "features": ["acks"]},
    "handshake_ack": {"type": "handshake_ack", "v": 1, "session": "abc", "resumed": False,
                      "last_acked": 0, "heartbeat_ms": 15000, "max_size": 1 << 20},
    "msg": {"type": "msg", "v": 1, "id": 1, "ts": TS, "z": 0, "d": {"x": 1}},
    "ack": {"type": "ack", "id": 1},
    "nack": {"type": "nack", "id": 1, "code": "bad_json", "reason": "because"},
    "chunk": {"type": "chunk", "id": 1, "i": 0, "n": 2, "data": "{\"ty"},
    "ping": {"type": "ping", "ts": TS},
    "pong": {"type": "pong", "ts": TS},
    "error": {"type": "error", "code": "unknown_type", "reason": "what"},
}

# Required fields per PROTOCOL.md, with the JSON type each must have.
REQUIRED: dict[str, dict[str, str]] = {
    "handshake": {},  # 1.1: v, token, session, last_seen have defaults
    "handshake_ack": {"v": "int", "session": "str", "resumed": "bool", "last_acked": "int",
                      "heartbeat_ms": "int", "max_size": "int"},
    "msg": {"v": "int", "id": "int", "ts": "int", "z": "int", "d": "any"},
    "ack": {},
    "nack": {"id": "int", "code": "str", "reason": "str"},
    "chunk": {"id": "int", "i": "int", "n": "int", "data": "str"},
    "ping": {"ts": "number"},
    "pong": {"ts": "number"},
    "error": {"code": "str", "reason": "str"},
}

WRONG: dict[str, list[Any]] = {
    "int": ["1", 1.0, 1.5, None, [1], {"a": 1}, True, False],
    "number": ["1", None, [1], True, False],
    "str": [1, None, ["x"], True, {"x": "y"}],
    "bool": [1, 0, "true", None],
}

CASES_MISSING = [(kind, f) for kind, fields in REQUIRED.items() for f in fields]
CASES_WRONG = [
    (kind, f, bad)
    for kind, fields in REQUIRED.items()
    for f, t in fields.items()
    if t != "any"
    for bad in WRONG[t]
]


def with_(kind: str, **changes: Any) -> str:
    frame = dict(VALID[kind])
    frame.update(changes)
    return json.dumps(frame)


class TestParseFrame:
    @pytest.mark.parametrize("kind", sorted(VALID))
    def test_valid_frames_parse(self, kind: str) -> None:
        assert parse_frame(json.dumps(VALID[kind])) == VALID[kind]

    def test_frame_types_are_the_spec_table(self) -> None:
        assert set(VALID) == envelope.FRAME_TYPES

    @pytest.mark.parametrize("kind,field", CASES_MISSING)
    def test_missing_required_field(self, kind: str, field: str) -> None:
        frame = dict(VALID[kind])
        del frame[field]
        err = perr(json.dumps(frame))
        assert err.code == "bad_envelope"

    @pytest.mark.parametrize("kind,field,bad", CASES_WRONG)
    def test_wrong_type(self, kind: str, field: str, bad: Any) -> None:
        err = perr(with_(kind, **{field: bad}))
        assert err.code == "bad_envelope", (kind, field, bad, err)

    @pytest.mark.parametrize("kind", ["msg", "chunk"])
    def test_bad_msg_or_chunk_carries_id_and_type(self, kind: str) -> None:
        # the receiver answers these with a nack naming the id
        field = "data" if kind == "chunk" else "z"
        err = perr(with_(kind, id=42, **{field: None}))
        assert err.code == "bad_envelope" and err.id == 42 and err.frame_type == kind

    @pytest.mark.parametrize(
        "text",
        ['{"type":"nack","id":42,"code":null,"reason":"r"}', '{"type":"ack","upto":"42"}',
         '{"type":"error","id":42,"code":1,"reason":"r"}'],
    )
    def test_bad_control_frame_has_no_id(self, text: str) -> None:
        # not a refusal of one of our messages: answered with an error frame, not a nack
        err = perr(text)
        assert err.code == "bad_envelope" and err.id is None

    def test_bool_id_is_not_reported_as_id(self) -> None:
        err = perr(with_("msg", id=True))
        assert err.code == "bad_envelope" and err.id is None

    def test_extra_fields_allowed(self) -> None:
        assert parse_frame(with_("ping", extra={"x": 1}))["extra"] == {"x": 1}

    @pytest.mark.parametrize("kind", ["ping", "pong"])
    @pytest.mark.parametrize("value", ["true", "false"])
    def test_bool_is_not_a_number(self, kind: str, value: str) -> None:
        err = perr(f'{{"type":"{kind}","ts":{value}}}')
        assert err.code == "bad_envelope"

    def test_ping_ts_may_be_float(self) -> None:
        assert parse_frame(with_("ping", ts=1.5))["ts"] == 1.5

    def test_handshake_ack_resumed_true(self) -> None:
        assert parse_frame(with_("handshake_ack", resumed=True))["resumed"] is True

    # ack: id or upto
    @pytest.mark.parametrize("fields", [{"id": 3}, {"upto": 3}, {"id": 1, "upto": 2}])
    def test_ack_forms(self, fields: dict[str, int]) -> None:
        assert parse_frame(json.dumps({"type": "ack", **fields}))["type"] == "ack"

    @pytest.mark.parametrize(
        "fields",
        [{}, {"id": "3"}, {"upto": 1.0}, {"id": True}, {"upto": False}, {"id": None},
         {"upto": [1]}],
    )
    def test_ack_needs_int_id_or_upto(self, fields: dict[str, Any]) -> None:
        assert perr(json.dumps({"type": "ack", **fields})).code == "bad_envelope"

    # msg specifics
    def test_msg_version(self) -> None:
        err = perr(with_("msg", v=2, id=17))
        assert err.code == "version" and err.id == 17 and err.frame_type == "msg"

    def test_msg_version_zero(self) -> None:
        assert perr(with_("msg", v=0)).code == "version"

    @pytest.mark.parametrize("id", [0, -1])
    def test_msg_id_at_least_one(self, id: int) -> None:
        assert perr(with_("msg", id=id)).code == "bad_envelope"

    @pytest.mark.parametrize("z", [2, -1])
    def test_msg_z_zero_or_one(self, z: int) -> None:
        err = perr(with_("msg", z=z, id=5))
        assert err.code == "bad_envelope" and err.id == 5

    @pytest.mark.parametrize("d", [1, None, [], {"a": "b"}])
    def test_compressed_d_must_be_text(self, d: Any) -> None:
        assert perr(with_("msg", z=1, d=d)).code == "bad_envelope"

    @pytest.mark.parametrize("s", [1, None, ["x"], True])
    def test_msg_signature_must_be_text(self, s: Any) -> None:
        assert perr(with_("msg", s=s)).code == "bad_envelope"

    def test_msg_d_may_be_any_json(self) -> None:
        for d in (None, 0, "x", [1, {"a": None}], False):
            assert parse_frame(with_("msg", d=d))["d"] == d

    # chunk specifics
    @pytest.mark.parametrize(
        "changes", [{"n": 1}, {"n": 0}, {"i": 2}, {"i": -1}, {"i": 5, "n": 3}, {"id": 0}]
    )
    def test_chunk_bounds(self, changes: dict[str, int]) -> None:
        assert perr(with_("chunk", **changes)).code == "bad_envelope"

    # handshake specifics
    def test_handshake_version(self) -> None:
        assert perr(with_("handshake", v=2)).code == "version"

    def test_handshake_minimal(self) -> None:
        assert parse_frame('{"type":"handshake","v":1}')["v"] == 1

    @pytest.mark.parametrize(
        "changes",
        [{"token": 1}, {"session": ["s"]}, {"last_seen": -1}, {"last_seen": True},
         {"last_seen": "0"}, {"last_seen": 1.0}, {"features": "acks"}, {"features": [1]},
         {"features": None}, {"token": False}],
    )
    def test_handshake_fields(self, changes: dict[str, Any]) -> None:
        assert perr(with_("handshake", **changes)).code == "bad_envelope"

    # type
    def test_unknown_type(self) -> None:
        err = perr('{"type":"subscribe","id":12}')
        assert err.code == "unknown_type"
        assert err.id is None  # answered with an error frame, not a nack of our id 12

    def test_unknown_type_without_id(self) -> None:
        err = perr('{"type":"' + "x" * 10_000 + '"}')
        assert err.code == "unknown_type" and err.id is None
        assert len(err.reason) < 200

    @pytest.mark.parametrize("text", ['{"ts":1}', '{"type":1}', '{"type":null}',
                                      '{"type":["ping"]}', "{}"])
    def test_type_must_be_a_string(self, text: str) -> None:
        assert perr(text).code == "bad_envelope"

    @pytest.mark.parametrize("text", ["[]", "1", '"ping"', "null", "true", '[{"type":"ping"}]'])
    def test_non_object_json(self, text: str) -> None:
        assert perr(text).code == "bad_envelope"

    # strict JSON
    @pytest.mark.parametrize(
        "text",
        ['{"type":"ping","ts":1,"ts":2}',
         '{"type":"msg","v":1,"id":1,"ts":1,"z":0,"d":{"a":1,"a":1}}',
         '{"type":"ping","type":"ping","ts":1}'],
    )
    def test_duplicate_keys_refused(self, text: str) -> None:
        err = perr(text)
        assert err.code == "bad_json" and "duplicate" in err.reason

    @pytest.mark.parametrize("lit", ["NaN", "Infinity", "-Infinity", "1e999", "-1e999"])
    def test_nan_infinity_refused(self, lit: str) -> None:
        assert perr(f'{{"type":"ping","ts":{lit}}}').code == "bad_json"
        assert perr(f'{{"type":"msg","v":1,"id":1,"ts":1,"z":0,"d":[{lit}]}}').code == "bad_json"

    def test_tiny_float_is_fine(self) -> None:
        assert parse_frame('{"type":"ping","ts":1e-999}')["ts"] == 0.0

    def test_huge_int_literal_is_bad_json(self) -> None:
        assert perr('{"type":"ping","ts":' + "9" * 5000 + "}").code == "bad_json"

    @pytest.mark.parametrize("opener", ["[", '{"a":', '{"type":"msg","d":['])
    def test_deep_nesting_is_bad_json_not_recursion_error(self, opener: str) -> None:
        err = perr(opener * 10**5)
        assert err.code == "bad_json"

    def test_deep_but_closed_nesting(self) -> None:
        err = perr('{"type":"ping","ts":1,"x":' + "[" * 10**5 + "]" * 10**5 + "}")
        assert err.code == "bad_json"

    @pytest.mark.parametrize(
        "raw",
        [b'{"type":"ping","ts":1}\xff', b"\xff\xfe{}", b'{"type":"p\xc3"}',
         b'{"type":"ping","ts":1,"x":"\xed\xa0\x80"}', b"\x80"],
    )
    def test_non_utf8_bytes(self, raw: bytes) -> None:
        err = perr(raw)
        assert err.code == "bad_json" and "UTF-8" in err.reason

    @pytest.mark.parametrize(
        "text",
        ["", " ", "{", '{"type":"ping",}', "{'type':'ping'}", '{"type":"ping","ts":01}',
         '{"type":"ping","ts":1} trailing', "\ufeff{}", '{"type":"ping","ts":1}\x00'],
    )
    def test_malformed_json(self, text: str) -> None:
        assert perr(text).code == "bad_json"

    def test_protocol_error_is_value_error_with_code_and_reason(self) -> None:
        err = perr("{")
        assert isinstance(err, ValueError)
        assert str(err).startswith("bad_json: ")


# --------------------------------------------------------------------------- chunks


def chunk(id: int, i: int, n: int, data: str = "x") -> dict[str, Any]:
    return parse_frame(json.dumps({"type": "chunk", "id": id, "i": i, "n": n, "data": data}))


def assemble(frames: list[str], asm: ChunkAssembler) -> list[str | None]:
    return [asm.add(parse_frame(f)) for f in frames]


class TestChunks:
    @pytest.mark.parametrize("size", [1, 2, 3, 7, 64, 200])
    def test_round_trip_non_ascii(self, size: int) -> None:
        payload = {"text": "héllo wörld ✓ 😀 " * 20, "n": list(range(30))}
        text = encode_msg(9, payload_text(payload, canonical=True), ts=TS, secret=SECRET)
        frames = split_chunks(text, 9, size)
        n = -(-len(text) // size)
        assert len(frames) == n >= 2
        asm = ChunkAssembler(max_chunks=n, max_bytes=len(text.encode()))
        results = []
        for i, f in enumerate(frames):
            parsed = parse_frame(f.encode("utf-8"))  # every slice is valid UTF-8 JSON
            assert parsed["type"] == "chunk" and parsed["id"] == 9
            assert parsed["i"] == i and parsed["n"] == n
            assert 1 <= len(parsed["data"]) <= size
            results.append(asm.add(parsed))
            assert asm.partial == (i < n - 1)
        assert results[:-1] == [None] * (n - 1)
        assert results[-1] == text
        frame = parse_frame(results[-1])
        verify_msg(frame, SECRET, now_ms=TS)
        assert decode_payload(frame) == payload

    def test_split_exact_multiple(self) -> None:
        frames = split_chunks("abcdef", 1, 3)
        assert [json.loads(f)["data"] for f in frames] == ["abc", "def"]

    def test_split_rejects_bad_size(self) -> None:
        with pytest.raises(ValueError, match="chunk_size"):
            split_chunks("abc", 1, 0)

    def test_assembler_reusable_for_next_message(self) -> None:
        asm = ChunkAssembler(max_chunks=10, max_bytes=100)
        for id in (1, 2, 3):
            assert assemble(split_chunks(f"msg-{id}-text", id, 4), asm)[-1] == f"msg-{id}-text"
            assert not asm.partial

    def test_too_many_chunks(self) -> None:
        asm = ChunkAssembler(max_chunks=3, max_bytes=10**6)
        with pytest.raises(ProtocolError) as info:
            asm.add(chunk(4, 0, 4))
        assert info.value.code == "too_large" and info.value.id == 4
        assert not asm.partial

    def test_too_many_chunks_mid_series_resets(self) -> None:
        asm = ChunkAssembler(max_chunks=3, max_bytes=10**6)
        assert asm.add(chunk(1, 0, 3)) is None
        with pytest.raises(ProtocolError, match="too_large"):
            asm.add(chunk(2, 0, 4))
        assert not asm.partial

    def test_n_at_limit_ok(self) -> None:
        asm = ChunkAssembler(max_chunks=3, max_bytes=6)  # UTF-8 bytes: é is 2
        assert [asm.add(chunk(1, i, 3, "é")) for i in range(3)] == [None, None, "ééé"]

    def test_too_many_chars(self) -> None:
        asm = ChunkAssembler(max_chunks=10, max_bytes=5)
        assert asm.add(chunk(1, 0, 3, "ab")) is None
        assert asm.add(chunk(1, 1, 3, "cd")) is None
        with pytest.raises(ProtocolError) as info:
            asm.add(chunk(1, 2, 3, "ef"))
        assert info.value.code == "too_large" and info.value.id == 1
        assert not asm.partial
        # a fresh series works afterwards
        assert assemble(split_chunks("vwxyz", 2, 3), asm)[-1] == "vwxyz"

    def test_sizes_counted_in_utf8_bytes(self) -> None:
        asm = ChunkAssembler(max_chunks=10, max_bytes=12)
        assert [asm.add(chunk(1, i, 2, "😀é")) for i in range(2)] == [None, "😀é😀é"]
        asm = ChunkAssembler(max_chunks=10, max_bytes=11)
        assert asm.add(chunk(1, 0, 2, "😀é")) is None
        with pytest.raises(ProtocolError) as info:
            asm.add(chunk(1, 1, 2, "😀é"))
        assert info.value.code == "too_large"

    def test_lone_surrogate_at_a_slice_boundary_is_bad_json(self) -> None:
        asm = ChunkAssembler(max_chunks=10, max_bytes=100)
        with pytest.raises(ProtocolError) as info:
            asm.add(chunk(1, 0, 2, "ab\ud83d"))  # a JavaScript sender cut 😀 in two
        assert info.value.code == "bad_json" and "surrogate" in info.value.reason

    def test_series_must_start_at_zero(self) -> None:
        asm = ChunkAssembler(max_chunks=10, max_bytes=100)
        with pytest.raises(ProtocolError) as info:
            asm.add(chunk(1, 1, 3))
        assert info.value.code == "bad_envelope" and info.value.id == 1
        assert not asm.partial

    @pytest.mark.parametrize(
        "second",
        [(1, 2, 3), (1, 0, 3), (1, 1, 4), (2, 1, 3), (2, 0, 3)],
        ids=["skip", "repeat-0", "n-changed", "other-id", "other-series-start"],
    )
    def test_out_of_order_or_interleaved_resets(self, second: tuple[int, int, int]) -> None:
        asm = ChunkAssembler(max_chunks=10, max_bytes=100)
        assert asm.add(chunk(1, 0, 3, "a")) is None
        assert asm.partial
        with pytest.raises(ProtocolError) as info:
            asm.add(chunk(*second))
        assert info.value.code == "bad_envelope"
        assert info.value.id == second[0]
        assert not asm.partial
        # the old series is gone: its next slice is not a valid start
        with pytest.raises(ProtocolError, match="start at i=0"):
            asm.add(chunk(1, 1, 3, "b"))

    def test_reset_discards_partial(self) -> None:
        asm = ChunkAssembler(max_chunks=10, max_bytes=100)
        asm.add(chunk(1, 0, 2, "ab"))
        asm.reset()
        assert not asm.partial
        assert [asm.add(chunk(1, i, 2, "cd")) for i in range(2)] == [None, "cdcd"]


def test_article_handshake_gets_the_1_1_defaults() -> None:
    frame = parse_frame('{"type":"handshake","token":"xxx"}')
    assert (frame["v"], frame["session"], frame["last_seen"]) == (1, None, 0)
    with pytest.raises(ProtocolError) as info:
        parse_frame('{"type":"handshake","v":2}')
    assert info.value.code == "version"


@pytest.mark.parametrize("value", [2**53, -1])
def test_top_level_integers_outside_2_53_are_refused(value: int) -> None:
    with pytest.raises(ProtocolError) as info:
        parse_frame(json.dumps({"type": "ack", "upto": value}))
    assert info.value.code == "bad_envelope" and "2**53" in info.value.reason


def test_duplicate_keys_refused_in_the_top_level_even_on_the_fast_path() -> None:
    # The fast path splits after "d"; a duplicate hidden there must still be refused.
    sneaky = b'{"d":1,"id":3,"d":2,"id":5,"ts":1,"type":"msg","v":1,"z":0}'
    with pytest.raises(ProtocolError):
        parse_frame(sneaky)
    with pytest.raises(ProtocolError):
        parse_frame(b'{"d":1,"id":3,"ts":1,"type":"msg","type":"ack","v":1,"z":0}')


def test_signature_is_bound_to_the_session() -> None:
    text = encode_msg(1, payload_text({"pay": 1}, canonical=True), ts=TS, secret=SECRET,
                      session="session-A")
    frame = parse_frame(text.encode())
    verify_msg(frame, SECRET, now_ms=TS, session="session-A", raw=text.encode())
    with pytest.raises(ProtocolError) as info:  # a capture replayed into another session
        verify_msg(frame, SECRET, now_ms=TS, session="session-B", raw=text.encode())
    assert info.value.code == "bad_signature"


def test_signatures_follow_rfc8785_number_formatting() -> None:
    import rfc8785

    payload = {"small": 1e-7, "big": 1e21, "whole": 1.0, "k€": "v", "k😀": 1, "kﬀ": 2}
    text = payload_text(payload, canonical=True)
    assert text.encode() == rfc8785.dumps(payload)
    assert '"small":1e-7' in text and '"big":1e+21' in text and '"whole":1' in text
    with pytest.raises(ValueError, match="2\\*\\*53"):
        payload_text({"n": 2**60}, canonical=True)


@pytest.mark.parametrize("text", ['{"k":"' + "a" * 5000 + '"}', '{"q":"' + '\\"' * 3000 + '"}',
                                  '{"é":"' + "😀é" * 2000 + '"}'])
def test_planned_slices_fit_the_frame_limit_and_rejoin(text: str) -> None:
    bounds = envelope.plan_slices(text, max_chars=4096, max_bytes=1000)
    frames = list(envelope.iter_planned_chunks(text, 3, bounds))
    assert all(len(f.encode()) <= 1000 + envelope.CHUNK_OVERHEAD for f in frames)
    asm = ChunkAssembler(max_chunks=len(frames), max_bytes=len(text.encode()))
    joined = [asm.add(parse_frame(f.encode())) for f in frames]
    assert joined[-1] == text and all(j is None for j in joined[:-1])
    # real sizes, not the worst case: plain ASCII needs few more slices than bytes allow
    if text.isascii() and '\\"' not in text:
        assert len(frames) <= -(-len(text) // 1000) + 1


@pytest.mark.parametrize("payload", [
    {"rows": [{"a": i, "é": [1.5, True, None]} for i in range(9000)], "z": "x"},
    list(range(20_000)),
    {"b": 1, "a": {"deep": list(range(5000))}},
    [float("nan")] * 5000,  # NaN: the batched path defers to payload_text, which refuses it
])
def test_batched_serialization_matches_the_one_shot_form(payload: Any) -> None:
    try:
        expected = payload_text(payload)
    except ValueError as exc:
        with pytest.raises(ValueError, match=re.escape(str(exc))):
            envelope.payload_text_batched(payload)
        return
    assert envelope.payload_text_batched(payload) == expected
