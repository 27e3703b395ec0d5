"""Reads and small actions behind the dashboard pages (session users, never agent tokens).

Everything here takes the acting ``user`` and returns only what that user may see (their own
accounts and the accounts granted to them, see ``trading.selectors.accounts_for_user``); numbers
are strings, times ms since the epoch UTC, field names Binance's where Binance has one. The views
in ``dashboard.views`` only parse the request and call these.
"""
from __future__ import annotations

import json
from decimal import Decimal
from urllib.parse import urlsplit

from core.errors import InvalidInput, MarketDataUnavailable
from marketdata import indicators as ind
from marketdata.binance import VenueClient
from marketdata.selectors import klines_fetch, klines_range, order_book, quote_get, symbol_get, watched_symbols
from risk.audit import audit_event_payload
from risk.models import AuditEvent
from trading import portfolio, selectors
from trading.approvals import pending_list
from trading.models import Account, PortfolioSnapshot
from trading.selectors import dstr

CHART_INTERVALS = ("1m", "5m", "15m", "1h", "4h", "1d")
# Indicators the market page draws: overlays on the price pane, RSI and MACD in panes of their own.
CHART_INDICATORS = ["sma", "ema", "bbands", "rsi", "macd"]
ACTIVITY_LIMIT = 50
SIGN_IN_ACTIONS = ("auth.login", "auth.login_failed")


# --- Activity feed -----------------------------------------------------------------------------------

def activity_payload(event) -> dict:
    """One ``AuditEvent`` as the activity feed shows it (``risk.audit.audit_event_payload`` plus the
    account and the risk decision's verdict): ``{id, time (ISO), channel, action, outcome, message,
    token, params, account, risk: {allowed, reason} | null}``."""
    data = audit_event_payload(event)
    decision = event.risk_decision or None
    data.setdefault("account", event.account_id)
    data.setdefault("risk", {"allowed": decision.get("allowed"), "reason": decision.get("reason", "")} if decision else None)
    return data


def activity_list(*, user, account_ids: list[int], limit: int = ACTIVITY_LIMIT) -> list[dict]:
    """The newest audit events the user may see, newest first: every event of the given accounts
    (the caller passes the user's readable accounts) and the user's own account-less actions
    (e.g. an agent's ``mcp.get_ticker``). ``limit`` 1..500."""
    from django.db.models import Q

    if not 1 <= limit <= 500:
        raise InvalidInput(f"limit must be from 1 to 500, got {limit!r}.")
    qs = AuditEvent.objects.filter(Q(account_id__in=account_ids) | Q(account__isnull=True, actor_user=user))
    qs = qs.exclude(action__in=SIGN_IN_ACTIONS)  # the person's own sign-ins are in the admin's audit log, not the feed
    return [activity_payload(e) for e in qs.select_related("actor_token").order_by("-created_at", "-id")[:limit]]


# --- Overview ----------------------------------------------------------------------------------------

def portfolio_curve(*, account: Account, limit: int = 1440) -> list[dict]:
    """The account's ``PortfolioSnapshot`` series, oldest first (at most ``limit``, the newest):
    ``[{"time": s since epoch (chart time), "value", "pnl" (value − first value in the series)}]``."""
    rows = list(PortfolioSnapshot.objects.filter(account=account).order_by("-time").values_list("time", "value")[:limit])
    rows.reverse()
    if not rows:
        return []
    base = rows[0][1]
    out, last_t = [], None
    for t, v in rows:
        sec = int(t.timestamp())
        if sec == last_t:  # the chart needs strictly increasing times
            out[-1] = {"time": sec, "value": dstr(v), "pnl": dstr(v - base)}
            continue
        out.append({"time": sec, "value": dstr(v), "pnl": dstr(v - base)})
        last_t = sec
    return out


def account_overview(*, account: Account, can_trade: bool = True, is_owner: bool = False) -> dict:
    """Everything the overview shows of one account: ``selectors.account_state`` fields plus
    ``portfolio`` (``trading.portfolio.portfolio_get``), ``curve`` (``portfolio_curve``),
    ``openOrders``, ``orders`` (newest 50), ``fills`` (newest 20), ``risk`` (``trading.portfolio.risk_panel``),
    ``pending`` (orders of confirm-mode tokens waiting for a person, ``trading.approvals.pending_list``)
    and ``canTrade`` (the caller's ``can_trade``: owner or trader grantee, who may also decide approvals),
    ``isOwner`` (the caller owns it: may manage who else may use it, ``/accounts/<id>/sharing/``)."""
    state = selectors.account_state(account=account)
    return {
        **state,
        "canTrade": can_trade,
        "isOwner": is_owner,
        "pending": pending_list(account=account),
        "portfolio": portfolio.portfolio_get(account=account),
        "curve": portfolio_curve(account=account),
        "openOrders": selectors.open_orders_list(account=account),
        "orders": selectors.orders_list(account=account, limit=50),
        "fills": selectors.trades_list(account=account, limit=20),
        "risk": portfolio.risk_panel(account=account),
    }


