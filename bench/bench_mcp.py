"""MCP endpoint benchmark: our ``/mcp`` vs a bare FastMCP server, same run, same load.

Starts (on loopback, free ports) the replay exchange (in-process, clock paused so quotes are
stable), a bare FastMCP server on uvicorn (bench/bare_fastmcp.py, stateless JSON, an equivalent
Redis-backed ``get_ticker``), and our stack's production web server (uvicorn as ``runstack`` starts it; ``--server daphne``
or ``--workers N`` to compare). Drives each with ``wrk`` (Lua body: a JSON-RPC ``tools/call``) at
1, 8 and 32 connections, rounds interleaved, and prints calls/s, p50, p99 (medians over rounds)
and the ratio ours / bare. Also measures ``place_order`` (paper, risk check, DB transaction,
audit) on ours, with every connection on one account and with one account per connection.

Run: ``.venv/bin/python bench/bench_mcp.py [--duration 5] [--rounds 3] [--server daphne|uvicorn] [--workers 1]``
Environment: ``DATABASE_URL`` (default: SQLite under var/bench), ``REDIS_URL`` (default the
machine's Redis on 6379). Not a test: it prints figures and asserts nothing.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")
os.environ.setdefault("TRADINGMCP_DATA_DIR", str(ROOT / "var" / "bench"))
os.environ.setdefault("REDIS_URL", "redis://127.0.0.1:6379/0")
os.environ.setdefault("REDIS_KEY_PREFIX", "tmcp-bench:")
os.environ.setdefault("MARKET_DATA_MAX_AGE_S", "1000000")
os.environ.setdefault("LOG_LEVEL", "WARNING")

import django  # noqa: E402

django.setup()

import httpx  # noqa: E402
from django.conf import settings  # noqa: E402
from _common import free_port, replay_with_quotes, wait_http  # noqa: E402

TICKER_BODY = {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "get_ticker", "arguments": {"symbol": "BTCUSDT"}}}



def lua_script(token: str | None, body: dict | None, place_order: bool = False, accounts: list[int] | None = None) -> str:
    """wrk's Lua for one measurement: ``body`` as a fixed request, or (``place_order``) a MARKET BUY
    with a unique clientOrderId per request, on ``accounts`` in turn (account_id) when given."""
    headers = [
        'wrk.method = "POST"',
        'wrk.headers["Content-Type"] = "application/json"',
        'wrk.headers["Accept"] = "application/json, text/event-stream"',
        'wrk.headers["MCP-Protocol-Version"] = "2025-06-18"',
    ]
    if token:
        headers.append(f'wrk.headers["Authorization"] = "Bearer {token}"')
    if not place_order:
        return "\n".join(headers + [f"wrk.body = [[{json.dumps(body)}]]"]) + "\n"
    # A unique clientOrderId per request (run nonce, wrk thread, counter): every call books a new order.
    nonce = secrets.token_hex(5)
    return "\n".join(headers) + """
-- "created" counts threads in the main Lua state; "tid" is a global of each thread's own state
-- (a local of that name would shadow it, giving every thread the same clientOrderIds).
local created = 0
local counter = 0
local accounts = {""" + ",".join(str(a) for a in accounts or []) + """}
setup = function(thread) created = created + 1; thread:set("tid", created) end
request = function()
  counter = counter + 1
  local id = string.format("b""" + nonce + """-%d-%d", tid or 0, counter)
  local account = ""
  if #accounts > 0 then account = ',"account_id":' .. accounts[(counter + (tid or 0) * 7) % #accounts + 1] end
  local body = '{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"place_order","arguments":{"symbol":"BTCUSDT","side":"BUY","quantity":"0.002","client_order_id":"' .. id .. '"' .. account .. '}}}'
  return wrk.format(nil, nil, nil, body)
end
"""


UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3}


