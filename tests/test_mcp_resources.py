"""MCP resources, resource templates and ``completion/complete`` (``mcpapi.resources``,
``mcpapi.completion``).

The end-to-end tests run the production web server and the ingester as real processes against the
replay exchange (``conftest.stack``) and talk to them with the ``mcp`` SDK's ``ClientSession`` over
streamable HTTP (``/mcp``) and over the WebSocket (``/mcp/ws``): what is listed and read is what
the caller's token allows, reads answer what the matching tool answers, and refusals are JSON-RPC
errors with code -32002 that do not tell another user's account from a missing one. The
in-process tests check the audit trail and completion against the full recorded exchangeInfo.
"""
import asyncio
import json
from decimal import ROUND_DOWN, Decimal

import pytest
from mcp import types
from mcp.shared.exceptions import McpError
from pydantic import AnyUrl

from marketdata.services import exchange_info_sync
from mcp_sessions import TRANSPORTS, mcp_session
from risk.models import AuditEvent, Outcome, RiskLimit
from risk.services import agent_token_create
from risk.trust import SECURITY_KEY
from trading.services import account_create

TEMPLATES = {
    "tradingmcp://markets/{symbol}/ticker", "tradingmcp://markets/{symbol}/book",
    "tradingmcp://markets/{symbol}/klines/{interval}", "tradingmcp://accounts/{account_id}",
    "tradingmcp://accounts/{account_id}/orders/open", "tradingmcp://accounts/{account_id}/activity",
}
MARKET_TEMPLATES = {t for t in TEMPLATES if t.startswith("tradingmcp://markets/")}
NOT_FOUND = -32002


def run(coro, timeout=90):
    return asyncio.run(asyncio.wait_for(coro, timeout))


@pytest.fixture(autouse=True)
def _close_thread_connections():
    """In-process tests run sync code in the tool pool: close those threads' database connections
    after each test (PostgreSQL cannot drop the test database while they are open)."""
    yield
    from core import workers

    workers.close_tool_connections()


def payload(result: types.ReadResourceResult) -> dict:
    (content,) = result.contents
    assert content.mimeType == "application/json"
    return json.loads(content.text)


def tool_payload(result: types.CallToolResult) -> dict:
    assert not result.isError, result
    return json.loads(result.content[0].text)


def same_data(a: dict, b: dict) -> bool:
    """Equal but for the trust block's ``tool_name`` (a resource and a tool are named differently)."""
    strip = lambda d: {**d, SECURITY_KEY: {**d[SECURITY_KEY], "tool_name": None}} if SECURITY_KEY in d else d  # noqa: E731
    return strip(a) == strip(b)


