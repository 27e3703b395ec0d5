"""Writes of market data: exchangeInfo symbols and closed klines, pulled over REST with python-binance.

Called by Celery tasks (``marketdata.tasks``) and by the ``setup_demo`` command; keep those thin.
"""
from __future__ import annotations

import logging
from decimal import Decimal

from binance import Client
from django.db import transaction

from django.conf import settings

from core.errors import InvalidInput
from marketdata import cache
from marketdata import indicators as ind
from marketdata.binance import VenueClient, make_client
from marketdata.models import IndicatorSnapshot, Kline, StreamSubscription, Symbol, TradeFee
from marketdata.selectors import candles_rows, stream_check, symbol_cache_clear, watched_symbols

log = logging.getLogger(__name__)

KLINE_FIELDS = (
    "open_time", "open", "high", "low", "close", "volume", "close_time",
    "quote_volume", "trades", "taker_buy_base", "taker_buy_quote",
)


def _filter(filters: list[dict], name: str) -> dict:
    return next((f for f in filters if f.get("filterType") == name), {})


def symbol_fields_from_exchange_info(info: dict) -> dict:
    """Map one ``symbols[]`` entry of ``GET /api/v3/exchangeInfo`` to ``Symbol`` fields.

    Reads tickSize (PRICE_FILTER), stepSize/minQty/maxQty (LOT_SIZE) and minNotional from
    MIN_NOTIONAL (before 2023) or NOTIONAL (after), per Binance Spot API docs "Filters".
    """
    filters = info.get("filters", [])
    price_filter = _filter(filters, "PRICE_FILTER")
    lot = _filter(filters, "LOT_SIZE")
    notional = _filter(filters, "NOTIONAL") or _filter(filters, "MIN_NOTIONAL")
    return {
        "status": info["status"],
        "base_asset": info["baseAsset"],
        "quote_asset": info["quoteAsset"],
        "base_asset_precision": info.get("baseAssetPrecision", 8),
        "quote_asset_precision": info.get("quoteAssetPrecision", info.get("quotePrecision", 8)),
        "tick_size": Decimal(price_filter.get("tickSize", "0.00000001")),
        "step_size": Decimal(lot.get("stepSize", "0.00000001")),
        "min_qty": Decimal(lot.get("minQty", "0")),
        "max_qty": Decimal(lot["maxQty"]) if lot.get("maxQty") else None,
        "min_notional": Decimal(notional.get("minNotional", "0")),
        "order_types": info.get("orderTypes", []),
        "filters": filters,
        "permissions": info.get("permissions", []),
    }


def exchange_info_sync(*, client: Client | None = None) -> int:
    """Upsert every symbol of the venue's exchangeInfo; return how many were stored.

    Raises python-binance's ``BinanceAPIException``/``BinanceRequestException`` or a connection
    error when the venue does not answer (Celery retries the task).
    """
    info = VenueClient(client).exchange_info(fresh=True)
    count = 0
    with transaction.atomic():
        for entry in info["symbols"]:
            Symbol.objects.update_or_create(symbol=entry["symbol"], defaults=symbol_fields_from_exchange_info(entry))
            count += 1
    transaction.on_commit(symbol_cache_clear)
    return count


def klines_store(*, symbol: str, interval: str, rows: list[list]) -> int:
    """Insert Binance kline arrays (``GET /api/v3/klines`` rows) that are not stored yet.

    Unique on (symbol, interval, open_time): a row already stored is skipped, never duplicated.
    Returns the number of rows given (inserted or already present).
    """
    objs = [
        Kline(
            symbol=symbol,
            interval=interval,
            open_time=int(r[0]),
            open=Decimal(r[1]),
            high=Decimal(r[2]),
            low=Decimal(r[3]),
            close=Decimal(r[4]),
            volume=Decimal(r[5]),
            close_time=int(r[6]),
            quote_volume=Decimal(r[7]),
            trades=int(r[8]),
            taker_buy_base=Decimal(r[9]),
            taker_buy_quote=Decimal(r[10]),
        )
        for r in rows
    ]
    Kline.objects.bulk_create(objs, ignore_conflicts=True, batch_size=500)
    return len(objs)


