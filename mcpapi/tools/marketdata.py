"""MCP tools for market data (declared with ``mcpapi.guard.mcp_tool``; imported by ``mcpapi.mcp``, which django-mcp-server autodiscovers).

Prices are in the symbol's quote asset, quantities in its base asset, times in ms since the epoch
UTC; numbers are strings, as Binance sends them, so no precision is lost. Field names are
Binance's. Tools are thin: they validate and call ``marketdata.selectors`` (reads) or
``marketdata.services`` (writes). The hot Redis-only reads (``get_ticker``, ``get_market_data``)
are ``async def`` and use the selectors' async variants, so ``mcpapi.guard``'s dispatch awaits
them on the event loop; the others run in its worker-thread pool (see ``mcpapi.guard``).
"""
from typing import Optional, Union

from marketdata import cache, selectors, services
from mcpapi import results
from mcpapi.guard import READ_OWN_STORE, READ_VENUE, current_call, mcp_tool
from mcpapi.sessions import progress_sync
from risk import access
from risk.models import Scope


def _ticker_read_ahead(args: dict) -> list[str]:
    """get_ticker reads the quote keys of its symbol: fetched with the token check (cache.read_ahead).
    A malformed symbol raises ``UnknownSymbol`` here, which ``read_ahead_keys`` turns into no keys."""
    return list(selectors.quote_keys(selectors._symbol_name(args.get("symbol"))))


cache.read_ahead_register("get_ticker", _ticker_read_ahead)


@mcp_tool(scope=Scope.MARKET_READ, title="Best bid/ask of a symbol", annotations=READ_OWN_STORE)
async def get_ticker(symbol: str) -> results.Ticker:
    """Latest best bid/ask of a spot symbol, e.g. get_ticker("BTCUSDT").

    Returns {symbol, bidPrice, bidQty, askPrice, askQty, lastPrice, spread, updateId,
    receivedAt (ms UTC), ageMs}. A MARKET BUY fills at askPrice, a SELL at bidPrice.
    Errors: unknown symbol (lists the closest valid ones); no live quote yet.
    """
    sym = await selectors.symbol_get_async(symbol)
    return (await selectors.quote_get_async(sym.symbol)).as_dict()

@mcp_tool(scope=Scope.MARKET_READ, title="Candles (klines)", annotations=READ_VENUE)
def get_klines(symbol: str, interval: str = "1m", limit: int = 100, start_time: Optional[int] = None,
               end_time: Optional[int] = None) -> results.Klines:
    """Candles (klines) of a symbol, oldest first.

    Args: symbol e.g. "BTCUSDT"; interval one of 1m 3m 5m 15m 30m 1h 2h 4h 6h 8h 12h 1d 3d 1w 1M;
    limit 1..1000 (default 100); start_time / end_time: open-time bounds in ms since the epoch
    UTC (inclusive; omit both for the latest candles). Each kline: openTime/closeTime (ms UTC),
    open, high, low, close (quote asset), volume (base asset), quoteVolume, trades, closed (false
    for a candle that may still be forming). nextStartTime: pass it as start_time for the next
    page (null when done).
    """
    sym = selectors.symbol_get(symbol)
    selectors.interval_check(interval)
    progress_sync(0, limit, f"reading {sym.symbol} {interval} klines")  # MCP progress, when the call asked for it
    result = selectors.klines_range(symbol=sym.symbol, interval=interval, limit=limit, start_time=start_time, end_time=end_time)
    progress_sync(limit, limit, f"{len(result.get('klines') or [])} klines read")
    return result

