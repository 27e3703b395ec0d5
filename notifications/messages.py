"""The notification texts: fixed wording with ids, symbols and numbers only (the trust rule: no
text a person or an exchange wrote reaches another person's phone). Every fact passes
``_safe`` (a plain token of letters, digits and ``. _ : + -``) or is replaced by ``?``."""
from __future__ import annotations

import re

from django.conf import settings

_SAFE = re.compile(r"^[A-Za-z0-9._:+-]{1,40}$")


def _safe(value) -> str:
    text = str(value) if value is not None else ""
    return text if _SAFE.match(text) else "?"


def render(event: str, account_id: int | None, facts: dict) -> tuple[str, str]:
    """(title, body) of one notification. ``facts``: see ``notifications.triggers``."""
    f = {k: _safe(v) for k, v in facts.items()}
    acct = f"account #{int(account_id)}" if account_id is not None else ""
    if event == "fill":
        return (f"Fill: {f.get('side')} {f.get('qty')} {f.get('symbol')}",
                f"Fill on {acct}: {f.get('side')} {f.get('qty')} {f.get('symbol')} at {f.get('price')} "
                f"(order {f.get('order_id')}, fill {f.get('fill_id')}).")
    if event == "risk_rejected":
        return (f"Order rejected by risk: {f.get('limit')}",
                f"Order rejected by a risk limit on {acct}: {f.get('side')} {f.get('qty')} {f.get('symbol')}, "
                f"limit {f.get('limit')}.")
    if event == "breaker_trip":
        return ("Daily-loss breaker tripped",
                f"The daily-loss circuit breaker tripped on {acct}: trading is HALTED until 00:00 UTC.")
    if event == "kill_switch":
        return ("Kill switch: account halted", f"The kill switch halted {acct}; its open orders are canceled.")
    if event == "protection_lock":
        return (f"Protection lock: {f.get('kind')}",
                f"Protection {f.get('kind')} locked {f.get('scope')} on {acct} until {f.get('until')} UTC.")
    if event == "approval_pending":
        link = f"{settings.SITE_URL}/admin/risk/orderapproval/{f.get('approval_id')}/change/"
        return ("Order waiting for approval",
                f"An agent's order waits for approval on {acct}: {f.get('side')} {f.get('qty')} {f.get('symbol')} "
                f"(approval {f.get('approval_id')}). Approve or reject: {link}")
    if event == "venue_disconnect":
        return ("Venue disconnected", f"No market data from the venue for {f.get('seconds')} s.")
    if event == "test":
        return ("TradingMCP test notification", "This channel works.")
    raise ValueError(f"unknown notification event {event!r}")