def klines_sync(*, symbol: str, interval: str = "1m", client: Client | None = None, max_pages: int = 20) -> int:
    """Store the venue's closed klines for ``symbol``/``interval`` since the last stored one.

    Binance returns the still-forming candle as the last row of ``/api/v3/klines``; since a row's
    being closed cannot be told from the row alone, the newest row of every answer is never stored:
    the next run stores it once a newer one exists. With nothing stored yet, the latest 1000 are
    fetched. Pages of 1000 rows, at most ``max_pages`` per call. Returns rows stored.
    Calls go through ``VenueClient`` (rate limits, back-off on 429/418).
    """
    venue = VenueClient(client)
    last = Kline.objects.filter(symbol=symbol, interval=interval).order_by("-open_time").values_list("open_time", flat=True).first()
    stored = 0
    for _ in range(max_pages):
        if last is None:
            rows = venue.klines(symbol=symbol, interval=interval, limit=1000)
        else:
            rows = venue.klines(symbol=symbol, interval=interval, startTime=last + 1, limit=1000)
        closed = rows[:-1]
        if closed:
            stored += klines_store(symbol=symbol, interval=interval, rows=closed)
            last = int(closed[-1][0])
        if len(rows) < 1000:
            break
    return stored


def kline_row_from_event(k: dict) -> list:
    """A kline stream event's ``k`` object (Binance "Kline/Candlestick Streams") as a REST kline row
    ``[openTime, open, high, low, close, volume, closeTime, quoteVolume, trades, takerBuyBase, takerBuyQuote]``."""
    return [k["t"], k["o"], k["h"], k["l"], k["c"], k["v"], k["T"], k["q"], k["n"], k["V"], k["Q"]]


def klines_store_closed_events(*, events: list[dict], backfill: bool = True, client: Client | None = None) -> dict:
    """Store closed kline stream events (``k`` objects with ``x: true``), filling holes first.

    Per symbol/interval: when the first new candle does not follow the last stored one, the
    missing closed candles are fetched over REST (``klines_sync``) before the events are stored, so
    the stored series has no gap; the unique constraint keeps it free of duplicates. Returns
    ``{"SYMBOL:interval": rows stored from events}``.
    """
    groups: dict[tuple[str, str], list[dict]] = {}
    for k in events:
        if k.get("x"):
            groups.setdefault((k["s"], k["i"]), []).append(k)
    out = {}
    for (symbol, interval), ks in groups.items():
        ks.sort(key=lambda k: k["t"])
        if backfill:
            last = Kline.objects.filter(symbol=symbol, interval=interval).order_by("-open_time").values_list("open_time", flat=True).first()
            if last is not None and ks[0]["t"] > last and ks[0]["t"] - last > _interval_ms(interval):
                klines_sync(symbol=symbol, interval=interval, client=client)
        out[f"{symbol}:{interval}"] = klines_store(symbol=symbol, interval=interval, rows=[kline_row_from_event(k) for k in ks])
    return out


_FIXED_MS = {"m": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 604_800_000}


def _interval_ms(interval: str) -> int:
    """Length of a fixed kline interval in ms (``1M`` months are treated as 31 days)."""
    if interval.endswith("M"):
        return int(interval[:-1]) * 31 * 86_400_000
    return int(interval[:-1]) * _FIXED_MS[interval[-1]]


def indicator_snapshots_update(*, symbol: str, interval: str, lookback: int = 1000, max_new: int = 500) -> int:
    """Write an ``IndicatorSnapshot`` (default indicator set, ``marketdata.indicators``) for every
    stored closed candle of ``symbol``/``interval`` that has none yet, newest ``max_new`` at most.

    The indicators are computed once over the latest ``lookback`` stored candles; candles still in
    the indicators' warm-up (not every value defined yet) get no snapshot. Returns snapshots written.
    """
    rows = candles_rows(symbol=symbol, interval=interval, lookback=lookback)
    if not rows:
        return 0
    last = IndicatorSnapshot.objects.filter(symbol=symbol, interval=interval).order_by("-open_time").values_list("open_time", flat=True).first()
    candles = ind.Candles.from_rows(rows)
    resolved = ind.resolve()
    series = ind.compute_series(candles, resolved)
    start = max(ind.warm_index(series), len(rows) - max_new)
    objs = []
    for i in range(start, len(rows)):
        if last is not None and rows[i][0] <= last:
            continue
        snap = ind.snapshot(candles, resolved, series, i)
        objs.append(IndicatorSnapshot(symbol=symbol, interval=interval, open_time=rows[i][0], close=rows[i][6],
                                      values=snap["values"], signals=snap["signals"]))
    IndicatorSnapshot.objects.bulk_create(objs, ignore_conflicts=True, batch_size=500)
    return len(objs)