async def read_error(session, uri: str) -> types.ErrorData:
    with pytest.raises(McpError) as caught:
        await session.read_resource(AnyUrl(uri))
    return caught.value.error


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_resources_list_read_and_templates_answer_what_the_tools_answer(paused_stack, trader, transport):
    _, account, token = trader
    a = account.pk

    async def scenario():
        async with mcp_session(paused_stack, token, transport) as s:
            ticker = tool_payload(await s.call_tool("get_ticker", {"symbol": "BTCUSDT"}))
            tick = Decimal("0.01")
            price = (Decimal(ticker["bidPrice"]) * Decimal("0.9")).quantize(tick, rounding=ROUND_DOWN)
            order = tool_payload(await s.call_tool("place_order", {
                "symbol": "BTCUSDT", "side": "BUY", "type": "LIMIT", "quantity": "0.002", "price": str(price),
                "time_in_force": "GTC", "client_order_id": f"res-open-{transport}"}))
            listed = {str(r.uri) for r in (await s.list_resources()).resources}
            templates = {t.uriTemplate for t in (await s.list_resource_templates()).resourceTemplates}
            reads = {}
            for key, uri, tool, args in [
                ("ticker", "tradingmcp://markets/BTCUSDT/ticker", "get_ticker", {"symbol": "BTCUSDT"}),
                ("book", "tradingmcp://markets/BTCUSDT/book", "get_order_book", {"symbol": "BTCUSDT", "limit": 100}),
                ("klines", "tradingmcp://markets/BTCUSDT/klines/1h", "get_klines", {"symbol": "BTCUSDT", "interval": "1h", "limit": 100}),
                ("account", f"tradingmcp://accounts/{a}", "get_account", {"account_id": a}),
                ("open", f"tradingmcp://accounts/{a}/orders/open", "list_open_orders", {"account_id": a}),
            ]:
                reads[key] = (payload(await s.read_resource(AnyUrl(uri))), tool_payload(await s.call_tool(tool, args)))
            accounts = payload(await s.read_resource(AnyUrl("tradingmcp://accounts")))
            activity = payload(await s.read_resource(AnyUrl(f"tradingmcp://accounts/{a}/activity")))
            errors = [await read_error(s, uri) for uri in (
                "tradingmcp://markets/NOSUCHCOIN/ticker", "tradingmcp://markets/BTCUSDT/klines/2m",
                "tradingmcp://accounts/abc", "tradingmcp://no/such/thing")]
            return order, listed, templates, reads, accounts, activity, errors

    order, listed, templates, reads, accounts, activity, errors = run(scenario())
    assert {f"tradingmcp://accounts/{a}", f"tradingmcp://accounts/{a}/orders/open", f"tradingmcp://accounts/{a}/activity",
            "tradingmcp://accounts", "tradingmcp://markets/BTCUSDT/ticker", "tradingmcp://markets/BTCUSDT/book"} <= listed
    assert templates == TEMPLATES
    resource, tool = reads["ticker"]
    assert {**resource, "ageMs": 0} == {**tool, "ageMs": 0} and resource["bidPrice"]
    for key in ("book", "klines", "open"):
        assert same_data(*reads[key]), key
    assert len(reads["book"][0]["bids"]) == 100 and reads["klines"][0]["klines"] and reads["klines"][0]["interval"] == "1h"
    assert [o["clientOrderId"] for o in reads["open"][0]["orders"]] == [order["clientOrderId"]]
    resource, tool = reads["account"]
    risk = resource.pop("risk")
    assert same_data(resource, tool) and Decimal(tool["balances"][0]["locked"]) > 0  # the open order's lock
    assert risk["accountId"] == a and risk["tradingState"] == "ACTIVE" and "maxOpenOrders" in risk
    assert accounts["accounts"] == [{"accountId": a, "name": "Paper", "venue": account.venue, "quoteAsset": "USDT",
                                     "uri": f"tradingmcp://accounts/{a}"}]
    assert "accounts[].name" in accounts[SECURITY_KEY]["untrusted_fields"]  # a name people wrote
    assert activity["events"][0]["action"] == "order.place" and activity["events"][0]["accountId"] == a
    assert {e.code for e in errors} == {NOT_FOUND}, errors
    assert "NOSUCHCOIN" in errors[0].message and "Valid intervals" in errors[1].message


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_another_users_token_neither_lists_reads_nor_completes_the_account(paused_stack, trader, make_user, transport):
    _, account, _ = trader
    bob = make_user("bob")
    bobs = account_create(owner=bob, name="Bob's")
    _, bob_token = agent_token_create(user=bob, name="bob-agent")
    missing = bobs.pk + 1000
    a = account.pk

    async def scenario():
        async with mcp_session(paused_stack, bob_token, transport) as s:
            listed = {str(r.uri) for r in (await s.list_resources()).resources}
            mine = payload(await s.read_resource(AnyUrl("tradingmcp://accounts")))
            errors = {}
            for uri in (f"tradingmcp://accounts/{a}", f"tradingmcp://accounts/{a}/orders/open",
                        f"tradingmcp://accounts/{a}/activity", f"tradingmcp://accounts/{missing}"):
                errors[uri] = await read_error(s, uri)
            completed = {}
            for ref in (types.ResourceTemplateReference(type="ref/resource", uri="tradingmcp://accounts/{account_id}"),
                        types.PromptReference(type="ref/prompt", name="portfolio_review")):
                completed[ref.type] = (await s.complete(ref, {"name": "account_id", "value": ""})).completion
            return listed, mine, errors, completed

    listed, mine, errors, completed = run(scenario())
    assert not any(f"accounts/{a}" in uri for uri in listed) and f"tradingmcp://accounts/{bobs.pk}" in listed
    assert [x["accountId"] for x in mine["accounts"]] == [bobs.pk]
    assert {e.code for e in errors.values()} == {NOT_FOUND}
    # Alice's account reads exactly like an id that does not exist.
    assert errors[f"tradingmcp://accounts/{a}"].message.replace(f"Account {a} ", "Account N ") == \
        errors[f"tradingmcp://accounts/{missing}"].message.replace(f"Account {missing} ", "Account N ")
    assert f"Account {a} not found" in errors[f"tradingmcp://accounts/{a}"].message
    for completion in completed.values():  # the identity reached the completion handler on this transport
        assert completion.values == [str(bobs.pk)] and completion.total == 1 and not completion.hasMore


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_a_restricted_token_sees_and_reads_only_what_it_may(paused_stack, trader, transport):
    user, account, _ = trader
    second = account_create(owner=user, name="Second")
    restricted, restricted_key = agent_token_create(user=user, name="btc-only-second")
    restricted.symbols = ["BTCUSDT"]
    restricted.save()
    restricted.accounts.set([second])
    _, market_key = agent_token_create(user=user, name="market-only", scopes=["market:read"])
    _, account_key = agent_token_create(user=user, name="account-only", scopes=["account:read"])

    async def restricted_scenario():
        async with mcp_session(paused_stack, restricted_key, transport) as s:
            listed = {str(r.uri) for r in (await s.list_resources()).resources}
            btc = payload(await s.read_resource(AnyUrl("tradingmcp://markets/BTCUSDT/ticker")))
            eth = await read_error(s, "tradingmcp://markets/ETHUSDT/ticker")
            eth_book = await read_error(s, "tradingmcp://markets/ETHUSDT/book")
            first = await read_error(s, f"tradingmcp://accounts/{account.pk}")
            symbols = (await s.complete(types.ResourceTemplateReference(type="ref/resource", uri="tradingmcp://markets/{symbol}/ticker"),
                                        {"name": "symbol", "value": ""})).completion
            return listed, btc, eth, eth_book, first, symbols

    async def market_scenario():
        async with mcp_session(paused_stack, market_key, transport) as s:
            listed = {str(r.uri) for r in (await s.list_resources()).resources}
            templates = {t.uriTemplate for t in (await s.list_resource_templates()).resourceTemplates}
            accounts = await read_error(s, "tradingmcp://accounts")
            one = await read_error(s, f"tradingmcp://accounts/{account.pk}")
            ids = (await s.complete(types.ResourceTemplateReference(type="ref/resource", uri="tradingmcp://accounts/{account_id}"),
                                    {"name": "account_id", "value": ""})).completion
            return listed, templates, accounts, one, ids

    async def account_scenario():
        async with mcp_session(paused_stack, account_key, transport) as s:
            templates = {t.uriTemplate for t in (await s.list_resource_templates()).resourceTemplates}
            ticker = await read_error(s, "tradingmcp://markets/BTCUSDT/ticker")
            return templates, ticker

    listed, btc, eth, eth_book, first, symbols = run(restricted_scenario())
    assert listed == {"tradingmcp://accounts", f"tradingmcp://accounts/{second.pk}", f"tradingmcp://accounts/{second.pk}/orders/open",
                      f"tradingmcp://accounts/{second.pk}/activity", "tradingmcp://markets/BTCUSDT/ticker",
                      "tradingmcp://markets/BTCUSDT/book"}
    assert btc["symbol"] == "BTCUSDT"
    assert eth.code == eth_book.code == first.code == NOT_FOUND and "only BTCUSDT" in eth.message
    assert symbols.values == ["BTCUSDT"] and symbols.total == 1

    listed, templates, accounts, one, ids = run(market_scenario())
    assert listed == {"tradingmcp://markets/BTCUSDT/ticker", "tradingmcp://markets/BTCUSDT/book",
                      "tradingmcp://markets/ETHUSDT/ticker", "tradingmcp://markets/ETHUSDT/book"}
    assert templates == MARKET_TEMPLATES
    assert accounts.code == one.code == NOT_FOUND and "account:read" in accounts.message
    assert ids.values == [] and ids.total == 0

    templates, ticker = run(account_scenario())
    assert templates == TEMPLATES - MARKET_TEMPLATES and ticker.code == NOT_FOUND and "market:read" in ticker.message


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_completion_of_each_argument_kind(paused_stack, trader, transport):
    user, account, token = trader
    second = account_create(owner=user, name="Second")
    template = lambda uri: types.ResourceTemplateReference(type="ref/resource", uri=uri)  # noqa: E731
    prompt = lambda name: types.PromptReference(type="ref/prompt", name=name)  # noqa: E731
    asks = {
        "symbol": (template("tradingmcp://markets/{symbol}/book"), "symbol", "btc"),
        "symbol-prompt": (prompt("market_brief"), "symbol", "ETH"),
        "interval": (template("tradingmcp://markets/{symbol}/klines/{interval}"), "interval", "3"),
        "indicators": (prompt("market_brief"), "indicators", "rsi,m"),
        "indicators-first": (prompt("market_brief"), "indicators", "s"),
        "account": (prompt("eod_pnl_report"), "account_id", ""),
        "side": (prompt("pre_trade_checklist"), "side", "s"),
        "unknown-prompt": (prompt("test_prompt_with_arguments"), "arg1", ""),
        "unknown-argument": (prompt("market_brief"), "nonsense", ""),
        "unknown-template": (template("tradingmcp://nowhere/{symbol}"), "symbol", "BTC"),
    }

    async def scenario():
        async with mcp_session(paused_stack, token, transport) as s:
            return {k: (await s.complete(ref, {"name": name, "value": value})).completion
                    for k, (ref, name, value) in asks.items()}

    got = run(scenario())
    assert got["symbol"].values == ["BTCUSDT"] and got["symbol-prompt"].values == ["ETHUSDT"]
    assert got["interval"].values == ["3m", "30m", "3d"] and got["interval"].total == 3
    assert got["indicators"].values == ["rsi,macd"]
    assert got["indicators-first"].values == ["sma", "stoch"]
    assert got["account"].values == [str(account.pk), str(second.pk)] and got["account"].total == 2
    assert got["side"].values == ["SELL"]
    for key in ("unknown-prompt", "unknown-argument", "unknown-template"):
        assert got[key].values == [] and not got[key].hasMore, key


