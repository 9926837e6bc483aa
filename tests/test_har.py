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
