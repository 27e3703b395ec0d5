"""The dashboard without a browser: pages and JSON endpoints through Django's test client (real
replay exchange, real Redis), the WebSocket consumer through Channels' communicator on the real
Redis channel layer, and the per-client coalescing."""
import asyncio
import json
import re
import shlex
import sys
from html import unescape
from decimal import Decimal
from pathlib import Path

import numpy as np
import pytest
from django.conf import settings
from django.http import HttpRequest
from django.test import Client

from risk.models import AgentToken, AuditEvent, RiskLimit
from risk.services import agent_token_authenticate
from core.errors import RiskRejected
from trading.models import Order
from trading.services import account_create, order_place
from conftest import sqlite_pass_only


def login(username: str) -> Client:
    client = Client()
    assert client.login(request=HttpRequest(), username=username, password="pw-for-tests-1")  # django-axes needs the request
    return client


def post_json(client, url, data=None):
    return client.post(url, data=json.dumps(data or {}), content_type="application/json")


# --- pages and permissions -----------------------------------------------------------------------

@pytest.mark.django_db
@pytest.mark.parametrize("url", ["/", "/market/BTCUSDT/", "/tokens/", "/dashboard/state/", "/dashboard/api/chart/BTCUSDT/"])
def test_pages_need_a_login(client, url):
    resp = client.get(url)
    assert resp.status_code == 302 and resp["Location"].startswith("/login/")


@pytest.mark.django_db
def test_writes_need_a_login_and_csrf(trader):
    user, account, _ = trader
    assert Client().post(f"/dashboard/api/accounts/{account.pk}/halt/").status_code == 302
    strict = Client(enforce_csrf_checks=True)
    strict.force_login(user)
    assert strict.post(f"/dashboard/api/accounts/{account.pk}/halt/").status_code == 403
    assert RiskLimit.objects.get(account=account).trading_state == "ACTIVE"


def test_overview_shows_own_accounts_only(quotes, trader, make_user):
    user, account, _ = trader
    order_place(account=account, actor_user=user, channel="mcp", symbol="BTCUSDT", side="BUY", quantity="0.002",
                client_order_id="alice-1")
    bob = make_user("bob")
    bob_account = account_create(owner=bob, name="Bob paper")

    state = login("alice").get("/dashboard/state/").json()
    assert [a["accountId"] for a in state["accounts"]] == [account.pk]
    alice = state["accounts"][0]
    assert alice["orders"][0]["clientOrderId"] == "alice-1" and alice["fills"][0]["qty"] == "0.00200000"
    position = next(p for p in alice["portfolio"]["positions"] if p["symbol"] == "BTCUSDT")
    bid = Decimal(quotes["BTCUSDT"]["bidPrice"])
    assert Decimal(position["markPrice"]) == bid
    assert Decimal(position["unrealizedPnl"]) == ((bid - Decimal(position["avgEntryPrice"])) * Decimal(position["quantity"])).quantize(Decimal("1e-8"))
    assert [e["action"] for e in state["activity"]][:1] == ["order.place"]
    assert state["activity"][0]["risk"]["allowed"] is True

    bob_client = login("bob")
    bob_state = bob_client.get("/dashboard/state/").json()
    assert [a["accountId"] for a in bob_state["accounts"]] == [bob_account.pk]
    assert bob_state["activity"] == []
    assert "alice-1" not in bob_client.get("/").content.decode()
    # Bob can neither halt, resume, cancel on nor trade Alice's account.
    for url in (f"/dashboard/api/accounts/{account.pk}/halt/", f"/dashboard/api/accounts/{account.pk}/resume/"):
        assert post_json(bob_client, url).status_code == 404
    assert bob_client.delete(f"/api/v1/accounts/{account.pk}/orders/{Order.objects.get().pk}").status_code == 404
    resp = post_json(bob_client, f"/api/v1/accounts/{account.pk}/orders", {"symbol": "BTCUSDT", "side": "BUY", "quantity": "0.002"})
    assert resp.status_code == 404
    assert RiskLimit.objects.get(account=account).trading_state == "ACTIVE" and Order.objects.count() == 1


def test_overview_page_renders_state(quotes, trader):
    user, account, _ = trader
    html = login("alice").get("/").content.decode()
    assert 'id="initial-state"' in html and "lightweight-charts.standalone.production.js" in html
    assert f'"accountId": {account.pk}' in html


# --- order ticket --------------------------------------------------------------------------------

