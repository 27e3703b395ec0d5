"""Writes of trading: accounts and orders. Every order goes permissions → validation → risk →
venue → audit, in one transaction with the balance changes it causes.

Order parameters and answers follow Binance Spot API docs "Trading endpoints" (New order, Cancel
order, Cancel all open orders, Cancel an existing order and send a new order, New OCO); errors are
``core.errors`` types carrying Binance's codes; every call writes one ``AuditEvent``.
"""
from __future__ import annotations

import contextvars
import re
import threading
import time
import uuid
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation

from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.db.models import Q

from core.errors import InvalidInput, NotFound, OrderRejected, PermissionDenied, RiskRejected, TradingError
from core.events import publish_account_event, publish_account_events
from marketdata.selectors import quote_get, symbol_get
from risk.audit import audit_event_payload, audit_record
from risk.models import AuditEvent, OrderApproval, Outcome, RiskLimit
from risk.services import RiskDecision, risk_check
from trading import filters
from trading.market import depth_get
from trading.models import Account, Balance, Order, OrderList, OrderSide, OrderStatus, OrderType, Position, Venue
from trading.selectors import balance_as_dict, order_as_dict, orders_matching, order_list_as_dict
from trading.venues import Execution, MarketView, OrderRequest, venue_for
from trading.venues.binance import BinanceVenue
from trading.venues.paper import LIMIT_TYPES, MARKET_TYPES, STOP_TYPES, q8

CLIENT_ORDER_ID_RE = re.compile(r"^[.A-Za-z0-9_:/-]{1,36}$")  # Binance: newClientOrderId, max 36 chars


def account_create(*, owner, name: str, venue: str = Venue.PAPER, quote_asset: str = "USDT",
                   max_order_notional: Decimal | None = None, max_daily_loss: Decimal | None = None) -> Account:
    """Create an account with its (optional) risk limits; a paper account gets the starting
    balances of ``settings.PAPER_STARTING_BALANCES`` (10,000 USDT by default)."""
    with transaction.atomic():
        account = Account.objects.create(owner=owner, name=name, venue=venue, quote_asset=quote_asset)
        RiskLimit.objects.create(account=account, max_order_notional=max_order_notional, max_daily_loss=max_daily_loss)
        if venue == Venue.PAPER:
            for asset, amount in settings.PAPER_STARTING_BALANCES.items():
                Balance.objects.create(account=account, asset=asset, free=Decimal(amount))
    return account


def parse_decimal(value, *, name: str) -> Decimal:
    """Parse a positive, finite decimal given as a string or number (floats via their shortest
    repr, so 0.001 stays 0.001). Raises ``InvalidInput`` naming the argument."""
    if isinstance(value, bool) or value is None:
        raise InvalidInput(f"{name} must be a positive decimal number such as '0.001', got {value!r}.")
    try:
        number = Decimal(str(value).strip())
    except (InvalidOperation, ValueError):
        raise InvalidInput(f"{name} must be a positive decimal number such as '0.001', got {value!r}.") from None
    if not number.is_finite() or number <= 0:
        raise InvalidInput(f"{name} must be a positive, finite decimal number, got {value!r}.")
    if number.adjusted() > 15:
        raise InvalidInput(f"{name} is too large: {value!r}.")
    return number


TIME_IN_FORCE = ("GTC", "IOC", "FOK")
# Binance "New order": mandatory parameters per type (besides symbol, side, type).
REQUIRED = {
    OrderType.LIMIT: ("quantity", "price"),
    OrderType.MARKET: (),
    OrderType.STOP_LOSS: ("quantity", "stop_price"),
    OrderType.STOP_LOSS_LIMIT: ("quantity", "price", "stop_price"),
    OrderType.TAKE_PROFIT: ("quantity", "stop_price"),
    OrderType.TAKE_PROFIT_LIMIT: ("quantity", "price", "stop_price"),
    OrderType.LIMIT_MAKER: ("quantity", "price"),
}
BINANCE_NAME = {"quantity": "quantity", "quote_order_qty": "quoteOrderQty", "price": "price",
                "stop_price": "stopPrice", "time_in_force": "timeInForce"}
UNKNOWN_ORDER = "Unknown order sent."


@dataclass
class PlaceResult:
    """The booked order (``order_as_dict`` shape) and whether it was a replay of an earlier call."""

    order: dict
    duplicate: bool = False


def _publish(account: Account, data: dict, balances: list | None = None, activity: AuditEvent | None = None) -> None:
    """Push the order and the account's balances to its dashboard group (``balances``: the rows the
    venue just wrote, when it knows them; else all of the account's rows are read), and the
    ``activity`` audit row when given (recorded with ``push=False``): one handover after commit."""
    if balances is not None:
        balance_data = {"balances": [balance_as_dict(b) for b in balances], "partial": True}
    else:
        balance_data = {"balances": [balance_as_dict(b) for b in Balance.objects.filter(account=account).order_by("asset")]}
    events = [("order", data), ("balances", balance_data)]
    if activity is not None:
        events.append(("activity", lambda: audit_event_payload(activity)))  # its id is known after commit
    publish_account_events(account.pk, events)


def reference_price(quote) -> Decimal:
    """The price filters and stop checks compare against (quote asset): the last trade price of
    the cached 1m kline, else the bid/ask mid (see ``trading.filters``)."""
    if quote.last_price is not None:
        return quote.last_price
    return (quote.bid_price + quote.ask_price) / 2


def _auditor(*, channel: str, action: str, actor_user, actor_token, account: Account, params: dict, request_id: str,
             t0: float):
    """``audit(outcome, message="", result=None, decision=None, push=True)``: record one
    ``action`` of this call with ``risk.audit.audit_record`` (``push``: see its docstring) and return the ``AuditEvent``; its latency is measured from ``t0``
    (``time.perf_counter()``)."""
    def audit(outcome: str, message: str = "", result: dict | None = None, decision: dict | None = None,
              push: bool = True) -> AuditEvent:
        return audit_record(channel=channel, action=action, outcome=outcome, actor_user=actor_user, actor_token=actor_token,
                            account=account, params=params, message=message, result=result, risk_decision=decision,
                            latency_ms=(time.perf_counter() - t0) * 1000, request_id=request_id, push=push)

    return audit


