"""The REST API /api/v1/ (``api/``) against the replay exchange's real quotes: orders of every kind
through the same services as the MCP tools, the token's scopes, account and symbol restrictions,
confirm mode, session auth with CSRF, idempotency, typed errors, risk limits, the audit log and
the OpenAPI schema."""
import csv
import io
import re
import subprocess
import sys
from decimal import Decimal

import pytest
from django.contrib.staticfiles import finders
from rest_framework.test import APIClient

from conftest import ROOT
from risk.models import AccountGrant, AgentToken, AuditEvent, OrderApproval, RiskLimit
from risk.services import agent_token_create
from trading.models import Balance, Fill, Order
from trading.services import account_create


def bearer(key: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {key}")
    return client


def session(user, *, csrf: bool = False) -> APIClient:
    client = APIClient(enforce_csrf_checks=csrf)
    client.force_login(user)
    return client


def orders_url(account) -> str:
    return f"/api/v1/accounts/{account.pk}/orders"


def limit_price(quotes, symbol="BTCUSDT", below=Decimal("0.9")) -> str:
    """A price far enough under the bid that a BUY rests (quote asset, on the tick)."""
    return format((Decimal(quotes[symbol]["bidPrice"]) * below).quantize(Decimal("0.01")), "f")


def test_limit_order_place_amend_cancel_then_market_fill_and_pnl(quotes, trader):
    """The docs' walk-through: a LIMIT order placed, amended by cancel-replace, canceled; a MARKET
    order filled; its fill and the P&L read back."""
    user, account, key = trader
    api = bearer(key)
    px = limit_price(quotes)
    resp = api.post(orders_url(account), {"symbol": "BTCUSDT", "side": "BUY", "type": "LIMIT", "quantity": "0.002",
                                          "price": px, "timeInForce": "GTC", "clientOrderId": "doc-limit-1"}, format="json")
    assert resp.status_code == 201, resp.json()
    first = resp.json()
    assert first["status"] == "NEW" and first["price"] == Decimal(px).quantize(Decimal("0.00000001")).to_eng_string()
    assert first["type"] == "LIMIT" and first["timeInForce"] == "GTC" and first["duplicate"] is False
    assert Balance.objects.get(account=account, asset="USDT").locked > 0

    new_px = limit_price(quotes, below=Decimal("0.8"))
    resp = api.post(f"{orders_url(account)}/{first['orderId']}/cancel-replace",
                    {"symbol": "BTCUSDT", "side": "BUY", "type": "LIMIT", "quantity": "0.003", "price": new_px,
                     "clientOrderId": "doc-limit-2"}, format="json")
    assert resp.status_code == 200, resp.json()
    amended = resp.json()
    assert amended["cancelResponse"]["status"] == "CANCELED" and amended["newOrderResponse"]["status"] == "NEW"
    assert Decimal(amended["newOrderResponse"]["origQty"]) == Decimal("0.003")

    opened = api.get(f"/api/v1/accounts/{account.pk}/open-orders").json()["orders"]
    assert [o["clientOrderId"] for o in opened] == ["doc-limit-2"]
    resp = api.delete(f"{orders_url(account)}/{amended['newOrderResponse']['orderId']}")
    assert resp.status_code == 200 and resp.json()["status"] == "CANCELED"
    assert Balance.objects.get(account=account, asset="USDT").locked == 0
    again = api.delete(f"{orders_url(account)}/{amended['newOrderResponse']['orderId']}")
    assert again.status_code == 400 and again.json()["code"] == -2011

    resp = api.post(orders_url(account), {"symbol": "BTCUSDT", "side": "BUY", "type": "MARKET", "quantity": "0.002",
                                          "clientOrderId": "doc-market-1"}, format="json")
    assert resp.status_code == 201 and resp.json()["status"] == "FILLED"
    fills = api.get(f"/api/v1/accounts/{account.pk}/fills?symbol=BTCUSDT").json()["trades"]
    assert len(fills) == Fill.objects.filter(account=account).count() >= 1
    assert sum(Decimal(f["qty"]) for f in fills) == Decimal("0.002")
    pnl = api.get(f"/api/v1/accounts/{account.pk}/pnl?period=today").json()
    assert pnl["period"] == "today" and Decimal(pnl["fees"]) > 0
    positions = api.get(f"/api/v1/accounts/{account.pk}/positions").json()["positions"]
    assert [p["symbol"] for p in positions] == ["BTCUSDT"] and Decimal(positions[0]["quantity"]) > 0
    channels = set(AuditEvent.objects.filter(account=account, action__startswith="order.").values_list("channel", flat=True))
    assert channels == {"api"}


def test_every_order_type_oco_quote_qty_cancel_all_and_close_position(quotes, trader):
    user, account, key = trader
    api = bearer(key)
    bid = Decimal(quotes["BTCUSDT"]["bidPrice"])
    tick = Decimal("0.01")
    spend = api.post(orders_url(account), {"symbol": "BTCUSDT", "side": "BUY", "quoteOrderQty": "20"}, format="json")
    assert spend.status_code == 201 and spend.json()["status"] == "FILLED", spend.json()
    assert spend.json()["origQuoteOrderQty"] is not None
    stop = api.post(orders_url(account), {"symbol": "BTCUSDT", "side": "BUY", "type": "STOP_LOSS_LIMIT", "quantity": "0.002",
                                          "price": format((bid * Decimal("1.2")).quantize(tick), "f"),
                                          "stopPrice": format((bid * Decimal("1.1")).quantize(tick), "f"),
                                          "timeInForce": "GTC"}, format="json")
    assert stop.status_code == 201 and stop.json()["isWorking"] is False, stop.json()
    maker = api.post(orders_url(account), {"symbol": "BTCUSDT", "side": "BUY", "type": "LIMIT_MAKER", "quantity": "0.002",
                                           "price": limit_price(quotes)}, format="json")
    assert maker.status_code == 201 and maker.json()["status"] == "NEW"
    held = Decimal(api.get(f"/api/v1/accounts/{account.pk}/positions").json()["positions"][0]["quantity"])
    oco_qty = format((held / 2).quantize(Decimal("0.0001"), rounding="ROUND_DOWN").max(Decimal("0.0014")), "f")
    oco = api.post(f"/api/v1/accounts/{account.pk}/oco",
                   {"symbol": "BTCUSDT", "side": "SELL", "quantity": oco_qty, "price": format((bid * Decimal("1.2")).quantize(tick), "f"),
                    "stopPrice": format((bid * Decimal("0.8")).quantize(tick), "f"), "listClientOrderId": "oco-1"}, format="json")
    assert oco.status_code in (201, 400), oco.json()
    canceled = api.delete(f"{orders_url(account)}?symbol=BTCUSDT")
    assert canceled.status_code == 200 and len(canceled.json()["canceled"]) >= 2
    assert not Order.objects.filter(account=account, status__in=("NEW", "PARTIALLY_FILLED")).exists()
    closed = api.post(f"/api/v1/accounts/{account.pk}/positions/BTCUSDT/close", {"clientOrderId": "close-1"}, format="json")
    assert closed.status_code == 201 and closed.json()["side"] == "SELL" and closed.json()["status"] == "FILLED", closed.json()


def test_idempotent_by_client_order_id(quotes, trader):
    _, account, key = trader
    api = bearer(key)
    body = {"symbol": "BTCUSDT", "side": "BUY", "quantity": "0.002", "clientOrderId": "same-id"}
    first = api.post(orders_url(account), body, format="json")
    second = api.post(orders_url(account), body, format="json")
    assert (first.status_code, second.status_code) == (201, 200)
    assert second.json()["orderId"] == first.json()["orderId"] and second.json()["duplicate"] is True
    assert Order.objects.filter(account=account).count() == 1


@pytest.mark.parametrize("field, value", [
    ("quantity", 0.002), ("quantity", True), ("quantity", "١٢"), ("quantity", "1e-3"), ("quantity", "NaN"),
    ("quantity", "-0.002"), ("price", False), ("side", "HOLD"), ("type", "ICEBERG"), ("timeInForce", "GTX"),
    ("clientOrderId", "has spaces"), ("symbol", 5),
])
def test_bad_input_is_a_400_with_a_binance_code_and_books_nothing(quotes, trader, field, value):
    _, account, key = trader
    body = {"symbol": "BTCUSDT", "side": "BUY", "type": "LIMIT", "quantity": "0.002", "price": "7000", field: value}
    resp = bearer(key).post(orders_url(account), body, format="json")
    assert resp.status_code == 400, resp.json()
    assert resp.json()["code"] == -1100 and field in resp.json()["errors"]
    assert not Order.objects.exists() and not AuditEvent.objects.filter(action="order.place").exists()


def test_service_errors_keep_their_binance_code(quotes, trader):
    _, account, key = trader
    api = bearer(key)
    lot = api.post(orders_url(account), {"symbol": "BTCUSDT", "side": "BUY", "quantity": "0.0000001"}, format="json")
    assert lot.status_code == 400 and lot.json()["code"] == -1013 and "LOT_SIZE" in lot.json()["msg"]
    unknown = api.post(orders_url(account), {"symbol": "BTCUSD", "side": "BUY", "quantity": "0.002"}, format="json")
    assert unknown.status_code == 400 and unknown.json()["code"] == -1121 and "BTCUSDT" in unknown.json()["msg"]
    missing = api.post(orders_url(account), {"side": "BUY", "quantity": "0.002"}, format="json")
    assert missing.status_code == 400 and missing.json()["code"] == -1102
    poor = api.post(orders_url(account), {"symbol": "BTCUSDT", "side": "BUY", "quantity": "100"}, format="json")
    assert poor.status_code == 400 and poor.json()["code"] == -2010
    nobody = APIClient().get("/api/v1/accounts")
    assert nobody.status_code == 401 and nobody.json()["code"] == -1002 and nobody["WWW-Authenticate"].startswith("Bearer")
    forged = bearer("tmcp_forged000000000000000000000000000000").get("/api/v1/accounts")
    assert forged.status_code == 401 and forged.json()["code"] == -1002


def test_rate_limit_is_the_tokens(quotes, trader):
    user, account, _ = trader
    token, key = agent_token_create(user=user, name="slow")
    token.rate_limit_per_minute = 2
    token.save()
    api = bearer(key)
    codes = [api.get("/api/v1/accounts").status_code for _ in range(3)]
    assert codes == [200, 200, 429]
    over = api.get("/api/v1/accounts")
    assert over.json()["code"] == -1003 and int(over["Retry-After"]) >= 1


def test_scopes_are_enforced_like_mcp(quotes, trader):
    user, account, _ = trader
    _, market_only = agent_token_create(user=user, name="market-only", scopes=["market:read"])
    _, reader = agent_token_create(user=user, name="reader", scopes=["market:read", "account:read"])
    assert bearer(market_only).get("/api/v1/ticker/bookTicker?symbol=BTCUSDT").status_code == 200
    resp = bearer(market_only).get(f"/api/v1/accounts/{account.pk}/balances")
    assert resp.status_code == 403 and resp.json()["code"] == -2015 and "account:read" in resp.json()["msg"]
    assert bearer(market_only).head(f"/api/v1/accounts/{account.pk}/balances").status_code == 403
    assert bearer(reader).get(f"/api/v1/accounts/{account.pk}/balances").status_code == 200
    resp = bearer(reader).post(orders_url(account), {"symbol": "BTCUSDT", "side": "BUY", "quantity": "0.002"}, format="json")
    assert resp.status_code == 403 and "'trade' scope" in resp.json()["msg"]
    assert not Order.objects.exists()


def test_token_restricted_to_ethusdt_never_books_or_reads_btcusdt(quotes, trader):
    user, account, key = trader
    owner = bearer(key)
    px = limit_price(quotes)
    btc = owner.post(orders_url(account), {"symbol": "BTCUSDT", "side": "BUY", "type": "LIMIT", "quantity": "0.002",
                                           "price": px, "clientOrderId": "btc-secret"}, format="json").json()
    assert owner.post(orders_url(account), {"symbol": "BTCUSDT", "side": "BUY", "quantity": "0.002"}, format="json").status_code == 201
    token, eth_key = agent_token_create(user=user, name="eth-only")
    token.symbols = ["ETHUSDT"]
    token.save()
    eth = bearer(eth_key)
    before = sorted(Order.objects.values_list("id", "status"))
    for method, url, body in (
        ("post", orders_url(account), {"symbol": "BTCUSDT", "side": "BUY", "quantity": "0.002"}),
        ("post", orders_url(account), {"symbol": "btcusdt", "side": "SELL", "quantity": "0.002"}),
        ("post", f"/api/v1/accounts/{account.pk}/oco", {"symbol": "BTCUSDT", "side": "SELL", "quantity": "0.002",
                                                       "price": "9000", "stopPrice": "5000"}),
        ("post", f"/api/v1/accounts/{account.pk}/positions/BTCUSDT/close", {}),
        ("delete", f"{orders_url(account)}?symbol=BTCUSDT", None),
        ("get", "/api/v1/ticker/bookTicker?symbol=BTCUSDT", None),
        ("get", "/api/v1/ticker/24hr?symbols=ETHUSDT,BTCUSDT", None),
        ("get", "/api/v1/klines?symbol=BTCUSDT", None),
        ("get", "/api/v1/depth?symbol=BTCUSDT", None),
        ("get", "/api/v1/fees?symbols=BTCUSDT", None),
        ("get", f"{orders_url(account)}?symbol=BTCUSDT", None),
        ("get", f"/api/v1/accounts/{account.pk}/fills?symbol=BTCUSDT", None),
    ):
        resp = getattr(eth, method)(url, body, format="json") if body is not None else getattr(eth, method)(url)
        assert resp.status_code == 403 and "only ETHUSDT" in resp.json()["msg"], (method, url, resp.json())
    for url in (f"{orders_url(account)}/{btc['orderId']}",):  # by id: as if it did not exist
        assert eth.get(url).status_code == 404
        assert eth.delete(url).status_code == 404
        assert eth.post(f"{url}/cancel-replace", {"symbol": "ETHUSDT", "side": "BUY", "quantity": "0.01", "type": "LIMIT",
                                                  "price": "100"}, format="json").status_code == 404
    assert sorted(Order.objects.values_list("id", "status")) == before
    for url in (orders_url(account), f"/api/v1/accounts/{account.pk}/open-orders", f"/api/v1/accounts/{account.pk}/fills",
                f"/api/v1/accounts/{account.pk}/positions", f"/api/v1/accounts/{account.pk}/portfolio",
                f"/api/v1/accounts/{account.pk}", "/api/v1/accounts", "/api/v1/ticker/24hr", "/api/v1/fees", "/api/v1/markets"):
        resp = eth.get(url)
        assert resp.status_code == 200 and "BTCUSDT" not in resp.content.decode() and "btc-secret" not in resp.content.decode(), url
    placed = eth.post(orders_url(account), {"symbol": "ETHUSDT", "side": "BUY", "quantity": "0.1"}, format="json")
    assert placed.status_code == 201 and placed.json()["symbol"] == "ETHUSDT", placed.json()
    assert [o["symbol"] for o in eth.get(orders_url(account)).json()["orders"]] == ["ETHUSDT"]


def test_confirm_mode_holds_and_a_person_decides(quotes, trader):
    user, account, _ = trader
    _, key = agent_token_create(user=user, name="careful", confirm_orders=True)
    agent = bearer(key)
    held = agent.post(orders_url(account), {"symbol": "BTCUSDT", "side": "BUY", "quantity": "0.002", "clientOrderId": "ask-1"},
                      format="json")
    assert held.status_code == 202 and held.json()["status"] == "PENDING_APPROVAL", held.json()
    assert not Order.objects.exists()
    again = agent.post(orders_url(account), {"symbol": "BTCUSDT", "side": "BUY", "quantity": "0.002", "clientOrderId": "ask-1"},
                       format="json")
    assert again.status_code == 202 and again.json()["duplicate"] is True and OrderApproval.objects.count() == 1
    listed = agent.get(f"/api/v1/accounts/{account.pk}/approvals").json()["approvals"]
    approval_id = held.json()["approvalId"]
    assert [a["approvalId"] for a in listed] == [approval_id]
    refused = agent.post(f"/api/v1/approvals/{approval_id}/approve", {}, format="json")
    assert refused.status_code == 403 and "person" in refused.json()["msg"]
    decided = session(user).post(f"/api/v1/approvals/{approval_id}/approve", {"note": "ok"}, format="json")
    assert decided.status_code == 200 and decided.json()["order"]["status"] == "FILLED", decided.json()
    assert decided.json()["order"]["clientOrderId"] == "ask-1" and decided.json()["error"] is None
    second = agent.post(orders_url(account), {"symbol": "BTCUSDT", "side": "BUY", "quantity": "0.002", "clientOrderId": "ask-2"},
                        format="json").json()
    rejected = session(user).post(f"/api/v1/approvals/{second['approvalId']}/reject", {}, format="json")
    assert rejected.status_code == 200 and rejected.json()["approval"]["status"] == "REJECTED" and rejected.json()["order"] is None
    assert session(user).post(f"/api/v1/approvals/{second['approvalId']}/reject", {}, format="json").status_code == 400


def test_session_writes_need_the_csrf_token(quotes, trader):
    user, account, _ = trader
    client = session(user, csrf=True)
    body = {"symbol": "BTCUSDT", "side": "BUY", "quantity": "0.002"}
    refused = client.post(orders_url(account), body, format="json")
    assert refused.status_code == 403 and "CSRF" in refused.json()["msg"] and not Order.objects.exists()
    client.get("/")  # the dashboard page sets the csrftoken cookie
    token = client.cookies["csrftoken"].value
    placed = client.post(orders_url(account), body, format="json", HTTP_X_CSRFTOKEN=token)
    assert placed.status_code == 201 and placed.json()["channel"] == "dashboard"


def test_risk_limits_read_by_all_changed_by_the_owner_in_person_and_audited(quotes, trader, make_user):
    user, account, key = trader
    url = f"/api/v1/accounts/{account.pk}/risk/limits"
    assert bearer(key).get(url).json()["maxOrderNotional"] is None
    refused = bearer(key).patch(url, {"maxOrderNotional": "50"}, format="json")
    assert refused.status_code == 403 and refused.json()["code"] == -2015
    grantee = make_user("tom")
    AccountGrant.objects.create(account=account, user=grantee, role="trader")
    assert session(grantee).patch(url, {"maxOrderNotional": "50"}, format="json").status_code == 403
    changed = session(user).patch(url, {"maxOrderNotional": "50", "allowedSymbols": ["btcusdt"], "maxOpenOrders": 3},
                                  format="json")
    assert changed.status_code == 200, changed.json()
    assert changed.json()["maxOrderNotional"] == "50.00000000" and changed.json()["allowedSymbols"] == ["BTCUSDT"]
    limits = RiskLimit.objects.get(account=account)
    assert limits.max_order_notional == Decimal("50") and limits.max_open_orders == 3
    event = AuditEvent.objects.get(action="risk_limit.change")
    assert event.actor_user == user and event.channel == "dashboard"
    assert event.result["before"]["max_order_notional"] is None and Decimal(event.result["after"]["max_order_notional"]) == 50
    bad = session(user).patch(url, {"maxOrderNotional": "0.000000001"}, format="json")
    assert bad.status_code == 400 and RiskLimit.objects.get(account=account).max_order_notional == Decimal("50")
    big = bearer(key).post(orders_url(account), {"symbol": "BTCUSDT", "side": "BUY", "quantity": "0.01"}, format="json")
    assert big.status_code == 400 and big.json()["code"] == -2010 and "max_order_notional" in big.content.decode()
    state = bearer(key).get(f"/api/v1/accounts/{account.pk}/risk").json()
    assert state["tradingState"] == "ACTIVE" and any(r["name"] == "max_order_notional" and r["limit"] == "50" for r in state["limits"])


def test_audit_events_paginated_filtered_and_csv(quotes, trader):
    _, account, key = trader
    api = bearer(key)
    for i in range(3):
        api.post(orders_url(account), {"symbol": "BTCUSDT", "side": "BUY", "quantity": "0.002", "clientOrderId": f"a-{i}"},
                 format="json")
    api.post(orders_url(account), {"symbol": "BTCUSDT", "side": "BUY", "quantity": "0.0000001"}, format="json")
    url = f"/api/v1/accounts/{account.pk}/audit-events"
    page = api.get(f"{url}?action=order.place&pageSize=2").json()
    assert page["count"] == 4 and len(page["results"]) == 2 and page["next"]
    assert all(e["action"] == "order.place" and e["accountId"] == account.pk for e in page["results"])
    rejected = api.get(f"{url}?action=order.place&outcome=rejected").json()
    assert rejected["count"] == 1 and "LOT_SIZE" in rejected["results"][0]["message"]
    resp = api.get(f"{url}?action=order.place&format=csv")
    assert resp.status_code == 200 and resp["Content-Type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(resp.content.decode())))
    assert len(rows) == 4 and {r["outcome"] for r in rows} == {"ok", "rejected"} and "params.symbol" in rows[0]
    empty = api.get(f"{url}?action=no.such.action&format=csv")
    assert empty["Content-Type"].startswith("text/csv") and empty.content.decode().startswith("id,time,accountId,")
    bad = api.get(f"{url}?outcome=maybe&format=csv")
    assert bad.status_code == 400 and bad["Content-Type"] == "application/json" and bad.json()["code"] == -1100


def test_market_data_reads(quotes, trader):
    _, _, key = trader
    api = bearer(key)
    ticker = api.get("/api/v1/ticker/bookTicker?symbol=btcusdt").json()
    assert ticker["symbol"] == "BTCUSDT" and Decimal(ticker["bidPrice"]) == Decimal(quotes["BTCUSDT"]["bidPrice"])
    markets = api.get("/api/v1/markets?quoteAsset=USDT&pageSize=1").json()
    assert len(markets["markets"]) == 1 and markets["total"] >= 2 and markets["nextPage"] == 2
    book = api.get("/api/v1/depth?symbol=BTCUSDT&limit=5").json()
    assert 0 < len(book["bids"]) <= 5 and Decimal(book["bids"][0][0]) < Decimal(book["asks"][0][0])
    klines = api.get("/api/v1/klines?symbol=BTCUSDT&interval=1h&limit=3").json()
    assert len(klines["klines"]) == 3 and klines["klines"][0]["openTime"] < klines["klines"][1]["openTime"]
    fees = api.get("/api/v1/fees?symbols=BTCUSDT").json()
    assert [f["symbol"] for f in fees["fees"]] == ["BTCUSDT"]
    indicators = api.get("/api/v1/indicators?symbol=BTCUSDT&interval=1m&indicators=rsi,sma").json()
    assert set(indicators["values"]) == {"rsi", "sma"} and indicators["values"]["rsi"]["params"] == {"period": 14}
    assert indicators["candles"] > 14 and 0 <= Decimal(indicators["values"]["rsi"]["rsi"]) <= 100, indicators["candles"]
    none = api.get("/api/v1/indicators?symbol=BTCUSDT&interval=1M")  # nothing recorded: nothing to wait for
    assert none.status_code == 404 and "No closed 1M candles" in none.json()["msg"]
    assert api.get("/api/v1/klines?symbol=BTCUSDT&interval=2m").json()["code"] == -1100
    assert api.get("/api/v1/ticker/bookTicker?symbol=NOPEUSDT").json()["code"] == -1121


def test_schema_is_openapi_31_and_valid_without_warnings(db):
    proc = subprocess.run([sys.executable, "manage.py", "spectacular", "--validate", "--fail-on-warn", "--file", "/dev/null"],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Warning" not in proc.stderr, proc.stderr
    schema = APIClient().get("/api/schema/?format=json").json()
    assert schema["openapi"].startswith("3.1")
    assert {"/api/v1/accounts/{accountId}/orders", "/api/v1/accounts/{accountId}/oco", "/api/v1/klines"} <= set(schema["paths"])
    links = schema["paths"]["/api/v1/accounts/{accountId}/orders"]["post"]["responses"]["201"]["links"]
    operations = {op["operationId"] for path in schema["paths"].values() for op in path.values()}
    assert {link["operationId"] for link in links.values()} == {"order_get", "order_cancel", "order_cancel_replace"} <= operations

    def leaves(node, path=""):
        if isinstance(node, dict):
            if "properties" in node:
                for name, prop in node["properties"].items():
                    yield f"{path}.{name}", prop
            for k, v in node.items():
                yield from leaves(v, f"{path}.{k}")

    for where, prop in leaves(schema["components"]["schemas"]):
        if "$ref" in prop or prop.get("type") in ("array", "object") or "allOf" in prop or "oneOf" in prop:
            continue
        assert prop.get("type") and prop.get("description") and "examples" in prop, (where, prop)


def test_docs_pages_use_local_assets(db):
    for url in ("/api/docs/", "/api/redoc/"):
        html = APIClient().get(url).content.decode()
        assert "/static/drf_spectacular_sidecar/" in html, url
        assert "cdn." not in html and "unpkg" not in html and "jsdelivr" not in html, url
        assets = re.findall(r'(?:src|href)="(/static/drf_spectacular_sidecar/[^"]+)"', html)
        assert assets, url
        for asset in assets:  # shipped by drf-spectacular-sidecar, found (and collected) as static files
            assert finders.find(asset.removeprefix("/static/")), asset


def test_token_reads_and_refusals_are_audited_like_mcp_calls(quotes, trader):
    from risk.audit import audit_drain

    user, account, key = trader
    _, reader = agent_token_create(user=user, name="reader", scopes=["account:read"])
    assert bearer(key).get(f"/api/v1/accounts/{account.pk}/balances?x=1").status_code == 200
    assert bearer(reader).get("/api/v1/ticker/bookTicker?symbol=BTCUSDT").status_code == 403
    assert bearer(reader).post(orders_url(account), {"symbol": "BTCUSDT", "side": "BUY", "quantity": "0.002"},
                               format="json").status_code == 403
    session(user).get(f"/api/v1/accounts/{account.pk}/balances")
    audit_drain()
    read = AuditEvent.objects.get(action="api.balances")
    assert read.channel == "api" and read.outcome == "ok" and read.account == account and read.actor_token.name == "alice-agent"
    assert read.params == {"x": "1", "accountId": str(account.pk)}
    refused = AuditEvent.objects.filter(action__in=("api.ticker-book", "api.orders"), outcome="rejected")
    assert sorted(e.action for e in refused) == ["api.orders", "api.ticker-book"]
    assert all("market:read" in e.message or "trade" in e.message for e in refused)
