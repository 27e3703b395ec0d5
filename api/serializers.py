"""Request and response shapes of ``/api/v1/`` (Binance's field names and units).

Request serializers validate input before any service runs: money and quantities are strings of
ASCII digits (``api.fields.DecimalString``), enums are checked, JSON booleans are refused where a
number or string is expected. Response serializers document what the services and selectors
return (``trading.selectors.order_as_dict`` and friends); views answer those dicts as they are.
Units: prices and notionals in the symbol's quote asset, quantities in its base asset, times in
ms since the epoch UTC (Binance Spot API docs, "General API Information").
"""
from __future__ import annotations

from rest_framework import serializers

from api.fields import (
    CLIENT_ORDER_ID_PATTERN, SYMBOL_PATTERN, AnyObject, Boolean, DecimalString, Integer, Number, Text,
)
from marketdata.selectors import KLINE_INTERVALS

ORDER_TYPES = ["MARKET", "LIMIT", "LIMIT_MAKER", "STOP_LOSS", "STOP_LOSS_LIMIT", "TAKE_PROFIT", "TAKE_PROFIT_LIMIT"]
SIDES = ["BUY", "SELL"]
TIME_IN_FORCE = ["GTC", "IOC", "FOK"]
ORDER_STATUSES = ["NEW", "PARTIALLY_FILLED", "FILLED", "CANCELED", "EXPIRED", "REJECTED", "PENDING_APPROVAL"]
PERIODS = ["today", "1d", "7d", "30d", "all"]
INDICATORS = ["rsi", "macd", "sma", "ema", "bbands", "atr", "stoch", "obv", "vwap"]
MAX_ID = 2**63 - 1


def quote_dec(help_text: str, example: str = "7200.50", **kw) -> DecimalString:
    return DecimalString(help_text=f"{help_text} (quote asset, decimal string).", example=example, **kw)


def base_dec(help_text: str, example: str = "0.002", **kw) -> DecimalString:
    return DecimalString(help_text=f"{help_text} (base asset, decimal string).", example=example, **kw)


def signed(help_text: str, example: str = "-1.25", **kw) -> DecimalString:
    return DecimalString(signed=True, help_text=f"{help_text} (quote asset, decimal string, may be negative).",
                         example=example, **kw)


def ms(help_text: str, example: int = 1700000000000, **kw) -> Integer:
    return Integer(help_text=f"{help_text} (ms since the epoch, UTC).", example=example, **kw)


def symbol_field(**kw) -> Text:
    kw.setdefault("help_text", "Spot symbol, base asset then quote asset, e.g. BTCUSDT.")
    return Text(pattern=SYMBOL_PATTERN, max_length=32, example="BTCUSDT", **kw)


# --- errors ---------------------------------------------------------------------------------------

class ErrorSerializer(serializers.Serializer):
    """Every error: HTTP status + Binance-style code + a message the caller can act on."""

    code = Integer(help_text="Binance-style error code: -1002 unauthorized, -1003 too many requests, -1013 filter "
                             "failure, -1100 bad parameter, -1102 missing parameter, -1121 invalid symbol, -2010 order "
                             "rejected, -2011 order not open, -2013 not found, -2015 permission denied.", example=-1013)
    msg = Text(help_text="What went wrong and how to fix it.",
               example="Filter failure: LOT_SIZE. quantity 0.0015 is not a multiple of stepSize 0.001; nearest valid: 0.001.")
    errors = AnyObject(required=False, help_text="Per-parameter messages of a request that failed validation.",
                       example={"quantity": ['Expected a decimal number as a string of ASCII digits such as "0.002".']})


# --- market data ----------------------------------------------------------------------------------

class MarketSerializer(serializers.Serializer):
    symbol = symbol_field()
    status = Text(help_text="Trading status (exchangeInfo).", example="TRADING")
    baseAsset = Text(help_text="Asset the quantity is in.", example="BTC")
    quoteAsset = Text(help_text="Asset prices and notionals are in.", example="USDT")
    baseAssetPrecision = Integer(help_text="Decimals of the base asset.", example=8)
    quoteAssetPrecision = Integer(help_text="Decimals of the quote asset.", example=8)
    tickSize = quote_dec("PRICE_FILTER tickSize: price step", "0.01")
    stepSize = base_dec("LOT_SIZE stepSize: quantity step", "0.000001")
    minQty = base_dec("LOT_SIZE minQty", "0.000001")
    maxQty = base_dec("LOT_SIZE maxQty", "9000")
    minNotional = quote_dec("MIN_NOTIONAL / NOTIONAL minimum of price x quantity", "10")
    orderTypes = serializers.ListField(child=Text(example="LIMIT"), help_text="Order types allowed.")
    permissions = serializers.ListField(child=Text(example="SPOT"), help_text="Permissions (SPOT, MARGIN...).")
    filters = serializers.ListField(child=AnyObject(example={"filterType": "PRICE_FILTER", "tickSize": "0.01"}),
                                    help_text="Binance's filter list, as exchangeInfo sends it.")
    lastPrice = quote_dec("Last price of the 24 h ticker, null when not known", allow_null=True)
    volume = base_dec("24 h volume, null when not known", "1520.5", allow_null=True)
    quoteVolume = quote_dec("24 h quote volume, null when not known", "10950000.12", allow_null=True)


