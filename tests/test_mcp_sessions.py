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
from asgiref.sync import sync_to_async
import pytest
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client

from conftest import ARTIFACTS, ROOT, free_port, wait_until
from marketdata.cache import book_key, get_redis
from marketdata.services import exchange_info_sync
from risk.models import AuditEvent, RiskLimit
from risk.services import agent_token_create, agent_token_revoke
from trading.models import Account, Order
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


def rpc(base, token, method, params=None, sid=None, id=1, headers=None):
    """One JSON-RPC request POSTed to ``base``/mcp; the httpx response."""
    body = {"jsonrpc": "2.0", "method": method, "params": params or {}}
    if id is not None:
        body["id"] = id
    h = {"Authorization": f"Bearer {token}", "Accept": "application/json, text/event-stream", **(headers or {})}
    if sid:
        h["Mcp-Session-Id"] = sid
    return httpx.post(base + "/mcp", json=body, headers=h, timeout=30)


def open_session(base, token, capabilities=None) -> str:
    resp = rpc(base, token, "initialize", {"protocolVersion": "2025-06-18", "capabilities": capabilities or {},
                                           "clientInfo": {"name": "t", "version": "1"}})
    assert resp.status_code == 200, resp.text
    sid = resp.headers["mcp-session-id"]
    assert rpc(base, token, "notifications/initialized", sid=sid, id=None).status_code == 202
    return sid


async def read_events(base, token, sid, until, last_event_id=None, timeout=30):
    """Open the session's GET stream on ``base`` and collect its SSE events (``(id, message)``)
    until ``until(events)`` holds; then drop the stream."""
    from httpx_sse import aconnect_sse

    headers = {"Authorization": f"Bearer {token}", "Accept": "text/event-stream", "Mcp-Session-Id": sid}
    if last_event_id:
        headers["Last-Event-ID"] = last_event_id
    events = []
    async with httpx.AsyncClient(timeout=httpx.Timeout(timeout)) as http:
        async with aconnect_sse(http, "GET", base + "/mcp", headers=headers) as source:
            assert source.response.status_code == 200
            async for sse in source.aiter_sse():
                if sse.data:
                    events.append((sse.id, json.loads(sse.data)))
                if until(events):
                    return events
    return events


def order_ids(events):
    return [m["params"]["value"]["data"].get("clientOrderId") for _, m in events
            if m.get("method") == "notifications/resources/updated" and m["params"]["value"].get("kind") == "order"]


def test_two_workers_and_last_event_id_resume_after_a_dropped_stream(live, second_web, trader):
    """initialize on one worker; subscribe and call on the other; the GET stream on the first;
    after it drops, orders placed meanwhile come back on a GET with Last-Event-ID on the second."""
    _, account, token = trader
    a, b = live.base_url, second_web
    sid = open_session(a, token)
    uri = f"tradingmcp://accounts/{account.pk}/orders/open"
    assert rpc(b, token, "resources/subscribe", {"uri": uri}, sid=sid).json() == {"jsonrpc": "2.0", "id": 1, "result": {}}

    def place(base, cid):
        resp = rpc(base, token, "tools/call", {"name": "place_order", "arguments": {
            "symbol": "BTCUSDT", "side": "BUY", "quantity": "0.002", "client_order_id": cid}}, sid=sid)
        assert resp.status_code == 200 and not resp.json()["result"]["isError"], resp.text

    async def first_stream():
        reader = asyncio.create_task(read_events(a, token, sid, lambda ev: "two-1" in order_ids(ev)))
        await asyncio.sleep(0.5)
        await asyncio.to_thread(place, b, "two-1")
        return await reader

    first = run(first_stream())
    last_id = [eid for eid, m in first if m.get("method") == "notifications/resources/updated"][-1]
    assert last_id.startswith(sid + "/")
    place(b, "two-2")  # the stream is down: the pump on the first worker keeps storing
    place(a, "two-3")
    resumed = run(read_events(b, token, sid, lambda ev: {"two-2", "two-3"} <= set(order_ids(ev)), last_event_id=last_id))
    ids = order_ids(resumed)
    assert "two-1" not in ids and ids.index("two-2") < ids.index("two-3")
    assert [eid for eid, _ in resumed] == sorted(eid for eid, _ in resumed)


