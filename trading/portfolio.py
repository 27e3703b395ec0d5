"""Positions, portfolio value and P&L (reads), the risk panel (each limit with its usage) and the
minute snapshot / daily rollup (writes).

All values are in the account's ``quote_asset`` (USDT): an asset is valued at the best bid of
``<ASSET><QUOTE>`` from the market-data cache (what selling it would fetch at the top of the book),
falling back to the last fill price of that symbol; an asset with neither is reported with
``price: null`` and left out of the value. Unrealized P&L of a position = (mark − average entry) ×
quantity; realized P&L is booked per fill by the average-cost method (before fees).
"""
from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

from django.db import transaction
from django.db.models import Sum
from django.utils import timezone

from core.errors import InvalidInput, MarketDataUnavailable
from marketdata.selectors import quote_get
from risk.models import ProtectionLock, RiskLimit
from risk.services import daily_loss
from trading.models import Account, Balance, DailyPnl, Fill, Order, PortfolioSnapshot, Position
from trading.selectors import dstr

E8 = Decimal("0.00000001")
PERIODS = {"1d": timedelta(days=1), "7d": timedelta(days=7), "30d": timedelta(days=30), "today": None, "all": None}


def mark_price(symbol: str) -> Decimal | None:
    """Best bid of ``symbol`` from the cache (any age), else its last fill price, else None."""
    try:
        return quote_get(symbol).bid_price
    except MarketDataUnavailable:
        pass
    except Exception:  # Redis down: value from fills
        pass
    return Fill.objects.filter(symbol=symbol).order_by("-time", "-id").values_list("price", flat=True).first()


def positions_list(*, account: Account) -> list[dict]:
    """Open and closed positions: ``symbol, quantity (base), avgEntryPrice, markPrice,
    unrealizedPnl, realizedPnl, value`` (quote asset), numbers as strings."""
    out = []
    for p in Position.objects.filter(account=account).order_by("symbol"):
        mark = mark_price(p.symbol) if p.quantity else None
        unreal = (mark - p.avg_entry_price) * p.quantity if mark is not None else Decimal("0")
        out.append({
            "symbol": p.symbol, "quantity": dstr(p.quantity), "avgEntryPrice": dstr(p.avg_entry_price),
            "markPrice": dstr(mark), "unrealizedPnl": dstr(unreal.quantize(E8)), "realizedPnl": dstr(p.realized_pnl),
            "value": dstr((mark * p.quantity).quantize(E8)) if mark is not None else None,
        })
    return out


def portfolio_get(*, account: Account) -> dict:
    """The account valued in its quote asset: ``{"accountId", "quoteAsset", "value", "assets":
    [{asset, free, locked, price, value}], "positions": positions_list, "unrealizedPnl",
    "realizedPnl", "time" (ms UTC)}``."""
    quote = account.quote_asset
    total = Decimal("0")
    assets = []
    for b in Balance.objects.filter(account=account).order_by("asset"):
        amount = b.free + b.locked
        if not amount:
            continue
        price = Decimal("1") if b.asset == quote else mark_price(f"{b.asset}{quote}")
        value = (amount * price).quantize(E8) if price is not None else None
        if value is not None:
            total += value
        assets.append({"asset": b.asset, "free": dstr(b.free), "locked": dstr(b.locked), "price": dstr(price), "value": dstr(value)})
    positions = positions_list(account=account)
    unreal = sum((Decimal(p["unrealizedPnl"]) for p in positions), Decimal("0"))
    real = sum((Decimal(p["realizedPnl"]) for p in positions), Decimal("0"))
    return {
        "accountId": account.pk, "quoteAsset": quote, "value": dstr(total), "assets": assets, "positions": positions,
        "unrealizedPnl": dstr(unreal), "realizedPnl": dstr(real), "time": int(timezone.now().timestamp() * 1000),
    }


