"""Binance venue (testnet / live / the replay exchange's signed endpoints) through python-binance.

Testnet and live differ only by endpoints and keys. **Endpoints are per account** (:func:`endpoints`):
an ``ExchangeCredential`` may name its REST base and WebSocket API URL; otherwise an account on the
deployment's venue (``BINANCE_VENUE``) uses ``settings.BINANCE_API_URL`` / ``BINANCE_WS_API_URL``
and an account on the other Binance venue that venue's standard URLs, so testnet and live accounts
coexist in one deployment. Binance Spot API docs followed: "SIGNED (TRADE and USER_DATA) endpoint
security", "Trading endpoints" (New order, Cancel order), "Account endpoints" (Query order, Current
open orders, Account trade list, Account information, Account Commission Rates), "WebSocket API"
(``userDataStream.subscribe.signature``) and "User Data Streams" (``executionReport``,
``outboundAccountPosition``, ``balanceUpdate``, ``listStatus``, ``eventStreamTerminated``). The
REST listenKey endpoints are not used: Binance removed them on 2026-02-20.

**Keys.** Each account's key is a ``risk.models.ExchangeCredential``: the API key and the HMAC
secret or Ed25519 private key (PEM; python-binance then signs with Ed25519) encrypted with Fernet (``risk.secrets``, key ``SECRETS_ENCRYPTION_KEY``), decrypted only
when a python-binance client is built (clients are cached by the ciphertext). Without one, the API
key is ``Account.api_key`` (else ``settings.BINANCE_API_KEY``) and the secret
``settings.BINANCE_API_SECRET`` (the env fallback); with ``BINANCE_VENUE=replay`` and no secret
configured, the replay's demo pair is used. The secret is only handed to python-binance: no
selector, tool, audit row, error or log line carries it. The exchange's error texts are fenced as
untrusted (``risk.trust.untrusted_text``) wherever they reach an order or an error.

**Submit** (``POST /api/v3/order``, ``newOrderRespType=FULL``, our ``client_order_id`` always sent
as ``newClientOrderId``, ``recvWindow`` = ``settings.BINANCE_RECV_WINDOW_MS``). Before sending, the
attempt is written to a Redis intent log (``venue:intent:<account>``), removed when our booking
commits. The answer's order and ``fills`` are booked in the caller's transaction (account row
locked) with their balance changes. On a timeout, network error or 5xx the status is unknown, so
the order is looked up by ``origClientOrderId`` before anything else: found, it is booked (fills
from ``myTrades``); "Order does not exist." (-2013), it is sent once more with the same id.
An exchange refusal (-2010 insufficient balance, -1013 filter, ...) books a REJECTED order, as on
paper; -1021/-1022/-2014/-2015 raise ``VenueClockError`` / ``VenueAuthError`` and book nothing.

**Booking is idempotent.** Every booker (submit, cancel, the user-stream follower, reconciliation)
holds the account row lock and skips a trade id already booked (``Fill.exchange_trade_id`` is unique
per account and symbol), so a fill seen twice is booked once. Locks mirror the exchange's rules
(BUY limit types lock price x qty, stop-market BUY stopPrice x qty, SELL qty; a BUY fill consumes
``min(max(limit, fill price) x qty, lock)``), commission is what the exchange reports, and absolute
balances from ``outboundAccountPosition`` / ``GET /api/v3/account`` overwrite ours (the exchange is
the truth).

**Reconcile** (``sync``; beat each minute and whenever the follower connects): pending intents
(looked up by ``origClientOrderId``), open orders (orders placed elsewhere or whose booking was lost
are adopted), ``myTrades`` from ``Account.last_trade_ids[symbol] + 1`` for every symbol we have
orders, cursors, intents or open orders in plus ``settings.WATCHED_SYMBOLS``, then the final state
of local orders no longer open, then balances (only when no trade printed meanwhile). The cursor only
moves here, after a contiguous scan, so a fill the stream missed is never skipped.

**Cancel** (``DELETE /api/v3/order``): an order that is no longer open on the exchange (-2011) is
re-read and booked as it is, e.g. FILLED with its fills, and returned in that state.
OCO order lists are refused on this venue for now.
"""
from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone as dt_timezone
from decimal import Decimal

import requests
from binance.exceptions import BinanceAPIException, BinanceRequestException
from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from core.errors import NotFound, OrderRejected, TradingError
from core.events import publish_account_event
from core.redis import get_redis
from marketdata.binance import make_async_client, make_client, VenueRateLimited
from risk.models import ExchangeCredential, KeyType
from risk.trust import untrusted_text
from trading.models import Account, Balance, Fill, Order, OrderList, OrderStatus, OrderType, Venue
from trading.selectors import balance_as_dict, order_as_dict
from trading.venues.base import Execution, VenueBase
from trading.venues.paper import LIMIT_TYPES, STOP_TYPES, Ledger, position_apply_fill, q8, symbol_assets

log = logging.getLogger(__name__)

ZERO = Decimal("0")
REQUEST_TIMEOUT_S = 10
OFFSET_TTL_S = 300
TERMINAL = {OrderStatus.FILLED, OrderStatus.CANCELED, OrderStatus.REJECTED, OrderStatus.EXPIRED,
            OrderStatus.EXPIRED_IN_MATCH}
_RANK = {OrderStatus.NEW: 0, OrderStatus.PARTIALLY_FILLED: 1}


# --- typed errors -------------------------------------------------------------------------------------

class VenueError(TradingError):
    """The exchange refused the request itself (not the order); nothing was booked. ``code`` is
    the exchange's."""

    code = -1000
    http_status = 502


class VenueAuthError(VenueError):
    """-2014 "API-key format invalid." / -2015 "Invalid API-key, IP, or permissions for action." /
    -1022 "Signature for this request is not valid.": the account's key or secret is wrong."""

    code = -1022


class VenueClockError(VenueError):
    """-1021 "Timestamp for this request is outside of the recvWindow.": our clock and the
    exchange's disagree by more than ``BINANCE_RECV_WINDOW_MS``."""

    code = -1021


