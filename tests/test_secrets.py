"""Tokens and HMAC keys never leak: issue 2, point 11."""

from __future__ import annotations

import logging

import pytest

import wsnb

TOKEN = "tok-PLANTED-7f3a"
SECRET = "key-PLANTED-91bd"


async def test_secrets_never_reach_any_output(caplog, capsys, make_client) -> None:
    caplog.set_level(logging.DEBUG)  # even websockets' frame-level debug logging
    texts: list[str] = []
    async with wsnb.Server(port=0, token=TOKEN, secret=SECRET, heartbeat_ms=100) as srv, \
            wsnb.FaultProxy(srv.url) as proxy:
        client = make_client(proxy.url, token=TOKEN, secret=SECRET)
        await client.connect(timeout=5)
        await (await client.send({"hello": 1})).wait(5)
        await srv.send(client.session_id, {"back": 1})
        assert await client.recv(timeout=5) == {"back": 1}
        proxy.cut()
        await client.wait_until(lambda c: c.reconnects >= 1 and c.ready, timeout=5)
        wrong = make_client(srv.url, token=TOKEN[::-1], secret=SECRET)
        with pytest.raises(wsnb.AuthError) as refused:
            await wrong.connect(timeout=5)
        texts.append(str(refused.value))
        forged = make_client(srv.url, token=TOKEN, secret=SECRET[::-1])
        await forged.connect(timeout=5)
        with pytest.raises(wsnb.Refused) as nacked:
            await (await forged.send({"x": 1})).wait(5)
        texts.append(str(nacked.value))
        texts += [repr(client), repr(srv), repr(proxy), repr(wrong), str(vars(client)),
                  str(vars(srv)), repr(next(iter(srv.sessions.values())))]
        for timeline in (client.timeline, srv.timeline, wrong.timeline, forged.timeline):
            texts.append(timeline.events().to_csv())
    out, err = capsys.readouterr()
    texts += [out, err, caplog.text]
    for text in texts:
        assert TOKEN not in text and SECRET not in text
        assert TOKEN[::-1] not in text and SECRET[::-1] not in text


def test_token_in_url_query_is_masked() -> None:
    client = wsnb.Client(f"ws://user:{SECRET}@127.0.0.1:1/room?id=5&token={TOKEN}")
    for text in (client.url, repr(client), str(vars(client))):
        assert TOKEN not in text and SECRET not in text
    assert client.url == "ws://127.0.0.1:1/room?id=5&token=***"