def order_place(
    *,
    account: Account,
    actor_user,
    channel: str,
    symbol: str,
    side: str,
    quantity=None,
    order_type: str = OrderType.MARKET,
    client_order_id: str | None = None,
    quote_order_qty=None,
    price=None,
    stop_price=None,
    time_in_force: str | None = None,
    actor_token=None,
    request_id: str = "",
    order_list_id: int | None = None,
    lock_amount: Decimal | None = None,
    audit_action: str = "order.place",
) -> PlaceResult:
    """Place an order on ``account`` and return it (Binance "New order (TRADE)").

    Args:
        account: the account to trade (the caller has checked the actor may trade it).
        actor_user / actor_token: who places it (a person, or an agent's token).
        channel: ``risk.models.Channel`` value (mcp, api, dashboard).
        symbol: e.g. "BTCUSDT"; side: "BUY" | "SELL".
        order_type: MARKET | LIMIT | LIMIT_MAKER | STOP_LOSS | STOP_LOSS_LIMIT | TAKE_PROFIT |
            TAKE_PROFIT_LIMIT (Binance ``type``).
        quantity: base asset (str or number). MARKET accepts ``quote_order_qty`` (quote asset)
            instead: spend (BUY) or receive (SELL) that much.
        price: limit price (quote asset) of LIMIT, LIMIT_MAKER and *_LIMIT types.
        stop_price: trigger price (quote asset) of the STOP_LOSS*/TAKE_PROFIT* types.
        time_in_force: GTC (default) | IOC | FOK for LIMIT, STOP_LOSS_LIMIT, TAKE_PROFIT_LIMIT.
        client_order_id: idempotency key (Binance ``newClientOrderId``, ``[.A-Za-z0-9_:/-]{1,36}``);
            placing again with an id already used on this account returns the first order and
            books nothing. Generated when None.

    Returns ``PlaceResult`` with the order in ``order_as_dict`` shape (status NEW, PARTIALLY_FILLED,
    FILLED or EXPIRED; fills with price, qty, commission).

    Raises:
        InvalidInput (-1100/-1102/-1106/-1115/-1116) / UnknownSymbol (-1121) / FilterFailure
            (-1013 "Filter failure: <FILTER>", with ``nearestValid``): bad arguments; nothing booked.
        MarketDataUnavailable (-1003): no fresh quote or order book; nothing is booked.
        RiskRejected (-2010): a risk limit refused it; a REJECTED order is booked, balances unchanged.
        OrderRejected (-2010): insufficient balance, LIMIT_MAKER that would take, stop that would
            trigger immediately; a REJECTED order is booked, balances unchanged.
    Every call, accepted or not, writes one ``AuditEvent`` (action ``order.place``).

    Steps, each a function: validate (``_validate``) → price (``_order_price``) → lock
    (``_order_lock``, in the transaction from here on) → risk (``_order_risk``) → submit
    (``_order_submit``) → book (``_order_book``, or ``_order_book_risk_rejection``) → audit
    (``_order_audit``); the dashboard pushes are handed over after the commit (``_publish``).
    """
    t0 = time.perf_counter()
    params = {
        "account_id": account.pk, "symbol": symbol, "side": side, "type": order_type, "quantity": quantity,
        "quote_order_qty": quote_order_qty, "price": price, "stop_price": stop_price,
        "time_in_force": time_in_force, "client_order_id": client_order_id,
    }
    params = {k: v for k, v in params.items() if v is not None}
    if getattr(actor_token, "confirm_orders", False):  # confirm mode: held for a person (trading.approvals)
        if not approving():
            return order_hold(account=account, actor_user=actor_user, actor_token=actor_token, channel=channel,
                                        params=params, request_id=request_id, order_list_id=order_list_id)

    audit = _auditor(channel=channel, action=audit_action, actor_user=actor_user, actor_token=actor_token,
                     account=account, params=params, request_id=request_id, t0=t0)

    def duplicate_of(existing: Order) -> PlaceResult:
        data = order_as_dict(existing)
        audit(Outcome.OK, f"duplicate clientOrderId {existing.client_order_id}: returned order {existing.pk}", data)
        return PlaceResult(order=data, duplicate=True)

    try:
        request = _validate(symbol=symbol, side=side, quantity=quantity, quote_order_qty=quote_order_qty,
                            order_type=order_type, price=price, stop_price=stop_price, time_in_force=time_in_force,
                            client_order_id=client_order_id, channel=channel, order_list_id=order_list_id,
                            lock_amount=lock_amount)
        try:
            market = _order_price(account, request)
        except TradingError:
            # A retry of an order that was booked answers with that order even if the market has
            # moved or gone stale since (idempotency by clientOrderId comes first).
            if client_order_id:
                existing = Order.objects.filter(account=account, client_order_id=request.client_order_id).first()
                if existing is not None:
                    return duplicate_of(existing)
            raise
    except TradingError as exc:
        audit(Outcome.REJECTED, str(exc), exc.as_dict())
        raise

    booked: Booked | None = None
    try:
        with _write_turn(), transaction.atomic():
            lock = _order_lock(account, request, check_duplicate=bool(client_order_id))
            if lock.duplicate_order_id is not None:
                return duplicate_of(Order.objects.get(pk=lock.duplicate_order_id))
            decision = _order_risk(lock, request, market)
            if decision.allowed:
                execution = _order_submit(lock, request, market)
                booked = _order_book(execution)
            else:
                booked = _order_book_risk_rejection(lock, request, decision)
            event = _order_audit(audit, request, booked, decision)
            _publish(lock.account, booked.order, balances=booked.balances, activity=event)
    except IntegrityError:
        # A concurrent call with the same clientOrderId won the race: answer with its order.
        existing = Order.objects.filter(account=account, client_order_id=request.client_order_id).first()
        if existing is None:
            raise
        return PlaceResult(order=order_as_dict(existing), duplicate=True)
    except TradingError as exc:
        if booked is None or booked.error is None:
            audit(Outcome.REJECTED, str(exc), exc.as_dict())
        raise
    if booked.error is not None:
        raise booked.error
    return PlaceResult(order=booked.order)


_sqlite_writer = threading.Lock()


def _write_turn():
    """The turn of an order's transaction among this process's orders on SQLite: a lock held from
    before its BEGIN IMMEDIATE to after its COMMIT, when no transaction is open yet (a no-op
    context otherwise, and on other databases).

    SQLite admits one writer at a time; a second BEGIN IMMEDIATE waits in SQLite's busy handler,
    which sleeps 1, 2, 5, 10, ... 100 ms between retries, so concurrent orders (the MCP tool
    threads) left the database idle between one commit and the next waiter's wake-up. Queued on
    this lock, the next order starts when the previous one commits. Writers in other processes
    still meet the busy handler (settings: ``timeout``)."""
    if connection.vendor == "sqlite" and transaction.get_autocommit():
        return _sqlite_writer
    return nullcontext()


@dataclass(frozen=True)
class OrderLock:
    """What ``_order_lock`` read with the account row lock, for one order.

    ``account``: the locked ``Account`` row; ``limits``: its ``RiskLimit`` (an unsaved default row
    when it has none); ``duplicate_order_id``: the id of an order already placed on it with the
    request's clientOrderId, else None; ``open_orders`` / ``open_algo_orders``: its open orders,
    and open stop orders, on the request's symbol (Binance MAX_NUM_ORDERS and MAX_NUM_ALGO_ORDERS
    count per symbol, 0 when the symbol has neither filter; the latter only counted for a stop
    request, else 0). The risk check reads the account's protections itself (BUYs only)."""

    account: Account
    limits: RiskLimit
    duplicate_order_id: int | None
    open_orders: int
    open_algo_orders: int


