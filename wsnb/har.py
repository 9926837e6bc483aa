"""Timelines on disk: HAR (what browsers' devtools and Playwright export), Parquet and CSV.

HAR is the HTTP Archive JSON that browser devtools save from the Network panel
and that Playwright records (``record_har_path``). Each WebSocket request is one
entry of ``log.entries``; Chrome (76+), Playwright and mitmproxy add a
``_webSocketMessages`` list of ``{"type": "send" | "receive" | "error", "time":
<epoch>, "opcode": 1 | 2 | -1, "data": <text, or base64 for binary>}``: whole
messages, no control frames, no close. The flavours differ:

- **Chrome devtools** marks the entry ``"_resourceType": "websocket"`` and writes
  ``time`` in epoch **seconds**; a connection that failed has ``status`` 0 and
  the reason in ``response._error`` (``net::ERR_CONNECTION_REFUSED``,
  ``net::ERR_BLOCKED_BY_CLIENT``...).
- **Playwright** writes ``time`` in epoch **milliseconds** (``wallTimeMs``),
  ``status`` -1 when no response came, and the reason in
  ``response._failureText``; with ``omitTiming`` every ``time`` is -1.
- **Firefox devtools** writes no ``_webSocketMessages`` and no ``_resourceType``:
  its WebSocket entries are plain upgrade requests (status 101, or 0 when the
  connection failed), recognised here by the ``ws://``/``wss://`` URL, the
  ``Upgrade: websocket`` request header or the 101 status.

**Seconds or milliseconds** is decided per entry: the message times' median is
compared with the entry's ``startedDateTime``, and read as seconds or as
milliseconds, whichever lands nearer the start (epoch seconds read as ms land in
January 1970, epoch ms read as seconds tens of thousands of years ahead, so the
two never compete). The chosen reading must lie within 31 days of the start,
else the entry's clock is not an epoch clock and reading fails with a
`ValueError` naming the entry. An entry without ``startedDateTime`` falls back
on magnitude: a median of 1e11 or more is milliseconds (1e11 s is the year
5138, 1e11 ms March 1973). Messages whose ``time`` is not a number >= 0 are
skipped; times are kept to the microsecond, as a `Timeline` stores them.

`read_har` turns those into the rows a live session records: ``sent`` /
``received`` with sizes in bytes, ``peer`` = the request URL (query string
masked: URLs often carry tokens). Frames that are wsnb protocol frames
(PROTOCOL.md) are read for what they mean: ``msg`` keeps its ``id``, a
received ``ack`` becomes ``acked`` rows with ``latency_ms`` measured from the
matching send, ``ping``/``pong``/``nack``/``error`` and ``handshake_ack``
(READY) become their own event types, and the client's ``handshake`` frame
(it carries the token) is never read. Payloads are never stored: a timeline
holds sizes and ids, not data.

Each connection that opened (status 101, 2xx over HTTP/2, or any message sent
or received) starts with a ``state`` ``OPEN`` row. A connection that did not
is kept as one ``error`` row at its ``startedDateTime``: ``upgrade refused:
HTTP 403 Forbidden`` when the server answered, ``blocked: net::ERR_BLOCKED_BY_CLIENT``
or ``connection failed: <the browser's text>`` when it did not, and
``connection failed: no HTTP response (status 0)`` when the HAR says nothing
more (Firefox). A failure text on a connection that did open becomes a
``connection error: ...`` row after its last message.

A file that is not a HAR (not JSON, no ``log.entries``) or a WebSocket entry
that cannot be read (no URL, a ``startedDateTime`` that is not a date, a
``_webSocketMessages`` that is not a list, nothing to place it in time) raises
`ValueError` saying what is wrong and where (``log.entries[3]...``). Entries
that are not objects, and messages that are not objects, are skipped.

`write_har` writes a timeline in the same shape, one entry per connection
(split at each ``OPEN``), times in seconds as Chrome does. A timeline has no
payloads, so each message's ``data`` is a stand-in wsnb frame with the real
byte count in a ``_size`` field (HAR's convention for extensions is a leading
underscore); wsnb reads ``_size`` back, other tools show the stand-in. Only
connections that opened are written: ``error`` rows, failed connections
included, stay out of the HAR.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import os
import re
import statistics
import time
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any
from urllib.parse import quote, urlsplit

import pandas as pd

from wsnb._secret import masked_url
from wsnb.errors import ProtocolError
from wsnb.protocol import envelope
from wsnb.timeline import Timeline

__all__ = ["read_har", "write_har", "read_parquet", "write_parquet", "read_csv",
           "write_csv", "read_timeline", "write_timeline", "timeline_from_frame", "FORMATS"]

PathLike = str | os.PathLike[str]
#: Formats `read_timeline`/`write_timeline` know, by file suffix.
FORMATS = {".har": "har", ".json": "har", ".parquet": "parquet", ".pq": "parquet", ".csv": "csv"}
_MIN_MAXLEN = 100_000
_PARSE_LIMIT = 1 << 20  # text frames longer than this are counted, not parsed as wsnb frames

Row = tuple[float, str, str, int | None, int, str, str, float, str]  # time .. peer


class _ReplayClock:
    """A Timeline clock that returns preset times while loading, then the real time."""

    def __init__(self) -> None:
        self.t: float | None = None

    def __call__(self) -> float:
        return time.time() if self.t is None else self.t


def _timeline(rows: Iterable[Row], count: int, maxlen: int | None) -> Timeline:
    clock = _ReplayClock()
    tl = Timeline(maxlen or max(_MIN_MAXLEN, count), clock=clock)
    record = tl.record
    for t, kind, direction, msg_id, size, state, detail, latency, peer in rows:
        clock.t = t
        record(kind, direction=direction, id=msg_id, size=size, state=state, detail=detail,
               latency_ms=latency, peer=peer)
    clock.t = None
    return tl


def timeline_from_frame(df: pd.DataFrame, maxlen: int | None = None) -> Timeline:
    """Rebuild a `Timeline` from a DataFrame shaped like `Timeline.events()`.

    Missing columns take their defaults; an unknown ``type`` raises ValueError.
    """
    n = len(df)

    def column(name: str, default: Any) -> list[Any]:
        if name not in df:
            return [default] * n
        return [default if _missing(v) else v for v in df[name].tolist()]

    if "time" not in df or "type" not in df:
        raise ValueError("a timeline table needs at least the columns 'time' and 'type'")
    times = pd.to_datetime(df["time"], utc=True, format="ISO8601")
    epoch = ((times - pd.Timestamp(0, tz="UTC")) / pd.Timedelta(1, "s")).tolist()
    rows = zip(
        epoch, [str(v) for v in df["type"].tolist()], column("direction", ""),
        [None if _missing(v) else int(v) for v in column("id", None)],
        [int(v) for v in column("size", 0)], column("state", ""), column("detail", ""),
        [float(v) for v in column("latency_ms", math.nan)], column("peer", ""), strict=True)
    return _timeline(rows, n, maxlen)  # type: ignore[arg-type]


def _missing(value: Any) -> bool:
    return value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value))


# ----- CSV and Parquet ------------------------------------------------------------


def write_csv(timeline: Timeline, path: PathLike) -> Path:
    timeline.events().to_csv(path, index=False)
    return Path(path)


def read_csv(path: PathLike, maxlen: int | None = None) -> Timeline:
    """Read what ``timeline.events().to_csv(path, index=False)`` wrote."""
    df = pd.read_csv(path, dtype={"detail": str, "state": str, "peer": str, "direction": str},
                     keep_default_na=False, na_values={"id": [""], "latency_ms": [""]})
    return timeline_from_frame(df, maxlen)


def _need_pyarrow() -> None:
    try:
        import pyarrow  # noqa: F401
    except ImportError:
        raise ImportError("Parquet needs pyarrow: pip install 'wsnb[parquet]'") from None


def write_parquet(timeline: Timeline, path: PathLike) -> Path:
    """Every retained event, column types kept (categoricals, UTC times, nullable ids)."""
    _need_pyarrow()
    timeline.events().to_parquet(path, index=False, engine="pyarrow")
    return Path(path)


def read_parquet(path: PathLike, maxlen: int | None = None) -> Timeline:
    _need_pyarrow()
    return timeline_from_frame(pd.read_parquet(path, engine="pyarrow"), maxlen)


# ----- HAR: reading ---------------------------------------------------------------


def _load_json(source: PathLike | IO[str] | dict[str, Any]) -> dict[str, Any]:
    if isinstance(source, dict):
        return source
    name = "the input" if hasattr(source, "read") else os.fspath(source)  # type: ignore[arg-type]
    try:
        if hasattr(source, "read"):
            return json.load(source)  # type: ignore[arg-type]
        # devtools may write a BOM
        with open(source, encoding="utf-8-sig") as f:  # type: ignore[arg-type]
            return json.load(f)
    except json.JSONDecodeError as exc:
        raise ValueError(f"not a HAR file: {name} is not JSON ({exc.msg} at line {exc.lineno} "
                         f"column {exc.colno})") from None
    except UnicodeDecodeError:
        raise ValueError(f"not a HAR file: {name} is not UTF-8 text") from None


def _entries(har: Any) -> list[Any]:
    if not isinstance(har, dict):
        raise ValueError(f"not a HAR file: the top level is {_kind(har)}, not an object "
                         f"with a 'log'")
    log = har.get("log")
    if not isinstance(log, dict):
        raise ValueError("not a HAR file: no 'log' object at the top level" if log is None else
                         f"not a HAR file: 'log' is {_kind(log)}, not an object")
    entries = log.get("entries")
    if entries is None:
        raise ValueError("not a HAR file: no log.entries")
    if not isinstance(entries, list):
        raise ValueError(f"not a HAR file: log.entries is {_kind(entries)}, not a list")
    return entries


def _kind(value: Any) -> str:
    """What a JSON value is, with its article: "an object", "a list", "null"..."""
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean",
            int: "a number", float: "a number", type(None): "null"}.get(
        type(value), type(value).__name__)


def _epoch(iso: Any) -> float | None:
    if not isinstance(iso, str) or not iso:
        return None
    try:
        stamp = datetime.fromisoformat(iso.replace("Z", "+00:00"))
    except ValueError:
        return None
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=UTC)
    return stamp.timestamp()


def _peer_for(url: str) -> str:
    if urlsplit(url).scheme.lower() in ("ws", "wss", "http", "https"):
        return masked_url(url)
    return url[:200]


_URL_IN_TEXT = re.compile(r"\b(?:wss?|https?)://[^\s'\"<>]+", re.IGNORECASE)


def _safe_text(text: str) -> str:
    """A browser's failure text, URLs in it masked like peers, at most 200 characters."""
    return _URL_IN_TEXT.sub(lambda m: _peer_for(m.group(0)), text.strip())[:200]


