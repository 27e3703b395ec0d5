"""MCP prompts (MCP spec 2025-06-18, "Server Features → Prompts"), declared on the one server
(``mcpapi.guard.SERVER``) with FastMCP's public ``prompt()`` decorator. Each is built from live
data the caller may read, gathered inside the guard (``mcpapi.guard.guard``: the token's scopes,
symbol restriction and account grants, one ``mcp.prompt.<name>`` audit event, the trust envelope):

- ``market_brief(symbol, interval="1h", indicators=None)``: quote, 24 h statistics and the
  indicator set (``marketdata.selectors.market_data`` / ``indicators_compute``); ``market:read``.
- ``portfolio_review(account_id=None)``: value, assets, positions, 7-day P&L, open orders and the
  risk limits (``trading.portfolio``, ``risk.selectors.risk_limits_get``); ``account:read``.
- ``pre_trade_checklist(symbol, side="BUY", quantity=None, account_id=None)``: every risk limit
  of the account by name with the order's figures against it, the symbol's trading rules, the
  quote and the free balance; ``account:read`` and ``market:read``.
- ``eod_pnl_report(account_id=None)``: today's (UTC) realized P&L, fees, unrealized P&L, value
  change and fills (``trading.portfolio.pnl_get``, ``trading.selectors.trades_list``); ``account:read``.

Arguments are strings (the spec's); ``account_id`` defaults to the caller's first account,
``indicators`` is a comma-separated list of ``marketdata.indicators.INDICATORS``. Each prompt
is one user message: the task, the live figures, then the gathered data as JSON (with its
``_tradingmcp_security`` block when it carries text from outside this server). ``prompts/list``
shows the prompts the token's scopes allow (``mcpapi.guard.CALLER_LISTS``). An unknown prompt,
a missing or bad argument, or a refusal answers JSON-RPC error ``-32602`` (``mcpapi.endpoint``
gives the SDK's code 0 that code).
"""
from __future__ import annotations

import json
from decimal import Decimal, InvalidOperation
from typing import Annotated, Optional

from mcp import types
from pydantic import Field

from marketdata import selectors as md
from marketdata.indicators import INDICATORS
from mcpapi.guard import CALLER_LISTS, SERVER, check_access, current_call, guard
from risk import access
from risk import selectors as risk_selectors
from risk.models import Scope
from risk.trust import SECURITY_KEY
from trading import portfolio, selectors
from core.errors import InvalidInput

# prompt name → the scopes a token needs to see and get it.
PROMPT_SCOPES = {
    "market_brief": (Scope.MARKET_READ,),
    "portfolio_review": (Scope.ACCOUNT_READ,),
    "pre_trade_checklist": (Scope.ACCOUNT_READ, Scope.MARKET_READ),
    "eod_pnl_report": (Scope.ACCOUNT_READ,),
}
LIMIT_NAMES = {  # risk.selectors.risk_limits_get key → what it bounds
    "maxOrderNotional": "one order's notional",
    "maxPositionNotional": "one symbol's position at mark price",
    "maxTotalExposure": "all positions together at mark price",
    "maxOpenOrders": "open orders at once",
    "maxOrdersPerMinute": "orders placed in the trailing 60 s",
    "allowedSymbols": "symbols the account may trade (empty = all)",
    "priceBandPct": "how far (%) a limit/stop price may be from the last price",
    "maxDailyLoss": "today's realized loss incl. fees before trading halts",
}
FILLS_SHOWN = 20

Symbol = Annotated[str, Field(description="A spot symbol, e.g. BTCUSDT (completion: symbols starting with what you typed).")]
AccountId = Annotated[Optional[str], Field(description="One of your account ids (default: your first account).")]


# --- helpers ------------------------------------------------------------------------------------------

def _account_of_call(account_id):
    call = current_call()
    call.account = selectors.account_get(user=call.user, account_id=account_id or None, need="read", token=call.token)
    return call.account


def _indicator_names(indicators: str | None) -> list[str] | None:
    names = [n.strip().lower() for n in (indicators or "").split(",") if n.strip()]
    return names or None


def _quantity(quantity: str | None) -> Decimal | None:
    if quantity is None or not str(quantity).strip():
        return None
    try:
        value = Decimal(str(quantity).strip())
    except InvalidOperation:
        raise InvalidInput(f"quantity must be a decimal number of the base asset such as '0.002', got {quantity!r}.") from None
    if not value.is_finite() or value <= 0:
        raise InvalidInput(f"quantity must be a positive decimal number, got {quantity!r}.")
    return value


