"""The paper venue: our own fill engine against the venue's live (or replayed) market.

Rules (Binance Spot API docs "New order" / "Order types", Binance "Trading fees" FAQ):

- **MARKET** (by ``quantity`` or ``quoteOrderQty``) walks the order book (``trading.market.Book``)
  level by level to an average price, never further than ``settings.PAPER_MAX_SLIPPAGE`` (5 %)
  from the best price; what is left EXPIRES (status EXPIRED with the executed part, as Binance
  reports a market order that ran out of liquidity). By ``quoteOrderQty`` the quantity bought or
  sold at each level is rounded down to the LOT_SIZE/MARKET_LOT_SIZE step. Taker fee.
- **LIMIT** that crosses the book on entry takes liquidity up to its price (taker); the rest
  rests (GTC), expires (IOC), or, for FOK, the whole order expires unless it fills completely.
  **LIMIT_MAKER** that would cross is REJECTED (-2010 "Order would immediately match and take.").
- A resting limit fills (maker fee, at its own price) when a trade prints **through** it (BUY: a
  trade below the price; SELL: above), up to the trade's quantity, or when the best opposite quote
  reaches it (BUY: ask <= price; SELL: bid >= price), up to that quote's size.
- **Stops** (STOP_LOSS, STOP_LOSS_LIMIT, TAKE_PROFIT, TAKE_PROFIT_LIMIT) trigger on the last trade
  price: STOP_LOSS* BUY when last >= stopPrice, SELL when last <= stopPrice; TAKE_PROFIT* the other
  way round. A stop that would trigger at once is REJECTED (-2010 "Stop price would trigger
  immediately."). Triggered, a *_LIMIT becomes a working LIMIT GTC (taker if it crosses), the
  others execute as MARKET orders.
- **OCO** legs share one order list: when a leg fills or triggers, the other EXPIRES.
- Commission = the account's maker/taker rate × what the account receives, in that asset (base on
  a BUY, quote on a SELL), rounded half-up to 8 decimals; quote quantity = price × qty, rounded
  half-up to 8 decimals.
- Balances: accepting an order moves what it may spend from ``free`` to ``locked`` (BUY: price ×
  qty in the quote asset, stopPrice × qty for a stop-market BUY, the walked cost for a MARKET;
  SELL: qty of the base asset); each fill consumes its share of the lock, and the remainder
  returns to ``free`` when the order is done (filled, canceled, expired). Insufficient ``free``
  books a REJECTED order (-2010) and changes no balance.
- Every fill, its balance changes, the position update and the order's new status are written in
  one transaction (the caller's, with the account row locked).
"""
from __future__ import annotations

import logging
from contextlib import nullcontext
from decimal import ROUND_HALF_UP, Decimal

import psycopg
from django.conf import settings
from django.db import connection, transaction
from django.db.models import Q
from django.utils import timezone

from core.events import publish_account_event
from core.signals import fills_observed
from marketdata.models import Symbol
from trading.filters import lot_step, round_step
from trading.market import Book, depth_get
from trading.models import Account, Balance, Fill, Order, OrderList, OrderSide, OrderStatus, OrderType, Position, Venue
from trading.selectors import balance_as_dict, order_as_dict
from trading.venues.base import Execution, MarketView, OrderRequest, VenueBase

log = logging.getLogger(__name__)

EIGHT = Decimal("0.00000001")
ZERO = Decimal("0")
ZERO8 = Decimal("0E-8")  # zero with 8 decimal places, as a DecimalField(decimal_places=8) reads back
INSUFFICIENT = "Account has insufficient balance for requested action."
WOULD_TAKE = "Order would immediately match and take."
WOULD_TRIGGER = "Stop price would trigger immediately."
LIMIT_TYPES = {OrderType.LIMIT, OrderType.LIMIT_MAKER, OrderType.STOP_LOSS_LIMIT, OrderType.TAKE_PROFIT_LIMIT}
STOP_TYPES = {OrderType.STOP_LOSS, OrderType.STOP_LOSS_LIMIT, OrderType.TAKE_PROFIT, OrderType.TAKE_PROFIT_LIMIT}
MARKET_TYPES = {OrderType.MARKET, OrderType.STOP_LOSS, OrderType.TAKE_PROFIT}
OPEN = (OrderStatus.NEW, OrderStatus.PARTIALLY_FILLED)


