"""Celery beat schedules (django-celery-beat, editable in the admin) and the thin market-data tasks
run for real against the replay exchange."""
from django.conf import settings

from marketdata import tasks
from core.redis import get_redis
from marketdata.cache import loads, ticker_24h_key
from marketdata.models import IndicatorSnapshot, Kline


def test_beat_schedules_are_synced_into_the_database(transactional_db):  # the scheduler closes connections
    from django_celery_beat.models import PeriodicTask
    from django_celery_beat.schedulers import DatabaseScheduler

    from project.celery import app

    DatabaseScheduler(app=app)  # what `celery beat` does at start-up: settings → PeriodicTask rows
    rows = {p.task: p for p in PeriodicTask.objects.all()}
    for task, every in (("marketdata.tasks.sync_exchange_info", 3600), ("marketdata.tasks.sync_tickers_24h", 60),
                        ("marketdata.tasks.store_closed_klines_all", 60), ("marketdata.tasks.sync_trade_fees", 3600),
                        ("marketdata.tasks.store_closed_klines", None)):
        assert task in rows, task
        if every:
            assert rows[task].interval.every == every and rows[task].interval.period == "seconds"
    assert settings.KLINE_SYNC_INTERVALS == ["1m", "5m", "15m", "30m", "1h", "4h", "1d", "1w"]


def test_tasks_store_tickers_klines_of_every_interval_and_snapshots(symbols):
    replay = symbols
    assert tasks.sync_tickers_24h.apply().get() == 2
    btc = loads(get_redis().get(ticker_24h_key("BTCUSDT")))
    assert btc["symbol"] == "BTCUSDT" and btc["lastPrice"]
    assert tasks.sync_trade_fees.apply().get() == 0  # no venue keys: the default rates apply
    out = tasks.store_closed_klines_all.apply().get()
    assert set(out) == {f"{s}:{i}" for s in ("BTCUSDT", "ETHUSDT") for i in settings.KLINE_SYNC_INTERVALS}
    # 600 replayed minutes of history: 599 closed 1m candles, 119 5m, ... each once.
    for interval, minutes in (("1m", 1), ("5m", 5), ("1h", 60)):
        opens = list(Kline.objects.filter(symbol="BTCUSDT", interval=interval).values_list("open_time", flat=True))
        assert opens and all(b - a == minutes * 60_000 for a, b in zip(opens, opens[1:]))
        assert opens[-1] + minutes * 60_000 <= replay.clock.now_ms() + 60_000
    assert IndicatorSnapshot.objects.filter(symbol="BTCUSDT", interval="1m").count() == out["BTCUSDT:1m"][1] > 400
    again = tasks.store_closed_klines_all.apply().get()
    assert all(v[1] <= 2 for v in again.values()), "snapshots only for newly closed candles"


def test_trade_fees_come_from_the_venue_keys_account_commission(symbols, settings):
    """``GET /api/v3/account/commission`` (served by the replay) with the venue keys, per watched
    symbol; the replay account's own rates, not a default."""
    from decimal import Decimal

    from marketdata.models import TradeFee

    replay = symbols
    key, secret = "f" * 64, "g" * 64
    replay.add_key(key, secret)
    replay.accounts.account(key).taker_rate = Decimal("0.00075")
    settings.BINANCE_API_KEY, settings.BINANCE_API_SECRET = key, secret
    assert tasks.sync_trade_fees.apply().get() == len(settings.WATCHED_SYMBOLS)
    rows = {f.symbol: (f.maker_rate, f.taker_rate) for f in TradeFee.objects.all()}
    assert rows == {s: (Decimal("0.001"), Decimal("0.00075")) for s in settings.WATCHED_SYMBOLS}
