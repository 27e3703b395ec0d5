"""MCP resources and resource templates (MCP spec 2025-06-18, "Server Features → Resources"),
declared on the one server (``mcpapi.guard.SERVER``) with FastMCP's public ``resource()`` decorator.

URIs (``{symbol}`` e.g. ``BTCUSDT``, ``{interval}`` a Binance kline interval, ``{account_id}`` one
of the caller's account ids); each answers ``application/json``, the same data as the tool named:

- ``tradingmcp://markets/{symbol}/ticker``: best bid/ask (``get_ticker``), scope ``market:read``.
- ``tradingmcp://markets/{symbol}/book``: order book, 100 levels a side (``get_order_book``).
- ``tradingmcp://markets/{symbol}/klines/{interval}``: the latest 100 candles (``get_klines``).
- ``tradingmcp://accounts``: the caller's accounts ``{"accounts": [{accountId, name, venue,
  quoteAsset, uri}]}``, scope ``account:read``.
- ``tradingmcp://accounts/{account_id}``: balances, positions, fee rates (``get_account``) plus
  ``risk``: the account's trading state and every risk limit (``risk.selectors.risk_limits_get``).
- ``tradingmcp://accounts/{account_id}/orders/open``: open orders (``list_open_orders``).
- ``tradingmcp://accounts/{account_id}/activity``: the account's 50 newest audit events
  (``risk.selectors.audit_events_list``, as ``GET /api/v1/accounts/{id}/audit-events`` shows them).

Every read runs inside the guard (``mcpapi.guard.guard``): the token's scope and symbol
restriction (``check_access``, the tools' check), its account grants (``trading.selectors.account_get``:
another user's account reads exactly like one that does not exist), one audit event per read
(``mcp.resource.<kind>``) and the trust envelope (``risk.trust``). ``resources/list`` names the
concrete resources this caller may read (its accounts; the watched markets, or those its token is
restricted to) and ``resources/templates/list`` the templates its scopes allow (both answered per
caller through ``mcpapi.guard.CALLER_LISTS``). A refused, malformed or unknown URI answers JSON-RPC
error ``-32002`` (resource not found, MCP spec "Resources → Error Handling"; ``mcpapi.endpoint``
gives the SDK's code 0 that code).
"""
from __future__ import annotations

from mcp import types

from marketdata import selectors as md
from mcpapi.guard import CALLER_LISTS, SERVER, current_call, guard
from core.workers import run_sync
from risk import access
from risk import selectors as risk_selectors
from risk.models import Scope
from trading import selectors

JSON = "application/json"
TICKER = "tradingmcp://markets/{symbol}/ticker"
BOOK = "tradingmcp://markets/{symbol}/book"
KLINES = "tradingmcp://markets/{symbol}/klines/{interval}"
ACCOUNTS = "tradingmcp://accounts"
ACCOUNT = "tradingmcp://accounts/{account_id}"
OPEN_ORDERS = "tradingmcp://accounts/{account_id}/orders/open"
ACTIVITY = "tradingmcp://accounts/{account_id}/activity"

# URI or URI template → the scope a token needs to list and read it.
RESOURCE_SCOPES = {
    TICKER: Scope.MARKET_READ, BOOK: Scope.MARKET_READ, KLINES: Scope.MARKET_READ,
    ACCOUNTS: Scope.ACCOUNT_READ, ACCOUNT: Scope.ACCOUNT_READ, OPEN_ORDERS: Scope.ACCOUNT_READ,
    ACTIVITY: Scope.ACCOUNT_READ,
}
BOOK_LEVELS = 100
KLINES_LIMIT = 100
ACTIVITY_LIMIT = 50


# --- the reads (each the selector its tool calls), guarded ------------------------------------------

def _account_of_call(account_id):
    """The account ``account_id`` the caller may read (``trading.selectors.account_get``: NotFound
    for another user's or a missing one); filed on the call for its audit event."""
    call = current_call()
    call.account = selectors.account_get(user=call.user, account_id=account_id, need="read", token=call.token)
    return call.account