class VenueUnavailable(VenueError):
    """-1007 "Timeout waiting for response from backend server. Send status unknown; execution
    status unknown.": the exchange could not be reached and the order could not be found either.
    Nothing was booked; reconciliation books the order if it reached the exchange."""

    code = -1007
    http_status = 503


class _Refused(Exception):
    """The exchange refused the order (4xx, e.g. -2010, -1013): book it REJECTED."""

    def __init__(self, code: int, msg: str):
        super().__init__(msg)
        self.code, self.msg = code, msg


def _classify(exc: BinanceAPIException) -> Exception:
    """The exception to raise for a 4xx answer of the exchange."""
    # The exchange's own words are outside text: fenced so an agent reading them takes them as data.
    code, msg = int(exc.code or 0), untrusted_text("exchange", exc.message or "The exchange refused the request.")
    if code in (-2014, -2015, -1022) or exc.status_code in (401, 403):
        return VenueAuthError(f"The exchange refused the account's API credentials: [{code}] {msg}", code=code or -2015)
    if code == -1021:
        return VenueClockError(f"The exchange refused the request's timestamp: [{code}] {msg}", code=code)
    if exc.status_code in (418, 429):
        return VenueRateLimited(f"The exchange rate-limited us (HTTP {exc.status_code}): {msg}")
    return _Refused(code, msg)


# --- clients ------------------------------------------------------------------------------------------

def _stored_credential(account):
    """The account's ``risk.models.ExchangeCredential`` row, or None."""
    return ExchangeCredential.objects.filter(account_id=account.pk).first()


@dataclass(frozen=True)
class VenueCredential:
    """What signs an account's requests and where they go: ``api_key``; ``secret`` (HMAC-SHA256,
    empty for an Ed25519 key) or ``private_key`` (Ed25519 PEM); ``api_url`` (REST base
    ``.../api``) and ``ws_api_url`` (WebSocket API ``.../ws-api/v3``). Never logged (no repr of
    the secrets)."""

    api_key: str
    secret: str = field(repr=False)
    private_key: str | None = field(repr=False)
    api_url: str
    ws_api_url: str

    def client_kwargs(self) -> dict:
        """Keywords of ``marketdata.binance.make_client`` / ``make_async_client``."""
        return {"api_key": self.api_key, "api_secret": self.secret or None, "private_key": self.private_key,
                "api_url": self.api_url}


def endpoints(account, stored=None) -> tuple[str, str]:
    """``(api_url, ws_api_url)`` of ``account``: its ``ExchangeCredential``'s own endpoints when
    set; else ``settings.BINANCE_API_URL`` / ``BINANCE_WS_API_URL`` when the account's venue is the
    deployment's (``BINANCE_VENUE``, or any venue on the replay); else the standard URLs of its
    venue (``settings.BINANCE_ENDPOINTS``), so a testnet and a live account coexist."""
    if settings.BINANCE_VENUE == "replay" or account.venue == settings.BINANCE_VENUE:
        api_url, ws_api_url = settings.BINANCE_API_URL, settings.BINANCE_WS_API_URL
    else:
        api_url, ws_api_url = settings.BINANCE_ENDPOINTS[account.venue]
    if stored is not None:
        api_url, ws_api_url = stored.api_url or api_url, stored.ws_api_url or ws_api_url
    return api_url, ws_api_url


def credentials(account, stored=None) -> VenueCredential:
    """The :class:`VenueCredential` of ``account`` (see the module docstring): its encrypted
    ``ExchangeCredential`` (decrypted here, only to build a client; an HMAC secret or an Ed25519
    private key), else ``Account.api_key`` / ``settings.BINANCE_API_KEY`` with
    ``settings.BINANCE_API_SECRET``. Raises ``VenueAuthError`` (-2014) when none is configured,
    ``ImproperlyConfigured`` when the stored secret cannot be decrypted with
    ``SECRETS_ENCRYPTION_KEY``."""
    stored = stored if stored is not None else _stored_credential(account)
    api_url, ws_api_url = endpoints(account, stored)
    if stored is not None:
        plain = stored.secret()
        if stored.key_type == KeyType.ED25519:
            return VenueCredential(stored.api_key, "", plain, api_url, ws_api_url)
        return VenueCredential(stored.api_key, plain, None, api_url, ws_api_url)
    key = account.api_key or settings.BINANCE_API_KEY or ""
    secret = settings.BINANCE_API_SECRET or ""
    if not secret and settings.BINANCE_VENUE == "replay":
        if key in ("", settings.REPLAY_DEMO_API_KEY):
            key, secret = settings.REPLAY_DEMO_API_KEY, settings.REPLAY_DEMO_API_SECRET
    if not key or not secret:
        raise VenueAuthError(f"Account {account.pk} has no API key/secret configured for the {account.venue} venue.", code=-2014)
    return VenueCredential(key, secret, None, api_url, ws_api_url)


_clients: dict[tuple, object] = {}


def clients_forget() -> None:
    """Drop every cached python-binance client (after an account's key pair changed: no client
    keeps a replaced secret)."""
    _clients.clear()


_offsets: dict[str, tuple[int, float]] = {}


def clock_offset_ms(client) -> int:
    """Exchange time − our time (ms), measured with ``GET /api/v3/time`` every 5 minutes per URL;
    added to every signed request's ``timestamp``. 0 when the exchange cannot be asked."""
    url = client.API_URL
    got = _offsets.get(url)
    if got is None or got[1] < time.monotonic():
        try:
            offset = int(client.get_server_time()["serverTime"] - time.time() * 1000)
        except Exception:  # the signed call itself will report the trouble
            offset = 0
        got = _offsets[url] = (offset, time.monotonic() + OFFSET_TTL_S)
    return got[0]