# --- in-process -----------------------------------------------------------------------------------

@pytest.fixture
def all_symbols(db, replay):
    """Every symbol of the recorded exchangeInfo stored (a second replay exchange serves them all)."""
    from marketdata.binance import make_client
    from replay.server import ReplayServer

    with ReplayServer(port=0, full_exchange_info=True, paused=True) as venue:
        count = exchange_info_sync(client=make_client(api_url=venue.api_url))
    assert count > 1000
    return count


def complete(key, ref: dict, name: str, value: str) -> dict:
    from test_mcp import rpc

    body = rpc(key, "completion/complete", {"ref": ref, "argument": {"name": name, "value": value}}).json()
    return body["result"]["completion"]


def test_symbol_completion_is_a_prefix_match_on_the_stored_symbols_capped_at_100(all_symbols, trader):
    from marketdata.models import Symbol

    user, _, key = trader
    ref = {"type": "ref/prompt", "name": "market_brief"}
    btc = complete(key, ref, "symbol", "BTC")
    expected = sorted(Symbol.objects.filter(symbol__startswith="BTC").values_list("symbol", flat=True))
    assert btc["values"] == expected[:100] and btc["total"] == len(expected) and {"BTCUSDT", "BTCUSDC"} <= set(btc["values"])
    everything = complete(key, ref, "symbol", "")
    assert len(everything["values"]) == 100 and everything["total"] == all_symbols and everything["hasMore"] is True
    restricted, restricted_key = agent_token_create(user=user, name="two-symbols")
    restricted.symbols = ["BTCUSDC", "ETHUSDT"]
    restricted.save()
    assert complete(restricted_key, ref, "symbol", "BTC") == {"values": ["BTCUSDC"], "total": 1, "hasMore": False}


