"""Order engine benchmark: orders/s through validation + risk + paper fill + audit, and MCP
``place_order`` calls/s in-process.

Starts the replay exchange in-process (clock paused, so quotes and the order book are stable),
syncs exchangeInfo and caches quotes exactly as the tests do, then:

1. ``order_place`` in a loop: MARKET BUY/SELL of 0.002 BTCUSDT alternating (each one: filters,
   quote from Redis, order book (cached), account lock, risk check, book walk, fill, balances,
   position, audit event, one transaction), on 1 thread and on ``--threads`` threads (one account
   per thread: orders of one account serialize on its row lock by design).
2. The same with resting LIMIT orders placed and canceled (place + cancel = 2 operations).
3. MARKET orders from ``--procs`` processes at once (one account each): how the booking path
   scales with cores (PostgreSQL's group commit helps here; SQLite serializes writers).
4. ``POST /mcp`` ``tools/call place_order`` through the project's ASGI application in-process
   (auth, guard, JSON-RPC, the service), one thread.

Run: ``DATABASE_URL=postgres://postgres@127.0.0.1:5432/bench .venv/bin/python bench/bench_orders.py [-n 2000] [--threads 4] [--procs 2]``
(default database: SQLite under var/bench; the database is migrated). ``REDIS_URL`` defaults to
the machine's Redis on 6379. Not a test: it prints figures and asserts nothing.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")
os.environ.setdefault("TRADINGMCP_DATA_DIR", str(ROOT / "var" / "bench"))
os.environ.setdefault("REDIS_URL", "redis://127.0.0.1:6379/0")
os.environ.setdefault("REDIS_KEY_PREFIX", "tmcp-bench:")
os.environ.setdefault("MARKET_DATA_MAX_AGE_S", "1000000")
os.environ.setdefault("PAPER_DEPTH_MAX_AGE_S", "1000000")
os.environ.setdefault("LOG_LEVEL", "WARNING")

import django  # noqa: E402

django.setup()

from _common import replay_with_quotes  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-n", type=int, default=2000, help="orders per measurement")
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--procs", type=int, default=2, help="processes for the multi-process measurement (0: skip)")
    parser.add_argument("--child", help=argparse.SUPPRESS)  # "<account id>:<user id>:<tag>": one worker process
    args = parser.parse_args()
    if args.child:
        return child(args)

    from decimal import Decimal

    from django.contrib.auth import get_user_model
    from django.db import connection

    from risk.services import agent_token_create
    from trading.models import Balance
    from trading.services import account_create, order_cancel, order_place

    replay = replay_with_quotes()  # paused replay exchange, exchangeInfo synced, quotes cached
    stamp = f"{int(time.time())}"
    user, _ = get_user_model().objects.get_or_create(username=f"bench-orders-{stamp}")

    def new_account(name):
        account = account_create(owner=user, name=f"{name}-{stamp}")
        Balance.objects.filter(account=account, asset="USDT").update(free=Decimal("1000000000"))
        Balance.objects.create(account=account, asset="BTC", free=Decimal("1000"))
        return account

    def market_loop(account, n, tag, latencies=None):
        for i in range(n):
            t = time.perf_counter()
            order_place(account=account, actor_user=user, channel="api", symbol="BTCUSDT",
                        side="BUY" if i % 2 == 0 else "SELL", quantity="0.002", client_order_id=f"{tag}-{i}")
            if latencies is not None:
                latencies.append(time.perf_counter() - t)

    bid = replay.model.depth("BTCUSDT", replay.clock.now_ms(), 5).bids[0][0]

    def limit_loop(account, n, tag):
        for i in range(n // 2):
            o = order_place(account=account, actor_user=user, channel="api", symbol="BTCUSDT", side="BUY",
                            order_type="LIMIT", quantity="0.002", price=str(bid - 10), client_order_id=f"{tag}-{i}").order
            order_cancel(account=account, actor_user=user, channel="api", order_id=o["orderId"])

    market_loop(new_account("warm"), 50, "warm")  # imports, caches, connections
    db = f"{connection.vendor} {connection.settings_dict.get('NAME')}"
    print(f"database: {db}; replay paused; BTCUSDT MARKET 0.002 BUY/SELL alternating")

    def timed(label, fn, n):
        t0, c0 = time.perf_counter(), time.process_time()
        fn()
        dt, cpu = time.perf_counter() - t0, time.process_time() - c0
        print(f"  {label:<58} {n / dt:8.0f} /s   ({n} in {dt:.2f} s, {dt / n * 1000:.2f} ms each, "
              f"this process's CPU {cpu / n * 1000:.2f} ms each)")

    a = new_account("one")
    latencies: list[float] = []
    timed("order_place MARKET, 1 thread", lambda: market_loop(a, args.n, "m1", latencies), args.n)
    latencies.sort()
    print(f"  {'order_place MARKET, 1 thread, latency':<58} p50 {latencies[len(latencies) // 2] * 1000:.2f} ms, "
          f"p90 {latencies[len(latencies) * 9 // 10] * 1000:.2f} ms")
    a = new_account("lim")
    timed("order_place LIMIT + order_cancel (ops), 1 thread", lambda: limit_loop(a, args.n, "l1"), args.n)

    accounts = [new_account(f"t{k}") for k in range(args.threads)]

    def worker(k):
        try:
            market_loop(accounts[k], args.n // args.threads, f"mt{k}")
        finally:
            connection.close()

    def threaded():
        ts = [threading.Thread(target=worker, args=(k,)) for k in range(args.threads)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()

    timed(f"order_place MARKET, {args.threads} threads (1 account each)", threaded, (args.n // args.threads) * args.threads)

    if args.procs:
        import subprocess

        accounts = [new_account(f"p{k}") for k in range(args.procs)]
        per = args.n // args.procs
        env = {**os.environ, "BINANCE_API_URL": replay.api_url, "BINANCE_STREAM_URL": replay.stream_url}
        procs = [subprocess.Popen([sys.executable, __file__, "-n", str(per), "--child", f"{a.pk}:{user.pk}:pr{k}"],
                                  env=env, stdout=subprocess.PIPE, text=True) for k, a in enumerate(accounts)]
        outs = [p.communicate()[0] for p in procs]
        # Each child prints "<t_start> <t_end>" (time.time()): the aggregate rate spans first start to last end.
        spans = [tuple(map(float, o.split()[-2:])) for o in outs]
        dt = max(e for _, e in spans) - min(b for b, _ in spans)
        n = per * args.procs
        print(f"  {f'order_place MARKET, {args.procs} processes (1 account each)':<58} {n / dt:8.0f} /s   ({n} in {dt:.2f} s)")

    mcp_user, _ = get_user_model().objects.get_or_create(username=f"bench-mcp-{stamp}")
    acc = account_create(owner=mcp_user, name="mcp")
    Balance.objects.filter(account=acc, asset="USDT").update(free=Decimal("1000000000"))
    Balance.objects.create(account=acc, asset="BTC", free=Decimal("1000"))
    _, token = agent_token_create(user=mcp_user, name="bench")
    from test_mcp import asgi_request  # the project's ASGI app in-process, as the tests drive it

    headers = {"Host": "127.0.0.1", "Accept": "application/json, text/event-stream", "Content-Type": "application/json",
               "Authorization": f"Bearer {token}"}  # a Host in ALLOWED_HOSTS, as a local client sends
    n_mcp = max(200, args.n // 4)

    def mcp_loop():
        for i in range(n_mcp):
            body = {"jsonrpc": "2.0", "id": i, "method": "tools/call", "params": {"name": "place_order", "arguments": {
                "symbol": "BTCUSDT", "side": "BUY" if i % 2 == 0 else "SELL", "quantity": "0.002", "client_order_id": f"mcp-{i}"}}}
            resp = asgi_request("POST", "/mcp", json.dumps(body).encode(), headers)
            if resp.status_code != 200 or resp.json()["result"].get("isError"):
                raise SystemExit(f"MCP call failed: {resp.status_code} {resp.content[:300]!r}")

    timed("MCP tools/call place_order in-process (project ASGI app)", mcp_loop, n_mcp)
    replay.stop()


def child(args):
    """One worker process of the multi-process measurement: MARKET orders on one account."""
    from django.contrib.auth import get_user_model

    from trading.models import Account
    from trading.services import order_place

    account_id, user_id, tag = args.child.split(":")
    account = Account.objects.get(pk=int(account_id))
    user = get_user_model().objects.get(pk=int(user_id))
    for i in range(20):  # warm up: imports, connections, caches
        order_place(account=account, actor_user=user, channel="api", symbol="BTCUSDT", side="BUY" if i % 2 == 0 else "SELL",
                    quantity="0.002", client_order_id=f"{tag}-w{i}")
    t0 = time.time()
    for i in range(args.n):
        order_place(account=account, actor_user=user, channel="api", symbol="BTCUSDT", side="BUY" if i % 2 == 0 else "SELL",
                    quantity="0.002", client_order_id=f"{tag}-{i}")
    print(t0, time.time())


if __name__ == "__main__":
    main()