@mcp_tool(scope=Scope.MARKET_READ, title="Markets and their trading rules", annotations=READ_OWN_STORE)
def list_markets(quote_asset: Optional[str] = None, status: Optional[str] = None, page: int = 1,
                 page_size: int = 100) -> results.Markets:
    """Every spot market of the venue with its trading rules, a page at a time.

    Args: quote_asset e.g. "USDT" (optional filter); status e.g. "TRADING" or "BREAK"
    (optional filter); page from 1; page_size 1..500 (default 100).
    Each market: symbol, status, baseAsset, quoteAsset, precisions, tickSize (price step, quote
    asset), stepSize/minQty/maxQty (quantity rules, base asset), minNotional (quote asset),
    orderTypes, permissions, filters (Binance's list), lastPrice and volume (base asset, 24 h) /
    quoteVolume when known (else null). total, nextPage and hint say how to get the next page.
    """
    out = selectors.markets_list(quote_asset=quote_asset, status=status, page=page, page_size=page_size)
    out["markets"] = access.visible(current_call().identity, out["markets"])
    return out

@mcp_tool(scope=Scope.MARKET_READ, title="Market overview of several symbols", annotations=READ_VENUE)
async def get_market_data(symbols: Union[list[str], str]) -> results.MarketData:
    """A trader's view of up to 100 symbols, e.g. get_market_data(["BTCUSDT", "ETHUSDT"]).

    Per symbol: lastPrice, bidPrice/askPrice (quote asset) with bidQty/askQty (base asset),
    spread (quote asset) and spreadBps (basis points of the mid), and over the last 24 h:
    volume (base asset), quoteVolume, highPrice, lowPrice, priceChange, priceChangePercent.
    quoteSource says whether bid/ask come from the live stream or the 24h ticker.
    """
    names = [s.symbol for s in await selectors.symbols_check_async(symbols)]
    return {"markets": await selectors.market_data_async(names)}

@mcp_tool(scope=Scope.MARKET_READ, title="24-hour ticker statistics", annotations=READ_VENUE)
def get_ticker_24h(symbols: Optional[Union[list[str], str]] = None) -> results.Tickers24h:
    """Binance's rolling 24-hour statistics (GET /api/v3/ticker/24hr) for the given symbols
    (up to 100) or, with no argument, for every stored symbol (first 500).

    Each: symbol, priceChange, priceChangePercent, weightedAvgPrice, prevClosePrice, lastPrice,
    lastQty, bidPrice, bidQty, askPrice, askQty, openPrice, highPrice, lowPrice (quote asset),
    volume (base asset), quoteVolume (quote asset), openTime/closeTime (ms UTC), firstId,
    lastId, count (trades).
    """
    names = access.symbols_default(current_call().identity) if symbols is None else \
        [s.symbol for s in selectors.symbols_check(symbols)]
    return selectors.ticker_24h_list(names)

@mcp_tool(scope=Scope.MARKET_READ, title="Order book", annotations=READ_VENUE)
def get_order_book(symbol: str, limit: int = 100) -> results.OrderBook:
    """The venue's order book of a symbol (GET /api/v3/depth, at most ~1 s old).

    Args: symbol e.g. "BTCUSDT"; limit 1..5000 levels a side (default 100; request weight
    grows with it: 1-100 → 5, 101-500 → 25, 501-1000 → 50, more → 250).
    Returns {symbol, lastUpdateId, bids: [[price, qty], ...] best (highest) first, asks:
    lowest first}; price in quote asset, qty in base asset.
    """
    sym = selectors.symbol_get(symbol)
    return selectors.order_book(symbol=sym.symbol, limit=limit)

