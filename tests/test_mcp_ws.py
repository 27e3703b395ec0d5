"""MCP over WebSocket (``/mcp/ws``): the same tools, auth, scopes and audit as ``/mcp``, pushed
market data and account events, backpressure, and session resume.

The stack tests run the production web server and the ingester as real processes against the
replay exchange (``conftest.stack``) and talk to them with the ``mcp`` SDK's ``ClientSession``
over ``tradingmcp_client.websocket``. The backpressure test drives ``mcpapi.ws`` in-process
with a client that stops reading (an ASGI ``send`` that blocks), a real Redis channel layer and
a real token.
"""
import asyncio
import json
import uuid

import httpx
import mcp.types as mt
import pytest
import websockets
from asgiref.sync import sync_to_async
from django.conf import settings
from mcp import ClientSession

from conftest import sqlite_pass_only, wait_until
from core.redis import get_redis
from marketdata.cache import book_key
from marketdata.services import exchange_info_sync
from risk.models import AuditEvent
from risk.services import agent_token_create, agent_token_revoke
from tradingmcp_client import websocket_client
from trading.models import Order

pytestmark = [pytest.mark.django_db(transaction=True)]


def ws_url(stack) -> str:
    return stack.base_url.replace("http://", "ws://") + "/mcp/ws"


def http_rpc(stack, token, method, params=None):
    body = {"jsonrpc": "2.0", "id": 1, "method": method, "params": params or {}}
    resp = httpx.post(stack.base_url + "/mcp", json=body, timeout=30, headers={
        "Authorization": f"Bearer {token}", "Accept": "application/json, text/event-stream"})
    assert resp.status_code == 200, resp.text
    return resp.json()


async def raw_ws_rpc(ws, method, params=None, id=1):
    """Send one request frame and return its response, skipping pushed notifications."""
    await ws.send(json.dumps({"jsonrpc": "2.0", "id": id, "method": method, "params": params or {}}))
    while True:
        msg = json.loads(await asyncio.wait_for(ws.recv(), 20))
        if msg.get("id") == id:
            return msg


def run(coro, timeout=60):
    return asyncio.run(asyncio.wait_for(coro, timeout))


@pytest.fixture(autouse=True)
def _close_thread_connections():
    """The in-process tests run sync code in the tool pool and in asgiref's sync thread: close
    those threads' database connections after each test (PostgreSQL cannot drop the test
    database at the end of the run while they are open)."""
    yield
    from asgiref.sync import SyncToAsync
    from django.db import connections

    from core import workers

    workers.close_tool_connections()
    SyncToAsync.single_thread_executor.submit(connections.close_all).result(10)


@pytest.fixture
def live(stack, trader):
    """The stack with exchangeInfo stored and the ingester's first quote cached.

    ``md:streams:version`` starts at a value the ingester has never seen: conftest's Redis clean-up
    deletes it between tests, so a counter restarting at 1 could equal the last version the ingester
    saw and hide this test's subscriptions from it."""
    import time

    from marketdata.cache import streams_version_key

    get_redis().set(streams_version_key(), time.time_ns())
    exchange_info_sync()
    wait_until(lambda: get_redis().get(book_key("BTCUSDT")), timeout=30, what="the ingester's first BTCUSDT quote")
    return stack


