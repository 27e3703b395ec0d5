"""The replay exchange's signed endpoints: API keys, balances, orders, matching, user data streams.

Binance Spot API docs followed: "Endpoint security type" / "SIGNED (TRADE and USER_DATA) endpoint
security" (HMAC-SHA256 ``signature`` over ``totalParams`` = query string + request body, in the
order sent; ``timestamp`` + ``recvWindow`` checked against the server's **wall** clock), "Trading
endpoints" (``POST /api/v3/order``, ``POST /api/v3/order/test``, ``DELETE /api/v3/order``,
``DELETE /api/v3/openOrders``, ``POST /api/v3/orderList/oco``, ``DELETE /api/v3/orderList``),
"Account endpoints" (``GET /api/v3/order``, ``openOrders``,
``allOrders``, ``myTrades``, ``account``), "User Data Streams" (``POST/PUT/DELETE
/api/v3/userDataStream``, ``/ws/<listenKey>`` with ``executionReport`` and
``outboundAccountPosition``). Error bodies are Binance's ``{"code", "msg"}``.

Keys: :data:`DEMO_API_KEY` / :data:`DEMO_API_SECRET` (Binance's documentation example pair) always
exist; more come from ``ReplayServer(accounts={key: secret})``, ``--account KEY:SECRET`` or
``POST /_replay/accounts``. Each key starts with ``starting_balances`` (default 10,000 USDT).

Matching (deterministic, a function of the replayed market and the order flow):

* **MARKET** (``quantity`` or ``quoteOrderQty``) walks ``model.depth(symbol, now, 1000)`` level by
  level (by ``quoteOrderQty`` each level's quantity is rounded down to the LOT_SIZE step and the walk
  stops at the first partly taken level); nothing left over rests: a walk that runs out of book
  EXPIRES with what it took. Taker commission.
* **LIMIT** takes what crosses the book at placement (taker, at the book's prices, up to its price),
  then GTC rests, IOC expires the rest, FOK expires entirely unless it fills completely.
  **LIMIT_MAKER** that would cross is refused (-2010 "Order would immediately match and take.").
* A resting limit fills at its own price (maker) on each later replayed trade printed **through**
  it (BUY: trade price < limit; SELL: trade price > limit), up to the trade's quantity, shared by
  resting orders in price-then-time priority.
* **Stops** (STOP_LOSS[_LIMIT], TAKE_PROFIT[_LIMIT]) trigger on a later replayed trade: STOP_LOSS
  BUY at price >= stopPrice, SELL at <= stopPrice; TAKE_PROFIT the other way. One that would
  trigger at once is refused (-2010 "Stop price would trigger immediately."). Triggered,
  STOP_LOSS/TAKE_PROFIT execute as MARKET against the book of the triggering second; *_LIMIT
  become working LIMIT GTC orders (taking what crosses that book, resting the rest).
  The 2021 recorded ``orderTypes`` predate STOP_LOSS/TAKE_PROFIT on spot; all seven are accepted.
* Locks: placing moves from ``free`` to ``locked`` what the order may spend: BUY limit types
  price x qty, stop-market BUY stopPrice x qty, SELL qty; MARKET orders lock nothing (they execute
  at once; -2010 "Account has insufficient balance for requested action." if the walk costs more
  than ``free``). A BUY fill consumes ``min(max(limit, fill price) x qty, lock)`` of the lock and
  the rest of its cost from ``free``; a SELL fill its quantity. A finished order's leftover lock
  returns to ``free``.
* Commission = rate x what the account receives (base on a BUY, quote on a SELL), rounded half-up
  to 8 decimals, in that asset (rates per key, default 0.1 %). Quote quantity = price x qty.
* ``newClientOrderId`` must be unique among the key's orders unless every earlier order with it is
  FILLED (Binance: "Orders with the same newClientOrderID can be accepted only when the previous
  one is filled"): -2010 "Duplicate order sent.".

Times (``transactTime``, ``time``, trade ``time``, event ``E``/``T``) are **replay** ms, like every
market value; only the signed-request check uses the wall clock. Order ids are global from
:data:`ORDER_ID_START`; trade ids per symbol from :data:`TRADE_ID_START`.

Everything runs on the server's event loop (handlers and the matcher tick), so no locks are needed.
"""
from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import logging
import re
import secrets
import string
from dataclasses import dataclass, field
from decimal import ROUND_DOWN, ROUND_HALF_UP, Decimal, InvalidOperation
from urllib.parse import parse_qsl, unquote_plus

from aiohttp import web
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import load_pem_public_key

from .errors import BinanceError, illegal_chars, mandatory_missing
from .params import Params, Reply, json_response, read_json_body

log = logging.getLogger(__name__)

#: Binance's documentation example key pair ("SIGNED Endpoint Examples for POST /api/v3/order").
DEMO_API_KEY = "vmPUZE6mv9SD5VNHk4HlWFsOr6aKE2zvsw0MuIgwCIPy6utIco14y7Ju91duEh8A"
DEMO_API_SECRET = "NhqPtmdSJYdKjVHjA7PZj4Mge3R5YNiP1e3UZjInClVN65XAbvqqM6A7H5fATj0j"
DEFAULT_BALANCES = {"USDT": "10000"}
ORDER_ID_START = 7_000_000_001
TRADE_ID_START = 900_000_001
LISTEN_KEY_TTL_MS = 60 * 60 * 1000
MAX_RECV_WINDOW = 60_000

E8 = Decimal("0.00000001")
ZERO = Decimal("0")
DECIMAL_RANGE = r"^([0-9]{1,20})(\.[0-9]{1,20})?$"
_DEC_RE = re.compile(DECIMAL_RANGE)
_KEY_RE = re.compile(r"^[A-Za-z0-9]{1,128}$")
_CID_RE = re.compile(r"^[.A-Z:/a-z0-9_-]{1,36}$")

OPEN = ("NEW", "PARTIALLY_FILLED")
TYPES = ("LIMIT", "MARKET", "STOP_LOSS", "STOP_LOSS_LIMIT", "TAKE_PROFIT", "TAKE_PROFIT_LIMIT", "LIMIT_MAKER")
LIMIT_TYPES = ("LIMIT", "LIMIT_MAKER", "STOP_LOSS_LIMIT", "TAKE_PROFIT_LIMIT")
STOP_TYPES = ("STOP_LOSS", "STOP_LOSS_LIMIT", "TAKE_PROFIT", "TAKE_PROFIT_LIMIT")
MARKET_TYPES = ("MARKET", "STOP_LOSS", "TAKE_PROFIT")
# Binance "New order": mandatory parameters per type (besides symbol, side, type).
REQUIRED = {
    "LIMIT": ("timeInForce", "quantity", "price"),
    "MARKET": (),
    "STOP_LOSS": ("quantity", "stopPrice"),
    "STOP_LOSS_LIMIT": ("timeInForce", "quantity", "price", "stopPrice"),
    "TAKE_PROFIT": ("quantity", "stopPrice"),
    "TAKE_PROFIT_LIMIT": ("timeInForce", "quantity", "price", "stopPrice"),
    "LIMIT_MAKER": ("quantity", "price"),
}

# Binance error texts ("Error codes for Binance").
INSUFFICIENT = (-2010, "Account has insufficient balance for requested action.")
WOULD_TAKE = (-2010, "Order would immediately match and take.")
WOULD_TRIGGER = (-2010, "Stop price would trigger immediately.")
DUPLICATE = (-2010, "Duplicate order sent.")
UNKNOWN_ORDER = (-2011, "Unknown order sent.")
NO_SUCH_ORDER = (-2013, "Order does not exist.")
OUTSIDE_WINDOW = (-1021, "Timestamp for this request is outside of the recvWindow.")
AHEAD = (-1021, "Timestamp for this request was 1000ms ahead of the server's time.")
BAD_SIGNATURE = (-1022, "Signature for this request is not valid.")
KEY_FORMAT = (-2014, "API-key format invalid.")
KEY_INVALID = (-2015, "Invalid API-key, IP, or permissions for action.")
TOO_MANY_ORDERS = -1015
ORDER_PLACING = ("order.place", "orderList.place.oco")
PEM_PUBLIC = "-----BEGIN PUBLIC KEY-----"
BAD_RECV_WINDOW = (-1131, "recvWindow must be less than 60000")
BAD_TYPE = (-1116, "Invalid orderType.")
BAD_SIDE = (-1117, "Invalid side.")
BAD_TIF = (-1115, "Invalid timeInForce.")
BAD_RESP_TYPE = (-1100, "Illegal characters found in parameter 'newOrderRespType'; legal range is 'ACK, RESULT, FULL'.")
QTY_OR_QUOTE = (-1102, "Param 'quantity' or 'quoteOrderQty' must be sent, but both were empty/null!")


def _e(pair, status: int = 400) -> BinanceError:
    return BinanceError(pair[0], pair[1], status)


