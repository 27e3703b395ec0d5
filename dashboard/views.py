"""Dashboard pages and their JSON endpoints (session login). Thin: parse the request, call
``dashboard.selectors`` / ``risk.services``, answer. Orders, cancels and approval decisions go
through the REST API (``/api/v1/``, ``api.views``), which the dashboard's scripts call with the
session and its CSRF token. Errors are the services'
typed errors as ``{"code", "msg", ...}`` with their HTTP status (4xx), and change nothing."""
from __future__ import annotations

import sys

from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.http import Http404, JsonResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_POST

from core.errors import InvalidInput, TradingError
from core.views import post_action
from dashboard import selectors as pages
from marketdata.selectors import symbol_get, watched_symbols
from oauth.selectors import oauth_grants_list
from risk.models import ALL_SCOPES, Channel, GrantRole
from risk.services import account_grant_remove, account_grant_set, account_grants_list, account_set_state
from trading import portfolio, selectors, tokens
from trading.services import account_halt as halt


def _error(exc: TradingError) -> JsonResponse:
    return JsonResponse(exc.as_dict(), status=exc.http_status)


def _int_arg(value, name: str, default: int) -> int:
    if value in (None, ""):
        return default
    try:
        return int(value)
    except (TypeError, ValueError):
        raise InvalidInput(f"{name} must be an integer, got {value!r}.") from None


# --- Pages -------------------------------------------------------------------------------------------

@login_required
@require_GET
def dashboard_view(request):
    """The overview: portfolio, balances, positions, orders, fills, risk, activity (live)."""
    return render(request, "dashboard/dashboard.html", {"state": pages.overview_state(user=request.user), "page": "overview"})


@login_required
@require_GET
def market_view(request, symbol: str | None = None):
    """The market page of one symbol: chart, book, trades, order ticket."""
    if symbol is None:
        return redirect("market", symbol=watched_symbols()[0])
    try:
        sym = symbol_get(symbol)
    except TradingError:
        raise Http404(f"Unknown symbol {symbol!r}") from None
    if sym.symbol != symbol:
        return redirect("market", symbol=sym.symbol)
    accounts = [{"id": a.pk, "name": a.name, "venue": a.venue}
                for a in selectors.accounts_for_user(request.user, need="trade").order_by("id")]
    context = {
        "page": "market",
        "market": {
            "symbol": sym.symbol, "baseAsset": sym.base_asset, "quoteAsset": sym.quote_asset,
            "intervals": list(pages.CHART_INTERVALS), "accounts": accounts, "symbols": watched_symbols(),
            "tickSize": format(sym.tick_size.normalize(), "f"), "stepSize": format(sym.step_size.normalize(), "f"),
            "minNotional": format(sym.min_notional.normalize(), "f"),
        },
    }
    return render(request, "dashboard/market.html", context)


@login_required
def tokens_view(request):
    """Agent tokens: list, create (the plain token is shown once, in this answer only), revoke;
    and the MCP client configuration to paste."""
    created, error = None, None
    if request.method == "POST":
        try:
            days = _int_arg(request.POST.get("expires_days"), "expires_days", 0) or None
            account_ids = [_int_arg(a, "account", 0) for a in request.POST.getlist("accounts") if a]
            symbols = [s for s in request.POST.get("symbols", "").replace(",", " ").split() if s]
            token, key = tokens.token_create(user=request.user, name=request.POST.get("name", ""),
                                                scopes=request.POST.getlist("scopes"), expires_days=days,
                                                account_ids=account_ids, symbols=symbols,
                                                confirm_orders=request.POST.get("confirm_orders") in ("1", "on", "true"))
            created = {"token": tokens.token_as_dict(token), "key": key}
        except TradingError as exc:
            error = exc.msg
    mcp_url = request.build_absolute_uri("/mcp")
    snippets = pages.mcp_client_snippets(mcp_url=mcp_url, token=created["key"] if created else "tmcp_YOUR_TOKEN",
                                         python=sys.executable, manage_py=str(settings.BASE_DIR / "manage.py"))
    context = {
        "page": "tokens", "tokens": tokens.tokens_list(user=request.user), "scopes": ALL_SCOPES, "created": created,
        "oauth_grants": oauth_grants_list(user=request.user),
        "error": error, "accounts": list(selectors.accounts_for_user(request.user).order_by("id")),
        "snippets": snippets, "mcp_url": mcp_url,
    }
    return render(request, "dashboard/tokens.html", context, status=400 if error else 200)


