"""``manage.py mcp_stdio`` end to end: the official ``mcp`` SDK's ``stdio_client`` + ``ClientSession``
spawn ``python manage.py mcp_stdio`` against the test database, real Redis and the replay exchange,
as Claude Desktop does; nothing is mocked. Covered: initialize, tools/list filtered by the token's
scopes, get_ticker equal to the cached quote, a paper place_order booked and audited with the agent
as actor, the trust envelope, a scope refusal and a symbol refusal (audited), revocation refusing
the very next call, bad/missing tokens (exit status 2, nothing on stdout), and stdout carrying
only JSON-RPC lines.
"""
import asyncio
import json
import os
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import pytest
from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import connection
from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client
from mcp.shared.exceptions import McpError

from conftest import ARTIFACTS, ROOT, subprocess_database_url
from mcpapi.stdio import UNAUTHORIZED
from risk.audit import audit_drain
from risk.models import AgentToken, AuditEvent
from risk.services import agent_token_create, agent_token_revoke
from risk.trust import SECURITY_KEY
from trading.models import Fill, Order

pytestmark = pytest.mark.django_db(transaction=True)


def server_env(replay, **extra) -> dict:
    """The environment a desktop client would give the command, pointed at the test services."""
    env = {**os.environ, "DATABASE_URL": subprocess_database_url(), "BINANCE_VENUE": "replay",
           "BINANCE_API_URL": replay.api_url, "BINANCE_STREAM_URL": replay.stream_url,
           "BINANCE_WS_API_URL": replay.ws_api_url, "REDIS_URL": settings.REDIS_URL,
           "REDIS_KEY_PREFIX": settings.REDIS_KEY_PREFIX, "PYTHONUNBUFFERED": "1"}
    env.pop("TRADINGMCP_TOKEN", None)
    env.update(extra)
    return env


def params(replay, *args: str, **env) -> StdioServerParameters:
    return StdioServerParameters(command=sys.executable, args=["manage.py", "mcp_stdio", *args],
                                 env=server_env(replay, **env), cwd=str(ROOT))


async def session_run(server: StdioServerParameters, scenario, name: str):
    """Start the server through the SDK's ``stdio_client``, initialize, run ``scenario(session,
    init_result)``; the server's stderr goes to test-artifacts/<name>.log."""
    ARTIFACTS.mkdir(exist_ok=True)
    with open(ARTIFACTS / f"{name}.log", "w") as errlog:
        async with stdio_client(server, errlog=errlog) as (read, write):
            async with ClientSession(read, write) as session:
                init = await asyncio.wait_for(session.initialize(), 60)
                return await scenario(session, init)


def revoke(token) -> None:
    """Revoke ``token`` from a worker thread, closing that thread's database connection after
    (PostgreSQL refuses to drop the test database while a connection is open)."""
    try:
        agent_token_revoke(token=token)
    finally:
        connection.close()


def text_of(result) -> str:
    return result.content[0].text