def _size_of(message: dict[str, Any], data: str, opcode: Any) -> int:
    size = message.get("_size")
    if type(size) is int and size >= 0:
        return size
    if opcode == 2:
        try:
            return len(base64.b64decode(data, validate=True))
        except (binascii.Error, ValueError):
            pass
    return len(data.encode("utf-8", "surrogatepass"))


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _upgrade_header(request: dict[str, Any]) -> bool:
    headers = request.get("headers")
    if not isinstance(headers, list):
        return False
    return any(isinstance(h, dict) and str(h.get("name", "")).lower() == "upgrade"
               and str(h.get("value", "")).strip().lower() == "websocket" for h in headers)


def _is_websocket(entry: dict[str, Any]) -> bool:
    if str(entry.get("_resourceType", "")).lower() == "websocket":
        return True
    if "_webSocketMessages" in entry:
        return True
    request = _dict(entry.get("request"))
    url = str(request.get("url", ""))
    if urlsplit(url).scheme.lower() in ("ws", "wss"):
        return True
    return _status(_dict(entry.get("response"))) == 101 or _upgrade_header(request)


def _status(response: dict[str, Any]) -> int | None:
    status = response.get("status")
    if type(status) is int:
        return status
    if isinstance(status, str) and status.strip().lstrip("-").isdigit():
        return int(status)
    return None


