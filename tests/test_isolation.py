"""Isolation matrix: user B (and a token without the needed scope) gets nothing of user A's
account from any MCP tool or REST endpoint. The MCP rows come from ``tools/list``, so a new tool
is covered without editing this file."""
import json

import pytest
from rest_framework.test import APIClient

from risk.models import AgentToken
from risk.services import agent_token_create
from test_mcp import call, rpc
from trading.models import Order
from trading.services import account_create

PLAUSIBLE = {
    "symbol": "BTCUSDT", "symbols": ["BTCUSDT"], "side": "SELL", "type": "MARKET", "order_type": "MARKET",
    "quantity": "0.002", "price": "7000", "stop_price": "7000", "interval": "1m", "period": "today", "limit": 10,
    "stream": "btcusdt@bookTicker", "time_in_force": "GTC",
}


def arguments_for(tool: dict, account_id: int, secret_ids: dict) -> dict:
    props = tool["inputSchema"].get("properties", {})
    args = {k: v for k, v in PLAUSIBLE.items() if k in props}
    if "account_id" in props:
        args["account_id"] = account_id
    if "order_id" in props:
        args["order_id"] = secret_ids["order_id"]
    if "client_order_id" in props and tool["name"] not in {"place_order", "close_position"}:
        args["client_order_id"] = secret_ids["client_order_id"]
    return args


@pytest.fixture
def two_users(quotes, trader, make_user):
    user_a, account_a, key_a = trader
    is_error, order = call(key_a, "place_order", symbol="BTCUSDT", side="BUY", quantity="0.004",
                           client_order_id="alice-secret-order")
    assert not is_error
    bob = make_user("bob")
    account_create(owner=bob, name="Bob paper")
    _, key_b = agent_token_create(user=bob, name="bob-agent")
    return account_a, key_a, key_b, {"order_id": order["orderId"], "client_order_id": "alice-secret-order"}


def test_no_mcp_tool_leaks_or_touches_another_users_account(two_users):
    account_a, key_a, key_b, secret = two_users
    orders_before = list(Order.objects.filter(account=account_a).values_list("id", "status"))
    tools = rpc(key_b, "tools/list").json()["result"]["tools"]
    assert len(tools) >= 5
    for tool in tools:
        args = arguments_for(tool, account_a.pk, secret)
        resp = rpc(key_b, "tools/call", {"name": tool["name"], "arguments": args})
        assert resp.status_code == 200
        text = resp.content.decode()
        assert "alice-secret-order" not in text, (tool["name"], text[:500])
        assert f'"accountId": {account_a.pk}' not in text and f'"accountId":{account_a.pk}' not in text, (tool["name"], text[:500])
        if "account_id" in args:
            result = resp.json()["result"]
            assert result["isError"] and f"Account {account_a.pk} not found" in result["content"][0]["text"], tool["name"]
    assert list(Order.objects.filter(account=account_a).values_list("id", "status")) == orders_before


def test_tools_outside_the_token_scopes_are_hidden_and_refused(two_users):
    account_a, key_a, _, secret = two_users
    from risk.models import AgentToken

    user_a = AgentToken.objects.get(name="alice-agent").user
    _, market_only = agent_token_create(user=user_a, name="market-only", scopes=["market:read"])
    listed = {t["name"] for t in rpc(market_only, "tools/list").json()["result"]["tools"]}
    for tool in rpc(key_a, "tools/list").json()["result"]["tools"]:
        if tool["name"] in listed:
            continue
        is_error, message = call(market_only, tool["name"], **arguments_for(tool, account_a.pk, secret))
        assert is_error and "lacks the" in message and "scope" in message, (tool["name"], message)


REST_BODY = {  # a valid body for every /api/v1/ write, so the refusal is about whose object it is
    "symbol": "BTCUSDT", "side": "SELL", "type": "MARKET", "quantity": "0.002", "price": "9000", "stopPrice": "5000",
    "note": "", "maxOrderNotional": "1",
}