def test_order_ticket_places_through_the_service_and_shows_risk_rejections(quotes, trader):
    user, account, _ = trader
    client = login("alice")
    ok = post_json(client, f"/api/v1/accounts/{account.pk}/orders", {"symbol": "BTCUSDT", "side": "BUY", "type": "MARKET",
                                                                     "quantity": "0.002"})
    assert ok.status_code == 201, ok.content
    assert ok.json()["status"] == "FILLED" and ok.json()["channel"] == "dashboard"
    assert ok.json()["avgPrice"] == format(Decimal(quotes["BTCUSDT"]["askPrice"]), "f")
    event = AuditEvent.objects.get(action="order.place", outcome="ok")
    assert event.channel == "dashboard" and event.actor_user == user

    RiskLimit.objects.filter(account=account).update(max_order_notional=Decimal("20"))
    rejected = post_json(client, f"/api/v1/accounts/{account.pk}/orders", {"symbol": "BTCUSDT", "side": "BUY", "quantity": "0.01"})
    body = rejected.json()
    assert rejected.status_code == 400 and body["code"] == -2010
    assert body["riskDecision"]["allowed"] is False and "max_order_notional" in body["riskDecision"]["reason"]
    assert Order.objects.get(pk=body["order"]["orderId"]).status == "REJECTED"

    bad = post_json(client, f"/api/v1/accounts/{account.pk}/orders", {"symbol": "BTCUSD", "side": "BUY", "quantity": "1"})
    assert bad.status_code == 400 and bad.json()["code"] == -1121 and "BTCUSDT" in bad.json()["msg"]
    assert Order.objects.count() == 2


def test_viewer_grant_may_see_but_not_trade_or_halt(quotes, trader, make_user):
    from risk.models import AccountGrant

    user, account, _ = trader
    carol = make_user("carol")
    AccountGrant.objects.create(account=account, user=carol, role="viewer")
    client = login("carol")
    assert [a["accountId"] for a in client.get("/dashboard/state/").json()["accounts"]] == [account.pk]
    assert post_json(client, f"/dashboard/api/accounts/{account.pk}/halt/").status_code == 403
    resp = post_json(client, f"/api/v1/accounts/{account.pk}/orders", {"symbol": "BTCUSDT", "side": "BUY", "quantity": "0.002"})
    assert resp.status_code == 403 and not Order.objects.exists()


# --- kill switch and risk panel ------------------------------------------------------------------

def test_kill_switch_halts_cancels_and_refuses_the_next_agent_order(quotes, trader):
    user, account, _ = trader
    ask = Decimal(quotes["BTCUSDT"]["askPrice"])
    resting = order_place(account=account, actor_user=user, channel="mcp", symbol="BTCUSDT", side="BUY", order_type="LIMIT",
                          quantity="0.002", price=str((ask * Decimal("0.9")).quantize(Decimal("0.01"))), time_in_force="GTC").order
    client = login("alice")
    panel = client.get("/dashboard/state/").json()["accounts"][0]["risk"]
    assert panel["tradingState"] == "ACTIVE"

    resp = post_json(client, f"/dashboard/api/accounts/{account.pk}/halt/")
    assert resp.status_code == 200 and resp.json()["canceled"] == [resting["orderId"]]
    assert resp.json()["risk"]["tradingState"] == "HALTED" and "kill switch" in resp.json()["risk"]["haltedReason"]
    assert Order.objects.get(pk=resting["orderId"]).status == "CANCELED"
    halt = AuditEvent.objects.get(action="risk.halt")
    assert halt.channel == "dashboard" and halt.actor_user == user
    with pytest.raises(RiskRejected, match="HALTED"):
        order_place(account=account, actor_user=user, channel="mcp", symbol="BTCUSDT", side="BUY", quantity="0.002")

    resp = post_json(client, f"/dashboard/api/accounts/{account.pk}/resume/")
    assert resp.status_code == 200 and RiskLimit.objects.get(account=account).trading_state == "ACTIVE"
    assert order_place(account=account, actor_user=user, channel="mcp", symbol="BTCUSDT", side="BUY",
                       quantity="0.002").order["status"] == "FILLED"


def test_risk_panel_reports_usage_of_each_limit(quotes, trader):
    from trading.portfolio import risk_panel

    user, account, _ = trader
    ask = Decimal(quotes["BTCUSDT"]["askPrice"])
    RiskLimit.objects.filter(account=account).update(max_open_orders=4, max_orders_per_minute=10, max_total_exposure=Decimal("1000"),
                                                     max_order_notional=Decimal("500"))
    order_place(account=account, actor_user=user, channel="api", symbol="BTCUSDT", side="BUY", quantity="0.01")
    order_place(account=account, actor_user=user, channel="api", symbol="BTCUSDT", side="BUY", order_type="LIMIT", quantity="0.002",
                price=str((ask * Decimal("0.9")).quantize(Decimal("0.01"))), time_in_force="GTC")
    panel = risk_panel(account=account)
    limits = {row["name"]: row for row in panel["limits"]}
    assert limits["max_open_orders"]["usage"] == "1" and limits["max_open_orders"]["pct"] == 25.0
    assert limits["max_orders_per_minute"]["usage"] == "2" and limits["max_orders_per_minute"]["pct"] == 20.0
    held = Decimal("0.01") - Decimal("0.00001")  # the buy's taker fee is paid in BTC
    exposure = held * Decimal(quotes["BTCUSDT"]["bidPrice"])
    assert Decimal(limits["max_total_exposure"]["usage"]) == exposure.quantize(Decimal("0.01"))
    assert limits["max_total_exposure"]["pct"] == pytest.approx(float(exposure / 10), rel=1e-6)
    assert limits["max_order_notional"]["limit"] == "500" and limits["max_order_notional"]["usage"] is None
    assert limits["max_daily_loss"]["limit"] is None and limits["max_daily_loss"]["pct"] is None