def q8(value: Decimal) -> Decimal:
    """Round half-up to 8 decimal places."""
    return value.quantize(EIGHT, rounding=ROUND_HALF_UP)


def _balance(account, asset: str) -> Balance:
    """The locked balance row of ``asset`` (an unsaved zero row if the account never held it)."""
    return Balance.objects.select_for_update().filter(account=account, asset=asset).first() or Balance(
        account=account, asset=asset
    )


_assets: dict[str, tuple[str, str]] = {}


def symbol_assets(symbol: str) -> tuple[str, str]:
    """(base asset, quote asset) of a symbol (cached per process)."""
    got = _assets.get(symbol)
    if got is None:
        row = Symbol.objects.only("base_asset", "quote_asset").get(symbol=symbol)
        got = _assets[symbol] = (row.base_asset, row.quote_asset)
    return got


def position_apply_fill(*, account, symbol: str, side: str, price: Decimal, base_delta: Decimal, qty: Decimal,
                        position: Position | None = None) -> Decimal:
    """Update the account's position in ``symbol`` and return the realized P&L (quote asset).

    Average-cost method: a BUY adds ``base_delta`` (base received, net of a base-asset commission)
    at ``price`` to the average entry; a SELL of ``qty`` realizes (price − avg entry) × qty on the
    part covered by the position (fees are accounted separately, see ``risk.services.daily_loss``).
    With ``position`` (a row the caller locked, e.g. ``Ledger.position``) the row is updated in
    memory and the caller saves it; without, the row is locked, updated and saved here.
    """
    pos = position
    if pos is None:
        pos, _ = Position.objects.select_for_update().get_or_create(account=account, symbol=symbol)
    realized = ZERO8
    if side == OrderSide.BUY:
        new_qty = pos.quantity + base_delta
        if new_qty > 0:
            pos.avg_entry_price = q8((pos.quantity * pos.avg_entry_price + base_delta * price) / new_qty)
        pos.quantity = new_qty
    else:
        covered = min(qty, pos.quantity)
        realized = q8((price - pos.avg_entry_price) * covered)
        pos.quantity = pos.quantity - covered
        if pos.quantity == 0:
            pos.avg_entry_price = Decimal("0")
        pos.realized_pnl += realized
    if position is None:
        pos.save()
    return realized


# --- the book walk ---------------------------------------------------------------------------------

def walk(levels, *, buy: bool, qty: Decimal | None = None, quote_qty: Decimal | None = None,
         limit: Decimal | None = None, cap: Decimal | None = None, step: Decimal = EIGHT) -> tuple[list, bool]:
    """Take liquidity from ``levels`` (best first, ``(price, size)``).

    Stops at ``limit`` (a limit order's price), at ``cap`` (the slippage cap), when ``qty`` (base)
    or ``quote_qty`` (quote; quantities rounded down to ``step``) is used up, or at the book's end.
    Returns ``([(price, qty), ...], complete)``; ``complete`` is True when the target was met.
    """
    out = []
    left = qty
    left_quote = quote_qty
    for price, size in levels:
        if limit is not None and (price > limit if buy else price < limit):
            return out, False
        if cap is not None and (price > cap if buy else price < cap):
            return out, False
        if left is not None:
            take = min(size, left)
        else:
            take = min(size, round_step(left_quote / price, step))
        if take <= 0:
            return out, left is None
        out.append((price, take))
        if left is not None:
            left -= take
            if left <= 0:
                return out, True
        else:
            left_quote -= q8(price * take)
            if take < size:
                return out, True
    return out, False