def _or(value, unlimited: str = "unlimited") -> str:
    return unlimited if value is None or value == [] else (", ".join(value) if isinstance(value, list) else str(value))


def _message(lines: list[str], data: dict) -> str:
    """The text of the prompt's one user message: the task and figures (``lines``), then ``data``
    as JSON; when ``data`` carries outside text (its ``_tradingmcp_security`` block), the block's
    instructions come first. (FastMCP makes a returned string one user message.)"""
    head = [data[SECURITY_KEY]["instructions"], ""] if SECURITY_KEY in data else []
    text = "\n".join(head + lines + ["", "Data (JSON, read from this server just now):",
                                     json.dumps(data, indent=1, default=str)])
    return text


# --- the data each prompt is built from, gathered inside the guard -------------------------------------

def _market_brief(symbol: str, interval: str = "1h", indicators: str | None = None) -> dict:
    sym = md.symbol_get(symbol)
    md.interval_check(interval)
    return {"symbol": sym.symbol, "quoteAsset": sym.quote_asset, "interval": interval,
            "market": md.market_data([sym.symbol])[0],
            "indicators": md.indicators_compute(symbol=sym.symbol, interval=interval, indicators=_indicator_names(indicators))}


def _symbols_of_call() -> list[str] | None:
    """The symbols the caller's token is restricted to (None: all), as the tools narrow reads."""
    return access.symbols_default(current_call().identity)


def _portfolio_review(account_id: str | None = None) -> dict:
    account = _account_of_call(account_id)
    held = portfolio.portfolio_get(account=account)
    held["positions"] = access.visible(current_call().identity, held["positions"])
    return {"accountId": account.pk, "portfolio": held,
            "pnl7d": portfolio.pnl_get(account=account, period="7d"),
            "openOrders": selectors.open_orders_list(account=account, symbols=_symbols_of_call()),
            "riskLimits": risk_selectors.risk_limits_get(account=account)}


def _pre_trade_checklist(symbol: str, side: str = "BUY", quantity: str | None = None, account_id: str | None = None) -> dict:
    call = current_call()
    check_access(call.identity, Scope.MARKET_READ, {"symbol": symbol}, call.tool)  # market data, like get_ticker
    account = _account_of_call(account_id)
    side = str(side or "").strip().upper()
    if side not in ("BUY", "SELL"):
        raise InvalidInput(f"side must be BUY or SELL, got {side!r}.")
    qty = _quantity(quantity)
    sym = md.symbol_get(symbol)
    quote = md.quote_get(sym.symbol).as_dict()
    price = Decimal(quote["askPrice"] if side == "BUY" else quote["bidPrice"])
    positions = {p["symbol"]: p for p in portfolio.positions_list(account=account)}
    return {
        "accountId": account.pk, "symbol": sym.symbol, "side": side, "quantity": None if qty is None else format(qty, "f"),
        "estimatedPrice": format(price, "f"),
        "estimatedNotional": None if qty is None else format((qty * price).quantize(Decimal("0.00000001")), "f"),
        "quote": quote,
        "rules": {"baseAsset": sym.base_asset, "quoteAsset": sym.quote_asset, "tickSize": md.dstr(sym.tick_size),
                  "stepSize": md.dstr(sym.step_size), "minQty": md.dstr(sym.min_qty), "maxQty": md.dstr(sym.max_qty),
                  "minNotional": md.dstr(sym.min_notional), "orderTypes": sym.order_types},
        "balances": selectors.balances_list(account=account),
        "position": positions.get(sym.symbol),
        "openOrders": len(selectors.open_orders_list(account=account, symbols=_symbols_of_call())),
        "takerFeeRate": selectors.dstr(account.taker_fee_rate),
        "riskLimits": risk_selectors.risk_limits_get(account=account),
    }


def _eod_pnl_report(account_id: str | None = None) -> dict:
    account = _account_of_call(account_id)
    pnl = portfolio.pnl_get(account=account, period="today")
    fills = [f for f in selectors.trades_list(account=account, limit=1000, symbols=_symbols_of_call()) if f["time"] >= pnl["from"]]
    return {"accountId": account.pk, "pnl": pnl, "fills": fills,
            "positions": access.visible(current_call().identity, portfolio.positions_list(account=account))}


