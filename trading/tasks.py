"""Celery tasks of trading: thin wrappers over the services."""
import logging
from datetime import timedelta

from celery import shared_task
from django.utils import timezone
from core.errors import TradingError
from trading.models import Account, Venue
from trading.portfolio import daily_pnl_rollup, snapshot_take
from trading.venues import venue_for
from trading.venues.binance import account_fees_sync

log = logging.getLogger(__name__)


@shared_task
def portfolio_snapshots() -> int:
    """Store a ``PortfolioSnapshot`` of every account (beat: each minute). Returns how many."""
    n = 0
    for account in Account.objects.all().iterator():
        try:
            snapshot_take(account=account)
            n += 1
        except Exception:
            log.exception("snapshot of account %s failed", account.pk)
    return n


@shared_task
def daily_pnl_rollups(day: str | None = None) -> int:
    """Roll up yesterday's (or ``day``, ISO date) P&L of every account (beat: daily, 00:05 UTC)."""
    from datetime import date

    target = date.fromisoformat(day) if day else (timezone.now() - timedelta(days=1)).date()
    return sum(1 for a in Account.objects.all().iterator() if daily_pnl_rollup(account=a, day=target))


@shared_task
def reconcile_exchange_accounts() -> dict:
    """Reconcile every testnet/live account with its venue (``trading.venues.binance.reconcile``:
    pending order intents, open orders, ``myTrades`` since ``Account.last_trade_ids``, the final
    state of orders no longer open, balances). Beat: each minute; the ``userstream`` follower also
    runs it on every (re)connect. Returns ``{account_id: summary | {"error": text}}``; one account's
    failure never stops the others."""
    out = {}
    for account in Account.objects.exclude(venue=Venue.PAPER).iterator():
        try:
            out[account.pk] = venue_for(account).sync(account=account)
        except TradingError as exc:  # venue refused/unreachable, no keys: typed, no traceback needed
            log.warning("reconcile of account %s: %s", account.pk, exc)
            out[account.pk] = {"error": str(exc)}
        except Exception as exc:
            log.exception("reconcile of account %s failed", account.pk)
            out[account.pk] = {"error": str(exc)}
    return out


@shared_task
def sync_exchange_account_fees() -> dict:
    """Set every testnet/live account's maker/taker rates from its own exchange account
    (``trading.venues.binance.account_fees_sync``: ``GET /api/v3/account/commission``). Beat:
    hourly; the ``userstream`` follower also runs it on every (re)connect. Returns
    ``{account_id: {"symbol", "maker", "taker"} | {"error": text}}``."""
    out = {}
    for account in Account.objects.exclude(venue=Venue.PAPER).iterator():
        try:
            got = account_fees_sync(account)
            out[account.pk] = {k: str(v) for k, v in got.items()}
        except TradingError as exc:
            log.warning("commission rates of account %s: %s", account.pk, exc)
            out[account.pk] = {"error": str(exc)}
    return out
