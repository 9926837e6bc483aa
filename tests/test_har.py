"""HAR (browser devtools), Parquet and CSV timelines: issue 6, "HAR: the format browsers export"."""

from __future__ import annotations

import asyncio
import json
import math
import time
from pathlib import Path

import pandas as pd
import pytest

import wsnb
from wsnb import har

SAMPLE = Path(__file__).parent / "data" / "chrome_websockets.har"
SOCKET = "wss://chat.example.com/socket?…"
LOCAL = "ws://localhost:8765/"
FRAME_TYPES = ["sent", "received", "acked", "ping", "pong", "nack"]


def as_text(df: pd.DataFrame) -> pd.DataFrame:
    """Categoricals as str, so frames built from different category sets compare equal."""
    cols = [c for c in ("type", "direction", "state", "peer") if c in df]
    return df.astype(dict.fromkeys(cols, str)).reset_index(drop=True)


def test_reads_a_chrome_export() -> None:
    tl = wsnb.Timeline.from_har(SAMPLE)
    events = tl.events()
    assert set(events["peer"].astype(str)) == {SOCKET, LOCAL,
                                               "wss://chat.example.com/admin-socket"}
    app = events[events["peer"] == SOCKET]
    assert app["type"].astype(str).tolist() == [
        "state", "sent", "received", "received", "received", "received", "sent", "received",
        "error"]
    payloads = json.loads(SAMPLE.read_text())["log"]["entries"][1]["_webSocketMessages"]
    texts = [m["data"] for m in payloads if m["opcode"] == 1]
    sizes = app[app["type"].isin(["sent", "received"])]["size"].tolist()
    assert sizes == [len(t.encode()) for t in texts[:4]] + [12] + [4, 4]  # bytes, not chars
    assert sizes[3] == len(texts[3]) + 3  # "€" is 3 bytes, "è" 2, in UTF-8
    assert app["time"].iloc[1] == pd.Timestamp("2024-06-03 07:33:20.436512", tz="UTC")
    assert app["detail"].tolist()[5] == "binary"
    assert app["detail"].iloc[-1] == "devtools: Invalid frame header"
    assert app["state"].iloc[0] == "OPEN"

    local = events[events["peer"] == LOCAL]  # a page speaking the wsnb protocol
    acks = local[local["type"] == "acked"]
    assert acks["id"].tolist() == [1, 2]
    assert acks["latency_ms"].tolist() == [28.0, 12.0]  # from the matching sends
    assert acks["size"].tolist() == local[local["type"] == "sent"]["size"].tolist()[:2]
    assert local[local["type"] == "received"]["id"].tolist() == [1]
    nack = local[local["type"] == "nack"].iloc[0]
    assert nack["id"] == 3 and nack["detail"] == "bad_signature: signature does not match"
    pongs = local[local["type"] == "pong"]
    assert pongs["direction"].tolist() == ["out", "in"]
    assert pongs["latency_ms"].tolist()[1] == 4.2  # the pong to the page's own ping
    assert "READY" in local["state"].astype(str).tolist()
    refused = events[events["peer"] == "wss://chat.example.com/admin-socket"]
    assert refused["detail"].tolist() == ["upgrade refused: HTTP 403 Forbidden"]

    assert tl.messages()["type"].isin(["sent", "received", "nack"]).all()
    assert (tl.acks()["type"] == "acked").sum() == 2
    text = events.to_csv()
    assert "s3cr3t-in-query" not in text  # tokens in URLs are masked
    assert "demo-token-PLANTED" not in text  # the handshake frame is never read
    assert "hello" not in text  # payloads are never stored


def test_har_round_trip_is_stable(tmp_path) -> None:
    first = wsnb.Timeline.from_har(SAMPLE)
    path = first.to_har(tmp_path / "out.har")
    second = wsnb.Timeline.from_har(path)
    expected = first.events()
    kept = expected["type"].isin(FRAME_TYPES) | (expected["state"] == "OPEN")
    cols = ["time", "type", "direction", "id", "size", "latency_ms", "peer"]
    assert as_text(second.events()[cols]).equals(as_text(expected.loc[kept, cols]))
    # and writing again gives the same document
    again = wsnb.Timeline.from_har(second.to_har(tmp_path / "again.har"))
    assert as_text(again.events()).equals(as_text(second.events()))
    assert json.loads((tmp_path / "out.har").read_text()) == json.loads(
        (tmp_path / "again.har").read_text())