def test_full_token_lists_reads_trades_and_is_refused_once_revoked(quotes, trader, replay):
    user, account, key = trader
    token = AgentToken.objects.get(user=user)

    async def scenario(session, init):
        tools = [t.name for t in (await session.list_tools()).tools]
        ticker = await session.call_tool("get_ticker", {"symbol": "BTCUSDT"})
        order = await session.call_tool("place_order", {"symbol": "BTCUSDT", "side": "BUY", "quantity": "0.002",
                                                        "client_order_id": "stdio-buy-1"})
        acct = await session.call_tool("get_account", {})
        await sync_to_async(revoke)(token)
        try:
            after = await session.call_tool("get_ticker", {"symbol": "BTCUSDT"})
        except McpError as exc:
            after = exc.error
        return init, tools, ticker, order, acct, after

    init, tools, ticker, order, acct, after = asyncio.run(
        session_run(params(replay, TRADINGMCP_TOKEN=key), scenario, "mcp-stdio-full"))

    assert init.serverInfo.name == "TradingMCP" and init.capabilities.tools is not None
    assert {"get_ticker", "get_account", "place_order", "cancel_order"} <= set(tools)

    assert not ticker.isError, text_of(ticker)
    quote = json.loads(text_of(ticker))
    assert (quote["bidPrice"], quote["askPrice"]) == (quotes["BTCUSDT"]["bidPrice"], quotes["BTCUSDT"]["askPrice"])

    assert not order.isError, text_of(order)
    placed = json.loads(text_of(order))
    db_order = Order.objects.get(account=account, client_order_id="stdio-buy-1")
    assert placed["status"] == db_order.status == "FILLED"
    assert Fill.objects.get(order=db_order).price == Decimal(quotes["BTCUSDT"]["askPrice"])
    event = AuditEvent.objects.get(action="order.place", account=account)
    assert (event.outcome, event.channel, event.actor_token_id, event.actor_user_id) == ("ok", "mcp", token.pk, user.pk)
    audit_drain()  # the per-call events go through the audit write-ahead log (Redis)
    read = AuditEvent.objects.get(action="mcp.get_ticker")
    assert (read.outcome, read.actor_token_id) == ("ok", token.pk)

    # The account's name is text a person wrote: the result carries the trust envelope.
    security = json.loads(text_of(acct))[SECURITY_KEY]
    assert security["trust"] == "untrusted_tool_output" and any("name" in f for f in security["untrusted_fields"])

    # Revoked while the server runs: the very next request is refused, and nothing more is audited.
    assert after.code == UNAUTHORIZED and "revoked" in after.message
    assert AuditEvent.objects.filter(action="mcp.get_ticker").count() == 1


def test_read_only_token_sees_and_may_call_only_its_scope_and_symbols(quotes, trader, replay, tmp_path):
    user, account, _ = trader
    token, key = agent_token_create(user=user, name="desktop-reader", scopes=["market:read"])
    token.symbols = ["ETHUSDT"]
    token.save(update_fields=["symbols"])
    token_file = tmp_path / "token"
    token_file.write_text(key + "\n")

    async def scenario(session, init):
        tools = [t.name for t in (await session.list_tools()).tools]
        eth = await session.call_tool("get_ticker", {"symbol": "ETHUSDT"})
        btc = await session.call_tool("get_ticker", {"symbol": "BTCUSDT"})
        buy = await session.call_tool("place_order", {"symbol": "ETHUSDT", "side": "BUY", "quantity": "0.01"})
        return tools, eth, btc, buy

    # --token-file wins over the environment (here a token that does not exist).
    tools, eth, btc, buy = asyncio.run(session_run(
        params(replay, "--token-file", str(token_file), TRADINGMCP_TOKEN="tmcp_not-a-token"), scenario, "mcp-stdio-reader"))

    assert "get_ticker" in tools and not {"place_order", "cancel_order", "get_account"} & set(tools)
    assert not eth.isError and json.loads(text_of(eth))["askPrice"] == quotes["ETHUSDT"]["askPrice"]
    assert btc.isError and "ETHUSDT" in text_of(btc) and "'BTCUSDT'" in text_of(btc)
    assert buy.isError and "'trade' scope" in text_of(buy)
    assert not Order.objects.filter(account=account).exists()
    audit_drain()
    refusal = AuditEvent.objects.get(action="mcp.place_order")
    assert (refusal.outcome, refusal.actor_token_id) == ("rejected", token.pk)


def run_command(replay, *args, stdin: str = "", **env) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "manage.py", "mcp_stdio", *args], cwd=ROOT, env=server_env(replay, **env),
                          input=stdin, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("case", ["missing", "unknown", "revoked", "unreadable-file"])