# --- tokens --------------------------------------------------------------------------------------

def test_tokens_created_shown_once_scoped_and_revoked(db, trader, make_user):
    user, account, _ = trader
    client = login("alice")
    resp = client.post("/tokens/", {"name": "claude-desktop", "scopes": ["market:read", "account:read"], "expires_days": "30",
                                    "accounts": [str(account.pk)]})
    assert resp.status_code == 200
    html = unescape(resp.content.decode())
    token = AgentToken.objects.get(name="claude-desktop")
    key = resp.context["created"]["key"]
    assert key.startswith("tmcp_") and key in html and '"Authorization": "Bearer ' + key in html
    assert token.scopes == ["market:read", "account:read"] and list(token.accounts.all()) == [account]
    assert agent_token_authenticate(key=key) == token
    assert key not in client.get("/tokens/").content.decode()  # shown once
    assert token.prefix in client.get("/tokens/").content.decode()

    bad = client.post("/tokens/", {"name": "x", "scopes": ["admin"]})
    assert bad.status_code == 400 and "Unknown scope" in bad.content.decode()
    assert not AgentToken.objects.filter(name="x").exists()

    make_user("bob")
    assert login("bob").post(f"/tokens/{token.pk}/revoke/").status_code == 404
    assert agent_token_authenticate(key=key) == token
    assert client.post(f"/tokens/{token.pk}/revoke/").status_code == 302
    assert agent_token_authenticate(key=key) is None


def snippet(html: str, element_id: str) -> str:
    """The text of ``<pre id=element_id>`` on a page (HTML entities decoded)."""
    match = re.search(rf'<pre id="{element_id}">(.*?)</pre>', html, re.S)
    assert match, f"no #{element_id} on the page"
    return unescape(match.group(1))


def test_tokens_page_snippets_name_the_endpoint_the_command_and_the_new_token(db, trader):
    """Every client snippet on the tokens page parses (JSON, or a shell command line) and carries
    the real endpoint and the token just created; the Claude Desktop one starts this install's
    ``manage.py mcp_stdio`` (it is run for real in tests/test_mcp_stdio.py)."""
    client = login("alice")
    resp = client.post("/tokens/", {"name": "desktop", "scopes": ["market:read"]})
    key, html = resp.context["created"]["key"], resp.content.decode()
    url, bearer = "http://testserver/mcp", f"Bearer {key}"

    code = json.loads(snippet(html, "cfg-code"))["mcpServers"]["tradingmcp"]
    assert code == {"type": "http", "url": url, "headers": {"Authorization": bearer}}
    assert shlex.split(snippet(html, "cfg-cli")) == ["claude", "mcp", "add", "--transport", "http", "tradingmcp", url,
                                                     "--header", f"Authorization: {bearer}"]
    desktop = json.loads(snippet(html, "cfg-desktop"))["mcpServers"]["tradingmcp"]
    assert desktop["command"] == sys.executable and Path(desktop["command"]).exists()
    assert desktop["args"] == [str(settings.BASE_DIR / "manage.py"), "mcp_stdio"] and Path(desktop["args"][0]).is_file()
    assert desktop["env"] == {"TRADINGMCP_TOKEN": key}
    remote = json.loads(snippet(html, "cfg-desktop-remote"))["mcpServers"]["tradingmcp"]
    assert remote["command"] == "npx" and remote["env"] == {"AUTH_HEADER": bearer}
    # Plain HTTP to a host that is not the loopback: mcp-remote wants --allow-http.
    assert remote["args"] == ["-y", "mcp-remote", url, "--header", "Authorization:${AUTH_HEADER}", "--allow-http"]
    cursor = json.loads(snippet(html, "cfg-cursor"))["mcpServers"]["tradingmcp"]
    assert cursor == {"url": url, "headers": {"Authorization": bearer}}
    assert shlex.split(snippet(html, "cfg-inspector")) == [
        "npx", "@modelcontextprotocol/inspector", "--cli", url, "--transport", "http", "--header",
        f"Authorization: {bearer}", "--method", "tools/list"]

    later = client.get("/tokens/").content.decode()  # no token any more: the placeholder
    assert key not in later and json.loads(snippet(later, "cfg-desktop"))["mcpServers"]["tradingmcp"]["env"] == {
        "TRADINGMCP_TOKEN": "tmcp_YOUR_TOKEN"}


@pytest.mark.parametrize("mcp_url, allow_http", [("http://127.0.0.1:8000/mcp", False), ("http://localhost:8000/mcp", False),
                                                 ("https://trading.example/mcp", False), ("http://10.0.0.5:8000/mcp", True)])