def klines_sync_watched(*, intervals: list[str] | None = None, symbols: list[str] | None = None, client: Client | None = None) -> dict:
    """``klines_sync`` then ``indicator_snapshots_update`` for every watched symbol and interval
    (default ``settings.KLINE_SYNC_INTERVALS``); returns ``{"SYMBOL:interval": [klines, snapshots]}``."""
    client = client or make_client()
    out = {}
    for symbol in symbols or watched_symbols():
        for interval in intervals or settings.KLINE_SYNC_INTERVALS:
            stored = klines_sync(symbol=symbol, interval=interval, client=client)
            out[f"{symbol}:{interval}"] = [stored, indicator_snapshots_update(symbol=symbol, interval=interval)]
    return out


def tickers_24h_sync(*, client: Client | None = None) -> int:
    """Cache every symbol's ``GET /api/v3/ticker/24hr`` entry (one call, weight 80) in Redis under
    ``md:ticker24h:<SYMBOL>`` for 3 minutes; returns how many. Run each minute by beat."""
    rows = VenueClient(client).call("get_ticker")
    if isinstance(rows, dict):
        rows = [rows]
    pipe = cache.get_redis().pipeline(transaction=False)
    for row in rows:
        pipe.set(cache.ticker_24h_key(row["symbol"]), cache.dumps(row), ex=180)
    pipe.execute()
    return len(rows)


def trade_fees_sync(*, client: Client | None = None) -> int:
    """Store the venue keys' maker/taker rates of each ``settings.WATCHED_SYMBOLS`` symbol from
    ``GET /api/v3/account/commission`` (Binance "Account Commission Rates", ``standardCommission``;
    python-binance ``v3_get_account_commission``; signed, so only with venue keys). It replaces
    ``GET /sapi/v1/asset/tradeFee``, which the spot test network and the replay exchange do not
    serve. Without keys nothing is fetched and readers use ``settings.BINANCE_DEFAULT_FEE_RATES``;
    accounts with keys of their own get their rates from ``trading.venues.binance.account_fees_sync``.
    Returns rows stored."""
    if not (settings.BINANCE_API_KEY and settings.BINANCE_API_SECRET):
        return 0
    venue = VenueClient(client)
    rows = [venue.call("v3_get_account_commission", symbol=symbol) for symbol in settings.WATCHED_SYMBOLS]
    with transaction.atomic():
        for row in rows:
            std = row["standardCommission"]
            TradeFee.objects.update_or_create(symbol=row["symbol"], defaults={
                "maker_rate": Decimal(str(std["maker"])), "taker_rate": Decimal(str(std["taker"]))})
    return len(rows)


def streams_wanted_refresh() -> set[str]:
    """Publish the union of every user's stream subscriptions to Redis (``md:streams:wanted``) and
    bump ``md:streams:version`` so the ingester picks the change up; returns the union."""
    wanted = set(StreamSubscription.objects.values_list("stream", flat=True).distinct())
    r = cache.get_redis()
    pipe = r.pipeline(transaction=True)
    pipe.delete(cache.streams_wanted_key())
    if wanted:
        pipe.sadd(cache.streams_wanted_key(), *sorted(wanted))
    pipe.incr(cache.streams_version_key())
    pipe.execute()
    return wanted


def stream_subscribe(*, user, stream: str) -> tuple[StreamSubscription, bool]:
    """Subscribe ``user`` to ``stream`` (validated by ``selectors.stream_check``); the ingester
    starts streaming it within about a second. Returns (subscription, created).

    A user (so each of their agent tokens) holds at most ``settings.MAX_STREAM_SUBSCRIPTIONS``
    subscriptions: one more raises ``InvalidInput`` saying so (unsubscribe one first);
    re-subscribing to a stream already held is always allowed."""
    stream = stream_check(stream)
    with transaction.atomic():
        held = StreamSubscription.objects.select_for_update().filter(user=user)
        if not held.filter(stream=stream).exists() and held.count() >= settings.MAX_STREAM_SUBSCRIPTIONS:
            raise InvalidInput(f"At most {settings.MAX_STREAM_SUBSCRIPTIONS} stream subscriptions per user: "
                               "unsubscribe_stream one you no longer need first.")
        sub, created = StreamSubscription.objects.get_or_create(user=user, stream=stream)
    transaction.on_commit(streams_wanted_refresh)
    return sub, created


def stream_unsubscribe(*, user, stream: str) -> bool:
    """Drop ``user``'s subscription to ``stream``; the ingester stops streaming it once nobody
    subscribes. Returns whether there was one."""
    deleted, _ = StreamSubscription.objects.filter(user=user, stream=stream).delete()
    transaction.on_commit(streams_wanted_refresh)
    return bool(deleted)
