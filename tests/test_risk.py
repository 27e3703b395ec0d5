"""Risk limits, trading states, the daily-loss breaker and the kill switch, through the order
service on the paper venue with quotes from the replay exchange."""
import threading
from datetime import timedelta
from decimal import Decimal

import pytest
from django.db import connection
from django.utils import timezone

from risk.models import AuditEvent, RiskLimit
from risk.services import account_set_state
from trading.services import account_halt
from core.errors import RiskRejected
from trading.models import Balance, Order, Position
from trading.services import order_place


def place(account, user, **kw):
    args = {"symbol": "BTCUSDT", "side": "BUY", "quantity": "0.002", "channel": "api"}
    args.update(kw)
    return order_place(account=account, actor_user=user, **args).order


def limit(account, **fields):
    RiskLimit.objects.filter(account=account).update(**fields)


def refused(account, user, text, **kw):
    with pytest.raises(RiskRejected) as exc:
        place(account, user, **kw)
    assert text in exc.value.msg, exc.value.msg
    return exc.value


def test_allowed_symbols(quotes, trader):
    user, account, _ = trader
    limit(account, allowed_symbols=["ETHUSDT"])
    refused(account, user, "BTCUSDT is not allowed on this account (allowed: ETHUSDT)")
    assert place(account, user, symbol="ETHUSDT", quantity="0.01")["status"] == "FILLED"


def test_max_position_notional_counts_the_position_and_lets_sells_through(quotes, trader):
    user, account, _ = trader
    ask = Decimal(quotes["BTCUSDT"]["askPrice"])
    limit(account, max_position_notional=ask * Decimal("0.005"))
    place(account, user, quantity="0.003")
    err = refused(account, user, "max_position_notional: the BTCUSDT position would be worth", quantity="0.003")
    check = err.details["riskDecision"]["checks"][-1]
    assert check["name"] == "max_position_notional" and Decimal(check["usage"]) > 0
    assert place(account, user, side="SELL", quantity="0.0015")["status"] == "FILLED"
    assert place(account, user, quantity="0.002")["status"] == "FILLED"


def test_max_total_exposure_spans_symbols(quotes, trader):
    user, account, _ = trader
    limit(account, max_total_exposure=Decimal("40"))
    place(account, user, symbol="ETHUSDT", quantity="0.01")  # ~20 USDT
    refused(account, user, "max_total_exposure: positions would be worth", quantity="0.003")  # +~21.6


def test_max_open_orders_and_orders_per_minute(quotes, trader):
    user, account, _ = trader
    bid = Decimal(quotes["BTCUSDT"]["bidPrice"])
    limit(account, max_open_orders=2)
    for i in range(2):
        place(account, user, order_type="LIMIT", price=str(bid - 100 - i), time_in_force="GTC")
    refused(account, user, "max_open_orders: 2 orders are open; the limit is 2", order_type="LIMIT", price=str(bid - 110),
            time_in_force="GTC")
    assert place(account, user)["status"] == "FILLED", "a MARKET order never rests"
    limit(account, max_open_orders=None, max_orders_per_minute=4)
    refused(account, user, "max_orders_per_minute: 4 orders in the last 60 s")


def test_price_band(quotes, trader):
    user, account, _ = trader
    bid = Decimal(quotes["BTCUSDT"]["bidPrice"])
    limit(account, price_band_pct=Decimal("5"))
    far = (bid * Decimal("0.90")).quantize(Decimal("0.01"))
    refused(account, user, "price_band_pct: price", order_type="LIMIT", price=str(far), time_in_force="GTC")
    near = (bid * Decimal("0.98")).quantize(Decimal("0.01"))
    assert place(account, user, order_type="LIMIT", price=str(near), time_in_force="GTC")["status"] == "NEW"


def test_reducing_allows_only_orders_that_shrink_the_position(quotes, trader):
    user, account, _ = trader
    place(account, user, quantity="0.004")
    account_set_state(account=account, actor_user=user, channel="admin", state="REDUCING")
    refused(account, user, "account is REDUCING", quantity="0.002")
    held = Position.objects.get(account=account, symbol="BTCUSDT").quantity
    too_much = held.quantize(Decimal("0.00001")) + Decimal("0.001")  # a valid LOT_SIZE, above the position
    refused(account, user, "only SELL orders up to the position", side="SELL", quantity=str(too_much))
    assert place(account, user, side="SELL", quantity="0.002")["status"] == "FILLED"