def slippage_cap(best: Decimal, *, buy: bool) -> Decimal:
    """The furthest price a market order may reach: best × (1 ± PAPER_MAX_SLIPPAGE)."""
    slip = Decimal(str(settings.PAPER_MAX_SLIPPAGE))
    return best * (1 + slip) if buy else best * (1 - slip)


def stop_triggered(order_type: str, side: str, stop_price: Decimal, last: Decimal) -> bool:
    """True when a stop of ``order_type``/``side`` triggers at the last trade price ``last``."""
    if order_type in (OrderType.STOP_LOSS, OrderType.STOP_LOSS_LIMIT):
        return last >= stop_price if side == OrderSide.BUY else last <= stop_price
    return last <= stop_price if side == OrderSide.BUY else last >= stop_price


# --- booking ----------------------------------------------------------------------------------------

class Ledger:
    """The balance rows of one account and symbol inside the current transaction (locked once),
    the positions and the fills booked on them, written together by ``save()``.

    Reads: the base and quote balance rows when the ledger is built (one ``select_for_update``
    query), each position row the first time it is asked for. Writes are deferred so one order
    costs few statements: the stored balances in one ``bulk_update``, new rows and the fills each
    in one ``bulk_create`` (after their orders have primary keys), each touched position once.
    """

    def __init__(self, account, base_asset: str, quote_asset: str):
        self.account = account
        self.base_asset, self.quote_asset = base_asset, quote_asset
        self._positions: dict[str, Position] = {}
        self.pending_fills: list[Fill] = []
        # Locked in the order of their assets, as every ledger locks them (no deadlock between two).
        rows = {b.asset: b for b in Balance.objects.select_for_update().filter(account_id=account.pk, asset__in=(base_asset, quote_asset))
                .order_by("asset")}
        self.rows = {a: rows.get(a) or Balance(account=account, asset=a) for a in (base_asset, quote_asset)}
        self._read = {a: (b.free, b.locked) for a, b in rows.items()}  # as stored: save() writes what changed

    def free(self, asset: str) -> Decimal:
        return self.rows[asset].free

    def position(self, symbol: str) -> Position:
        """The account's position row in ``symbol``, locked (an unsaved zero row if none yet)."""
        pos = self._positions.get(symbol)
        if pos is None:
            found = list(Position.objects.select_for_update().filter(account_id=self.account.pk, symbol=symbol).order_by())
            pos = found[0] if found else Position(account=self.account, symbol=symbol)  # at most one: unique per symbol
            self._positions[symbol] = pos
        return pos

    def lock(self, order: Order, asset: str, amount: Decimal) -> None:
        row = self.rows[asset]
        row.free -= amount
        row.locked += amount
        order.locked_asset = asset
        order.locked_amount += amount

    def release(self, order: Order) -> None:
        """Return what ``order`` still locks to free."""
        if order.locked_amount and order.locked_asset:
            row = self.rows[order.locked_asset]
            amount = min(order.locked_amount, row.locked)
            row.locked -= amount
            row.free += amount
        order.locked_amount = ZERO

    def save(self, new_orders: list[Order] = ()) -> list[Fill]:
        """Write balances, positions, ``new_orders`` (unsaved orders, inserted) and the pending
        fills (their orders saved by then) in the caller's transaction and return the fills
        written, with their primary keys. A stored balance row is written only when it changed
        (one ``UPDATE`` each: cheaper to build than ``bulk_update``'s ``CASE`` for the two rows an
        order touches); a stored position with one ``UPDATE``.

        With two or more ``UPDATE``s the statements go in one psycopg pipeline on PostgreSQL
        (``write_pipeline``): the ``UPDATE``s travel with the first ``INSERT``, whose returned id
        is the first answer waited for, and the pipeline's end costs one round trip, so a MARKET
        order's five writes cost three round trips. With one ``UPDATE`` that would save nothing."""
        now = timezone.now()
        updates = []
        for asset, row in self.rows.items():
            if row.pk is not None and (row.free, row.locked) != self._read[asset]:
                row.updated_at = now  # auto_now, as save() would stamp it
                updates.append((Balance, row.pk, {"free": row.free, "locked": row.locked, "updated_at": now}))
                self._read[asset] = (row.free, row.locked)
        for pos in self._positions.values():
            if pos.pk is not None:
                pos.updated_at = now
                updates.append((Position, pos.pk, {"quantity": pos.quantity, "avg_entry_price": pos.avg_entry_price,
                                                   "realized_pnl": pos.realized_pnl, "updated_at": now}))
        with write_pipeline() if len(updates) > 1 else nullcontext():
            for model, pk, values in updates:
                model.objects.filter(pk=pk).update(**values)
            new = [row for row in self.rows.values() if row.pk is None]
            if new:
                Balance.objects.bulk_create(new)
                self._read.update({row.asset: (row.free, row.locked) for row in new})
            for pos in self._positions.values():
                if pos.pk is None:
                    pos.save(force_insert=True)
            for order in new_orders:
                order.save(force_insert=True)
            fills, self.pending_fills = self.pending_fills, []
            if fills:
                Fill.objects.bulk_create(fills)
        return fills


