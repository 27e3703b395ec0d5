"""MCP tools for accounts, orders, positions and P&L (declared with ``mcpapi.guard.mcp_tool``; imported by ``mcpapi.mcp``, which django-mcp-server autodiscovers).

Every tool acts only on the calling user's accounts: another user's account id answers "not
found". Quantities are in the base asset, prices and notionals in the quote asset, times in ms
since the epoch (UTC), numbers as strings; field names are Binance's.

The order tools (place_order, place_oco, cancel_order, cancel_all_orders, close_position) act on
the account's venue: a paper account is simulated here; a Binance testnet or live account sends
the request to Binance (``openWorldHint: true``). The reads answer from this server's store.
Result shapes: ``mcpapi.results``; hints: ``mcpapi.guard`` (docs/adr/0008).
"""
from typing import Annotated, Optional, Union

from pydantic import BeforeValidator

from marketdata import cache
from mcpapi import results
from mcpapi.confirm import place_in_chat
from mcpapi.guard import CANCEL, ORDER, READ_OWN_STORE, TOOL_SCOPES, current_call, mcp_tool
from mcpapi.sessions import peer_can_elicit
from risk import access
from risk.models import Channel, Scope
from trading import portfolio, selectors, services
from trading.money import money_input

def _money(value):
    """A money argument checked before pydantic's coercion (``trading.money.money_input``)."""
    return money_input(value, field="this amount")


# A money argument: a decimal string or a JSON number, checked before any coercion.
Money = Annotated[Union[str, float], BeforeValidator(_money)]
Number = Optional[Money]


def _order_read_ahead(args: dict) -> list[str]:
    """place_order reads its symbol's quote keys (``marketdata.selectors.quote_get``): the MCP
    endpoint fetches them with the token check (``marketdata.cache.read_ahead``), one Redis round
    trip less per order. A malformed symbol reads nothing ahead (the tool reports it)."""
    from marketdata.selectors import _symbol_name, quote_keys

    return list(quote_keys(_symbol_name(args.get("symbol"))))


cache.read_ahead_register("place_order", _order_read_ahead)


def _account(account_id):
    """Resolve the account a tool acts on: one the caller (and its token) may use; tools that need
    the ``trade`` scope also need an owner or trader role on it."""
    call = current_call()
    need = "trade" if TOOL_SCOPES.get(call.tool) == Scope.TRADE else "read"
    known = getattr(call.identity, "accounts", None)  # an Identity's: the token's account ids, cached with it
    call.account = selectors.account_get(user=call.user, account_id=account_id, need=need, token=call.token,
                                         token_accounts=known if isinstance(known, frozenset) else None)
    return call


@mcp_tool(scope=Scope.ACCOUNT_READ, title="Account balances, positions and limits", annotations=READ_OWN_STORE)
def get_account(account_id: Optional[int] = None) -> results.Account:
    """Your trading account: balances (free/locked per asset), positions, fee rates and risk limits.

    Args: account_id: one of your accounts (default: your first account).
    """
    call = _account(account_id)
    state = selectors.account_state(account=call.account)
    state["positions"] = access.visible(call.identity, state["positions"])
    return state

@mcp_tool(audit=False, title="Place an order", annotations=ORDER)
def place_order(symbol: str, side: str, type: str = "MARKET", quantity: Number = None,
                quote_order_qty: Number = None, price: Number = None, stop_price: Number = None,
                time_in_force: Optional[str] = None, client_order_id: Optional[str] = None,
                account_id: Optional[int] = None) -> results.PlacedOrder:
    """Place a Binance spot order of any type (risk-checked, audited, idempotent by client_order_id).

    The order goes to the account's venue: simulated for a paper account, sent to Binance for a
    Binance testnet or live account. Idempotency: a retry with the same client_order_id returns
    the first order (duplicate: true) and places nothing; without a client_order_id every call
    places a new order, so set one whenever you might retry.

    Args:
      symbol: e.g. "BTCUSDT". side: "BUY" or "SELL".
      type: MARKET (default) | LIMIT | LIMIT_MAKER | STOP_LOSS | STOP_LOSS_LIMIT | TAKE_PROFIT | TAKE_PROFIT_LIMIT.
      quantity: base-asset amount as a decimal string, e.g. "0.002"; a multiple of the symbol's
        LOT_SIZE stepSize, and price x quantity at least its NOTIONAL minNotional (10 USDT on BTCUSDT).
        The error names the nearest valid value.
      quote_order_qty: MARKET only, instead of quantity: quote-asset amount to spend (BUY) or receive (SELL).
      price: limit price (LIMIT, LIMIT_MAKER, *_LIMIT), a multiple of the PRICE_FILTER tickSize.
      stop_price: trigger price of STOP_LOSS*/TAKE_PROFIT* (triggers on the last trade price).
      time_in_force: GTC (default) | IOC | FOK for LIMIT, STOP_LOSS_LIMIT, TAKE_PROFIT_LIMIT.
      client_order_id: your idempotency key (1-36 of letters, digits, . _ : / -). Retrying with
        the same id returns the first order instead of placing a second one. Always set it.
      account_id: one of your accounts (default: your first).
    Returns the order: orderId, clientOrderId, status (NEW | PARTIALLY_FILLED | FILLED |
    EXPIRED), executedQty, cummulativeQuoteQty, avgPrice, fills [{price, qty, commission,
    commissionAsset, isMaker}]. MARKET walks the order book (max 5 % slippage, the rest expires).
    Refusals (tool error, with the reason): filter failures (-1013), risk limits (names the
    limit, its value and the order's), insufficient balance (-2010), bad input, stale market data.
    """
    call = _account(account_id)

    def place():
        return services.order_place(
            account=call.account, actor_user=call.user, actor_token=call.token, channel=Channel.MCP,
            symbol=symbol, side=side, order_type=type, quantity=quantity, quote_order_qty=quote_order_qty,
            price=price, stop_price=stop_price, time_in_force=time_in_force, client_order_id=client_order_id,
            request_id=call.request_id,
        )

    if call.identity.confirm_orders and peer_can_elicit():  # confirm mode, asked in the chat (mcpapi.confirm)
        return place_in_chat(call, place)
    result = place()
    return {**result.order, "duplicate": result.duplicate}