class MarketPageSerializer(serializers.Serializer):
    markets = MarketSerializer(many=True)
    page = Integer(help_text="This page, from 1.", example=1)
    pageSize = Integer(help_text="Markets per page.", example=100)
    total = Integer(help_text="Markets matching the filters.", example=2)
    nextPage = Integer(allow_null=True, help_text="The next page, null on the last.", example=None)
    hint = Text(help_text="How to get the next page.", example="This is the last page.")


class MarketQuery(serializers.Serializer):
    quoteAsset = Text(required=False, max_length=16, pattern=r"^[A-Za-z0-9]{1,16}$", example="USDT",
                      help_text="Only markets quoted in this asset.")
    status = Text(required=False, max_length=16, pattern=r"^[A-Za-z_]{1,16}$", example="TRADING",
                  help_text="Only markets in this status.")
    page = Integer(required=False, min_value=1, max_value=1_000_000, default=1, example=1, help_text="Page, from 1.")
    pageSize = Integer(required=False, min_value=1, max_value=500, default=100, example=100,
                       help_text="Markets per page (1-500).")


class TickerSerializer(serializers.Serializer):
    """The live best bid/ask (bookTicker) of a symbol."""

    symbol = symbol_field()
    bidPrice = quote_dec("Best bid")
    bidQty = base_dec("Quantity at the best bid")
    askPrice = quote_dec("Best ask", "7200.51")
    askQty = base_dec("Quantity at the best ask")
    lastPrice = quote_dec("Last trade price (1 m kline close), null when not known", allow_null=True)
    spread = quote_dec("askPrice - bidPrice", "0.01")
    updateId = Integer(help_text="bookTicker update id (u).", example=400900217)
    receivedAt = ms("When the quote was received")
    ageMs = Integer(help_text="Age of the quote (ms).", example=120)


class Ticker24hSerializer(serializers.Serializer):
    """Binance's rolling 24 h statistics (GET /api/v3/ticker/24hr)."""

    symbol = symbol_field()
    priceChange = signed("Price change over 24 h", "-12.5", allow_null=True)
    priceChangePercent = DecimalString(signed=True, allow_null=True, example="-0.17",
                                       help_text="Price change over 24 h (percent, decimal string).")
    weightedAvgPrice = quote_dec("Volume-weighted average price", allow_null=True)
    prevClosePrice = quote_dec("Close price before the window", allow_null=True)
    lastPrice = quote_dec("Last trade price", allow_null=True)
    lastQty = base_dec("Last trade quantity", allow_null=True)
    bidPrice = quote_dec("Best bid", allow_null=True)
    bidQty = base_dec("Quantity at the best bid", allow_null=True)
    askPrice = quote_dec("Best ask", allow_null=True)
    askQty = base_dec("Quantity at the best ask", allow_null=True)
    openPrice = quote_dec("Open price of the window", allow_null=True)
    highPrice = quote_dec("Highest price of the window", allow_null=True)
    lowPrice = quote_dec("Lowest price of the window", allow_null=True)
    volume = base_dec("Traded volume", "1520.5", allow_null=True)
    quoteVolume = quote_dec("Traded quote volume", "10950000.12", allow_null=True)
    openTime = ms("Window start", allow_null=True)
    closeTime = ms("Window end", allow_null=True)
    firstId = Integer(allow_null=True, help_text="First trade id of the window.", example=1)
    lastId = Integer(allow_null=True, help_text="Last trade id of the window.", example=2000)
    count = Integer(allow_null=True, help_text="Trades in the window.", example=2000)


class Ticker24hListSerializer(serializers.Serializer):
    tickers = Ticker24hSerializer(many=True)