def check_har_shape(doc: dict) -> None:
    """The HAR 1.2 fields tools require, plus Chrome's WebSocket extension."""
    log = doc["log"]
    assert log["version"] == "1.2" and log["creator"]["name"] == "wsnb"
    for entry in log["entries"]:
        for key in ("startedDateTime", "time", "request", "response", "cache", "timings"):
            assert key in entry
        request, response = entry["request"], entry["response"]
        for key in ("method", "url", "httpVersion", "cookies", "headers", "queryString",
                    "headersSize", "bodySize"):
            assert key in request
        for key in ("status", "statusText", "httpVersion", "cookies", "headers", "content",
                    "redirectURL", "headersSize", "bodySize"):
            assert key in response
        assert {"send", "wait", "receive"} <= set(entry["timings"])
        assert entry["_resourceType"] == "websocket" and response["status"] == 101
        assert pd.Timestamp(entry["startedDateTime"]).tzinfo is not None
        times = [m["time"] for m in entry["_webSocketMessages"]]
        assert times == sorted(times)
        for m in entry["_webSocketMessages"]:
            assert m["type"] in ("send", "receive") and m["opcode"] == 1
            assert isinstance(m["time"], float) and isinstance(m["data"], str)


async def test_live_session_to_har_and_back(tmp_path, make_client) -> None:
    async with wsnb.Server(port=0, token="demo", heartbeat_ms=50) as srv:
        client = make_client(srv.url, name="alice")
        await client.connect(timeout=5)
        for i in range(10):
            await client.send({"i": i, "pad": "x" * i * 10})
        await client.drain(timeout=5)
        client.disconnect_now()  # a second connection: a second HAR entry
        await client.wait_until(lambda c: c.reconnects >= 1 and c.ready, timeout=5)
        for i in range(5):
            await client.send({"again": i})
        await srv.send(client.session_id, {"from": "server"})
        assert await client.recv(timeout=5) == {"from": "server"}
        await client.drain(timeout=5)
        await client.close()
    path = client.timeline.to_har(tmp_path / "alice.har", url=srv.url)
    doc = json.loads(path.read_text())
    check_har_shape(doc)
    original = client.timeline.events()
    assert len(doc["log"]["entries"]) == ((original["type"] == "state")
                                          & (original["state"] == "OPEN")).sum() == 2
    assert all(e["request"]["url"] == srv.url for e in doc["log"]["entries"])

    back = wsnb.Timeline.from_har(path).events()
    assert set(back["peer"].astype(str)) == {srv.url}
    written = original[original["type"].isin(["written", "resent"])]
    sent = back[back["type"] == "sent"]
    assert sent["id"].tolist() == written["id"].tolist()
    assert sent["size"].tolist() == written["size"].tolist()
    assert sent["time"].tolist() == written["time"].tolist()
    received = back[back["type"] == "received"]
    assert received["id"].tolist() == original[original["type"] == "received"]["id"].tolist()
    live_acks = original[original["type"] == "acked"]
    acks = back[back["type"] == "acked"]
    assert acks["id"].tolist() == live_acks["id"].tolist() == list(range(1, 16))
    assert acks["size"].tolist() == live_acks["size"].tolist()
    # latency from the HAR's own send/ack times agrees with the live measurement
    diffs = (acks["latency_ms"].to_numpy() - live_acks["latency_ms"].to_numpy())
    assert abs(diffs).max() < 5, diffs
    pings = original[original["type"].isin(["ping", "pong"])]
    assert len(back[back["type"].isin(["ping", "pong"])]) == len(pings)
    assert back[back["type"] == "pong"]["latency_ms"].notna().all()


def test_parquet_and_csv_round_trips(tmp_path) -> None:
    pytest.importorskip("pyarrow")
    tl = wsnb.Timeline(maxlen=1000)
    tl.record("state", state="OPEN", peer="p")
    tl.record("sent", direction="out", id=1, size=123, peer="p")
    tl.record("acked", direction="in", id=1, size=123, latency_ms=1.25, peer="p")
    tl.record("close", detail="1006 abnormal closure, with a comma", peer="p")
    tl.record("chaos", detail='quotes " and\nnewline')
    for i in range(2000):  # beyond maxlen: only the retained window is written
        tl.record("received", direction="in", id=i, peer="q")
    original = tl.events()
    from_parquet = wsnb.Timeline.from_parquet(tl.to_parquet(tmp_path / "t.parquet"))
    assert as_text(from_parquet.events()).equals(as_text(original))
    assert from_parquet.events()["id"].dtype == "Int64"
    har.write_csv(tl, tmp_path / "t.csv")
    from_csv = har.read_csv(tmp_path / "t.csv")
    assert as_text(from_csv.events()).equals(as_text(original))
    # a loaded timeline keeps recording, stamped with the real clock
    before = time.time()
    from_parquet.record("chaos", detail="after load")
    last = from_parquet.events(last=1)["time"].iloc[0].timestamp()
    assert before - 1 <= last <= time.time() + 1