def write_pipeline():
    """A context in which the ORM's writes on the default database are sent in psycopg's
    pipeline mode (PostgreSQL, psycopg ``Connection.pipeline()``; a no-op context elsewhere):
    statements whose results nobody reads at once (``UPDATE``s) are queued and go with the next
    one whose result is read (an ``INSERT``'s returned id). Only for ``QuerySet.update()``,
    ``bulk_create`` and ``save(force_insert=True)``: in the pipeline a statement's row count is
    not known when ``execute`` returns, which ``save()`` of an existing row relies on. Errors of
    a queued statement are raised by the next statement that waits for its result (as Django's
    ``DatabaseError`` subclasses), inside the same transaction."""
    if connection.vendor == "postgresql" and connection.connection is not None and psycopg.Pipeline.is_supported():
        return connection.connection.pipeline()
    return nullcontext()


def apply_fill(ledger: Ledger, order: Order, *, price: Decimal, qty: Decimal, is_maker: bool) -> Fill:
    """Book one execution of ``order``: balances (consuming its lock), position, fill row, and the
    order's executed quantities, in ``ledger`` (the fill is written by ``ledger.save()``). The
    caller sets the status and saves the order, then the ledger."""
    account = ledger.account
    buy = order.side == OrderSide.BUY
    quote_qty = q8(price * qty)
    rate = account.maker_fee_rate if is_maker else account.taker_fee_rate
    base, quote = ledger.rows[ledger.base_asset], ledger.rows[ledger.quote_asset]
    if buy:
        ref = order.price if order.type in LIMIT_TYPES and order.price is not None else price
        reserve = min(q8(max(ref, price) * qty), order.locked_amount)
        quote.locked -= reserve
        order.locked_amount -= reserve
        quote.free += reserve - quote_qty
        commission = q8(qty * rate)
        commission_asset, commission_quote = ledger.base_asset, q8(commission * price)
        base.free += qty - commission
        base_delta = qty - commission
    else:
        take = min(qty, order.locked_amount)
        base.locked -= take
        order.locked_amount -= take
        base.free -= qty - take
        commission = q8(quote_qty * rate)
        commission_asset, commission_quote = ledger.quote_asset, commission
        quote.free += quote_qty - commission
        base_delta = -qty
    order.executed_qty += qty
    order.cummulative_quote_qty += quote_qty
    realized = position_apply_fill(account=account, symbol=order.symbol, side=order.side, price=price,
                                   base_delta=base_delta, qty=qty, position=ledger.position(order.symbol))
    fill = Fill(  # values as the database returns them (8 decimals): the answer is built from this row
        order=order, account=account, symbol=order.symbol, side=order.side, price=q8(price), qty=q8(qty),
        quote_qty=quote_qty, commission=commission, commission_asset=commission_asset,
        commission_quote=commission_quote, is_maker=is_maker, realized_pnl=realized, time=timezone.now(),
    )
    ledger.pending_fills.append(fill)
    return fill


