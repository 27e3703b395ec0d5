"""Order validation against a symbol's exchangeInfo filters, before anything is sent or booked.

Follows Binance Spot API docs, "Filters" (symbol filters) and "Error codes" (-1013 "Filter
failure: <FILTER>"). ``Symbol.filters`` keeps Binance's list verbatim; every filter present is
enforced:

- ``PRICE_FILTER`` on ``price`` and ``stopPrice``: minPrice <= p <= maxPrice (each 0 = off),
  (p − minPrice) % tickSize == 0 (tickSize 0 = off).
- ``LOT_SIZE`` on the quantity of every order; ``MARKET_LOT_SIZE`` additionally on MARKET,
  STOP_LOSS and TAKE_PROFIT (orders that execute as market orders); stepSize 0 = no step rule.
- ``MIN_NOTIONAL`` (minNotional, applyToMarket, avgPriceMins) and ``NOTIONAL`` (minNotional,
  applyMinToMarket, maxNotional, applyMaxToMarket, avgPriceMins): price × quantity; for orders
  executing at market the reference price (see below) or ``quoteOrderQty``.
- ``PERCENT_PRICE`` (multiplierUp/Down) and ``PERCENT_PRICE_BY_SIDE`` (bid*/ask* multipliers) on
  ``price`` of limit orders, against the reference price.
- ``MAX_NUM_ORDERS`` / ``MAX_NUM_ALGO_ORDERS``: open orders (algo = stop orders) on the symbol,
  checked by the service under the account lock (``check_max_num_orders``).

Reference price: Binance uses the average price of the last ``avgPriceMins`` minutes (0 = last
trade); we use the freshest price we hold without a network call (last trade price of the cached
1m kline, else the bid/ask mid). All prices are in the quote asset, quantities in the base asset.

Every failure raises ``FilterFailure`` (code -1013) whose message starts with Binance's text and
adds the nearest valid value; ``details`` carries ``filter`` and ``nearestValid``.
"""
from __future__ import annotations

from decimal import ROUND_CEILING, ROUND_DOWN, ROUND_HALF_UP, ROUND_FLOOR, Decimal

from core.errors import FilterFailure

ZERO = Decimal("0")
E8 = Decimal("0.00000001")
MARKET_EXECUTING = {"MARKET", "STOP_LOSS", "TAKE_PROFIT"}
ALGO_TYPES = {"STOP_LOSS", "STOP_LOSS_LIMIT", "TAKE_PROFIT", "TAKE_PROFIT_LIMIT"}

_cache: dict[tuple, dict] = {}


def filters_of(symbol) -> dict[str, dict]:
    """``{filterType: filter}`` of a ``marketdata.models.Symbol`` (cached per row version)."""
    key = (symbol.pk, symbol.updated_at)
    got = _cache.get(key)
    if got is None:
        got = {f["filterType"]: f for f in (symbol.filters or []) if isinstance(f, dict) and "filterType" in f}
        if len(_cache) > 1000:
            _cache.clear()
        _cache[key] = got
    return got


def _d(value) -> Decimal:
    return Decimal(str(value)) if value not in (None, "") else ZERO


def fmt(value: Decimal) -> str:
    """Plain notation without trailing zeros ("0.001", "7188.69")."""
    value = value.normalize()
    return format(value, "f") if value != 0 else "0"


def _fail(name: str, why: str, nearest: Decimal | None, **extra) -> FilterFailure:
    hint = f"; nearest valid: {fmt(nearest)}" if nearest is not None else ""
    details = {"filter": name, **{k: (fmt(v) if isinstance(v, Decimal) else v) for k, v in extra.items()}}
    if nearest is not None:
        details["nearestValid"] = fmt(nearest)
    return FilterFailure(f"Filter failure: {name}. {why}{hint}.", details=details)