def client_for(account):
    """A python-binance ``Client`` for ``account`` at its endpoint (:func:`endpoints`), cached per
    URL and key, signing with its HMAC secret or Ed25519 private key, with ``recvWindow``, request
    timeout and clock offset set."""
    stored = _stored_credential(account)
    api_url, _ws = endpoints(account, stored)
    if stored is not None:  # keyed by the ciphertext: the secret is decrypted only to build a client
        cache_key = (api_url, stored.api_key, stored.secret_encrypted)
    else:
        cred = credentials(account)
        cache_key = (api_url, cred.api_key, hash(cred.secret))
    client = _clients.get(cache_key)
    if client is None:
        client = make_client(**credentials(account, stored).client_kwargs())
        if len(_clients) > 64:
            _clients.clear()
        _clients[cache_key] = client
    client.API_URL = api_url
    client.REQUEST_RECVWINDOW = settings.BINANCE_RECV_WINDOW_MS
    client.REQUEST_TIMEOUT = REQUEST_TIMEOUT_S
    client.timestamp_offset = clock_offset_ms(client)
    return client


def _call(fn, **params):
    """Call a python-binance read; typed errors for refusals, ``VenueUnavailable`` for the rest."""
    try:
        return fn(**params)
    except BinanceAPIException as exc:
        if exc.status_code < 500:
            err = _classify(exc)
            if isinstance(err, _Refused):
                raise VenueError(f"[{err.code}] {err.msg}", code=err.code) from None
            raise err from None
        raise VenueUnavailable(f"The exchange answered HTTP {exc.status_code}: {untrusted_text('exchange', exc.message)}") from None
    except (requests.exceptions.RequestException, BinanceRequestException) as exc:
        raise VenueUnavailable(f"The exchange could not be reached: {type(exc).__name__}.") from None


def _query(client, **params) -> dict | None:
    """``GET /api/v3/order`` (symbol + orderId | origClientOrderId); None for -2013."""
    try:
        return _call(client.get_order, **params)
    except VenueError as exc:
        if exc.code == -2013:
            return None
        raise


def _trades_of(client, data: dict) -> list[dict]:
    """The fills of the exchange order ``data`` (``myTrades`` by orderId), normalized."""
    if Decimal(data.get("executedQty") or "0") <= 0:
        return []
    rows = _call(client.get_my_trades, symbol=data["symbol"], orderId=data["orderId"], limit=1000)
    return [_trade_fill(t) for t in rows]


# --- normalization ------------------------------------------------------------------------------------

def _d(value) -> Decimal:
    return Decimal(str(value)) if value not in (None, "") else ZERO


def _dt(ms) -> datetime:
    return datetime.fromtimestamp(int(ms) / 1000, tz=dt_timezone.utc)


def _rest_fill(f: dict, data: dict) -> dict:
    """A ``fills[]`` item of a FULL new-order answer (always taker)."""
    return {"id": int(f["tradeId"]), "price": _d(f["price"]), "qty": _d(f["qty"]), "commission": _d(f["commission"]),
            "commission_asset": f["commissionAsset"], "time": data.get("transactTime"), "is_maker": False}


def _trade_fill(t: dict) -> dict:
    """A ``GET /api/v3/myTrades`` item."""
    return {"id": int(t["id"]), "price": _d(t["price"]), "qty": _d(t["qty"]), "commission": _d(t["commission"]),
            "commission_asset": t["commissionAsset"], "time": t.get("time"), "is_maker": bool(t.get("isMaker")),
            "order_id": int(t["orderId"])}


def _event_order(ev: dict) -> dict:
    """An ``executionReport`` as the REST order shape."""
    return {"symbol": ev["s"], "orderId": ev["i"], "clientOrderId": ev.get("C") or ev["c"], "side": ev["S"],
            "type": ev["o"], "timeInForce": ev.get("f"), "origQty": ev["q"], "price": ev["p"], "stopPrice": ev.get("P"),
            "origQuoteOrderQty": ev.get("Q"), "status": ev["X"], "executedQty": ev["z"], "isWorking": ev.get("w"),
            "workingTime": ev.get("W"), "time": ev.get("O")}


def _event_fill(ev: dict) -> dict:
    return {"id": int(ev["t"]), "price": _d(ev["L"]), "qty": _d(ev["l"]), "commission": _d(ev["n"]),
            "commission_asset": ev["N"], "time": ev.get("T"), "is_maker": bool(ev.get("m"))}


# --- booking ------------------------------------------------------------------------------------------

def _initial_lock(order: Order, base: str, quote: str) -> tuple[str, Decimal]:
    """What an open order locks on the exchange: (asset, amount)."""
    if order.side == "SELL":
        return base, order.quantity
    if order.type in LIMIT_TYPES:
        return quote, q8(order.price * order.quantity)
    if order.type in STOP_TYPES:
        return quote, q8(order.stop_price * order.quantity)
    return quote, ZERO


def _apply_fill(ledger: Ledger, order: Order, f: dict, extra: dict) -> Fill:
    """Book one exchange trade of ``order``: balances (consuming its lock), position, fill row."""
    account = ledger.account
    base_asset, quote_asset = ledger.base_asset, ledger.quote_asset
    base, quote = ledger.rows[base_asset], ledger.rows[quote_asset]
    price, qty, commission, casset = f["price"], f["qty"], f["commission"], f["commission_asset"] or quote_asset
    quote_qty = q8(price * qty)
    if order.side == "BUY":
        ref = order.price if order.type in LIMIT_TYPES and order.price is not None else price
        reserve = min(q8(max(ref, price) * qty), order.locked_amount)
        quote.locked -= reserve
        order.locked_amount -= reserve
        quote.free += reserve - quote_qty
        base.free += qty
    else:
        take = min(qty, order.locked_amount)
        base.locked -= take
        order.locked_amount -= take
        base.free -= qty - take
        quote.free += quote_qty
    row = ledger.rows.get(casset)
    if row is None:
        row = extra.get(casset) or Balance.objects.select_for_update().filter(account=account, asset=casset).first() \
            or Balance(account=account, asset=casset)
        extra[casset] = row
    row.free -= commission
    buy = order.side == "BUY"
    base_delta = (qty - (commission if casset == base_asset else ZERO)) if buy else -qty
    realized = position_apply_fill(account=account, symbol=order.symbol, side=order.side, price=price,
                                   base_delta=base_delta, qty=qty)
    order.executed_qty += qty
    order.cummulative_quote_qty += quote_qty
    return Fill.objects.create(
        order=order, account=account, symbol=order.symbol, side=order.side, price=price, qty=qty,
        quote_qty=quote_qty, commission=commission, commission_asset=casset,
        commission_quote=q8(commission * price) if casset == base_asset else (commission if casset == quote_asset else ZERO),
        is_maker=f["is_maker"], realized_pnl=realized, time=_dt(f["time"]) if f.get("time") else timezone.now(),
        exchange_trade_id=f["id"],
    )