class SymbolsQuery(serializers.Serializer):
    symbols = Text(required=False, max_length=3300, pattern=r"^[A-Za-z0-9]{1,32}(,[A-Za-z0-9]{1,32}){0,99}$",
                   example="BTCUSDT,ETHUSDT", help_text="Comma-separated symbols (up to 100); default all (first 500).")


class BookQuery(serializers.Serializer):
    limit = Integer(required=False, min_value=1, max_value=5000, default=100, example=100,
                    help_text="Levels a side (1-5000; request weight grows with it).")


class BookSerializer(serializers.Serializer):
    symbol = symbol_field()
    lastUpdateId = Integer(help_text="The book's update id.", example=1027024)
    bids = serializers.ListField(child=serializers.ListField(child=DecimalString(example="7200.50"), min_length=2, max_length=2),
                                 help_text="[price (quote asset), qty (base asset)] pairs, best (highest) first.")
    asks = serializers.ListField(child=serializers.ListField(child=DecimalString(example="7200.51"), min_length=2, max_length=2),
                                 help_text="[price (quote asset), qty (base asset)] pairs, best (lowest) first.")


class KlineQuery(serializers.Serializer):
    interval = Text(required=False, default="1m", enum=list(KLINE_INTERVALS), example="1m", help_text="Candle interval.")
    limit = Integer(required=False, min_value=1, max_value=1000, default=100, example=100, help_text="Candles (1-1000).")
    startTime = ms("Open time from (inclusive)", required=False, min_value=0, max_value=MAX_ID)
    endTime = ms("Open time to (inclusive)", required=False, min_value=0, max_value=MAX_ID)


class KlineSerializer(serializers.Serializer):
    openTime = ms("Candle open time")
    open = quote_dec("Open price")
    high = quote_dec("High price")
    low = quote_dec("Low price")
    close = quote_dec("Close price")
    volume = base_dec("Volume", "12.5")
    closeTime = ms("Candle close time", 1700000059999)
    quoteVolume = quote_dec("Quote volume", "90000.25")
    trades = Integer(help_text="Number of trades.", example=120)
    closed = Boolean(help_text="False for a candle that may still be forming.", example=True)


class KlinePageSerializer(serializers.Serializer):
    symbol = symbol_field()
    interval = Text(enum=list(KLINE_INTERVALS), example="1m", help_text="Candle interval.")
    klines = KlineSerializer(many=True)
    nextStartTime = ms("Pass as startTime for the next page; null when done", allow_null=True)


class IndicatorQuery(serializers.Serializer):
    interval = Text(required=False, default="1h", enum=list(KLINE_INTERVALS), example="1h", help_text="Candle interval.")
    indicators = Text(required=False, max_length=200, pattern=r"^[a-z]{3,6}(,[a-z]{3,6}){0,8}$", example="rsi,macd",
                      help_text=f"Comma-separated, any of {', '.join(INDICATORS)} (default all).")


class IndicatorSignalSerializer(serializers.Serializer):
    indicator = Text(help_text="Which indicator.", example="rsi")
    signal = Text(help_text="BUY, SELL or NEUTRAL.", example="BUY")
    event = Text(help_text="What happened.", example="oversold")
    reason = Text(help_text="One line of why.", example="RSI(14) 27.1 < 30")


class IndicatorsSerializer(serializers.Serializer):
    symbol = symbol_field()
    interval = Text(enum=list(KLINE_INTERVALS), example="1h", help_text="Candle interval.")
    openTime = ms("Open time of the candle the values are at")
    close = quote_dec("Close of that candle")
    values = AnyObject(help_text="Per indicator: its params and values (decimal strings; RSI/stoch 0..100, OBV base asset, "
                                 "the rest quote asset).", example={"rsi": {"params": {"period": 14}, "rsi": "48.21"}})
    signals = IndicatorSignalSerializer(many=True)
    candles = Integer(help_text="Candles used.", example=1000)


class FeeSerializer(serializers.Serializer):
    symbol = symbol_field()
    makerCommission = DecimalString(help_text="Maker rate, fraction of the notional (0.001 = 0.1 %).", example="0.001")
    takerCommission = DecimalString(help_text="Taker rate, fraction of the notional (0.001 = 0.1 %).", example="0.001")
    source = Text(enum=["venue", "default"], example="venue", help_text="Synced from the venue, or the default.")


class AccountFeeSerializer(serializers.Serializer):
    accountId = Integer(help_text="Account id.", example=1)
    name = Text(help_text="Account name.", example="Paper")
    venue = Text(help_text="paper, testnet or live.", example="paper")
    makerCommission = DecimalString(help_text="This account's maker rate (fraction).", example="0.001")
    takerCommission = DecimalString(help_text="This account's taker rate (fraction).", example="0.001")


