"""Dashboard benchmark: live-update latency in a real browser, and WebSocket clients per process.

Starts, on loopback and free ports: the replay exchange (in-process, running at ``--speed``), the
production web server as ``runstack`` starts it (uvicorn, 1 worker, ``DEBUG=0``, static files from
``collectstatic`` through WhiteNoise) and the market-data ingester (``manage.py ingest``), against
a bench database (SQLite under var/bench-dashboard unless ``DATABASE_URL`` is set) and the machine's
Redis.

1. **Replayed trade → DOM update.** Debian's Chromium (headless, Playwright) opens the market page
   of BTCUSDT logged in. For every bookTicker the page renders, it records ``Date.now()`` right
   after writing the new bid/ask into the DOM minus the event's ``receivedAt`` (the wall time the
   ingester read the replayed event off the venue's WebSocket; same machine clock). The path
   measured is ingester → Redis batch → Channels group → consumer (coalescing ≤ 10/s) → WebSocket
   → browser → DOM. Not included: the replay exchange's own 100 ms send tick (a property of the
   replay, not of Binance). Prints count, p50, p90, p99, max.

2. **Concurrent WebSocket clients.** The ingester is stopped; N logged-in clients (Python
   ``websockets``, one process, connected in batches of 100) hold ``/ws/dashboard/`` open while the
   bench sends one message per second to ``market.BTCUSDT`` (the group every dashboard socket
   joins; each message carries its send time). For N in ``--clients`` it prints connect failures,
   the share of messages delivered to every client, delivery latency p50/p99 and the server's RSS.
   A level "holds" when ≥ 99.9 % are delivered with p99 < 1 s.

``--layer pubsub`` runs every process with Channels' Redis pub/sub layer instead (bench/settings_pubsub.py).

Run: ``.venv/bin/python bench/bench_dashboard.py [--seconds 30] [--speed 5] [--clients 100,500,1000,2000] [--fanout-seconds 10] [--layer core|pubsub]``
Not a test: it prints figures and asserts nothing.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
# --layer pubsub: Channels' Redis pub/sub layer (bench/settings_pubsub.py) in every process.
LAYER = sys.argv[sys.argv.index("--layer") + 1] if "--layer" in sys.argv[:-1] else "core"
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.settings_pubsub" if LAYER == "pubsub" else "project.settings")
os.environ.setdefault("TRADINGMCP_DATA_DIR", str(ROOT / "var" / "bench-dashboard"))
os.environ.setdefault("REDIS_URL", "redis://127.0.0.1:6379/0")
os.environ.setdefault("REDIS_KEY_PREFIX", "tmcp-bench-dash:")
os.environ.setdefault("LOG_LEVEL", "WARNING")
# One key for this process and the server it starts: the session cookie made here must verify there.
os.environ.setdefault("SECRET_KEY", "bench-secret-key-not-for-production-" + "x" * 20)
Path(os.environ["TRADINGMCP_DATA_DIR"]).mkdir(parents=True, exist_ok=True)

import django  # noqa: E402

django.setup()

from django.conf import settings  # noqa: E402
from django.core.management import call_command  # noqa: E402

from _common import free_port, wait_http  # noqa: E402

PASSWORD = "bench-dashboard-pass-1"
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")



def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))]


def rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def session_cookie(username: str) -> str:
    from django.test import Client

    client = Client()
    assert client.login(username=username, password=PASSWORD)
    return client.cookies[settings.SESSION_COOKIE_NAME].value


# --- 1. replayed trade → DOM ---------------------------------------------------------------------

def measure_dom_latency(base_url: str, cookie: str, seconds: float) -> list[float]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True,
                                    args=["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run"])
        context = browser.new_context(viewport={"width": 1440, "height": 900})
        context.add_cookies([{"name": settings.SESSION_COOKIE_NAME, "value": cookie, "url": base_url}])
        page = context.new_page()
        page.goto(base_url + "/market/BTCUSDT/")
        if "/login/" in page.url:
            raise SystemExit("the bench session was not accepted by the server")
        page.wait_for_function("window.tmcpSocketReady === true", timeout=30000)
        page.wait_for_timeout(2000)  # let the first snapshot/chart load settle
        page.evaluate("() => { window.__tmcpLatency = []; }")
        page.wait_for_timeout(seconds * 1000)
        samples = page.evaluate("window.__tmcpLatency")
        browser.close()
    return [float(s) for s in samples]


# --- 2. concurrent clients with a 1 msg/s fan-out -------------------------------------------------

async def fanout_level(ws_url: str, origin: str, cookie: str, n: int, seconds: int) -> dict:
    import websockets
    from channels.layers import get_channel_layer

    received: list[list[float]] = []
    failures = 0
    sockets = []

    async def client(i: int):
        nonlocal failures
        try:
            ws = await websockets.connect(ws_url, additional_headers={"Cookie": f"{settings.SESSION_COOKIE_NAME}={cookie}", "Origin": origin},
                                          open_timeout=30, ping_interval=None, max_queue=None)
            hello = json.loads(await asyncio.wait_for(ws.recv(), 30))
            assert hello["type"] == "hello"
        except Exception:
            failures += 1
            return
        sockets.append(ws)
        mine: list[float] = []
        received.append(mine)
        try:
            async for raw in ws:
                msg = json.loads(raw)
                if msg.get("type") == "market" and msg["data"].get("bench"):
                    mine.append(time.time() * 1000 - msg["data"]["sentAt"])
        except Exception:
            pass

    tasks = []
    for start in range(0, n, 100):
        batch = [asyncio.create_task(client(i)) for i in range(start, min(n, start + 100))]
        tasks += batch
        deadline = time.monotonic() + 60
        while len(sockets) + failures < min(n, start + 100) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
    layer = get_channel_layer()
    await asyncio.sleep(1.0)
    for k in range(seconds):
        t0 = time.monotonic()
        await layer.group_send("market.BTCUSDT", {"type": "market.update", "symbol": "BTCUSDT", "stream": "kline_1m",
                                                  "data": {"bench": True, "seq": k, "sentAt": time.time() * 1000, "c": "0"}})
        await asyncio.sleep(max(0.0, 1.0 - (time.monotonic() - t0)))
    await asyncio.sleep(2.0)  # stragglers
    for ws in sockets:
        await ws.close()
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    latencies = [x for mine in received for x in mine]
    expected = len(received) * seconds
    return {"clients": n, "connected": len(received), "failures": failures, "delivered": len(latencies), "expected": expected,
            "p50": pct(latencies, 50), "p99": pct(latencies, 99), "max": max(latencies, default=float("nan"))}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=30, help="DOM latency sampling time")
    parser.add_argument("--speed", type=float, default=5, help="replay speed (more events per second)")
    parser.add_argument("--clients", default="100,500,1000,2000")
    parser.add_argument("--fanout-seconds", type=int, default=10)
    parser.add_argument("--layer", choices=["core", "pubsub"], default="core",
                        help="channel layer: the project's (channels_redis core) or channels_redis pubsub")
    args = parser.parse_args()

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 65536), hard))

    from django.contrib.auth import get_user_model

    from replay.server import ReplayServer
    from marketdata.services import exchange_info_sync
    from trading.models import Account
    from trading.services import account_create

    call_command("migrate", verbosity=0)
    call_command("collectstatic", interactive=False, verbosity=0)
    replay = ReplayServer(port=0, speed=args.speed)
    replay.start()
    settings.BINANCE_API_URL, settings.BINANCE_STREAM_URL = replay.api_url, replay.stream_url
    exchange_info_sync()
    User = get_user_model()
    user = User.objects.filter(username="bench-dash").first() or User.objects.create_user("bench-dash", password=PASSWORD)
    if not Account.objects.filter(owner=user).exists():
        account_create(owner=user, name="Bench")
    cookie = session_cookie("bench-dash")

    env = {**os.environ, "BINANCE_API_URL": replay.api_url, "BINANCE_STREAM_URL": replay.stream_url, "DEBUG": "0", "SECURE_SSL_REDIRECT": "0",
           "SESSION_COOKIE_SECURE": "0", "CSRF_COOKIE_SECURE": "0"}
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    from trading.management.commands.runstack import web_server_command

    bindir = Path(sys.executable).parent
    web = subprocess.Popen(web_server_command(bindir, "127.0.0.1", port, 1).split(), cwd=ROOT, env=env, stdout=subprocess.DEVNULL)
    ingester = subprocess.Popen([sys.executable, "manage.py", "ingest"], cwd=ROOT, env=env, stdout=subprocess.DEVNULL)
    levels = []
    try:
        wait_http(base_url + "/login/", timeout=60)
        print(f"measuring replayed event → DOM for {args.seconds:.0f} s (replay speed {args.speed:g}x) …", flush=True)
        dom = measure_dom_latency(base_url, cookie, args.seconds)
        ingester.terminate()
        ingester.wait(20)
        for n in [int(x) for x in args.clients.split(",")]:
            print(f"fan-out to {n} clients …", flush=True)
            res = asyncio.run(fanout_level(base_url.replace("http://", "ws://") + "/ws/dashboard/", base_url, cookie, n, args.fanout_seconds))
            res["rss"] = rss_mb(web.pid)
            levels.append(res)
            if res["expected"] == 0 or res["delivered"] / res["expected"] < 0.999 or res["p99"] > 1000:
                break
    finally:
        for p in (ingester, web):
            if p.poll() is None:
                p.terminate()
        for p in (ingester, web):
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                p.kill()
        replay.stop()

    db = settings.DATABASES["default"]["ENGINE"].rsplit(".", 1)[-1]
    print(f"\nDashboard benchmark — {os.cpu_count()} cores, {db}, uvicorn x1, channel layer {LAYER}, loopback, "
          f"load avg {os.getloadavg()[0]:.1f}")
    print(f"1. replayed event → DOM (ingester receipt → bid/ask written), {len(dom)} updates in {args.seconds:.0f} s:")
    if dom:
        print(f"   p50 {pct(dom, 50):.1f} ms   p90 {pct(dom, 90):.1f} ms   p99 {pct(dom, 99):.1f} ms   max {max(dom):.1f} ms   "
              f"mean {statistics.mean(dom):.1f} ms")
    print("2. WebSocket clients on one server process, 1 msg/s fan-out each:")
    print(f"   {'clients':>7} {'connected':>9} {'failed':>6} {'delivered':>11} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8} {'RSS MB':>7}")
    for r in levels:
        share = r["delivered"] / r["expected"] * 100 if r["expected"] else 0
        print(f"   {r['clients']:>7} {r['connected']:>9} {r['failures']:>6} {share:>10.2f}% {r['p50']:>8.1f} {r['p99']:>8.1f} "
              f"{r['max']:>8.1f} {r['rss']:>7.0f}")
    held = [r["clients"] for r in levels if r["expected"] and r["delivered"] / r["expected"] >= 0.999 and r["p99"] <= 1000
            and not r["failures"]]
    print(f"   holds: {max(held) if held else 0} clients (≥ 99.9 % delivered, p99 < 1 s)")


if __name__ == "__main__":
    main()