def _save_rows(rows) -> None:
    for row in rows:
        if row.free < 0 or row.locked < 0:  # our mirror drifted; the next absolute balance fixes it
            log.warning("balance %s of account %s would go negative (free %s, locked %s); clamped",
                        row.asset, row.account_id, row.free, row.locked)
            row.free, row.locked = max(row.free, ZERO), max(row.locked, ZERO)
        row.save()


def book_fills(account: Account, order: Order, fills: list[dict]) -> list[Fill]:
    """Book the exchange trades ``fills`` of ``order`` that are not booked yet (caller holds the
    account row lock, in a transaction). Returns the new ``Fill`` rows."""
    if not fills:
        return []
    base, quote = symbol_assets(order.symbol)
    ledger = Ledger(account, base, quote)
    known = set(Fill.objects.filter(account=account, symbol=order.symbol, exchange_trade_id__in=[f["id"] for f in fills])
                .values_list("exchange_trade_id", flat=True))
    extra: dict = {}
    out = []
    for f in sorted(fills, key=lambda x: x["id"]):
        if f["id"] in known:
            continue
        known.add(f["id"])
        try:
            with transaction.atomic():
                out.append(_apply_fill(ledger, order, f, extra))
        except IntegrityError:  # booked concurrently despite the lock: keep the first
            log.warning("trade %s of %s already booked", f["id"], order.symbol)
    if order.status in TERMINAL:
        ledger.release(order)
    _save_rows([*ledger.rows.values(), *extra.values()])
    order.save()
    return out


def book_exchange_order(account: Account, *, data: dict, fills: list[dict], channel: str = "reconcile",
                        lock: bool = True) -> Order:
    """Insert or update the local order for the exchange order ``data`` (REST "Query order" /
    "New order" shape, or a normalized ``executionReport``) and book its new ``fills``.

    The caller holds the account row lock in a transaction. A new local order (an exchange order we
    never booked: lost booking, placed elsewhere) is adopted with the exchange's lock. Status only
    moves forward (NEW → PARTIALLY_FILLED → final); a final status releases the leftover lock.
    ``lock=False`` adopts a new order without a lock of its own (the second leg of an OCO, whose
    one lock the first leg carries).
    """
    oid = int(data["orderId"])
    symbol = data["symbol"]
    order = Order.objects.select_for_update().filter(account=account, exchange_order_id=oid).first()
    cid = data.get("clientOrderId") or f"x-{oid}"
    if order is None:
        order = Order.objects.select_for_update().filter(account=account, client_order_id=cid,
                                                         exchange_order_id__isnull=True, symbol=symbol).first()
    base, quote = symbol_assets(symbol)
    if order is None:
        if Order.objects.filter(account=account, client_order_id=cid).exists():
            cid = f"{cid}#{oid}"[:64]
        qty = _d(data.get("origQty"))
        order = Order(
            account=account, client_order_id=cid, symbol=symbol, side=data["side"], type=data["type"],
            time_in_force=data.get("timeInForce") if data["type"] in (OrderType.LIMIT, OrderType.STOP_LOSS_LIMIT,
                                                                        OrderType.TAKE_PROFIT_LIMIT) else "",
            quantity=qty, quote_order_qty=_d(data.get("origQuoteOrderQty")) or None,
            price=_d(data.get("price")) or None, stop_price=_d(data.get("stopPrice")) or None,
            exchange_order_id=oid, channel=channel, status=OrderStatus.NEW,
        )
        order.save()
        asset, amount = _initial_lock(order, base, quote)
        if amount > 0 and lock:
            ledger = Ledger(account, base, quote)
            ledger.lock(order, asset, min(amount, max(ledger.free(asset), ZERO)))
            _save_rows(ledger.rows.values())
    order.exchange_order_id = oid
    if not order.quantity and _d(data.get("origQty")):
        order.quantity = _d(data["origQty"])  # MARKET by quoteOrderQty: the exchange's computed quantity
    status = data.get("status")
    if status and order.status not in TERMINAL and (status in TERMINAL or _RANK.get(status, 0) >= _RANK.get(order.status, 0)):
        order.status = status
    working = data.get("isWorking")
    if working is None:
        working = data["type"] not in STOP_TYPES or data.get("workingTime") not in (None, -1)
    order.is_working = bool(working)
    wt = data.get("workingTime")
    order.working_time = _dt(wt) if wt not in (None, -1) else order.working_time
    book_fills(account, order, fills)
    if order.status in TERMINAL and order.locked_amount:
        ledger = Ledger(account, base, quote)
        ledger.release(order)
        _save_rows(ledger.rows.values())
    order.save()
    return order


def balances_set(account: Account, rows) -> None:
    """Set absolute balances ``[(asset, free, locked), ...]`` from the exchange (lock held)."""
    for asset, free, locked in rows:
        Balance.objects.update_or_create(account=account, asset=asset, defaults={"free": _d(free), "locked": _d(locked)})


def _publish(account: Account, order: Order | None) -> None:
    if order is not None:
        publish_account_event(account.pk, "order", order_as_dict(order))
    publish_account_event(account.pk, "balances", {
        "balances": [balance_as_dict(b) for b in Balance.objects.filter(account=account).order_by("asset")]})