@dataclass(frozen=True)
class Booked:
    """An order as ``order_place`` booked it: the ``order`` (``order_as_dict`` shape), the balance
    rows the venue wrote when it knows them (else None: ``_publish`` reads them), and the
    ``error`` to raise after the commit when the order was booked REJECTED (else None)."""

    order: dict
    balances: list | None = None
    error: TradingError | None = None


def _order_price(account: Account, request: OrderRequest) -> MarketView:
    """Step 2 of ``order_place``: the market the order is checked and priced against: the cached
    quote (``marketdata.selectors.quote_get``; ``settings.MARKET_DATA_MAX_AGE_S``), its reference
    price (``reference_price``), the filters that need it (``_validate_market``) and, for a paper
    order that may execute at once, the order book (``trading.market.depth_get``). Raises
    ``MarketDataUnavailable`` (-1003) or a filter's ``FilterFailure``/``InvalidInput``."""
    quote = quote_get(request.symbol.symbol, max_age_s=settings.MARKET_DATA_MAX_AGE_S)
    ref = reference_price(quote)
    _validate_market(request, ref)
    book = None
    if account.venue == Venue.PAPER and _may_take(request, quote):
        book = depth_get(request.symbol.symbol, min_update_id=quote.update_id)
    return MarketView(quote=quote, book=book, last_price=ref)


def _order_lock(account: Account, request: OrderRequest, *, check_duplicate: bool = True) -> OrderLock:
    """Step 3 of ``order_place`` (and of an exchange OCO): lock ``account``'s row and read what the
    checks need, in two statements:

    1. the lock: ``select_for_update`` of the account table only, with its ``RiskLimit``
       (``select_related``);
    2. once the lock is held, the account's orders that matter (``_order_facts``): an order
       already placed with ``request.client_order_id`` (``check_duplicate``: False when the id
       was generated here, so no earlier order can have it) and its open (and open stop) orders
       on the symbol. A statement of its own, so on PostgreSQL it sees every order committed
       before the lock was granted (a statement's snapshot is taken when it starts, and the lock
       statement may have waited for another order of this account).
    Returns them as an ``OrderLock``.

    The row lock serializes orders of one account, which makes check-then-book atomic (on SQLite,
    whose ``select_for_update`` is a no-op, the write transaction's database lock does: settings
    begin it IMMEDIATE). Raises ``Account.DoesNotExist`` if the account was deleted.
    """
    locked = Account.objects.select_for_update(of=("self",)).select_related("risk_limit").get(pk=account.pk)
    try:
        limits = locked.risk_limit
    except RiskLimit.DoesNotExist:
        limits = RiskLimit(account=locked)
    duplicate_id, open_orders, open_algo_orders = _order_facts(locked.pk, request, check_duplicate=check_duplicate)
    return OrderLock(account=locked, limits=limits, duplicate_order_id=duplicate_id, open_orders=open_orders,
                     open_algo_orders=open_algo_orders)


def _order_facts(account_id: int, request: OrderRequest, *, check_duplicate: bool) -> tuple[int | None, int, int]:
    """(id of the account's order with ``request.client_order_id`` or None, its open orders on
    the request's symbol, of which stop orders: counted only for a stop request, else 0), read
    in one statement: the rows of the account that have that clientOrderId or are open on the
    symbol (at most MAX_NUM_ORDERS of the latter), classified here. No statement when neither is
    wanted (a generated id on a symbol without MAX_NUM_ORDERS / MAX_NUM_ALGO_ORDERS)."""
    symbol = request.symbol.symbol
    count_open = filters.limits_open_orders(request.symbol)
    wanted = Q(symbol=symbol, status__in=Order.OPEN_STATUSES) if count_open else Q()
    if check_duplicate:
        wanted |= Q(client_order_id=request.client_order_id)
    if not wanted:
        return None, 0, 0
    rows = Order.objects.filter(wanted, account_id=account_id).order_by().values_list(
        "pk", "client_order_id", "symbol", "status", "type")
    duplicate_id, open_orders, open_algo_orders = None, 0, 0
    count_algo = request.type in STOP_TYPES
    for pk, client_order_id, row_symbol, status, order_type in rows:
        if check_duplicate and client_order_id == request.client_order_id:
            duplicate_id = pk
        if count_open and row_symbol == symbol and status in Order.OPEN_STATUSES:
            open_orders += 1
            if count_algo and order_type in STOP_TYPES:
                open_algo_orders += 1
    return duplicate_id, open_orders, open_algo_orders


def _order_risk(lock: OrderLock, request: OrderRequest, market: MarketView) -> RiskDecision:
    """Step 4 of ``order_place``: Binance's MAX_NUM_ORDERS / MAX_NUM_ALGO_ORDERS filters (raise
    ``FilterFailure``, nothing booked), then the account's risk limits (``risk.services.risk_check``,
    with what ``_order_lock`` read), valuing the order by ``_risk_terms``. Returns the decision."""
    filters.check_max_num_orders(request.symbol, open_orders=lock.open_orders, open_algo_orders=lock.open_algo_orders,
                                 order_type=request.type)
    risk_price, risk_qty = _risk_terms(request, market.quote)
    return risk_check(account=lock.account, symbol=request.symbol.symbol, side=request.side, quantity=risk_qty,
                      price=risk_price, order_type=request.type, reference_price=market.last_price,
                      limits=lock.limits)


def _order_submit(lock: OrderLock, request: OrderRequest, market: MarketView) -> Execution:
    """Step 5 of ``order_place``: the account's venue books (paper) or sends (exchange) the order
    in the caller's transaction (``trading.venues``)."""
    return venue_for(lock.account).submit(account=lock.account, request=request, market=market)


def _order_book(execution: Execution) -> Booked:
    """Step 6 of ``order_place``: the venue's ``execution`` as ``Booked``: the order's answer, and
    ``OrderRejected`` (-2010 or the venue's code) when the venue refused it."""
    data = order_as_dict(execution.order, fills=execution.fills)
    error = None
    if execution.rejected:
        error = OrderRejected(execution.reason, code=execution.code or None, details={"order": data, **execution.details})
    return Booked(order=data, balances=execution.balances, error=error)


def _order_book_risk_rejection(lock: OrderLock, request: OrderRequest, decision: RiskDecision) -> Booked:
    """Step 6 of ``order_place`` when the risk check refused: a REJECTED order booked (balances
    unchanged) and the ``RiskRejected`` (-2010) to raise, carrying it and the decision."""
    order = Order.objects.create(
        account=lock.account, client_order_id=request.client_order_id, symbol=request.symbol.symbol,
        side=request.side, type=request.type, quantity=request.quantity or Decimal("0"),
        quote_order_qty=request.quote_order_qty, price=request.price, stop_price=request.stop_price,
        time_in_force=request.time_in_force, channel=request.channel, order_list_id=request.order_list_id,
        status=OrderStatus.REJECTED, reject_reason=f"Risk: {decision.reason}",
    )
    data = order_as_dict(order, fills=[])
    error = RiskRejected(f"Order rejected by risk check: {decision.reason}.",
                         details={"order": data, "riskDecision": decision.as_dict()})
    return Booked(order=data, error=error)


