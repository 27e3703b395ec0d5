"""MCP prompts (``mcpapi.prompts``) end to end: the production web server and the ingester as real
processes against the replay exchange (``conftest.stack``), the ``mcp`` SDK's ``ClientSession`` over
streamable HTTP (``/mcp``) and the WebSocket (``/mcp/ws``). Each prompt's text carries the live
figures the matching tools answer at that moment; prompts are listed and built only from what the
caller's token may read; a bad prompt request is JSON-RPC error -32602."""
import asyncio
import json
from decimal import ROUND_DOWN, Decimal

import pytest
from mcp import types
from mcp.shared.exceptions import McpError

from mcp_sessions import TRANSPORTS, mcp_session
from risk.models import RiskLimit
from risk.services import agent_token_create
from risk.trust import INSTRUCTIONS, SECURITY_KEY
from trading.services import account_create

PROMPTS = {
    "market_brief": ["symbol", "interval", "indicators"],
    "portfolio_review": ["account_id"],
    "pre_trade_checklist": ["symbol", "side", "quantity", "account_id"],
    "eod_pnl_report": ["account_id"],
}
INVALID_PARAMS = -32602


def run(coro, timeout=120):
    return asyncio.run(asyncio.wait_for(coro, timeout))


def tool(result: types.CallToolResult) -> dict:
    assert not result.isError, result
    return json.loads(result.content[0].text)


def text(result: types.GetPromptResult) -> str:
    (message,) = result.messages
    assert message.role == "user" and message.content.type == "text"
    return message.content.text


