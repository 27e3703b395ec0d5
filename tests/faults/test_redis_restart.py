"""Redis restarted (killed, data lost, started again) while two agents trade over ``/mcp``.

A private ``redis-server`` on a free port backs a real web server and ingester (never the
machine's 6379). Invariants: every call either succeeds or fails with a clear, typed error (HTTP
503 with ``Retry-After`` and a message, or a Binance-style ``[code]`` tool error; never a bare
500); every order an agent was told about is in the database with its fill and audit event, none
twice, balances equal to the fills; and once Redis is back the stack serves orders again by
itself (no process restarted).
"""
import re
import threading
import time
from decimal import Decimal

import httpx
import pytest

from conftest import subprocess_database_url, wait_until
from faultkit import PrivateRedis, Processes, free_port, mcp_call, sqlite_pass, tool_result
from marketdata.services import exchange_info_sync
from risk.models import AuditEvent
from trading.models import Balance, Fill, Order

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(240), sqlite_pass]
TYPED = re.compile(r"^(Error executing tool \w+: )?\[-?\d+\] ")


class Agent(threading.Thread):
    """Places MARKET BUY 0.002 BTCUSDT orders in a loop; a failed order is retried with the same
    client_order_id (as an agent should), so a retry can never make a second order."""

    def __init__(self, base_url, token, name):
        super().__init__(daemon=True)
        self.base_url, self.token, self.name = base_url, token, name
        self.stop = threading.Event()
        self.acked: dict[str, dict] = {}   # client_order_id -> the order as answered
        self.failures: list[tuple] = []    # (kind, detail)
        self.after_restart = 0
        self.restarted = threading.Event()

    def run(self):
        n = 0
        with httpx.Client(timeout=30) as http:
            while not self.stop.is_set():
                n += 1
                cid = f"{self.name}-{n}"
                for _attempt in range(50):
                    try:
                        kind, payload = tool_result(mcp_call(http, self.base_url, self.token, "place_order", {
                            "symbol": "BTCUSDT", "side": "BUY", "quantity": "0.002", "client_order_id": cid}))
                    except httpx.TransportError as exc:
                        kind, payload = "transport", repr(exc)
                    if kind == "ok":
                        self.acked[cid] = payload
                        if self.restarted.is_set():
                            self.after_restart += 1
                        break
                    self.failures.append((kind, payload))
                    if self.stop.wait(0.2):
                        break
                time.sleep(0.05)


def test_redis_restart_while_agents_trade(replay, trader, make_user):
    from risk.services import agent_token_create
    from trading.services import account_create

    exchange_info_sync()
    user, account, token = trader
    bob = make_user("bob")
    bob_account = account_create(owner=bob, name="Paper")
    _, bob_token = agent_token_create(user=bob, name="bob-agent")

    redis = PrivateRedis().start()
    procs = Processes({
        "DATABASE_URL": subprocess_database_url(), "REDIS_URL": redis.url, "BINANCE_VENUE": "replay",
        "BINANCE_API_URL": replay.api_url, "BINANCE_STREAM_URL": replay.stream_url, "LEADER_LEASE_S": "2",
    })
    agents = []
    try:
        procs.manage("ingester", "ingest", "--symbols", "BTCUSDT")
        base = procs.web("web", free_port())
        with httpx.Client(timeout=10) as http:
            wait_until(lambda: tool_result(mcp_call(http, base, token, "get_ticker", {"symbol": "BTCUSDT"}))[0] == "ok",
                       timeout=60, what="the first quote through the private Redis")
        agents = [Agent(base, token, "alice"), Agent(base, bob_token, "bob")]
        for a in agents:
            a.start()
        wait_until(lambda: all(len(a.acked) >= 3 for a in agents), timeout=60, what="orders before the restart")

        redis.restart(down_s=2.0)  # everything in Redis is gone: cached tokens, quotes, lease, audit log
        for a in agents:
            a.restarted.set()
        wait_until(lambda: all(a.after_restart >= 3 for a in agents), timeout=90,
                   what="orders succeeding again after the restart, with no process restarted")
    finally:
        for a in agents:
            a.stop.set()
        for a in agents:
            a.join(60)
        procs.stop_all()
        redis.kill()

    for agent in agents:
        print(agent.name, "acked", len(agent.acked), "failures", sorted({(k, str(d)[:90]) for k, d in agent.failures}))
    for agent, acct in zip(agents, (account, bob_account)):
        # Clear errors only: a 503 (Redis down) with a reason, a typed tool error, or a refused
        # connection while nothing listened; never an HTTP 500 or an "Internal error".
        for kind, detail in agent.failures:
            assert kind in {"http", "tool_error", "rpc_error", "transport"}, (kind, detail)
            if kind == "http":
                assert detail in (503, 429), agent.failures
            if kind == "tool_error":
                assert TYPED.search(detail) and "Internal error" not in detail, detail
        orders = list(Order.objects.filter(account=acct))
        by_cid = {o.client_order_id: o for o in orders}
        assert len(by_cid) == len(orders), "no client_order_id booked twice"
        # Every order an agent was told about is there, filled once, audited once.
        for cid, answer in agent.acked.items():
            o = by_cid[cid]
            assert answer["orderId"] == o.pk and o.status == "FILLED"
        assert set(by_cid) <= set(agent.acked) | {f"{agent.name}-{i}" for i in range(1, 10_000)}
        fills = list(Fill.objects.filter(account=acct))
        assert sorted(f.order_id for f in fills) == sorted(o.pk for o in orders if o.status == "FILLED")
        assert AuditEvent.objects.filter(account=acct, action="order.place", outcome="ok").count() == len(orders)
        # Balances are exactly what the fills say.
        spent = sum((f.price * f.qty).quantize(Decimal("0.00000001")) for f in fills)
        got = sum(f.qty - f.commission for f in fills)
        bal = {b.asset: b.free for b in Balance.objects.filter(account=acct)}
        assert bal["USDT"] == Decimal("10000") - spent and bal.get("BTC", Decimal(0)) == got