gather_market_brief = guard(_market_brief, name="prompt.market_brief", scope=Scope.MARKET_READ)
gather_portfolio_review = guard(_portfolio_review, name="prompt.portfolio_review", scope=Scope.ACCOUNT_READ)
gather_pre_trade_checklist = guard(_pre_trade_checklist, name="prompt.pre_trade_checklist", scope=Scope.ACCOUNT_READ)
gather_eod_pnl_report = guard(_eod_pnl_report, name="prompt.eod_pnl_report", scope=Scope.ACCOUNT_READ)


# --- the prompts ---------------------------------------------------------------------------------------

@SERVER.prompt(name="market_brief", title="Market brief",
               description="A short market brief of one symbol from its live quote, 24 h statistics and technical "
                           "indicators (RSI, MACD, SMAs, Bollinger bands ... with their signals).")
async def market_brief(
    symbol: Symbol,
    interval: Annotated[str, Field(description="Kline interval of the indicators: 1m 3m 5m 15m 30m 1h 2h 4h 6h 8h 12h 1d 3d 1w 1M (default 1h).")] = "1h",
    indicators: Annotated[Optional[str], Field(description="Comma-separated indicator names (default all): " + ", ".join(INDICATORS) + ".")] = None,
) -> str:
    """The market-brief prompt of ``symbol``."""
    d = await gather_market_brief(symbol=symbol, interval=interval, indicators=indicators)
    m, ind, q = d["market"], d["indicators"], d["quoteAsset"]
    lines = [f"Write a short market brief of {d['symbol']} for a spot trader: trend, momentum, volatility, "
             "key levels and what would change the view. Use only the figures below; say when data is missing.",
             "", f"Live figures (prices in {q}):",
             f"- last price {m.get('lastPrice')}, bid {m.get('bidPrice')} / ask {m.get('askPrice')} "
             f"(spread {m.get('spread')}, {m.get('spreadBps')} bps)",
             f"- 24 h: change {m.get('priceChange')} ({m.get('priceChangePercent')} %), high {m.get('highPrice')}, "
             f"low {m.get('lowPrice')}, volume {m.get('volume')} (base asset), quote volume {m.get('quoteVolume')}",
             f"- {d['interval']} indicators at the latest closed candle (close {ind['close']}, {ind['candles']} candles):"]
    for name, values in ind["values"].items():
        shown = ", ".join(f"{k} {v}" for k, v in values.items() if k != "params")
        lines.append(f"  - {name} {values['params'] or ''}: {shown}")
    for s in ind["signals"]:
        lines.append(f"  - signal {s.get('indicator')}: {s.get('signal')} ({s.get('event')})")
    return _message(lines, d)


@SERVER.prompt(name="portfolio_review", title="Portfolio and risk review",
               description="Review one account's portfolio and risk: value, assets, positions with P&L, 7-day P&L, "
                           "open orders and every risk limit.")
async def portfolio_review(account_id: AccountId = None) -> str:
    """The portfolio-review prompt of ``account_id``."""
    d = await gather_portfolio_review(account_id=account_id)
    p, pnl, lim = d["portfolio"], d["pnl7d"], d["riskLimits"]
    q = p["quoteAsset"]
    lines = [f"Review the portfolio and risk of account {d['accountId']}: concentration, exposure against the "
             "limits, unrealized and realized P&L, stale open orders; end with concrete, limit-respecting suggestions.",
             "", f"Live figures ({q}):", f"- total value {p['value']} {q}, unrealized P&L {p['unrealizedPnl']}, "
             f"realized P&L {p['realizedPnl']}"]
    lines += [f"- {a['asset']}: free {a['free']}, locked {a['locked']}, price {a['price']}, value {a['value']}" for a in p["assets"]]
    lines += [f"- position {x['symbol']}: quantity {x['quantity']} at avg entry {x['avgEntryPrice']}, mark {x['markPrice']}, "
              f"unrealized {x['unrealizedPnl']}, realized {x['realizedPnl']}" for x in p["positions"]]
    lines += [f"- last 7 days: realized {pnl['realizedPnl']}, fees {pnl['fees']}, value change {_or(pnl['change'], 'n/a')}",
              f"- open orders: {len(d['openOrders'])}", f"- trading state: {lim['tradingState']}"]
    lines += [f"- risk limit {k} ({what}): {_or(lim[k])}" for k, what in LIMIT_NAMES.items()]
    return _message(lines, d)


@SERVER.prompt(name="pre_trade_checklist", title="Pre-trade checklist",
               description="A checklist to go through before placing an order: every risk limit of the account by name "
                           "with the order's figures against it, the symbol's trading rules, the live quote and balance.")