def test_tools_list_and_calls_equal_those_over_http(live, trader):
    _, _, token = trader
    url = ws_url(live)
    args = {"symbol": "BTCUSDT", "interval": "1m", "limit": 5}

    async def scenario():
        async with websockets.connect(url, subprotocols=["mcp"], additional_headers={"Authorization": f"Bearer {token}"}) as ws:
            assert ws.subprotocol == "mcp"
            init = await raw_ws_rpc(ws, "initialize", {"protocolVersion": "2025-06-18", "capabilities": {},
                                                        "clientInfo": {"name": "t", "version": "1"}}, id=1)
            tools = await raw_ws_rpc(ws, "tools/list", id=2)
            klines = await raw_ws_rpc(ws, "tools/call", {"name": "get_klines", "arguments": {**args, "end_time": end}}, id=3)
            bad = await raw_ws_rpc(ws, "tools/call", {"name": "get_ticker", "arguments": {"symbol": "BTCUSD"}}, id=4)
            ping = await raw_ws_rpc(ws, "ping", id=5)
            resources = await raw_ws_rpc(ws, "resources/list", id=6)
            return init, tools, klines, bad, ping, resources

    end = live.replay.clock.now_ms() - 10 * 60_000
    init, tools, klines, bad, ping, resources = run(scenario())
    assert init["result"]["serverInfo"]["name"] == "TradingMCP" and init["result"]["_meta"]["tradingmcp/sessionId"]
    assert tools["result"] == http_rpc(live, token, "tools/list")["result"]
    assert len(tools["result"]["tools"]) >= 20
    assert klines["result"] == http_rpc(live, token, "tools/call", {"name": "get_klines", "arguments": {**args, "end_time": end}})["result"]
    assert not klines["result"]["isError"] and len(json.loads(klines["result"]["content"][0]["text"])["klines"]) == 5
    http_bad = http_rpc(live, token, "tools/call", {"name": "get_ticker", "arguments": {"symbol": "BTCUSD"}})
    assert bad["result"]["isError"] and bad["result"] == http_bad["result"]
    assert "Closest valid symbols: BTCUSDT" in bad["result"]["content"][0]["text"]
    assert ping["result"] == {}
    assert resources["result"] == http_rpc(live, token, "resources/list")["result"]
    # Audited like /mcp: the WAL holds mcp.get_klines entries of this token (the drainer is Celery's).
    from risk.audit import audit_drain

    audit_drain()
    assert AuditEvent.objects.filter(action="mcp.get_klines", actor_token__isnull=False).count() == 2


def test_subscriber_receives_pushed_stream_updates_and_order_events(live, trader):
    user, account, token = trader
    url = ws_url(live)

    async def scenario():
        pushes: list = []
        got_trades = asyncio.Event()
        got_order = asyncio.Event()

        async def on_message(message):
            if isinstance(message, mt.ServerNotification) and isinstance(message.root, mt.ResourceUpdatedNotification):
                params = message.root.params.model_dump(mode="json")
                pushes.append(params)
                if sum(1 for p in pushes if p.get("stream") == "btcusdt@trade") >= 3:
                    got_trades.set()
                if p_kind(params) == "order":
                    got_order.set()

        async with websocket_client(url, token=token) as (read, write, info):
            async with ClientSession(read, write, message_handler=on_message) as session:
                await session.initialize()
                sub = await session.call_tool("subscribe_stream", {"stream": "btcusdt@trade"})
                assert not sub.isError, sub
                await asyncio.wait_for(got_trades.wait(), 30)
                order = await session.call_tool("place_order", {"symbol": "BTCUSDT", "side": "BUY", "quantity": "0.002",
                                                                "client_order_id": "ws-buy-1"})
                assert not order.isError, order
                await asyncio.wait_for(got_order.wait(), 20)
                unsub = await session.call_tool("unsubscribe_stream", {"stream": "btcusdt@trade"})
                assert not unsub.isError
                return pushes, json.loads(order.content[0].text), info.session_id

    def p_kind(params):
        return params.get("kind")

    pushes, order, session_id = run(scenario())
    trades = [p for p in pushes if p.get("stream") == "btcusdt@trade"]
    assert all(p["uri"] == "binance://stream/btcusdt@trade" and p["data"]["e"] == "trade" and p["data"]["s"] == "BTCUSDT" for p in trades)
    ids = [p["data"]["t"] for p in trades]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    pushed_orders = [p for p in pushes if p.get("kind") == "order"]
    assert pushed_orders[-1]["account"] == account.pk and pushed_orders[-1]["data"]["orderId"] == order["orderId"]
    assert pushed_orders[-1]["data"]["status"] == Order.objects.get(client_order_id="ws-buy-1").status
    assert session_id