def tickers(symbols: list[str]) -> list[dict]:
    """Cached quotes of ``symbols`` (``marketdata.selectors.quote_get``): ``{symbol, bidPrice,
    askPrice, lastPrice, ...}``, or ``{symbol}`` alone when none is cached yet."""
    out = []
    for s in symbols:
        try:
            out.append(quote_get(s).as_dict())
        except Exception:  # no quote yet / Redis down: the page shows dashes until a push
            out.append({"symbol": s})
    return out


def overview_state(*, user) -> dict:
    """The overview page's state (also its refetch after a reconnect): ``{"user", "symbols",
    "tickers", "accounts": [account_overview], "activity": activity_list}``."""
    accounts = list(selectors.accounts_for_user(user).order_by("id"))
    tradable = set(selectors.accounts_for_user(user, need="trade").values_list("id", flat=True))
    symbols = watched_symbols()
    return {
        "user": user.get_username(),
        "symbols": symbols,
        "tickers": tickers(symbols),
        "accounts": [account_overview(account=a, can_trade=a.pk in tradable, is_owner=a.owner_id == user.pk) for a in accounts],
        "activity": activity_list(user=user, account_ids=[a.pk for a in accounts]),
    }


# --- Market page -------------------------------------------------------------------------------------

def chart_data(*, symbol: str, interval: str = "1m", limit: int = 500) -> dict:
    """Candles of ``symbol``/``interval`` (``marketdata.selectors.klines_range``: stored 1m klines
    plus the forming one, other intervals from the venue) and the indicator series the market page
    draws, computed by ``marketdata.indicators.compute_series`` over the same candles.

    With fewer than ``limit / 2`` stored 1m candles (a fresh install) the venue's 1m klines are used.
    Returns ``{"symbol", "interval", "candles": [{time (s), open, high, low, close, volume,
    closed}], "indicators": {"sma": {"sma20": [{time, value}]...}, "ema": ..., "bbands": {upper,
    middle, lower}, "rsi": {"rsi"}, "macd": {macd, signal, histogram}}, "params": {...}}``; values
    are numbers (the chart library wants numbers; they are display-only), warm-up points left out.
    Raises ``UnknownSymbol``, ``InvalidInput`` (interval not in ``CHART_INTERVALS``, limit not
    50..1000), ``MarketDataUnavailable`` (no candles).
    """
    sym = symbol_get(symbol).symbol
    if interval not in CHART_INTERVALS:
        raise InvalidInput(f"interval must be one of {', '.join(CHART_INTERVALS)}, got {interval!r}.", code=-1120)
    if isinstance(limit, bool) or not isinstance(limit, int) or not 50 <= limit <= 1000:
        raise InvalidInput(f"limit must be an integer from 50 to 1000, got {limit!r}.")
    try:
        rows = klines_range(symbol=sym, interval=interval, limit=limit)["klines"]
        if interval == "1m" and len(rows) < limit // 2:
            # Little stored history yet (fresh install, or the ingester just started): the venue's.
            venue = klines_fetch(symbol=sym, interval=interval, limit=limit)
            if len(venue) > len(rows):
                forming = rows[-1] if rows and not rows[-1]["closed"] else None
                if forming and venue and forming["openTime"] >= venue[-1]["openTime"]:
                    venue = [r for r in venue if r["openTime"] < forming["openTime"]] + [forming]
                rows = venue[-limit:]
    except Exception as exc:
        if isinstance(exc, (InvalidInput, MarketDataUnavailable)):
            raise
        raise MarketDataUnavailable(f"Cannot read {sym} {interval} klines: {type(exc).__name__}: {exc}") from None
    if not rows:
        raise MarketDataUnavailable(f"No {interval} candles of {sym} yet: is the market-data ingester running?")
    candles = [{"time": r["openTime"] // 1000, "open": r["open"], "high": r["high"], "low": r["low"],
                "close": r["close"], "volume": r["volume"], "closed": r["closed"]} for r in rows]
    resolved = ind.resolve(CHART_INDICATORS)
    c = ind.Candles.from_rows([(r["openTime"], r["open"], r["high"], r["low"], r["close"], r["volume"]) for r in rows])
    series = ind.compute_series(c, resolved)
    times = [k["time"] for k in candles]
    out = {}
    for name, lines in series.items():
        out[name] = {key: [{"time": t, "value": float(v)} for t, v in zip(times, arr) if v == v] for key, arr in lines.items()}
    return {"symbol": sym, "interval": interval, "candles": candles, "indicators": out, "params": resolved}


