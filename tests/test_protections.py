"""Freqtrade-style protections (risk.protections) through the order service on the paper venue,
with quotes from the replay exchange: a BUY at the ask then a SELL at the bid is a real losing trade
(spread + fees), which is what trips them."""
from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from risk.models import AuditEvent, Protection, ProtectionLock
from risk.protections import lock_release, max_drawdown, trades_since
from core.errors import RiskRejected
from trading.models import Fill
from trading.services import order_place


def place(account, user, **kw):
    args = {"symbol": "BTCUSDT", "side": "BUY", "quantity": "0.002", "channel": "api"}
    args.update(kw)
    return order_place(account=account, actor_user=user, **args).order


def losing_trade(account, user, symbol="BTCUSDT", qty="0.002"):
    """BUY at the ask, SELL at the bid: the SELL order is a trade with a loss. (Buys a bit more
    than it sells: the BUY's commission is paid in the base asset.)"""
    place(account, user, symbol=symbol, quantity=str(Decimal(qty) * 2))
    sell = place(account, user, symbol=symbol, side="SELL", quantity=qty)
    trade = [t for t in trades_since(account, timezone.now() - timedelta(minutes=5)) if t.order_id == sell["orderId"]][0]
    assert trade.profit < 0, trade
    return sell


def refused(account, user, text, **kw):
    with pytest.raises(RiskRejected) as exc:
        place(account, user, **kw)
    assert text in exc.value.msg, exc.value.msg
    return exc.value


def test_cooldown_per_symbol_locks_only_buys_of_that_symbol_and_is_audited_once(quotes, trader):
    user, account, _ = trader
    Protection.objects.create(account=account, kind="cooldown", scope="symbol", lock_minutes=30)
    place(account, user, quantity="0.004")
    assert place(account, user)["status"] == "FILLED", "no losing trade yet: nothing locks"
    sell = place(account, user, side="SELL", quantity="0.002")
    err = refused(account, user, "protections: BTCUSDT is locked until")
    assert err.details["riskDecision"]["checks"][-1]["name"] == "protections"
    assert "cooldown" in err.msg
    refused(account, user, "protections: BTCUSDT is locked until")
    assert place(account, user, symbol="ETHUSDT", quantity="0.01")["status"] == "FILLED"
    assert place(account, user, side="SELL", quantity="0.002")["status"] == "FILLED", "exits stay allowed"

    lock = ProtectionLock.objects.get(account=account)
    last_sell_fill = Fill.objects.filter(order_id=sell["orderId"]).order_by("-time").first()
    assert lock.symbol == "BTCUSDT" and lock.until == last_sell_fill.time + timedelta(minutes=30)
    events = AuditEvent.objects.filter(account=account, action="risk.protection_lock")
    assert events.count() == 1 and events[0].result["symbol"] == "BTCUSDT"


def test_cooldown_over_the_whole_account_and_its_end(quotes, trader):
    user, account, _ = trader
    Protection.objects.create(account=account, kind="cooldown", scope="account", lock_minutes=30)
    losing_trade(account, user)
    refused(account, user, "protections: the account is locked until", symbol="ETHUSDT", quantity="0.01")
    # The same trade 31 minutes ago would have locked until 1 minute ago: nothing locks now.
    ProtectionLock.objects.all().delete()
    Fill.objects.filter(account=account).update(time=timezone.now() - timedelta(minutes=31))
    assert place(account, user, symbol="ETHUSDT", quantity="0.01")["status"] == "FILLED"
    assert not ProtectionLock.objects.filter(account=account).exists()


def test_stoploss_guard_counts_only_trades_inside_the_lookback(quotes, trader):
    user, account, _ = trader
    Protection.objects.create(account=account, kind="stoploss_guard", scope="account", trade_limit=2,
                              lookback_minutes=60, lock_minutes=120)
    first = losing_trade(account, user)
    assert place(account, user, quantity="0.002")["status"] == "FILLED", "one losing trade: still allowed"
    place(account, user, side="SELL", quantity="0.002")  # the second losing trade
    err = refused(account, user, "stoploss_guard: 2 losing trades in the last 60 min (limit 2)")
    assert "locked until" in err.msg
    # Moving the first trade out of the window leaves one losing trade: a fresh evaluation does not trip.
    ProtectionLock.objects.all().delete()
    Fill.objects.filter(order_id=first["orderId"]).update(time=timezone.now() - timedelta(minutes=61))
    assert place(account, user)["status"] == "FILLED"