# --- intent log (Redis) -------------------------------------------------------------------------------

def _intent_key(account_id: int) -> str:
    return f"{settings.REDIS_KEY_PREFIX}venue:intent:{account_id}"


def _intent_add(account_id: int, symbol: str, cid: str) -> None:
    try:
        get_redis().hset(_intent_key(account_id), cid, json.dumps({"symbol": symbol, "ms": int(time.time() * 1000)}))
    except Exception:  # never block an order on the log; reconciliation still scans the watched symbols
        log.warning("could not record the order intent %s of account %s", cid, account_id)


def _intent_remove(account_id: int, cid: str) -> None:
    try:
        get_redis().hdel(_intent_key(account_id), cid)
    except Exception:
        log.warning("could not clear the order intent %s of account %s", cid, account_id)


def intents(account_id: int) -> dict[str, dict]:
    """Orders sent but not (yet) booked: ``{clientOrderId: {"symbol", "ms"}}``."""
    try:
        raw = get_redis().hgetall(_intent_key(account_id))
    except Exception:
        return {}
    return {k.decode(): json.loads(v) for k, v in raw.items()}


# --- the venue ----------------------------------------------------------------------------------------

def _fmt(d: Decimal) -> str:
    return format(d.normalize(), "f")


def order_params(request) -> dict:
    """Our ``OrderRequest`` as python-binance ``create_order`` keywords (Binance's names)."""
    p = {"symbol": request.symbol.symbol, "side": request.side, "type": request.type,
         "newClientOrderId": request.client_order_id, "newOrderRespType": "FULL"}
    for name, value in (("quantity", request.quantity), ("quoteOrderQty", request.quote_order_qty),
                        ("price", request.price), ("stopPrice", request.stop_price)):
        if value is not None:
            p[name] = _fmt(value)
    if request.time_in_force:
        p["timeInForce"] = request.time_in_force
    return p


def oco_params(*, list_client_order_id: str, legs: list) -> dict:
    """``POST /api/v3/orderList/oco`` parameters for ``[limit_maker, stop]`` requests: the leg whose
    price level is higher (LIMIT_MAKER price / stop's stopPrice) is the *above* leg."""
    lm, stop = legs
    above, below = (lm, stop) if lm.side == "SELL" else (stop, lm)
    params = {"symbol": lm.symbol.symbol, "side": lm.side, "quantity": _fmt(lm.quantity),
              "listClientOrderId": list_client_order_id, "newOrderRespType": "FULL"}
    for name, leg in (("above", above), ("below", below)):
        params[f"{name}Type"] = leg.type
        params[f"{name}ClientOrderId"] = leg.client_order_id
        if leg.type in LIMIT_TYPES and leg.price is not None:
            params[f"{name}Price"] = _fmt(leg.price)
        if leg.type in STOP_TYPES:
            params[f"{name}StopPrice"] = _fmt(leg.stop_price)
        if leg.type in (OrderType.STOP_LOSS_LIMIT, OrderType.TAKE_PROFIT_LIMIT):
            params[f"{name}TimeInForce"] = leg.time_in_force or "GTC"
    return params


def _send(client, params: dict) -> dict:
    """``create_order`` with the unknown-status rule: after a timeout/network error/5xx, look the
    order up by ``origClientOrderId``; resend (same id) only when the exchange says it has none."""
    symbol, cid = params["symbol"], params["newClientOrderId"]
    for _attempt in range(2):
        try:
            return client.create_order(**params)
        except BinanceAPIException as exc:
            if exc.status_code < 500:
                raise _classify(exc) from None
            log.warning("new order %s: HTTP %s, status unknown; querying it", cid, exc.status_code)
        except (requests.exceptions.RequestException, BinanceRequestException) as exc:
            log.warning("new order %s: %s, status unknown; querying it", cid, type(exc).__name__)
        found = _query(client, symbol=symbol, origClientOrderId=cid)
        if found is not None:
            return found
    raise VenueUnavailable("Timeout waiting for response from backend server. Send status unknown; execution status "
                           "unknown. Nothing was booked; reconciliation will book the order if it reached the exchange.")