def _time(message: dict[str, Any]) -> float | None:
    t = message.get("time")
    if isinstance(t, bool) or not isinstance(t, (int, float)) or not math.isfinite(t) or t < 0:
        return None  # Playwright writes -1 with omitTiming
    return float(t)


_MS_MAGNITUDE = 1e11  # epoch seconds reach it in the year 5138, epoch milliseconds in 1973
_MAX_DRIFT = 31 * 86_400.0  # messages this far from startedDateTime are not on an epoch clock


def _divisor(times: list[float], started: float | None, where: str) -> float:
    """1.0 when this entry's message times are epoch seconds, 1000.0 when milliseconds."""
    if not times:
        return 1.0
    mid = statistics.median(times)
    if started is not None:
        divisor = min((1.0, 1000.0), key=lambda d: abs(mid / d - started))
        if abs(mid / divisor - started) > _MAX_DRIFT:
            raise ValueError(
                f"{where}: _webSocketMessages times (median {mid:g}) are neither epoch "
                f"seconds nor epoch milliseconds near startedDateTime ({_iso(started)})")
        return divisor
    divisor = 1000.0 if mid >= _MS_MAGNITUDE else 1.0
    if mid / divisor < 1e8:  # before 1973: a monotonic clock, and no start to anchor it
        raise ValueError(f"{where}: no startedDateTime, and the _webSocketMessages times "
                         f"(median {mid:g}) are not epoch times")
    return divisor


