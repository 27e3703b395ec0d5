"""Singleton processes killed with SIGKILL mid-stream: a standby elected by the Redis lease
(``core.leader``) takes over within seconds, and the stored data stays complete.

- Two ``manage.py ingest`` processes on a 60x replay (a replay minute per wall second): the leader
  is SIGKILLed twice (a killed one is restarted and becomes the standby); the stored 1m series is
  the recording, candle for candle, with no gap and no duplicate (SQLite pass).
- Two ``manage.py paper_matcher`` processes on a 10x replay: resting paper orders fill once each
  on replayed prints, before the leader is SIGKILLed, after the standby took over, and with both
  processes running again, only the leader matching (PostgreSQL pass).
"""
import os
import uuid
from decimal import Decimal

import pytest
from django.conf import settings

from conftest import subprocess_database_url, wait_until
from faultkit import Processes, postgres_pass, sqlite_pass
from marketdata.models import Kline
from core.leader import lease_holder
from test_marketdata_ingester import assert_series_is_the_recording, fast_replay  # noqa: F401  (fixture)

pytestmark = [pytest.mark.timeout(240)]


def _env(replay) -> dict:
    return {"DATABASE_URL": subprocess_database_url(), "BINANCE_VENUE": "replay", "BINANCE_API_URL": replay.api_url,
            "BINANCE_STREAM_URL": replay.stream_url, "LEADER_LEASE_S": "2", "REDIS_URL": settings.REDIS_URL}


def _leader_pid(lease: str) -> int | None:
    holder = lease_holder(lease)
    return int(holder.split(":")[1]) if holder else None


def _stored(symbol="ETHUSDT") -> int:
    return Kline.objects.filter(symbol=symbol, interval="1m").count()


@sqlite_pass
def test_ingester_killed_the_standby_takes_over_and_no_kline_is_missing(fast_replay):
    replay = fast_replay
    lease = f"faults-ingester-{uuid.uuid4().hex[:6]}"
    procs = Processes(_env(replay))
    args = ("ingest", "--symbols", "ETHUSDT", "--lease", lease)
    try:
        pids = {procs.manage(name, *args).pid: name for name in ("ing-a", "ing-b")}
        leader = wait_until(lambda: _leader_pid(lease), timeout=60, what="an elected ingester")
        assert leader in pids
        wait_until(lambda: _stored() >= 125, timeout=60, what="the backfill and the first streamed candles")
        for round_ in range(2):
            dead = pids[leader]
            before = _stored()
            procs.kill(dead)  # SIGKILL: no clean-up, the lease is left to expire
            leader = wait_until(lambda: (p := _leader_pid(lease)) and p != procs.procs[dead].pid and p, timeout=30,
                                what=f"the standby to take over (round {round_ + 1})")
            assert pids[leader] != dead and os.path.exists(f"/proc/{leader}")
            wait_until(lambda: _stored() >= before + 3, timeout=60, what="candles stored by the new leader")
            pids[procs.manage(dead, *args).pid] = dead  # the killed one comes back as the standby
        assert len(procs.procs) == 2
    finally:
        procs.stop_all()
    replay.clock.pause()
    assert_series_is_the_recording(replay, "ETHUSDT", min_rows=130)
    assert lease_holder(lease) is None, "a stopped leader releases its lease"


# --- the paper matcher ------------------------------------------------------------------------------

TICK = Decimal("0.01")


@pytest.fixture
def slow_replay(transactional_db):
    """A private replay exchange at 10x (a takeover of a few wall seconds is a few dozen replay
    seconds), started on a whole minute; settings point at it."""
    import time

    from replay.server import ReplayServer
    from marketdata.services import exchange_info_sync

    srv = ReplayServer(port=0, speed=10.0, start_wall_ms=int(time.time() // 60) * 60_000).start()
    old = (settings.BINANCE_API_URL, settings.BINANCE_STREAM_URL)
    settings.BINANCE_API_URL, settings.BINANCE_STREAM_URL = srv.api_url, srv.stream_url
    exchange_info_sync()
    yield srv
    settings.BINANCE_API_URL, settings.BINANCE_STREAM_URL = old
    srv.stop()


def resting_level(replay, after_s: int, symbol="BTCUSDT"):
    """``(side, price)`` of a resting LIMIT no print reaches in the next ``after_s`` replay seconds,
    at the edge the recording breaks through first after that (from the replay model)."""
    m = replay.model
    now = replay.clock.now_ms()
    i = m.trade_index(symbol, now)
    edge = m.trade_index(symbol, now + after_s * 1000) + 1  # the first print after after_s seconds
    before = [m.trade_at_index(symbol, j).price for j in range(i - 2, edge)]
    lo, hi = min(before), max(before)
    for j in range(edge, m.trade_index(symbol, now + (after_s + 3600) * 1000) + 1):
        p = m.trade_at_index(symbol, j).price
        if p < lo - TICK:
            return "BUY", lo - TICK
        if p > hi + TICK:
            return "SELL", hi + TICK
    raise AssertionError("the recording does not move for an hour: pick another window")


@postgres_pass
def test_paper_matcher_killed_the_standby_fills_each_order_once(slow_replay, trader):
    from conftest import cache_quotes
    from trading.models import Balance, Fill, Order
    from trading.services import order_place

    replay = slow_replay
    user, account, _ = trader
    Balance.objects.update_or_create(account=account, asset="BTC", defaults={"free": Decimal("1")})
    lease = f"faults-matcher-{uuid.uuid4().hex[:6]}"
    procs = Processes(_env(replay))
    args = ("paper_matcher", "--symbols", "BTCUSDT", "--lease", lease)

    def place(after_s, cid):
        cache_quotes(["BTCUSDT"])
        side, price = resting_level(replay, after_s)
        order = order_place(account=account, actor_user=user, channel="api", symbol="BTCUSDT", side=side,
                            order_type="LIMIT", quantity="0.002", price=str(price), time_in_force="GTC",
                            client_order_id=cid).order
        assert order["status"] == "NEW", order
        return order["orderId"]

    def filled(pk):
        return Order.objects.get(pk=pk).status == "FILLED"

    try:
        pids = {procs.manage(name, *args).pid: name for name in ("match-a", "match-b")}
        leader = wait_until(lambda: _leader_pid(lease), timeout=60, what="an elected matcher")
        first = place(10, "before-kill")
        wait_until(lambda: filled(first), timeout=90, what="the first order to fill on a replayed print")

        dead = pids[leader]
        procs.kill(dead)  # SIGKILL mid-stream
        second = place(150, "after-kill")  # crossed ≥ 15 wall s from now: after the takeover
        leader = wait_until(lambda: (p := _leader_pid(lease)) and pids.get(p) not in (None, dead) and p, timeout=30,
                            what="the standby matcher to take over")
        pids[procs.manage(dead, *args).pid] = dead  # the killed one comes back as the standby
        wait_until(lambda: filled(second), timeout=120, what="the second order to fill under the new leader")
        third = place(10, "two-running")  # both processes up: still matched once
        wait_until(lambda: filled(third), timeout=90, what="the third order to fill")
    finally:
        procs.stop_all()

    for pk in (first, second, third):
        fills = list(Fill.objects.filter(order_id=pk))
        o = Order.objects.get(pk=pk)
        assert sum(f.qty for f in fills) == o.quantity == o.executed_qty == Decimal("0.002"), [(f.qty, f.exchange_trade_id) for f in fills]
        assert all(f.is_maker and f.price == o.price for f in fills)
    assert Fill.objects.filter(account=account).count() == len({(f.order_id, f.exchange_trade_id, f.qty) for f in Fill.objects.filter(account=account)})
