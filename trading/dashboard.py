"""Reads and small actions behind the dashboard pages (session users, never agent tokens).

Everything here takes the acting ``user`` and returns only what that user may see (their own
accounts and the accounts granted to them, see ``trading.selectors.accounts_for_user``); numbers
are strings, times ms since the epoch UTC, field names Binance's where Binance has one. The views
in ``trading.views`` only parse the request and call these.
"""
from __future__ import annotations

import json
from datetime import timedelta
from decimal import Decimal
from urllib.parse import urlsplit

from django.utils import timezone

from trading import portfolio, selectors
from trading.errors import InvalidInput, MarketDataUnavailable, NotFound
from trading.models import Account, Order, PortfolioSnapshot
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
    from risk.audit import audit_event_payload

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

    from risk.models import AuditEvent

    if not 1 <= limit <= 500:
        raise InvalidInput(f"limit must be from 1 to 500, got {limit!r}.")
    qs = AuditEvent.objects.filter(Q(account_id__in=account_ids) | Q(account__isnull=True, actor_user=user))
    qs = qs.exclude(action__in=SIGN_IN_ACTIONS)  # the person's own sign-ins are in the admin's audit log, not the feed
    return [activity_payload(e) for e in qs.select_related("actor_token").order_by("-created_at", "-id")[:limit]]


# --- Risk panel --------------------------------------------------------------------------------------

def risk_panel(*, account: Account) -> dict:
    """The account's trading state and each ``RiskLimit`` with its current usage (quote asset):

    ``{"tradingState", "haltedReason", "haltedUntil" (ms|null), "breakerTripped" (the daily-loss
    breaker halted it), "limits": [{"name", "limit" (str|null = unlimited), "usage" (str|null),
    "pct" (0..100 float|null), "unit", "note"}], "locks": protection_locks}``. Usage is what ``risk.services.risk_check``
    measures: open orders, orders in the trailing 60 s, the largest position and the sum of
    positions at the mark price (``trading.portfolio.mark_price``), and today's loss
    (``risk.services.daily_loss``). ``max_order_notional`` and ``price_band_pct`` apply per order
    (no running usage).
    """
    from risk.models import RiskLimit
    from risk.services import daily_loss

    lim = RiskLimit.objects.filter(account=account).first() or RiskLimit(account=account)
    quote = account.quote_asset
    now = timezone.now()
    locks = protection_locks(account=account, now=now)
    positions = portfolio.positions_list(account=account)
    values = [Decimal(p["value"]) for p in positions if p["value"] is not None and Decimal(p["quantity"]) > 0]
    largest = max(values, default=Decimal("0"))
    exposure = sum(values, Decimal("0"))
    open_count = Order.objects.filter(account=account, status__in=Order.OPEN_STATUSES).count()
    recent = Order.objects.filter(account=account, created_at__gte=now - timedelta(seconds=60)).count()
    loss = daily_loss(account=account)

    def row(name, limit, usage, unit, note=""):
        pct = None
        if limit is not None and usage is not None:
            pct = 100.0 if not limit else min(100.0, float(Decimal(usage) / Decimal(limit) * 100))
        if usage is not None:
            usage = dstr(Decimal(usage).quantize(Decimal("0.01"))) if unit == quote else str(usage)
        limit_text = None if limit is None else format(Decimal(limit).normalize(), "f")
        return {"name": name, "limit": limit_text, "usage": usage, "pct": pct, "unit": unit, "note": note}

    halted_until = lim.halted_until
    if lim.trading_state == "HALTED" and halted_until is not None and now >= halted_until:
        state, reason, halted_until = "ACTIVE", "", None  # risk_check lifts it at the next order
    else:
        state, reason = lim.trading_state, lim.halted_reason
    return {
        "accountId": account.pk,
        "tradingState": state,
        "haltedReason": reason,
        "haltedUntil": int(halted_until.timestamp() * 1000) if halted_until else None,
        "breakerTripped": state == "HALTED" and reason.startswith("daily loss"),
        "allowedSymbols": list(lim.allowed_symbols or []),
        "limits": [
            row("max_daily_loss", lim.max_daily_loss, loss, quote, "today's realized loss incl. fees (UTC day)"),
            row("max_total_exposure", lim.max_total_exposure, exposure, quote, "sum of positions at mark"),
            row("max_position_notional", lim.max_position_notional, largest, quote, "largest position at mark"),
            row("max_open_orders", lim.max_open_orders, open_count, "orders"),
            row("max_orders_per_minute", lim.max_orders_per_minute, recent, "orders", "trailing 60 s"),
            row("max_order_notional", lim.max_order_notional, None, quote, "per order"),
            row("price_band_pct", lim.price_band_pct, None, "%", "limit/stop price vs last"),
        ],
        "locks": locks,
    }