def _order_audit(audit, request: OrderRequest, booked: Booked, decision: RiskDecision) -> AuditEvent:
    """Step 7 of ``order_place``: the call's ``AuditEvent`` (``audit``: ``_auditor``'s), written in
    the order's transaction and pushed by the caller with the order (``push=False``)."""
    if booked.error is not None:
        return audit(Outcome.REJECTED, booked.error.msg, booked.error.as_dict(), decision.as_dict(), push=False)
    qty_text = (f"{request.quantity.normalize():f}" if request.quantity
                else f"{request.quote_order_qty.normalize():f} {request.symbol.quote_asset} of")
    return audit(Outcome.OK, f"{request.side} {request.type} {qty_text} {request.symbol.symbol} {booked.order['status']}",
                 booked.order, decision.as_dict(), push=False)


def _may_take(request: OrderRequest, quote) -> bool:
    """True when the order may execute at once (needs the order book): MARKET, or a LIMIT whose
    price reaches the opposite best quote."""
    if request.type == OrderType.MARKET:
        return True
    if request.type == OrderType.LIMIT:
        return request.price >= quote.ask_price if request.side == OrderSide.BUY else request.price <= quote.bid_price
    return False


def _risk_terms(request: OrderRequest, quote) -> tuple[Decimal, Decimal]:
    """(price, quantity) the risk check values the order at (quote asset, base asset)."""
    if request.type in LIMIT_TYPES:
        price = request.price
    elif request.type in STOP_TYPES:
        price = request.stop_price
    else:
        price = quote.ask_price if request.side == OrderSide.BUY else quote.bid_price
    qty = request.quantity if request.quantity else (request.quote_order_qty / price)
    return price, qty


def _parse_optional(value, name: str) -> Decimal | None:
    if value is None or value == "":
        return None
    return parse_decimal(value, name=name)


def _validate(*, symbol, side, quantity, quote_order_qty, order_type, price, stop_price, time_in_force,
              client_order_id, channel, order_list_id=None, lock_amount=None) -> OrderRequest:
    """Static validation (no market data): symbol, side, type, mandatory and unexpected
    parameters, timeInForce, PRICE_FILTER, LOT_SIZE/MARKET_LOT_SIZE, clientOrderId."""
    sym = symbol_get(symbol)
    if not sym.is_trading:
        raise InvalidInput(f"Symbol {sym.symbol} is not trading (status {sym.status}).", code=-1013)
    side_norm = str(side).strip().upper() if isinstance(side, str) else side
    if side_norm not in (OrderSide.BUY, OrderSide.SELL):
        raise InvalidInput(f"side must be 'BUY' or 'SELL', got {side!r}.")
    type_norm = str(order_type).strip().upper() if isinstance(order_type, str) else order_type
    if type_norm not in REQUIRED:
        raise InvalidInput(f"type {order_type!r} is not supported; use one of {', '.join(REQUIRED)}.", code=-1116)
    given = {"quantity": quantity, "quote_order_qty": quote_order_qty, "price": price, "stop_price": stop_price,
             "time_in_force": time_in_force}
    given = {k: v for k, v in given.items() if v is not None and v != ""}
    needed = set(REQUIRED[type_norm])
    allowed = set(needed)
    if type_norm == OrderType.MARKET:
        allowed |= {"quantity", "quote_order_qty"}
        if "quantity" not in given and "quote_order_qty" not in given:
            raise InvalidInput("Mandatory parameter 'quantity' (or 'quoteOrderQty' for a MARKET order) was not sent, "
                               "was empty/null, or malformed.", code=-1102)
        if "quantity" in given and "quote_order_qty" in given:
            raise InvalidInput("Parameter 'quoteOrderQty' sent when not required: send quantity or quote_order_qty, not both.", code=-1106)
    if type_norm in (OrderType.LIMIT, OrderType.STOP_LOSS_LIMIT, OrderType.TAKE_PROFIT_LIMIT):
        allowed.add("time_in_force")
    for name in REQUIRED[type_norm]:
        if name not in given:
            raise InvalidInput(f"Mandatory parameter '{BINANCE_NAME[name]}' was not sent, was empty/null, or malformed "
                               f"({type_norm} needs {', '.join(BINANCE_NAME[n] for n in REQUIRED[type_norm])}).", code=-1102)
    for name in given:
        if name not in allowed:
            raise InvalidInput(f"Parameter '{BINANCE_NAME[name]}' sent when not required (not used by {type_norm}).", code=-1106)
    tif = ""
    if "time_in_force" in allowed:
        tif = str(given.get("time_in_force", "GTC")).strip().upper()
        if tif not in TIME_IN_FORCE:
            raise InvalidInput(f"Invalid timeInForce {time_in_force!r}: use GTC, IOC or FOK.", code=-1115)
    market_like = type_norm in MARKET_TYPES
    qty = _parse_optional(quantity, "quantity")
    if qty is not None:
        qty = filters.check_lot(sym, qty, market=market_like)
    qoq = _parse_optional(quote_order_qty, "quote_order_qty")
    if qoq is not None:
        qoq = qoq.quantize(Decimal("0.00000001"))
        if qoq <= 0:
            raise InvalidInput("quote_order_qty must be at least 0.00000001.")
    px = _parse_optional(price, "price")
    if px is not None:
        px = filters.check_price(sym, px, name="price")
    sp = _parse_optional(stop_price, "stop_price")
    if sp is not None:
        sp = filters.check_price(sym, sp, name="stopPrice")
    if client_order_id is None or client_order_id == "":
        client_order_id = f"tmcp-{uuid.uuid4().hex[:24]}"
    elif not isinstance(client_order_id, str) or not CLIENT_ORDER_ID_RE.match(client_order_id):
        raise InvalidInput(
            f"client_order_id must be 1-36 characters of letters, digits and . _ : / -, got {client_order_id!r}."
        )
    return OrderRequest(symbol=sym, side=side_norm, type=type_norm, quantity=qty, client_order_id=client_order_id,
                        channel=channel, quote_order_qty=qoq, price=px, stop_price=sp, time_in_force=tif,
                        order_list_id=order_list_id, lock_amount=lock_amount)


def _validate_market(request: OrderRequest, ref: Decimal) -> None:
    """Filters that need a reference price: MIN_NOTIONAL/NOTIONAL and PERCENT_PRICE(_BY_SIDE)."""
    sym = request.symbol
    if request.type in LIMIT_TYPES:
        filters.check_percent_price(sym, side=request.side, price=request.price, ref_price=ref)
        filters.check_notional(sym, notional=request.price * request.quantity, price=request.price, qty=request.quantity, market=False)
    elif request.type in STOP_TYPES:
        filters.check_notional(sym, notional=request.stop_price * request.quantity, price=request.stop_price,
                               qty=request.quantity, market=True)
    elif request.quote_order_qty is not None:
        filters.check_notional(sym, notional=request.quote_order_qty, price=ref, qty=None, market=True)
    else:
        filters.check_notional(sym, notional=ref * request.quantity, price=ref, qty=request.quantity, market=True)