def _failure_text(entry: dict[str, Any], response: dict[str, Any]) -> str:
    for value in (response.get("_error"), response.get("_failureText"), entry.get("_error")):
        if isinstance(value, str) and value.strip():
            return _safe_text(value)
    return ""


def _entry_rows(entry: dict[str, Any], where: str) -> Iterator[Row]:
    request = _dict(entry.get("request"))
    response = _dict(entry.get("response"))
    url = request.get("url")
    if not isinstance(url, str) or not url:
        raise ValueError(f"{where}: a WebSocket entry without request.url")
    peer = _peer_for(url)
    raw = entry.get("_webSocketMessages")
    if raw is not None and not isinstance(raw, list):
        raise ValueError(f"{where} ({peer}): _webSocketMessages is {_kind(raw)}, not a list")
    timed = [(t, m) for m in raw or [] if isinstance(m, dict) and (t := _time(m)) is not None]
    started_raw = entry.get("startedDateTime")
    started = _epoch(started_raw)
    if started is None and started_raw is not None:
        raise ValueError(f"{where} ({peer}): startedDateTime {str(started_raw)[:40]!r} is not "
                         f"an ISO 8601 date")
    divisor = _divisor([t for t, _ in timed], started, f"{where} ({peer})")
    messages = sorted(((round(t / divisor, 6), m) for t, m in timed), key=lambda tm: tm[0])
    if started is None:
        if not messages:
            raise ValueError(f"{where} ({peer}): no startedDateTime and no timed messages, so "
                             f"the connection cannot be placed in time")
        started = messages[0][0]
    status = _status(response)
    failure = _failure_text(entry, response)
    traffic = any(isinstance(m, dict) and m.get("type") in ("send", "receive")
                  for m in raw or [])  # timed or not (Playwright's omitTiming)
    http2 = str(response.get("httpVersion", "")).lower() in ("h2", "h3", "http/2.0", "http/3.0")
    nan = math.nan
    if status == 101 or traffic or (http2 and status is not None and 200 <= status < 300):
        if status == 101:
            detail = "HTTP 101 Switching Protocols"
        elif status is not None and status > 0:
            detail = f"HTTP {status} {str(response.get('statusText') or '')[:80]}".strip()
        else:
            detail = "no upgrade response in the HAR"
        yield (started, "state", "", None, 0, "OPEN", detail, nan, peer)
    else:
        if status is not None and status > 0:
            words = str(response.get("statusText") or "")[:80]
            detail = f"upgrade refused: HTTP {status} {words}".strip()
        elif failure:
            detail = f"{'blocked' if 'BLOCKED' in failure.upper() else 'connection failed'}: " \
                     f"{failure}"
        else:
            shown = "no status" if status is None else f"status {status}"
            detail = f"connection failed: no HTTP response ({shown})"
        yield (started, "error", "", None, 0, "", detail[:200], nan, peer)
        failure = ""
    sent_at: dict[int, tuple[float, int]] = {}  # msg id -> (last send time, size)
    for t, message in messages:
        yield from _message_rows(t, message, peer, sent_at)
    if failure:
        last = messages[-1][0] if messages else started
        yield (last, "error", "", None, 0, "", f"connection error: {failure}"[:200], nan, peer)