def test_odd_hars_do_not_break_the_reader(tmp_path) -> None:
    deep = "[" * 100_000 + "]" * 100_000
    huge = '{"type":"msg"' + " " * (2 << 20) + "}"
    doc = {"log": {"entries": [
        {"request": {"url": "wss://firefox.example/ws"}, "response": {"status": 101},
         "startedDateTime": "2024-06-03T07:33:20.000+02:00",  # Firefox: no _resourceType
         "_webSocketMessages": [
             {"type": "send", "time": 1717392800.5, "opcode": 1, "data": deep},
             {"type": "receive", "time": 1717392800.6, "opcode": 1, "data": huge},
             {"type": "receive", "time": 1717392800.7, "opcode": 2, "data": "not base64!"},
             {"type": "receive", "time": "later", "opcode": 1, "data": "x"},
             {"type": "frame", "time": 1717392800.8, "opcode": 1, "data": "x"},
             "junk",
             {"type": "receive", "time": 1717392800.9, "opcode": 1,
              "data": '{"type":"ack","upto":99}'},
         ]},
        {"request": {"url": "https://example.com/"}, "response": {"status": 200}},
        "junk",
    ]}}
    events = har.read_har(doc).events()
    assert events["type"].astype(str).tolist() == ["state", "sent", "received", "received",
                                                   "acked"]
    assert events["time"].iloc[0] == pd.Timestamp("2024-06-03 05:33:20", tz="UTC")
    assert events["size"].tolist()[1:4] == [200_000, len(huge), len("not base64!")]
    assert events["id"].iloc[-1] == 99 and math.isnan(events["latency_ms"].iloc[-1])
    with pytest.raises(ValueError, match="not a HAR file"):
        har.read_har({"entries": []})
    with pytest.raises(ValueError, match="cannot tell the format"):
        har.read_timeline(tmp_path / "x.txt")


def test_chunked_messages_from_a_browser() -> None:
    text = '{"d":"' + "y" * 50 + '","id":7,"ts":1,"type":"msg","v":1,"z":0}'
    chunks = wsnb.protocol.envelope.split_chunks(text, 7, 40)
    messages = [{"type": "send", "time": 1717400000.0 + i / 10, "opcode": 1, "data": c}
                for i, c in enumerate(chunks)]
    messages.append({"type": "receive", "time": 1717400001.0, "opcode": 1,
                     "data": '{"type":"ack","id":7}'})
    doc = {"log": {"entries": [{"_resourceType": "websocket", "request": {"url": LOCAL},
                                "response": {"status": 101}, "_webSocketMessages": messages}]}}
    events = har.read_har(doc).events()
    sent = events[events["type"] == "sent"]
    assert sent["detail"].tolist() == [f"chunk {i + 1}/{len(chunks)}" for i in range(len(chunks))]
    ack = events[events["type"] == "acked"].iloc[0]
    assert ack["id"] == 7 and ack["size"] == sent["size"].sum()
    assert ack["latency_ms"] == pytest.approx((1.0 - (len(chunks) - 1) / 10) * 1000, abs=0.01)


# ----- a real browser: headless Chromium, frames captured through the DevTools protocol ----