def test_daily_loss_breaker_halts_until_midnight_then_lifts(quotes, trader):
    user, account, _ = trader
    # One round trip of 0.002 BTC loses the spread plus two taker fees (~0.029 USDT at ~7.2k).
    limit(account, max_daily_loss=Decimal("0.02"))
    place(account, user, quantity="0.002")
    place(account, user, side="SELL", quantity="0.00199")
    refused(account, user, "max_daily_loss: today's loss")
    state = RiskLimit.objects.get(account=account)
    assert state.trading_state == "HALTED" and state.halted_until.hour == 0 and state.halted_until > timezone.now()
    refused(account, user, "account is HALTED until")
    # Past the halt (as at 00:00 UTC) the breaker lifts itself, the day's loss counter has reset
    # (no fill today any more), and trading resumes.
    RiskLimit.objects.filter(account=account).update(halted_until=timezone.now() - timedelta(seconds=1))
    from trading.models import Fill

    Fill.objects.filter(account=account).update(time=timezone.now() - timedelta(days=1))
    assert place(account, user)["status"] == "FILLED"
    assert RiskLimit.objects.get(account=account).trading_state == "ACTIVE"


def test_kill_switch_halts_cancels_and_is_audited(quotes, trader):
    user, account, _ = trader
    bid = Decimal(quotes["BTCUSDT"]["bidPrice"])
    resting = place(account, user, order_type="LIMIT", price=str(bid - 50), time_in_force="GTC")
    assert Balance.objects.get(account=account, asset="USDT").locked > 0
    out = account_halt(account=account, actor_user=user, channel="dashboard")
    assert [o["orderId"] for o in out["canceled"]] == [resting["orderId"]]
    assert Order.objects.get(pk=resting["orderId"]).status == "CANCELED"
    assert Balance.objects.get(account=account, asset="USDT").locked == 0
    refused(account, user, "account is HALTED until an admin resumes it")
    event = AuditEvent.objects.get(action="risk.halt")
    assert event.result == {"before": "ACTIVE", "after": "HALTED"} and event.channel == "dashboard"
    account_set_state(account=account, actor_user=user, channel="admin", state="ACTIVE")
    assert place(account, user)["status"] == "FILLED"


def _free_postgres_connections() -> int:
    """Connections PostgreSQL still accepts (``max_connections`` less the open ones and the ones
    reserved for superusers): each racing agent holds one, and the servers other tests of this
    run started (session-wide) hold some too."""
    with connection.cursor() as cur:
        cur.execute("SELECT current_setting('max_connections')::int - current_setting('superuser_reserved_connections')::int"
                    " - (SELECT count(*) FROM pg_stat_activity)")
        return cur.fetchone()[0]