class FeesSerializer(serializers.Serializer):
    fees = FeeSerializer(many=True)
    accounts = AccountFeeSerializer(many=True)
    note = Text(help_text="How to read the rates.", example="Rates are fractions of the trade's notional.")


# --- accounts -------------------------------------------------------------------------------------

class BalanceSerializer(serializers.Serializer):
    asset = Text(help_text="Asset.", example="USDT")
    free = DecimalString(help_text="Available (that asset, decimal string).", example="9985.60000000")
    locked = DecimalString(help_text="Held by open orders (that asset, decimal string).", example="0.00000000")


class BalancesSerializer(serializers.Serializer):
    accountId = Integer(help_text="Account id.", example=1)
    balances = BalanceSerializer(many=True)


class AccountPositionSerializer(serializers.Serializer):
    symbol = symbol_field()
    quantity = base_dec("Position size")
    avgEntryPrice = quote_dec("Average entry price")
    realizedPnl = signed("Realized P&L, before fees")


class AccountRiskLimitsSerializer(serializers.Serializer):
    maxOrderNotional = quote_dec("Largest single order, null = unlimited", "1000", allow_null=True)
    maxDailyLoss = quote_dec("Daily-loss circuit breaker, null = none", "200", allow_null=True)


class AccountSerializer(serializers.Serializer):
    accountId = Integer(help_text="Account id.", example=1)
    name = Text(help_text="Account name.", example="Paper")
    venue = Text(help_text="paper, testnet or live.", example="paper")
    quoteAsset = Text(help_text="Asset the account is valued in.", example="USDT")
    makerFeeRate = DecimalString(help_text="Maker fee rate (fraction of the notional).", example="0.001")
    takerFeeRate = DecimalString(help_text="Taker fee rate (fraction of the notional).", example="0.001")
    balances = BalanceSerializer(many=True)
    positions = AccountPositionSerializer(many=True)
    riskLimits = AccountRiskLimitsSerializer()


class PositionSerializer(serializers.Serializer):
    symbol = symbol_field()
    quantity = base_dec("Position size")
    avgEntryPrice = quote_dec("Average entry price")
    markPrice = quote_dec("Mark price (best bid), null when not known", allow_null=True)
    unrealizedPnl = signed("Unrealized P&L at the mark")
    realizedPnl = signed("Realized P&L, before fees")
    value = quote_dec("quantity x markPrice, null when not known", "14.40", allow_null=True)


class PositionsSerializer(serializers.Serializer):
    accountId = Integer(help_text="Account id.", example=1)
    positions = PositionSerializer(many=True)


class PortfolioAssetSerializer(serializers.Serializer):
    asset = Text(help_text="Asset.", example="BTC")
    free = DecimalString(help_text="Available (that asset).", example="0.002")
    locked = DecimalString(help_text="Held by open orders (that asset).", example="0")
    price = quote_dec("Price in the account's quote asset, null when not known", allow_null=True)
    value = quote_dec("(free + locked) x price, null when not known", "14.40", allow_null=True)


class PortfolioSerializer(serializers.Serializer):
    accountId = Integer(help_text="Account id.", example=1)
    quoteAsset = Text(help_text="Asset the values are in.", example="USDT")
    value = quote_dec("Total value", "10000.00")
    assets = PortfolioAssetSerializer(many=True)
    positions = PositionSerializer(many=True)
    unrealizedPnl = signed("Unrealized P&L of all positions")
    realizedPnl = signed("Realized P&L of all positions, before fees")
    time = ms("When it was valued")


class PnlQuery(serializers.Serializer):
    period = Text(required=False, default="1d", enum=PERIODS, example="1d",
                  help_text="today (since 00:00 UTC), 1d, 7d, 30d (trailing) or all.")


class DailyPnlSerializer(serializers.Serializer):
    day = Text(help_text="UTC day (YYYY-MM-DD).", example="2026-01-31")
    pnl = signed("endValue - startValue")
    startValue = quote_dec("Value at the day's first snapshot", "10000")
    endValue = quote_dec("Value at the day's last snapshot", "9998.75")
    realizedPnl = signed("Realized P&L of the day's fills")
    fees = quote_dec("Fees of the day's fills", "0.0144")