@post_action(done="tokens", query="revoked=1", refused=lambda request, exc: _error(exc))
def token_revoke_view(request, token_id: int):
    """Revoke one of your tokens (404 for anyone else's), back to the tokens page."""
    tokens.token_revoke(user=request.user, token_id=token_id)


@login_required
def account_sharing_view(request, account_id: int):
    """Who besides its owner may use an account (``risk.models.AccountGrant``): the owner lists,
    adds (``username``, ``role`` viewer|trader), changes and removes grants here
    (``risk.services.account_grant_set`` / ``account_grant_remove``, audited). Anyone else: 404
    (a grantee: 403)."""
    try:
        account = selectors.account_get(user=request.user, account_id=account_id)
        grants = account_grants_list(account=account, actor=request.user)  # owner only
    except TradingError as exc:
        return render(request, "dashboard/sharing.html", {"page": "sharing", "forbidden": exc.msg}, status=exc.http_status)
    error, status = None, 200
    if request.method == "POST":
        try:
            if request.POST.get("action") == "remove":
                account_grant_remove(account=account, actor=request.user, username=request.POST.get("username", ""),
                                     channel=Channel.DASHBOARD)
            else:
                account_grant_set(account=account, actor=request.user, username=request.POST.get("username", ""),
                                  role=request.POST.get("role", ""), channel=Channel.DASHBOARD)
            return redirect(reverse("account-sharing", args=[account.pk]) + "?saved=1")
        except TradingError as exc:
            error, status = exc.msg, exc.http_status
    return render(request, "dashboard/sharing.html", {"page": "sharing", "account": account, "grants": grants, "error": error,
                                                    "roles": GrantRole.choices}, status=status)


# --- JSON endpoints ----------------------------------------------------------------------------------

@login_required
@require_GET
def dashboard_state(request):
    """What the overview shows (``dashboard.selectors.overview_state``); refetched after a reconnect."""
    return JsonResponse(pages.overview_state(user=request.user))


@login_required
@require_GET
def chart_json(request, symbol: str):
    """Candles + indicator series: ``?interval=1m|5m|15m|1h|4h|1d&limit=50..1000``."""
    try:
        data = pages.chart_data(symbol=symbol, interval=request.GET.get("interval", "1m"),
                                    limit=_int_arg(request.GET.get("limit"), "limit", 500))
    except TradingError as exc:
        return _error(exc)
    return JsonResponse(data)


@login_required
@require_GET
def market_json(request, symbol: str):
    """Order book (20 levels a side) and recent trades of ``symbol``."""
    try:
        return JsonResponse(pages.market_snapshot(symbol=symbol))
    except TradingError as exc:
        return _error(exc)


@login_required
@require_POST
def account_halt(request, account_id: int):
    """The kill switch: ``trading.services.account_halt`` (HALTED at once, open orders canceled)."""
    try:
        account = selectors.account_get(user=request.user, account_id=account_id, need="trade")
        result = halt(account=account, actor_user=request.user, channel=Channel.DASHBOARD,
                      reason=f"kill switch by {request.user.get_username()} (dashboard)")
    except TradingError as exc:
        return _error(exc)
    return JsonResponse({"state": result["state"], "canceled": [o["orderId"] for o in result["canceled"]],
                         "risk": portfolio.risk_panel(account=account)})


@login_required
@require_POST
def account_resume(request, account_id: int):
    """Resume trading (``risk.services.account_set_state`` ACTIVE)."""
    try:
        account = selectors.account_get(user=request.user, account_id=account_id, need="trade")
        account_set_state(account=account, actor_user=request.user, channel=Channel.DASHBOARD, state="ACTIVE",
                          reason=f"resumed by {request.user.get_username()} (dashboard)")
    except TradingError as exc:
        return _error(exc)
    return JsonResponse({"state": "ACTIVE", "risk": portfolio.risk_panel(account=account)})