def test_the_mcp_remote_bridge_asks_for_plain_http_only_off_the_loopback(mcp_url, allow_http):
    from dashboard.selectors import mcp_client_snippets

    args = json.loads(mcp_client_snippets(mcp_url=mcp_url, token="tmcp_x", python="/p", manage_py="/m")["desktop_remote"]
                      )["mcpServers"]["tradingmcp"]["args"]
    assert args[2] == mcp_url and ("--allow-http" in args) is allow_http


# --- market data endpoints -----------------------------------------------------------------------

def test_chart_json_matches_the_venue_klines_and_ta_lib_indicators(symbols, trader):
    from marketdata.binance import make_client

    client = login("alice")
    symbols.clock.pause()  # no candle boundary between the two reads
    try:
        data = client.get("/dashboard/api/chart/BTCUSDT/?interval=5m&limit=100").json()
        venue = make_client().get_klines(symbol="BTCUSDT", interval="5m", limit=100)
    finally:
        symbols.clock.resume()
    assert len(data["candles"]) == len(venue) == 100
    assert [(c["time"] * 1000, c["open"], c["close"]) for c in data["candles"]] == [(r[0], r[1], r[4]) for r in venue]
    closes = np.array([float(r[4]) for r in venue])
    sma20 = data["indicators"]["sma"]["sma20"]
    assert len(sma20) == 100 - 19 and sma20[-1]["time"] == venue[-1][0] // 1000
    assert sma20[-1]["value"] == pytest.approx(closes[-20:].mean(), rel=1e-9)
    mid = data["indicators"]["bbands"]["middle"][-1]["value"]
    upper = data["indicators"]["bbands"]["upper"][-1]["value"]
    assert mid == pytest.approx(closes[-20:].mean(), rel=1e-9) and upper == pytest.approx(mid + 2 * closes[-20:].std(), rel=1e-9)
    assert 0 <= data["indicators"]["rsi"]["rsi"][-1]["value"] <= 100
    assert set(data["indicators"]["macd"]) == {"macd", "signal", "histogram"}

    assert client.get("/dashboard/api/chart/BTCUSDT/?interval=2h").json()["code"] == -1120
    assert client.get("/dashboard/api/chart/NOPE/").status_code == 400
    assert client.get("/dashboard/api/chart/BTCUSDT/?limit=abc").status_code == 400


def test_market_json_book_and_trades_from_the_venue(symbols, trader):
    from marketdata.binance import make_client

    symbols.clock.pause()
    try:
        data = login("alice").get("/dashboard/api/market/BTCUSDT/").json()
        venue = make_client().get_order_book(symbol="BTCUSDT", limit=100)
    finally:
        symbols.clock.resume()
    assert data["bids"][0][:2] == venue["bids"][0] and data["asks"][0][:2] == venue["asks"][0]
    assert Decimal(data["bids"][2][2]) == sum(Decimal(q) for _, q in venue["bids"][:3])
    assert len(data["trades"]) == 30 and data["trades"][0]["time"] >= data["trades"][-1]["time"]


# --- the WebSocket consumer ----------------------------------------------------------------------

def _application():
    from channels.auth import AuthMiddlewareStack
    from channels.routing import URLRouter

    from dashboard.routing import websocket_urlpatterns

    return AuthMiddlewareStack(URLRouter(websocket_urlpatterns))


def _cookie(username: str) -> bytes:
    return f"{settings.SESSION_COOKIE_NAME}={login(username).cookies[settings.SESSION_COOKIE_NAME].value}".encode()


async def _connect(cookie: bytes | None):
    from channels.testing import WebsocketCommunicator

    headers = [(b"cookie", cookie)] if cookie else []
    comm = WebsocketCommunicator(_application(), "/ws/dashboard/", headers=headers)
    connected, _ = await comm.connect(timeout=10)
    assert connected
    return comm


async def _nothing_but_market_data(comm, timeout: float) -> bool:
    """True when, for ``timeout`` s, the socket receives nothing but market ticks (the session-wide
    stack's ingester, started by other test files, publishes BTCUSDT quotes to every socket that
    watches it: those are not what these tests are about)."""
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while (left := end - loop.time()) > 0:
        if await comm.receive_nothing(timeout=min(left, 0.5), interval=0.05):
            continue
        msg = await comm.receive_json_from(timeout=1)
        if msg.get("type") != "market":
            return False
    return True


async def _next(comm, type_=None, timeout=5.0):
    while True:
        msg = await comm.receive_json_from(timeout=timeout)
        if type_ is None or msg["type"] == type_:
            return msg


@pytest.mark.django_db(transaction=True)
def test_socket_refuses_anonymous():
    async def run():
        from channels.testing import WebsocketCommunicator

        comm = WebsocketCommunicator(_application(), "/ws/dashboard/")
        await comm.connect(timeout=10)
        out = await comm.receive_output(timeout=5)
        assert out["type"] == "websocket.close" and out["code"] == 4401
        await comm.wait()

    asyncio.run(run())