async def _ticker(symbol: str) -> dict:
    sym = await md.symbol_get_async(symbol)
    return (await md.quote_get_async(sym.symbol)).as_dict()


def _book(symbol: str) -> dict:
    sym = md.symbol_get(symbol)
    return md.order_book(symbol=sym.symbol, limit=BOOK_LEVELS)


def _klines(symbol: str, interval: str) -> dict:
    sym = md.symbol_get(symbol)
    md.interval_check(interval)
    return md.klines_range(symbol=sym.symbol, interval=interval, limit=KLINES_LIMIT)


def _accounts() -> dict:
    call = current_call()
    rows = selectors.accounts_for_user(call.user, need="read", token=call.token).order_by("pk")
    return {"accounts": [{"accountId": a.pk, "name": a.name, "venue": a.venue, "quoteAsset": a.quote_asset,
                          "uri": ACCOUNT.format(account_id=a.pk)} for a in rows]}


def _account(account_id: str) -> dict:
    account = _account_of_call(account_id)
    state = selectors.account_state(account=account)
    state["positions"] = access.visible(current_call().identity, state["positions"])  # the token's symbols only
    return {**state, "risk": risk_selectors.risk_limits_get(account=account)}


def _open_orders(account_id: str) -> dict:
    account = _account_of_call(account_id)
    return {"accountId": account.pk, "orders": selectors.open_orders_list(
        account=account, symbols=access.symbols_default(current_call().identity))}


def _activity(account_id: str) -> dict:
    account = _account_of_call(account_id)
    events = risk_selectors.audit_events_list(account=account, symbols=access.symbols_default(current_call().identity))
    return {"accountId": account.pk, "events": [risk_selectors.audit_event_as_dict(e) for e in events[:ACTIVITY_LIMIT]]}


read_ticker = guard(_ticker, name="resource.ticker", scope=Scope.MARKET_READ)
read_book = guard(_book, name="resource.book", scope=Scope.MARKET_READ)
read_klines = guard(_klines, name="resource.klines", scope=Scope.MARKET_READ)
read_accounts = guard(_accounts, name="resource.accounts", scope=Scope.ACCOUNT_READ)
read_account = guard(_account, name="resource.account", scope=Scope.ACCOUNT_READ)
read_open_orders = guard(_open_orders, name="resource.open_orders", scope=Scope.ACCOUNT_READ)
read_activity = guard(_activity, name="resource.activity", scope=Scope.ACCOUNT_READ)


# --- declared on the server (FastMCP serializes the dict as JSON text) --------------------------------

@SERVER.resource(TICKER, name="ticker", title="Ticker", mime_type=JSON,
                 description="Best bid/ask of a spot symbol: {symbol, bidPrice, bidQty, askPrice, askQty, lastPrice, "
                             "spread, updateId, receivedAt (ms UTC), ageMs}; prices in the quote asset (get_ticker).")
async def ticker(symbol: str) -> dict:
    """The ticker resource of ``symbol``."""
    return await read_ticker(symbol=symbol)


@SERVER.resource(BOOK, name="book", title="Order book", mime_type=JSON,
                 description="The venue's order book of a symbol, 100 levels a side: {symbol, lastUpdateId, bids, asks} "
                             "as [price, qty] pairs, best first (get_order_book).")
async def book(symbol: str) -> dict:
    """The order-book resource of ``symbol``."""
    return await read_book(symbol=symbol)


@SERVER.resource(KLINES, name="klines", title="Candles", mime_type=JSON,
                 description="The latest 100 candles of a symbol and interval (1m 3m 5m 15m 30m 1h 2h 4h 6h 8h 12h 1d 3d "
                             "1w 1M), oldest first: {symbol, interval, klines, nextStartTime} (get_klines).")
async def klines(symbol: str, interval: str) -> dict:
    """The klines resource of ``symbol`` and ``interval``."""
    return await read_klines(symbol=symbol, interval=interval)


@SERVER.resource(ACCOUNTS, name="accounts", title="Your accounts", mime_type=JSON,
                 description="The accounts this token may read: {accounts: [{accountId, name, venue, quoteAsset, uri}]}.")
async def accounts() -> dict:
    """The caller's accounts."""
    return await read_accounts()