def _message_rows(t: float, message: dict[str, Any], peer: str,
                  sent_at: dict[int, tuple[float, int]]) -> Iterator[Row]:
    kind = message.get("type")
    opcode = message.get("opcode")
    data = message.get("data")
    data = data if isinstance(data, str) else ""
    nan = math.nan
    if kind == "error" or opcode == -1:
        yield (t, "error", "", None, 0, "", f"devtools: {_safe_text(data)}"[:200], nan, peer)
        return
    if kind not in ("send", "receive"):
        return
    if opcode in (8, 9, 10):  # control frames: some recorders keep them
        if opcode == 8:
            yield (t, "close", "out" if kind == "send" else "in", None, 0, "",
                   "close frame sent" if kind == "send" else "close frame received", nan, peer)
        return
    direction = "out" if kind == "send" else "in"
    plain = "sent" if kind == "send" else "received"
    size = _size_of(message, data, opcode)
    frame = None
    if opcode == 1 and len(data) <= _PARSE_LIMIT and data.lstrip().startswith("{"):
        try:
            frame = envelope.parse_frame(data)
        except ProtocolError:
            frame = None
    if frame is None:
        yield (t, plain, direction, None, size, "", "binary" if opcode == 2 else "", nan, peer)
        return
    ftype = frame["type"]
    if ftype in ("msg", "chunk"):
        if kind == "send":
            before = sent_at.get(frame["id"], (t, 0))[1] if ftype == "chunk" and frame["i"] else 0
            sent_at[frame["id"]] = (t, before + size)
        detail = f"chunk {frame['i'] + 1}/{frame['n']}" if ftype == "chunk" else ""
        yield (t, plain, direction, frame["id"], size, "", detail, nan, peer)
    elif ftype == "ack":
        if kind == "send":
            return  # acking the peer's messages: the live timeline does not show these either
        ids = []
        if type(frame.get("id")) is int:
            ids.append(frame["id"])
        if type(frame.get("upto")) is int:
            ids += sorted(i for i in sent_at if i <= frame["upto"])
            if not ids:
                ids.append(frame["upto"])
        for msg_id in dict.fromkeys(ids):
            start, sent_size = sent_at.pop(msg_id, (None, 0))
            latency = round((t - start) * 1000, 3) if start is not None else nan
            yield (t, "acked", "in", msg_id, sent_size, "", "", latency, peer)
    elif ftype == "nack":
        sent_at.pop(frame["id"], None)
        detail = f"{frame['code']}: {frame['reason']}"[:200]
        yield (t, "nack", direction, frame["id"], size, "", detail, nan, peer)
    elif ftype in ("ping", "pong"):
        latency = nan
        if ftype == "pong" and kind == "receive":
            rtt = t * 1000 - frame["ts"]
            latency = round(rtt, 3) if 0 <= rtt < 3_600_000 else nan
        yield (t, ftype, direction, None, size, "", "", latency, peer)
    elif ftype == "handshake_ack" and kind == "receive":
        yield (t, "state", "", None, 0, "READY",
               "resumed" if frame["resumed"] else "new session", nan, peer)
    elif ftype == "error":
        detail = f"{'peer says' if kind == 'receive' else 'said'} {frame['code']}: " \
                 f"{frame['reason']}"
        yield (t, "error", direction, None, size, "", detail[:200], nan, peer)
    # handshake frames carry the token: never read, never stored