@sqlite_pass_only
def test_reconnect_with_session_id_restores_subscriptions(live, trader, make_user):
    _, _, token = trader
    url = ws_url(live)

    async def first():
        async with websocket_client(url, token=token) as (read, write, info):
            async with ClientSession(read, write) as session:
                await session.initialize()
                assert not (await session.call_tool("subscribe_stream", {"stream": "ethusdt@trade"})).isError
                return info.session_id

    async def second(session_id, key):
        got = asyncio.Event()
        seen = []

        async def on_message(message):
            if isinstance(message, mt.ServerNotification) and isinstance(message.root, mt.ResourceUpdatedNotification):
                params = message.root.params.model_dump(mode="json")
                if params.get("stream") == "ethusdt@trade":
                    seen.append(params)
                    got.set()

        async with websocket_client(url, token=key, session_id=session_id) as (read, write, info):
            async with ClientSession(read, write, message_handler=on_message) as session:
                await session.initialize()  # no subscribe_stream call on this connection
                try:
                    await asyncio.wait_for(got.wait(), 8)
                except asyncio.TimeoutError:
                    pass
                return info.session_id, seen

    session_id = run(first())
    resumed_id, seen = run(second(session_id, token))
    assert resumed_id == session_id and seen and seen[0]["data"]["s"] == "ETHUSDT"
    # Another user's token cannot take the session over: it gets a new one and no pushes.
    other = make_user("mallory")
    _, other_key = agent_token_create(user=other, name="m")
    other_id, other_seen = run(second(session_id, other_key))
    assert other_id != session_id and other_seen == []


@pytest.mark.parametrize("header", [None, "Bearer nope", "Bearer tmcp_forged0000000000000000000000000000000000"])
def test_connections_without_a_valid_token_are_closed_4401(live, header):
    url = ws_url(live)

    async def scenario():
        headers = {"Authorization": header} if header else {}
        async with websockets.connect(url, subprotocols=["mcp"], additional_headers=headers) as ws:
            if header is None:  # the first message must authenticate
                await ws.send(json.dumps({"jsonrpc": "2.0", "id": 1, "method": "tools/list"}))
                answer = json.loads(await ws.recv())
                assert answer["error"]["code"] == 4401
            with pytest.raises(websockets.ConnectionClosed) as closed:
                await asyncio.wait_for(ws.recv(), 15)
            return closed.value.rcvd.code, closed.value.rcvd.reason

    code, reason = run(scenario())
    assert code == 4401 and reason


def test_first_message_auth_scopes_and_revocation(live, trader):
    user, _, _ = trader
    row, read_only = agent_token_create(user=user, name="reader", scopes=["market:read"])
    url = ws_url(live)

    async def scenario():
        async with websockets.connect(url, subprotocols=["mcp"]) as ws:
            auth = await raw_ws_rpc(ws, "authenticate", {"token": read_only}, id="a")
            tools = await raw_ws_rpc(ws, "tools/list", id=2)
            refused = await raw_ws_rpc(ws, "tools/call", {"name": "place_order", "arguments": {
                "symbol": "BTCUSDT", "side": "BUY", "quantity": "0.002"}}, id=3)
            await sync_to_async(agent_token_revoke)(token=row)
            t0 = asyncio.get_running_loop().time()
            with pytest.raises(websockets.ConnectionClosed) as closed:  # closed at once, no request needed
                while True:
                    await asyncio.wait_for(ws.recv(), 5)
            return auth, tools, refused, asyncio.get_running_loop().time() - t0, closed.value.rcvd.code

    auth, tools, refused, after, code = run(scenario())
    assert auth["result"]["authenticated"] and auth["result"]["scopes"] == ["market:read"]
    names = {t["name"] for t in tools["result"]["tools"]}
    assert "get_ticker" in names and "place_order" not in names and "get_account" not in names
    assert refused["result"]["isError"] and "lacks the 'trade' scope" in refused["result"]["content"][0]["text"]
    assert Order.objects.count() == 0
    assert code == 4401 and after < 2.0  # revocation reaches the open socket (risk.signals)


# --- backpressure, in-process ----------------------------------------------------------------------

class SlowClient:
    """Drives ``MCPWebSocketApp`` as an ASGI server would; ``send`` blocks while ``reading`` is clear."""

    def __init__(self, app, token):
        self.app = app
        self.inbox: asyncio.Queue = asyncio.Queue()
        self.frames: list[dict] = []
        self.reading = asyncio.Event()
        self.reading.set()
        self.accepted = asyncio.Event()
        self.closed: dict | None = None
        self.scope = {"type": "websocket", "path": "/mcp/ws", "headers": [(b"host", b"localhost:8000"), (b"authorization", f"Bearer {token}".encode())],
                      "subprotocols": ["mcp"], "query_string": b"", "client": ("127.0.0.1", 1)}

    async def receive(self):
        return await self.inbox.get()

    async def send(self, message):
        if message["type"] == "websocket.accept":
            self.accepted.set()
        elif message["type"] == "websocket.send":
            await self.reading.wait()
            self.frames.append(json.loads(message["text"]))
        elif message["type"] == "websocket.close":
            self.closed = message

    async def request(self, id, method, params=None):
        await self.inbox.put({"type": "websocket.receive", "text": json.dumps({"jsonrpc": "2.0", "id": id, "method": method, "params": params or {}})})
        while not any(f.get("id") == id for f in self.frames):
            await asyncio.sleep(0.01)
        return next(f for f in self.frames if f.get("id") == id)