@mcp_tool(audit=False, title="Place an OCO order pair", annotations=ORDER)
def place_oco(symbol: str, side: str, quantity: Money, price: Money, stop_price: Money,
              stop_limit_price: Number = None, stop_limit_time_in_force: Optional[str] = None,
              list_client_order_id: Optional[str] = None, account_id: Optional[int] = None) -> results.OrderList:
    """Place an OCO (one-cancels-the-other) pair: a take-profit LIMIT_MAKER at price and a
    stop-loss at stop_price (STOP_LOSS, or STOP_LOSS_LIMIT when stop_limit_price is given);
    when one leg fills or triggers, the other expires. Risk-checked, audited, idempotent by
    list_client_order_id (without one, every call places a new pair). Goes to the account's
    venue: simulated for a paper account, sent to Binance for a Binance testnet or live account.

    Args:
      symbol: e.g. "BTCUSDT". side: "SELL" to protect a long position, "BUY" to enter on a
        pull-back or a breakout.
      quantity: base-asset amount for both legs, e.g. "0.002" (LOT_SIZE, NOTIONAL apply).
      price: the LIMIT_MAKER price. stop_price: the stop's trigger price (last trade price).
        A SELL needs price > last price > stop_price; a BUY price < last price < stop_price.
      stop_limit_price: makes the stop leg STOP_LOSS_LIMIT with this limit price.
      stop_limit_time_in_force: GTC (default) | IOC | FOK for the STOP_LOSS_LIMIT leg.
      list_client_order_id: your idempotency key for the list (1-36 of letters, digits, . _ : / -);
        retrying with it returns the first list.
      account_id: one of your accounts (default: your first).
    Returns {orderListId, contingencyType: "OCO", listStatusType, listOrderStatus,
    listClientOrderId, symbol, orders: [limit maker leg, stop leg]}. One balance lock backs
    both legs. Cancel either leg with cancel_order to cancel the list.
    """
    call = _account(account_id)
    return services.oco_place(account=call.account, actor_user=call.user, actor_token=call.token, channel=Channel.MCP,
                              symbol=symbol, side=side, quantity=quantity, price=price, stop_price=stop_price,
                              stop_limit_price=stop_limit_price, stop_limit_time_in_force=stop_limit_time_in_force,
                              list_client_order_id=list_client_order_id, request_id=call.request_id)

@mcp_tool(audit=False, title="Cancel an order", annotations=CANCEL)
def cancel_order(symbol: str, order_id: Optional[int] = None, client_order_id: Optional[str] = None,
                 account_id: Optional[int] = None) -> results.OrderResult:
    """Cancel one of your open orders by order_id or client_order_id; its locked balance is
    released. Canceling a leg of an OCO cancels both legs. Returns the order (status CANCELED).
    Idempotent: canceling it again changes nothing (error -2011). Sent to Binance for a Binance
    testnet or live account. Errors: -2013 order does not exist, -2011 the order is no longer open.
    """
    call = _account(account_id)
    return services.order_cancel(account=call.account, actor_user=call.user, actor_token=call.token,
                                 channel=Channel.MCP, symbol=symbol, order_id=order_id,
                                 client_order_id=client_order_id, request_id=call.request_id)

@mcp_tool(audit=False, title="Cancel all open orders of a symbol", annotations=CANCEL)
def cancel_all_orders(symbol: str, account_id: Optional[int] = None) -> results.Canceled:
    """Cancel every open order of one symbol. Returns {"accountId", "symbol", "canceled": [orders]}
    (empty when none was open). Sent to Binance for a Binance testnet or live account."""
    call = _account(account_id)
    out = services.order_cancel_all(account=call.account, actor_user=call.user, actor_token=call.token,
                                    channel=Channel.MCP, symbol=symbol, request_id=call.request_id)
    return {"accountId": call.account.pk, "symbol": symbol.upper(), "canceled": out}