def signature_valid(acct: "RAccount", sig: str, payloads) -> bool:
    """True if ``sig`` signs one of ``payloads`` with ``acct``'s key: Ed25519 (RFC 8032, base64,
    case-sensitive) when the account holds an Ed25519 public key, else HMAC-SHA256 of its secret
    (hex, case-insensitive). Binance "SIGNED request example (HMAC)" / "(Ed25519)"."""
    if acct.public_key is not None:
        try:
            raw = base64.b64decode(sig, validate=True)
        except (binascii.Error, ValueError):
            return False
        for payload in payloads:
            try:
                acct.public_key.verify(raw, payload.encode())
                return True
            except InvalidSignature:
                continue
        return False
    want = sig.lower()
    return any(hmac.compare_digest(hmac.new(acct.secret.encode(), c.encode(), hashlib.sha256).hexdigest(), want)
               for c in payloads)


def q8(d: Decimal) -> Decimal:
    """Round half-up to 8 decimals."""
    return d.quantize(E8, rounding=ROUND_HALF_UP)


def f8(d: Decimal) -> str:
    """Binance's number text: 8 decimals, plain notation (``"7195.24000000"``)."""
    return format(d.quantize(E8, rounding=ROUND_HALF_UP), "f")


def floor_step(value: Decimal, step: Decimal) -> Decimal:
    """``value`` rounded down to a multiple of ``step`` (unchanged when step is 0)."""
    if step <= 0:
        return value
    return (value / step).quantize(Decimal("1"), rounding=ROUND_DOWN) * step


# ------------------------------------------------------------------------------------------------
# state
# ------------------------------------------------------------------------------------------------
@dataclass(eq=False)
class ROrder:
    """One order on the replay exchange (Binance "Query order" fields, Decimals inside).

    ``since_index``: the global trade index at placement (or trigger); only later replayed trades
    can fill or trigger it. ``locked``: what it still locks of ``locked_asset``.
    """

    order_id: int
    symbol: str
    client_order_id: str
    side: str
    type: str
    time_in_force: str
    orig_qty: Decimal
    price: Decimal
    stop_price: Decimal
    orig_quote_qty: Decimal
    time: int
    since_index: int
    status: str = "NEW"
    executed: Decimal = ZERO
    cum_quote: Decimal = ZERO
    update_time: int = 0
    working: bool = True
    working_time: int = -1
    locked: Decimal = ZERO
    locked_asset: str = ""
    order_list_id: int = -1

    @property
    def remaining(self) -> Decimal:
        return self.orig_qty - self.executed

    @property
    def is_open(self) -> bool:
        return self.status in OPEN

    def as_query(self) -> dict:
        """``GET /api/v3/order`` shape."""
        return {
            "symbol": self.symbol, "orderId": self.order_id, "orderListId": self.order_list_id,
            "clientOrderId": self.client_order_id,
            "price": f8(self.price), "origQty": f8(self.orig_qty), "executedQty": f8(self.executed),
            "cummulativeQuoteQty": f8(self.cum_quote), "status": self.status, "timeInForce": self.time_in_force,
            "type": self.type, "side": self.side, "stopPrice": f8(self.stop_price), "icebergQty": f8(ZERO),
            "time": self.time, "updateTime": self.update_time, "isWorking": self.working,
            "workingTime": self.working_time, "origQuoteOrderQty": f8(self.orig_quote_qty),
            "selfTradePreventionMode": "EXPIRE_MAKER",
        }


@dataclass(eq=False)
class RTrade:
    """One fill of an account (Binance "Account trade list" item)."""

    id: int
    symbol: str
    order_id: int
    price: Decimal
    qty: Decimal
    quote_qty: Decimal
    commission: Decimal
    commission_asset: str
    time: int
    is_buyer: bool
    is_maker: bool
    order_list_id: int = -1

    def as_rest(self) -> dict:
        return {
            "symbol": self.symbol, "id": self.id, "orderId": self.order_id, "orderListId": self.order_list_id,
            "price": f8(self.price), "qty": f8(self.qty), "quoteQty": f8(self.quote_qty),
            "commission": f8(self.commission), "commissionAsset": self.commission_asset, "time": self.time,
            "isBuyer": self.is_buyer, "isMaker": self.is_maker, "isBestMatch": True,
        }


@dataclass(eq=False)
class RList:
    """One OCO order list (Binance "Query Order list" fields)."""

    order_list_id: int
    symbol: str
    list_client_order_id: str
    legs: list  # [ROrder, ROrder]: the above and the below order, in placement order
    time: int
    status_type: str = "EXEC_STARTED"  # -> ALL_DONE
    order_status: str = "EXECUTING"  # -> ALL_DONE

    def as_rest(self) -> dict:
        return {
            "orderListId": self.order_list_id, "contingencyType": "OCO", "listStatusType": self.status_type,
            "listOrderStatus": self.order_status, "listClientOrderId": self.list_client_order_id,
            "transactionTime": self.time, "symbol": self.symbol,
            "orders": [{"symbol": o.symbol, "orderId": o.order_id, "clientOrderId": o.client_order_id} for o in self.legs],
        }


@dataclass(eq=False)
class RAccount:
    """The state of one API key: balances ``{asset: [free, locked]}``, orders, trades, user-data
    subscribers, order-rate counters. ``secret`` is the HMAC secret, or the PEM public key of an
    Ed25519 key (then ``public_key`` is set)."""

    api_key: str
    secret: str
    maker_rate: Decimal
    taker_rate: Decimal
    balances: dict[str, list[Decimal]] = field(default_factory=dict)
    orders: dict[int, ROrder] = field(default_factory=dict)
    order_lists: dict[int, RList] = field(default_factory=dict)
    trades: dict[str, list[RTrade]] = field(default_factory=dict)
    update_time: int = 0
    public_key: object | None = None  # an Ed25519 key's public half (``cryptography``); None for HMAC
    subscribers: set = field(default_factory=set)  # WebSocket API user-data subscriptions (``deliver(event)``)
    order_counts: dict = field(default_factory=dict)  # (interval, intervalNum) -> (window start ms, count)
    outbox: list[dict] = field(default_factory=list)
    touched: set = field(default_factory=set)

    def bal(self, asset: str) -> list[Decimal]:
        return self.balances.setdefault(asset, [ZERO, ZERO])


def _base_quote(entry: dict) -> tuple[str, str]:
    return entry["baseAsset"], entry["quoteAsset"]


def _filters(entry: dict) -> dict[str, dict]:
    return {f["filterType"]: f for f in entry.get("filters", [])}


