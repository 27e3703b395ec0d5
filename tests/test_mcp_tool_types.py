"""Typed, annotated MCP tools: every tool lists a title, its hints (MCP spec 2025-06-18, "Tools →
Tool annotations") and an outputSchema (``mcpapi.results``); every successful call carries
``structuredContent`` that validates against it, with the same value as JSON text; errors carry
``isError`` and a Binance-style code and no ``structuredContent``.

In-process over POST /mcp for every tool, and with the official ``mcp`` SDK ``ClientSession``
against the production web server (``conftest.stack``) over streamable HTTP and over /mcp/ws. The
SDK client itself validates ``structuredContent`` against the listed outputSchema on each call.
"""
import asyncio
import copy
import json
import re
from decimal import Decimal

import httpx
import jsonschema
import pytest
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client

from conftest import wait_until
from marketdata.cache import book_key, get_redis
from marketdata.services import exchange_info_sync
from mcpapi.guard import TOOL_SCOPES
from risk.models import Scope
from risk.services import agent_token_create
from test_mcp import EXPECTED_TOOLS, rpc
from trading.models import Balance
from tradingmcp_client import websocket_client

READ_SCOPES = [Scope.MARKET_READ.value, Scope.ACCOUNT_READ.value]
# Reads that may reach Binance (a venue request when the store has no answer); every other read
# answers from this server's own store. A new read tool must be classified here.
READS_REACHING_BINANCE = {"get_klines", "get_market_data", "get_ticker_24h", "get_order_book", "get_indicators",
                          "subscribe_stream"}
READS_FROM_OWN_STORE = {"get_ticker", "list_markets", "get_fees", "unsubscribe_stream", "list_streams",
                        "get_stream_messages", "get_account", "get_order", "list_open_orders", "list_orders",
                        "get_trade_history", "get_positions", "get_portfolio", "get_pnl", "list_pending_orders"}
# Trade tools whose repeat with the same arguments changes nothing more (cancels).
IDEMPOTENT_TRADE_TOOLS = {"cancel_order", "cancel_all_orders"}


def strict(schema):
    """``schema`` with ``additionalProperties: true`` made false on every model (an object schema
    with ``properties``; free-form objects such as Binance's filters stay open): a result
    validating against it has no key its model does not name."""
    schema = copy.deepcopy(schema)

    def walk(node):
        if isinstance(node, dict):
            if node.get("additionalProperties") is True and "properties" in node:
                node["additionalProperties"] = False
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(schema)
    return schema


def check_result(tool: dict, result: dict) -> dict:
    """A successful tools/call result (JSON) of ``tool`` (its tools/list entry): structuredContent
    validates against the outputSchema (and names no undeclared key), and the text block is the
    same value as JSON. Returns the structured value."""
    assert result.get("isError") is False, result
    value = result["structuredContent"]
    jsonschema.validate(value, tool["outputSchema"])
    jsonschema.validate(value, strict(tool["outputSchema"]))
    assert [c["type"] for c in result["content"]] == ["text"]
    assert json.loads(result["content"][0]["text"]) == value
    return value


def listed(key) -> dict[str, dict]:
    resp = rpc(key, "tools/list", extra_headers={"MCP-Protocol-Version": "2025-06-18"})
    assert resp.status_code == 200
    return {t["name"]: t for t in resp.json()["result"]["tools"]}


def tool_call(key, name, **arguments) -> dict:
    resp = rpc(key, "tools/call", {"name": name, "arguments": arguments})
    assert resp.status_code == 200, resp.content
    return resp.json()["result"]


