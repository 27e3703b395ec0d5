"""MCP benchmark over both transports: our ``/mcp`` and ``/mcp/ws`` vs a bare FastMCP server, same run.

Starts (loopback, free ports) the replay exchange in-process (clock paused, quotes cached), the
bare FastMCP server of ``bench/bare_fastmcp_ws.py`` (mcp SDK, no auth, an equivalent Redis-backed
``get_ticker``; streamable HTTP stateless JSON at ``/mcp`` and the SDK's WebSocket transport at
``/ws``) and our production web server (uvicorn as ``runstack`` starts it). Then, rounds
interleaved, at 1, 8 and 32 concurrent clients:

- HTTP: ``wrk`` posting a JSON-RPC ``tools/call get_ticker`` (as ``bench/bench_mcp.py``), bare vs ours;
- WebSocket: a load generator in its own process (asyncio + websockets + uvloop): each client
  opens one connection, does ``initialize`` + ``notifications/initialized``, then calls
  ``get_ticker`` back to back, one request in flight per connection; bare vs ours.

Prints calls/s, p50 and p99 (medians over rounds) and the ratio ours / bare for each transport.
The Python WebSocket load generator uses CPU on the same 2 cores as the servers, so WebSocket and
HTTP absolute figures are not directly comparable; the ratio within a transport is.

Run: ``.venv/bin/python bench/bench_mcp_ws.py [--duration 4] [--rounds 3] [--connections 1,8,32] [--py-spy PREFIX]``
(``--py-spy``: py-spy, on PATH or ``$PY_SPY``, records our server during each of its WebSocket
phases into ``PREFIX-<conns>.txt``, folded stacks.)
Not a test: it prints figures and asserts nothing.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TICKER_CALL = {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "get_ticker", "arguments": {"symbol": "BTCUSDT"}}}


# --- the WebSocket load generator (``--client`` mode, its own process) ----------------------------

async def _ws_client(url: str, token: str | None, deadline_start: float, duration: float, lat: list) -> None:
    import websockets

    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with websockets.connect(url, subprotocols=["mcp"], additional_headers=headers, max_size=2**24) as ws:
        async def rpc(msg):
            await ws.send(json.dumps(msg))
            while True:
                reply = json.loads(await ws.recv())
                if reply.get("id") == msg["id"]:
                    return reply

        await rpc({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
            "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "bench", "version": "1"}}})
        await ws.send(json.dumps({"jsonrpc": "2.0", "method": "notifications/initialized"}))
        n = 1
        while time.monotonic() < deadline_start:
            await asyncio.sleep(0.001)
        end = deadline_start + duration
        body = dict(TICKER_CALL)
        while True:
            n += 1
            body["id"] = n
            t0 = time.perf_counter()
            reply = await rpc(body)
            t1 = time.perf_counter()
            if reply.get("result", {}).get("isError") or "error" in reply:
                raise SystemExit(f"call failed: {reply}")
            if time.monotonic() > end:
                break
            lat.append((t1 - t0) * 1000)


async def _ws_load(url: str, token: str | None, connections: int, duration: float) -> dict:
    lat: list[float] = []
    start = time.monotonic() + 1.0  # every connection open and initialized first
    await asyncio.gather(*[_ws_client(url, token, start, duration, lat) for _ in range(connections)])
    lat.sort()
    return {"rps": len(lat) / duration, "p50": lat[len(lat) // 2] if lat else None,
            "p99": lat[min(len(lat) - 1, int(len(lat) * 0.99))] if lat else None, "non2xx": 0,
            "requests": len(lat)}


def client_main(argv) -> None:
    """``--client`` mode: run the WebSocket load and print ``{rps, p50, p99}`` (ms) as JSON."""
    p = argparse.ArgumentParser()
    p.add_argument("--url")
    p.add_argument("--token", default=None)
    p.add_argument("--connections", type=int)
    p.add_argument("--duration", type=float)
    a = p.parse_args(argv)
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    print(json.dumps(asyncio.run(_ws_load(a.url, a.token, a.connections, a.duration))))


def run_ws(url: str, token: str | None, connections: int, duration: int) -> dict:
    """Run the WebSocket load generator in its own process against ``url``."""
    cmd = [sys.executable, __file__, "--client", "--url", url, "--connections", str(connections), "--duration", str(duration)]
    if token:
        cmd += ["--token", token]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 60)
    if out.returncode:
        raise SystemExit(f"WebSocket load generator failed: {out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def cpu_seconds(pid: int) -> float:
    """User + system CPU (s) used so far by process ``pid`` and its live children (uvicorn workers)."""
    import psutil

    proc = psutil.Process(pid)
    total = 0.0
    for p in [proc, *proc.children(recursive=True)]:
        try:
            t = p.cpu_times()
            total += t.user + t.system
        except psutil.NoSuchProcess:
            pass
    return total


def with_cpu(pid: int, run) -> dict:
    """``run()`` (a load phase returning ``requests``) plus the server's CPU per call in ms."""
    before = cpu_seconds(pid)
    row = run()
    row["cpu_ms"] = (cpu_seconds(pid) - before) * 1000 / max(1, row["requests"])
    return row


# --- the benchmark ------------------------------------------------------------------------------------