def test_resource_reads_are_audited_like_read_tools_refusals_too(quotes, trader):
    from risk.audit import audit_drain
    from test_mcp import rpc

    _, account, key = trader
    ok = rpc(key, "resources/read", {"uri": f"tradingmcp://accounts/{account.pk}"}).json()
    ticker = rpc(key, "resources/read", {"uri": "tradingmcp://markets/ETHUSDT/ticker"}).json()
    refused = rpc(key, "resources/read", {"uri": f"tradingmcp://accounts/{account.pk + 99}/activity"}).json()
    assert "result" in ok and "result" in ticker and refused["error"]["code"] == NOT_FOUND
    audit_drain()
    rows = {e.action: e for e in AuditEvent.objects.filter(action__startswith="mcp.resource.")}
    assert rows["mcp.resource.account"].account_id == account.pk and rows["mcp.resource.account"].outcome == Outcome.OK
    assert rows["mcp.resource.account"].params == {"account_id": str(account.pk)}
    assert rows["mcp.resource.ticker"].params == {"symbol": "ETHUSDT"} and rows["mcp.resource.ticker"].actor_token.name == "alice-agent"
    assert rows["mcp.resource.activity"].outcome == Outcome.REJECTED and rows["mcp.resource.activity"].account_id is None


def test_account_resource_names_every_limit_and_the_trading_state(quotes, trader):
    from test_mcp import rpc

    _, account, key = trader
    RiskLimit.objects.update_or_create(account=account, defaults={"max_order_notional": Decimal("250"), "max_open_orders": 3})
    body = rpc(key, "resources/read", {"uri": f"tradingmcp://accounts/{account.pk}"}).json()
    risk = json.loads(body["result"]["contents"][0]["text"])["risk"]
    assert Decimal(risk["maxOrderNotional"]) == 250 and risk["maxOpenOrders"] == 3 and risk["maxDailyLoss"] is None
    assert risk["tradingState"] == "ACTIVE"


def test_initialize_advertises_resources_prompts_and_completions(trader):
    from test_mcp import rpc

    _, _, key = trader
    result = rpc(key, "initialize", {"protocolVersion": "2025-06-18", "capabilities": {},
                                     "clientInfo": {"name": "t", "version": "1"}}).json()["result"]
    assert {"resources", "prompts", "completions", "tools"} <= set(result["capabilities"])