def test_every_tool_has_a_title_hints_and_an_output_schema_matching_its_scope(trader):
    _, _, key = trader
    tools = listed(key)
    assert set(tools) == EXPECTED_TOOLS == set(TOOL_SCOPES)
    reads = {n for n, s in TOOL_SCOPES.items() if s != Scope.TRADE}
    assert reads == READS_REACHING_BINANCE | READS_FROM_OWN_STORE and not READS_REACHING_BINANCE & READS_FROM_OWN_STORE
    for name, tool in tools.items():
        hints = tool.get("annotations") or {}
        assert tool.get("title") and hints.get("title") == tool["title"], name
        assert {"readOnlyHint", "destructiveHint", "idempotentHint", "openWorldHint"} <= set(hints), (name, hints)
        trade = TOOL_SCOPES[name] == Scope.TRADE
        assert hints["readOnlyHint"] is (not trade), name
        assert hints["destructiveHint"] is trade, name  # every trade tool places, cancels or closes orders
        assert hints["openWorldHint"] is (trade or name in READS_REACHING_BINANCE), name
        assert hints["idempotentHint"] is (not trade or name in IDEMPOTENT_TRADE_TOOLS), name
        schema = tool["outputSchema"]
        assert schema["type"] == "object" and schema["properties"], name
        assert "_tradingmcp_security" in schema["properties"], name  # the trust envelope is part of every schema
        jsonschema.Draft202012Validator.check_schema(schema)
    assert "client_order_id" in tools["place_order"]["description"] and "Binance" in tools["place_order"]["description"]


def test_read_only_token_lists_only_read_only_tools(trader):
    user, _, _ = trader
    _, read_key = agent_token_create(user=user, name="reader", scopes=READ_SCOPES)
    tools = listed(read_key)
    assert set(tools) == READS_REACHING_BINANCE | READS_FROM_OWN_STORE
    assert all(t["annotations"]["readOnlyHint"] is True for t in tools.values())


def test_every_tool_answers_structured_content_matching_its_schema(quotes, trader, replay):
    user, account, key = trader
    Balance.objects.update_or_create(account=account, asset="BTC", defaults={"free": Decimal("0.01")})
    _, confirm_key = agent_token_create(user=user, name="careful", confirm_orders=True)
    tools = listed(key)
    bid = replay.model.depth("BTCUSDT", replay.clock.now_ms(), 5).bids[0][0]
    calls = [
        (key, "get_ticker", {"symbol": "BTCUSDT"}),
        (key, "get_klines", {"symbol": "BTCUSDT", "interval": "5m", "limit": 3}),
        (key, "list_markets", {"page_size": 2}),
        (key, "get_market_data", {"symbols": ["BTCUSDT", "ETHUSDT"]}),
        (key, "get_ticker_24h", {"symbols": "BTCUSDT"}),
        (key, "get_order_book", {"symbol": "BTCUSDT", "limit": 3}),
        (key, "get_indicators", {"symbol": "BTCUSDT", "interval": "1h"}),
        (key, "get_fees", {"symbols": ["BTCUSDT"]}),
        (key, "subscribe_stream", {"stream": "btcusdt@trade"}),
        (key, "list_streams", {}),
        (key, "get_stream_messages", {"stream": "btcusdt@bookTicker", "limit": 2}),
        (key, "unsubscribe_stream", {"stream": "btcusdt@trade"}),
        (key, "get_account", {}),
        (key, "place_order", {"symbol": "BTCUSDT", "side": "BUY", "quantity": "0.002", "client_order_id": "t-mkt"}),
        (key, "place_order", {"symbol": "BTCUSDT", "side": "BUY", "quantity": "0.002", "client_order_id": "t-mkt"}),
        (key, "place_order", {"symbol": "BTCUSDT", "side": "BUY", "type": "LIMIT", "quantity": "0.002",
                              "price": format(bid - 1, "f"), "client_order_id": "t-lim"}),
        (key, "place_oco", {"symbol": "BTCUSDT", "side": "SELL", "quantity": "0.002", "price": format(bid + 300, "f"),
                            "stop_price": format(bid - 300, "f")}),
        (confirm_key, "place_order", {"symbol": "BTCUSDT", "side": "SELL", "quantity": "0.002", "client_order_id": "t-held"}),
        (key, "list_pending_orders", {}),
        (key, "get_order", {"client_order_id": "t-mkt"}),
        (key, "list_open_orders", {}),
        (key, "list_orders", {"limit": 10}),
        (key, "get_trade_history", {}),
        (key, "get_positions", {}),
        (key, "get_portfolio", {}),
        (key, "get_pnl", {"period": "all"}),
        (key, "cancel_order", {"symbol": "BTCUSDT", "client_order_id": "t-lim"}),
        (key, "cancel_all_orders", {"symbol": "BTCUSDT"}),
        (key, "close_position", {"symbol": "BTCUSDT", "client_order_id": "t-close"}),
    ]
    assert {name for _, name, _ in calls} == EXPECTED_TOOLS
    out = {}
    for token, name, args in calls:
        out.setdefault(name, []).append(check_result(tools[name], tool_call(token, name, **args)))
    first, again, limit_order = out["place_order"][:3]
    assert first["status"] == "FILLED" and first["fills"] and first["duplicate"] is False
    assert again["orderId"] == first["orderId"] and again["duplicate"] is True  # idempotent by client_order_id
    assert limit_order["status"] == "NEW" and limit_order["fills"] == []
    held = out["place_order"][3]
    assert held["status"] == "PENDING_APPROVAL" and held["approvalId"] and held["orderId"] is None
    assert [a["clientOrderId"] for a in out["list_pending_orders"][0]["approvals"]] == ["t-held"]
    assert len(out["get_klines"][0]["klines"]) == 3 and out["get_indicators"][0]["values"]
    assert out["cancel_order"][0]["status"] == "CANCELED"
    assert [o["status"] for o in out["cancel_all_orders"][0]["canceled"]] == ["CANCELED"]  # the OCO list, by its first leg
    assert out["close_position"][0]["side"] == "SELL" and out["close_position"][0]["status"] == "FILLED"
    # The trust envelope stays in structuredContent where it was in the text: get_fees carries a note.
    assert out["get_fees"][0]["_tradingmcp_security"]["untrusted_fields"]
    # Money stays decimal strings.
    assert all(isinstance(v, str) and Decimal(v) for v in (first["executedQty"], first["fills"][0]["price"]))