def rest_client(*, key=None, user=None):
    client = APIClient()
    if key:
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {key}")
    else:
        client.force_login(user)
    return client


def test_rest_v1_never_shows_or_touches_another_users_objects(two_users):
    """Every /api/v1/ operation that names an account, order or approval, taken from the OpenAPI
    schema (a new endpoint is covered without editing this test), called by user B's token and by
    B's session with A's ids: 404 every time (never 403, which would confirm the id exists), no
    trace of A's data, and A's orders, balances, limits and audit unchanged. The lists without an
    id (accounts, fees) show B only his own."""
    from risk.models import AuditEvent, OrderApproval, RiskLimit
    from trading.models import Balance, Fill

    account_a, key_a, key_b, secret = two_users
    user_a = account_a.owner
    _, confirm_key = agent_token_create(user=user_a, name="alice-careful", confirm_orders=True)
    held = rest_client(key=confirm_key).post(f"/api/v1/accounts/{account_a.pk}/orders",
                                             {"symbol": "BTCUSDT", "side": "BUY", "quantity": "0.002",
                                              "clientOrderId": "alice-held"}, format="json")
    assert held.status_code == 202, held.json()
    bob = AgentToken.objects.get(name="bob-agent").user
    ids = {"accountId": account_a.pk, "orderId": secret["order_id"], "approvalId": held.json()["approvalId"],
           "symbol": "BTCUSDT"}

    def snapshot():
        return (sorted(Order.objects.filter(account=account_a).values_list("id", "status")),
                sorted(Balance.objects.filter(account=account_a).values_list("asset", "free", "locked")),
                list(RiskLimit.objects.filter(account=account_a).values()), Fill.objects.filter(account=account_a).count(),
                list(OrderApproval.objects.values_list("id", "status")),
                AuditEvent.objects.filter(account=account_a).exclude(actor_user=bob).count())

    before = snapshot()
    schema = APIClient().get("/api/schema/?format=json").json()
    checked = 0
    for path, operations in schema["paths"].items():
        if not any(f"{{{name}}}" in path for name in ("accountId", "orderId", "approvalId")):
            continue
        url = path
        for name, value in ids.items():
            url = url.replace(f"{{{name}}}", str(value))
        for method in operations:
            for who, client in (("token", rest_client(key=key_b)), ("session", rest_client(user=bob))):
                if method == "get":
                    resp = client.get(url)
                elif method == "delete":
                    resp = client.delete(url + "?symbol=BTCUSDT")
                else:
                    resp = getattr(client, method)(url, REST_BODY, format="json")
                text = resp.content.decode()
                assert resp.status_code == 404, (who, method, url, resp.status_code, text[:300])
                assert "alice" not in text and resp.json()["code"] == -2013, (who, method, url, text[:300])
                checked += 1
    assert checked >= 40
    for who, client in (("token", rest_client(key=key_b)), ("session", rest_client(user=bob))):
        mine = client.get("/api/v1/accounts").json()
        assert [a["name"] for a in mine] == ["Bob paper"], who
        fees = client.get("/api/v1/fees?symbols=BTCUSDT").json()
        assert [a["name"] for a in fees["accounts"]] == ["Bob paper"], who
    assert snapshot() == before


def test_grants_viewer_reads_trader_trades_others_see_nothing(two_users, make_user):
    from risk.models import AccountGrant

    account_a, _, _, _ = two_users
    viewer, trader_user = make_user("vera"), make_user("tom")
    AccountGrant.objects.create(account=account_a, user=viewer, role="viewer")
    AccountGrant.objects.create(account=account_a, user=trader_user, role="trader")
    _, key_v = agent_token_create(user=viewer, name="vera-agent")
    _, key_t = agent_token_create(user=trader_user, name="tom-agent")

    is_error, orders = call(key_v, "list_orders", account_id=account_a.pk)
    assert not is_error and orders["orders"][0]["clientOrderId"] == "alice-secret-order"
    is_error, message = call(key_v, "place_order", account_id=account_a.pk, symbol="BTCUSDT", side="SELL", quantity="0.002")
    assert is_error and "not trade on it" in message
    is_error, order = call(key_t, "place_order", account_id=account_a.pk, symbol="BTCUSDT", side="SELL", quantity="0.002")
    assert not is_error and order["status"] == "FILLED"