@pytest.mark.django_db(transaction=True)
def test_user_b_never_receives_user_a_events(trader, make_user):
    from channels.db import database_sync_to_async

    from core.events import publish_account_event, publish_user_event

    user, account, _ = trader
    bob = make_user("bob")
    bob_account = account_create(owner=bob, name="Bob paper")
    alice_cookie, bob_cookie = _cookie("alice"), _cookie("bob")

    async def run():
        alice, bob_ws = await _connect(alice_cookie), await _connect(bob_cookie)
        hello_a, hello_b = await _next(alice, "hello"), await _next(bob_ws, "hello")
        assert hello_a["accounts"] == [account.pk] and hello_b["accounts"] == [bob_account.pk]
        # Alice's account event and Alice's own activity, then one for Bob as a marker.
        def publish():  # as the services do, from sync code (the pushes go out in this order)
            publish_account_event(account.pk, "order", {"orderId": 1, "clientOrderId": "alice-secret", "symbol": "BTCUSDT"})
            publish_user_event(user.pk, "activity", {"id": 1, "action": "mcp.get_ticker", "message": "alice-secret"})
            publish_account_event(bob_account.pk, "order", {"orderId": 2, "clientOrderId": "bob-own", "symbol": "BTCUSDT"})

        await database_sync_to_async(publish)()
        got_a = [await _next(alice, "account"), await _next(alice, "user")]
        got_b = await _next(bob_ws, "account")
        assert got_a[0]["data"]["clientOrderId"] == "alice-secret" and got_a[1]["data"]["message"] == "alice-secret"
        assert got_b["data"]["clientOrderId"] == "bob-own"
        # Bob's marker arrived after Alice's events were published: nothing of Alice's came before or after.
        assert await _nothing_but_market_data(bob_ws, 0.5)
        await alice.disconnect()
        await bob_ws.disconnect()
        return got_b

    asyncio.run(run())


@pytest.mark.django_db(transaction=True)
def test_an_orders_events_go_as_one_layer_message_and_each_reaches_the_socket(trader):
    """The events an order publishes together (order, balances and activity:
    ``publish_account_events``) leave as one ``events.batch`` channel-layer message, in order; the
    dashboard socket still gets each of them, and an event for another group is not folded in."""
    from asgiref.sync import async_to_sync
    from channels.db import database_sync_to_async
    from channels.layers import get_channel_layer
    from django.db import transaction

    from core.events import BATCH_TYPE, account_group, drain_account_events, publish_account_events, publish_user_event

    user, account, _ = trader
    layer = get_channel_layer()
    probe = async_to_sync(layer.new_channel)()
    async_to_sync(layer.group_add)(account_group(account.pk), probe)
    cookie = _cookie("alice")

    def publish():
        with transaction.atomic():
            publish_account_events(account.pk, [(kind, {"clientOrderId": f"batch-{kind}"})
                                                for kind in ("order", "balances", "activity")])
            publish_user_event(user.pk, "activity", {"message": "user-own"})
        drain_account_events()

    async def run():
        comm = await _connect(cookie)
        await _next(comm, "hello")
        await database_sync_to_async(publish)()
        raw = await asyncio.wait_for(layer.receive(probe), 5)
        got = [await _next(comm, "account") for _ in range(3)]
        user_msg = await _next(comm, "user")
        await comm.disconnect()
        return raw, got, user_msg

    raw, got, user_msg = asyncio.run(run())
    assert raw["type"] == BATCH_TYPE
    assert [m["kind"] for m in raw["messages"]] == ["order", "balances", "activity"]
    assert [m["kind"] for m in got] == ["order", "balances", "activity"]
    assert got[0]["data"]["clientOrderId"] == "batch-order" and user_msg["data"]["message"] == "user-own"


@pytest.mark.django_db(transaction=True)
def test_market_updates_are_coalesced_and_the_latest_arrives(symbols, trader):
    from channels.layers import get_channel_layer

    cookie = _cookie("alice")

    async def run():
        comm = await _connect(cookie)
        await _next(comm, "hello")
        await comm.send_json_to({"type": "subscribe", "symbols": ["ETHUSDT", "NOPE"]})
        sub = await _next(comm, "subscribed")
        assert sub["symbols"] == ["ETHUSDT"] and "NOPE" in sub["errors"][0]
        layer = get_channel_layer()
        n = 40
        for i in range(n):
            # kline_3m: a stream no ingester of the test run publishes, so a real tick never
            # supersedes the last value sent here (a real kline_1m did, and the loop waited forever)
            await layer.group_send("market.ETHUSDT", {"type": "market.update", "symbol": "ETHUSDT", "stream": "kline_3m", "data": {"c": str(i)}})
        seen = []
        deadline = asyncio.get_running_loop().time() + 15
        while (not seen or seen[-1] != str(n - 1)) and asyncio.get_running_loop().time() < deadline:
            msg = await _next(comm, "market")
            if msg["symbol"] == "ETHUSDT" and msg["stream"] == "kline_3m":
                seen.append(msg["data"]["c"])
        await comm.disconnect()
        return seen

    seen = asyncio.run(run())
    values = [int(v) for v in seen]
    assert values == sorted(values) and values[-1] == 39  # in order, the latest never lost
    assert len(values) < 40  # superseded values were dropped, not queued