def test_a_session_belongs_to_its_token(live, trader, make_user):
    _, _, token = trader
    sid = open_session(live.base_url, token)
    other = make_user("mallory")
    account_create(owner=other, name="M")
    _, other_token = agent_token_create(user=other, name="m")
    _, same_user_token = agent_token_create(user=trader[0], name="second token")
    for key in (other_token, same_user_token):
        assert rpc(live.base_url, key, "ping", sid=sid).status_code == 404
        assert httpx.get(live.base_url + "/mcp", headers={"Authorization": f"Bearer {key}", "Accept": "text/event-stream",
                                                          "Mcp-Session-Id": sid}).status_code == 404
        assert httpx.delete(live.base_url + "/mcp", headers={"Authorization": f"Bearer {key}", "Mcp-Session-Id": sid}).status_code == 404
    # the owner's session is untouched; unknown ids are 404, a GET/DELETE without one 400
    assert rpc(live.base_url, token, "ping", sid=sid).json()["result"] == {}
    assert rpc(live.base_url, token, "ping", sid="0" * 32).status_code == 404
    h = {"Authorization": f"Bearer {token}", "Accept": "text/event-stream"}
    assert httpx.get(live.base_url + "/mcp", headers=h).status_code == 400
    assert httpx.delete(live.base_url + "/mcp", headers=h).status_code == 400
    # subscribing needs a session; another user's account is not found; stateless calls still work
    assert rpc(live.base_url, token, "resources/subscribe", {"uri": TICKER}).status_code == 400
    theirs = Account.objects.filter(owner=other).first()
    denied = rpc(live.base_url, token, "resources/subscribe", {"uri": f"tradingmcp://accounts/{theirs.pk}"}, sid=sid).json()
    assert denied["error"]["code"] == -32002 and "not found" in denied["error"]["message"]
    bad = rpc(live.base_url, token, "resources/subscribe", {"uri": "tradingmcp://markets/NOPE1/ticker"}, sid=sid).json()
    assert bad["error"]["code"] == -32602 and "NOPE1" in bad["error"]["message"]
    assert not rpc(live.base_url, token, "tools/call", {"name": "get_ticker", "arguments": {"symbol": "BTCUSDT"}}).json()["result"]["isError"]
    assert rpc(live.base_url, token, "logging/setLevel", {"level": "info"}).json()["result"] == {}
    # DELETE ends it
    assert httpx.delete(live.base_url + "/mcp", headers={**h, "Mcp-Session-Id": sid}).status_code == 200
    assert rpc(live.base_url, token, "ping", sid=sid).status_code == 404


def test_set_level_filters_risk_warnings_and_progress_reaches_the_caller(live, trader):
    _, account, token = trader
    RiskLimit.objects.update_or_create(account=account, defaults={"max_orders_per_minute": 3})

    async def scenario():
        seen, arrived, on_message = updates_collector()
        progress = []

        async def on_progress(done, total, message):
            progress.append((done, total, message))

        async with client(token) as http, streamable_http_client(live.base_url + "/mcp", http_client=http) as (read, write, _):
            async with ClientSession(read, write, message_handler=on_message) as session:
                await session.initialize()
                await session.set_logging_level("error")  # risk warnings are "warning": below it
                for cid in ("lvl-1", "lvl-2", "lvl-3"):
                    r = await session.call_tool("place_order", {"symbol": "BTCUSDT", "side": "BUY", "quantity": "0.002",
                                                                "client_order_id": cid})
                    assert not r.isError, r
                await asyncio.sleep(1)
                quiet = list(seen["log"])
                await session.set_logging_level("warning")
                await sync_to_async(lambda: RiskLimit.objects.filter(account=account).update(max_orders_per_minute=4))()
                r = await session.call_tool("place_order", {"symbol": "BTCUSDT", "side": "BUY", "quantity": "0.002",
                                                            "client_order_id": "lvl-4"})
                assert not r.isError, r
                await wait_for(arrived, lambda: seen["log"])
                end = live.replay.clock.now_ms() - 10 * 60_000
                klines = await session.call_tool("get_klines", {"symbol": "BTCUSDT", "interval": "1m", "limit": 5, "end_time": end},
                                                 progress_callback=on_progress)
                assert not klines.isError
                return quiet, seen["log"], progress

    quiet, logged, progress = run(scenario())
    assert quiet == []
    warning = logged[0]
    assert warning["level"] == "warning" and warning["logger"] == "tradingmcp.risk"
    assert warning["data"]["limit"] == "max_orders_per_minute" and warning["data"]["account"] == account.pk
    assert warning["data"]["pct"] >= 80 and warning["data"]["max"].startswith("4")
    assert progress[0][:2] == (0, 5) and progress[-1][:2] == (5, 5)


