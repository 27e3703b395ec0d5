"""``notifications/message`` (MCP spec 2025-06-18, "Utilities → Logging") a client gets on its
``/mcp`` session or ``/mcp/ws`` connection, at or above the level it set with ``logging/setLevel``:

- ``warning``, logger ``tradingmcp.risk``, after an order tool's call: each of the account's
  limits at or above ``MCP_RISK_WARN_PCT`` % of use (``risk.selectors.limit_usage``: daily loss,
  orders per minute, open orders, the symbol's position), data ``{account, limit, used, max, pct}``;
- ``warning``, logger ``tradingmcp.venue``, when the market-data ingester reconnected to the venue
  (``marketdata.ingester.VENUE_GROUP``), data ``{event: "reconnected", venue, connects}``.
"""
from __future__ import annotations

from django.conf import settings

from mcpapi import sessions
from core.workers import run_sync
from risk.selectors import limit_usage
from trading.selectors import account_get

ORDER_TOOLS = ("place_order", "place_oco", "cancel_replace_order", "close_position")


def _usage(identity, account_id, symbol) -> tuple[int, list[dict]]:
    account = account_get(user=identity.user, account_id=account_id, need="read", token=identity.auth)
    return account.pk, limit_usage(account=account, symbol=symbol)


async def after_call(name: str, arguments: dict, result, identity) -> None:
    """Risk warnings after an order tool's successful call (see module docstring); nothing unless
    the current peer wants ``warning``."""
    peer = sessions.current_peer()
    if name not in ORDER_TOOLS or peer is None or not peer.wants("warning") or getattr(result, "isError", False):
        return
    symbol = arguments.get("symbol")
    try:
        account_id, usage = await run_sync(_usage, identity, arguments.get("account_id"),
                                           symbol.upper() if isinstance(symbol, str) else None)
    except Exception:  # the call succeeded; a failed warning must not change its answer
        return
    for item in usage:
        if item["pct"] >= settings.MCP_RISK_WARN_PCT:
            await sessions.log_message("warning", {"account": account_id, **item,
                                                   "message": f"{item['limit']} is {item['pct']:.0f} % used"},
                                       logger="tradingmcp.risk")

