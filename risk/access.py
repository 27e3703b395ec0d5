"""The one access check of an agent credential, used by every transport: MCP over HTTP (``/mcp``)
and WebSocket (``/mcp/ws``, calls and pushes) through ``mcpapi.guard`` and ``mcpapi.ws``, and the
REST API (``api.views.ApiView``).

``who`` is what the transport authenticated: a ``risk.authentication.Identity`` (MCP) or the
``risk.models.AgentToken`` row it stands for (DRF's ``request.auth``). Both carry ``scopes``
(``has_scope``) and ``symbols``. The account restriction and grants are applied where an account
is resolved (``trading.selectors.account_get`` / ``accounts_for_user`` with the token), the
confirm mode where an order is placed (``trading.services.order_place``), expiry and revocation
where the credential is authenticated (``risk.authentication``); what is left to a transport is
this module:

- ``require(who, scope=, symbols=)``: before a call, the scope it needs and the symbols it names
  (``ScopeMissing`` / ``PermissionDenied``);
- ``visible(who, rows)``, ``symbol_visible(who, symbol)``, ``symbols_default(who)``: what a read
  without a symbol (every order, every fill, every market, a pushed account event) may show of a
  token restricted to some symbols.

A person's dashboard session has no token and no restriction: transports do not call this for it.
"""
from __future__ import annotations

from collections.abc import Iterable

from core.errors import NotFound, PermissionDenied


class ScopeMissing(PermissionDenied):
    """The credential lacks ``scope``, the one the call needs (``granted``: the scopes it has).
    Over ``/mcp`` an OAuth access token is answered HTTP 403 ``insufficient_scope`` (step-up, MCP
    authorization spec 2025-11-25, "Scope Challenge Handling"); elsewhere a 403 / tool error."""

    def __init__(self, msg: str, *, scope: str, granted: Iterable[str] = ()):
        super().__init__(msg)
        self.scope = str(scope)
        self.granted = tuple(sorted(str(s) for s in granted))

    def challenge_scopes(self) -> str:
        """The scopes to ask for on step-up: those granted plus the missing one (the 2025-11-25
        spec's recommended approach, so a client that requests exactly these keeps what it had)."""
        return " ".join(sorted({*self.granted, self.scope}))


def allowed_symbols(who) -> tuple[str, ...]:
    """The symbols ``who`` is restricted to (upper case); empty: every symbol."""
    return tuple(str(s).strip().upper() for s in (getattr(who, "symbols", None) or ()))


def require(who, *, scope: str | None = None, symbols: Iterable[str] = (), what: str = "this call") -> None:
    """Refuse a call ``who`` may not make: ``ScopeMissing`` when it lacks ``scope``,
    ``PermissionDenied`` when one of ``symbols`` (the symbols the call names, e.g.
    ``risk.authentication.requested_symbols``) is outside its symbol restriction. ``who`` None
    (no credential) is refused. ``what`` names the call in the message."""
    if who is None:
        raise PermissionDenied("No credential: authenticate first.")
    if scope is not None and not who.has_scope(str(scope)):
        raise ScopeMissing(f"This token lacks the '{scope}' scope needed by {what}; ask the account owner for a token "
                           "with that scope.", scope=str(scope), granted=getattr(who, "scopes", None) or ())
    allowed = allowed_symbols(who)
    if allowed:
        for symbol in symbols:
            if str(symbol).strip().upper() not in allowed:
                raise PermissionDenied(f"This token may trade and read only {', '.join(allowed)}, not {symbol!r}.")


def symbol_visible(who, symbol) -> bool:
    """May ``who`` see data of ``symbol``? (True for every symbol when unrestricted.)"""
    allowed = allowed_symbols(who)
    return not allowed or str(symbol or "").strip().upper() in allowed


def visible(who, rows: Iterable[dict], key: str = "symbol") -> list[dict]:
    """The ``rows`` (dicts with a ``key`` symbol field) ``who`` may see."""
    allowed = allowed_symbols(who)
    rows = list(rows)
    return [r for r in rows if str(r.get(key) or "").upper() in allowed] if allowed else rows


def symbols_default(who) -> list[str] | None:
    """The symbols a read that names none covers: ``who``'s restriction, or None (every symbol)."""
    allowed = allowed_symbols(who)
    return list(allowed) if allowed else None


def order_visible(who, order: dict) -> dict:
    """``order`` (an ``order_as_dict``) if ``who`` may see its symbol, else ``NotFound`` ("Order
    does not exist.", as for another account's order: the caller cannot tell it exists)."""
    if not symbol_visible(who, order.get("symbol")):
        raise NotFound("Order does not exist.")
    return order


def event_visible(who, data) -> bool:
    """May ``who`` be pushed this account event (``core.events``: an order, approval, activity
    or balances payload)? Events about a symbol (``symbol``, or ``params.symbol`` of an activity)
    follow the symbol restriction; balances and events about the whole account do not name one."""
    if not isinstance(data, dict):
        return True
    params = data.get("params")
    symbol = data.get("symbol") or (params.get("symbol") if isinstance(params, dict) else None)
    return not symbol or symbol_visible(who, symbol)