def test_a_tool_error_is_an_mcp_error_result_with_a_binance_code_and_no_structured_content(quotes, trader):
    _, _, key = trader
    result = tool_call(key, "get_ticker", symbol="BTCUSD")
    assert result["isError"] is True and "structuredContent" not in result
    assert re.search(r"\[-1121\] ", result["content"][0]["text"])
    result = tool_call(key, "cancel_order", symbol="BTCUSDT", order_id=999999)
    assert result["isError"] is True and "structuredContent" not in result and "[-2013]" in result["content"][0]["text"]


# --- the SDK client against the running server ------------------------------------------------------

@pytest.fixture
def live(stack, trader):
    """The stack with exchangeInfo stored and the ingester's first BTCUSDT quote cached."""
    exchange_info_sync()
    wait_until(lambda: get_redis().get(book_key("BTCUSDT")), timeout=30, what="the ingester's first BTCUSDT quote")
    return stack


async def sdk_scenario(session: ClientSession, read_session: ClientSession) -> dict:
    """tools/list and a representative set of calls through ``ClientSession`` (which validates
    each ``structuredContent`` against the listed outputSchema itself)."""
    await session.initialize()
    await read_session.initialize()
    tools = {t.name: t.model_dump(mode="json", by_alias=True, exclude_none=True) for t in (await session.list_tools()).tools}
    read_tools = {t.name: t.model_dump(mode="json", by_alias=True, exclude_none=True)
                  for t in (await read_session.list_tools()).tools}
    ticker = await session.call_tool("get_ticker", {"symbol": "BTCUSDT"})
    results = {"ticker": ticker.model_dump(mode="json", by_alias=True, exclude_none=True)}
    price = format((Decimal(ticker.structuredContent["bidPrice"]) * Decimal("0.99")).quantize(Decimal("0.01")), "f")
    for label, name, args in [
        ("klines", "get_klines", {"symbol": "BTCUSDT", "interval": "5m", "limit": 2}),
        ("account", "get_account", {}),
        ("limit", "place_order", {"symbol": "BTCUSDT", "side": "BUY", "type": "LIMIT", "quantity": "0.002",
                                  "price": price, "client_order_id": "sdk-limit"}),
        ("cancel", "cancel_order", {"symbol": "BTCUSDT", "client_order_id": "sdk-limit"}),
        ("orders", "list_orders", {"limit": 5}),
        ("error", "get_ticker", {"symbol": "BTCUSD"}),
        ("read_only_refused", "place_order", {"symbol": "BTCUSDT", "side": "BUY", "quantity": "0.002"}),
    ]:
        caller = read_session if label == "read_only_refused" else session
        results[label] = (await caller.call_tool(name, args)).model_dump(mode="json", by_alias=True, exclude_none=True)
    return {"tools": tools, "read_tools": read_tools, "results": results}


