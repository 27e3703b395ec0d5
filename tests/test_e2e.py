"""End to end on real processes: replay exchange → ingester → Redis → web server (/mcp, Channels).

An agent with the official ``mcp`` SDK client lists tools, reads the ticker (equal to the replay's
best quote), buys 0.002 BTCUSDT, and the fill, balances (to the satoshi, fee included) and audit
event are checked in the database, while a browser-like WebSocket client logged in as the same user
receives the order without polling.
"""
import asyncio
import json
from decimal import Decimal

import httpx
import pytest
import websockets
from django.conf import settings
from django.http import HttpRequest
from django.test import Client
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client

from conftest import wait_until
from core.redis import get_redis
from marketdata.cache import book_key, loads
from marketdata.services import exchange_info_sync
from risk.models import AuditEvent
from trading.models import Balance, Fill, Order

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]
E8 = Decimal("0.00000001")


def session_cookie(username: str, password: str) -> str:
    client = Client()
    assert client.login(request=HttpRequest(), username=username, password=password)  # django-axes needs the request
    return client.cookies[settings.SESSION_COOKIE_NAME].value


async def agent_buys(base_url: str, token: str) -> tuple[list[str], dict, dict]:
    http = httpx.AsyncClient(headers={"Authorization": f"Bearer {token}"}, timeout=30)
    async with http, streamable_http_client(f"{base_url}/mcp", http_client=http) as (read, write, _):
        async with ClientSession(read, write) as session:
            await session.initialize()
            tools = [t.name for t in (await session.list_tools()).tools]
            ticker = await session.call_tool("get_ticker", {"symbol": "BTCUSDT"})
            order = await session.call_tool(
                "place_order", {"symbol": "BTCUSDT", "side": "BUY", "quantity": "0.002", "client_order_id": "e2e-buy-1"}
            )
            assert not ticker.isError and not order.isError, (ticker, order)
            return tools, json.loads(ticker.content[0].text), json.loads(order.content[0].text)


async def watch_dashboard(base_url: str, cookie: str, ready: asyncio.Event) -> dict:
    ws_url = base_url.replace("http://", "ws://") + "/ws/dashboard/"
    headers = {"Cookie": f"{settings.SESSION_COOKIE_NAME}={cookie}", "Origin": base_url}
    async with websockets.connect(ws_url, additional_headers=headers) as ws:
        hello = json.loads(await ws.recv())
        assert hello["type"] == "hello"
        ready.set()
        while True:
            msg = json.loads(await asyncio.wait_for(ws.recv(), timeout=20))
            if msg["type"] == "account" and msg["kind"] == "order":
                return msg


async def scenario(base_url, token, cookie):
    ready = asyncio.Event()
    watcher = asyncio.create_task(watch_dashboard(base_url, cookie, ready))
    await asyncio.wait_for(ready.wait(), 10)
    agent = await agent_buys(base_url, token)
    pushed = await asyncio.wait_for(watcher, 20)
    return agent, pushed


def test_agent_buys_through_mcp_and_the_dashboard_socket_sees_it(stack, trader):
    user, account, token = trader
    exchange_info_sync()
    r = get_redis()
    wait_until(lambda: r.get(book_key("BTCUSDT")), timeout=20, what="the ingester's first BTCUSDT quote")

    # Freeze the replay clock, let the last events drain, and read the venue's own best quote.
    stack.replay.clock.pause()
    try:
        import time

        time.sleep(0.6)
        venue_book = httpx.get(f"{stack.replay.api_url}/v3/ticker/bookTicker", params={"symbol": "BTCUSDT"}).json()
        wait_until(lambda: loads(r.get(book_key("BTCUSDT")))["askPrice"] == venue_book["askPrice"], timeout=5,
                   what="the cache to hold the venue's current quote")
        cookie = session_cookie("alice", "pw-for-tests-1")
        (tools, ticker, order), pushed = asyncio.run(scenario(stack.base_url, token, cookie))
    finally:
        stack.replay.clock.resume()

    assert {"get_ticker", "get_klines", "get_account", "place_order", "list_orders"} <= set(tools)
    assert (ticker["bidPrice"], ticker["askPrice"]) == (venue_book["bidPrice"], venue_book["askPrice"])

    ask = Decimal(venue_book["askPrice"])
    cost = (ask * Decimal("0.002")).quantize(E8)
    db_order = Order.objects.get(account=account, client_order_id="e2e-buy-1")
    fill = Fill.objects.get(order=db_order)
    assert db_order.status == "FILLED" and order["status"] == "FILLED"
    assert fill.price == ask and fill.qty == Decimal("0.002") and fill.commission == Decimal("0.000002")
    assert {b.asset: b.free for b in Balance.objects.filter(account=account)} == {
        "USDT": Decimal("10000") - cost,
        "BTC": Decimal("0.001998"),
    }
    event = AuditEvent.objects.get(action="order.place", account=account)
    assert event.outcome == "ok" and event.channel == "mcp" and event.actor_token.name == "alice-agent"

    assert pushed["account"] == account.pk and pushed["data"]["clientOrderId"] == "e2e-buy-1"
    assert pushed["data"]["status"] == "FILLED"


def test_dashboard_socket_refuses_anonymous_and_other_users_events(stack, trader, make_user):
    """Bob's socket joins only Bob's groups: Alice's order never reaches it."""
    from trading.services import account_create

    user, account, token = trader
    exchange_info_sync()
    r = get_redis()
    wait_until(lambda: r.get(book_key("BTCUSDT")), timeout=20, what="a BTCUSDT quote")
    bob = make_user("bob")
    account_create(owner=bob, name="Bob paper")
    bob_cookie = session_cookie("bob", "pw-for-tests-1")

    async def run():
        ws_url = stack.base_url.replace("http://", "ws://") + "/ws/dashboard/"
        with pytest.raises(websockets.exceptions.ConnectionClosed) as closed:
            async with websockets.connect(ws_url, additional_headers={"Origin": stack.base_url}) as ws:
                await asyncio.wait_for(ws.recv(), 5)
        assert closed.value.rcvd.code == 4401
        headers = {"Cookie": f"{settings.SESSION_COOKIE_NAME}={bob_cookie}", "Origin": stack.base_url}
        async with websockets.connect(ws_url, additional_headers=headers) as ws:
            hello = json.loads(await ws.recv())
            assert account.pk not in hello["accounts"]
            await agent_buys(stack.base_url, token)
            seen = []
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 3  # market data never stops: listen for a fixed time
            while (left := deadline - loop.time()) > 0:
                try:
                    seen.append(json.loads(await asyncio.wait_for(ws.recv(), left)))
                except asyncio.TimeoutError:
                    break
            return seen

    seen = asyncio.run(run())
    assert any(m["type"] == "market" for m in seen), "Bob's socket should still get market data"
    assert not [m for m in seen if m["type"] == "account"], seen