def read_har(source: PathLike | IO[str] | dict[str, Any], maxlen: int | None = None) -> Timeline:
    """A `Timeline` of every WebSocket request in a HAR file, ordered by time.

    `source` is a path, an open text file or the parsed JSON. Chrome, Firefox and
    Playwright HARs alike (see the module docstring for how seconds and
    milliseconds are told apart). Raises `ValueError` naming what is wrong when
    the input is not a HAR or a WebSocket entry cannot be read.
    """
    entries = _entries(_load_json(source))
    rows: list[Row] = []
    for i, entry in enumerate(entries):
        if isinstance(entry, dict) and _is_websocket(entry):
            rows.extend(_entry_rows(entry, f"log.entries[{i}]"))
    rows.sort(key=lambda row: row[0])  # stable: an entry's OPEN stays before its frames
    return _timeline(rows, len(rows), maxlen)


# ----- HAR: writing ---------------------------------------------------------------


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="microseconds").replace(
        "+00:00", "Z")


def _url_for(peer: str, url: str | None) -> str:
    if urlsplit(peer).scheme.lower() in ("ws", "wss"):
        return peer
    if url is not None:
        return url
    return f"ws://wsnb.invalid/{quote(peer or 'peer', safe='')}"


def _stand_in(kind: str, msg_id: int | None, t: float, size: int) -> str:
    ms = int(round(t * 1000))
    if msg_id is None:
        return f"({size} bytes; payload not recorded by wsnb)"
    if kind == "msg":
        return envelope.dumps({"type": "msg", "v": envelope.VERSION, "id": msg_id, "ts": ms,
                               "z": 0, "d": None})
    return envelope.dumps({"type": "ack", "id": msg_id})


def _har_messages(rows: pd.DataFrame, out_types: frozenset[str]) -> list[dict[str, Any]]:
    messages = []
    for t, kind, direction, msg_id, size, detail, latency in zip(
            rows["t"], rows["type"], rows["direction"], rows["id"], rows["size"],
            rows["detail"], rows["latency_ms"], strict=True):
        msg_id = None if _missing(msg_id) else int(msg_id)
        size = int(size)
        data: str | None = None
        har_type = "send"
        if kind in out_types and direction == "out":
            data = _stand_in("msg", msg_id, t, size)
        elif kind == "received":
            data, har_type = _stand_in("msg", msg_id, t, size), "receive"
        elif kind == "acked" and msg_id is not None:
            data, har_type = _stand_in("ack", msg_id, t, size), "receive"
        elif kind == "nack" and msg_id is not None and direction == "in":
            code, _, reason = str(detail).partition(": ")
            data = envelope.dumps({"type": "nack", "id": msg_id, "code": code or "refused",
                                   "reason": reason})
            har_type = "receive"
        elif kind in ("ping", "pong") and direction in ("in", "out"):
            ts = int(round(t * 1000 - (latency if kind == "pong" and not _missing(latency)
                                       else 0)))
            data = envelope.dumps({"type": kind, "ts": ts})
            har_type = "send" if direction == "out" else "receive"
        if data is None:
            continue
        message: dict[str, Any] = {"type": har_type, "time": t, "opcode": 1, "data": data}
        if kind != "acked":  # an acked row's size is its message's, found from the send
            message["_size"] = size
        messages.append(message)
    return messages