# --- Confirm mode: an order of a confirm-mode token is held for a person (decided in trading.approvals)

_approving: contextvars.ContextVar[bool] = contextvars.ContextVar("order_approving", default=False)

# order_place keyword → the key its audit ``params`` use (see trading.services.order_place).
ORDER_KEYS = {"symbol": "symbol", "side": "side", "order_type": "type", "quantity": "quantity",
              "quote_order_qty": "quote_order_qty", "price": "price", "stop_price": "stop_price",
              "time_in_force": "time_in_force", "client_order_id": "client_order_id"}


def approving() -> bool:
    """True while ``order_approve`` places an approved order (the hold is skipped then)."""
    return _approving.get()


@contextmanager
def placing_approved():
    """While ``order_approve`` places an approved order: ``order_place`` skips the hold."""
    token = _approving.set(True)
    try:
        yield
    finally:
        _approving.reset(token)


def approval_as_dict(approval: OrderApproval) -> dict:
    """An approval in the shape of an order answer (Binance names, numbers as strings, ms UTC),
    plus ``approvalId`` and the decision."""
    p = approval.params
    return {
        "accountId": approval.account_id,
        "approvalId": approval.pk,
        "orderId": approval.order_id,
        "clientOrderId": approval.client_order_id,
        "symbol": approval.symbol,
        "side": approval.side,
        "type": p.get("type", "MARKET"),
        "origQty": p.get("quantity"),
        "origQuoteOrderQty": p.get("quote_order_qty"),
        "price": p.get("price"),
        "stopPrice": p.get("stop_price"),
        "timeInForce": p.get("time_in_force"),
        "status": approval.status,
        "requestedBy": approval.token.name if approval.token_id else None,
        "channel": approval.channel,
        "decidedBy": approval.decided_by.get_username() if approval.decided_by_id else None,
        "decisionNote": approval.decision_note or None,
        "time": int(approval.created_at.timestamp() * 1000),
        "decidedTime": int(approval.decided_at.timestamp() * 1000) if approval.decided_at else None,
    }


def order_hold(*, account, actor_user, actor_token, channel: str, params: dict, request_id: str = "",
               order_list_id=None):
    """Hold one order of a confirm-mode token instead of placing it.

    Args:
        account: the account (the caller checked the actor may trade it).
        actor_user / actor_token: the agent's user and ``AgentToken``.
        channel: ``risk.models.Channel`` value; request_id: the call's id for the audit.
        params: ``order_place``'s audit params (``symbol``, ``side``, ``type``, ``quantity``,
            ``quote_order_qty``, ``price``, ``stop_price``, ``time_in_force``, ``client_order_id``;
            absent = not given).
        order_list_id: set for an OCO leg, which confirm mode does not support.

    Returns ``PlaceResult`` whose order has status ``PENDING_APPROVAL`` and an
    ``approvalId`` (``duplicate`` when this clientOrderId was already held or placed).
    Raises what ``order_place`` raises for bad input (InvalidInput, UnknownSymbol, FilterFailure,
    MarketDataUnavailable), nothing held; ``PermissionDenied`` for an OCO leg. Audited as ``order.hold``.
    """
    def audit(outcome, message, result):
        audit_record(channel=channel, action="order.hold", outcome=outcome, actor_user=actor_user, actor_token=actor_token,
                     account=account, params=params, message=message, result=result, request_id=request_id)

    try:
        if order_list_id is not None:
            raise PermissionDenied("This token is in confirm mode: OCO order lists cannot wait for approval; "
                                   "place single orders instead.")
        request = _validate(
            symbol=params.get("symbol"), side=params.get("side"), quantity=params.get("quantity"),
            quote_order_qty=params.get("quote_order_qty"), order_type=params.get("type", "MARKET"),
            price=params.get("price"), stop_price=params.get("stop_price"), time_in_force=params.get("time_in_force"),
            client_order_id=params.get("client_order_id"), channel=channel)
        cid = request.client_order_id
        existing = Order.objects.filter(account=account, client_order_id=cid).first()
        if existing is not None:
            return PlaceResult(order=order_as_dict(existing), duplicate=True)
        held = OrderApproval.objects.filter(account=account, client_order_id=cid).first()
        if held is not None:
            return PlaceResult(order=approval_as_dict(held), duplicate=True)
        quote = quote_get(request.symbol.symbol, max_age_s=settings.MARKET_DATA_MAX_AGE_S)
        _validate_market(request, reference_price(quote))
    except TradingError as exc:
        audit(Outcome.REJECTED, str(exc), exc.as_dict())
        raise
    stored = {k: v for k, v in params.items() if k != "account_id"}
    stored.update({"symbol": request.symbol.symbol, "side": request.side, "type": request.type, "client_order_id": cid})
    with transaction.atomic():
        approval, created = OrderApproval.objects.get_or_create(
            account=account, client_order_id=cid,
            defaults={"requested_by": actor_user, "token": actor_token if getattr(actor_token, "pk", None) else None,
                      "channel": channel, "request_id": request_id, "symbol": request.symbol.symbol,
                      "side": request.side, "params": stored},
        )
        data = approval_as_dict(approval)
        if created:
            audit(Outcome.OK, f"{request.side} {request.type} {request.symbol.symbol} held for approval "
                              f"(approval {approval.pk})", data)
            publish_approval(approval, data)
    return PlaceResult(order=data, duplicate=not created)


def publish_approval(approval: OrderApproval, data: dict) -> None:
    """Push an approval's new state to its account's dashboards (``core.events``)."""
    publish_account_event(approval.account_id, "approval", data)


# --- cancel ------------------------------------------------------------------------------------------

def _find_order(account: Account, *, symbol: str | None, order_id, client_order_id, for_update: bool = False) -> Order:
    if order_id is None and not client_order_id:
        raise InvalidInput("Mandatory parameter 'orderId' or 'origClientOrderId' was not sent, was empty/null, or malformed.", code=-1102)
    qs = orders_matching(account=account, symbol=symbol, order_id=order_id, client_order_id=client_order_id)
    order = (qs.select_for_update() if for_update else qs).first()
    if order is None:
        raise NotFound("Order does not exist.", details={"orderId": order_id, "clientOrderId": client_order_id})
    return order


