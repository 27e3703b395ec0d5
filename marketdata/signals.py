"""Celery worker start-up: pull exchangeInfo and klines at once instead of waiting for beat."""
from celery.signals import worker_ready
from marketdata.tasks import store_closed_klines, sync_exchange_info


@worker_ready.connect
def _bootstrap_market_data(**kwargs):
    sync_exchange_info.apply_async(link=store_closed_klines.si())
