"""Positions, portfolio value and P&L (reads) and the minute snapshot / daily rollup (writes).

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

from trading.errors import InvalidInput
from trading.models import Account, Balance, DailyPnl, Fill, PortfolioSnapshot, Position
from trading.selectors import dstr

E8 = Decimal("0.00000001")
PERIODS = {"1d": timedelta(days=1), "7d": timedelta(days=7), "30d": timedelta(days=30), "today": None, "all": None}


def mark_price(symbol: str) -> Decimal | None:
    """Best bid of ``symbol`` from the cache (any age), else its last fill price, else None."""
    from marketdata.selectors import quote_get
    from trading.errors import MarketDataUnavailable

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