def order_cancel(*, account: Account, actor_user, channel: str, symbol: str | None = None, order_id=None,
                 client_order_id: str | None = None, actor_token=None, request_id: str = "") -> dict:
    """Cancel one open order (Binance "Cancel order (TRADE)"): status CANCELED, its locked balance
    back to free; canceling an OCO leg cancels the whole list. Identify it by ``order_id`` or
    ``client_order_id`` (optionally with ``symbol``).

    Returns the order (``order_as_dict``). Raises ``NotFound`` (-2013 "Order does not exist.") for
    an unknown id, ``OrderRejected`` (-2011 "Unknown order sent.") for an order no longer open.
    Audited as ``order.cancel``.
    """
    t0 = time.perf_counter()
    params = {k: v for k, v in {"account_id": account.pk, "symbol": symbol, "order_id": order_id,
                                "client_order_id": client_order_id}.items() if v is not None}

    def audit(outcome, message, result):
        audit_record(channel=channel, action="order.cancel", outcome=outcome, actor_user=actor_user, actor_token=actor_token,
                     account=account, params=params, message=message, result=result,
                     latency_ms=(time.perf_counter() - t0) * 1000, request_id=request_id)

    try:
        with transaction.atomic():
            locked = Account.objects.select_for_update().get(pk=account.pk)
            order = _find_order(locked, symbol=symbol, order_id=order_id, client_order_id=client_order_id, for_update=True)
            if not order.is_open:
                raise OrderRejected(f"{UNKNOWN_ORDER} Order {order.pk} is {order.status}, not open.", code=-2011,
                                    details={"orderId": order.pk, "status": order.status})
            order = venue_for(locked).cancel(account=locked, order=order)
            data = order_as_dict(order)
            audit(Outcome.OK, f"canceled order {order.pk} ({order.client_order_id})", data)
            _publish(locked, data)
    except TradingError as exc:
        audit(Outcome.REJECTED, str(exc), exc.as_dict())
        raise
    return data


def order_cancel_all(*, account: Account, actor_user, channel: str, symbol: str, actor_token=None, request_id: str = "") -> list[dict]:
    """Cancel every open order of ``symbol`` (Binance "Cancel all open orders on a symbol").

    Returns the canceled orders (empty list when none was open). Raises ``UnknownSymbol``.
    Audited as ``order.cancel_all`` (one event).
    """
    t0 = time.perf_counter()
    try:
        sym = symbol_get(symbol)
        out = []
        with transaction.atomic():
            locked = Account.objects.select_for_update().get(pk=account.pk)
            venue = venue_for(locked)
            for order in Order.objects.select_for_update().filter(account=locked, symbol=sym.symbol,
                                                                  status__in=Order.OPEN_STATUSES).order_by("id"):
                order.refresh_from_db()
                if order.is_open:
                    out.append(order_as_dict(venue.cancel(account=locked, order=order)))
            audit_record(channel=channel, action="order.cancel_all", outcome=Outcome.OK, actor_user=actor_user,
                         actor_token=actor_token, account=account, params={"account_id": account.pk, "symbol": symbol},
                         message=f"canceled {len(out)} open {sym.symbol} orders", result={"orders": [o["orderId"] for o in out]},
                         latency_ms=(time.perf_counter() - t0) * 1000, request_id=request_id)
            for data in out:
                _publish(locked, data)
    except TradingError as exc:
        audit_record(channel=channel, action="order.cancel_all", outcome=Outcome.REJECTED, actor_user=actor_user,
                     actor_token=actor_token, account=account, params={"account_id": account.pk, "symbol": symbol},
                     message=str(exc), result=exc.as_dict(), request_id=request_id)
        raise
    return out


def order_cancel_replace(*, account: Account, actor_user, channel: str, symbol: str, side: str, order_type: str,
                         cancel_order_id=None, cancel_client_order_id: str | None = None, actor_token=None,
                         request_id: str = "", **new_order) -> dict:
    """Cancel an open order, then place a new one (Binance "Cancel an Existing Order and Send a New
    Order", ``cancelReplaceMode=STOP_ON_FAILURE``): if the cancel fails nothing is placed.

    ``new_order``: ``order_place`` keywords (quantity, quote_order_qty, price, stop_price,
    time_in_force, client_order_id). Returns ``{"cancelResult": "SUCCESS", "newOrderResult":
    "SUCCESS", "cancelResponse": order, "newOrderResponse": order}``. Raises the cancel's error
    unchanged; when the new order fails after the cancel, ``OrderRejected`` (-2021 "Order
    cancel-replace partially failed.") whose details carry the cancel response and the new order's error.
    """
    canceled = order_cancel(account=account, actor_user=actor_user, channel=channel, symbol=symbol, order_id=cancel_order_id,
                            client_order_id=cancel_client_order_id, actor_token=actor_token, request_id=request_id)
    try:
        placed = order_place(account=account, actor_user=actor_user, channel=channel, symbol=symbol, side=side,
                             order_type=order_type, actor_token=actor_token, request_id=request_id, **new_order)
    except TradingError as exc:
        raise OrderRejected(f"Order cancel-replace partially failed: the order was canceled, the new order failed: {exc}",
                            code=-2021, details={"cancelResult": "SUCCESS", "newOrderResult": "FAILURE",
                                                 "cancelResponse": canceled, "newOrderResponse": exc.as_dict()}) from None
    return {"cancelResult": "SUCCESS", "newOrderResult": "SUCCESS", "cancelResponse": canceled, "newOrderResponse": placed.order}


# --- OCO ---------------------------------------------------------------------------------------------

def oco_place(*, account: Account, actor_user, channel: str, symbol: str, side: str, quantity, price, stop_price,
              stop_limit_price=None, stop_limit_time_in_force: str | None = None, list_client_order_id: str | None = None,
              actor_token=None, request_id: str = "") -> dict:
    """Place an OCO order list (Binance "New OCO (TRADE)", ``POST /api/v3/order/oco``): a
    LIMIT_MAKER at ``price`` and a STOP_LOSS (or STOP_LOSS_LIMIT at ``stop_limit_price``) at
    ``stop_price``; when one leg fills or triggers the other EXPIRES. Prices must bracket the
    market: SELL price > last > stopPrice, BUY price < last < stopPrice (else -1013 / -2010).
    One lock backs both legs (the larger of their needs).

    Returns ``{"orderListId", "contingencyType": "OCO", "listStatusType", "listOrderStatus",
    "listClientOrderId", "symbol", "orders": [leg1, leg2]}``. Idempotent by
    ``list_client_order_id``. Raises like ``order_place``.
    """
    if list_client_order_id:
        existing = OrderList.objects.filter(account=account, list_client_order_id=list_client_order_id).first()
        if existing is not None:
            return {**order_list_as_dict(existing), "duplicate": True}
    list_id = list_client_order_id or f"tmcp-list-{uuid.uuid4().hex[:20]}"
    if not CLIENT_ORDER_ID_RE.match(list_id):
        raise InvalidInput(f"list_client_order_id must be 1-36 characters of letters, digits and . _ : / -, got {list_id!r}.")
    side_n = str(side).strip().upper()
    qty = parse_decimal(quantity, name="quantity")
    px = parse_decimal(price, name="price")
    sp = parse_decimal(stop_price, name="stop_price")
    slp = _parse_optional(stop_limit_price, "stop_limit_price")
    if side_n == OrderSide.SELL and not px > sp or side_n == OrderSide.BUY and not px < sp:
        raise InvalidInput("Price relationship is invalid: a SELL OCO needs price > stopPrice, a BUY OCO price < stopPrice.", code=-1013)
    buy = side_n == OrderSide.BUY
    need = max(q8(px * qty), q8((slp or sp) * qty)) if buy else qty
    if account.venue != Venue.PAPER:
        return _oco_place_exchange(account=account, actor_user=actor_user, actor_token=actor_token, channel=channel,
                                   symbol=symbol, side=side_n, qty=qty, px=px, sp=sp, slp=slp, list_id=list_id,
                                   stop_limit_time_in_force=stop_limit_time_in_force, request_id=request_id)
    try:
        with transaction.atomic():
            olist = OrderList.objects.create(account=account, list_client_order_id=list_id, symbol=str(symbol).strip().upper())
            order_place(account=account, actor_user=actor_user, channel=channel, symbol=symbol, side=side_n,
                        order_type=OrderType.LIMIT_MAKER, quantity=qty, price=px, client_order_id=f"{list_id[:30]}-lm",
                        actor_token=actor_token, request_id=request_id, order_list_id=olist.pk, lock_amount=need,
                        audit_action="order.oco")
            stop_kw = ({"order_type": OrderType.STOP_LOSS_LIMIT, "price": slp, "time_in_force": stop_limit_time_in_force or "GTC"}
                       if slp is not None else {"order_type": OrderType.STOP_LOSS})
            order_place(account=account, actor_user=actor_user, channel=channel, symbol=symbol, side=side_n, quantity=qty,
                        stop_price=sp, client_order_id=f"{list_id[:30]}-sl", actor_token=actor_token, request_id=request_id,
                        order_list_id=olist.pk, lock_amount=Decimal("0"), audit_action="order.oco", **stop_kw)
    except TradingError as exc:  # the whole list is rolled back; record the attempt outside it
        audit_record(channel=channel, action="order.oco", outcome=Outcome.REJECTED, actor_user=actor_user,
                     actor_token=actor_token, account=account,
                     params={"symbol": symbol, "side": side, "quantity": quantity, "price": price, "stop_price": stop_price,
                             "stop_limit_price": stop_limit_price, "list_client_order_id": list_client_order_id},
                     message=f"OCO rejected, nothing booked: {exc}", result=exc.as_dict(), request_id=request_id)
        raise
    return order_list_as_dict(olist)