def test_slow_reader_gets_coalesced_market_data_but_every_order_event(symbols, trader):
    from channels_redis.core import RedisChannelLayer

    from mcpapi.ws import MCPWebSocketApp

    _, account, token = trader
    n_trades, n_events, queue = 390, 30, 16  # an order event every 13th trade

    async def scenario():
        # A channel layer of our own (unique prefix): nothing else publishes into it.
        layer = RedisChannelLayer(hosts=[settings.REDIS_URL], prefix=f"{settings.REDIS_KEY_PREFIX}t-{uuid.uuid4().hex[:6]}", capacity=5000)
        app = MCPWebSocketApp(layer=layer, market_queue=queue)
        client = SlowClient(app, token)
        await client.inbox.put({"type": "websocket.connect"})
        server = asyncio.create_task(app(client.scope, client.receive, client.send))
        await asyncio.wait_for(client.accepted.wait(), 10)
        sub = await client.request(1, "tools/call", {"name": "subscribe_stream", "arguments": {"stream": "btcusdt@trade"}})
        assert not sub["result"]["isError"], sub
        conn = next(iter(app.connections))
        client.reading.clear()  # the client stops reading
        for i in range(n_trades):
            await layer.group_send("stream.btcusdt.trade", {"type": "stream.message", "stream": "btcusdt@trade", "data": {"e": "trade", "t": i}})
            if i % (n_trades // n_events) == 0:
                await layer.group_send(f"account.{account.pk}", {"type": "account.event", "kind": "order", "account": account.pk,
                                                                 "data": {"seq": i // (n_trades // n_events)}})
        while conn.outbox.market_in < n_trades:  # everything reached the connection's outbox
            await asyncio.sleep(0.01)
        stuck = len(conn.outbox.market)
        client.reading.set()
        while len(conn.outbox):
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.1)
        await client.inbox.put({"type": "websocket.disconnect", "code": 1000})
        await asyncio.wait_for(server, 10)
        await layer.flush()
        return client.frames, stuck, conn.outbox.dropped_total

    frames, stuck, dropped_total = asyncio.run(scenario())
    trades = [f["params"] for f in frames if f.get("params", {}).get("stream") == "btcusdt@trade"]
    events = [f["params"]["data"]["seq"] for f in frames if f.get("params", {}).get("kind") == "order"]
    assert stuck == queue  # the market queue stayed bounded while the client did not read
    assert events == list(range(n_events))  # every order event, in order
    assert len(trades) < n_trades and dropped_total > 0  # market data was coalesced ...
    assert len(trades) + sum(t["dropped"] for t in trades) == n_trades  # ... and every drop was reported
    assert trades[-1]["data"]["t"] == n_trades - 1  # latest wins
    assert trades[-1]["droppedTotal"] == dropped_total == n_trades - len(trades)


def test_pushes_reach_an_mcp_socket_while_another_consumer_of_the_process_waits(symbols, trader):
    """A dashboard socket (or any Channels consumer) and an MCP WebSocket in one web process share
    its channel layer. channels_redis serves a process's channels with one blocking pop, under one
    lock that the popper keeps until a message comes for its own key; MCP channels named with a
    prefix of their own ("mcpws.") had their own key, so an idle consumer that took the lock first
    starved every MCP socket of the process of its pushes (found when a stack test's subscriber got
    no stream updates after the end-to-end tests had left a dashboard socket open)."""
    from channels_redis.core import RedisChannelLayer

    from mcpapi.ws import MCPWebSocketApp

    _, account, token = trader

    async def scenario():
        # Configured as in production (settings.CHANNEL_LAYERS: its socket timeout outlasts the pop,
        # so an idle pop is simply repeated), with a prefix of its own.
        config = {**settings.CHANNEL_LAYERS["default"]["CONFIG"], "prefix": f"{settings.REDIS_KEY_PREFIX}t-{uuid.uuid4().hex[:6]}"}
        layer = RedisChannelLayer(**config)
        idle = asyncio.create_task(layer.receive(await layer.new_channel()))  # as a Channels consumer waits
        await asyncio.sleep(0.2)  # it holds the layer's receive lock now
        app = MCPWebSocketApp(layer=layer)
        client = SlowClient(app, token)
        await client.inbox.put({"type": "websocket.connect"})
        server = asyncio.create_task(app(client.scope, client.receive, client.send))
        await asyncio.wait_for(client.accepted.wait(), 10)
        await client.request(1, "ping")
        await layer.group_send(f"account.{account.pk}", {"type": "account.event", "kind": "order", "account": account.pk,
                                                         "data": {"seq": 1}})
        for _ in range(1200):  # up to 12 s: more than two of channels_redis's 5 s pops
            if any(f.get("params", {}).get("kind") == "order" for f in client.frames):
                break
            await asyncio.sleep(0.01)
        await client.inbox.put({"type": "websocket.disconnect", "code": 1000})
        await asyncio.wait_for(server, 10)
        idle.cancel()
        await asyncio.gather(idle, return_exceptions=True)
        await layer.flush()
        return [f["params"]["data"] for f in client.frames if f.get("params", {}).get("kind") == "order"]

    assert asyncio.run(scenario()) == [{"seq": 1}]


def test_a_client_that_never_reads_is_cut_off_rather_than_losing_order_events(symbols, trader, monkeypatch):
    from channels_redis.core import RedisChannelLayer

    import mcpapi.ws as mcp_ws

    _, account, token = trader
    monkeypatch.setattr(mcp_ws, "PRIORITY_LIMIT", 5)

    async def scenario():
        layer = RedisChannelLayer(hosts=[settings.REDIS_URL], prefix=f"{settings.REDIS_KEY_PREFIX}t-{uuid.uuid4().hex[:6]}")
        app = mcp_ws.MCPWebSocketApp(layer=layer)
        client = SlowClient(app, token)
        await client.inbox.put({"type": "websocket.connect"})
        server = asyncio.create_task(app(client.scope, client.receive, client.send))
        await asyncio.wait_for(client.accepted.wait(), 10)
        await client.request(1, "ping")
        client.reading.clear()
        for i in range(10):
            await layer.group_send(f"account.{account.pk}", {"type": "account.event", "kind": "order", "account": account.pk, "data": {"seq": i}})
        for _ in range(500):
            if client.closed:
                break
            await asyncio.sleep(0.01)
        await client.inbox.put({"type": "websocket.disconnect", "code": 1006})
        await asyncio.wait_for(server, 10)
        await layer.flush()
        return client.closed

    closed = asyncio.run(scenario())
    assert closed is not None and closed["code"] == 4408 and "reconnect" in closed["reason"]


def _handshake(headers, frames=()):
    """Drive one in-process ``/mcp/ws`` connection: connect with ``headers``, send ``frames`` (text),
    then disconnect. Returns the messages the app sent (accept/close/send)."""
    from mcpapi.ws import MCPWebSocketApp

    async def scenario():
        inbox: asyncio.Queue = asyncio.Queue()
        sent = []
        scope = {"type": "websocket", "path": "/mcp/ws", "headers": headers, "subprotocols": ["mcp"],
                 "query_string": b"", "client": ("127.0.0.1", 1), "server": ("localhost", 8000)}
        await inbox.put({"type": "websocket.connect"})
        for text in frames:
            await inbox.put({"type": "websocket.receive", "text": text})

        async def receive():
            return await inbox.get()

        async def send(message):
            sent.append(message)
            if message["type"] == "websocket.close":
                await inbox.put({"type": "websocket.disconnect", "code": message.get("code", 1000)})

        app = MCPWebSocketApp()
        task = asyncio.create_task(app(scope, receive, send))
        for _ in range(300):
            if any(m["type"] == "websocket.close" for m in sent):
                break
            await asyncio.sleep(0.01)
        if not task.done():
            await inbox.put({"type": "websocket.disconnect", "code": 1000})
        await asyncio.wait_for(task, 10)
        return sent

    return asyncio.run(scenario())


@pytest.mark.parametrize("headers", [
    [(b"host", b"evil.example.com")],
    [(b"host", b"localhost:8000"), (b"origin", b"http://evil.example.com")],
])
def test_a_foreign_host_or_origin_is_refused_at_the_handshake(trader, headers):
    _, _, key = trader
    sent = _handshake(headers + [(b"authorization", f"Bearer {key}".encode())])
    assert sent[0]["type"] == "websocket.close"  # before any accept: the server answers HTTP 403
    assert not any(m["type"] == "websocket.accept" for m in sent)


def test_a_local_origin_is_accepted(trader):
    _, _, key = trader
    sent = _handshake([(b"host", b"127.0.0.1:8000"), (b"origin", b"http://127.0.0.1:8000"),
                       (b"authorization", f"Bearer {key}".encode())])
    assert sent[0]["type"] == "websocket.accept"


@pytest.mark.parametrize("params", [["tmcp_x"], "tmcp_x", 7, {"token": ["a"]}, None])
def test_authenticate_with_malformed_params_is_a_json_rpc_error(db, params):
    """An unauthenticated ``authenticate`` whose params are not ``{"token": "<string>"}`` gets a
    JSON-RPC error and a 4401 close, not a traceback."""
    frame = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "authenticate", "params": params})
    sent = _handshake([(b"host", b"localhost")], [frame])
    replies = [json.loads(m["text"]) for m in sent if m["type"] == "websocket.send"]
    assert replies and replies[0]["id"] == 1 and replies[0]["error"]["code"] == 4401
    assert [m["code"] for m in sent if m["type"] == "websocket.close"] == [4401]


def test_resource_subscriptions_log_level_and_elicitation_over_the_socket(live, trader):
    """The same session features as /mcp (mcpapi.sessions) over /mcp/ws with the SDK's ClientSession:
    tradingmcp:// subscriptions pushed with their value, setLevel filtering, confirm in the chat."""
    from risk.models import RiskLimit

    user, account, _ = trader
    _, token = agent_token_create(user=user, name="ws confirming", confirm_orders=True)
    RiskLimit.objects.update_or_create(account=account, defaults={"max_orders_per_minute": 1})
    ticker, orders = "tradingmcp://markets/ETHUSDT/ticker", f"tradingmcp://accounts/{account.pk}/orders/open"

    async def scenario():
        seen = {"updated": [], "log": []}
        got = asyncio.Event()

        async def on_message(message):
            if isinstance(message, mt.ServerNotification):
                if isinstance(message.root, mt.ResourceUpdatedNotification):
                    seen["updated"].append(message.root.params.model_dump(mode="json"))
                elif isinstance(message.root, mt.LoggingMessageNotification):
                    seen["log"].append(message.root.params.model_dump(mode="json"))
                got.set()

        async def on_elicit(context, params):
            return mt.ElicitResult(action="accept", content={"confirm": True})

        async def until(pred):
            for _ in range(300):
                if pred():
                    return
                got.clear()
                try:
                    await asyncio.wait_for(got.wait(), 0.1)
                except asyncio.TimeoutError:
                    pass
            raise AssertionError("no notification")

        async with websocket_client(ws_url(live), token=token) as (read, write, info):
            async with ClientSession(read, write, message_handler=on_message, elicitation_callback=on_elicit) as session:
                init = await session.initialize()
                assert init.capabilities.resources.subscribe
                await session.subscribe_resource(ticker)
                await session.subscribe_resource(orders)
                await until(lambda: any(u["uri"] == ticker for u in seen["updated"]))
                await session.set_logging_level("warning")
                placed = await session.call_tool("place_order", {"symbol": "BTCUSDT", "side": "BUY", "quantity": "0.002",
                                                                 "client_order_id": "ws-chat"})
                assert not placed.isError, placed
                await until(lambda: seen["log"] and any(u["uri"] == orders and u["value"]["kind"] == "order" for u in seen["updated"]))
                with pytest.raises(Exception):
                    await session.subscribe_resource("tradingmcp://accounts/999999")
                return seen, json.loads(placed.content[0].text)

    seen, placed = run(scenario())
    tick = next(u for u in seen["updated"] if u["uri"] == ticker)
    assert tick["value"]["symbol"] == "ETHUSDT" and "dropped" in tick
    assert placed["confirmedInChat"] and Order.objects.get(client_order_id="ws-chat").pk == placed["orderId"]
    assert seen["log"][0]["logger"] == "tradingmcp.risk" and seen["log"][0]["data"]["limit"] == "max_orders_per_minute"
