"""Freqtrade-style protections, evaluated inside ``risk.services.risk_check``.

Freqtrade ("Protections", https://www.freqtrade.io/en/stable/plugins/#protections; source
``freqtrade/plugins/protections/``) locks pairs or the whole bot after bad trades:

- ``CooldownPeriod`` (cooldown_period.py): no new entry on a pair for ``stop_duration`` after a
  trade on it closed. The issue asks for a cooldown *after a losing trade*, so only losing trades
  start it here.
- ``StoplossGuard`` (stoploss_guard.py): ``trade_limit`` stop-loss exits within
  ``lookback_period`` lock for ``stop_duration`` (``only_per_pair`` = our SYMBOL scope). We count
  losing trades (a spot account has no separate stop-loss exit type).
- ``MaxDrawdown`` (max_drawdown_protection.py): the maximum drawdown of the closed trades within
  ``lookback_period`` (``freqtrade.data.metrics.calculate_max_drawdown``: high-water mark of the
  cumulative profit, drawdown relative to ``starting_balance + high-water mark``) at or above
  ``max_allowed_drawdown`` locks everything for ``stop_duration``.
- ``LowProfitPairs`` (low_profit_pairs.py): a pair whose ``trade_limit`` or more trades within
  ``lookback_period`` made a total profit ratio below ``required_profit`` is locked.

Here a *trade* is one SELL order of the account (a spot position shrinking, booked with realized
P&L by the average-cost method), its profit the sum over its fills of ``realized_pnl -
commission_quote`` (quote asset), its time its last fill's. A lock lasts ``lock_minutes`` from the
trade that tripped it, so evaluating again finds the same lock (``get_or_create`` on
(protection, symbol, until)) and each lock is written and audited once. As in freqtrade, locks stop
new entries (BUY); exits (SELL) stay allowed.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

from django.db.models import Max, Q, Sum
from django.utils import timezone

from risk.audit import audit_record
from risk.models import Channel, Outcome, Protection, ProtectionKind, ProtectionLock, ProtectionScope

ZERO = Decimal("0")


@dataclass
class Trade:
    """One closed trade: a SELL order's fills. ``profit`` in the quote asset (after fees),
    ``value`` = quote received (quote asset), ``time`` of its last fill."""

    order_id: int
    symbol: str
    profit: Decimal
    value: Decimal
    time: datetime


def trades_since(account, since: datetime, symbol: str | None = None) -> list[Trade]:
    """The account's trades (SELL orders) whose last fill is at or after ``since``, oldest first."""
    qs = account.fills.filter(side="SELL")
    if symbol:
        qs = qs.filter(symbol=symbol)
    rows = (qs.values("order_id", "symbol")
            .annotate(pnl=Sum("realized_pnl"), fees=Sum("commission_quote"), value=Sum("quote_qty"), last=Max("time"))
            .filter(last__gte=since).order_by("last", "order_id"))
    return [Trade(r["order_id"], r["symbol"], (r["pnl"] or ZERO) - (r["fees"] or ZERO), r["value"] or ZERO, r["last"])
            for r in rows]


def active_lock(account, symbol: str, now: datetime | None = None) -> ProtectionLock | None:
    """The lock that refuses a BUY of ``symbol`` on ``account`` now (the one lasting longest), or None."""
    now = now or timezone.now()
    return (ProtectionLock.objects.select_related("protection")
            .filter(account=account, until__gt=now, released_at__isnull=True)
            .filter(Q(symbol="") | Q(symbol=symbol)).order_by("-until").first())


def _fmt(d: Decimal) -> str:
    return f"{d.normalize():f}"


def _trip(protection: Protection, *, symbol: str, at: datetime, reason: str, now: datetime) -> ProtectionLock | None:
    """Lock from ``at`` (the tripping trade's time) for the protection's ``lock_minutes``; None when
    that lock has already run out. Creates and audits the lock once."""
    until = at + timedelta(minutes=protection.lock_minutes)
    if until <= now:
        return None
    lock_symbol = symbol if protection.scope == ProtectionScope.SYMBOL else ""
    lock, created = ProtectionLock.objects.get_or_create(
        protection=protection, symbol=lock_symbol, until=until,
        defaults={"account_id": protection.account_id, "reason": reason, "locked_at": now},
    )
    if created:
        audit_record(channel=Channel.SYSTEM, action="risk.protection_lock", outcome=Outcome.OK, account=protection.account,
                     params={"protection_id": protection.pk, "kind": protection.kind, "scope": protection.scope},
                     message=reason, result={"lock_id": lock.pk, "symbol": lock_symbol, "until": until.isoformat()})
    if lock.released_at is not None:
        return None
    return lock


def _cooldown(p: Protection, account, symbol: str, now: datetime) -> ProtectionLock | None:
    since = now - timedelta(minutes=p.lock_minutes)
    losing = [t for t in trades_since(account, since, symbol if p.scope == ProtectionScope.SYMBOL else None) if t.profit < 0]
    if not losing:
        return None
    last = losing[-1]
    return _trip(p, symbol=last.symbol, at=last.time, now=now,
                 reason=f"cooldown: losing trade on {last.symbol} ({_fmt(last.profit)} {account.quote_asset}); "
                        f"no new BUY for {p.lock_minutes} min")