class PnlSerializer(serializers.Serializer):
    accountId = Integer(help_text="Account id.", example=1)
    period = Text(enum=PERIODS, example="1d", help_text="The period.")
    quoteAsset = Text(help_text="Asset the amounts are in.", example="USDT")
    realizedPnl = signed("Realized P&L of the period's fills, before fees")
    fees = quote_dec("Fees of the period's fills", "0.0144")
    netRealized = signed("realizedPnl - fees")
    unrealizedPnl = signed("Unrealized P&L now")
    value = quote_dec("Account value now", "9998.75")
    startValue = quote_dec("Value at the period's first snapshot, null when none", "10000", allow_null=True)
    change = signed("value - startValue, null when no snapshot", allow_null=True)
    daily = DailyPnlSerializer(many=True)

    def get_fields(self):
        """Adds ``from`` (a Python keyword, so not declarable as a class attribute)."""
        fields = super().get_fields()
        fields["from"] = ms("Start of the period, null for all", allow_null=True)
        return fields


# --- orders ---------------------------------------------------------------------------------------

class FillSerializer(serializers.Serializer):
    """A fill (trade) with Binance's names (GET /api/v3/myTrades)."""

    id = Integer(help_text="Fill id.", example=7)
    orderId = Integer(help_text="Order id.", example=42)
    symbol = symbol_field()
    side = Text(enum=SIDES, example="BUY", help_text="Side of the order.")
    price = quote_dec("Fill price")
    qty = base_dec("Fill quantity")
    quoteQty = quote_dec("price x qty", "14.401")
    commission = DecimalString(help_text="Fee charged (in commissionAsset, decimal string).", example="0.000002")
    commissionAsset = Text(help_text="Asset the fee was charged in.", example="BTC")
    isMaker = Boolean(help_text="True when the order rested on the book.", example=False)
    realizedPnl = signed("Realized P&L of this fill, before fees", "0")
    time = ms("Fill time")


class FillsSerializer(serializers.Serializer):
    accountId = Integer(help_text="Account id.", example=1)
    trades = FillSerializer(many=True)


class OrderSerializer(serializers.Serializer):
    """An order with Binance's names (GET /api/v3/order)."""

    accountId = Integer(help_text="Account id.", example=1)
    orderId = Integer(help_text="Order id (use it to cancel).", example=42)
    clientOrderId = Text(help_text="Your idempotency key (or a generated one).", example="my-limit-1")
    symbol = symbol_field()
    side = Text(enum=SIDES, example="BUY", help_text="BUY or SELL.")
    type = Text(enum=ORDER_TYPES, example="LIMIT", help_text="Order type.")
    timeInForce = Text(enum=TIME_IN_FORCE, allow_null=True, example="GTC", help_text="GTC, IOC or FOK; null for MARKET/stops.")
    origQty = base_dec("Ordered quantity, null for a quoteOrderQty MARKET order", allow_null=True)
    origQuoteOrderQty = quote_dec("Quote amount of a quoteOrderQty MARKET order, else null", "15", allow_null=True)
    price = quote_dec("Limit price, null for MARKET/STOP_LOSS/TAKE_PROFIT", allow_null=True)
    stopPrice = quote_dec("Trigger price of stop/take-profit types, else null", "7000", allow_null=True)
    isWorking = Boolean(help_text="False for a stop not yet triggered.", example=True)
    orderListId = Integer(help_text="OCO list id, -1 when not in a list.", example=-1)
    executedQty = base_dec("Filled quantity", "0")
    cummulativeQuoteQty = quote_dec("Filled quote amount", "0")
    avgPrice = quote_dec("Average fill price, null before a fill", allow_null=True)
    status = Text(enum=ORDER_STATUSES, example="NEW", help_text="Order status.")
    rejectReason = Text(allow_null=True, example=None, help_text="Why a REJECTED order was refused, else null.")
    channel = Text(help_text="How it arrived: mcp, api, dashboard, admin, system.", example="api")
    time = ms("Created")
    updateTime = ms("Last change")
    workingTime = ms("When it started working on the book; -1 if never", min_value=-1)
    fills = FillSerializer(many=True, required=False)


class PlacedOrderSerializer(OrderSerializer):
    duplicate = Boolean(help_text="True when this clientOrderId was already used: the first order is returned and "
                                  "nothing new is booked.", example=False)


class OrdersSerializer(serializers.Serializer):
    accountId = Integer(help_text="Account id.", example=1)
    orders = OrderSerializer(many=True)