def check_sdk_scenario(out: dict) -> None:
    tools, results = out["tools"], out["results"]
    assert set(tools) == EXPECTED_TOOLS
    for tool in tools.values():
        assert tool["title"] and tool["annotations"]["title"] == tool["title"] and tool["outputSchema"]["type"] == "object"
    assert set(out["read_tools"]) == READS_REACHING_BINANCE | READS_FROM_OWN_STORE
    assert all(t["annotations"]["readOnlyHint"] for t in out["read_tools"].values())
    assert tools["place_order"]["annotations"]["destructiveHint"] and not tools["place_order"]["annotations"]["readOnlyHint"]
    for label, name in [("ticker", "get_ticker"), ("klines", "get_klines"), ("account", "get_account"),
                        ("limit", "place_order"), ("cancel", "cancel_order"), ("orders", "list_orders")]:
        check_result(tools[name], results[label])
    assert Decimal(results["ticker"]["structuredContent"]["askPrice"]) > 0
    assert results["limit"]["structuredContent"]["status"] == "NEW"
    assert results["cancel"]["structuredContent"]["status"] == "CANCELED"
    assert results["orders"]["structuredContent"]["orders"][0]["clientOrderId"] == "sdk-limit"
    for label, code in [("error", "[-1121]"), ("read_only_refused", "'trade' scope")]:
        assert results[label]["isError"] is True and "structuredContent" not in results[label]
        assert code in results[label]["content"][0]["text"]


@pytest.mark.django_db(transaction=True)
def test_sdk_client_over_streamable_http_sees_typed_annotated_tools(live, trader):
    user, _, key = trader
    _, read_key = agent_token_create(user=user, name="sdk-reader", scopes=READ_SCOPES)
    url = f"{live.base_url}/mcp"

    async def scenario():
        async with httpx.AsyncClient(headers={"Authorization": f"Bearer {key}"}, timeout=30) as http, \
                httpx.AsyncClient(headers={"Authorization": f"Bearer {read_key}"}, timeout=30) as read_http, \
                streamable_http_client(url, http_client=http) as (read, write, _), \
                streamable_http_client(url, http_client=read_http) as (rread, rwrite, _), \
                ClientSession(read, write) as session, ClientSession(rread, rwrite) as read_session:
            return await sdk_scenario(session, read_session)

    check_sdk_scenario(asyncio.run(asyncio.wait_for(scenario(), 60)))


@pytest.mark.django_db(transaction=True)
def test_sdk_client_over_websocket_sees_typed_annotated_tools(live, trader):
    user, _, key = trader
    _, read_key = agent_token_create(user=user, name="ws-reader", scopes=READ_SCOPES)
    url = live.base_url.replace("http://", "ws://") + "/mcp/ws"

    async def scenario():
        async with websocket_client(url, token=key) as (read, write, _), \
                websocket_client(url, token=read_key) as (rread, rwrite, _), \
                ClientSession(read, write) as session, ClientSession(rread, rwrite) as read_session:
            return await sdk_scenario(session, read_session)

    check_sdk_scenario(asyncio.run(asyncio.wait_for(scenario(), 60)))