def test_coalescer_sends_at_most_one_frame_per_interval_per_stream():
    from dashboard.consumers import Coalescer, merge_items

    now = [100.0]
    sent = []

    async def send(msg):
        sent.append((now[0], msg))

    async def run():
        c = Coalescer(send, interval=0.1, clock=lambda: now[0])
        for i in range(50):  # a burst inside one window: first goes at once, the rest folds into one
            await c.offer(("market", "BTCUSDT", "kline_1m"), {"v": i})
        await c.offer(("market", "ETHUSDT", "kline_1m"), {"v": "eth"})  # another stream is not held back
        await c.offer(("account", 1, "activity"), {"kind": "activity", "items": [{"id": 1}]}, merge_items)
        await c.offer(("account", 1, "activity"), {"kind": "activity", "items": [{"id": 2}]}, merge_items)
        await c.offer(("account", 1, "activity"), {"kind": "activity", "items": [{"id": 3}]}, merge_items)
        assert [m for _, m in sent] == [{"v": 0}, {"v": "eth"}, {"kind": "activity", "items": [{"id": 1}], "data": {"id": 1}}]
        now[0] += 0.1
        await asyncio.sleep(0.25)  # the timers fire
        c.close()

    asyncio.run(run())
    btc = [m for _, m in sent if m.get("v") is not None and m["v"] != "eth"]
    assert btc == [{"v": 0}, {"v": 49}]
    activity = [m for _, m in sent if m.get("kind") == "activity"]
    assert [[x["id"] for x in m["items"]] for m in activity] == [[1], [2, 3]] and activity[-1]["data"] == {"id": 3}
    times = [t for t, m in sent if m.get("v") is not None and m["v"] != "eth"]
    assert times[1] - times[0] == pytest.approx(0.1)  # the held value went out when the window ended


def test_partial_balance_updates_merge_by_asset_when_coalesced():
    """Orders publish only the assets they changed (``partial``); coalescing must not lose the
    first order's assets when a second one arrives in the same window, and a full snapshot wins."""
    from dashboard.consumers import merge_balances

    def msg(rows, partial):
        data = {"balances": [{"asset": a, "free": f, "locked": "0"} for a, f in rows]}
        if partial:
            data["partial"] = True
        return {"type": "account", "kind": "balances", "account": 1, "data": data, "items": [data]}

    first = msg([("BTC", "1"), ("USDT", "100")], True)
    second = msg([("ETH", "2"), ("USDT", "90")], True)
    merged = merge_balances(merge_balances(None, first), second)
    assert merged["data"]["partial"] is True
    assert [(b["asset"], b["free"]) for b in merged["data"]["balances"]] == [("BTC", "1"), ("ETH", "2"), ("USDT", "90")]
    full = merge_balances(merged, msg([("USDT", "80")], False))
    assert "partial" not in full["data"] and [b["asset"] for b in full["data"]["balances"]] == ["USDT"]


@sqlite_pass_only
@pytest.mark.django_db(transaction=True)
def test_idle_socket_survives_past_the_layers_blocking_pop_and_still_receives(trader, settings):
    """channels_redis 4.3 waits on an empty channel with a 5 s BZPOPMIN; redis-py 8's default
    ``socket_timeout`` is also 5 s, so an idle consumer's ``layer.receive()`` raised
    ``redis.exceptions.TimeoutError`` and the socket died after ~5 s without traffic. With the
    project's layer settings (socket timeout 15 s) the socket stays open through two such windows,
    and the next event still arrives."""
    from channels.db import database_sync_to_async

    from core.events import drain_account_events, publish_account_event

    user, account, _ = trader
    cookie = _cookie("alice")

    async def run():
        comm = await _connect(cookie)
        await _next(comm, "hello")
        assert await _nothing_but_market_data(comm, 11)  # idle past the 5 s blocking pop
        assert not comm.future.done(), comm.future.exception() if comm.future.done() else None
        await comm.send_json_to({"type": "ping"})
        assert (await _next(comm, "pong"))["type"] == "pong"

        def publish():
            publish_account_event(account.pk, "order", {"orderId": 7, "clientOrderId": "after-idle", "symbol": "BTCUSDT"})
            drain_account_events()

        await database_sync_to_async(publish)()
        msg = await _next(comm, "account", timeout=10)
        await comm.disconnect()
        return msg

    msg = asyncio.run(run())
    assert msg["kind"] == "order" and msg["data"]["clientOrderId"] == "after-idle"


# --- confirm mode: the pending-approval panel ----------------------------------------------------

def _hold(account, user, token, cid, quantity="0.002"):
    """An order from a confirm-mode token: held as PENDING_APPROVAL (trading.approvals.order_hold)."""
    held = order_place(account=account, actor_user=user, actor_token=token, channel="mcp", symbol="BTCUSDT", side="BUY",
                       quantity=quantity, client_order_id=cid).order
    assert held["status"] == "PENDING_APPROVAL" and held["orderId"] is None
    return held