class OrderQuery(serializers.Serializer):
    symbol = symbol_field(required=False, help_text="Only this symbol.")
    limit = Integer(required=False, min_value=1, max_value=500, default=50, example=50, help_text="Orders (1-500), newest first.")


class OpenOrderQuery(serializers.Serializer):
    symbol = symbol_field(required=False, help_text="Only this symbol.")


class CancelAllQuery(serializers.Serializer):
    symbol = symbol_field(help_text="Cancel every open order of this symbol.")


class FillQuery(serializers.Serializer):
    symbol = symbol_field(required=False, help_text="Only this symbol.")
    limit = Integer(required=False, min_value=1, max_value=1000, default=100, example=100, help_text="Fills (1-1000).")
    fromId = Integer(required=False, min_value=1, max_value=MAX_ID, example=1,
                     help_text="Only fills with id >= fromId, oldest first (paging forward).")


class OrderInput(serializers.Serializer):
    """A new order (Binance "New order (TRADE)", POST /api/v3/order)."""

    symbol = symbol_field()
    side = Text(enum=SIDES, example="BUY", help_text="BUY or SELL.")
    type = Text(enum=ORDER_TYPES, default="MARKET", required=False, example="LIMIT", help_text="Order type (default MARKET).")
    quantity = base_dec("Base-asset amount: a multiple of LOT_SIZE stepSize, price x quantity >= MIN_NOTIONAL", required=False)
    quoteOrderQty = quote_dec("MARKET only, instead of quantity: quote amount to spend (BUY) or receive (SELL)", "15",
                          required=False)
    price = quote_dec("Limit price of LIMIT, LIMIT_MAKER, *_LIMIT; a multiple of PRICE_FILTER tickSize", required=False)
    stopPrice = quote_dec("Trigger price of STOP_LOSS*, TAKE_PROFIT* (last trade price)", "7000", required=False)
    timeInForce = Text(enum=TIME_IN_FORCE, required=False, example="GTC",
                       help_text="GTC (default), IOC or FOK for LIMIT, STOP_LOSS_LIMIT, TAKE_PROFIT_LIMIT.")
    clientOrderId = Text(pattern=CLIENT_ORDER_ID_PATTERN, max_length=36, required=False, example="my-limit-1",
                         help_text="Your idempotency key: sending it again returns the first order (200, duplicate true) "
                                   "and books nothing. Always set it.")


class CancelReplaceInput(OrderInput):
    """Cancel an open order, then place a new one (Binance "Cancel an Existing Order and Send a
    New Order", cancelReplaceMode STOP_ON_FAILURE): if the cancel fails, nothing is placed."""


class CancelReplaceSerializer(serializers.Serializer):
    cancelResult = Text(enum=["SUCCESS"], example="SUCCESS", help_text="The cancel succeeded.")
    newOrderResult = Text(enum=["SUCCESS"], example="SUCCESS", help_text="The new order was placed.")
    cancelResponse = OrderSerializer()
    newOrderResponse = OrderSerializer()


class OcoInput(serializers.Serializer):
    """An OCO pair (Binance "New OCO"): a LIMIT_MAKER at price and a STOP_LOSS (or STOP_LOSS_LIMIT)
    at stopPrice; when one fills or triggers the other expires."""

    symbol = symbol_field()
    side = Text(enum=SIDES, example="SELL", help_text="SELL: price > last > stopPrice; BUY: price < last < stopPrice.")
    quantity = base_dec("Base-asset amount of both legs")
    price = quote_dec("LIMIT_MAKER leg's price", "7500")
    stopPrice = quote_dec("Stop leg's trigger price", "7000")
    stopLimitPrice = quote_dec("Makes the stop leg STOP_LOSS_LIMIT at this limit price", "6990", required=False)
    stopLimitTimeInForce = Text(enum=TIME_IN_FORCE, required=False, example="GTC", help_text="For the STOP_LOSS_LIMIT leg.")
    listClientOrderId = Text(pattern=CLIENT_ORDER_ID_PATTERN, max_length=36, required=False, example="my-oco-1",
                             help_text="Your idempotency key for the list.")


class OcoSerializer(serializers.Serializer):
    orderListId = Integer(help_text="OCO list id.", example=3)
    contingencyType = Text(enum=["OCO"], example="OCO", help_text="Always OCO.")
    listStatusType = Text(help_text="EXEC_STARTED, ALL_DONE...", example="EXEC_STARTED")
    listOrderStatus = Text(help_text="EXECUTING, ALL_DONE...", example="EXECUTING")
    listClientOrderId = Text(help_text="The list's idempotency key.", example="my-oco-1")
    symbol = symbol_field()
    orders = OrderSerializer(many=True)
    duplicate = Boolean(required=False, help_text="True when listClientOrderId was already used.", example=False)