PAGE_JS = """
async ([url, token]) => {
  const ws = new WebSocket(url);
  const all = [];
  let wake = () => {};
  ws.onmessage = e => { all.push(JSON.parse(e.data)); wake(); };
  const until = async (pred) => {
    while (!all.some(pred)) await new Promise(ok => { wake = ok; });
    return all.find(pred);
  };
  await new Promise((ok, bad) => { ws.onopen = ok; ws.onerror = bad; });
  ws.send(JSON.stringify({type: 'handshake', v: 1, token, session: null, last_seen: 0}));
  await until(m => m.type === 'handshake_ack');
  for (let id = 1; id <= 3; id++) {  // the article's envelope, one at a time
    ws.send(JSON.stringify({v: 1, id, ts: Date.now(), z: 0, type: 'msg', d: {n: id}}));
    await until(m => m.type === 'ack' && m.upto >= id);
  }
  const msg = await until(m => m.type === 'msg');  // the server's reply to message 3
  ws.send(JSON.stringify({type: 'ack', upto: msg.id}));
  ws.send(new Uint8Array([1, 2, 3, 4, 5]));  // binary: refused by the server, still a frame
  await until(m => m.type === 'error');
  ws.close(1000);
  return all;
}
"""
CDP_EVENTS = ("webSocketCreated", "webSocketWillSendHandshakeRequest",
              "webSocketHandshakeResponseReceived", "webSocketFrameSent",
              "webSocketFrameReceived")


def har_from_cdp(events: list[tuple[str, dict]]) -> dict:
    """What devtools' "Save all as HAR" writes, rebuilt from Network.webSocket* events."""
    entries: dict[str, dict] = {}
    clock: dict[str, tuple[float, float]] = {}  # requestId -> (wallTime, monotonic timestamp)
    for name, params in events:
        rid = params["requestId"]
        if name == "webSocketCreated":
            entries[rid] = {"_resourceType": "websocket", "request": {
                "method": "GET", "url": params["url"], "headers": []},
                "response": {}, "_webSocketMessages": []}
        elif name == "webSocketWillSendHandshakeRequest":
            clock[rid] = (params["wallTime"], params["timestamp"])
            entries[rid]["startedDateTime"] = pd.Timestamp(
                params["wallTime"], unit="s", tz="UTC").isoformat()
            entries[rid]["request"]["headers"] = [
                {"name": k, "value": v} for k, v in params["request"]["headers"].items()]
        elif name == "webSocketHandshakeResponseReceived":
            response = params["response"]
            entries[rid]["response"] = {"status": response["status"],
                                        "statusText": response["statusText"]}
        else:
            wall, mono = clock[rid]
            frame = params["response"]
            entries[rid]["_webSocketMessages"].append({
                "type": "send" if name == "webSocketFrameSent" else "receive",
                "time": wall + (params["timestamp"] - mono),
                "opcode": frame["opcode"], "data": frame["payloadData"]})
    return {"log": {"version": "1.2", "creator": {"name": "test", "version": "0"},
                    "entries": list(entries.values())}}