def _oco_place_exchange(*, account: Account, actor_user, actor_token, channel: str, symbol: str, side: str, qty: Decimal,
                        px: Decimal, sp: Decimal, slp: Decimal | None, list_id: str, stop_limit_time_in_force: str | None,
                        request_id: str) -> dict:
    """``oco_place`` on a testnet/live account: both legs validated against the symbol's filters
    and the market, one risk check valuing the list at its larger leg, then one
    ``POST /api/v3/orderList/oco`` (``BinanceVenue.submit_oco``) booked with the account row
    locked. A refusal (ours or the exchange's) books nothing and is audited as ``order.oco``."""
    t0 = time.perf_counter()
    params = {"account_id": account.pk, "symbol": symbol, "side": side, "quantity": str(qty), "price": str(px),
              "stop_price": str(sp), "stop_limit_price": None if slp is None else str(slp), "list_client_order_id": list_id}

    audit = _auditor(channel=channel, action="order.oco", actor_user=actor_user, actor_token=actor_token,
                     account=account, params=params, request_id=request_id, t0=t0)

    try:
        stop_type, stop_tif = (OrderType.STOP_LOSS_LIMIT, stop_limit_time_in_force or "GTC") if slp is not None else (OrderType.STOP_LOSS, None)
        legs = [
            _validate(symbol=symbol, side=side, quantity=qty, quote_order_qty=None, order_type=OrderType.LIMIT_MAKER,
                      price=px, stop_price=None, time_in_force=None, client_order_id=f"{list_id[:30]}-lm", channel=channel),
            _validate(symbol=symbol, side=side, quantity=qty, quote_order_qty=None, order_type=stop_type, price=slp,
                      stop_price=sp, time_in_force=stop_tif, client_order_id=f"{list_id[:30]}-sl", channel=channel),
        ]
        quote = quote_get(legs[0].symbol.symbol, max_age_s=settings.MARKET_DATA_MAX_AGE_S)
        ref = reference_price(quote)
        for leg in legs:
            _validate_market(leg, ref)
        with transaction.atomic():
            lock = _order_lock(account, legs[0])
            locked = lock.account
            filters.check_max_num_orders(legs[0].symbol, open_orders=lock.open_orders + 1, open_algo_orders=0,
                                         order_type=OrderType.LIMIT_MAKER)
            value_at = max(px, slp or sp) if side == OrderSide.BUY else px
            decision = risk_check(account=locked, symbol=legs[0].symbol.symbol, side=side, quantity=qty, price=value_at,
                                  order_type=OrderType.LIMIT_MAKER, reference_price=ref, limits=lock.limits)
            if not decision.allowed:
                raise RiskRejected(f"Order rejected by risk check: {decision.reason}.", details={"riskDecision": decision.as_dict()})
            olist = BinanceVenue().submit_oco(account=locked, list_client_order_id=list_id, legs=legs)
            data = order_list_as_dict(olist)
            audit(Outcome.OK, f"OCO {side} {qty.normalize():f} {olist.symbol} placed on the exchange", data, decision.as_dict())
            for leg in data["orders"]:
                publish_account_event(locked.pk, "order", leg)
    except TradingError as exc:
        audit(Outcome.REJECTED, f"OCO rejected, nothing booked: {exc}", exc.as_dict(),
              exc.details.get("riskDecision") if isinstance(getattr(exc, "details", None), dict) else None)
        raise
    return data


# --- positions ---------------------------------------------------------------------------------------

def position_close(*, account: Account, actor_user, channel: str, symbol: str, client_order_id: str | None = None,
                   actor_token=None, request_id: str = "") -> PlaceResult:
    """Close the account's position in ``symbol``: cancel its open orders (releasing locked base),
    then MARKET SELL the free base quantity rounded down to the LOT_SIZE step.

    Confirm mode (an ``actor_token`` with ``confirm_orders``): the sell is held for a person's
    approval (``trading.approvals``), so nothing else may happen before that approval either: the
    resting orders are NOT canceled (canceling first would leave the position unprotected while
    the sell waits, or for good if the person rejects it). Only the free base quantity is held for
    sale; what open orders lock stays with them. Canceling is never held (it only lowers risk, and
    is audited as ``order.cancel``/``order.cancel_all`` with the token): an agent that wants the
    whole position sold cancels those orders itself, then calls this again.

    Raises ``NotFound`` when there is nothing to sell (naming what open orders lock), and whatever
    ``order_place`` raises (e.g. ``FilterFailure`` MIN_NOTIONAL for dust below 10 USDT).
    """
    sym = symbol_get(symbol)
    confirm_mode = bool(getattr(actor_token, "confirm_orders", False))
    if not confirm_mode:
        order_cancel_all(account=account, actor_user=actor_user, channel=channel, symbol=sym.symbol, actor_token=actor_token,
                         request_id=request_id)
    free, locked = (Balance.objects.filter(account=account, asset=sym.base_asset).values_list("free", "locked").first()
                    or (Decimal("0"), Decimal("0")))
    qty = filters.round_step(free, filters.lot_step(sym, market=True))
    if qty <= 0:
        pos = Position.objects.filter(account=account, symbol=sym.symbol).first()
        hint = (f" {format(locked, 'f')} {sym.base_asset} is locked by open orders, which close_position leaves resting "
                "for a confirm-mode token: cancel them (no approval needed), then close again." if confirm_mode and locked > 0 else "")
        raise NotFound(f"No {sym.base_asset} to sell: the {sym.symbol} position is "
                       f"{'empty' if pos is None else format(pos.quantity, 'f')} and free {sym.base_asset} is {format(free, 'f')}.{hint}")
    return order_place(account=account, actor_user=actor_user, channel=channel, symbol=sym.symbol, side=OrderSide.SELL,
                       quantity=qty, order_type=OrderType.MARKET, client_order_id=client_order_id, actor_token=actor_token,
                       request_id=request_id)