def protection_locks(*, account: Account, now=None) -> list[dict]:
    """The account's active protection locks (``risk.models.ProtectionLock`` not yet expired nor
    released by an admin), longest-lasting first: ``[{"id", "symbol" (null = the whole account),
    "protection" (kind: cooldown | stoploss_guard | max_drawdown | low_profit), "scope", "reason",
    "lockedAt", "until" (ms since the epoch UTC), "blocks": "BUY"}]``. As in freqtrade a lock refuses
    new entries (BUY) only; exits stay allowed (``risk.protections``)."""
    from risk.models import ProtectionLock

    now = now or timezone.now()
    qs = (ProtectionLock.objects.select_related("protection")
          .filter(account=account, until__gt=now, released_at__isnull=True).order_by("-until", "-id"))
    return [{"id": lock.pk, "symbol": lock.symbol or None, "protection": lock.protection.kind,
             "scope": lock.protection.scope, "reason": lock.reason,
             "lockedAt": int(lock.locked_at.timestamp() * 1000), "until": int(lock.until.timestamp() * 1000),
             "blocks": "BUY"} for lock in qs]


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
    ``openOrders``, ``orders`` (newest 50), ``fills`` (newest 20), ``risk`` (``risk_panel``),
    ``pending`` (orders of confirm-mode tokens waiting for a person, ``trading.approvals.pending_list``)
    and ``canTrade`` (the caller's ``can_trade``: owner or trader grantee, who may also decide approvals),
    ``isOwner`` (the caller owns it: may manage who else may use it, ``/accounts/<id>/sharing/``)."""
    from trading.approvals import pending_list

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
        "risk": risk_panel(account=account),
    }


def tickers(symbols: list[str]) -> list[dict]:
    """Cached quotes of ``symbols`` (``marketdata.selectors.quote_get``): ``{symbol, bidPrice,
    askPrice, lastPrice, ...}``, or ``{symbol}`` alone when none is cached yet."""
    from marketdata.selectors import quote_get

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
    from marketdata.selectors import watched_symbols

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
    from marketdata import indicators as ind
    from marketdata.selectors import klines_fetch, klines_range, symbol_get

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
    from marketdata.binance import VenueClient
    from marketdata.selectors import order_book, quote_get, symbol_get

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


# --- Agent tokens ------------------------------------------------------------------------------------

def token_as_dict(token) -> dict:
    """An agent token as the tokens page lists it (never the secret, only its prefix)."""
    return {
        "id": token.pk, "name": token.name, "prefix": token.prefix, "scopes": list(token.scopes or []),
        "accounts": [a.pk for a in token.accounts.all()], "symbols": list(token.symbols or []),
        "createdAt": token.created_at, "expiresAt": token.expires_at, "lastUsedAt": token.last_used_at,
        "revokedAt": token.revoked_at, "active": token.is_active, "confirmOrders": bool(token.confirm_orders),
    }


def tokens_list(*, user) -> list[dict]:
    """The user's bearer agent tokens, newest first (``token_as_dict``); the permission records of
    OAuth grants are listed with their grants (``oauth.selectors.oauth_grants_list``)."""
    from risk.models import AgentToken

    tokens = AgentToken.objects.filter(user=user, oauth_grant__isnull=True)
    return [token_as_dict(t) for t in tokens.prefetch_related("accounts").order_by("-created_at", "-id")]


def token_create(*, user, name: str, scopes: list[str], expires_days: int | None = None,
                 account_ids: list[int] | None = None, symbols: list[str] | None = None, confirm_orders: bool = False):
    """Create an agent token for ``user`` through ``risk.services.agent_token_create``, optionally
    restricted to some of the user's accounts and some symbols, and in confirm mode
    (``confirm_orders``: its orders wait for a person's approval, ``trading.approvals``). Returns
    ``(AgentToken, plain)``: the plain token is shown once and never stored.

    Raises ``InvalidInput`` for an empty/long name, no or unknown scope, ``expires_days`` outside
    1..3650, an unknown symbol; ``NotFound`` for an account the user may not use. Nothing is
    created when it raises.
    """
    from django.db import transaction

    from marketdata.selectors import symbol_get
    from risk.services import agent_token_create

    name = (name or "").strip()
    if not name or len(name) > 100:
        raise InvalidInput("Give the token a name of 1 to 100 characters (e.g. 'claude-desktop').")
    if not scopes:
        raise InvalidInput("Pick at least one scope (market:read, account:read, trade).")
    expires_at = None
    if expires_days is not None:
        if isinstance(expires_days, bool) or not isinstance(expires_days, int) or not 1 <= expires_days <= 3650:
            raise InvalidInput(f"expires_days must be from 1 to 3650, got {expires_days!r}.")
        expires_at = timezone.now() + timedelta(days=expires_days)
    accounts = []
    for account_id in account_ids or []:
        accounts.append(selectors.account_get(user=user, account_id=account_id))
    names = [symbol_get(s).symbol for s in (symbols or [])]
    with transaction.atomic():
        token, key = agent_token_create(user=user, name=name, expires_at=expires_at, scopes=list(scopes),
                                        confirm_orders=bool(confirm_orders))
        if accounts:
            token.accounts.set(accounts)
        if names:
            token.symbols = names
            token.save(update_fields=["symbols"])
    return token, key


def token_revoke(*, user, token_id) -> dict:
    """Revoke one of the user's tokens (``risk.services.agent_token_revoke``; it stops
    authenticating at once). Raises ``NotFound`` for a token that is not the user's."""
    from risk.models import AgentToken
    from risk.services import agent_token_revoke

    try:
        token = AgentToken.objects.get(pk=int(token_id), user=user)
    except (AgentToken.DoesNotExist, ValueError, TypeError):
        raise NotFound("Token not found among your tokens.") from None
    return token_as_dict(agent_token_revoke(token=token))


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