def round_step(value: Decimal, step: Decimal, *, base: Decimal = ZERO, rounding=ROUND_DOWN) -> Decimal:
    """``value`` rounded to ``base + k × step`` (down by default); unchanged when step is 0."""
    if step <= 0:
        return value
    k = ((value - base) / step).quantize(Decimal("1"), rounding=rounding)
    return base + k * step


def check_price(symbol, value: Decimal, *, name: str = "price") -> Decimal:
    """PRICE_FILTER on a price (quote asset). Returns it normalized to 8 decimals."""
    f = filters_of(symbol).get("PRICE_FILTER")
    if f:
        lo, hi, tick = _d(f.get("minPrice")), _d(f.get("maxPrice")), _d(f.get("tickSize"))
        if lo > 0 and value < lo:
            raise _fail("PRICE_FILTER", f"{name} {fmt(value)} is below minPrice {fmt(lo)}", lo, minPrice=lo)
        if hi > 0 and value > hi:
            raise _fail("PRICE_FILTER", f"{name} {fmt(value)} is above maxPrice {fmt(hi)}", hi, maxPrice=hi)
        if tick > 0 and (value - lo) % tick != 0:
            near = round_step(value, tick, base=lo, rounding=ROUND_HALF_UP)
            raise _fail("PRICE_FILTER", f"{name} {fmt(value)} is not a multiple of tickSize {fmt(tick)}", near, tickSize=tick)
    return value.quantize(E8)


def check_lot(symbol, qty: Decimal, *, market: bool) -> Decimal:
    """LOT_SIZE (and MARKET_LOT_SIZE when ``market``) on a base-asset quantity."""
    names = ("LOT_SIZE", "MARKET_LOT_SIZE") if market else ("LOT_SIZE",)
    fs = filters_of(symbol)
    for name in names:
        f = fs.get(name)
        if not f:
            continue
        lo, hi, step = _d(f.get("minQty")), _d(f.get("maxQty")), _d(f.get("stepSize"))
        if step > 0 and (qty - lo) % step != 0:
            near = max(round_step(qty, step, base=lo), lo if lo > 0 else step)
            raise _fail(name, f"quantity {fmt(qty)} is not a multiple of stepSize {fmt(step)}", near, stepSize=step)
        if qty < lo:
            raise _fail(name, f"quantity {fmt(qty)} is below minQty {fmt(lo)}", lo, minQty=lo)
        if hi > 0 and qty > hi:
            raise _fail(name, f"quantity {fmt(qty)} is above maxQty {fmt(hi)}", hi, maxQty=hi)
    return qty.quantize(E8)


def lot_step(symbol, *, market: bool) -> Decimal:
    """The step a computed quantity (quoteOrderQty orders) must be rounded down to."""
    fs = filters_of(symbol)
    steps = [_d(fs.get(n, {}).get("stepSize")) for n in (("LOT_SIZE", "MARKET_LOT_SIZE") if market else ("LOT_SIZE",))]
    steps = [s for s in steps if s > 0]
    return max(steps) if steps else E8


def check_notional(symbol, *, notional: Decimal, price: Decimal, qty: Decimal | None, market: bool) -> None:
    """MIN_NOTIONAL / NOTIONAL on ``notional`` (quote asset) of an order priced at ``price``.

    The hint is the smallest (or largest) valid quantity at that price, rounded to LOT_SIZE.
    """
    fs = filters_of(symbol)
    step = lot_step(symbol, market=market)
    f = fs.get("MIN_NOTIONAL")
    if f and (not market or f.get("applyToMarket", True)):
        lo = _d(f.get("minNotional"))
        if notional < lo:
            near = round_step(lo / price, step, rounding=ROUND_CEILING) if qty is not None and price > 0 else lo
            raise _fail("MIN_NOTIONAL", f"notional {fmt(notional)} is below minNotional {fmt(lo)}", near, minNotional=lo)
    f = fs.get("NOTIONAL")
    if f:
        lo, hi = _d(f.get("minNotional")), _d(f.get("maxNotional"))
        if (not market or f.get("applyMinToMarket", True)) and notional < lo:
            near = round_step(lo / price, step, rounding=ROUND_CEILING) if qty is not None and price > 0 else lo
            raise _fail("NOTIONAL", f"notional {fmt(notional)} is below minNotional {fmt(lo)}", near, minNotional=lo)
        if hi > 0 and (not market or f.get("applyMaxToMarket", False)) and notional > hi:
            near = round_step(hi / price, step, rounding=ROUND_FLOOR) if qty is not None and price > 0 else hi
            raise _fail("NOTIONAL", f"notional {fmt(notional)} is above maxNotional {fmt(hi)}", near, maxNotional=hi)