@SERVER.resource(ACCOUNT, name="account", title="Account", mime_type=JSON,
                 description="One of your accounts: balances (free/locked per asset), positions, fee rates (get_account) "
                             "and risk: {tradingState, every risk limit (quote asset, null = unlimited)}.")
async def account(account_id: str) -> dict:
    """The account resource of ``account_id``."""
    return await read_account(account_id=account_id)


@SERVER.resource(OPEN_ORDERS, name="open_orders", title="Open orders", mime_type=JSON,
                 description="Open orders (NEW, PARTIALLY_FILLED) of one of your accounts, oldest first: "
                             "{accountId, orders} (list_open_orders).")
async def open_orders(account_id: str) -> dict:
    """The open-orders resource of ``account_id``."""
    return await read_open_orders(account_id=account_id)


@SERVER.resource(ACTIVITY, name="activity", title="Account activity", mime_type=JSON,
                 description="The 50 newest audit events of one of your accounts, newest first: {accountId, events: "
                             "[{id, time (ms UTC), channel, action, outcome, actorUser, actorToken, message, params, "
                             "result, riskDecision, latencyMs, requestId}]}.")
async def activity(account_id: str) -> dict:
    """The activity resource of ``account_id``."""
    return await read_activity(account_id=account_id)


# --- per-caller listings ----------------------------------------------------------------------------

def allowed(uri_or_template: str, identity) -> bool:
    """May ``identity`` list and read resources of ``uri_or_template`` (its scope)?"""
    scope = RESOURCE_SCOPES.get(uri_or_template)
    return identity is not None and scope is not None and identity.has_scope(scope)


def readable_account_ids(identity) -> list[int]:
    """The ids of the accounts ``identity`` may read (``trading.selectors.accounts_for_user``)."""
    return list(selectors.accounts_for_user(identity.user, need="read", token=identity.token)
                .order_by("pk").values_list("pk", flat=True))


def listed_symbols(identity) -> list[str]:
    """The markets ``resources/list`` names for ``identity``: its symbol restriction, else the
    watched symbols (``marketdata.selectors.watched_symbols``)."""
    return list(identity.symbols) if identity.symbols else md.watched_symbols()


def _concrete(uri: str, name: str, title: str) -> types.Resource:
    return types.Resource(uri=uri, name=name, title=title, mimeType=JSON)


async def resources_for(identity) -> types.ListResourcesResult:
    """``resources/list`` for ``identity``: ``tradingmcp://accounts`` and, per account it may read,
    the account, its open orders and its activity (``account:read``); the ticker and book of the
    listed markets (``market:read``). Titles carry ids and symbols only, never names people wrote."""
    out: list[types.Resource] = []
    if allowed(ACCOUNTS, identity):
        out += [r for r in await SERVER.list_resources() if str(r.uri) == ACCOUNTS]
        for pk in await run_sync(readable_account_ids, identity):
            out += [_concrete(ACCOUNT.format(account_id=pk), f"account-{pk}", f"Account {pk}"),
                    _concrete(OPEN_ORDERS.format(account_id=pk), f"account-{pk}-open-orders", f"Account {pk}: open orders"),
                    _concrete(ACTIVITY.format(account_id=pk), f"account-{pk}-activity", f"Account {pk}: activity")]
    if allowed(TICKER, identity):
        for symbol in listed_symbols(identity):
            out += [_concrete(TICKER.format(symbol=symbol), f"{symbol}-ticker", f"{symbol} ticker"),
                    _concrete(BOOK.format(symbol=symbol), f"{symbol}-book", f"{symbol} order book")]
    return types.ListResourcesResult(resources=out)


async def templates_for(identity) -> types.ListResourceTemplatesResult:
    """``resources/templates/list`` for ``identity``: FastMCP's templates its scopes allow."""
    templates = [t for t in await SERVER.list_resource_templates() if allowed(t.uriTemplate, identity)]
    return types.ListResourceTemplatesResult(resourceTemplates=templates)


CALLER_LISTS["resources/list"] = resources_for
CALLER_LISTS["resources/templates/list"] = templates_for
