"""A multi-process deployment on loopback against PostgreSQL: two web servers (separate processes
and ports, as behind a load balancer), two Celery workers (+ the one beat), two ingesters of which
one is elected by the Redis lease, all on one Redis.

- Orders: 16 agents racing through both servers at once on one account with a position limit
  for 5 orders: exactly 5 fill, the other 11 get a typed risk error; each order is booked and
  audited once.
- Pushes: a dashboard socket on each server sees every filled order, whichever server took it, and
  the elected ingester's quotes.
- Workers: read-tool audit entries written by both servers are drained into ``AuditEvent`` by the
  workers exactly once.
- Election: exactly one ingester holds the lease.

PostgreSQL only (SQLite is one file on one machine; the CI's PostgreSQL pass runs it).
"""
import asyncio
import json
import sys
import threading
import time
import uuid
from decimal import Decimal
from pathlib import Path

import httpx
import pytest
import websockets
from django.conf import settings
from django.db import connection

from conftest import subprocess_database_url, wait_until

sys.path.insert(0, str(Path(__file__).resolve().parent / "faults"))
from faultkit import Processes, free_port, mcp_call, tool_result
from marketdata.services import exchange_info_sync
from core.leader import lease_holder
from risk.models import AuditEvent, RiskLimit
from test_e2e import session_cookie
from trading.models import Fill, Order, Position

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(300)]


class Dashboard(threading.Thread):
    """A logged-in dashboard WebSocket on one server, collecting frames until stopped."""

    def __init__(self, base_url, cookie):
        super().__init__(daemon=True)
        self.url = base_url.replace("http://", "ws://") + "/ws/dashboard/"
        self.headers = {"Cookie": f"{settings.SESSION_COOKIE_NAME}={cookie}", "Origin": base_url}
        self.frames: list[dict] = []
        self.ready = threading.Event()
        self.stopping = threading.Event()

    def run(self):
        async def main():
            async with websockets.connect(self.url, additional_headers=self.headers) as ws:
                self.ready.set()
                while not self.stopping.is_set():
                    try:
                        self.frames.append(json.loads(await asyncio.wait_for(ws.recv(), 0.5)))
                    except asyncio.TimeoutError:
                        pass

        asyncio.run(main())

    def order_states(self) -> dict[int, str]:
        out = {}
        for f in list(self.frames):
            if f.get("type") == "account" and f.get("kind") == "order":
                for item in f["items"]:
                    out[item["orderId"]] = item["status"]
        return out

    def saw_market(self, symbol) -> bool:
        return any(f.get("type") == "market" and f.get("symbol") == symbol for f in list(self.frames))