def test_elicitation_confirms_or_drops_a_confirm_mode_order(live, trader):
    user, account, _ = trader
    _, token = agent_token_create(user=user, name="confirming agent", confirm_orders=True)
    asked = []
    answers = iter([mt.ElicitResult(action="accept", content={"confirm": True}), mt.ElicitResult(action="decline")])

    async def on_elicit(context, params):
        asked.append(params.message)
        return next(answers)

    async def scenario():
        async with client(token) as http, streamable_http_client(live.base_url + "/mcp", http_client=http) as (read, write, _):
            async with ClientSession(read, write, elicitation_callback=on_elicit) as session:
                await session.initialize()
                yes = await session.call_tool("place_order", {"symbol": "BTCUSDT", "side": "BUY", "quantity": "0.002",
                                                              "client_order_id": "chat-yes"})
                no = await session.call_tool("place_order", {"symbol": "BTCUSDT", "side": "BUY", "quantity": "0.002",
                                                             "client_order_id": "chat-no"})
                return json.loads(yes.content[0].text), json.loads(no.content[0].text)

    yes, no = run(scenario())
    assert len(asked) == 2 and "BUY" in asked[0] and "0.002" in asked[0] and "estimated notional" in asked[0]
    assert "passes the risk limits" in asked[0]
    booked = Order.objects.get(account=account, client_order_id="chat-yes")
    assert yes["confirmedInChat"] and yes["orderId"] == booked.pk and yes["status"] == booked.status
    assert no["status"] == "REJECTED" and no["decision"] == "decline"
    assert not Order.objects.filter(client_order_id="chat-no").exists()
    from risk.audit import audit_drain

    audit_drain()
    actions = set(AuditEvent.objects.filter(account=account).values_list("action", flat=True))
    assert {"order.hold", "order.approve", "order.reject"} <= actions
    rejected = AuditEvent.objects.get(action="order.reject")
    assert "decline in the chat" in rejected.params["note"]
    # A client without the capability keeps the approval queue.
    plain = rpc(live.base_url, token, "tools/call", {"name": "place_order", "arguments": {
        "symbol": "BTCUSDT", "side": "BUY", "quantity": "0.002", "client_order_id": "queued"}}).json()
    assert json.loads(plain["result"]["content"][0]["text"])["status"] == "PENDING_APPROVAL"


def test_revoking_the_token_ends_the_session_stream(live, trader):
    user, account, _ = trader
    row, token = agent_token_create(user=user, name="to revoke")
    sid = open_session(live.base_url, token)
    assert rpc(live.base_url, token, "resources/subscribe", {"uri": f"tradingmcp://accounts/{account.pk}"}, sid=sid).status_code == 200

    async def scenario():
        reader = asyncio.create_task(read_events(live.base_url, token, sid, lambda ev: False))
        await asyncio.sleep(1)
        await sync_to_async(agent_token_revoke)(token=row)
        return await asyncio.wait_for(reader, 20)  # the server ends the stream

    assert run(scenario()) == []
    assert rpc(live.base_url, token, "ping", sid=sid).status_code == 401