async def test_headless_chromium_session_through_devtools(tmp_path) -> None:
    playwright = pytest.importorskip("playwright.async_api")
    chromium = Path("/usr/bin/chromium")
    if not chromium.exists():
        pytest.skip("no /usr/bin/chromium")
    token = "tok-PLANTED-cdp1"
    events: list[tuple[str, dict]] = []

    async def reply_to_third(session: wsnb.ServerSession, payload: object) -> None:
        if payload == {"n": 3}:
            await srv.send(session.id, {"from": "server"})

    async with wsnb.Server(port=0, token=token, heartbeat_ms=0,
                           handler=reply_to_third) as srv, playwright.async_playwright() as pw:
        browser = await pw.chromium.launch(
            executable_path=str(chromium),
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"])
        try:
            page = await browser.new_page()
            cdp = await page.context.new_cdp_session(page)
            error_seen = asyncio.Event()  # CDP events can trail page.evaluate's result

            def on_event(name: str, params: dict) -> None:
                events.append((name, params))
                payload = params.get("response", {}).get("payloadData", "")
                if name == "webSocketFrameReceived" and '"type":"error"' in payload:
                    error_seen.set()

            for name in CDP_EVENTS:
                cdp.on(f"Network.{name}", lambda p, name=name: on_event(name, p))
            await cdp.send("Network.enable")
            got = await page.evaluate(PAGE_JS, [srv.url, token])
            await asyncio.wait_for(error_seen.wait(), 10)
        finally:
            await browser.close()
    assert got[0]["type"] == "handshake_ack" and got[-1]["type"] == "error"
    assert srv.delivered == [{"n": 1}, {"n": 2}, {"n": 3}]
    path = tmp_path / "chromium.har"
    path.write_text(json.dumps(har_from_cdp(events)))
    tl = wsnb.Timeline.from_har(path)
    events_df = tl.events()
    assert set(events_df["peer"].astype(str)) == {srv.url + "/"}
    sent = events_df[events_df["type"] == "sent"]
    assert sent["id"].tolist()[:3] == [1, 2, 3] and pd.isna(sent["id"].tolist()[3])
    assert sent["detail"].tolist()[-1] == "binary" and sent["size"].tolist()[-1] == 5
    acks = events_df[events_df["type"] == "acked"]
    assert acks["id"].tolist() == [1, 2, 3]
    assert ((acks["latency_ms"] >= 0) & (acks["latency_ms"] < 5000)).all()
    assert acks["size"].tolist() == sent["size"].tolist()[:3]
    received = events_df[events_df["type"] == "received"]
    assert received["id"].tolist() == [1]
    assert "READY" in events_df["state"].astype(str).tolist()
    assert (events_df["type"] == "error").sum() == 1  # the server's complaint about binary
    assert token not in events_df.to_csv()
    assert events_df["time"].is_monotonic_increasing


# ----- issue 11: Chrome, Firefox and Playwright flavours; failed connections ---------------

DATA = Path(__file__).parent / "data"
PLAYWRIGHT = DATA / "playwright_websockets.har"
CHROME_FAILED = DATA / "chrome_failed_websockets.har"
FIREFOX = DATA / "firefox_websockets.har"
KEPT_COLS = ["time", "type", "direction", "id", "size", "latency_ms", "peer"]


def frames_and_opens(df: pd.DataFrame) -> pd.DataFrame:
    """What a HAR written by wsnb carries back: frames and OPEN rows (not errors, not READY)."""
    kept = df["type"].isin(FRAME_TYPES) | (df["state"].astype(str) == "OPEN")
    return as_text(df.loc[kept, KEPT_COLS])


def test_reads_a_playwright_har_in_milliseconds(tmp_path) -> None:
    events = wsnb.Timeline.from_har(PLAYWRIGHT).events()
    day = pd.Timestamp("2024-06-03", tz="UTC")
    assert (events["time"].dt.floor("D") == day).all(), events["time"]  # not the year 58886
    assert events["time"].is_monotonic_increasing
    live = events[events["peer"] == "ws://127.0.0.1:8765/?…"]
    assert live["state"].astype(str).tolist()[:1] == ["OPEN"]
    assert live["time"].iloc[0] == pd.Timestamp("2024-06-03 07:40:00.131", tz="UTC")
    sent = live[(live["type"] == "sent") & live["id"].notna()]
    assert sent["time"].tolist() == [pd.Timestamp("2024-06-03 07:40:00.134927", tz="UTC")]
    ack = live[live["type"] == "acked"].iloc[0]
    assert ack["id"] == 1 and ack["size"] == sent["size"].iloc[0]
    assert ack["latency_ms"] == 0.963  # not 963: milliseconds are not read as seconds
    assert "READY" in live["state"].astype(str).tolist()
    binary = live[live["detail"] == "binary"]
    assert binary["size"].tolist() == [5]
    assert live[live["type"] == "error"]["detail"].tolist() == [
        "peer says bad_envelope: binary frames are not wsnb frames"]
    refused = events[events["peer"] == "ws://127.0.0.1:59999/"]
    assert refused["type"].astype(str).tolist() == ["error"]  # kept, not dropped
    assert refused["detail"].iloc[0] == ("connection failed: Error in connection "
                                         "establishment: net::ERR_CONNECTION_REFUSED")
    assert refused["time"].iloc[0] == pd.Timestamp("2024-06-03 07:40:00.120", tz="UTC")
    forbidden = events[events["peer"] == "ws://127.0.0.1:8765/admin"]
    assert forbidden["detail"].tolist() == ["upgrade refused: HTTP 403 Forbidden"]
    text = events.to_csv()
    assert "PLANTED" not in text and "hello" not in text
    # written back (in seconds, as Chrome writes) and read again: the same frames
    again = wsnb.Timeline.from_har(wsnb.Timeline.from_har(PLAYWRIGHT).to_har(tmp_path / "pw.har"))
    assert frames_and_opens(again.events()).equals(frames_and_opens(events))


def test_reads_failed_and_blocked_connections_from_chrome() -> None:
    events = wsnb.Timeline.from_har(CHROME_FAILED).events()
    errors = events[events["type"] == "error"]
    assert errors["peer"].astype(str).tolist() == ["ws://127.0.0.1:59998/",
                                                   "wss://tracker.example.net/live?…"]
    assert errors["detail"].tolist() == ["connection failed: net::ERR_CONNECTION_REFUSED",
                                         "blocked: net::ERR_BLOCKED_BY_CLIENT"]
    assert errors["time"].tolist() == [pd.Timestamp("2024-06-03 08:00:00.201", tz="UTC"),
                                       pd.Timestamp("2024-06-03 08:00:00.202", tz="UTC")]
    live = events[events["peer"] == "ws://127.0.0.1:8765/"]
    assert live["type"].iloc[0] == "state" and live["state"].iloc[0] == "OPEN"
    ack = live[live["type"] == "acked"].iloc[0]
    assert ack["id"] == 1 and ack["latency_ms"] == 0.963  # seconds stay seconds
    assert (events["time"].dt.floor("D") == pd.Timestamp("2024-06-03", tz="UTC")).all()
    assert "PLANTED" not in events.to_csv()


def test_reads_a_firefox_export() -> None:
    """Firefox writes no _webSocketMessages: upgrade requests only, local time offsets."""
    events = wsnb.Timeline.from_har(FIREFOX).events()
    assert events["type"].astype(str).tolist() == ["state", "error"]
    assert events["peer"].astype(str).tolist() == ["wss://chat.example.org/ws?…",
                                                   "ws://chat.example.org:8080/fallback"]
    assert events["time"].tolist() == [pd.Timestamp("2024-06-03 08:20:00.315", tz="UTC"),
                                       pd.Timestamp("2024-06-03 08:20:01.020", tz="UTC")]
    assert events["state"].iloc[0] == "OPEN"
    assert events["detail"].iloc[1] == "connection failed: no HTTP response (status 0)"
    # an upgrade recognised by its header and status alone (http(s) URL, no extension fields)
    doc = json.loads(FIREFOX.read_text())
    doc["log"]["entries"][0]["request"]["url"] = "https://chat.example.org/ws"
    assert har.read_har(doc).events()["state"].astype(str).iloc[0] == "OPEN"


def ws_entry(times: list[float], started: str | None = "2024-06-03T07:40:00.000Z",
             url: str = LOCAL) -> dict:
    data = ['{"d":1,"id":1,"ts":0,"type":"msg","v":1,"z":0}', '{"type":"ack","id":1}']
    entry = {"_resourceType": "websocket", "request": {"url": url},
             "response": {"status": 101},
             "_webSocketMessages": [{"type": kind, "time": t, "opcode": 1, "data": d}
                                    for kind, t, d in zip(["send", "receive"], times, data,
                                                          strict=True)]}
    if started is not None:
        entry["startedDateTime"] = started
    return entry


START = pd.Timestamp("2024-06-03T07:40:00Z").timestamp()


@pytest.mark.parametrize("times, started", [
    ([START + 0.5, START + 0.500963], "2024-06-03T07:40:00.000Z"),  # Chrome: seconds
    ([(START + 0.5) * 1000, (START + 0.500963) * 1000], "2024-06-03T07:40:00.000Z"),  # Playwright
    ([(START + 0.5) * 1000, (START + 0.500963) * 1000], "2024-06-03T09:40:00.000+02:00"),
    ([START + 0.5, START + 0.500963], None),  # no startedDateTime: by magnitude
    ([(START + 0.5) * 1000, (START + 0.500963) * 1000], None),
    ([START + 0.5, START + 0.500963], "2024-06-03T07:40:00"),  # no offset: read as UTC
    ([(START + 0.5) * 1000, (START + 0.500963) * 1000], "2024-06-01T22:00:00.000Z"),  # days on
], ids=["s", "ms", "ms-local-offset", "s-no-start", "ms-no-start", "s-naive", "ms-long-session"])
def test_seconds_or_milliseconds_is_decided_per_entry(times, started) -> None:
    events = har.read_har({"log": {"entries": [ws_entry(times, started)]}}).events()
    frames = events[events["type"].isin(["sent", "acked"])]
    assert frames["time"].tolist() == [pd.Timestamp("2024-06-03 07:40:00.500", tz="UTC"),
                                       pd.Timestamp("2024-06-03 07:40:00.500963", tz="UTC")]
    assert frames["latency_ms"].tolist()[1] == 0.963


def test_one_file_can_mix_seconds_and_milliseconds() -> None:
    """Merged HARs exist (a devtools export plus a Playwright one): each entry decides."""
    doc = {"log": {"entries": [ws_entry([START + 1, START + 1.002]),
                               ws_entry([(START + 2) * 1000, (START + 2.004) * 1000],
                                        url="ws://other:1/")]}}
    acks = har.read_har(doc).events().query("type == 'acked'")
    assert acks["latency_ms"].tolist() == [2.0, 4.0]
    assert acks["time"].dt.floor("D").nunique() == 1


def write(tmp_path: Path, text: str | bytes) -> Path:
    path = tmp_path / "bad.har"
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)
    return path