class CanceledSerializer(serializers.Serializer):
    accountId = Integer(help_text="Account id.", example=1)
    symbol = symbol_field()
    canceled = OrderSerializer(many=True)


class ClosePositionInput(serializers.Serializer):
    clientOrderId = Text(pattern=CLIENT_ORDER_ID_PATTERN, max_length=36, required=False, example="close-btc-1",
                         help_text="Idempotency key of the closing MARKET SELL.")


# --- approvals ------------------------------------------------------------------------------------

class ApprovalSerializer(serializers.Serializer):
    """An order a confirm-mode token placed, held for a person's decision."""

    accountId = Integer(help_text="Account id.", example=1)
    approvalId = Integer(help_text="Approval id (approve/reject it by this).", example=5)
    orderId = Integer(allow_null=True, help_text="The order placed on approval, else null.", example=None)
    clientOrderId = Text(help_text="The agent's idempotency key; the order gets it on approval.", example="agent-1")
    symbol = symbol_field()
    side = Text(enum=SIDES, example="BUY", help_text="BUY or SELL.")
    type = Text(enum=ORDER_TYPES, example="LIMIT", help_text="Order type.")
    origQty = base_dec("Ordered quantity", allow_null=True)
    origQuoteOrderQty = quote_dec("Quote amount of a quoteOrderQty MARKET order", "15", allow_null=True)
    price = quote_dec("Limit price", allow_null=True)
    stopPrice = quote_dec("Trigger price", "7000", allow_null=True)
    timeInForce = Text(allow_null=True, example="GTC", help_text="GTC, IOC or FOK.")
    status = Text(enum=["PENDING_APPROVAL", "APPROVED", "REJECTED"], example="PENDING_APPROVAL", help_text="Decision state.")
    requestedBy = Text(allow_null=True, help_text="Name of the agent token that asked.", example="my-agent")
    channel = Text(help_text="How the order arrived.", example="api")
    decidedBy = Text(allow_null=True, help_text="Who decided, null while pending.", example=None)
    decisionNote = Text(allow_null=True, help_text="The decider's note.", example=None)
    time = ms("Requested")
    decidedTime = ms("Decided, null while pending", allow_null=True)
    duplicate = Boolean(required=False, help_text="True when this clientOrderId was already held.", example=False)


class ApprovalsSerializer(serializers.Serializer):
    accountId = Integer(help_text="Account id.", example=1)
    approvals = ApprovalSerializer(many=True)


class DecisionInput(serializers.Serializer):
    note = Text(required=False, allow_blank=True, max_length=500, example="looks fine", help_text="Kept with the decision.")


class DecisionSerializer(serializers.Serializer):
    approval = ApprovalSerializer()
    order = OrderSerializer(allow_null=True, help_text="The order placed on approval (null on reject or when nothing was booked).")
    error = ErrorSerializer(allow_null=True, help_text="Why the order was refused at approval time, else null.")


# --- risk -----------------------------------------------------------------------------------------

class RiskRowSerializer(serializers.Serializer):
    name = Text(help_text="Limit name.", example="max_daily_loss")
    limit = DecimalString(allow_null=True, example="200", help_text="The limit (in unit), null = unlimited.")
    usage = DecimalString(allow_null=True, example="12.50", help_text="Current use (in unit), null for per-order limits.")
    pct = Number(allow_null=True, example=6.25, help_text="usage / limit in percent (0-100), null when not applicable.")
    unit = Text(help_text="Unit: the quote asset, orders or %.", example="USDT")
    note = Text(help_text="How usage is measured.", example="today's realized loss incl. fees (UTC day)")


class ProtectionLockSerializer(serializers.Serializer):
    id = Integer(help_text="Lock id.", example=1)
    symbol = Text(allow_null=True, help_text="Locked symbol, null = the whole account.", example=None)
    protection = Text(help_text="cooldown, stoploss_guard, max_drawdown or low_profit.", example="cooldown")
    scope = Text(help_text="account or symbol.", example="account")
    reason = Text(help_text="Why.", example="losing trade within 5 min")
    until = ms("Lock end")