# ------------------------------------------------------------------------------------------------
# the exchange
# ------------------------------------------------------------------------------------------------
class ReplayAccounts:
    """Signed endpoints, matching and user data streams of a :class:`~.server.ReplayApp`.

    Args:
        app: the ``ReplayApp`` (its ``clock``, ``model`` and recorded exchangeInfo entries).
        keys: ``{api_key: secret}`` besides the demo pair.
        starting_balances: ``{asset: amount}`` each key starts with (default 10,000 USDT).
        maker_rate / taker_rate: commission fractions (default 0.001).
    """

    def __init__(self, app, keys: dict[str, str] | None = None, *, starting_balances: dict | None = None,
                 maker_rate: str | Decimal = "0.001", taker_rate: str | Decimal = "0.001"):
        self.app = app
        self.clock = app.clock
        self.model = app.model
        self.entries = app.entries
        self.starting_balances = {a: Decimal(str(v)) for a, v in (starting_balances or DEFAULT_BALANCES).items()}
        self.maker_rate = Decimal(str(maker_rate))
        self.taker_rate = Decimal(str(taker_rate))
        self.accounts: dict[str, RAccount] = {}
        self.next_order_id = ORDER_ID_START
        self.next_list_id = 1
        self.next_trade_id: dict[str, int] = {}
        self.cursor: dict[str, int] = {}
        self._tick_task: asyncio.Task | None = None
        self.add_key(DEMO_API_KEY, DEMO_API_SECRET)
        for k, s in (keys or {}).items():
            self.add_key(k, s)

    # -- keys -------------------------------------------------------------------------------------
    def add_key(self, api_key: str, secret: str, balances: dict | None = None) -> RAccount:
        """Create (or return) the account of ``api_key`` with ``balances`` (default the starting ones).

        ``secret``: an HMAC-SHA256 secret, or an Ed25519 **public** key in PEM
        (``-----BEGIN PUBLIC KEY-----``; Binance "API Key types": the exchange only ever holds the
        public half). Raises ``ValueError`` for a PEM that is not an Ed25519 public key."""
        if api_key in self.accounts:
            return self.accounts[api_key]
        acct = RAccount(api_key, secret, self.maker_rate, self.taker_rate)
        if secret.lstrip().startswith(PEM_PUBLIC):
            try:
                key = load_pem_public_key(secret.strip().encode())
            except (ValueError, TypeError) as e:
                raise ValueError(f"not a PEM public key: {e}") from None
            if not isinstance(key, Ed25519PublicKey):
                raise ValueError("only Ed25519 public keys are accepted besides HMAC secrets")
            acct.public_key = key
        for asset, amount in (balances if balances is not None else self.starting_balances).items():
            acct.bal(asset)[0] = Decimal(str(amount))
        self.accounts[api_key] = acct
        return acct

    def account(self, api_key: str) -> RAccount:
        """The state of ``api_key`` (KeyError if unknown); for tests and the control API."""
        return self.accounts[api_key]

    # -- registration -----------------------------------------------------------------------------
    def operations(self) -> dict[str, tuple]:
        """The signed operations: name -> ``(handler(acct, params), allowed parameter names)``.
        Shared by the REST routes (:meth:`register`) and the WebSocket API (``wsapi.py``)."""
        return {
            "order.place": (self.h_new_order, self._NEW_PARAMS),
            "order.test": (self.h_test_order, (*self._NEW_PARAMS, "computeCommissionRates")),
            "order.cancel": (self.h_cancel_order, ("symbol", "orderId", "origClientOrderId", "newClientOrderId",
                                                   "cancelRestrictions")),
            "order.status": (self.h_query_order, ("symbol", "orderId", "origClientOrderId")),
            "openOrders.status": (self.h_open_orders, ("symbol",)),
            "openOrders.cancelAll": (self.h_cancel_open_orders, ("symbol",)),
            "orderList.place.oco": (self.h_new_oco, self._OCO_PARAMS),
            "orderList.cancel": (self.h_cancel_list, ("symbol", "orderListId", "listClientOrderId", "newClientOrderId")),
            "orderList.status": (self.h_query_list, ("orderListId", "origClientOrderId")),
            "openOrderLists.status": (self.h_open_lists, ()),
            "allOrders": (self.h_all_orders, ("symbol", "orderId", "startTime", "endTime", "limit")),
            "myTrades": (self.h_my_trades, ("symbol", "orderId", "startTime", "endTime", "fromId", "limit")),
            "account.status": (self.h_account, ("omitZeroBalances",)),
            "account.commission": (self.h_commission, ("symbol",)),
            "account.rateLimits.orders": (self.h_rate_limit_order, ()),
        }

    def register(self, routes: dict) -> None:
        """Add the signed endpoints to ``ReplayApp.rest_routes`` (Binance weights). The listenKey
        endpoints answer HTTP 410 (removed from Binance spot on 2026-02-20, spot API changelog
        2026-01-21)."""
        w = lambda n: (lambda q: n)  # noqa: E731
        ops = self.operations()
        rest = {
            ("POST", "/api/v3/order"): (w(1), "order.place"),
            ("POST", "/api/v3/order/test"): (lambda q: 20 if q.get("computeCommissionRates") == "true" else 1, "order.test"),
            ("DELETE", "/api/v3/order"): (w(1), "order.cancel"),
            ("DELETE", "/api/v3/openOrders"): (w(1), "openOrders.cancelAll"),
            ("POST", "/api/v3/orderList/oco"): (w(1), "orderList.place.oco"),
            ("DELETE", "/api/v3/orderList"): (w(1), "orderList.cancel"),
            ("GET", "/api/v3/orderList"): (w(4), "orderList.status"),
            ("GET", "/api/v3/openOrderList"): (w(6), "openOrderLists.status"),
            ("GET", "/api/v3/order"): (w(4), "order.status"),
            ("GET", "/api/v3/openOrders"): (lambda q: 6 if "symbol" in q else 80, "openOrders.status"),
            ("GET", "/api/v3/allOrders"): (w(20), "allOrders"),
            ("GET", "/api/v3/myTrades"): (w(20), "myTrades"),
            ("GET", "/api/v3/account"): (w(20), "account.status"),
            ("GET", "/api/v3/account/commission"): (w(20), "account.commission"),
            ("GET", "/api/v3/rateLimit/order"): (w(40), "account.rateLimits.orders"),
        }
        for route, (weight, name) in rest.items():
            handler, allowed = ops[name]
            routes[route] = (weight, self._rest(handler, allowed, counted=name in ORDER_PLACING))
        for method in ("POST", "PUT", "DELETE"):
            routes[(method, "/api/v3/userDataStream")] = (w(2), self.h_listen_key_gone)

    def _rest(self, handler, allowed: tuple[str, ...], *, counted: bool = False):
        """A REST handler: authenticate the request (:meth:`_auth`), then ``handler(acct, params)``;
        ``counted``: the answer carries the ``X-MBX-ORDER-COUNT-*`` headers."""
        async def rest_handler(request: web.Request):
            acct, p = await self._auth(request, allowed)
            body = await handler(acct, p)
            return Reply(body, self.order_count_headers(acct)) if counted else body

        return rest_handler

    async def h_listen_key_gone(self, request):
        """``POST/PUT/DELETE /api/v3/userDataStream``: HTTP 410 Gone. Binance removed the spot
        listenKey endpoints on 2026-02-20; user data comes through the WebSocket API
        (``userDataStream.subscribe.signature`` / ``session.logon`` + ``userDataStream.subscribe``)."""
        raise BinanceError(-1000, "This endpoint has been removed. Subscribe to the User Data Stream through the "
                                  "WebSocket API (userDataStream.subscribe.signature).", 410)

    def install(self, app: web.Application) -> None:
        """Control routes and the matcher tick on the aiohttp application."""
        app.router.add_post("/_replay/accounts", self.c_add_account)
        app.router.add_get("/_replay/accounts/{api_key}", self.c_get_account)
        app.router.add_post("/_replay/accounts/{api_key}/balance", self.c_balance_update)
        app.router.add_post("/_replay/accounts/{api_key}/terminate", self.c_terminate)
        app.on_startup.append(self._start_tick)
        app.on_cleanup.append(self._stop_tick)

    async def _start_tick(self, app) -> None:
        self._tick_task = asyncio.create_task(self._tick_loop())

    async def _stop_tick(self, app) -> None:
        if self._tick_task is not None:
            self._tick_task.cancel()
            await asyncio.gather(self._tick_task, return_exceptions=True)
        for acct in self.accounts.values():
            acct.subscribers.clear()

    async def _tick_loop(self) -> None:
        """Every tick: match resting orders against the trades printed since, push user events."""
        while True:
            await asyncio.sleep(self.app.tick_ms / 1000)
            try:
                self.advance()
                await self.flush()
            except asyncio.CancelledError:
                raise
            except Exception:  # a bug must not stop matching for good
                log.exception("replay matcher tick failed")

    # -- control API ------------------------------------------------------------------------------
    async def c_add_account(self, request):
        """``POST /_replay/accounts`` ``{"apiKey"?, "secretKey"? | "ed25519PublicKey"?, "balances"?:
        {asset: amount}}`` -> ``{"apiKey", "secretKey", "balances"}`` (random 64-character key/secret
        when absent; ``ed25519PublicKey``: a PEM public key, the account then verifies Ed25519
        signatures)."""
        body = await read_json_body(request)
        alnum = string.ascii_letters + string.digits
        key = body.get("apiKey") or "".join(secrets.choice(alnum) for _ in range(64))
        secret = body.get("ed25519PublicKey") or body.get("secretKey") or "".join(
            secrets.choice(alnum) for _ in range(64))
        try:
            acct = self.add_key(str(key), str(secret), body.get("balances"))
        except (InvalidOperation, TypeError, ValueError) as e:
            return json_response({"error": str(e)}, 400)
        return json_response({"apiKey": acct.api_key, "secretKey": acct.secret, "balances": self._balances(acct)})

    async def c_get_account(self, request):
        """``GET /_replay/accounts/<apiKey>``: balances, orders and trades (no secret)."""
        acct = self.accounts.get(request.match_info["api_key"])
        if acct is None:
            return json_response({"error": "unknown apiKey"}, 404)
        self.advance()
        return json_response({
            "apiKey": acct.api_key, "balances": self._balances(acct),
            "orders": [o.as_query() for o in acct.orders.values()],
            "trades": [t.as_rest() for ts in acct.trades.values() for t in ts],
        })

    async def c_balance_update(self, request):
        """``POST /_replay/accounts/<apiKey>/balance`` ``{"asset", "delta"}``: a deposit (delta > 0)
        or withdrawal (< 0) of free balance, reported as Binance does (``balanceUpdate`` then
        ``outboundAccountPosition``, Binance "User Data Streams" -> "Balance Update")."""
        acct = self.accounts.get(request.match_info["api_key"])
        if acct is None:
            return json_response({"error": "unknown apiKey"}, 404)
        body = await read_json_body(request)
        try:
            asset, delta = str(body["asset"]), Decimal(str(body["delta"]))
        except (KeyError, InvalidOperation) as e:
            return json_response({"error": f"asset and a decimal delta are required ({e})"}, 400)
        if acct.bal(asset)[0] + delta < 0:
            return json_response({"error": "the withdrawal exceeds the free balance"}, 400)
        now = self.clock.now_ms()
        acct.bal(asset)[0] += delta
        acct.touched.add(asset)
        acct.outbox.append({"e": "balanceUpdate", "E": now, "a": asset, "d": f8(delta), "T": now})
        self._position_event(acct, now)
        await self.flush()
        return json_response({"apiKey": acct.api_key, "balances": self._balances(acct)})

    async def c_terminate(self, request):
        """``POST /_replay/accounts/<apiKey>/terminate``: end every user-data subscription of the key
        with ``eventStreamTerminated`` (as Binance does when a subscription ends on its side) ->
        ``{"terminated": n}``."""
        acct = self.accounts.get(request.match_info["api_key"])
        if acct is None:
            return json_response({"error": "unknown apiKey"}, 404)
        subs = list(acct.subscribers)
        for sub in subs:
            await sub.terminate()
        return json_response({"terminated": len(subs)})

    # -- request authentication -------------------------------------------------------------------
    async def _auth(self, request: web.Request, allowed: tuple[str, ...], *, signed: bool = True):
        """API key (``X-MBX-APIKEY``), then for SIGNED endpoints ``timestamp``/``recvWindow`` and
        the ``signature`` (:meth:`authenticate`) over ``totalParams`` (query string + body).
        Returns ``(account, params)``."""
        raw_query = request.rel_url.raw_query_string
        raw_body = (await request.text()) if request.can_read_body else ""
        pairs = parse_qsl(raw_query, keep_blank_values=True) + parse_qsl(raw_body, keep_blank_values=True)
        params = Params.from_pairs(pairs, (*allowed, "timestamp", "recvWindow", "signature"))
        strip = lambda raw: "&".join(p for p in raw.split("&") if p and not p.startswith("signature="))  # noqa: E731
        total = strip(raw_query) + strip(raw_body)
        acct = self.authenticate(request.headers.get("X-MBX-APIKEY", ""), params, {total, unquote_plus(total)},
                                 signed=signed)
        return acct, params

    def account_of_key(self, key: str) -> RAccount:
        """The account of API key ``key``: -2014 when missing/malformed, -2015 when unknown (HTTP 401)."""
        acct = self.accounts.get(key)
        if acct is None:
            raise _e(KEY_FORMAT if not key or not _KEY_RE.match(key) else KEY_INVALID, 401)
        return acct

    def authenticate(self, key: str, params: Params, payloads: set[str], *, signed: bool = True) -> RAccount:
        """Binance "SIGNED (TRADE and USER_DATA) endpoint security" / WebSocket API "Request
        security": the API key, then ``timestamp``/``recvWindow`` against the **wall** clock, then
        ``signature`` over one of ``payloads``: HMAC-SHA256 (hex, case-insensitive) for an HMAC key,
        Ed25519 (base64, RFC 8032) for an Ed25519 key. Raises ``BinanceError``: -2014 key
        missing/malformed, -2015 unknown key (HTTP 401), -1102 missing timestamp or signature, -1131
        recvWindow > 60000, -1021 timestamp outside recvWindow or > 1 s ahead, -1022 bad signature."""
        acct = self.account_of_key(key)
        if not signed:
            return acct
        self.check_timestamp(params)
        sig = params.str("signature", required=True)
        if not signature_valid(acct, sig, payloads):
            raise _e(BAD_SIGNATURE)
        return acct

    def check_timestamp(self, params: Params) -> None:
        """``timestamp`` (ms, or µs when > 1e14) within ``recvWindow`` (default 5000, max 60000) of
        the wall clock and less than 1 s ahead of it: -1102 / -1131 / -1021."""
        ts = params.int("timestamp", required=True)
        if ts > 10**14:  # microseconds (Binance accepts both)
            ts //= 1000
        window = params.int("recvWindow", 5000)
        if window > MAX_RECV_WINDOW:
            raise _e(BAD_RECV_WINDOW)
        server = self.clock.wall_ms()
        if ts >= server + 1000:
            raise _e(AHEAD)
        if server - ts > window:
            raise _e(OUTSIDE_WINDOW)

    # -- parameter helpers ------------------------------------------------------------------------
    def _symbol(self, p, required: bool = True) -> str | None:
        return p.symbol(self.model.has_symbol, required=required)

    @staticmethod
    def _dec(p, name: str) -> Decimal | None:
        v = p.str(name)
        if v is None:
            return None
        if not _DEC_RE.match(v):
            raise illegal_chars(name, DECIMAL_RANGE)
        return Decimal(v)

    def _find(self, acct: RAccount, p, symbol: str, *, orig_name: str = "origClientOrderId") -> ROrder:
        oid = p.int("orderId")
        cid = p.str(orig_name)
        if oid is None and cid is None:
            raise BinanceError(-1102, "Param 'origClientOrderId' or 'orderId' must be sent, but both were empty/null!")
        order = None
        if oid is not None:
            order = acct.orders.get(oid)
            if order is not None and (order.symbol != symbol or (cid is not None and order.client_order_id != cid)):
                order = None
        else:
            for o in reversed(list(acct.orders.values())):
                if o.symbol == symbol and o.client_order_id == cid:
                    order = o
                    break
        return order

    # -- balances and events ----------------------------------------------------------------------
    def _balances(self, acct: RAccount, omit_zero: bool = False) -> list[dict]:
        return [{"asset": a, "free": f8(f), "locked": f8(lk)} for a, (f, lk) in sorted(acct.balances.items())
                if not omit_zero or f or lk]

    def _report(self, acct: RAccount, o: ROrder, x: str, now: int, *, trade: RTrade | None = None,
                orig_cid: str = "", cid: str | None = None) -> None:
        """Queue an ``executionReport`` (Binance "User Data Streams" -> "Order Update")."""
        acct.outbox.append({
            "e": "executionReport", "E": now, "s": o.symbol, "c": cid or o.client_order_id, "S": o.side, "o": o.type,
            "f": o.time_in_force, "q": f8(o.orig_qty), "p": f8(o.price), "P": f8(o.stop_price), "F": f8(ZERO),
            "g": o.order_list_id, "C": orig_cid, "x": x, "X": o.status, "r": "NONE", "i": o.order_id,
            "l": f8(trade.qty if trade else ZERO), "z": f8(o.executed), "L": f8(trade.price if trade else ZERO),
            "n": f8(trade.commission if trade else ZERO), "N": trade.commission_asset if trade else None,
            "T": trade.time if trade else now, "t": trade.id if trade else -1, "v": -1, "I": 0, "w": o.working,
            "m": trade.is_maker if trade else False, "M": False, "O": o.time, "Z": f8(o.cum_quote),
            "Y": f8(trade.quote_qty if trade else ZERO), "Q": f8(o.orig_quote_qty), "W": o.working_time,
            "V": "EXPIRE_MAKER",
        })

    def _position_event(self, acct: RAccount, now: int) -> None:
        """Queue an ``outboundAccountPosition`` with the assets changed since the last one."""
        if not acct.touched:
            return
        acct.update_time = now
        acct.outbox.append({
            "e": "outboundAccountPosition", "E": now, "u": now,
            "B": [{"a": a, "f": f8(acct.bal(a)[0]), "l": f8(acct.bal(a)[1])} for a in sorted(acct.touched)],
        })
        acct.touched.clear()

    async def flush(self) -> None:
        """Send queued user-data events to the account's WebSocket API subscriptions, in order
        (events of an account with no subscription are dropped, as on Binance)."""
        for acct in self.accounts.values():
            if not acct.outbox:
                continue
            events, acct.outbox = acct.outbox, []
            for sub in list(acct.subscribers):
                try:
                    for ev in events:
                        await sub.deliver(ev)
                except (ConnectionError, RuntimeError):
                    acct.subscribers.discard(sub)

    # -- locks and fills --------------------------------------------------------------------------
    def _lock(self, acct: RAccount, o: ROrder, asset: str, amount: Decimal) -> None:
        b = acct.bal(asset)
        b[0] -= amount
        b[1] += amount
        o.locked += amount
        o.locked_asset = asset
        acct.touched.add(asset)

    def _release(self, acct: RAccount, o: ROrder) -> None:
        if o.locked and o.locked_asset:
            b = acct.bal(o.locked_asset)
            amount = min(o.locked, b[1])
            b[1] -= amount
            b[0] += amount
            acct.touched.add(o.locked_asset)
        o.locked = ZERO

    def _fill(self, acct: RAccount, o: ROrder, price: Decimal, qty: Decimal, *, maker: bool, now: int) -> RTrade:
        base, quote = _base_quote(self.entries[o.symbol])
        quote_qty = q8(price * qty)
        rate = acct.maker_rate if maker else acct.taker_rate
        bb, qb = acct.bal(base), acct.bal(quote)
        if o.side == "BUY":
            ref = o.price if o.type in LIMIT_TYPES else price
            reserve = min(q8(max(ref, price) * qty), o.locked)
            qb[1] -= reserve
            o.locked -= reserve
            qb[0] += reserve - quote_qty
            commission, commission_asset = q8(qty * rate), base
            bb[0] += qty - commission
        else:
            take = min(qty, o.locked)
            bb[1] -= take
            o.locked -= take
            bb[0] -= qty - take
            commission, commission_asset = q8(quote_qty * rate), quote
            qb[0] += quote_qty - commission
        acct.touched.update((base, quote))
        o.executed += qty
        o.cum_quote += quote_qty
        o.update_time = now
        tid = self.next_trade_id.get(o.symbol, TRADE_ID_START)
        self.next_trade_id[o.symbol] = tid + 1
        tr = RTrade(tid, o.symbol, o.order_id, price, qty, quote_qty, commission, commission_asset, now,
                    o.side == "BUY", maker, o.order_list_id)
        acct.trades.setdefault(o.symbol, []).append(tr)
        o.status = "FILLED" if o.executed >= o.orig_qty else "PARTIALLY_FILLED"
        self._report(acct, o, "TRADE", now, trade=tr)
        return tr

    def _finish(self, acct: RAccount, o: ROrder, status: str, now: int, x: str | None = None) -> None:
        """Set a final status, release the leftover lock and report it."""
        o.status = status
        o.update_time = now
        self._release(acct, o)
        self._report(acct, o, x or status, now)

    @staticmethod
    def _walk(levels, *, buy: bool, qty: Decimal | None = None, quote: Decimal | None = None,
              limit: Decimal | None = None, step: Decimal = E8) -> list[tuple[Decimal, Decimal]]:
        """Take ``qty`` (base) or ``quote`` (quote asset) from ``levels`` (best first), never past
        ``limit``. By quote, each level's quantity is rounded down to ``step`` and the walk stops at
        the first level not taken whole."""
        out = []
        left, left_q = qty, quote
        for price, size in levels:
            if limit is not None and (price > limit if buy else price < limit):
                break
            take = min(size, left) if left is not None else min(size, floor_step(left_q / price, step))
            if take <= 0:
                break
            out.append((price, take))
            if left is not None:
                left -= take
                if left <= 0:
                    break
            else:
                left_q -= q8(price * take)
                if take < size:
                    break
        return out

    def _book(self, symbol: str, at_ms: int):
        """The book (asks, bids) at replay time ``at_ms`` (what ``GET /api/v3/depth`` shows then;
        for a replayed trade, the book of the second it printed in)."""
        d = self.model.depth(symbol, at_ms, 1000)
        return d.asks, d.bids

    def _step(self, symbol: str) -> Decimal:
        return Decimal(_filters(self.entries[symbol]).get("LOT_SIZE", {}).get("stepSize", "0.00000001"))

    def _market(self, acct: RAccount, o: ROrder, index: int, now: int, *, check_only: bool = False):
        """Execute ``o`` as a market order against the book at trade index ``index``. Returns the
        walk (``check_only``) or the trades; raises -2010 insufficient balance before any change."""
        asks, bids = self._book(o.symbol, now)
        buy = o.side == "BUY"
        by_quote = o.orig_quote_qty > 0 and o.orig_qty == 0
        walk = self._walk(asks if buy else bids, buy=buy, qty=None if by_quote else o.remaining,
                          quote=o.orig_quote_qty if by_quote else None, step=self._step(o.symbol))
        base, quote = _base_quote(self.entries[o.symbol])
        asset = quote if buy else base
        need = sum((q8(p * q) for p, q in walk), ZERO) if buy else sum((q for _, q in walk), ZERO)
        have = acct.bal(asset)[0] + (o.locked if o.locked_asset == asset else ZERO)
        if need > have:
            raise _e(INSUFFICIENT)
        if check_only:
            return walk
        if by_quote:
            o.orig_qty = sum((q for _, q in walk), ZERO)
        return [self._fill(acct, o, p, q, maker=False, now=now) for p, q in walk]

    # -- matching on replayed trades --------------------------------------------------------------
    def advance(self) -> None:
        """Match every open order against the replayed trades printed since the last call."""
        now = self.clock.now_ms()
        by_symbol: dict[str, list[tuple[RAccount, ROrder]]] = {}
        for acct in self.accounts.values():
            for o in acct.orders.values():
                if o.is_open:
                    by_symbol.setdefault(o.symbol, []).append((acct, o))
        for symbol in self.model.symbols:
            try:
                g_now = self.model.trade_index(symbol, now)
            except Exception:  # before T0
                continue
            g0 = self.cursor.get(symbol, g_now)
            self.cursor[symbol] = g_now
            orders = by_symbol.get(symbol)
            if not orders or g_now <= g0:
                continue
            for k in range(g0 + 1, g_now + 1):
                self._on_trade(symbol, k, orders)
                orders = [(a, o) for a, o in orders if o.is_open]
                if not orders:
                    break
        for acct in self.accounts.values():
            self._position_event(acct, now)

    def _on_trade(self, symbol: str, k: int, orders: list[tuple[RAccount, ROrder]]) -> None:
        tr = self.model.trade_at_index(symbol, k)
        t, price = tr.time, tr.price
        for acct, o in orders:  # stops first (they may turn into working limits for this book)
            if o.working or o.since_index >= k or not o.is_open:
                continue
            sl = o.type in ("STOP_LOSS", "STOP_LOSS_LIMIT")
            up = o.side == "BUY" if sl else o.side == "SELL"
            if not (price >= o.stop_price if up else price <= o.stop_price):
                continue
            o.working, o.working_time, o.since_index, o.update_time = True, t, k, t
            self._list_activate(acct, o, t)
            if o.type in MARKET_TYPES:
                try:
                    self._market(acct, o, k, t)
                except BinanceError:
                    self._finish(acct, o, "EXPIRED", t)
                    continue
                if o.is_open:
                    self._finish(acct, o, "EXPIRED", t)
                else:
                    self._release(acct, o)
            else:
                asks, bids = self._book(symbol, t)
                buy = o.side == "BUY"
                for p, q in self._walk(asks if buy else bids, buy=buy, qty=o.remaining, limit=o.price):
                    self._fill(acct, o, p, q, maker=False, now=t)
                if not o.is_open:
                    self._release(acct, o)
                elif o.executed == 0:
                    self._report(acct, o, "NEW", t)
            self._position_event(acct, t)
        for side in ("BUY", "SELL"):
            left = tr.qty
            resting = [(a, o) for a, o in orders if o.side == side and o.working and o.is_open and o.since_index < k
                       and o.type in LIMIT_TYPES and (price < o.price if side == "BUY" else price > o.price)]
            resting.sort(key=lambda ao: (-ao[1].price if side == "BUY" else ao[1].price, ao[1].order_id))
            for acct, o in resting:
                if left <= 0:
                    break
                qty = min(left, o.remaining)
                left -= qty
                self._list_activate(acct, o, t)
                self._fill(acct, o, o.price, qty, maker=True, now=t)
                if not o.is_open:
                    self._release(acct, o)
                self._position_event(acct, t)

    # -- validation --------------------------------------------------------------------------------
    def _check_filters(self, symbol: str, *, qty: Decimal | None, price: Decimal | None, stop: Decimal | None,
                       quote_qty: Decimal | None, market: bool, last: Decimal) -> None:
        """PRICE_FILTER, LOT_SIZE, MIN_NOTIONAL/NOTIONAL (Binance "Filters"): -1013."""
        fs = _filters(self.entries[symbol])
        pf = fs.get("PRICE_FILTER")
        for value in (price, stop):
            if value is None or pf is None:
                continue
            lo, hi, tick = (Decimal(pf[k]) for k in ("minPrice", "maxPrice", "tickSize"))
            if (lo and value < lo) or (hi and value > hi) or (tick and (value - lo) % tick):
                raise BinanceError(-1013, "Filter failure: PRICE_FILTER")
        if qty is not None:
            for name in ("LOT_SIZE", "MARKET_LOT_SIZE") if market else ("LOT_SIZE",):
                lf = fs.get(name)
                if lf is None:
                    continue
                lo, hi, step = (Decimal(lf[k]) for k in ("minQty", "maxQty", "stepSize"))
                if qty < lo or (hi and qty > hi) or (step and (qty - lo) % step):
                    raise BinanceError(-1013, f"Filter failure: {name}")
        nf = fs.get("NOTIONAL") or fs.get("MIN_NOTIONAL")
        if nf is not None:
            applies = nf.get("applyToMarket", nf.get("applyMinToMarket", True)) or not market
            ref = price if price is not None and not market else (stop if stop is not None else last)
            notional = quote_qty if quote_qty is not None else (ref * qty if qty is not None else None)
            if applies and notional is not None and notional < Decimal(nf["minNotional"]):
                raise BinanceError(-1013, f"Filter failure: {nf['filterType']}")

    def _parse_new(self, p) -> dict:
        """Parameters of ``POST /api/v3/order`` (Binance "New order"), validated."""
        symbol = self._symbol(p)
        side = p.str("side", required=True)
        typ = p.str("type", required=True)
        if side not in ("BUY", "SELL"):
            raise _e(BAD_SIDE)
        if typ not in TYPES:
            raise _e(BAD_TYPE)
        tif = p.str("timeInForce")
        qty = self._dec(p, "quantity")
        quote_qty = self._dec(p, "quoteOrderQty")
        price = self._dec(p, "price")
        stop = self._dec(p, "stopPrice")
        cid = p.str("newClientOrderId")
        resp = p.str("newOrderRespType")
        for name in ("icebergQty", "strategyId", "strategyType", "trailingDelta", "selfTradePreventionMode"):
            p.str(name)
        p.done()
        given = {"timeInForce": tif, "quantity": qty, "price": price, "stopPrice": stop, "quoteOrderQty": quote_qty}
        for name in REQUIRED[typ]:
            if given[name] is None:
                raise mandatory_missing(name)
        if typ == "MARKET":
            if qty is None and quote_qty is None:
                raise _e(QTY_OR_QUOTE)
            if qty is not None and quote_qty is not None:
                raise BinanceError(-1106, "Parameter 'quoteOrderQty' sent when not required.")
        allowed = set(REQUIRED[typ]) | ({"quantity", "quoteOrderQty"} if typ == "MARKET" else set())
        for name, value in given.items():
            if value is not None and name not in allowed:
                raise BinanceError(-1106, f"Parameter '{name}' sent when not required.")
        if tif is not None and tif not in ("GTC", "IOC", "FOK"):
            raise _e(BAD_TIF)
        if resp is not None and resp not in ("ACK", "RESULT", "FULL"):
            raise _e(BAD_RESP_TYPE)
        if cid is not None and not _CID_RE.match(cid):
            raise illegal_chars("newClientOrderId", "^[\\.A-Z\\:/a-z0-9_-]{1,36}$")
        for name, value in (("quantity", qty), ("price", price), ("stopPrice", stop), ("quoteOrderQty", quote_qty)):
            if value is not None and value <= 0:
                raise BinanceError(-1013, f"Invalid {name}." if name != "quantity" else "Invalid quantity.")
        return {"symbol": symbol, "side": side, "type": typ, "tif": tif or "", "qty": qty, "quote_qty": quote_qty,
                "price": price, "stop": stop, "cid": cid, "resp": resp or ("FULL" if typ in ("MARKET", "LIMIT") else "ACK")}

    # -- orders -----------------------------------------------------------------------------------
    def _new_order(self, acct: RAccount, a: dict, *, test: bool = False, list_id: int = -1) -> tuple[ROrder | None, list[RTrade]]:
        """Validate, place and match a new order (see the module docstring). ``test``: validate only;
        ``list_id``: the OCO list the order is a leg of."""
        self.advance()
        now = self.clock.now_ms()
        symbol, side, typ = a["symbol"], a["side"], a["type"]
        g = self.model.trade_index(symbol, now)
        last = self.model.trade_at_index(symbol, g).price
        self._check_filters(symbol, qty=a["qty"], price=a["price"], stop=a["stop"], quote_qty=a["quote_qty"],
                            market=typ in MARKET_TYPES, last=last)
        opens = [o for o in acct.orders.values() if o.symbol == symbol and o.is_open]
        mx = _filters(self.entries[symbol]).get("MAX_NUM_ORDERS")
        if mx is not None and len(opens) >= int(mx["maxNumOrders"]):
            raise BinanceError(-1013, "Filter failure: MAX_NUM_ORDERS")
        cid = a["cid"] or ("web_" + secrets.token_hex(11))
        if any(o.client_order_id == cid and o.status != "FILLED" for o in acct.orders.values()):
            raise _e(DUPLICATE)
        base, quote = _base_quote(self.entries[symbol])
        buy = side == "BUY"
        o = ROrder(order_id=self.next_order_id, symbol=symbol, client_order_id=cid, side=side, type=typ,
                   time_in_force=a["tif"] or ("GTC" if typ in MARKET_TYPES or typ == "LIMIT_MAKER" else ""),
                   orig_qty=a["qty"] or ZERO, price=a["price"] or ZERO, stop_price=a["stop"] or ZERO,
                   orig_quote_qty=a["quote_qty"] or ZERO, time=now, since_index=g, update_time=now,
                   working_time=now, order_list_id=list_id)
        asks, bids = self._book(symbol, now)
        if typ in STOP_TYPES:
            sl = typ in ("STOP_LOSS", "STOP_LOSS_LIMIT")
            up = buy if sl else not buy
            if (last >= o.stop_price) if up else (last <= o.stop_price):
                raise _e(WOULD_TRIGGER)
        crossing = typ in ("LIMIT", "LIMIT_MAKER") and bool(asks if buy else bids) and (
            o.price >= asks[0][0] if buy else o.price <= bids[0][0])
        if typ == "LIMIT_MAKER" and crossing:
            raise _e(WOULD_TAKE)
        if typ == "MARKET":
            walk = self._market(acct, o, g, now, check_only=True)
            if test:
                return None, []
            self.next_order_id += 1
            acct.orders[o.order_id] = o
            self._report(acct, o, "NEW", now)
            trades = self._market(acct, o, g, now)
            if o.is_open or not walk:
                self._finish(acct, o, "EXPIRED", now)
            self._position_event(acct, now)
            return o, trades
        if typ in LIMIT_TYPES:
            need, asset = (q8(o.price * o.orig_qty), quote) if buy else (o.orig_qty, base)
        else:
            need, asset = (q8(o.stop_price * o.orig_qty), quote) if buy else (o.orig_qty, base)
        if need > acct.bal(asset)[0]:
            raise _e(INSUFFICIENT)
        if test:
            return None, []
        self.next_order_id += 1
        acct.orders[o.order_id] = o
        self._lock(acct, o, asset, need)
        trades: list[RTrade] = []
        if typ in STOP_TYPES:
            o.working, o.working_time = False, -1
            self._report(acct, o, "NEW", now)
        else:
            walk = self._walk(asks if buy else bids, buy=buy, qty=o.orig_qty, limit=o.price) if crossing else []
            if o.time_in_force == "FOK" and sum((q for _, q in walk), ZERO) < o.orig_qty:
                self._report(acct, o, "NEW", now)
                self._finish(acct, o, "EXPIRED", now)
            else:
                self._report(acct, o, "NEW", now)
                trades = [self._fill(acct, o, p, q, maker=False, now=now) for p, q in walk]
                if o.is_open and o.time_in_force == "IOC":
                    self._finish(acct, o, "EXPIRED", now)
                elif not o.is_open:
                    self._release(acct, o)
        self._position_event(acct, now)
        return o, trades

    @staticmethod
    def _new_response(o: ROrder, trades: list[RTrade], resp: str) -> dict:
        """``POST /api/v3/order`` answer for ``newOrderRespType`` ACK | RESULT | FULL."""
        ack = {"symbol": o.symbol, "orderId": o.order_id, "orderListId": o.order_list_id,
               "clientOrderId": o.client_order_id, "transactTime": o.time}
        if resp == "ACK":
            return ack
        out = {**ack, "price": f8(o.price), "origQty": f8(o.orig_qty), "executedQty": f8(o.executed),
               "origQuoteOrderQty": f8(o.orig_quote_qty), "cummulativeQuoteQty": f8(o.cum_quote), "status": o.status,
               "timeInForce": o.time_in_force, "type": o.type, "side": o.side, "workingTime": o.working_time,
               "selfTradePreventionMode": "EXPIRE_MAKER"}
        if o.type in STOP_TYPES:
            out["stopPrice"] = f8(o.stop_price)
        if resp == "FULL":
            out["fills"] = [{"price": f8(t.price), "qty": f8(t.qty), "commission": f8(t.commission),
                             "commissionAsset": t.commission_asset, "tradeId": t.id} for t in trades]
        return out

    def _cancel(self, acct: RAccount, o: ROrder, now: int, new_cid: str | None) -> dict:
        cancel_cid = new_cid or ("cancel_" + secrets.token_hex(8))
        o.status = "CANCELED"
        o.update_time = now
        self._release(acct, o)
        self._report(acct, o, "CANCELED", now, orig_cid=o.client_order_id, cid=cancel_cid)
        return {"symbol": o.symbol, "origClientOrderId": o.client_order_id, "orderId": o.order_id,
                "orderListId": o.order_list_id,
                "clientOrderId": cancel_cid, "transactTime": now, "price": f8(o.price), "origQty": f8(o.orig_qty),
                "executedQty": f8(o.executed), "origQuoteOrderQty": f8(o.orig_quote_qty),
                "cummulativeQuoteQty": f8(o.cum_quote), "status": o.status, "timeInForce": o.time_in_force,
                "type": o.type, "side": o.side, "stopPrice": f8(o.stop_price), "selfTradePreventionMode": "EXPIRE_MAKER"}

    # -- OCO order lists (Binance "New Order list - OCO", "Cancel Order list", "Query Order list") --------
    ABOVE_TYPES = ("STOP_LOSS_LIMIT", "STOP_LOSS", "LIMIT_MAKER", "TAKE_PROFIT", "TAKE_PROFIT_LIMIT")
    # A BUY OCO's LIMIT_MAKER is the below leg ("LIMIT_MAKER price (below) < Last Traded Price < stopPrice (above)").
    BELOW_TYPES = ("STOP_LOSS", "STOP_LOSS_LIMIT", "TAKE_PROFIT", "TAKE_PROFIT_LIMIT", "LIMIT_MAKER")
    _OCO_PARAMS = ("symbol", "listClientOrderId", "side", "quantity", "newOrderRespType", "selfTradePreventionMode",
                   *(f"{leg}{name}" for leg in ("above", "below") for name in (
                       "Type", "ClientOrderId", "IcebergQty", "Price", "StopPrice", "TrailingDelta", "TimeInForce",
                       "StrategyId", "StrategyType")))

    def _list_status(self, acct: RAccount, lst: RList, now: int) -> None:
        """Queue a ``listStatus`` event (Binance "User Data Streams" -> "Order list update")."""
        acct.outbox.append({
            "e": "listStatus", "E": now, "s": lst.symbol, "g": lst.order_list_id, "c": "OCO",
            "l": lst.status_type, "L": lst.order_status, "r": "NONE", "C": lst.list_client_order_id, "T": now,
            "O": [{"s": o.symbol, "i": o.order_id, "c": o.client_order_id} for o in lst.legs],
        })

    def _list_activate(self, acct: RAccount, o: ROrder, now: int) -> None:
        """A leg of an OCO fills or triggers: the other legs EXPIRE and their lock moves to ``o``
        (one lock backs the whole list); the list is ALL_DONE."""
        lst = acct.order_lists.get(o.order_list_id)
        if lst is None or lst.status_type == "ALL_DONE":
            return
        for other in lst.legs:
            if other is o or not other.is_open:
                continue
            if other.locked and other.locked_asset in ("", o.locked_asset) or not o.locked_asset:
                o.locked += other.locked
                o.locked_asset = other.locked_asset or o.locked_asset
                other.locked = ZERO
            other.status, other.update_time = "EXPIRED", now
            self._release(acct, other)
            self._report(acct, other, "EXPIRED", now)
        lst.status_type, lst.order_status = "ALL_DONE", "ALL_DONE"
        self._list_status(acct, lst, now)

    def _list_cancel_rest(self, acct: RAccount, o: ROrder, now: int) -> None:
        """Canceling one leg cancels the whole list (Binance "Cancel order": "Canceling an
        individual order from an order list will cancel the entire order list")."""
        lst = acct.order_lists.get(o.order_list_id)
        if lst is None or lst.status_type == "ALL_DONE":
            return
        for other in lst.legs:
            if other is not o and other.is_open:
                self._cancel(acct, other, now, None)
        lst.status_type, lst.order_status = "ALL_DONE", "ALL_DONE"
        self._list_status(acct, lst, now)

    def _parse_oco(self, p) -> tuple[str, str, list[dict]]:
        """Parameters of ``POST /api/v3/orderList/oco``, validated: (symbol, listClientOrderId, [above, below])."""
        symbol = self._symbol(p)
        side = p.str("side", required=True)
        if side not in ("BUY", "SELL"):
            raise _e(BAD_SIDE)
        qty = self._dec(p, "quantity")
        if qty is None:
            raise mandatory_missing("quantity")
        list_cid = p.str("listClientOrderId")
        resp = p.str("newOrderRespType")
        legs = []
        for leg, allowed in (("above", self.ABOVE_TYPES), ("below", self.BELOW_TYPES)):
            typ = p.str(f"{leg}Type", required=True)
            if typ not in allowed:
                raise BinanceError(-1116, f"Invalid {leg}Type; legal values: {', '.join(allowed)}.")
            price, stop, tif = self._dec(p, f"{leg}Price"), self._dec(p, f"{leg}StopPrice"), p.str(f"{leg}TimeInForce")
            cid = p.str(f"{leg}ClientOrderId")
            for name in ("IcebergQty", "TrailingDelta", "StrategyId", "StrategyType"):
                p.str(f"{leg}{name}")
            legs.append({"symbol": symbol, "side": side, "type": typ, "tif": tif or "", "qty": qty, "quote_qty": None,
                         "price": price, "stop": stop, "cid": cid, "resp": "RESULT"})
            needed = {"price": typ in LIMIT_TYPES, "stop": typ in STOP_TYPES, "tif": typ in ("STOP_LOSS_LIMIT", "TAKE_PROFIT_LIMIT")}
            for key, name in (("price", "Price"), ("stop", "StopPrice"), ("tif", "TimeInForce")):
                if needed[key] and not legs[-1][key]:
                    raise mandatory_missing(f"{leg}{name}")
                if not needed[key] and legs[-1][key]:
                    raise BinanceError(-1106, f"Parameter '{leg}{name}' sent when not required.")
        p.str("selfTradePreventionMode")
        p.done()
        if resp is not None and resp not in ("ACK", "RESULT", "FULL"):
            raise _e(BAD_RESP_TYPE)
        for cid in [list_cid] + [leg["cid"] for leg in legs]:
            if cid is not None and not _CID_RE.match(cid):
                raise illegal_chars("listClientOrderId", "^[\\.A-Z\\:/a-z0-9_-]{1,36}$")
        above, below = legs
        # One leg takes profit (LIMIT_MAKER / TAKE_PROFIT*), the other stops the loss (STOP_LOSS*).
        kinds = {("SL" if leg["type"].startswith("STOP_LOSS") else "TP") for leg in legs}
        if kinds != {"SL", "TP"}:
            raise BinanceError(-1013, "An OCO needs one LIMIT_MAKER/TAKE_PROFIT(_LIMIT) leg and one STOP_LOSS(_LIMIT) leg.")
        level = lambda leg: leg["price"] if leg["type"] == "LIMIT_MAKER" else leg["stop"]  # noqa: E731
        if not level(above) > level(below):
            raise BinanceError(-1013, "The relationship of the prices for the orders is not correct.")
        return symbol, list_cid or ("oco_" + secrets.token_hex(10)), legs

    async def h_new_oco(self, acct: RAccount, p: Params):
        """``POST /api/v3/orderList/oco`` (TRADE): two legs, one lock; when one fills or triggers the
        other EXPIRES. Validated leg by leg like ``POST /api/v3/order`` (filters, "would trigger",
        "would take", balance) before anything is placed."""
        symbol, list_cid, legs = self._parse_oco(p)
        self.count_order(acct)
        self.count_order(acct)
        if any(lst.list_client_order_id == list_cid and lst.status_type != "ALL_DONE" for lst in acct.order_lists.values()):
            raise BinanceError(-1013, "Order list's client order id is already in use.")
        for leg in legs:
            self._new_order(acct, leg, test=True)  # every check, nothing placed
        list_id = self.next_list_id
        self.next_list_id += 1
        placed = []
        for leg in legs:  # each leg locks its own need; the larger one then backs both
            o, _ = self._new_order(acct, leg, list_id=list_id)
            placed.append(o)
            self._release(acct, o)
        need = max(o.orig_qty if o.side == "SELL" else q8((o.price if o.type in LIMIT_TYPES else o.stop_price) * o.orig_qty)
                   for o in placed)
        base, quote = _base_quote(self.entries[symbol])
        self._lock(acct, placed[0], base if placed[0].side == "SELL" else quote, need)
        now = self.clock.now_ms()
        lst = RList(list_id, symbol, list_cid, placed, now)
        acct.order_lists[list_id] = lst
        self._list_status(acct, lst, now)
        self._position_event(acct, now)
        await self.flush()
        return {**lst.as_rest(), "orderReports": [self._new_response(o, [], "RESULT") for o in placed]}

    def _find_list(self, acct: RAccount, p) -> RList | None:
        lid, cid = p.int("orderListId"), p.str("listClientOrderId") or p.str("origClientOrderId")
        if lid is None and cid is None:
            raise BinanceError(-1102, "Param 'orderListId' or 'listClientOrderId' must be sent, but both were empty/null!")
        if lid is not None:
            return acct.order_lists.get(lid)
        return next((x for x in reversed(list(acct.order_lists.values())) if x.list_client_order_id == cid), None)

    async def h_cancel_list(self, acct: RAccount, p: Params):
        """``DELETE /api/v3/orderList`` (TRADE): symbol, orderListId | listClientOrderId."""
        symbol = self._symbol(p)
        p.str("newClientOrderId")
        self.advance()
        lst = self._find_list(acct, p)
        p.done()
        if lst is None or lst.symbol != symbol or lst.status_type == "ALL_DONE":
            raise BinanceError(-2011, "Order list does not exist.")
        now = self.clock.now_ms()
        reports = [self._cancel(acct, o, now, None) for o in lst.legs if o.is_open]
        lst.status_type, lst.order_status = "ALL_DONE", "ALL_DONE"
        self._list_status(acct, lst, now)
        self._position_event(acct, now)
        await self.flush()
        return {**lst.as_rest(), "orderReports": reports}

    async def h_query_list(self, acct: RAccount, p: Params):
        """``GET /api/v3/orderList`` (USER_DATA): orderListId | origClientOrderId; -2013 when unknown."""
        self.advance()
        lst = self._find_list(acct, p)
        p.done()
        await self.flush()
        if lst is None:
            raise BinanceError(-2013, "Order list does not exist.")
        return lst.as_rest()

    async def h_open_lists(self, acct: RAccount, p: Params):
        """``GET /api/v3/openOrderList`` (USER_DATA): the lists still executing."""
        p.done()
        self.advance()
        await self.flush()
        return [x.as_rest() for x in acct.order_lists.values() if x.status_type != "ALL_DONE"]

    # -- handlers (Binance "Trading endpoints", "Account endpoints") ---------------------------------------
    _NEW_PARAMS = ("symbol", "side", "type", "timeInForce", "quantity", "quoteOrderQty", "price", "newClientOrderId",
                   "stopPrice", "icebergQty", "newOrderRespType", "strategyId", "strategyType", "trailingDelta",
                   "selfTradePreventionMode")

    async def h_new_order(self, acct: RAccount, p: Params):
        """``POST /api/v3/order`` (TRADE): place an order; FULL answers carry ``fills``. Counts
        against the account's ORDERS limits (-1015, HTTP 429 beyond them)."""
        a = self._parse_new(p)
        self.count_order(acct)
        o, trades = self._new_order(acct, a)
        await self.flush()
        return self._new_response(o, trades, a["resp"])

    async def h_test_order(self, acct: RAccount, p: Params):
        """``POST /api/v3/order/test`` (TRADE): validate like a new order, place nothing -> ``{}``;
        with ``computeCommissionRates=true`` the rates that would apply (Binance "Test new order")."""
        compute = p.str("computeCommissionRates")
        if compute not in (None, "true", "false"):
            raise illegal_chars("computeCommissionRates", "^(true|false)$")
        a = self._parse_new(p)
        self._new_order(acct, a, test=True)
        if compute != "true":
            return {}
        zero = f8(ZERO)
        return {
            "standardCommissionForOrder": {"maker": f8(acct.maker_rate), "taker": f8(acct.taker_rate)},
            "specialCommissionForOrder": {"maker": zero, "taker": zero},
            "taxCommissionForOrder": {"maker": zero, "taker": zero},
            "discount": {"enabledForAccount": False, "enabledForSymbol": False, "discountAsset": "BNB",
                         "discount": zero},
        }

    async def h_commission(self, acct: RAccount, p: Params):
        """``GET /api/v3/account/commission`` / ``account.commission`` (USER_DATA): symbol -> the
        account's standard maker/taker rates (no special, tax or BNB discount on the replay)."""
        symbol = self._symbol(p)
        p.done()
        zero = f8(ZERO)
        rates = lambda m, t: {"maker": m, "taker": t, "buyer": zero, "seller": zero}  # noqa: E731
        return {
            "symbol": symbol,
            "standardCommission": rates(f8(acct.maker_rate), f8(acct.taker_rate)),
            "specialCommission": rates(zero, zero),
            "taxCommission": rates(zero, zero),
            "discount": {"enabledForAccount": False, "enabledForSymbol": False, "discountAsset": "BNB",
                         "discount": zero},
        }

    async def h_rate_limit_order(self, acct: RAccount, p: Params):
        """``GET /api/v3/rateLimit/order`` / ``account.rateLimits.orders`` (USER_DATA): the
        account's order count in each ORDERS interval."""
        p.done()
        return self.order_rate_limits(acct)

    # -- order rate (Binance "LIMITS" -> "Unfilled Order Count") ------------------------------------
    def _order_limits(self) -> list[dict]:
        return [rl for rl in self.app.rate_limits if rl.get("rateLimitType") == "ORDERS"]

    @staticmethod
    def _window(rl: dict, wall_ms: int) -> int:
        unit = {"SECOND": 1000, "MINUTE": 60_000, "HOUR": 3_600_000, "DAY": 86_400_000}[rl["interval"]]
        span = unit * int(rl["intervalNum"])
        return wall_ms // span * span

    def order_rate_limits(self, acct: RAccount) -> list[dict]:
        """``[{"rateLimitType": "ORDERS", "interval", "intervalNum", "limit", "count"}, ...]`` now."""
        now = self.clock.wall_ms()
        out = []
        for rl in self._order_limits():
            start, n = acct.order_counts.get((rl["interval"], rl["intervalNum"]), (None, 0))
            out.append({**rl, "count": n if start == self._window(rl, now) else 0})
        return out

    def count_order(self, acct: RAccount) -> None:
        """Count one new order in every ORDERS window (fixed wall-clock windows); -1015 "Too many
        new orders; current limit is N orders per 10 SECOND." (HTTP 429) when one is full."""
        now = self.clock.wall_ms()
        for rl in self._order_limits():
            window = self._window(rl, now)
            start, n = acct.order_counts.get((rl["interval"], rl["intervalNum"]), (window, 0))
            if start != window:
                n = 0
            if n >= int(rl["limit"]):
                e = BinanceError(TOO_MANY_ORDERS, f"Too many new orders; current limit is {rl['limit']} orders per "
                                                  f"{rl['intervalNum']} {rl['interval']}.", 429)
                span = {"SECOND": 1, "MINUTE": 60, "HOUR": 3600, "DAY": 86400}[rl["interval"]] * int(rl["intervalNum"])
                e.headers["Retry-After"] = str(max(1, -(-(window + span * 1000 - now) // 1000)))
                raise e
        for rl in self._order_limits():
            window = self._window(rl, now)
            start, n = acct.order_counts.get((rl["interval"], rl["intervalNum"]), (window, 0))
            acct.order_counts[(rl["interval"], rl["intervalNum"])] = (window, (n if start == window else 0) + 1)

    def order_count_headers(self, acct: RAccount) -> dict[str, str]:
        """``X-MBX-ORDER-COUNT-10S`` / ``X-MBX-ORDER-COUNT-1D`` (Binance "LIMITS" -> "Unfilled Order Count")."""
        return {f"X-MBX-ORDER-COUNT-{rl['intervalNum']}{rl['interval'][0]}": str(rl["count"])
                for rl in self.order_rate_limits(acct)}

    async def h_cancel_order(self, acct: RAccount, p: Params):
        """``DELETE /api/v3/order`` (TRADE): symbol, orderId | origClientOrderId, newClientOrderId.
        -2011 "Unknown order sent." for an unknown or closed order."""
        symbol = self._symbol(p)
        new_cid = p.str("newClientOrderId")
        p.str("cancelRestrictions")
        self.advance()
        o = self._find(acct, p, symbol)
        p.done()
        if o is None or not o.is_open:
            raise _e(UNKNOWN_ORDER)
        out = self._cancel(acct, o, self.clock.now_ms(), new_cid)
        self._list_cancel_rest(acct, o, self.clock.now_ms())
        self._position_event(acct, self.clock.now_ms())
        await self.flush()
        return out

    async def h_cancel_open_orders(self, acct: RAccount, p: Params):
        """``DELETE /api/v3/openOrders`` (TRADE): cancel every open order of ``symbol``; -2011 when none."""
        symbol = self._symbol(p)
        p.done()
        self.advance()
        now = self.clock.now_ms()
        out = []
        for o in list(acct.orders.values()):
            if o.symbol == symbol and o.is_open:
                out.append(self._cancel(acct, o, now, None))
                self._list_cancel_rest(acct, o, now)
        if not out:
            raise _e(UNKNOWN_ORDER)
        self._position_event(acct, now)
        await self.flush()
        return out

    async def h_query_order(self, acct: RAccount, p: Params):
        """``GET /api/v3/order`` (USER_DATA): symbol, orderId | origClientOrderId; -2013 when unknown."""
        symbol = self._symbol(p)
        self.advance()
        o = self._find(acct, p, symbol)
        p.done()
        await self.flush()
        if o is None:
            raise _e(NO_SUCH_ORDER)
        return o.as_query()

    async def h_open_orders(self, acct: RAccount, p: Params):
        """``GET /api/v3/openOrders`` (USER_DATA): symbol optional; oldest first."""
        symbol = self._symbol(p, required=False)
        p.done()
        self.advance()
        await self.flush()
        return [o.as_query() for o in acct.orders.values() if o.is_open and (symbol is None or o.symbol == symbol)]

    async def h_all_orders(self, acct: RAccount, p: Params):
        """``GET /api/v3/allOrders`` (USER_DATA): symbol, orderId (>=), startTime, endTime, limit (500, max 1000)."""
        symbol = self._symbol(p)
        oid, start, end = p.int("orderId"), p.int("startTime"), p.int("endTime")
        limit = p.limit(500, 1000)
        p.done()
        self.advance()
        await self.flush()
        rows = [o for o in acct.orders.values() if o.symbol == symbol and (oid is None or o.order_id >= oid)
                and (start is None or o.time >= start) and (end is None or o.time <= end)]
        rows = rows[:limit] if oid is not None or start is not None else rows[-limit:]
        return [o.as_query() for o in rows]

    async def h_my_trades(self, acct: RAccount, p: Params):
        """``GET /api/v3/myTrades`` (USER_DATA): symbol, orderId, startTime, endTime, fromId (>=),
        limit (500, max 1000); oldest first (the most recent ``limit`` without fromId/startTime)."""
        symbol = self._symbol(p)
        oid, start, end, from_id = p.int("orderId"), p.int("startTime"), p.int("endTime"), p.int("fromId")
        limit = p.limit(500, 1000)
        p.done()
        if from_id is not None and (start is not None or end is not None):
            raise BinanceError(-1128, "Combination of optional parameters invalid.")
        self.advance()
        await self.flush()
        rows = [t for t in acct.trades.get(symbol, []) if (oid is None or t.order_id == oid)
                and (from_id is None or t.id >= from_id) and (start is None or t.time >= start)
                and (end is None or t.time <= end)]
        rows = rows[:limit] if from_id is not None or start is not None else rows[-limit:]
        return [t.as_rest() for t in rows]

    async def h_account(self, acct: RAccount, p: Params):
        """``GET /api/v3/account`` (USER_DATA): commissions, balances (``omitZeroBalances``)."""
        omit = p.str("omitZeroBalances") == "true"
        p.done()
        self.advance()
        await self.flush()
        bps = lambda r: int(r * 10000)  # noqa: E731
        return {
            "makerCommission": bps(acct.maker_rate), "takerCommission": bps(acct.taker_rate), "buyerCommission": 0,
            "sellerCommission": 0,
            "commissionRates": {"maker": f8(acct.maker_rate), "taker": f8(acct.taker_rate), "buyer": f8(ZERO),
                                "seller": f8(ZERO)},
            "canTrade": True, "canWithdraw": True, "canDeposit": True, "brokered": False,
            "requireSelfTradePrevention": False, "preventSor": False, "updateTime": acct.update_time,
            "accountType": "SPOT", "balances": self._balances(acct, omit), "permissions": ["SPOT"], "uid": 0,
        }