@pytest.mark.parametrize("content, message", [
    ("", r"not a HAR file: .*bad\.har is not JSON \(Expecting value at line 1 column 1\)"),
    ("<html>Sign in</html>", r"not a HAR file: .*bad\.har is not JSON"),
    (b"\xff\xfe{\x00", r"not a HAR file: .*bad\.har is not UTF-8 text"),
    ("[]", r"not a HAR file: the top level is a list, not an object with a 'log'"),
    ("{}", r"not a HAR file: no 'log' object at the top level"),
    ('{"log": []}', r"not a HAR file: 'log' is a list, not an object"),
    ('{"log": {}}', r"not a HAR file: no log.entries"),
    ('{"log": {"entries": {}}}', r"not a HAR file: log.entries is an object, not a list"),
])
def test_garbage_files_say_what_is_wrong(tmp_path, content, message) -> None:
    with pytest.raises(ValueError, match=message):
        wsnb.Timeline.from_har(write(tmp_path, content))


@pytest.mark.parametrize("entry, message", [
    ({"_resourceType": "websocket", "startedDateTime": "2024-06-03T07:40:00Z"},
     r"log.entries\[1\]: a WebSocket entry without request.url"),
    ({**ws_entry([START, START + 1]), "startedDateTime": "yesterday"},
     r"log.entries\[1\] \(ws://localhost:8765/\): startedDateTime 'yesterday' is not an ISO "
     r"8601 date"),
    ({**ws_entry([START, START + 1]), "_webSocketMessages": {"type": "send"}},
     r"log.entries\[1\] \(ws://localhost:8765/\): _webSocketMessages is an object, not a list"),
    (ws_entry([1573.25, 1573.5]),  # a monotonic clock, not epoch times
     r"log.entries\[1\] \(ws://localhost:8765/\): _webSocketMessages times \(median 1573.38\) "
     r"are neither epoch seconds nor epoch milliseconds near startedDateTime "
     r"\(2024-06-03T07:40:00.000000Z\)"),
    (ws_entry([1573.25, 1573.5], started=None),
     r"no startedDateTime, and the _webSocketMessages times \(median 1573.38\) are not epoch"),
    ({"_resourceType": "websocket", "request": {"url": "wss://x.example/?k=SECRET"},
      "response": {"status": 0}},
     r"log.entries\[1\] \(wss://x.example/\?…\): no startedDateTime and no timed messages"),
])
def test_unreadable_websocket_entries_are_named(entry, message) -> None:
    doc = {"log": {"entries": [{"request": {"url": "https://example.com/"}}, entry]}}
    with pytest.raises(ValueError, match=message) as caught:
        har.read_har(doc)
    assert "SECRET" not in str(caught.value)