class RiskStateSerializer(serializers.Serializer):
    accountId = Integer(help_text="Account id.", example=1)
    tradingState = Text(enum=["ACTIVE", "REDUCING", "HALTED"], example="ACTIVE", help_text="Trading state.")
    haltedReason = Text(allow_blank=True, help_text="Why it is halted, empty when active.", example="")
    haltedUntil = ms("When the breaker lifts, null = until resumed", allow_null=True)
    breakerTripped = Boolean(help_text="The daily-loss breaker halted it.", example=False)
    allowedSymbols = serializers.ListField(child=symbol_field(), help_text="Only these may be traded (empty = all).")
    limits = RiskRowSerializer(many=True)
    locks = serializers.ListField(child=AnyObject(example={"id": 1, "protection": "cooldown"}),
                                  help_text="Active protection locks (risk.ProtectionLock).")


class RiskLimitsSerializer(serializers.Serializer):
    """The account's risk limits (risk.RiskLimit); null = unlimited. PATCH changes the given ones:
    the account's owner only, by session (a person), never by an agent token; audited as
    risk_limit.change with before/after values."""

    maxOrderNotional = quote_dec("Largest single order", "1000", required=False, allow_null=True)
    maxPositionNotional = quote_dec("Largest position in one symbol", "5000", required=False, allow_null=True)
    maxTotalExposure = quote_dec("Largest sum of all positions", "8000", required=False, allow_null=True)
    maxOpenOrders = Integer(required=False, allow_null=True, min_value=0, max_value=2147483647, example=20,
                            help_text="Most resting orders at once (orders).")
    maxOrdersPerMinute = Integer(required=False, allow_null=True, min_value=0, max_value=2147483647, example=60,
                                 help_text="Most orders in any trailing 60 s (orders).")
    allowedSymbols = serializers.ListField(child=symbol_field(), required=False, max_length=1000,
                                           help_text="Only these symbols may be traded (empty = all).")
    priceBandPct = DecimalString(required=False, allow_null=True, example="5",
                                 help_text="A limit/stop price may be at most this far from the last price (percent).")
    maxDailyLoss = quote_dec("Daily-loss circuit breaker", "200", required=False, allow_null=True)


class RiskLimitsOutSerializer(RiskLimitsSerializer):
    accountId = Integer(help_text="Account id.", example=1)
    tradingState = Text(enum=["ACTIVE", "REDUCING", "HALTED"], example="ACTIVE", help_text="Trading state.")


# --- audit ----------------------------------------------------------------------------------------

class AuditQuery(serializers.Serializer):
    action = Text(required=False, max_length=64, pattern=r"^[a-z0-9_.]{1,64}$", example="order.place",
                  help_text="Only this action (order.place, order.cancel, mcp.get_ticker...).")
    outcome = Text(required=False, enum=["ok", "rejected", "error"], example="ok", help_text="Only this outcome.")
    channel = Text(required=False, enum=["mcp", "api", "dashboard", "admin", "system"], example="api",
                   help_text="Only this channel.")
    since = ms("Only events at or after", required=False, min_value=0, max_value=253402300799999)
    until = ms("Only events before", required=False, min_value=0, max_value=253402300799999)
    page = Integer(required=False, min_value=1, max_value=1_000_000, example=1, help_text="Page, from 1.")
    pageSize = Integer(required=False, min_value=1, max_value=500, example=100, help_text="Events per page (1-500, default 100).")
    format = Text(required=False, enum=["json", "csv"], example="csv", help_text="csv: the page as CSV (text/csv).")


class AuditEventSerializer(serializers.Serializer):
    id = Integer(help_text="Event id.", example=1001)
    time = ms("When it happened")
    accountId = Integer(allow_null=True, help_text="Account id.", example=1)
    channel = Text(help_text="mcp, api, dashboard, admin or system.", example="api")
    action = Text(help_text="What was done.", example="order.place")
    outcome = Text(enum=["ok", "rejected", "error"], example="ok", help_text="ok, rejected or error.")
    actorUser = Text(allow_null=True, help_text="The person (username).", example="alice")
    actorToken = Text(allow_null=True, help_text="The agent token's name.", example="my-agent")
    message = Text(help_text="Human-readable summary.", example="BUY LIMIT 0.002 BTCUSDT NEW")
    params = AnyObject(help_text="The call's arguments.", example={"symbol": "BTCUSDT"})
    result = AnyObject(help_text="What it returned or why it failed.", example={"orderId": 42})
    riskDecision = AnyObject(allow_null=True, help_text="The risk check's verdict, null when none.", example=None)
    latencyMs = Number(allow_null=True, help_text="Duration (ms).", example=4.2)
    requestId = Text(allow_blank=True, help_text="Request id.", example="3f2a9c1b0d4e5f60")
