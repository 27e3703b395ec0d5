"""Celery tasks of market data: thin wrappers over ``marketdata.services`` (scheduled by
django-celery-beat from ``settings.CELERY_BEAT_SCHEDULE``; editable in the admin)."""
import logging

from celery import shared_task

from marketdata import services
from marketdata.binance import VenueRateLimited
from marketdata.selectors import watched_symbols

log = logging.getLogger(__name__)

RETRY = {"autoretry_for": (ConnectionError, OSError, VenueRateLimited), "retry_backoff": True}


@shared_task(max_retries=5, **RETRY)
def sync_exchange_info() -> int:
    """Refresh every symbol of the venue's exchangeInfo (hourly)."""
    return services.exchange_info_sync()


@shared_task(max_retries=3, **RETRY)
def store_closed_klines(interval: str = "1m") -> dict:
    """Store the closed klines of every watched symbol since the last stored one, and their
    indicator snapshots (every 10 s for 1m)."""
    out = {}
    for symbol in watched_symbols():
        out[symbol] = services.klines_sync(symbol=symbol, interval=interval)
        services.indicator_snapshots_update(symbol=symbol, interval=interval)
    return out


@shared_task(max_retries=3, **RETRY)
def store_closed_klines_all() -> dict:
    """Closed klines and indicator snapshots of the watched symbols for every interval of
    ``settings.KLINE_SYNC_INTERVALS`` (1m 5m 15m 30m 1h 4h 1d 1w; each minute)."""
    return services.klines_sync_watched()


@shared_task(max_retries=2, **RETRY)
def sync_tickers_24h() -> int:
    """Cache every symbol's 24h ticker (each minute)."""
    return services.tickers_24h_sync()


@shared_task(max_retries=2, **RETRY)
def sync_trade_fees() -> int:
    """Store the venue's maker/taker rates (hourly; needs venue keys)."""
    return services.trade_fees_sync()
