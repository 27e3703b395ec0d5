"""Stored market data: the symbols of exchangeInfo and closed klines.

Field names follow Binance's (``GET /api/v3/exchangeInfo`` and ``GET /api/v3/klines``, Binance Spot
API docs, "Market Data endpoints"). Prices are in the quote asset, quantities in the base asset,
kline times in ms since the epoch UTC.
"""
from decimal import Decimal

from django.conf import settings
from django.db import models

PRICE = {"max_digits": 30, "decimal_places": 8}


class Symbol(models.Model):
    """One spot symbol of the venue's exchangeInfo, with the filters orders are validated against.

    ``filters`` keeps Binance's filter list verbatim; the hot ones are copied into columns:
    ``tick_size`` (PRICE_FILTER), ``step_size``/``min_qty``/``max_qty`` (LOT_SIZE) and
    ``min_notional`` (MIN_NOTIONAL before 2023, NOTIONAL after).
    """

    symbol = models.CharField(max_length=32, unique=True)
    status = models.CharField(max_length=16)
    base_asset = models.CharField(max_length=16)
    quote_asset = models.CharField(max_length=16)
    base_asset_precision = models.PositiveSmallIntegerField(default=8)
    quote_asset_precision = models.PositiveSmallIntegerField(default=8)
    tick_size = models.DecimalField(**PRICE, default=Decimal("0.00000001"))
    step_size = models.DecimalField(**PRICE, default=Decimal("0.00000001"))
    min_qty = models.DecimalField(**PRICE, default=Decimal("0"))
    max_qty = models.DecimalField(**PRICE, null=True, blank=True)
    min_notional = models.DecimalField(**PRICE, default=Decimal("0"))
    order_types = models.JSONField(default=list)
    filters = models.JSONField(default=list)
    permissions = models.JSONField(default=list)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["symbol"]

    def __str__(self) -> str:
        return self.symbol

    @property
    def is_trading(self) -> bool:
        """True when Binance reports ``status == "TRADING"``."""
        return self.status == "TRADING"


class Kline(models.Model):
    """One closed candle, unique on (symbol, interval, open_time).

    Times are ms since the epoch UTC (Binance kline array fields 0 and 6); ``trades`` is the
    number of trades, ``taker_buy_*`` the taker-buy base/quote volumes.
    """

    symbol = models.CharField(max_length=32)
    interval = models.CharField(max_length=4)
    open_time = models.BigIntegerField()
    close_time = models.BigIntegerField()
    open = models.DecimalField(**PRICE)
    high = models.DecimalField(**PRICE)
    low = models.DecimalField(**PRICE)
    close = models.DecimalField(**PRICE)
    volume = models.DecimalField(**PRICE)
    quote_volume = models.DecimalField(**PRICE)
    trades = models.BigIntegerField()
    taker_buy_base = models.DecimalField(**PRICE)
    taker_buy_quote = models.DecimalField(**PRICE)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["symbol", "interval", "open_time"], name="kline_unique_symbol_interval_open"),
        ]
        indexes = [models.Index(fields=["symbol", "interval", "-open_time"], name="kline_recent")]
        ordering = ["symbol", "interval", "open_time"]

    def __str__(self) -> str:
        return f"{self.symbol} {self.interval} {self.open_time}"


class IndicatorSnapshot(models.Model):
    """The indicator set of one closed candle, unique on (symbol, interval, open_time).

    Written by ``marketdata.services.indicator_snapshots_update`` after each klines sync (so at
    every candle close). ``values`` maps indicator name → its parameters and values (numbers as
    strings, see ``marketdata.indicators``); ``signals`` lists the seed rules' signals, each
    ``{"indicator", "signal": "BUY"|"SELL", "event", "reason"}``. ``open_time`` is the candle's
    open (ms since the epoch UTC), ``close`` its close price (quote asset).
    """

    symbol = models.CharField(max_length=32)
    interval = models.CharField(max_length=4)
    open_time = models.BigIntegerField()
    close = models.DecimalField(**PRICE)
    values = models.JSONField(default=dict)
    signals = models.JSONField(default=list)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["symbol", "interval", "open_time"], name="indicator_unique_symbol_interval_open"),
        ]
        indexes = [models.Index(fields=["symbol", "interval", "-open_time"], name="indicator_recent")]
        ordering = ["symbol", "interval", "open_time"]

    def __str__(self) -> str:
        return f"{self.symbol} {self.interval} {self.open_time} indicators"


class TradeFee(models.Model):
    """The venue's maker/taker commission rates of one symbol (fractions: 0.001 = 0.1 %).

    Synced from ``GET /api/v3/account/commission`` (``marketdata.services.trade_fees_sync``) when
    venue keys are configured; symbols without a row use ``settings.BINANCE_DEFAULT_FEE_RATES`` (Binance's
    spot default, 0.1 % maker and taker).
    """

    symbol = models.CharField(max_length=32, unique=True)
    maker_rate = models.DecimalField(max_digits=10, decimal_places=8)
    taker_rate = models.DecimalField(max_digits=10, decimal_places=8)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["symbol"]

    def __str__(self) -> str:
        return f"{self.symbol} maker {self.maker_rate} taker {self.taker_rate}"


class StreamSubscription(models.Model):
    """A user's (or their agent's) subscription to one Binance stream, e.g. ``btcusdt@trade``.

    The ingester streams the union of every subscription plus the watched symbols' defaults; see
    ``marketdata.services.stream_subscribe``.
    """

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="stream_subscriptions")
    stream = models.CharField(max_length=64)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["user", "stream"], name="stream_subscription_unique_user_stream")]
        ordering = ["user_id", "stream"]

    def __str__(self) -> str:
        return f"{self.user_id} {self.stream}"