# --- paper deposits and withdrawals ------------------------------------------------------------------

ASSET_RE = re.compile(r"^[A-Z0-9]{1,16}$")  # Binance asset names (exchangeInfo baseAsset/quoteAsset)


def balance_adjust(*, account: Account, asset: str, amount, actor, reason: str, channel: str = "admin") -> dict:
    """Deposit (``amount`` > 0) or withdraw (``amount`` < 0) ``amount`` of ``asset`` on a paper
    account: the only way to change a balance other than a fill. The balance's ``free`` part moves;
    positions (cost basis, P&L) follow trades only and are not touched.

    Args:
        account: a paper ``Account`` (a testnet/live account's balances are the exchange's).
        asset: the asset's Binance name, e.g. ``"USDT"`` (case-insensitive).
        amount: a non-zero decimal in ``asset`` (``Decimal``, ``int`` or a string such as
            ``"-250.5"``; at most 8 decimal places, as balances are stored).
        actor: the person doing it (a ``User``); channel: ``risk.models.Channel`` value.
        reason: why, 1..500 characters; stored in the audit event.

    Returns ``{"accountId", "asset", "amount", "before": {"free", "locked"}, "after": {"free",
    "locked"}}`` (numbers as strings). Raises ``PermissionDenied`` for a non-paper account,
    ``InvalidInput`` for a bad asset, amount or reason, or a withdrawal larger than the free
    balance; nothing is changed then. The change and its ``AuditEvent`` (``balance.adjust``, with
    before/after) are written in one transaction with the account row locked, as fills are.
    """
    asset_n = str(asset or "").strip().upper()
    params = {"account_id": account.pk, "asset": asset_n, "amount": str(amount), "reason": str(reason or "")[:500]}
    try:
        if account.venue != Venue.PAPER:
            raise PermissionDenied(f"Account {account.pk} is a {account.venue} account: only paper balances can be "
                                   "adjusted; a testnet/live balance is the exchange's.")
        if not ASSET_RE.match(asset_n):
            raise InvalidInput(f"asset must be 1-16 letters or digits such as 'USDT', got {asset!r}.")
        if isinstance(amount, (bool, float)) or amount is None:
            raise InvalidInput(f"amount must be a decimal such as '100' or '-25.5' (a string or Decimal), got {amount!r}.")
        try:
            value = Decimal(str(amount).strip())
        except (InvalidOperation, ValueError):
            raise InvalidInput(f"amount must be a decimal such as '100' or '-25.5', got {amount!r}.") from None
        if not value.is_finite() or value == 0 or value.adjusted() > 15:
            raise InvalidInput(f"amount must be a non-zero, finite decimal below 10^16, got {amount!r}.")
        if value != value.quantize(Decimal("1e-8")):
            raise InvalidInput(f"amount has more than 8 decimal places: {amount!r}.")
        reason = str(reason or "").strip()
        if not reason or len(reason) > 500:
            raise InvalidInput("Give a reason of 1 to 500 characters (it is kept in the audit log).")
        with transaction.atomic():
            locked = Account.objects.select_for_update().get(pk=account.pk)
            balance, _ = Balance.objects.select_for_update().get_or_create(account=locked, asset=asset_n)
            before = {"free": format(q8(balance.free), "f"), "locked": format(q8(balance.locked), "f")}
            if balance.free + value < 0:
                raise InvalidInput(f"Cannot withdraw {format(-value, 'f')} {asset_n}: only {format(balance.free, 'f')} "
                                   f"{asset_n} is free (locked amounts back open orders).",
                                   details={"free": before["free"]})
            balance.free = q8(balance.free + value)
            balance.save(update_fields=["free", "updated_at"])
            out = {"accountId": locked.pk, "asset": asset_n, "amount": format(value, "f"), "before": before,
                   "after": {"free": format(balance.free, "f"), "locked": format(q8(balance.locked), "f")}}
            verb = "deposited" if value > 0 else "withdrew"
            audit_record(channel=channel, action="balance.adjust", outcome=Outcome.OK, actor_user=actor, account=locked,
                         params=params, message=f"{verb} {format(abs(value), 'f')} {asset_n} (paper): {reason}", result=out)
            publish_account_event(locked.pk, "balances", {"balances": [balance_as_dict(balance)], "partial": True})
    except TradingError as exc:
        audit_record(channel=channel, action="balance.adjust", outcome=Outcome.REJECTED, actor_user=actor, account=account,
                     params=params, message=str(exc), result=exc.as_dict())
        raise
    return out


# --- Kill switch (risk.models.RiskLimit.trading_state HALTED, open orders canceled) -----------------------------------------------------------------------------------

def account_halt(*, account, actor_user, channel: str, reason: str = "kill switch", cancel_open_orders: bool = True,
                 actor_token=None) -> dict:
    """The kill switch: HALT ``account`` at once (no new order passes ``risk.services.risk_check``) and, by
    default, cancel every open order. Returns ``{"state", "canceled": [order dicts]}``.

    Audited as ``risk.halt`` with the state before and after.
    """
    with transaction.atomic():
        limits, _ = RiskLimit.objects.select_for_update().get_or_create(account=account)
        before = limits.trading_state
        limits.trading_state, limits.halted_reason, limits.halted_until = "HALTED", reason, None
        limits.save(update_fields=["trading_state", "halted_reason", "halted_until", "updated_at"])
        audit_record(channel=channel, action="risk.halt", outcome=Outcome.OK, actor_user=actor_user, actor_token=actor_token,
                     account=account, params={"reason": reason, "cancel_open_orders": cancel_open_orders},
                     result={"before": before, "after": "HALTED"})
    canceled = []
    if cancel_open_orders:
        symbols = Order.objects.filter(account=account, status__in=("NEW", "PARTIALLY_FILLED")).values_list("symbol", flat=True).distinct()
        for symbol in sorted(set(symbols)):
            canceled += order_cancel_all(account=account, actor_user=actor_user, channel=channel, symbol=symbol, actor_token=actor_token)
    return {"state": "HALTED", "canceled": canceled}