def market_snapshot(*, symbol: str, depth: int = 20, trades: int = 30) -> dict:
    """Order book and recent trades of ``symbol`` from the venue (cached ~1 s in Redis, shared by
    every tab): ``{"symbol", "quote" (``Quote.as_dict`` or null), "bids"/"asks": [[price, qty,
    cumulative qty]] best first, "trades": [{id, price, qty, time, isBuyerMaker}] newest first}``
    (Binance ``GET /api/v3/depth`` and ``GET /api/v3/trades``). Raises ``UnknownSymbol``,
    ``MarketDataUnavailable`` when the venue cannot be reached."""
    sym = symbol_get(symbol).symbol
    try:
        book = order_book(symbol=sym, limit=100)
        raw_trades = VenueClient(max_wait_s=2.0).cached("get_recent_trades", ttl_s=1.0, symbol=sym, limit=trades)
    except Exception as exc:
        raise MarketDataUnavailable(f"Cannot read the {sym} book/trades from the venue: {type(exc).__name__}: {exc}") from None

    def levels(side):
        total, out = Decimal("0"), []
        for p, q in side[:depth]:
            total += Decimal(q)
            out.append([p, q, dstr(total)])
        return out

    try:
        quote = quote_get(sym).as_dict()
    except Exception:
        quote = None
    return {
        "symbol": sym, "quote": quote, "lastUpdateId": book["lastUpdateId"],
        "bids": levels(book["bids"]), "asks": levels(book["asks"]),
        "trades": [{"id": t["id"], "price": t["price"], "qty": t["qty"], "time": t["time"], "isBuyerMaker": t["isBuyerMaker"]}
                   for t in reversed(raw_trades)],
    }


LOOPBACK_HOSTS = {"localhost", "127.0.0.1", "::1"}


def mcp_client_snippets(*, mcp_url: str, token: str, python: str, manage_py: str) -> dict[str, str]:
    """The texts to paste into MCP clients (docs/connect-agents.md), with the endpoint ``mcp_url``
    (``http(s)://host/mcp``) and the agent ``token`` filled in:

    - ``claude_code``: Claude Code's ``.mcp.json`` (streamable HTTP, ``"type": "http"``, the bearer
      token in ``headers``); ``claude_code_cli``: the same through ``claude mcp add``.
    - ``desktop_stdio``: Claude Desktop's ``claude_desktop_config.json`` entry starting
      ``manage.py mcp_stdio`` (``python`` and ``manage_py``: absolute paths of this install) with
      the token in ``env`` (``TRADINGMCP_TOKEN``): for the machine TradingMCP runs on.
    - ``desktop_remote``: the same file bridging to ``mcp_url`` with ``npx mcp-remote`` and
      ``--header Authorization:${AUTH_HEADER}`` (the value in ``env``, as mcp-remote documents;
      ``--allow-http`` for plain HTTP to a host that is not the loopback): from any machine.
    - ``cursor``: Cursor's ``.cursor/mcp.json`` (``url`` + ``headers``).
    - ``inspector``: the MCP Inspector's CLI listing the tools.

    JSON snippets are indented JSON texts; the others are shell command lines."""
    bearer = f"Bearer {token}"
    parts = urlsplit(mcp_url)
    remote_args = ["-y", "mcp-remote", mcp_url, "--header", "Authorization:${AUTH_HEADER}"]
    if parts.scheme == "http" and (parts.hostname or "") not in LOOPBACK_HOSTS:
        remote_args.append("--allow-http")

    def servers(entry: dict) -> str:
        return json.dumps({"mcpServers": {"tradingmcp": entry}}, indent=2)

    return {
        "claude_code": servers({"type": "http", "url": mcp_url, "headers": {"Authorization": bearer}}),
        "claude_code_cli": f'claude mcp add --transport http tradingmcp {mcp_url} --header "Authorization: {bearer}"',
        "desktop_stdio": servers({"command": python, "args": [manage_py, "mcp_stdio"], "env": {"TRADINGMCP_TOKEN": token}}),
        "desktop_remote": servers({"command": "npx", "args": remote_args, "env": {"AUTH_HEADER": bearer}}),
        "cursor": servers({"url": mcp_url, "headers": {"Authorization": bearer}}),
        "inspector": (f'npx @modelcontextprotocol/inspector --cli {mcp_url} --transport http '
                      f'--header "Authorization: {bearer}" --method tools/list'),
    }