def test_max_drawdown_is_freqtrades_relative_drawdown():
    # cumulative profit 10, -20, -15; high-water mark 10; worst drawdown (10 - -20) / (100 + 10)
    assert max_drawdown([Decimal(10), Decimal(-30), Decimal(5)], Decimal(100)) == Decimal(30) / Decimal(110)
    assert max_drawdown([Decimal(5), Decimal(5)], Decimal(100)) == 0
    assert max_drawdown([Decimal(-10)], Decimal(200)) == Decimal(10) / Decimal(200)


def test_max_drawdown_protection_trips_over_its_threshold_only(quotes, trader):
    user, account, _ = trader
    p = Protection.objects.create(account=account, kind="max_drawdown", scope="account", lookback_minutes=60,
                                  lock_minutes=60, max_drawdown_pct=Decimal("50"))
    losing_trade(account, user)
    assert place(account, user, symbol="ETHUSDT", quantity="0.01")["status"] == "FILLED", "a tiny loss is no 50 % drawdown"
    p.max_drawdown_pct = Decimal("0.0001")
    p.save()
    refused(account, user, "max_drawdown: drawdown", symbol="ETHUSDT", quantity="0.01")


def test_low_profit_locks_the_losing_symbol_only(quotes, trader):
    user, account, _ = trader
    Protection.objects.create(account=account, kind="low_profit", scope="symbol", lookback_minutes=60, lock_minutes=60,
                              trade_limit=1, required_profit_pct=Decimal("0"))
    losing_trade(account, user)
    refused(account, user, "low_profit: BTCUSDT made -")
    assert place(account, user, symbol="ETHUSDT", quantity="0.01")["status"] == "FILLED"


def test_disabled_protection_does_not_trip_and_release_ends_a_lock(quotes, trader):
    user, account, _ = trader
    p = Protection.objects.create(account=account, kind="cooldown", scope="account", lock_minutes=30, enabled=False)
    losing_trade(account, user)
    assert place(account, user)["status"] == "FILLED"
    p.enabled = True
    p.save()
    refused(account, user, "protections: the account is locked")
    lock = ProtectionLock.objects.get(account=account)
    lock_release(lock=lock, actor_user=user, channel="admin")
    assert place(account, user)["status"] == "FILLED", "released: the same trade does not lock again"
    assert AuditEvent.objects.filter(account=account, action="risk.protection_unlock").count() == 1


def test_admin_edits_protections_and_audits_before_after(quotes, trader, client, django_user_model):
    _, account, _ = trader
    admin = django_user_model.objects.create_superuser("root", "root@example.com", "pw-for-tests-1")
    client.force_login(admin)
    p = Protection.objects.create(account=account, kind="stoploss_guard", scope="account", trade_limit=3)
    assert client.get("/admin/risk/protection/").status_code == 200
    assert client.get("/admin/risk/protectionlock/").status_code == 200
    resp = client.post(f"/admin/risk/protection/{p.pk}/change/", {
        "account": account.pk, "kind": "stoploss_guard", "scope": "account", "enabled": "on", "lookback_minutes": 60,
        "lock_minutes": 30, "trade_limit": 2, "max_drawdown_pct": "", "required_profit_pct": "", "note": "",
    })
    assert resp.status_code == 302, resp.content[:2000]
    p.refresh_from_db()
    assert p.trade_limit == 2
    event = AuditEvent.objects.get(action="protection.change")
    assert event.result["before"]["trade_limit"] == 3 and event.result["after"]["trade_limit"] == 2
    # A low_profit protection without its threshold is refused by the form, nothing saved.
    resp = client.post("/admin/risk/protection/add/", {
        "account": account.pk, "kind": "low_profit", "scope": "symbol", "enabled": "on", "lookback_minutes": 60,
        "lock_minutes": 30, "trade_limit": 1, "max_drawdown_pct": "", "required_profit_pct": "", "note": "",
    })
    assert resp.status_code == 200 and b"low_profit needs required_profit_pct" in resp.content
    assert Protection.objects.count() == 1