def _settle(ledger: Ledger, order: Order, *, rest_status: str | None) -> None:
    """Set the status after fills: FILLED when complete, else ``rest_status`` (None = keep resting
    as NEW/PARTIALLY_FILLED). A finished order's remaining lock returns to free."""
    if order.executed_qty >= order.quantity and order.quantity > 0:
        order.status = OrderStatus.FILLED
    elif rest_status is not None:
        order.status = rest_status
    else:
        order.status = OrderStatus.PARTIALLY_FILLED if order.executed_qty > 0 else OrderStatus.NEW
    if order.status not in OPEN:
        ledger.release(order)


def _reject(order: Order, reason: str, code: int = -2010, **details) -> Execution:
    order.status = OrderStatus.REJECTED
    order.reject_reason = reason
    order.save()
    return Execution(order=order, rejected=True, reason=reason, code=code, details=details)


def market_walk(*, side: str, quantity: Decimal | None, quote_order_qty: Decimal | None, book,
                step: Decimal = EIGHT) -> tuple[list, bool]:
    """The executions of a MARKET order of ``quantity`` (base asset; or, when it is empty,
    ``quote_order_qty``, quote asset) against ``book``, within the slippage cap: ``walk``'s
    ``([(price, qty), ...], complete)``; ``([], False)`` without a book side."""
    buy = side == OrderSide.BUY
    levels = (book.asks if buy else book.bids) if book is not None else ()
    if not levels:
        return [], False
    qty = None if quote_order_qty is not None and not quantity else quantity
    return walk(levels, buy=buy, qty=qty, quote_qty=quote_order_qty if qty is None else None,
                cap=slippage_cap(levels[0][0], buy=buy), step=step)


def _execute_market(ledger: Ledger, order: Order, book, *, symbol_row=None, step: Decimal | None = None) -> Execution | None:
    """Walk ``book`` for a market(-executing) ``order`` (lock taken here). Returns an Execution when
    the order is rejected for balance, else None (the order is settled: FILLED or EXPIRED)."""
    buy = order.side == OrderSide.BUY
    if step is None:
        step = lot_step(symbol_row, market=True) if symbol_row is not None else EIGHT
    fills, complete = market_walk(side=order.side, quantity=order.remaining_qty if order.quantity else order.quantity,
                                  quote_order_qty=order.quote_order_qty, book=book, step=step)
    need = sum((q8(p * q) for p, q in fills), ZERO) if buy else sum((q for _, q in fills), ZERO)
    asset = ledger.quote_asset if buy else ledger.base_asset
    if need > ledger.free(asset):
        return _reject(order, f"{INSUFFICIENT} Needs {need.normalize():f} {asset}, free {ledger.free(asset).normalize():f} {asset}.",
                       needed=str(need), free=str(ledger.free(asset)), asset=asset)
    if order.quote_order_qty is not None and not order.quantity:
        order.quantity = sum((q for _, q in fills), ZERO)
    ledger.lock(order, asset, need)
    for price, qty in fills:
        apply_fill(ledger, order, price=price, qty=qty, is_maker=False)
    if order.quote_order_qty is not None and complete:
        order.status = OrderStatus.FILLED
        ledger.release(order)
    else:
        _settle(ledger, order, rest_status=OrderStatus.EXPIRED)
    return None


def _take_as_limit(ledger: Ledger, order: Order, book) -> None:
    """A working limit order meets the book: take what crosses (taker), then rest/expire by TIF."""
    buy = order.side == OrderSide.BUY
    tif = order.time_in_force or "GTC"
    fills = []
    if book is not None:
        fills, _ = walk(book.asks if buy else book.bids, buy=buy, qty=order.remaining_qty, limit=order.price)
    if tif == "FOK" and sum((q for _, q in fills), ZERO) < order.remaining_qty:
        order.status = OrderStatus.EXPIRED
        ledger.release(order)
        return
    for price, qty in fills:
        apply_fill(ledger, order, price=price, qty=qty, is_maker=False)
    _settle(ledger, order, rest_status=OrderStatus.EXPIRED if tif in ("IOC", "FOK") else None)