async def pre_trade_checklist(
    symbol: Symbol,
    side: Annotated[str, Field(description="BUY or SELL (default BUY).")] = "BUY",
    quantity: Annotated[Optional[str], Field(description="Base-asset quantity, e.g. 0.002 (optional).")] = None,
    account_id: AccountId = None,
) -> str:
    """The pre-trade checklist prompt."""
    d = await gather_pre_trade_checklist(symbol=symbol, side=side, quantity=quantity, account_id=account_id)
    r, lim, q = d["rules"], d["riskLimits"], d["rules"]["quoteAsset"]
    order = f"{d['side']} {d['quantity']} {d['symbol']}" if d["quantity"] else f"{d['side']} {d['symbol']}"
    lines = [f"Before placing {order} on account {d['accountId']}, check each item below, say for each whether the "
             "order passes, and stop at the first failure with the fix (a smaller quantity, another price).",
             "", f"1. Trading state is {lim['tradingState']} (orders need ACTIVE).",
             f"2. Live quote: bid {d['quote']['bidPrice']} / ask {d['quote']['askPrice']} {q}; a MARKET {d['side']} fills "
             f"near {d['estimatedPrice']}" + (f", notional ≈ {d['estimatedNotional']} {q}." if d["estimatedNotional"] else "."),
             f"3. Symbol rules: price step (tickSize) {r['tickSize']}, quantity step (stepSize) {r['stepSize']}, "
             f"minQty {r['minQty']}, maxQty {r['maxQty']}, minNotional {r['minNotional']} {q}.",
             "4. Free balances: " + (", ".join(f"{b['asset']} {b['free']}" for b in d["balances"]) or "none")
             + f"; taker fee rate {d['takerFeeRate']}.",
             f"5. Position in {d['symbol']}: " + (f"{d['position']['quantity']} at avg entry {d['position']['avgEntryPrice']}"
                                                  if d["position"] else "none") + f"; open orders on the account: {d['openOrders']}.",
             "6. Risk limits of the account (null = unlimited):"]
    lines += [f"   - {k} = {_or(lim[k])}: {what}" for k, what in LIMIT_NAMES.items()]
    return _message(lines, d)


@SERVER.prompt(name="eod_pnl_report", title="End-of-day P&L report",
               description="Today's (UTC) profit and loss report of one account: realized P&L, fees, unrealized P&L, "
                           "value change and the day's fills.")
async def eod_pnl_report(account_id: AccountId = None) -> str:
    """The end-of-day P&L report prompt of ``account_id``."""
    d = await gather_eod_pnl_report(account_id=account_id)
    pnl, q = d["pnl"], d["pnl"]["quoteAsset"]
    lines = [f"Write the end-of-day P&L report of account {d['accountId']} for today (UTC): what was made or lost "
             "and why (which fills, which open positions), fees paid, and what to watch tomorrow.",
             "", f"Live figures ({q}):",
             f"- realized P&L {pnl['realizedPnl']}, fees {pnl['fees']}, net realized {pnl['netRealized']}",
             f"- unrealized P&L now {pnl['unrealizedPnl']}, value now {pnl['value']} (start of day "
             f"{_or(pnl['startValue'], 'n/a')}, change {_or(pnl['change'], 'n/a')})",
             f"- fills today: {len(d['fills'])}"]
    lines += [f"  - {f['side']} {f['qty']} {f['symbol']} at {f['price']}, realized {f['realizedPnl']}, "
              f"fee {f['commission']} {f['commissionAsset']}" for f in d["fills"][:FILLS_SHOWN]]
    lines += [f"- open position {x['symbol']}: {x['quantity']} (unrealized {x['unrealizedPnl']})"
              for x in d["positions"] if Decimal(x["quantity"] or "0")]
    return _message(lines, d)


# --- per-caller listing ----------------------------------------------------------------------------

def prompt_allowed(name: str, identity) -> bool:
    """May ``identity`` see and get prompt ``name`` (every scope it needs)?"""
    scopes = PROMPT_SCOPES.get(name)
    return identity is not None and scopes is not None and all(identity.has_scope(s) for s in scopes)


async def prompts_for(identity) -> types.ListPromptsResult:
    """``prompts/list`` for ``identity``: FastMCP's prompts its scopes allow."""
    return types.ListPromptsResult(prompts=[p for p in await SERVER.list_prompts() if prompt_allowed(p.name, identity)])


CALLER_LISTS["prompts/list"] = prompts_for