async def prompt_error(session, name: str, arguments: dict | None = None) -> types.ErrorData:
    with pytest.raises(McpError) as caught:
        await session.get_prompt(name, arguments)
    return caught.value.error


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_prompts_carry_the_live_figures_and_the_accounts_limits(paused_stack, trader, transport):
    _, account, token = trader
    RiskLimit.objects.update_or_create(account=account, defaults={
        "max_order_notional": Decimal("500"), "max_open_orders": 4, "max_daily_loss": Decimal("75"),
        "allowed_symbols": ["BTCUSDT", "ETHUSDT"]})

    async def scenario():
        async with mcp_session(paused_stack, token, transport) as s:
            listed = {p.name: [a.name for a in p.arguments] for p in (await s.list_prompts()).prompts}
            bought = tool(await s.call_tool("place_order", {"symbol": "BTCUSDT", "side": "BUY", "quantity": "0.002",
                                                            "client_order_id": f"prompt-buy-{transport}"}))
            ticker = tool(await s.call_tool("get_ticker", {"symbol": "BTCUSDT"}))
            low = (Decimal(ticker["bidPrice"]) * Decimal("0.9")).quantize(Decimal("0.01"), rounding=ROUND_DOWN)
            tool(await s.call_tool("place_order", {"symbol": "BTCUSDT", "side": "BUY", "type": "LIMIT", "quantity": "0.002",
                                                   "price": str(low), "client_order_id": f"note:review/{transport}"}))
            state = tool(await s.call_tool("get_account", {}))
            portfolio = tool(await s.call_tool("get_portfolio", {}))
            pnl = tool(await s.call_tool("get_pnl", {"period": "today"}))
            brief = text(await s.get_prompt("market_brief", {"symbol": "btcusdt", "indicators": "rsi,macd"}))
            review = text(await s.get_prompt("portfolio_review", {}))
            checklist = text(await s.get_prompt("pre_trade_checklist", {"symbol": "BTCUSDT", "side": "SELL", "quantity": "0.001",
                                                                       "account_id": str(account.pk)}))
            report = text(await s.get_prompt("eod_pnl_report", {"account_id": str(account.pk)}))
            errors = [await prompt_error(s, *args) for args in (
                ("no_such_prompt", {}), ("market_brief", {}), ("market_brief", {"symbol": "NOSUCHCOIN"}),
                ("market_brief", {"symbol": "BTCUSDT", "indicators": "rsi,astrology"}),
                ("pre_trade_checklist", {"symbol": "BTCUSDT", "side": "HOLD"}),
                ("pre_trade_checklist", {"symbol": "BTCUSDT", "quantity": "lots"}),
                ("portfolio_review", {"account_id": "999999999"}))]
            return listed, bought, ticker, state, portfolio, pnl, brief, review, checklist, report, errors

    listed, bought, ticker, state, portfolio, pnl, brief, review, checklist, report, errors = run(scenario())
    assert listed == PROMPTS
    bid, ask = ticker["bidPrice"], ticker["askPrice"]

    assert f"bid {bid} / ask {ask}" in brief and "market brief of BTCUSDT" in brief
    assert "  - rsi {'period': 14}: rsi " in brief and "macd" in brief and "bbands" not in brief
    data = json.loads(brief.split("Data (JSON, read from this server just now):\n", 1)[1])
    assert data["market"]["bidPrice"] == bid and set(data["indicators"]["values"]) == {"rsi", "macd"}

    assert f"total value {portfolio['value']} USDT" in review and f"account {account.pk}" in review
    position = portfolio["positions"][0]
    assert f"position BTCUSDT: quantity {position['quantity']} at avg entry {position['avgEntryPrice']}" in review
    assert "- open orders: 1" in review and "risk limit maxOpenOrders (open orders at once): 4" in review
    assert f"risk limit maxOrderNotional (one order's notional): {state['riskLimits']['maxOrderNotional']}" in review
    # The open order's clientOrderId is text an agent chose: the trust envelope marks it, first thing.
    assert review.startswith(INSTRUCTIONS["external_text"])
    assert "openOrders[].clientOrderId" in json.loads(review.split("just now):\n", 1)[1])[SECURITY_KEY]["untrusted_fields"]

    notional = (Decimal("0.001") * Decimal(bid)).quantize(Decimal("0.00000001"))
    assert f"a MARKET SELL fills near {bid}, notional ≈ {notional} USDT" in checklist
    for name, value in (("maxOrderNotional", state["riskLimits"]["maxOrderNotional"]), ("maxOpenOrders", "4"),
                        ("maxDailyLoss", state["riskLimits"]["maxDailyLoss"]), ("allowedSymbols", "BTCUSDT, ETHUSDT"),
                        ("maxPositionNotional", "unlimited"), ("priceBandPct", "unlimited")):
        assert f"   - {name} = {value}: " in checklist, name
    assert f"Position in BTCUSDT: {position['quantity']}" in checklist and "open orders on the account: 1" in checklist

    fill = bought["fills"][0]
    assert f"realized P&L {pnl['realizedPnl']}, fees {pnl['fees']}, net realized {pnl['netRealized']}" in report
    assert "- fills today: 1" in report and f"BUY {fill['qty']} BTCUSDT at {fill['price']}" in report
    assert [e.code for e in errors] == [INVALID_PARAMS] * len(errors), errors
    assert "no_such_prompt" in errors[0].message and "symbol" in errors[1].message and "NOSUCHCOIN" in errors[2].message
    assert "astrology" in errors[3].message and "BUY or SELL" in errors[4].message and "quantity" in errors[5].message
    assert "Account 999999999 not found among your accounts" in errors[6].message


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_prompts_follow_the_tokens_scopes_accounts_and_symbols(paused_stack, trader, make_user, transport):
    user, account, _ = trader
    _, market_key = agent_token_create(user=user, name="market-only", scopes=["market:read"])
    restricted, restricted_key = agent_token_create(user=user, name="btc-only")
    restricted.symbols = ["BTCUSDT"]
    restricted.save()
    bob = make_user("bob")
    bobs = account_create(owner=bob, name="Bob's")
    _, bob_key = agent_token_create(user=bob, name="bob-agent")

    async def as_market_only():
        async with mcp_session(paused_stack, market_key, transport) as s:
            names = [p.name for p in (await s.list_prompts()).prompts]
            brief = text(await s.get_prompt("market_brief", {"symbol": "ETHUSDT", "interval": "1h"}))
            return names, brief, await prompt_error(s, "portfolio_review"), await prompt_error(s, "pre_trade_checklist", {"symbol": "BTCUSDT"})

    async def as_restricted():
        async with mcp_session(paused_stack, restricted_key, transport) as s:
            return (await prompt_error(s, "market_brief", {"symbol": "ETHUSDT"}),
                    await prompt_error(s, "pre_trade_checklist", {"symbol": "ETHUSDT"}))

    async def as_bob():
        async with mcp_session(paused_stack, bob_key, transport) as s:
            mine = text(await s.get_prompt("portfolio_review", {}))
            return mine, await prompt_error(s, "eod_pnl_report", {"account_id": str(account.pk)})

    names, brief, review, checklist = run(as_market_only())
    assert names == ["market_brief"] and "market brief of ETHUSDT" in brief
    assert review.code == checklist.code == INVALID_PARAMS and "account:read" in review.message
    eth, eth_checklist = run(as_restricted())
    assert eth.code == eth_checklist.code == INVALID_PARAMS and "only BTCUSDT" in eth.message and "only BTCUSDT" in eth_checklist.message
    mine, alices = run(as_bob())
    assert f"account {bobs.pk}" in mine and f"account {account.pk}" not in mine
    assert alices.code == INVALID_PARAMS and f"Account {account.pk} not found among your accounts" in alices.message


def test_a_prompt_is_audited_under_its_account_like_a_read_tool(quotes, trader):
    from risk.audit import audit_drain
    from risk.models import AuditEvent, Outcome
    from test_mcp import rpc

    _, account, key = trader
    body = rpc(key, "prompts/get", {"name": "eod_pnl_report", "arguments": {"account_id": str(account.pk)}}).json()
    assert "fills today: 0" in body["result"]["messages"][0]["content"]["text"]
    refused = rpc(key, "prompts/get", {"name": "pre_trade_checklist", "arguments": {"symbol": "BTCUSDT", "side": "HOLD"}}).json()
    assert refused["error"]["code"] == INVALID_PARAMS
    audit_drain()
    ok = AuditEvent.objects.get(action="mcp.prompt.eod_pnl_report")
    assert ok.outcome == Outcome.OK and ok.account_id == account.pk and ok.actor_token.name == "alice-agent"
    assert AuditEvent.objects.get(action="mcp.prompt.pre_trade_checklist").outcome == Outcome.REJECTED