class PaperVenue(VenueBase):
    """Executes paper orders by the rules in the module docstring."""

    def submit(self, *, account, request: OrderRequest, market: MarketView) -> Execution:
        """Book ``request`` (see the module docstring) in the caller's transaction: the order row,
        then its fills, balances and position (``Ledger.save``)."""
        sym = request.symbol
        ledger = Ledger(account, sym.base_asset, sym.quote_asset)
        order = Order(
            account=account, client_order_id=request.client_order_id, symbol=sym.symbol, side=request.side,
            type=request.type, quantity=request.quantity or ZERO, quote_order_qty=request.quote_order_qty,
            price=request.price, stop_price=request.stop_price, time_in_force=request.time_in_force,
            channel=request.channel, order_list_id=request.order_list_id, working_time=timezone.now(),
        )
        result = self._submit(ledger, order, request, market, sym)
        if result is not None:
            return result
        fills = ledger.save(new_orders=[order])
        return Execution(order=order, fills=fills, balances=list(ledger.rows.values()))

    def _submit(self, ledger: Ledger, order: Order, request: OrderRequest, market: MarketView, sym) -> Execution | None:
        buy = order.side == OrderSide.BUY
        quote = market.quote
        typ = order.type
        if typ == OrderType.MARKET:
            return _execute_market(ledger, order, market.book, symbol_row=sym)

        if typ in STOP_TYPES:
            last = market.last_price
            if last is not None and stop_triggered(typ, order.side, order.stop_price, last):
                return _reject(order, WOULD_TRIGGER, lastPrice=format(last, "f"))
            ref = order.price if typ in LIMIT_TYPES else order.stop_price
            need, asset = (q8(ref * order.quantity), ledger.quote_asset) if buy else (order.quantity, ledger.base_asset)
            if request.lock_amount is not None:  # OCO legs share one lock
                need = request.lock_amount
            if need > ledger.free(asset):
                return _reject(order, f"{INSUFFICIENT} Needs {need.normalize():f} {asset}, free {ledger.free(asset).normalize():f} {asset}.",
                               needed=str(need), free=str(ledger.free(asset)), asset=asset)
            order.is_working = False
            order.working_time = None
            ledger.lock(order, asset, need)
            order.status = OrderStatus.NEW
            return None

        # LIMIT / LIMIT_MAKER
        book = market.book
        best_ask = book.best_ask if book is not None else quote.ask_price
        best_bid = book.best_bid if book is not None else quote.bid_price
        crossing = (best_ask is not None and order.price >= best_ask) if buy else (best_bid is not None and order.price <= best_bid)
        if typ == OrderType.LIMIT_MAKER and crossing:
            return _reject(order, WOULD_TAKE)
        need, asset = (q8(order.price * order.quantity), ledger.quote_asset) if buy else (order.quantity, ledger.base_asset)
        if request.lock_amount is not None:
            need = request.lock_amount
        if need > ledger.free(asset):
            return _reject(order, f"{INSUFFICIENT} Needs {need.normalize():f} {asset}, free {ledger.free(asset).normalize():f} {asset}.",
                           needed=str(need), free=str(ledger.free(asset)), asset=asset)
        ledger.lock(order, asset, need)
        _take_as_limit(ledger, order, book if crossing else None)
        return None

    def cancel(self, *, account, order) -> Order:
        """Cancel an open paper order (the caller holds the account lock): CANCELED, lock released.
        Canceling one leg of an OCO cancels the other leg too (Binance behaviour)."""
        base_asset, quote_asset = symbol_assets(order.symbol)
        ledger = Ledger(account, base_asset, quote_asset)
        legs = [order]
        if order.order_list_id is not None:
            legs = list(Order.objects.select_for_update().filter(account=account, order_list_id=order.order_list_id,
                                                                 status__in=OPEN).order_by("id"))
        for leg in legs:
            ledger.release(leg)
            leg.status = OrderStatus.CANCELED
            leg.save()
        if order.order_list_id is not None:
            OrderList.objects.filter(pk=order.order_list_id).update(list_status_type="ALL_DONE", list_order_status="ALL_DONE")
        ledger.save()
        order.refresh_from_db()
        return order


