"""Sessions on ``/mcp`` (streamable HTTP, ``mcpapi.sessions``): the ``mcp`` SDK's own client
(``ClientSession`` over ``streamable_http_client``, which keeps ``Mcp-Session-Id`` and opens the GET
stream) against the production web server and the ingester as real processes (``conftest.stack``),
with a second web process on the same Redis and database for the cross-worker cases.
"""
import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import mcp.types as mt
import pytest
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client

from conftest import ARTIFACTS, ROOT, free_port, wait_until
from marketdata.cache import book_key, get_redis
from marketdata.services import exchange_info_sync
from risk.models import AuditEvent, RiskLimit
from risk.services import agent_token_create, agent_token_revoke
from trading.models import Order
from trading.services import account_create

pytestmark = [pytest.mark.django_db(transaction=True)]

TICKER = "tradingmcp://markets/BTCUSDT/ticker"


def run(coro, timeout=90):
    return asyncio.run(asyncio.wait_for(coro, timeout))


@pytest.fixture
def live(stack, trader):
    """The stack with exchangeInfo stored and the ingester's first quote cached."""
    import time

    from marketdata.cache import streams_version_key

    get_redis().set(streams_version_key(), time.time_ns())
    exchange_info_sync()
    wait_until(lambda: get_redis().get(book_key("BTCUSDT")), timeout=30, what="the ingester's first BTCUSDT quote")
    return stack


@pytest.fixture(scope="session")
def second_web(stack):
    """A second web server process on the same database and Redis (another worker)."""
    from trading.management.commands.runstack import web_server_command

    port = free_port()
    log = open(ARTIFACTS / "web2.log", "w")
    proc = subprocess.Popen(web_server_command(Path(sys.executable).parent, "127.0.0.1", port).split(), cwd=ROOT,
                            env={**stack.env, "PUBLIC_BASE_URL": stack.base_url}, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    wait_until(lambda: httpx.get(url + "/login/", timeout=2).status_code == 200, timeout=30, what="the second web server")
    yield url
    proc.terminate()
    try:
        proc.wait(timeout=3)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


class Split(httpx.AsyncBaseTransport):
    """Sends POSTs to one web process and GET/DELETE to another: the SDK client's session
    spans two workers."""

    def __init__(self, get_base: str):
        self.inner = httpx.AsyncHTTPTransport()
        self.get_url = httpx.URL(get_base)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.method != "POST":
            request.url = request.url.copy_with(port=self.get_url.port)
        return await self.inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self.inner.aclose()


def client(token, transport=None, timeout=30):
    return httpx.AsyncClient(headers={"Authorization": f"Bearer {token}"}, transport=transport,
                             timeout=httpx.Timeout(timeout, read=120))


def updates_collector():
    """A ``message_handler`` collecting resources/updated and log notifications, and an event set
    on each."""
    seen = {"updated": [], "log": []}
    arrived = asyncio.Event()

    async def on_message(message):
        if isinstance(message, mt.ServerNotification):
            if isinstance(message.root, mt.ResourceUpdatedNotification):
                seen["updated"].append(message.root.params.model_dump(mode="json"))
                arrived.set()
            elif isinstance(message.root, mt.LoggingMessageNotification):
                seen["log"].append(message.root.params.model_dump(mode="json"))
                arrived.set()

    return seen, arrived, on_message


async def wait_for(arrived: asyncio.Event, predicate, timeout=30):
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        left = deadline - asyncio.get_running_loop().time()
        if left <= 0:
            raise AssertionError("timed out waiting for notifications")
        arrived.clear()
        try:
            await asyncio.wait_for(arrived.wait(), left)
        except asyncio.TimeoutError:
            pass


def test_sdk_client_session_subscribes_to_tickers_and_account_orders(live, trader):
    _, account, token = trader
    orders_uri = f"tradingmcp://accounts/{account.pk}/orders/open"

    async def scenario():
        seen, arrived, on_message = updates_collector()
        async with client(token) as http, streamable_http_client(live.base_url + "/mcp", http_client=http) as (read, write, sid):
            async with ClientSession(read, write, message_handler=on_message) as session:
                init = await session.initialize()
                assert init.capabilities.resources.subscribe and init.capabilities.logging is not None
                assert sid() and len(sid()) == 32
                await session.subscribe_resource(TICKER)
                await session.subscribe_resource(orders_uri)
                await wait_for(arrived, lambda: any(u["uri"] == TICKER for u in seen["updated"]))
                order = await session.call_tool("place_order", {"symbol": "BTCUSDT", "side": "BUY", "quantity": "0.002",
                                                                "client_order_id": "sess-buy-1"})
                assert not order.isError, order
                await wait_for(arrived, lambda: any(u["uri"] == orders_uri for u in seen["updated"]))
                await session.unsubscribe_resource(TICKER)
                return sid(), seen, json.loads(order.content[0].text)

    sid, seen, order = run(scenario())
    ticks = [u for u in seen["updated"] if u["uri"] == TICKER]
    assert ticks[0]["value"]["symbol"] == "BTCUSDT" and ticks[0]["value"]["askPrice"]
    pushed = [u for u in seen["updated"] if u["uri"].endswith("/orders/open")]
    assert pushed[-1]["value"]["kind"] == "order" and pushed[-1]["value"]["data"]["orderId"] == order["orderId"]
    # The SDK client ended the session (DELETE) when it closed: the id is gone.
    resp = httpx.post(live.base_url + "/mcp", json={"jsonrpc": "2.0", "id": 1, "method": "ping"}, headers={
        "Authorization": f"Bearer {token}", "Accept": "application/json, text/event-stream", "Mcp-Session-Id": sid})
    assert resp.status_code == 404