@pytest.mark.django_db(transaction=True)
def test_racing_agents_never_exceed_a_limit_together(symbols, trader):
    """Many threads place BUYs at once on one account; the account-row lock makes the check and
    the booking atomic, so the position never passes max_position_notional."""
    from conftest import cache_quotes

    symbols.clock.pause()
    try:
        book = {b["symbol"]: b for b in cache_quotes()}["BTCUSDT"]
        user, account, _ = trader
        ask = Decimal(book["askPrice"])
        cap = ask * Decimal("0.010")  # room for 5 orders of 0.002
        limit(account, max_position_notional=cap)
        agents = min(64, _free_postgres_connections() - 8) if connection.vendor == "postgresql" else 16
        assert agents >= 16, f"only {agents} PostgreSQL connections free for the race"
        barrier = threading.Barrier(agents)
        outcomes = []

        def agent(i):
            barrier.wait()
            try:
                outcomes.append(place(account, user, client_order_id=f"race-{i}")["status"])
            except RiskRejected:
                outcomes.append("RISK")
            finally:
                connection.close()

        threads = [threading.Thread(target=agent, args=(i,)) for i in range(agents)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
    finally:
        symbols.clock.resume()
    position = Position.objects.get(account=account, symbol="BTCUSDT")
    assert outcomes.count("FILLED") == 5 and outcomes.count("RISK") == agents - 5, outcomes
    assert position.quantity * ask <= cap
    assert AuditEvent.objects.filter(action="order.place").count() == agents


@pytest.mark.django_db
def test_database_trigger_refuses_audit_changes_even_in_raw_sql(trader):
    from django.db import DatabaseError, transaction
    from risk.audit import audit_record

    user, account, _ = trader
    event = audit_record(channel="system", action="test", outcome="ok", account=account)
    for sql in ("UPDATE risk_auditevent SET message = 'x' WHERE id = %s", "DELETE FROM risk_auditevent WHERE id = %s"):
        with pytest.raises(DatabaseError, match="append-only"), transaction.atomic(), connection.cursor() as cur:
            cur.execute(sql, [event.pk])
    assert AuditEvent.objects.get(pk=event.pk).message == ""


def test_admin_exports_audit_csv_and_audits_limit_changes(quotes, trader, client, django_user_model):
    user, account, _ = trader
    admin_user = django_user_model.objects.create_superuser("root", "root@example.com", "pw-root-123")
    client.force_login(admin_user)
    place(account, user)
    limit_row = RiskLimit.objects.get(account=account)
    form = {"account": account.pk, "max_order_notional": "50", "allowed_symbols": "[]", "trading_state": "ACTIVE",
            "halted_reason": "", "halted_until_0": "", "halted_until_1": ""}
    resp = client.post(f"/admin/risk/risklimit/{limit_row.pk}/change/", form)
    assert resp.status_code == 302, resp.content[:2000]
    change = AuditEvent.objects.get(action="risk_limit.change")
    assert change.channel == "admin" and change.result["before"]["max_order_notional"] is None
    assert change.result["after"]["max_order_notional"] == "50"
    ids = list(AuditEvent.objects.values_list("pk", flat=True))
    resp = client.post("/admin/risk/auditevent/", {"action": "export_csv", "_selected_action": ids})
    text = resp.content.decode()
    assert resp["Content-Type"] == "text/csv" and "order.place" in text and "risk_limit.change" in text


def test_audit_stores_hostile_text_with_nul_characters(trader):
    """PostgreSQL text/jsonb cannot hold NUL: the audit keeps a visible escape instead of failing."""
    from risk.audit import audit_drain, audit_enqueue, audit_record

    user, account, _ = trader
    event = audit_record(channel="mcp", action="order.place", outcome="rejected", actor_user=user, account=account,
                         params={"symbol": "BTC\x00USDT", "k\x00": ["a\x00"]}, message="bad \x00 input")
    event.refresh_from_db()
    assert event.params == {"symbol": "BTC\\x00USDT", "k\\x00": ["a\\x00"]} and event.message == "bad \\x00 input"
    audit_enqueue(channel="mcp", action="mcp.get_ticker", outcome="rejected", actor_user=user, params={"symbol": "\x00"})
    assert audit_drain() == 1
    assert AuditEvent.objects.get(action="mcp.get_ticker").params == {"symbol": "\\x00"}


def test_a_redelivered_audit_entry_is_written_once(trader, monkeypatch):
    """A drainer that committed its rows but died before XACK leaves the entries pending; the next
    drain claims them and must not write them again (each row keeps its stream id, ``wal_id``)."""
    from core.redis import get_redis
    from risk import audit

    user, account, _ = trader
    for i in range(3):
        audit.audit_enqueue(channel="mcp", action="mcp.get_ticker", outcome="ok", actor_user=user,
                            account=account, params={"i": i})
    r = get_redis()

    def dies_before_ack(*args):
        raise ConnectionError("drainer killed between its commit and XACK")

    monkeypatch.setattr(type(r), "xack", dies_before_ack)
    with pytest.raises(ConnectionError):
        audit.audit_drain(consumer="first")
    assert AuditEvent.objects.filter(action="mcp.get_ticker").count() == 3  # committed, not acknowledged
    monkeypatch.undo()
    monkeypatch.setattr(audit, "AUDIT_CLAIM_IDLE_MS", 0)  # the pending entries are claimable at once
    audit.audit_enqueue(channel="mcp", action="mcp.get_ticker", outcome="ok", actor_user=user, account=account,
                        params={"i": 3})
    assert audit.audit_drain(consumer="second") == 1  # only the new entry is written
    rows = list(AuditEvent.objects.filter(action="mcp.get_ticker").order_by("id"))
    assert [e.params["i"] for e in rows] == [0, 1, 2, 3]
    assert len({e.wal_id for e in rows}) == 4 and all(e.wal_id for e in rows)
    assert r.xlen(audit.audit_stream_key()) == 0  # every entry acknowledged and deleted
    assert audit.audit_drain(consumer="third") == 0


def test_audit_values_are_stored_as_the_standard_librarys_json_stored_them():
    """``risk.audit._jsonable`` round-trips through orjson but stores what ``json.dumps(value,
    default=str)`` stored (Decimals, datetimes, dates, UUIDs, dataclasses, sets as their ``str()``,
    non-string keys as strings), falls back to the standard library for what orjson refuses
    (integers beyond 64 bits, lone surrogates), and makes every string storable."""
    import dataclasses
    import datetime
    import json
    import uuid

    from risk.audit import _jsonable, _storable

    @dataclasses.dataclass
    class Point:
        x: int = 1

    now = datetime.datetime.now(datetime.timezone.utc)
    values = [
        {"qty": Decimal("0.00200000"), "at": now, "naive": datetime.datetime(2020, 1, 2, 3, 4, 5, 123456),
         "day": now.date(), "clock": datetime.time(1, 2, 3, 4000), "id": uuid.uuid4(), 7: "int key",
         "nested": [1, 2.5, True, None, {"k\x00": "v\x00"}], "point": Point(), "set": {3}, "raw": b"ab",
         "span": datetime.timedelta(seconds=3.5), "pair": (1, "b")},
        {"big": 2**70, "neg": -2**80, "at": now},
        {"surrogate": "\ud800", "qty": Decimal("1E-8")},
        "text\x00", 12, [], None,
    ]
    for value in values:
        expected = None if value is None else _storable(json.loads(json.dumps(value, default=str)))
        assert _jsonable(value) == expected, value
    assert _jsonable({"at": now})["at"] == str(now)  # not orjson's own datetime format
    assert _jsonable({"big": 2**70})["big"] == str(2**70)  # beyond bigint: its digits