@mcp_tool(scope=Scope.MARKET_READ, title="Technical indicators and signals", annotations=READ_VENUE)
def get_indicators(symbol: str, interval: str = "1h", indicators: Optional[list[str]] = None,
                   params: Optional[dict] = None) -> results.Indicators:
    """Technical indicators at the latest closed candle, computed now with TA-Lib, plus seed
    signals (RSI < 30 BUY / > 70 SELL; MACD vs signal; SMA20/SMA50 golden/death cross; close
    outside the Bollinger bands), each with a one-line reason.

    Args: symbol; interval (as get_klines); indicators: any of rsi, macd, sma, ema, bbands,
    atr, stoch, obv, vwap (default all); params: overrides, e.g. {"rsi": {"period": 7},
    "sma": {"periods": [10, 30]}, "bbands": {"period": 20, "nbdev": 2.5}}.
    Defaults: RSI 14, MACD 12/26/9, SMA 20/50, EMA 12/26, BBANDS 20/2, ATR 14, STOCH 14/3/3,
    VWAP per UTC-day session. Returns {symbol, interval, openTime (ms UTC, the candle's),
    close, values: {name: {params, ...values}}, signals: [{indicator, signal, event, reason}],
    candles (how many were used)}. Prices in quote asset; RSI/stoch 0..100; OBV base asset.
    """
    sym = selectors.symbol_get(symbol)
    selectors.interval_check(interval)
    return selectors.indicators_compute(symbol=sym.symbol, interval=interval, indicators=indicators, params=params)

@mcp_tool(scope=Scope.MARKET_READ, title="Trading fee rates", annotations=READ_OWN_STORE)
def get_fees(symbols: Optional[Union[list[str], str]] = None) -> results.Fees:
    """Maker/taker commission rates as fractions of the notional ("0.001" = 0.1 %).

    Args: symbols (up to 100; default every market, first 500). Returns fees: [{symbol,
    makerCommission, takerCommission, source: "venue" | "default"}] and accounts: your accounts'
    own rates (the ones your fills are charged).
    """
    names = access.symbols_default(current_call().identity) if symbols is None else \
        [s.symbol for s in selectors.symbols_check(symbols)]
    return selectors.fees_list(names=names, user=current_call().user)

@mcp_tool(scope=Scope.MARKET_READ, title="Subscribe to a Binance stream", annotations=READ_VENUE)
def subscribe_stream(stream: str) -> results.StreamSubscribed:
    """Start collecting a live Binance stream for you; read it with get_stream_messages.

    Args: stream "<symbol>@<kind>" (symbol lower case is fine either way), kinds: trade,
    aggTrade, bookTicker, ticker, miniTicker, kline_<interval>, depth, depth5/10/20 (optionally
    @100ms), e.g. "btcusdt@trade", "ethusdt@kline_5m". Messages start within about a second.
    Returns {stream, subscribed: true, created (false if you already were)}.
    """
    sub, created = services.stream_subscribe(user=current_call().user, stream=stream)
    return {"stream": sub.stream, "subscribed": True, "created": created}

@mcp_tool(scope=Scope.MARKET_READ, title="Unsubscribe from a stream", annotations=READ_OWN_STORE)
def unsubscribe_stream(stream: str) -> results.StreamUnsubscribed:
    """Stop collecting a stream you subscribed to. Returns {stream, unsubscribed (false if you
    were not subscribed)}."""
    name = selectors.stream_check(stream)
    return {"stream": name, "unsubscribed": services.stream_unsubscribe(user=current_call().user, stream=name)}

@mcp_tool(scope=Scope.MARKET_READ, title="Your streams", annotations=READ_OWN_STORE)
def list_streams() -> results.Streams:
    """Your stream subscriptions and the always-on default streams (bookTicker and kline_1m of
    the watched symbols): [{stream, subscribed, default, buffered (messages held),
    lastEventTime (ms UTC or null)}]."""
    return {"streams": selectors.streams_list(user=current_call().user)}

@mcp_tool(scope=Scope.MARKET_READ, title="Messages of a stream", annotations=READ_OWN_STORE)
def get_stream_messages(stream: str, limit: int = 50) -> results.StreamMessages:
    """The newest messages of a stream you subscribed to (or a default stream), oldest first,
    exactly as Binance sends them (e.g. trade: {e, E, s, t, p, q, T, m}; kline: {e, E, s, k}).

    Args: stream as in subscribe_stream; limit 1..200 (default 50; the buffer keeps the last
    200 per stream). Returns {stream, messages, count, latest}.
    """
    return selectors.stream_messages(user=current_call().user, stream=stream, limit=limit)