class BinanceVenue(VenueBase):
    """Executes orders of testnet/live accounts on the exchange (module docstring)."""

    def submit(self, *, account, request, market) -> Execution:
        if request.order_list_id is not None:
            raise OrderRejected(f"OCO order lists are not supported on the {account.venue} venue yet; "
                                "place the legs as separate orders.", code=-1013)
        client = client_for(account)
        params = order_params(request)
        cid = request.client_order_id
        _intent_add(account.pk, request.symbol.symbol, cid)
        try:
            try:
                data = _send(client, params)
            except _Refused as refused:
                if refused.code == -2010 and "Duplicate" in refused.msg:  # it is on the exchange already
                    data = _query(client, symbol=request.symbol.symbol, origClientOrderId=cid)
                    if data is None:
                        raise
                else:
                    raise
        except _Refused as refused:
            _intent_remove(account.pk, cid)
            order = Order.objects.create(
                account=account, client_order_id=cid, symbol=request.symbol.symbol, side=request.side, type=request.type,
                quantity=request.quantity or ZERO, quote_order_qty=request.quote_order_qty, price=request.price,
                stop_price=request.stop_price, time_in_force=request.time_in_force, channel=request.channel,
                status=OrderStatus.REJECTED, reject_reason=f"[{refused.code}] {refused.msg}",
            )
            return Execution(order=order, rejected=True, reason=refused.msg, code=refused.code)
        except (VenueAuthError, VenueClockError):
            _intent_remove(account.pk, cid)  # refused before reaching the matching engine
            raise
        fills = [_rest_fill(f, data) for f in data["fills"]] if "fills" in data else _trades_of(client, data)
        order = book_exchange_order(account, data=data, fills=fills, channel=request.channel)
        transaction.on_commit(lambda: _intent_remove(account.pk, cid))
        return Execution(order=order)

    def cancel(self, *, account, order) -> Order:
        client = client_for(account)
        ident = {"orderId": order.exchange_order_id} if order.exchange_order_id else {"origClientOrderId": order.client_order_id}
        data = None
        try:
            data = client.cancel_order(symbol=order.symbol, **ident)
        except BinanceAPIException as exc:
            if exc.status_code < 500:
                err = _classify(exc)
                if not (isinstance(err, _Refused) and err.code == -2011):
                    raise (VenueError(f"[{err.code}] {err.msg}", code=err.code) if isinstance(err, _Refused) else err) from None
        except (requests.exceptions.RequestException, BinanceRequestException):
            pass
        if data is None:  # unknown to the exchange as open, or status unknown: read it
            data = _query(client, symbol=order.symbol, **ident)
            if data is None:
                raise NotFound("Order does not exist on the exchange.", details={"orderId": order.pk})
            if data["status"] in Order.OPEN_STATUSES:
                raise VenueUnavailable("The cancel could not be confirmed; the order is still open on the exchange.")
        fills = _trades_of(client, data) if _d(data.get("executedQty")) > order.executed_qty else []
        data = {**data, "clientOrderId": data.get("origClientOrderId") or data.get("clientOrderId")}
        booked = book_exchange_order(account, data=data, fills=fills)
        if order.order_list_id is not None:  # the exchange canceled the whole list: book the other legs
            for leg in Order.objects.select_for_update().filter(account=account, order_list_id=order.order_list_id,
                                                               status__in=Order.OPEN_STATUSES).exclude(pk=order.pk):
                found = _query(client, symbol=leg.symbol, orderId=leg.exchange_order_id) if leg.exchange_order_id else None
                if found is not None:
                    book_exchange_order(account, data=found, fills=_trades_of(client, found) if _d(found.get("executedQty")) > leg.executed_qty else [])
            OrderList.objects.filter(pk=order.order_list_id).update(list_status_type="ALL_DONE", list_order_status="ALL_DONE")
        return booked

    def submit_oco(self, *, account, list_client_order_id: str, legs: list) -> OrderList:
        """Place an OCO on the exchange (Binance "New Order list - OCO", ``POST /api/v3/orderList/oco``)
        and book its list and both legs (caller holds the account row lock, in a transaction).

        ``legs``: ``[limit_maker, stop]`` ``OrderRequest``s (same symbol, side, quantity). On a
        SELL the LIMIT_MAKER is the *above* leg and the STOP_LOSS(_LIMIT) the *below* one; on a
        BUY the other way round (Binance's price rules). One lock backs both legs, as on the
        exchange. Raises ``OrderRejected`` with the exchange's code when it refuses the list
        (nothing booked), ``VenueUnavailable`` when the outcome is unknown (reconciliation adopts
        the legs if they reached the exchange: their clientOrderIds are in the intent log).
        """
        client = client_for(account)
        params = oco_params(list_client_order_id=list_client_order_id, legs=legs)
        for leg in legs:
            _intent_add(account.pk, leg.symbol.symbol, leg.client_order_id)
        try:
            data = client.create_oco_order(**params)
        except BinanceAPIException as exc:
            if exc.status_code < 500:
                for leg in legs:
                    _intent_remove(account.pk, leg.client_order_id)
                err = _classify(exc)
                if isinstance(err, _Refused):
                    raise OrderRejected(f"[{err.code}] {err.msg}", code=err.code) from None
                raise err from None
            raise VenueUnavailable("The exchange failed while placing the OCO; its status is unknown. Nothing was "
                                   "booked; reconciliation will book the legs if they reached the exchange.") from None
        except (requests.exceptions.RequestException, BinanceRequestException):
            raise VenueUnavailable("Timeout waiting for response from backend server. Send status unknown; execution "
                                   "status unknown. Nothing was booked; reconciliation will book the legs if they "
                                   "reached the exchange.") from None
        olist = OrderList.objects.create(
            account=account, list_client_order_id=data["listClientOrderId"], symbol=data["symbol"],
            list_status_type=data["listStatusType"], list_order_status=data["listOrderStatus"],
            exchange_order_list_id=data["orderListId"],
        )
        reports = data["orderReports"]
        base, quote = symbol_assets(data["symbol"])
        needs = []
        for rep in reports:
            probe = Order(side=rep["side"], type=rep["type"], quantity=_d(rep["origQty"]), price=_d(rep.get("price")),
                          stop_price=_d(rep.get("stopPrice")))
            needs.append(_initial_lock(probe, base, quote)[1])
        locker = needs.index(max(needs))
        for i, rep in enumerate(reports):
            fills = [_rest_fill(f, rep) for f in rep.get("fills", [])]
            order = book_exchange_order(account, data=rep, fills=fills, channel=legs[0].channel, lock=i == locker)
            order.order_list_id = olist.pk
            order.save(update_fields=["order_list_id", "updated_at"])
        transaction.on_commit(lambda: [_intent_remove(account.pk, leg.client_order_id) for leg in legs])
        return olist

    def sync(self, *, account) -> dict:
        return reconcile(account)


# --- reconciliation -----------------------------------------------------------------------------------