def check_percent_price(symbol, *, side: str, price: Decimal, ref_price: Decimal | None) -> None:
    """PERCENT_PRICE / PERCENT_PRICE_BY_SIDE: ``price`` within multipliers of the reference price."""
    if ref_price is None or ref_price <= 0:
        return
    fs = filters_of(symbol)
    f = fs.get("PERCENT_PRICE")
    bounds = []
    if f:
        bounds.append(("PERCENT_PRICE", _d(f.get("multiplierDown")), _d(f.get("multiplierUp"))))
    f = fs.get("PERCENT_PRICE_BY_SIDE")
    if f:
        pre = "bid" if side == "BUY" else "ask"
        bounds.append(("PERCENT_PRICE_BY_SIDE", _d(f.get(f"{pre}MultiplierDown")), _d(f.get(f"{pre}MultiplierUp"))))
    tick = _d(fs.get("PRICE_FILTER", {}).get("tickSize"))
    for name, down, up in bounds:
        lo, hi = ref_price * down, ref_price * up
        if up > 0 and price > hi:
            raise _fail(name, f"price {fmt(price)} is above {fmt(up)} × the average price {fmt(ref_price)}",
                        round_step(hi, tick, rounding=ROUND_FLOOR), multiplierUp=up)
        if price < lo:
            raise _fail(name, f"price {fmt(price)} is below {fmt(down)} × the average price {fmt(ref_price)}",
                        round_step(lo, tick, rounding=ROUND_CEILING), multiplierDown=down)


def limits_open_orders(symbol) -> bool:
    """Whether ``symbol`` limits open orders (a MAX_NUM_ORDERS or MAX_NUM_ALGO_ORDERS filter with
    a positive limit), so ``check_max_num_orders`` needs the account's open orders on it."""
    fs = filters_of(symbol)
    return any(int((fs.get(name) or {}).get(key, 0) or 0) > 0
               for name, key in (("MAX_NUM_ORDERS", "maxNumOrders"), ("MAX_NUM_ALGO_ORDERS", "maxNumAlgoOrders")))


def check_max_num_orders(symbol, *, open_orders: int, open_algo_orders: int, order_type: str) -> None:
    """MAX_NUM_ORDERS (all open orders on the symbol) and MAX_NUM_ALGO_ORDERS (open stop orders)."""
    fs = filters_of(symbol)
    f = fs.get("MAX_NUM_ORDERS")
    if f and open_orders + 1 > int(f.get("maxNumOrders", 0) or 0) > 0:
        raise FilterFailure(f"Filter failure: MAX_NUM_ORDERS. {open_orders} orders are open on {symbol.symbol} "
                            f"(limit {f['maxNumOrders']}); cancel one first.", details={"filter": "MAX_NUM_ORDERS"})
    f = fs.get("MAX_NUM_ALGO_ORDERS")
    if f and order_type in ALGO_TYPES and open_algo_orders + 1 > int(f.get("maxNumAlgoOrders", 0) or 0) > 0:
        raise FilterFailure(f"Filter failure: MAX_NUM_ALGO_ORDERS. {open_algo_orders} stop orders are open on "
                            f"{symbol.symbol} (limit {f['maxNumAlgoOrders']}); cancel one first.",
                            details={"filter": "MAX_NUM_ALGO_ORDERS"})