# --- matching resting orders on market events ----------------------------------------------------------

_last_trade_id: dict[str, int] = {}


def _parse_trade(trade: dict | None):
    if not trade:
        return None
    price = trade.get("p", trade.get("price"))
    qty = trade.get("q", trade.get("qty"))
    tid = trade.get("t", trade.get("id"))
    return Decimal(str(price)), Decimal(str(qty)), (int(tid) if tid is not None else None)


def _parse_book(book: dict | None):
    if not book:
        return None
    g = lambda *names: next((book[n] for n in names if n in book), None)  # noqa: E731
    bid, ask = g("b", "bidPrice"), g("a", "askPrice")
    return (Decimal(str(bid)), Decimal(str(g("B", "bidQty") or "0")), Decimal(str(ask)), Decimal(str(g("A", "askQty") or "0")))


def paper_match(symbol: str, *, trade: dict | None = None, book: dict | None = None, depth=None) -> list[dict]:
    """Match the resting paper orders of ``symbol`` against one market event.

    Args:
        symbol: e.g. "BTCUSDT".
        trade: a trade as Binance's ``<symbol>@trade`` event (``{"t": id, "p": price, "q": qty}``)
            or ``GET /api/v3/trades`` item (``{"id", "price", "qty"}``); prices in the quote asset,
            quantities in the base asset. A trade id already seen by this process is skipped.
        book: a best bid/ask as ``<symbol>@bookTicker`` (``{"b", "B", "a", "A"}``) or REST
            ``ticker/bookTicker`` (``{"bidPrice", "bidQty", "askPrice", "askQty"}``).
        depth: optional ``trading.market.Book`` for triggered stops to walk (fetched through
            ``trading.market.depth_get`` when a stop triggers and none is given).

    Each order is matched in its own transaction (account row locked, order re-read and
    re-checked), so a fill and every balance change it causes commit together. Returns the changed
    orders (``order_as_dict`` shapes). Never raises for one order's failure (logged).
    """
    t = _parse_trade(trade)
    b = _parse_book(book)
    if t is not None and t[2] is not None:
        if t[2] <= _last_trade_id.get(symbol, -1):
            t = None
        else:
            _last_trade_id[symbol] = t[2]
    if t is None and b is None:
        return []
    cond = Q()
    limitish = [OrderType.LIMIT, OrderType.LIMIT_MAKER, OrderType.STOP_LOSS_LIMIT, OrderType.TAKE_PROFIT_LIMIT]
    sl = [OrderType.STOP_LOSS, OrderType.STOP_LOSS_LIMIT]
    tp = [OrderType.TAKE_PROFIT, OrderType.TAKE_PROFIT_LIMIT]
    if t is not None:
        p = t[0]
        cond |= Q(is_working=True, type__in=limitish, side=OrderSide.BUY, price__gt=p)
        cond |= Q(is_working=True, type__in=limitish, side=OrderSide.SELL, price__lt=p)
        cond |= Q(is_working=False, type__in=sl, side=OrderSide.BUY, stop_price__lte=p)
        cond |= Q(is_working=False, type__in=sl, side=OrderSide.SELL, stop_price__gte=p)
        cond |= Q(is_working=False, type__in=tp, side=OrderSide.BUY, stop_price__gte=p)
        cond |= Q(is_working=False, type__in=tp, side=OrderSide.SELL, stop_price__lte=p)
    if b is not None:
        bid, _, ask, _ = b
        cond |= Q(is_working=True, type__in=limitish, side=OrderSide.BUY, price__gte=ask)
        cond |= Q(is_working=True, type__in=limitish, side=OrderSide.SELL, price__lte=bid)
    candidates = list(
        Order.objects.filter(cond, symbol=symbol, status__in=OPEN, account__venue=Venue.PAPER)
        .order_by("created_at", "id").values_list("id", "is_working")
    )
    if not candidates:
        return []
    if depth is None and any(not working for _, working in candidates):
        try:
            depth = depth_get(symbol)
        except Exception as exc:  # a stop then executes against the bookTicker only
            log.warning("no depth for %s stops: %s", symbol, exc)
    changed = []
    for order_id, _ in candidates:
        try:
            data = _match_one(order_id, t, b, depth)
        except Exception:
            log.exception("paper match of order %s failed", order_id)
            continue
        if data is not None:
            changed.append(data)
    return changed