def test_two_of_each_process_keep_orders_risk_and_pushes_correct(replay, trader):
    if connection.vendor != "postgresql":
        pytest.skip("multi-process deployment test: PostgreSQL pass only")
    exchange_info_sync()
    user, account, token = trader
    lease = f"scaling-ingester-{uuid.uuid4().hex[:6]}"
    bindir = Path(sys.executable).parent
    procs = Processes({
        "DATABASE_URL": subprocess_database_url(), "BINANCE_VENUE": "replay", "BINANCE_API_URL": replay.api_url,
        "BINANCE_STREAM_URL": replay.stream_url, "REDIS_URL": settings.REDIS_URL, "LEADER_LEASE_S": "3",
        "MARKET_DATA_MAX_AGE_S": "600", "PAPER_DEPTH_MAX_AGE_S": "600", "TOKEN_RATE_LIMIT_PER_MINUTE": "0",
    })
    boards: list[Dashboard] = []
    try:
        for name in ("ing-a", "ing-b"):
            procs.manage(name, "ingest", "--symbols", "BTCUSDT", "--lease", lease)
        for i in (1, 2):
            procs.spawn(f"worker-{i}", [str(bindir / "celery"), "-A", "project", "worker", "-l", "warning", "--pool", "solo",
                                        "-n", f"scaling{i}-{uuid.uuid4().hex[:4]}@%h", "-Q", "celery"])
        procs.spawn("beat", [str(bindir / "celery"), "-A", "project", "beat", "-l", "warning", "--pidfile=",
                             "--schedule", str(Path(settings.DATA_DIR) / f"beat-{uuid.uuid4().hex[:6]}")])
        servers = [procs.web("web-a", free_port()), procs.web("web-b", free_port())]

        cookie = session_cookie("alice", "pw-for-tests-1")
        boards = [Dashboard(base, cookie) for base in servers]
        for b in boards:
            b.start()
            assert b.ready.wait(20)
        holder = wait_until(lambda: lease_holder(lease), timeout=60, what="an elected ingester")
        leader_pid = int(holder.split(":")[1])
        assert leader_pid in {p.pid for n, p in procs.procs.items() if n.startswith("ing-")}
        wait_until(lambda: all(b.saw_market("BTCUSDT") for b in boards), timeout=60,
                   what="the elected ingester's quotes on both servers' sockets")

        # Read calls through both servers: their audit entries go through Redis to the workers.
        reads = []

        def ticker(http, base):
            reads.append(tool_result(mcp_call(http, base, token, "get_ticker", {"symbol": "BTCUSDT"})))
            return reads[-1]

        with httpx.Client(timeout=30) as http:
            for i in range(10):
                assert ticker(http, servers[i % 2])[0] == "ok"

        # Price the limit on a still market: room for exactly 5 orders of 0.002 BTC.
        replay.clock.pause()
        time.sleep(0.6)
        ask = Decimal(httpx.get(f"{replay.api_url}/v3/ticker/bookTicker", params={"symbol": "BTCUSDT"}).json()["askPrice"])
        with httpx.Client(timeout=10) as http:
            wait_until(lambda: Decimal(ticker(http, servers[1])[1]["askPrice"]) == ask, timeout=10, what="the cache to hold the venue's current quote")
        cap = ask * Decimal("0.010")
        RiskLimit.objects.filter(account=account).update(max_position_notional=cap)

        agents, barrier, outcomes = 16, threading.Barrier(16), []

        def agent(i):
            with httpx.Client(timeout=60) as http:
                barrier.wait()
                outcomes.append((i, *tool_result(mcp_call(http, servers[i % 2], token, "place_order", {
                    "symbol": "BTCUSDT", "side": "BUY", "quantity": "0.002", "client_order_id": f"scale-{i}"}))))

        threads = [threading.Thread(target=agent, args=(i,)) for i in range(agents)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        filled = [o for o in outcomes if o[1] == "ok"]
        refused = [o for o in outcomes if o[1] == "tool_error"]
        assert len(outcomes) == agents and len(filled) == 5 and len(refused) == agents - 5, outcomes
        assert all("[-2010]" in text or "Risk" in text or "limit" in text for _, _, text in refused), refused
        db_filled = {o.pk for o in Order.objects.filter(account=account, status="FILLED")}
        assert db_filled == {payload["orderId"] for _, _, payload in filled}
        assert Fill.objects.filter(account=account).count() == 5
        assert Position.objects.get(account=account, symbol="BTCUSDT").quantity * ask <= cap
        assert AuditEvent.objects.filter(account=account, action="order.place").count() == agents

        # Every filled order reached the sockets on both servers, whichever server took it.
        for b in boards:
            wait_until(lambda b=b: db_filled <= {k for k, v in b.order_states().items() if v == "FILLED"}, timeout=30,
                       what="every filled order pushed to each server's socket")
        # The workers drained every read's audit entry exactly once.
        wait_until(lambda: AuditEvent.objects.filter(action="mcp.get_ticker").count() >= len(reads), timeout=60,
                   what="the workers to drain the audit log")
        time.sleep(2.5)  # a second drain pass must not double anything
        assert AuditEvent.objects.filter(action="mcp.get_ticker").count() == len(reads)
        assert lease_holder(lease) == holder, "one ingester led throughout"
    finally:
        replay.clock.resume()
        for b in boards:
            b.stopping.set()
        for b in boards:
            b.join(5)
        procs.stop_all()