def test_controls_and_timeless_messages() -> None:
    """Playwright's omitTiming writes time -1: such messages are skipped, the entry kept."""
    entry = ws_entry([START + 1, START + 1.5])
    entry["_webSocketMessages"] += [
        {"type": "receive", "time": -1, "opcode": 1, "data": "x"},
        {"type": "receive", "time": START + 2, "opcode": 9, "data": ""},
        {"type": "receive", "time": START + 3, "opcode": 8, "data": ""},
    ]
    entry["response"]["_failureText"] = "WebSocket frame error: https://x.example/?t=SECRET"
    events = har.read_har({"log": {"entries": [entry]}}).events()
    assert events["type"].astype(str).tolist() == ["state", "sent", "acked", "close", "error"]
    assert events["detail"].iloc[-1] == "connection error: WebSocket frame error: " \
                                        "https://x.example/?…"
    timeless = har.read_har({"log": {"entries": [ws_entry([-1, -1])]}}).events()
    assert timeless["type"].astype(str).tolist() == ["state"]


# ----- a real browser: Playwright records the HAR of a Chromium page ---------------------

PLAYWRIGHT_PAGE_JS = """
async ([url, dead, handshake]) => {
  const talk = (u, first) => new Promise(done => {
    const ws = new WebSocket(u);
    const got = [];
    ws.onopen = () => ws.send(first);
    ws.onmessage = e => {
      const m = JSON.parse(e.data);
      got.push(m);
      if (m.type === 'handshake_ack')
        ws.send(JSON.stringify({type: 'msg', v: 1, id: 1, ts: Date.now(), z: 0,
                                d: {hello: 'from chromium'}}));
      if (m.type === 'ack') ws.close(1000);
    };
    ws.onclose = e => done({code: e.code, got});
  });
  const refused = await talk(dead, '');
  const session = await talk(url, handshake);
  return [refused, session];
}
"""