@mcp_tool(scope=Scope.ACCOUNT_READ, title="One order", annotations=READ_OWN_STORE)
def get_order(order_id: Optional[int] = None, client_order_id: Optional[str] = None,
              symbol: Optional[str] = None, account_id: Optional[int] = None) -> results.OrderResult:
    """One of your orders, by order_id or client_order_id, with its fills (Binance names)."""
    call = _account(account_id)
    return access.order_visible(call.identity, selectors.order_get(account=call.account, order_id=order_id,
                                                                   client_order_id=client_order_id, symbol=symbol))

@mcp_tool(scope=Scope.ACCOUNT_READ, title="Open orders", annotations=READ_OWN_STORE)
def list_open_orders(symbol: Optional[str] = None, account_id: Optional[int] = None) -> results.Orders:
    """Your open orders (NEW, PARTIALLY_FILLED), oldest first; stops show isWorking false until triggered."""
    call = _account(account_id)
    return {"accountId": call.account.pk, "orders": selectors.open_orders_list(
        account=call.account, symbol=symbol, symbols=access.symbols_default(call.identity))}

@mcp_tool(scope=Scope.ACCOUNT_READ, title="Recent orders", annotations=READ_OWN_STORE)
def list_orders(symbol: Optional[str] = None, limit: int = 50, account_id: Optional[int] = None) -> results.Orders:
    """Your most recent orders, newest first, with their fills.

    Args: symbol: only this symbol (optional); limit: 1..500 (default 50); account_id: one of
    your accounts (default: your first).
    """
    call = _account(account_id)
    return {"accountId": call.account.pk, "orders": selectors.orders_list(
        account=call.account, symbol=symbol, limit=limit, symbols=access.symbols_default(call.identity))}

@mcp_tool(scope=Scope.ACCOUNT_READ, title="Trade history (fills)", annotations=READ_OWN_STORE)
def get_trade_history(symbol: Optional[str] = None, limit: int = 100, account_id: Optional[int] = None) -> results.Trades:
    """Your fills (trades), newest first: price, qty, quoteQty, commission, commissionAsset,
    isMaker, realizedPnl (quote asset, before fees). limit 1..1000 (default 100)."""
    call = _account(account_id)
    return {"accountId": call.account.pk, "trades": selectors.trades_list(
        account=call.account, symbol=symbol, limit=limit, symbols=access.symbols_default(call.identity))}

@mcp_tool(scope=Scope.ACCOUNT_READ, title="Positions", annotations=READ_OWN_STORE)
def get_positions(account_id: Optional[int] = None) -> results.Positions:
    """Your positions per symbol: quantity (base), avgEntryPrice, markPrice (best bid),
    unrealizedPnl and realizedPnl (quote asset)."""
    call = _account(account_id)
    return {"accountId": call.account.pk, "positions": access.visible(call.identity, portfolio.positions_list(account=call.account))}

@mcp_tool(scope=Scope.ACCOUNT_READ, title="Portfolio value", annotations=READ_OWN_STORE)
def get_portfolio(account_id: Optional[int] = None) -> results.Portfolio:
    """Your account valued in its quote asset (USDT): total value, each asset's free, locked,
    price and value, positions and P&L."""
    call = _account(account_id)
    out = portfolio.portfolio_get(account=call.account)
    out["positions"] = access.visible(call.identity, out["positions"])
    return out

@mcp_tool(scope=Scope.ACCOUNT_READ, title="Profit and loss", annotations=READ_OWN_STORE)
def get_pnl(period: str = "1d", account_id: Optional[int] = None) -> results.Pnl:
    """Profit and loss over a period: today | 1d | 7d | 30d | all. Realized P&L and fees of the
    period's fills, unrealized P&L now, value change since the period's first snapshot, and daily rollups."""
    call = _account(account_id)
    return portfolio.pnl_get(account=call.account, period=period)

@mcp_tool(audit=False, title="Close a position", annotations=ORDER)
def close_position(symbol: str, client_order_id: Optional[str] = None, account_id: Optional[int] = None) -> results.PlacedOrder:
    """Close your position in a symbol: cancel its open orders, then MARKET SELL all free base
    asset (rounded down to the lot step). Returns the sell order. With a confirm-mode token the
    open orders stay and only the free base's sell waits for approval (PENDING_APPROVAL); cancel
    them first (cancels need no approval) to sell everything. Sent to Binance for a Binance
    testnet or live account. Idempotent by client_order_id, like place_order."""
    call = _account(account_id)
    result = services.position_close(account=call.account, actor_user=call.user, actor_token=call.token,
                                     channel=Channel.MCP, symbol=symbol, client_order_id=client_order_id,
                                     request_id=call.request_id)
    return {**result.order, "duplicate": result.duplicate}