@pytest.fixture
def confirm_token(quotes, trader):
    from risk.services import agent_token_create

    user, account, _ = trader
    token, _ = agent_token_create(user=user, name="careful-agent", confirm_orders=True)
    return token


def test_pending_approvals_listed_and_decided_only_by_owner_or_trader(quotes, trader, confirm_token, make_user):
    from risk.models import AccountGrant, OrderApproval

    user, account, _ = trader
    first = _hold(account, user, confirm_token, "held-1")
    second = _hold(account, user, confirm_token, "held-2")
    vera, tom, bob = make_user("vera"), make_user("tom"), make_user("bob")
    AccountGrant.objects.create(account=account, user=vera, role="viewer")
    AccountGrant.objects.create(account=account, user=tom, role="trader")
    owner = login("alice")
    mine = owner.get("/dashboard/state/").json()["accounts"][0]
    assert mine["canTrade"] is True
    assert [(p["approvalId"], p["clientOrderId"], p["requestedBy"]) for p in mine["pending"]] == [
        (first["approvalId"], "held-1", "careful-agent"), (second["approvalId"], "held-2", "careful-agent")]

    approve = f"/api/v1/approvals/{first['approvalId']}/approve"
    reject = f"/api/v1/approvals/{first['approvalId']}/reject"
    # Not logged in: 401; no CSRF token: 403. Nothing decided.
    assert Client().post(approve).status_code == 401
    strict = Client(enforce_csrf_checks=True)
    strict.force_login(user)
    assert strict.post(approve, data="{}", content_type="application/json").status_code == 403
    # A viewer sees them (view only) but may not decide; another user does not even see they exist.
    viewer = login("vera")
    seen = viewer.get("/dashboard/state/").json()["accounts"][0]
    assert seen["canTrade"] is False and [p["approvalId"] for p in seen["pending"]] == [first["approvalId"], second["approvalId"]]
    bob_client = login("bob")
    assert bob_client.get("/dashboard/state/").json()["accounts"] == []
    for client, status, says in ((viewer, 403, "may only view"), (bob_client, 404, "not found")):
        for url in (approve, reject):
            resp = post_json(client, url)
            assert resp.status_code == status and says in resp.json()["msg"]
    assert post_json(owner, "/api/v1/approvals/999999/approve").status_code == 404
    assert set(OrderApproval.objects.values_list("status", flat=True)) == {"PENDING_APPROVAL"}
    assert not Order.objects.filter(account=account).exists()

    # A trader grantee approves: the order is placed now, under the agent's clientOrderId.
    resp = post_json(login("tom"), approve, {"note": "ok by tom"})
    assert resp.status_code == 200, resp.content
    out = resp.json()
    assert out["error"] is None and out["order"]["status"] == "FILLED" and out["order"]["clientOrderId"] == "held-1"
    assert out["approval"]["status"] == "APPROVED" and out["approval"]["decidedBy"] == "tom"
    decision = AuditEvent.objects.get(action="order.approve")
    assert decision.actor_user == tom and decision.channel == "dashboard" and decision.params["note"] == "ok by tom"
    assert AuditEvent.objects.get(action="order.place", outcome="ok").actor_token == confirm_token
    # Decided once: approving or rejecting again is refused, nothing more is placed.
    again = post_json(owner, reject)
    assert again.status_code == 400 and "not pending" in again.json()["msg"]

    # The owner rejects the other one: nothing is placed.
    resp = post_json(owner, f"/api/v1/approvals/{second['approvalId']}/reject")
    assert resp.status_code == 200 and resp.json()["approval"]["status"] == "REJECTED" and resp.json()["order"] is None
    assert list(Order.objects.filter(account=account).values_list("client_order_id", flat=True)) == ["held-1"]
    assert owner.get("/dashboard/state/").json()["accounts"][0]["pending"] == []
    assert AuditEvent.objects.get(action="order.reject").actor_user == user


def test_approving_on_the_dashboard_reruns_the_risk_check(quotes, trader, confirm_token):
    from trading.models import Balance

    user, account, _ = trader
    held = _hold(account, user, confirm_token, "held-risk", quantity="0.01")
    RiskLimit.objects.filter(account=account).update(max_order_notional=Decimal("20"))  # tightened while it waited
    resp = post_json(login("alice"), f"/api/v1/approvals/{held['approvalId']}/approve")
    assert resp.status_code == 200, resp.content
    out = resp.json()
    assert out["approval"]["status"] == "APPROVED" and out["order"]["status"] == "REJECTED"
    assert out["error"]["code"] == -2010 and "max_order_notional" in out["error"]["msg"]
    assert out["error"]["riskDecision"]["allowed"] is False
    assert not Balance.objects.filter(account=account, asset="BTC", free__gt=0).exists()
    # Holding only validated it (filters); the risk check runs at approval: with the limit lifted,
    # the same order is placed.
    RiskLimit.objects.filter(account=account).update(max_order_notional=None)
    ok = _hold(account, user, confirm_token, "held-risk-2", quantity="0.01")
    assert post_json(login("alice"), f"/api/v1/approvals/{ok['approvalId']}/approve").json()["order"]["status"] == "FILLED"