def snapshot_take(*, account: Account) -> PortfolioSnapshot:
    """Store the account's current value (one ``PortfolioSnapshot``; the Celery beat runs it each minute)."""
    p = portfolio_get(account=account)
    return PortfolioSnapshot.objects.create(
        account=account, time=timezone.now(), value=Decimal(p["value"]), realized_pnl=Decimal(p["realizedPnl"]),
        unrealized_pnl=Decimal(p["unrealizedPnl"]), balances={a["asset"]: a["value"] for a in p["assets"]},
    )


def _period_start(period: str):
    if period not in PERIODS:
        raise InvalidInput(f"period must be one of {', '.join(PERIODS)}, got {period!r}.")
    now = timezone.now()
    if period == "today":
        return now.replace(hour=0, minute=0, second=0, microsecond=0)
    if period == "all":
        return None
    return now - PERIODS[period]


def pnl_get(*, account: Account, period: str = "1d") -> dict:
    """P&L over ``period`` (today | 1d | 7d | 30d | all), quote asset: ``realizedPnl`` and ``fees``
    of the period's fills, ``netRealized`` = realized − fees, ``unrealizedPnl`` now, ``startValue``
    (first snapshot in the period, null without one), ``value`` now and ``change`` = value − start,
    plus the stored daily rollups of the period."""
    start = _period_start(period)
    fills = Fill.objects.filter(account=account)
    snaps = PortfolioSnapshot.objects.filter(account=account)
    days = DailyPnl.objects.filter(account=account)
    if start is not None:
        fills, snaps, days = fills.filter(time__gte=start), snaps.filter(time__gte=start), days.filter(day__gte=start.date())
    agg = fills.aggregate(pnl=Sum("realized_pnl"), fees=Sum("commission_quote"))
    realized, fees = agg["pnl"] or Decimal("0"), agg["fees"] or Decimal("0")
    now = portfolio_get(account=account)
    first = snaps.order_by("time").first()
    value = Decimal(now["value"])
    return {
        "accountId": account.pk, "period": period, "quoteAsset": account.quote_asset,
        "from": int(start.timestamp() * 1000) if start else None,
        "realizedPnl": dstr(realized), "fees": dstr(fees), "netRealized": dstr(realized - fees),
        "unrealizedPnl": now["unrealizedPnl"], "value": now["value"],
        "startValue": dstr(first.value) if first else None,
        "change": dstr(value - first.value) if first else None,
        "daily": [{"day": d.day.isoformat(), "pnl": dstr(d.pnl), "startValue": dstr(d.start_value), "endValue": dstr(d.end_value),
                   "realizedPnl": dstr(d.realized_pnl), "fees": dstr(d.fees)} for d in days.order_by("day")],
    }


@transaction.atomic
def daily_pnl_rollup(*, account: Account, day) -> DailyPnl | None:
    """Roll one UTC ``day`` (a ``date``) up from its snapshots and fills (idempotent: updates the
    row). None when the day has no snapshot."""
    snaps = PortfolioSnapshot.objects.filter(account=account, time__date=day).order_by("time")
    first, last = snaps.first(), snaps.last()
    if first is None:
        return None
    agg = Fill.objects.filter(account=account, time__date=day).aggregate(pnl=Sum("realized_pnl"), fees=Sum("commission_quote"))
    row, _ = DailyPnl.objects.update_or_create(account=account, day=day, defaults={
        "start_value": first.value, "end_value": last.value, "pnl": last.value - first.value,
        "realized_pnl": agg["pnl"] or Decimal("0"), "fees": agg["fees"] or Decimal("0"),
    })
    return row


# --- Risk panel (limits with their usage) --------------------------------------------------------------------------------------