def main() -> None:
    os.environ.setdefault("TRADINGMCP_DATA_DIR", str(ROOT / "var" / "bench"))
    sys.path.insert(0, str(ROOT / "bench"))
    import bench_mcp as hb  # HTTP helpers (wrk, Lua body) and django.setup()
    import httpx
    from django.conf import settings
    from _common import replay_with_quotes

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", default="1,8,32")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--py-spy", metavar="PREFIX", help="profile our server during its WebSocket phases with "
                        "py-spy (on PATH or $PY_SPY): folded stacks to PREFIX-<conns>.txt")
    args = parser.parse_args()
    if not shutil.which("wrk"):
        raise SystemExit("wrk is needed: apt-get install -y wrk")

    from django.contrib.auth import get_user_model

    from risk.services import agent_token_create
    from trading.management.commands.runstack import web_server_command

    replay = replay_with_quotes()  # paused replay exchange, exchangeInfo synced, quotes cached
    user, _ = get_user_model().objects.get_or_create(username="bench")
    row, token = agent_token_create(user=user, name="bench-ws")
    row.rate_limit_per_minute = 0
    row.save()

    env = {**os.environ, "BINANCE_API_URL": replay.api_url, "BINANCE_STREAM_URL": replay.stream_url, "DEBUG": "0",
           "SECRET_KEY": "bench-secret-key-not-for-production-" + "x" * 20, "SECURE_SSL_REDIRECT": "0"}
    bare_port, ours_port = hb.free_port(), hb.free_port()
    bindir = Path(sys.executable).parent
    procs = [
        subprocess.Popen([sys.executable, str(ROOT / "bench" / "bare_fastmcp_ws.py"), "--port", str(bare_port),
                          "--redis-url", settings.REDIS_URL, "--key-prefix", settings.REDIS_KEY_PREFIX], cwd=ROOT, env=env),
        subprocess.Popen(web_server_command(bindir, "127.0.0.1", ours_port, args.workers).split(), cwd=ROOT, env=env,
                         stdout=subprocess.DEVNULL),
    ]
    urls = {
        ("http", "bare"): f"http://127.0.0.1:{bare_port}/mcp", ("http", "ours"): f"http://127.0.0.1:{ours_port}/mcp",
        ("ws", "bare"): f"ws://127.0.0.1:{bare_port}/ws", ("ws", "ours"): f"ws://127.0.0.1:{ours_port}/mcp/ws",
    }
    results: dict[tuple, list] = {}
    try:
        hb.wait_http(f"http://127.0.0.1:{bare_port}/")
        hb.wait_http(f"http://127.0.0.1:{ours_port}/login/")
        hdrs = {"Accept": "application/json, text/event-stream", "Authorization": f"Bearer {token}"}
        for server in ("bare", "ours"):
            result = httpx.post(urls[("http", server)], json=TICKER_CALL, headers=hdrs, timeout=10).json()["result"]
            assert not result["isError"], result
        conns = [int(c) for c in args.connections.split(",")]
        for _ in range(args.rounds):
            for c in conns:
                for server in ("bare", "ours"):
                    tok = token if server == "ours" else None
                    pid = procs[0 if server == "bare" else 1].pid
                    results.setdefault(("http", server, c), []).append(with_cpu(pid, lambda: hb.run_wrk(
                        urls[("http", server)], hb.lua_script(tok, TICKER_CALL), c, args.duration)))
                    spy = None
                    if args.py_spy and server == "ours":
                        spy = subprocess.Popen([os.environ.get("PY_SPY") or shutil.which("py-spy") or "py-spy", "record",
                                                "--nonblocking", "-r", "250", "-f", "raw", "-d", str(args.duration + 2),
                                                "-p", str(procs[1].pid), "-o", f"{args.py_spy}-{c}.txt"],
                                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                    results.setdefault(("ws", server, c), []).append(
                        with_cpu(pid, lambda: run_ws(urls[("ws", server)], tok, c, args.duration)))
                    if spy is not None:
                        spy.wait(30)
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
    print(f"\nMCP get_ticker over HTTP and WebSocket — {os.cpu_count()} cores, {db}, ours on uvicorn x{args.workers}, "
          f"{args.duration}s x {args.rounds} rounds (medians), loopback; HTTP load: wrk; WebSocket load: Python (websockets, uvloop)")
    print(f"{'transport':<9} {'conns':>5} | {'bare calls/s':>12} {'p50':>6} {'p99':>6} {'cpu':>5} | "
          f"{'ours calls/s':>12} {'p50':>6} {'p99':>6} {'cpu':>5} | {'ours/bare':>9}")
    for transport in ("http", "ws"):
        for c in [int(x) for x in args.connections.split(",")]:
            b, o = results[(transport, "bare", c)], results[(transport, "ours", c)]
            print(f"{transport:<9} {c:>5} | {med(b, 'rps'):>12.0f} {med(b, 'p50'):>6.2f} {med(b, 'p99'):>6.2f} "
                  f"{med(b, 'cpu_ms'):>5.2f} | {med(o, 'rps'):>12.0f} {med(o, 'p50'):>6.2f} {med(o, 'p99'):>6.2f} "
                  f"{med(o, 'cpu_ms'):>5.2f} | {med(o, 'rps') / med(b, 'rps'):>9.2f}")
    print("(p50/p99 in ms per call; cpu: the server's CPU ms per call, all its processes; calls/s summed over clients)")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--client":
        client_main(sys.argv[2:])
    else:
        main()