@pytest.mark.django_db(transaction=True)
def test_approval_events_reach_the_accounts_socket(symbols, trader, make_user):
    """A held order is pushed to the account's dashboard sockets as ``kind: approval`` (and not to
    another user's)."""
    from channels.db import database_sync_to_async

    from risk.services import agent_token_create
    from core.events import drain_account_events

    user, account, _ = trader
    account_create(owner=make_user("bob"), name="Bob paper")
    token, _ = agent_token_create(user=user, name="careful-agent", confirm_orders=True)
    alice_cookie, bob_cookie = _cookie("alice"), _cookie("bob")

    def hold():
        from conftest import cache_quotes

        symbols.clock.pause()  # the quote stays current while the order is validated
        try:
            cache_quotes()
            _hold(account, user, token, "pushed-1")
        finally:
            symbols.clock.resume()
        drain_account_events()

    async def run():
        alice, bob_ws = await _connect(alice_cookie), await _connect(bob_cookie)
        await _next(alice, "hello")
        await _next(bob_ws, "hello")
        await database_sync_to_async(hold)()
        while True:
            msg = await _next(alice, "account", timeout=10)
            if msg["kind"] == "approval":
                break
        assert await _nothing_but_market_data(bob_ws, 0.5)
        await alice.disconnect()
        await bob_ws.disconnect()
        return msg

    msg = asyncio.run(run())
    assert msg["account"] == account.pk and msg["data"]["clientOrderId"] == "pushed-1"
    assert msg["data"]["status"] == "PENDING_APPROVAL" and msg["data"]["requestedBy"] == "careful-agent"


# --- protections in the risk panel ---------------------------------------------------------------

def test_risk_panel_shows_active_protection_locks(quotes, trader):
    from datetime import timedelta

    from django.utils import timezone

    from risk.models import Protection, ProtectionLock
    from risk.protections import lock_release

    user, account, _ = trader
    Protection.objects.create(account=account, kind="cooldown", scope="account", lock_minutes=30)
    order_place(account=account, actor_user=user, channel="api", symbol="BTCUSDT", side="BUY", quantity="0.004")
    order_place(account=account, actor_user=user, channel="api", symbol="BTCUSDT", side="SELL", quantity="0.002")
    with pytest.raises(RiskRejected, match="locked until"):  # the losing trade trips the cooldown
        order_place(account=account, actor_user=user, channel="api", symbol="BTCUSDT", side="BUY", quantity="0.002")
    lock = ProtectionLock.objects.get(account=account)
    # An expired lock and a released one are not shown.
    stale = Protection.objects.create(account=account, kind="stoploss_guard", scope="symbol", lock_minutes=5)
    ProtectionLock.objects.create(account=account, protection=stale, symbol="ETHUSDT", reason="old",
                                  until=timezone.now() - timedelta(minutes=1))
    released = ProtectionLock.objects.create(account=account, protection=stale, symbol="ETHUSDT", reason="released",
                                             until=timezone.now() + timedelta(minutes=5))
    lock_release(lock=released, actor_user=user, channel="admin")

    panel = login("alice").get("/dashboard/state/").json()["accounts"][0]["risk"]
    assert panel["locks"] == [{
        "id": lock.pk, "symbol": None, "protection": "cooldown", "scope": "account", "reason": lock.reason,
        "lockedAt": int(lock.locked_at.timestamp() * 1000), "until": int(lock.until.timestamp() * 1000), "blocks": "BUY",
    }]
    assert lock.reason.startswith("cooldown: losing trade on BTCUSDT")


# --- tokens page: confirm mode, nav --------------------------------------------------------------

def test_tokens_page_creates_confirm_mode_tokens_and_lists_the_mode(db, trader):
    client = login("alice")
    resp = client.post("/tokens/", {"name": "careful", "scopes": ["account:read", "trade"], "confirm_orders": "1"})
    assert resp.status_code == 200 and resp.context["created"]["token"]["confirmOrders"] is True
    resp = client.post("/tokens/", {"name": "direct", "scopes": ["trade"]})
    assert resp.status_code == 200 and resp.context["created"]["token"]["confirmOrders"] is False
    assert dict(AgentToken.objects.values_list("name", "confirm_orders")) == {"alice-agent": False, "careful": True, "direct": False}
    page = client.get("/tokens/")
    rows = {t["name"]: t["confirmOrders"] for t in page.context["tokens"]}
    assert rows == {"alice-agent": False, "careful": True, "direct": False}
    html = page.content.decode()
    assert html.count('class="badge confirm-mode"') == 1 and 'name="confirm_orders"' in html
    assert 'href="/evaluations/"' in html  # the nav links the agent evaluations