def test_token_restricted_to_accounts_and_symbols(two_users):
    from risk.models import AgentToken

    account_a, key_a, _, _ = two_users
    user_a = AgentToken.objects.get(name="alice-agent").user
    second = account_create(owner=user_a, name="Second")
    token, key = agent_token_create(user=user_a, name="only-second")
    token.accounts.set([second])
    token.symbols = ["ETHUSDT"]
    token.save()
    is_error, message = call(key, "get_account", account_id=account_a.pk)
    assert is_error and f"Account {account_a.pk} not found" in message
    is_error, state = call(key, "get_account")
    assert not is_error and state["accountId"] == second.pk
    is_error, message = call(key, "place_order", symbol="BTCUSDT", side="BUY", quantity="0.002")
    assert is_error and "only ETHUSDT" in message
    is_error, order = call(key, "place_order", symbol="ETHUSDT", side="BUY", quantity="0.01")
    assert not is_error and order["accountId"] == second.pk
    # Tools that take a list of symbols, or a stream name, are held to the same restriction.
    for tool, args in (("get_market_data", {"symbols": ["ETHUSDT", "BTCUSDT"]}), ("get_ticker_24h", {"symbols": "ethusdt,btcusdt"}),
                       ("get_fees", {"symbols": ["BTCUSDT"]}), ("subscribe_stream", {"stream": "btcusdt@trade"})):
        is_error, message = call(key, tool, **args)
        assert is_error and "only ETHUSDT" in message and "BTCUSDT" in message, (tool, message)


def test_account_get_and_accounts_for_user_apply_the_same_rules(make_user):
    """Owner, viewer and trader grants, a stranger, and a token restricted to one account: what
    ``account_get`` admits (by id and as the first account) is exactly what ``accounts_for_user``
    lists, and both give the expected accounts for every case."""
    from risk.models import AccountGrant
    from core.errors import NotFound, PermissionDenied
    from trading.selectors import account_get, accounts_for_user

    alice, bob, carol, dave = (make_user(n) for n in ("alice", "bob", "carol", "dave"))
    a1, a2 = account_create(owner=alice, name="A1"), account_create(owner=alice, name="A2")
    AccountGrant.objects.create(account=a1, user=bob, role="viewer")
    AccountGrant.objects.create(account=a1, user=carol, role="trader")
    open_token, _ = agent_token_create(user=alice, name="all")
    narrow_token, _ = agent_token_create(user=alice, name="narrow")
    narrow_token.accounts.set([a2])
    cases = {  # (user, token, need) -> the accounts it may use
        (alice, None, "read"): {a1, a2}, (alice, None, "trade"): {a1, a2},
        (alice, open_token, "trade"): {a1, a2}, (alice, narrow_token, "read"): {a2}, (alice, narrow_token, "trade"): {a2},
        (bob, None, "read"): {a1}, (bob, None, "trade"): set(),
        (carol, None, "read"): {a1}, (carol, None, "trade"): {a1},
        (dave, None, "read"): set(), (dave, None, "trade"): set(),
    }
    for (user, token, need), expected in cases.items():
        case = f"{user.username} token={getattr(token, 'name', None)} {need}"
        assert set(accounts_for_user(user, need=need, token=token)) == expected, case
        for account in (a1, a2):
            if account in expected:
                assert account_get(user=user, account_id=account.pk, need=need, token=token) == account, case
            else:
                readable = account in accounts_for_user(user, need="read", token=token)
                with pytest.raises(PermissionDenied if readable and need == "trade" else NotFound):
                    account_get(user=user, account_id=account.pk, need=need, token=token)
        if expected:
            assert account_get(user=user, need=need, token=token) == min(expected, key=lambda a: a.pk), case
        else:
            with pytest.raises(NotFound):
                account_get(user=user, need=need, token=token)
