"""Ticker update latency to subscribed MCP clients: from the ingester writing a bookTicker update
to the client holding ``notifications/resources/updated`` for ``tradingmcp://markets/BTCUSDT/ticker``.

Starts our production web server (uvicorn as ``runstack`` starts it, ``--workers`` processes) on
the bench database and real Redis, opens N subscribed clients of each transport:

- ``http``: a session on ``/mcp`` (``initialize`` → ``Mcp-Session-Id``, ``resources/subscribe``)
  and its ``GET /mcp`` SSE stream (``mcpapi.sessions``: channel layer → the session's pump →
  Redis Stream → SSE);
- ``ws``: ``/mcp/ws`` with ``resources/subscribe`` (channel layer → the connection's queue),

then drives the real ``marketdata.ingester.Ingester`` in this process (no venue: its ``handle``
takes synthetic bookTicker events, writes Redis and pushes to ``market.BTCUSDT`` as live) at
``--rate`` updates/s. Each update's ``updateId`` maps to the time ``handle`` was called; the
latency is measured when a client parses the notification carrying it. Prints p50/p99 (ms) and
delivered/expected per transport and client count. Clients and ingester share this process's
loop and the machine's cores with the server, so figures are upper bounds.

Run: ``.venv/bin/python bench/bench_subscribe.py [--clients 1,8,32] [--seconds 5] [--rate 20] [--workers 1]``.
Not a test: it prints figures and asserts nothing.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")

import django  # noqa: E402

django.setup()

from bench._common import free_port, replay_with_quotes, wait_http  # noqa: E402

URI = "tradingmcp://markets/BTCUSDT/ticker"


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))]


async def http_client(base: str, token: str, sent: dict, lat: list, ready: asyncio.Event, stop: asyncio.Event) -> None:
    import httpx
    from httpx_sse import aconnect_sse

    h = {"Authorization": f"Bearer {token}", "Accept": "application/json, text/event-stream"}
    async with httpx.AsyncClient(timeout=httpx.Timeout(30, read=None)) as http:
        init = await http.post(base + "/mcp", headers=h, json={"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
            "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "bench", "version": "1"}}})
        h["Mcp-Session-Id"] = init.headers["mcp-session-id"]
        await http.post(base + "/mcp", headers=h, json={"jsonrpc": "2.0", "method": "notifications/initialized"})
        await http.post(base + "/mcp", headers=h, json={"jsonrpc": "2.0", "id": 2, "method": "resources/subscribe", "params": {"uri": URI}})
        async with aconnect_sse(http, "GET", base + "/mcp", headers={**h, "Accept": "text/event-stream"}) as source:
            ready.set()
            async for sse in source.aiter_sse():
                now = time.perf_counter()
                if sse.data:
                    uid = json.loads(sse.data)["params"]["value"]["updateId"]
                    if uid in sent:
                        lat.append((now - sent[uid]) * 1000)
                if stop.is_set():
                    break
        await http.delete(base + "/mcp", headers=h)


async def ws_client(base: str, token: str, sent: dict, lat: list, ready: asyncio.Event, stop: asyncio.Event) -> None:
    import websockets

    url = base.replace("http://", "ws://") + "/mcp/ws"
    async with websockets.connect(url, subprotocols=["mcp"], additional_headers={"Authorization": f"Bearer {token}"}) as ws:
        await ws.send(json.dumps({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
            "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "bench", "version": "1"}}}))
        await ws.recv()
        await ws.send(json.dumps({"jsonrpc": "2.0", "id": 2, "method": "resources/subscribe", "params": {"uri": URI}}))
        while json.loads(await ws.recv()).get("id") != 2:
            pass
        ready.set()
        while not stop.is_set():
            try:
                text = await asyncio.wait_for(ws.recv(), 1)
            except asyncio.TimeoutError:
                continue
            now = time.perf_counter()
            msg = json.loads(text)
            if msg.get("method") == "notifications/resources/updated" and msg["params"].get("uri") == URI:
                uid = msg["params"]["value"]["updateId"]
                if uid in sent:
                    lat.append((now - sent[uid]) * 1000)


async def level(kind: str, base: str, token: str, n: int, seconds: float, rate: float) -> dict:
    from marketdata.ingester import Ingester

    sent: dict[int, float] = {}
    lat: list[float] = []
    stop = asyncio.Event()
    readies = [asyncio.Event() for _ in range(n)]
    fn = http_client if kind == "http" else ws_client
    tasks = [asyncio.create_task(fn(base, token, sent, lat, readies[i], stop)) for i in range(n)]
    await asyncio.wait_for(asyncio.gather(*(r.wait() for r in readies)), 60)
    await asyncio.sleep(0.5)
    ingester = Ingester(["BTCUSDT"], store_klines=False, snapshots=False, subscriptions=False)
    uid = int(time.time() * 1000)
    count = 0
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        uid += 1
        sent[uid] = time.perf_counter()
        await ingester.handle({"stream": "btcusdt@bookTicker", "data": {
            "u": uid, "s": "BTCUSDT", "b": "60000.00", "B": "1.0", "a": "60000.10", "A": "1.0"}})
        count += 1
        await asyncio.sleep(1 / rate)
    await asyncio.sleep(1.0)
    stop.set()
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    await ingester.redis.aclose()
    return {"kind": kind, "clients": n, "expected": count * n, "delivered": len(lat), "p50": pct(lat, 50), "p99": pct(lat, 99)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", default="1,8,32")
    parser.add_argument("--seconds", type=float, default=5)
    parser.add_argument("--rate", type=float, default=20, help="bookTicker updates per second")
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args()

    from django.conf import settings
    from django.contrib.auth import get_user_model

    from risk.services import agent_token_create
    from trading.management.commands.runstack import web_server_command

    replay = replay_with_quotes()
    settings.MARKET_PUSH_MIN_INTERVAL_S = 0  # every handled update is pushed: one latency sample each
    User = get_user_model()
    user = User.objects.filter(username="bench-sub").first() or User.objects.create_user("bench-sub", password="bench-sub-pw")
    _, token = agent_token_create(user=user, name="bench-subscribe")
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {**os.environ, "BINANCE_API_URL": replay.api_url, "BINANCE_STREAM_URL": replay.stream_url, "DEBUG": "0",
           "SECURE_SSL_REDIRECT": "0", "MCP_UNAUTHENTICATED_PER_MINUTE": "0", "TOKEN_RATE_LIMIT_PER_MINUTE": "0"}
    web = subprocess.Popen(web_server_command(Path(sys.executable).parent, "127.0.0.1", port, args.workers).split(),
                           cwd=ROOT, env=env, stdout=subprocess.DEVNULL)
    rows = []
    try:
        wait_http(base + "/login/", timeout=60)
        for n in [int(x) for x in args.clients.split(",")]:
            for kind in ("http", "ws"):
                rows.append(asyncio.run(level(kind, base, token, n, args.seconds, args.rate)))
                r = rows[-1]
                print(f"{r['kind']:>4} {r['clients']:>3} clients: p50 {r['p50']:.2f} ms  p99 {r['p99']:.2f} ms  "
                      f"delivered {r['delivered']}/{r['expected']}", flush=True)
    finally:
        web.terminate()
        web.wait(10)
        replay.stop()


if __name__ == "__main__":
    main()