def article_handshake() -> str:
    """The article's handshake, plus the "v" the server needs if it insists on one."""
    article = '{"type":"handshake","token":null}'
    try:
        wsnb.protocol.envelope.parse_frame(article)
    except wsnb.errors.ProtocolError:
        return '{"type":"handshake","v":1,"token":null}'
    return article


async def test_playwright_har_of_a_chromium_session_round_trips(tmp_path) -> None:
    playwright = pytest.importorskip("playwright.async_api")
    chromium = Path("/usr/bin/chromium")
    if not chromium.exists():
        pytest.skip("no Chromium at /usr/bin/chromium: the Playwright HAR round trip needs it")
    import socket

    path = tmp_path / "playwright.har"
    with socket.socket() as dead:  # bound, never listening: connections to it are refused
        dead.bind(("127.0.0.1", 0))
        dead_url = f"ws://127.0.0.1:{dead.getsockname()[1]}/"
        before = time.time()
        async with wsnb.Server(port=0, heartbeat_ms=0) as srv, \
                playwright.async_playwright() as pw:
            browser = await pw.chromium.launch(
                executable_path=str(chromium),
                args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"])
            try:
                context = await browser.new_context(record_har_path=str(path))
                page = await context.new_page()
                closed: list[asyncio.Future] = []

                def watch(ws) -> None:  # the HAR recorder saw a frame before we hear of it
                    done = asyncio.get_running_loop().create_future()
                    ws.on("close", lambda _ws: done.done() or done.set_result(None))
                    closed.append(done)

                page.on("websocket", watch)
                got = await page.evaluate(PLAYWRIGHT_PAGE_JS,
                                          [srv.url, dead_url, article_handshake()])
                await asyncio.wait_for(asyncio.gather(*closed), 10)
                await context.close()  # writes the HAR
            finally:
                await browser.close()
        after = time.time()
    assert got[0] == {"code": 1006, "got": []}
    assert [m["type"] for m in got[1]["got"]] == ["handshake_ack", "ack"], got
    assert srv.delivered == [{"hello": "from chromium"}]
    assert len(closed) == 2
    doc = json.loads(path.read_text())
    assert doc["log"]["creator"]["name"] == "Playwright"
    stamps = [m["time"] for e in doc["log"]["entries"] for m in e.get("_webSocketMessages", [])]
    assert stamps and min(stamps) > 1e12  # Playwright's milliseconds, the case this is about

    tl = wsnb.Timeline.from_har(path)
    events = tl.events()
    assert set(events["peer"].astype(str)) == {dead_url, srv.url + "/"}
    seconds = (events["time"] - pd.Timestamp(0, tz="UTC")) / pd.Timedelta(1, "s")
    assert ((seconds > before - 60) & (seconds < after + 60)).all(), events["time"]
    assert events["time"].is_monotonic_increasing
    refused = events[events["peer"] == dead_url]
    assert refused["type"].astype(str).tolist() == ["error"]
    assert refused["detail"].iloc[0].startswith("connection failed: ")
    assert "ERR_CONNECTION_REFUSED" in refused["detail"].iloc[0]
    live = events[events["peer"] == srv.url + "/"]
    assert live["state"].iloc[0] == "OPEN" and "READY" in live["state"].astype(str).tolist()
    sent = live[(live["type"] == "sent") & live["id"].notna()]
    assert sent["id"].tolist() == [1]
    acks = live[live["type"] == "acked"]
    assert acks["id"].tolist() == [1] and acks["size"].tolist() == sent["size"].tolist()
    latency = acks["latency_ms"].iloc[0]
    assert 0 <= latency < 10_000, latency  # milliseconds, not milliseconds x 1000
    assert sent["time"].iloc[0] <= acks["time"].iloc[0]

    again = wsnb.Timeline.from_har(tl.to_har(tmp_path / "again.har"))
    assert frames_and_opens(again.events()).equals(frames_and_opens(events))
    assert "from chromium" not in events.to_csv()