def reconcile(account: Account) -> dict:
    """Bring ``account``'s orders, fills and balances in line with the exchange (module docstring).

    Returns ``{"adopted": n, "fills": n, "closed": n, "balances": bool, "symbols": [...]}``: orders
    adopted, fills booked, local open orders found closed, whether balances were set.
    Raises ``VenueError`` subclasses when the exchange refuses or cannot be reached (nothing of the
    failed step is committed).
    """
    client = client_for(account)
    window_ms = settings.BINANCE_RECV_WINDOW_MS + 5000
    with transaction.atomic():
        acct = Account.objects.select_for_update().get(pk=account.pk)
        n_orders = Order.objects.filter(account=acct).count()
        n_fills = Fill.objects.filter(account=acct).count()
        cursors = {k: int(v) for k, v in (acct.last_trade_ids or {}).items()}
        touched: dict[int, Order] = {}
        # 1. orders sent whose booking did not commit
        pending = intents(acct.pk)
        for cid, info in pending.items():
            data = _query(client, symbol=info["symbol"], origClientOrderId=cid)
            if data is not None:
                o = book_exchange_order(acct, data=data, fills=_trades_of(client, data))
                touched[o.pk] = o
            elif time.time() * 1000 - info["ms"] < window_ms:
                continue  # it may still be in flight
            transaction.on_commit(lambda cid=cid: _intent_remove(acct.pk, cid))
        # 2. open orders on the exchange
        open_rows = _call(client.get_open_orders)
        for data in open_rows:
            o = book_exchange_order(acct, data=data, fills=[])
            touched[o.pk] = o
        # 3. trades since the cursors
        local_open = list(Order.objects.filter(account=acct, status__in=Order.OPEN_STATUSES))
        symbols = (set(cursors) | {d["symbol"] for d in open_rows} | {o.symbol for o in local_open}
                   | {i["symbol"] for i in pending.values()} | set(settings.WATCHED_SYMBOLS)
                   | set(Order.objects.filter(account=acct, exchange_order_id__isnull=False).values_list("symbol", flat=True)))
        scanned = []
        for sym in sorted(symbols):
            from_id = cursors.get(sym, -1) + 1
            while True:
                try:
                    rows = _call(client.get_my_trades, symbol=sym, fromId=from_id, limit=1000)
                except VenueError as exc:
                    if exc.code == -1121:  # not traded on this exchange
                        break
                    raise
                if sym not in scanned:
                    scanned.append(sym)
                by_order: dict[int, list[dict]] = {}
                for t in rows:
                    by_order.setdefault(int(t["orderId"]), []).append(_trade_fill(t))
                for oid, fills in by_order.items():
                    o = Order.objects.select_for_update().filter(account=acct, exchange_order_id=oid).first()
                    if o is None:
                        data = _query(client, symbol=sym, orderId=oid)
                        if data is None:
                            log.error("trade of unknown order %s %s on account %s", sym, oid, acct.pk)
                            continue
                        o = book_exchange_order(acct, data=data, fills=fills)
                    else:
                        book_fills(acct, o, fills)
                    touched[o.pk] = o
                if rows:
                    cursors[sym] = max(int(t["id"]) for t in rows)
                    from_id = cursors[sym] + 1
                if len(rows) < 1000:
                    break
        # 4. local open orders the exchange no longer has open
        open_ids = {int(d["orderId"]) for d in open_rows}
        closed = 0
        for o in Order.objects.select_for_update().filter(account=acct, status__in=Order.OPEN_STATUSES):
            if o.exchange_order_id in open_ids:
                continue
            ident = {"orderId": o.exchange_order_id} if o.exchange_order_id else {"origClientOrderId": o.client_order_id}
            data = _query(client, symbol=o.symbol, **ident)
            if data is None:
                o.status, o.reject_reason = OrderStatus.EXPIRED, "Unknown to the exchange at reconciliation."
                base, quote = symbol_assets(o.symbol)
                ledger = Ledger(acct, base, quote)
                ledger.release(o)
                _save_rows(ledger.rows.values())
                o.save()
            else:
                fills = _trades_of(client, data) if _d(data.get("executedQty")) > o.executed_qty else []
                o = book_exchange_order(acct, data=data, fills=fills)
            closed += o.status in TERMINAL
            touched[o.pk] = o
        # 5. balances, when nothing printed since our scan
        snapshot = _call(client.get_account)
        quiet = all(not _call(client.get_my_trades, symbol=s, fromId=cursors.get(s, -1) + 1, limit=1) for s in scanned)
        if quiet:
            held = set(Balance.objects.filter(account=acct).values_list("asset", flat=True))
            balances_set(acct, [(b["asset"], b["free"], b["locked"]) for b in snapshot["balances"]
                                if b["asset"] in held or _d(b["free"]) or _d(b["locked"])])
        acct.last_trade_ids = {k: v for k, v in sorted(cursors.items())}
        acct.save(update_fields=["last_trade_ids"])
        result = {
            "adopted": Order.objects.filter(account=acct).count() - n_orders,
            "fills": Fill.objects.filter(account=acct).count() - n_fills,
            "closed": closed, "balances": quiet, "symbols": scanned,
        }
        for o in touched.values():
            _publish(acct, o)
        if not touched:
            _publish(acct, None)
    return result


def reconcile_account_id(account_id: int) -> dict:
    """``reconcile`` by id (for the follower's thread)."""
    return reconcile(Account.objects.get(pk=account_id))


# --- user data stream ---------------------------------------------------------------------------------

def handle_user_event(account_id: int, event: dict) -> dict:
    """Apply one user-data-stream event (Binance "User Data Streams") to ``account_id``, in one
    transaction with the account row locked:

    - ``executionReport``: the order's state and, for ``x == "TRADE"``, its fill (booked once);
    - ``outboundAccountPosition``: absolute balances of the assets it lists;
    - ``listStatus``: the order list's state;
    - ``balanceUpdate`` (deposit/withdrawal): nothing booked here, the ``outboundAccountPosition``
      that follows it carries the absolute balance;
    - ``eventStreamTerminated`` (Binance "Event Stream Terminated": the subscription ended) and
      ``listenKeyExpired``: nothing booked; returns ``{"reconnect": True}``.
    Returns ``{"event": e, "orderId"?: local id, "status"?: status}``.
    """
    kind = event.get("e")
    if kind in ("eventStreamTerminated", "listenKeyExpired"):
        return {"event": kind, "reconnect": True}
    if kind == "balanceUpdate":
        return {"event": kind}
    with transaction.atomic():
        account = Account.objects.select_for_update().get(pk=account_id)
        if kind == "executionReport":
            fills = [_event_fill(event)] if event.get("x") == "TRADE" else []
            order = book_exchange_order(account, data=_event_order(event), fills=fills, channel="userstream")
            _publish(account, order)
            return {"event": kind, "orderId": order.pk, "status": order.status}
        if kind == "listStatus":  # Binance "Order list update": the list's state (legs come as executionReports)
            OrderList.objects.filter(account=account, exchange_order_list_id=event.get("g")).update(
                list_status_type=event.get("l", "EXEC_STARTED"), list_order_status=event.get("L", "EXECUTING"))
            return {"event": kind}
        if kind == "outboundAccountPosition":
            balances_set(account, [(b["a"], b["f"], b["l"]) for b in event.get("B", [])])
            _publish(account, None)
    return {"event": kind}