def _stoploss_guard(p: Protection, account, symbol: str, now: datetime) -> ProtectionLock | None:
    since = now - timedelta(minutes=p.lookback_minutes)
    losing = [t for t in trades_since(account, since, symbol if p.scope == ProtectionScope.SYMBOL else None) if t.profit < 0]
    if len(losing) < max(1, p.trade_limit):
        return None
    last = losing[-1]
    where = f" on {symbol}" if p.scope == ProtectionScope.SYMBOL else ""
    return _trip(p, symbol=last.symbol, at=last.time, now=now,
                 reason=f"stoploss_guard: {len(losing)} losing trades{where} in the last {p.lookback_minutes} min "
                        f"(limit {p.trade_limit}); no new BUY for {p.lock_minutes} min")


def _cost_basis_equity(account) -> Decimal:
    """Quote balance plus every position at its average entry price (quote asset): the account's
    value without marking to market (cheap, and the same at every evaluation)."""
    quote = account.balances.filter(asset=account.quote_asset).first()
    held = sum((p.quantity * p.avg_entry_price for p in account.positions.exclude(quantity=0)), ZERO)
    return (quote.free + quote.locked if quote else ZERO) + held


def max_drawdown(profits: list[Decimal], starting_balance: Decimal) -> Decimal:
    """Maximum relative drawdown (fraction, 0.05 = 5 %) of a sequence of trade profits, as
    ``freqtrade.data.metrics.calculate_max_drawdown(relative=True)`` computes it: for each trade,
    (high-water mark of the cumulative profit − cumulative profit) / (starting_balance + high-water mark)."""
    cum = hwm = worst = ZERO
    for profit in profits:
        cum += profit
        hwm = max(hwm, cum)
        base = starting_balance + hwm
        if base > 0:
            worst = max(worst, (hwm - cum) / base)
    return worst


def _max_drawdown(p: Protection, account, symbol: str, now: datetime) -> ProtectionLock | None:
    trades = trades_since(account, now - timedelta(minutes=p.lookback_minutes))
    if not trades or p.max_drawdown_pct is None:
        return None
    profits = [t.profit for t in trades]
    start = _cost_basis_equity(account) - sum(profits, ZERO)
    dd = max_drawdown(profits, start) * 100
    if dd < p.max_drawdown_pct:
        return None
    return _trip(p, symbol="", at=trades[-1].time, now=now,
                 reason=f"max_drawdown: drawdown {dd.quantize(Decimal('0.01'))} % over the last {p.lookback_minutes} min "
                        f"reached {_fmt(p.max_drawdown_pct)} %; no new BUY for {p.lock_minutes} min")


def _low_profit(p: Protection, account, symbol: str, now: datetime) -> ProtectionLock | None:
    if p.required_profit_pct is None:
        return None
    trades = trades_since(account, now - timedelta(minutes=p.lookback_minutes), symbol)
    if not trades or len(trades) < max(1, p.trade_limit):
        return None
    profit = sum((t.profit for t in trades), ZERO)
    value = sum((t.value for t in trades), ZERO)
    pct = profit / value * 100 if value else ZERO
    if pct >= p.required_profit_pct:
        return None
    return _trip(p, symbol=symbol, at=trades[-1].time, now=now,
                 reason=f"low_profit: {symbol} made {pct.quantize(Decimal('0.01'))} % over {len(trades)} trades in the last "
                        f"{p.lookback_minutes} min (required {_fmt(p.required_profit_pct)} %); no new BUY of {symbol} "
                        f"for {p.lock_minutes} min")


EVALUATORS = {
    ProtectionKind.COOLDOWN: _cooldown,
    ProtectionKind.STOPLOSS_GUARD: _stoploss_guard,
    ProtectionKind.MAX_DRAWDOWN: _max_drawdown,
    ProtectionKind.LOW_PROFIT: _low_profit,
}


def protections_check(*, account, symbol: str, side: str, now: datetime | None = None,
                      has_protections: bool | None = None) -> ProtectionLock | None:
    """The lock that refuses this order, or None.

    Args: account (``trading.Account``, row locked by the caller), symbol, side ("BUY" | "SELL").
    Only BUYs are refused (exits stay allowed, as in freqtrade). Evaluates the account's enabled
    protections, writing (and auditing as ``risk.protection_lock``) any lock they trip, then returns
    the longest active lock on the account or the symbol. One query when the account has no protection,
    none when the caller passes ``has_protections=False`` (read with the account row lock).
    """
    if side != "BUY" or has_protections is False:
        return None
    protections = list(Protection.objects.filter(account=account).order_by("id"))  # one account: its Meta ordering
    if not protections:
        return None
    now = now or timezone.now()
    for p in protections:
        if p.enabled:
            EVALUATORS[p.kind](p, account, symbol, now)
    return active_lock(account, symbol, now)


def lock_release(*, lock: ProtectionLock, actor_user, channel: str) -> ProtectionLock:
    """Release a lock early (admin). Audited as ``risk.protection_unlock`` with the lock's until."""
    if lock.released_at is None:
        lock.released_at = timezone.now()
        lock.save(update_fields=["released_at"])
        audit_record(channel=channel, action="risk.protection_unlock", outcome=Outcome.OK, actor_user=actor_user,
                     account=lock.account, params={"lock_id": lock.pk, "symbol": lock.symbol},
                     result={"until": lock.until.isoformat(), "released_at": lock.released_at.isoformat()})
    return lock