def _entry(url: str, started: float, messages: list[dict[str, Any]]) -> dict[str, Any]:
    parts = urlsplit(url)
    host = parts.netloc or "wsnb.invalid"
    return {
        "startedDateTime": _iso(started),
        "time": 0,
        "request": {
            "method": "GET", "url": url, "httpVersion": "HTTP/1.1", "cookies": [],
            "headers": [{"name": "Host", "value": host}, {"name": "Upgrade", "value": "websocket"},
                        {"name": "Connection", "value": "Upgrade"},
                        {"name": "Sec-WebSocket-Version", "value": "13"}],
            "queryString": [], "headersSize": -1, "bodySize": 0,
        },
        "response": {
            "status": 101, "statusText": "Switching Protocols", "httpVersion": "HTTP/1.1",
            "cookies": [], "headers": [{"name": "Upgrade", "value": "websocket"},
                                       {"name": "Connection", "value": "Upgrade"}],
            "content": {"size": 0, "mimeType": "x-unknown"}, "redirectURL": "",
            "headersSize": -1, "bodySize": 0, "_transferSize": 0,
        },
        "cache": {},
        "timings": {"blocked": -1, "dns": -1, "ssl": -1, "connect": -1, "send": 0, "wait": 0,
                    "receive": 0},
        "_resourceType": "websocket",
        "_webSocketMessages": messages,
    }


def har_dict(timeline: Timeline, url: str | None = None) -> dict[str, Any]:
    """The HAR document for `timeline` (see `write_har`)."""
    from wsnb import __version__

    df = timeline.events()
    df["t"] = (df["time"] - pd.Timestamp(0, tz="UTC")) / pd.Timedelta(1, "s")
    entries = []
    peers = list(dict.fromkeys(df["peer"].astype(str).tolist()))
    for peer in peers:
        rows = df[df["peer"].astype(str) == peer]
        written = rows["type"].isin(["written", "resent"]) & (rows["direction"] == "out")
        out_types = frozenset({"written", "resent"} if written.any() else {"sent"})
        opens = ((rows["type"] == "state") & (rows["state"].astype(str) == "OPEN")).cumsum()
        for _, segment in rows.groupby(opens.to_numpy(), sort=True):
            messages = _har_messages(segment, out_types)
            is_open = bool(((segment["type"] == "state")
                            & (segment["state"].astype(str) == "OPEN")).any())
            if not messages and not is_open:
                continue
            entries.append(_entry(_url_for(peer, url), float(segment["t"].iloc[0]), messages))
    entries.sort(key=lambda e: e["startedDateTime"])
    return {"log": {"version": "1.2", "creator": {"name": "wsnb", "version": __version__},
                    "pages": [], "entries": entries}}


def write_har(timeline: Timeline, path: PathLike, url: str | None = None) -> Path:
    """Write `timeline` as a HAR file devtools-aware tools open.

    Each peer that is not a ``ws://``/``wss://`` URL (a client's ``name``, a
    server's session prefix) gets `url` if given, else ``ws://wsnb.invalid/<peer>``.
    """
    with open(path, "w", encoding="utf-8") as f:
        json.dump(har_dict(timeline, url), f, ensure_ascii=False, indent=1)
        f.write("\n")
    return Path(path)


# ----- by suffix ------------------------------------------------------------------


def format_of(path: PathLike, fmt: str | None = None) -> str:
    if fmt is not None:
        if fmt not in ("har", "parquet", "csv"):
            raise ValueError(f"unknown timeline format {fmt!r}; use csv, parquet or har")
        return fmt
    suffix = Path(path).suffix.lower()
    if suffix not in FORMATS:
        raise ValueError(f"cannot tell the format of {os.fspath(path)!r} from its suffix; "
                         f"use one of {', '.join(FORMATS)}")
    return FORMATS[suffix]


def read_timeline(path: PathLike, fmt: str | None = None) -> Timeline:
    """Read a saved timeline (.har/.json, .parquet/.pq, .csv)."""
    kind = format_of(path, fmt)
    if kind == "har":
        return read_har(path)
    if kind == "parquet":
        return read_parquet(path)
    return read_csv(path)


def write_timeline(timeline: Timeline, path: PathLike, fmt: str | None = None,
                   url: str | None = None) -> Path:
    kind = format_of(path, fmt)
    if kind == "har":
        return write_har(timeline, path, url)
    if kind == "parquet":
        return write_parquet(timeline, path)
    return write_csv(timeline, path)