async def follow_account(account_id: int, *, stop: asyncio.Event, on_ready=None, max_backoff_s: float = 30.0) -> None:
    """Follow ``account_id``'s user data stream until ``stop`` is set.

    Through Binance's WebSocket API (``<ws_api_url>``, the account's :func:`endpoints`) with
    python-binance: ``BinanceSocketManager.user_socket()`` sends ``userDataStream.subscribe.signature``
    signed with the account's HMAC secret or Ed25519 key, and yields the subscription's events.
    Once subscribed it reconciles (whatever happened while we were away is booked), syncs the
    account's commission rates (:func:`account_fees_sync`), calls ``on_ready()`` and applies each
    event with ``handle_user_event``. A WebSocket API subscription lives as long as its connection:
    python-binance reconnects the connection by itself but does not subscribe again, and reports
    the drop as an ``{"e": "error"}`` item on the socket; on that, on ``eventStreamTerminated``,
    or any error, this closes the client and starts over with a new connection and a new
    subscription (exponential backoff 1 s .. ``max_backoff_s`` on errors). (python-binance has no
    API to re-subscribe an existing socket, hence the fresh client per subscription.)
    """
    from asgiref.sync import sync_to_async
    from binance import BinanceSocketManager

    backoff = 1.0
    while not stop.is_set():
        client = socket = None
        try:
            account = await sync_to_async(Account.objects.get)(pk=account_id)
            cred = await sync_to_async(credentials)(account)  # reads the encrypted credential row
            client = await make_async_client(**cred.client_kwargs(), ws_api_url=cred.ws_api_url)
            socket = BinanceSocketManager(client).user_socket()
            await socket.__aenter__()  # userDataStream.subscribe.signature
            await sync_to_async(reconcile_account_id)(account_id)
            try:
                await sync_to_async(account_fees_sync)(account)
            except TradingError as exc:  # fees are not worth stopping the stream for
                log.warning("commission rates of account %s: %s", account_id, exc)
            backoff = 1.0
            if on_ready is not None:
                on_ready()
            while not stop.is_set():
                try:
                    event = await asyncio.wait_for(socket.recv(), 1.0)
                except asyncio.TimeoutError:
                    continue
                if event.get("e") == "error":  # python-binance: the WebSocket API connection dropped
                    log.info("user stream of account %s: %s (%s); subscribing again", account_id,
                             event.get("type"), event.get("m"))
                    socket = None  # its subscription died with the connection: nothing to unsubscribe
                    break
                result = await sync_to_async(handle_user_event)(account_id, event)
                if result.get("reconnect"):
                    log.info("user stream of account %s ended (%s); subscribing again", account_id, result["event"])
                    break
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning("user stream of account %s: %s; retrying in %.0f s", account_id, exc, backoff)
            try:
                await asyncio.wait_for(stop.wait(), backoff)
            except asyncio.TimeoutError:
                pass
            backoff = min(backoff * 2, max_backoff_s)
        finally:
            await _close_quietly(socket, client)


async def _close_quietly(socket, client) -> None:
    """Unsubscribe and close, each bounded to 2 s. python-binance's ``close_connection()`` marks its
    WebSocket API reader as exiting and then waits for the reader's pending receive (up to its
    10 s timeout, or its reconnect attempts when the exchange is gone); closing that connection
    (``client.ws_api.ws``, public) right after ends the receive at once."""
    if socket is not None:
        try:
            await asyncio.wait_for(socket.__aexit__(None, None, None), 2.0)
        except Exception as exc:  # noqa: BLE001 - a dead connection is what we are leaving
            log.debug("unsubscribing the user stream: %s", exc)
    if client is None:
        return
    closing = asyncio.ensure_future(client.close_connection())
    await asyncio.sleep(0)  # let it mark the reader as exiting
    ws = client.ws_api.ws if client.ws_api is not None else None
    try:
        if ws is not None:
            await asyncio.wait_for(ws.close(), 1.0)
        await asyncio.wait_for(closing, 2.0)
    except Exception as exc:  # noqa: BLE001
        log.debug("closing the user stream client: %s", exc)


def account_fees_sync(account: Account, symbol: str | None = None) -> dict:
    """Set ``account``'s maker/taker rates from its own exchange account: ``GET
    /api/v3/account/commission`` (Binance "Account Commission Rates", signed with the account's
    credentials) for ``symbol`` (default the first of ``settings.WATCHED_SYMBOLS``); the standard
    commission (fractions, 0.001 = 0.1 %). Returns ``{"symbol", "maker", "taker"}``; raises
    ``VenueError`` subclasses when the exchange refuses or cannot be reached."""
    symbol = symbol or settings.WATCHED_SYMBOLS[0]
    data = _call(client_for(account).v3_get_account_commission, symbol=symbol)
    std = data["standardCommission"]
    maker, taker = _d(std["maker"]), _d(std["taker"])
    Account.objects.filter(pk=account.pk).update(maker_fee_rate=maker, taker_fee_rate=taker)
    account.maker_fee_rate, account.taker_fee_rate = maker, taker
    return {"symbol": symbol, "maker": maker, "taker": taker}


def exchange_account_ids() -> list[int]:
    """Ids of the accounts on a Binance venue (testnet/live)."""
    return list(Account.objects.exclude(venue=Venue.PAPER).order_by("id").values_list("pk", flat=True))