def risk_panel(*, account: Account) -> dict:
    """The account's trading state and each ``RiskLimit`` with its current usage (quote asset):

    ``{"tradingState", "haltedReason", "haltedUntil" (ms|null), "breakerTripped" (the daily-loss
    breaker halted it), "limits": [{"name", "limit" (str|null = unlimited), "usage" (str|null),
    "pct" (0..100 float|null), "unit", "note"}], "locks": protection_locks}``. Usage is what ``risk.services.risk_check``
    measures: open orders, orders in the trailing 60 s, the largest position and the sum of
    positions at the mark price (``mark_price``), and today's loss
    (``risk.services.daily_loss``). ``max_order_notional`` and ``price_band_pct`` apply per order
    (no running usage).
    """
    lim = RiskLimit.objects.filter(account=account).first() or RiskLimit(account=account)
    quote = account.quote_asset
    now = timezone.now()
    locks = protection_locks(account=account, now=now)
    positions = positions_list(account=account)
    values = [Decimal(p["value"]) for p in positions if p["value"] is not None and Decimal(p["quantity"]) > 0]
    largest = max(values, default=Decimal("0"))
    exposure = sum(values, Decimal("0"))
    open_count = Order.objects.filter(account=account, status__in=Order.OPEN_STATUSES).count()
    recent = Order.objects.filter(account=account, created_at__gte=now - timedelta(seconds=60)).count()
    loss = daily_loss(account=account)

    def row(name, limit, usage, unit, note=""):
        pct = None
        if limit is not None and usage is not None:
            pct = 100.0 if not limit else min(100.0, float(Decimal(usage) / Decimal(limit) * 100))
        if usage is not None:
            usage = dstr(Decimal(usage).quantize(Decimal("0.01"))) if unit == quote else str(usage)
        limit_text = None if limit is None else format(Decimal(limit).normalize(), "f")
        return {"name": name, "limit": limit_text, "usage": usage, "pct": pct, "unit": unit, "note": note}

    halted_until = lim.halted_until
    if lim.trading_state == "HALTED" and halted_until is not None and now >= halted_until:
        state, reason, halted_until = "ACTIVE", "", None  # risk_check lifts it at the next order
    else:
        state, reason = lim.trading_state, lim.halted_reason
    return {
        "accountId": account.pk,
        "tradingState": state,
        "haltedReason": reason,
        "haltedUntil": int(halted_until.timestamp() * 1000) if halted_until else None,
        "breakerTripped": state == "HALTED" and reason.startswith("daily loss"),
        "allowedSymbols": list(lim.allowed_symbols or []),
        "limits": [
            row("max_daily_loss", lim.max_daily_loss, loss, quote, "today's realized loss incl. fees (UTC day)"),
            row("max_total_exposure", lim.max_total_exposure, exposure, quote, "sum of positions at mark"),
            row("max_position_notional", lim.max_position_notional, largest, quote, "largest position at mark"),
            row("max_open_orders", lim.max_open_orders, open_count, "orders"),
            row("max_orders_per_minute", lim.max_orders_per_minute, recent, "orders", "trailing 60 s"),
            row("max_order_notional", lim.max_order_notional, None, quote, "per order"),
            row("price_band_pct", lim.price_band_pct, None, "%", "limit/stop price vs last"),
        ],
        "locks": locks,
    }


def protection_locks(*, account: Account, now=None) -> list[dict]:
    """The account's active protection locks (``risk.models.ProtectionLock`` not yet expired nor
    released by an admin), longest-lasting first: ``[{"id", "symbol" (null = the whole account),
    "protection" (kind: cooldown | stoploss_guard | max_drawdown | low_profit), "scope", "reason",
    "lockedAt", "until" (ms since the epoch UTC), "blocks": "BUY"}]``. As in freqtrade a lock refuses
    new entries (BUY) only; exits stay allowed (``risk.protections``)."""
    now = now or timezone.now()
    qs = (ProtectionLock.objects.select_related("protection")
          .filter(account=account, until__gt=now, released_at__isnull=True).order_by("-until", "-id"))
    return [{"id": lock.pk, "symbol": lock.symbol or None, "protection": lock.protection.kind,
             "scope": lock.protection.scope, "reason": lock.reason,
             "lockedAt": int(lock.locked_at.timestamp() * 1000), "until": int(lock.until.timestamp() * 1000),
             "blocks": "BUY"} for lock in qs]