def test_a_bad_or_missing_token_exits_2_with_a_message_and_nothing_on_stdout(trader, replay, tmp_path, case):
    user, _, key = trader
    if case == "revoked":
        agent_token_revoke(token=AgentToken.objects.get(user=user))
    args, env = {
        "missing": ((), {}),
        "unknown": ((), {"TRADINGMCP_TOKEN": "tmcp_" + "x" * 43}),
        "revoked": ((), {"TRADINGMCP_TOKEN": key}),
        "unreadable-file": (("--token-file", str(tmp_path / "absent")), {"TRADINGMCP_TOKEN": key}),
    }[case]
    init = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}})
    done = run_command(replay, *args, stdin=init + "\n", **env)
    assert done.returncode == 2, done.stderr
    assert done.stdout == ""
    assert "token" in done.stderr.lower() and "Traceback" not in done.stderr


def test_stdout_carries_only_json_rpc_lines(trader, replay):
    """Logging (a line that is not JSON-RPC is logged as a warning) and the start-up banner go to
    stderr; every stdout line is one JSON-RPC response, in any order, one per request."""
    _, _, key = trader
    lines = [
        {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
            "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}},
        {"jsonrpc": "2.0", "method": "notifications/initialized"},
        "this line is not JSON",
        {"jsonrpc": "2.0", "id": 2, "method": "ping"},
        {"jsonrpc": "2.0", "id": 3, "method": "tools/call", "params": {"name": "no_such_tool", "arguments": {}}},
    ]
    stdin = "\n".join(line if isinstance(line, str) else json.dumps(line) for line in lines) + "\n"
    done = run_command(replay, stdin=stdin, TRADINGMCP_TOKEN=key, LOG_LEVEL="DEBUG")
    assert done.returncode == 0, done.stderr
    answers = {m["id"]: m for m in map(json.loads, done.stdout.splitlines())}
    assert set(answers) == {1, 2, 3} and all(m["jsonrpc"] == "2.0" for m in answers.values())
    assert answers[2]["result"] == {} and answers[3]["result"]["isError"] is True
    assert "not JSON-RPC" in done.stderr and "serving MCP on stdio" in done.stderr


def test_the_dashboard_desktop_snippet_starts_a_working_server(trader, replay):
    """The ``claude_desktop_config.json`` entry the tokens page shows, run as Claude Desktop runs
    it (its command, args and env; plus the test services' addresses): it serves the new token."""
    from html import unescape

    from django.http import HttpRequest
    from django.test import Client

    client = Client()
    assert client.login(request=HttpRequest(), username="alice", password="pw-for-tests-1")
    resp = client.post("/tokens/", {"name": "claude-desktop", "scopes": ["market:read"]})
    html = resp.content.decode()
    entry = json.loads(unescape(html.split('<pre id="cfg-desktop">')[1].split("</pre>")[0]))["mcpServers"]["tradingmcp"]

    async def scenario(session, init):
        return [t.name for t in (await session.list_tools()).tools]

    server = StdioServerParameters(command=entry["command"], args=entry["args"], env=server_env(replay, **entry["env"]))
    tools = asyncio.run(session_run(server, scenario, "mcp-stdio-desktop-snippet"))
    assert "get_ticker" in tools and "place_order" not in tools  # the new token's scopes, not alice's other token


def test_a_stray_print_lands_on_stderr_not_between_protocol_lines(replay):
    """``protocol_streams``: after it, ``print`` (sys.stdout, descriptor 1) writes to stderr, and
    only what is written to the protocol stream reaches the real stdout."""
    code = ("import anyio; from mcpapi.stdio import protocol_streams\n"
            "stdin, out = protocol_streams()\nprint('stray print')\n"
            "async def main():\n    await out.write('{\"jsonrpc\": \"2.0\", \"id\": 1, \"result\": {}}\\n'); await out.flush()\n"
            "anyio.run(main)\nprint('another stray print')\n")
    done = subprocess.run([sys.executable, "manage.py", "shell", "--no-imports", "-c", code], cwd=ROOT, env=server_env(replay),
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout == '{"jsonrpc": "2.0", "id": 1, "result": {}}\n'
    assert "stray print" in done.stderr and "another stray print" in done.stderr