def run_wrk(url: str, script: str, connections: int, duration: int) -> dict:
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as fh:
        fh.write(script)
    threads = min(2, connections)
    out = subprocess.run(
        ["wrk", f"-t{threads}", f"-c{connections}", f"-d{duration}s", "--latency", "-s", fh.name, url],
        capture_output=True, text=True, timeout=duration + 60,
    ).stdout
    os.unlink(fh.name)
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    lat = {p: float(v) * UNITS[u] for p, v, u in re.findall(r"^\s+(50|99)%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)}
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {"requests": int(re.search(r"(\d+) requests in", out).group(1)), "rps": rps, "p50": lat.get("50"), "p99": lat.get("99"), "non2xx": int(errors.group(1)) if errors else 0}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--server", choices=["daphne", "uvicorn"], default="uvicorn")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--connections", default="1,8,32")
    parser.add_argument("--tools", default="get_ticker,place_order,place_order*",
                        help="which of ours to measure (comma-separated); the bare server is always measured")
    args = parser.parse_args()
    if not shutil.which("wrk"):
        raise SystemExit("wrk is needed: apt-get install -y wrk")

    from decimal import Decimal

    from django.contrib.auth import get_user_model

    from risk.services import agent_token_create
    from trading.models import Account, Balance
    from trading.services import account_create

    replay = replay_with_quotes()  # paused replay exchange, exchangeInfo synced, quotes cached
    user, _ = get_user_model().objects.get_or_create(username="bench")
    account = Account.objects.filter(owner=user).first() or account_create(owner=user, name="Bench")
    Balance.objects.filter(account=account, asset="USDT").update(free=Decimal("1000000000"))
    # One account per connection for the many-agents measurement (32 agents, 32 accounts): orders
    # of one account serialize on its row lock by design, those of different accounts do not.
    spread = list(Account.objects.filter(owner=user, name__startswith="Bench agent").order_by("pk"))
    for k in range(len(spread), max(int(c) for c in args.connections.split(","))):
        spread.append(account_create(owner=user, name=f"Bench agent {k}"))
    Balance.objects.filter(account__in=spread, asset="USDT").update(free=Decimal("1000000000"))
    spread_ids = [a.pk for a in spread]
    bench_token, token = agent_token_create(user=user, name="bench")
    bench_token.rate_limit_per_minute = 0  # unlimited: the benchmark is the load
    bench_token.save()

    env = {**os.environ, "BINANCE_API_URL": replay.api_url, "BINANCE_STREAM_URL": replay.stream_url, "DEBUG": "0",
           "SECRET_KEY": "bench-secret-key-not-for-production-" + "x" * 20, "SECURE_SSL_REDIRECT": "0"}
    bare_port, ours_port = free_port(), free_port()
    bindir = Path(sys.executable).parent
    procs = [subprocess.Popen([sys.executable, str(ROOT / "bench" / "bare_fastmcp.py"), "--port", str(bare_port),
                               "--redis-url", settings.REDIS_URL, "--key-prefix", settings.REDIS_KEY_PREFIX], cwd=ROOT, env=env)]
    if args.server == "daphne":
        cmd = [str(bindir / "daphne"), "-b", "127.0.0.1", "-p", str(ours_port), "project.asgi:application"]
    else:
        from trading.management.commands.runstack import web_server_command

        cmd = web_server_command(bindir, "127.0.0.1", ours_port, args.workers).split()
    procs.append(subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL))
    bare_url, ours_url = f"http://127.0.0.1:{bare_port}/mcp", f"http://127.0.0.1:{ours_port}/mcp"
    try:
        wait_http(f"http://127.0.0.1:{bare_port}/")
        wait_http(f"http://127.0.0.1:{ours_port}/login/")
        hdrs = {"Accept": "application/json, text/event-stream", "Authorization": f"Bearer {token}"}
        for url in (bare_url, ours_url):
            resp = httpx.post(url, json=TICKER_BODY, headers=hdrs, timeout=10)
            result = resp.json()["result"]
            assert not result["isError"], result
        from trading.models import Order

        booked_before = Order.objects.filter(account__in=spread_ids + [account.pk], status="FILLED").count()
        conns = [int(c) for c in args.connections.split(",")]
        tools = set(args.tools.split(","))
        results: dict[tuple, list] = {}
        for _ in range(args.rounds):
            for c in conns:
                results.setdefault(("bare", "get_ticker", c), []).append(run_wrk(bare_url, lua_script(None, TICKER_BODY), c, args.duration))
                if "get_ticker" in tools:
                    results.setdefault(("ours", "get_ticker", c), []).append(run_wrk(ours_url, lua_script(token, TICKER_BODY), c, args.duration))
                if "place_order" in tools:
                    results.setdefault(("ours", "place_order", c), []).append(run_wrk(ours_url, lua_script(token, None, True), c, args.duration))
                if "place_order*" in tools:
                    results.setdefault(("ours", "place_order*", c), []).append(
                        run_wrk(ours_url, lua_script(token, None, True, spread_ids[:c]), c, args.duration))
        # A tool error is an HTTP 200 too: every place_order call must have booked a FILLED order.
        sent = sum(r["requests"] for (_, tool, _), rows in results.items() if tool.startswith("place_order") for r in rows)
        booked = Order.objects.filter(account__in=spread_ids + [account.pk], status="FILLED").count() - booked_before
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
        replay.stop()

    def med(rows, key):
        vals = [r[key] for r in rows if r[key] is not None]
        return statistics.median(vals) if vals else float("nan")

    db = settings.DATABASES["default"]["ENGINE"].rsplit(".", 1)[-1]
    print(f"\nMCP benchmark — {os.cpu_count()} cores, {db}, ours on {args.server} x{args.workers}, "
          f"wrk {args.duration}s x {args.rounds} rounds (medians), loopback")
    print(f"{'server':<6} {'tool':<12} {'conns':>5} {'calls/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'non-2xx':>8} {'vs bare':>8}")
    for (server, tool, c), rows in sorted(results.items(), key=lambda kv: (kv[0][2], kv[0][1], kv[0][0])):
        bare = med(results[("bare", "get_ticker", c)], "rps")
        rps = med(rows, "rps")
        print(f"{server:<6} {tool:<12} {c:>5} {rps:>9.0f} {med(rows, 'p50'):>8.2f} {med(rows, 'p99'):>8.2f} "
              f"{sum(r['non2xx'] for r in rows):>8} {rps / bare:>8.2f}")
    if booked < sent:
        print(f"WARNING: {sent - booked} place_order calls did not book a FILLED order")
    print(f"place_order calls sent {sent}, FILLED orders booked {booked} (wrk counts requests it sent; "
          "those cut off at the end of a run may still book)")
    print("place_order: every connection trades one account; place_order*: each connection its own account "
          "(as many agents would; in turn by account_id)")


if __name__ == "__main__":
    main()