def _match_one(order_id: int, t, b, depth) -> dict | None:
    with transaction.atomic():
        account_id = Order.objects.filter(pk=order_id).values_list("account_id", flat=True).first()
        account = Account.objects.select_for_update().get(pk=account_id)
        order = Order.objects.select_for_update().get(pk=order_id)
        if order.status not in OPEN:
            return None
        base_asset, quote_asset = symbol_assets(order.symbol)
        ledger = Ledger(account, base_asset, quote_asset)
        buy = order.side == OrderSide.BUY
        touched = [order]
        if not order.is_working:
            if t is None or not stop_triggered(order.type, order.side, order.stop_price, t[0]):
                return None
            order.is_working = True
            order.working_time = timezone.now()
            touched += _expire_other_legs(ledger, order)
            if order.type in MARKET_TYPES:
                book = depth if depth is not None else _book_from_ticker(order.symbol, b, t)
                ledger.release(order)  # re-locked at the walked cost
                if _execute_market(ledger, order, book) is not None:
                    order.status = OrderStatus.EXPIRED
                    order.reject_reason = INSUFFICIENT
            else:
                book = depth if depth is not None else _book_from_ticker(order.symbol, b, t)
                _take_as_limit(ledger, order, book)
        else:
            avail = ZERO
            if t is not None and (t[0] < order.price if buy else t[0] > order.price):
                avail = t[1]
            if b is not None and (b[2] <= order.price if buy else b[0] >= order.price):
                avail = max(avail, b[3] if buy else b[1])
            qty = min(avail, order.remaining_qty)
            if qty <= 0:
                return None
            apply_fill(ledger, order, price=order.price, qty=qty, is_maker=True)
            _settle(ledger, order, rest_status=None)
            touched += _expire_other_legs(ledger, order)
        for o in touched:
            o.save()
        fills_observed(account.pk, account.venue, ledger.save())  # core.signals: fill metrics and notifications
        data = order_as_dict(order)
        for o in touched:
            publish_account_event(account.pk, "order", order_as_dict(o))
        publish_account_event(account.pk, "balances", {
            "balances": [balance_as_dict(x) for x in Balance.objects.filter(account=account).order_by("asset")]
        })
        return data


def _book_from_ticker(symbol: str, b, t):
    """A one-level book from the bookTicker (or the trade price) when no depth is available."""
    if b is not None:
        return Book(symbol, ((b[0], b[1] or Decimal("1e9")),), ((b[2], b[3] or Decimal("1e9")),), 0, 0.0)
    return Book(symbol, ((t[0], Decimal("1e9")),), ((t[0], Decimal("1e9")),), 0, 0.0)


def _expire_other_legs(ledger: Ledger, order: Order) -> list[Order]:
    """OCO: the other open legs of ``order``'s list EXPIRE; their lock moves to ``order`` when it
    needs one (a triggered stop leg), else returns to free."""
    if order.order_list_id is None:
        return []
    others = list(Order.objects.select_for_update().filter(order_list_id=order.order_list_id, status__in=OPEN)
                  .exclude(pk=order.pk))
    for other in others:
        if other.locked_amount and order.status in OPEN and (not order.locked_asset or order.locked_asset == other.locked_asset):
            order.locked_asset = other.locked_asset
            order.locked_amount += other.locked_amount
            other.locked_amount = ZERO
        else:
            ledger.release(other)
        other.status = OrderStatus.EXPIRED
    OrderList.objects.filter(pk=order.order_list_id).update(list_status_type="ALL_DONE", list_order_status="ALL_DONE")
    return others
