"""Confirm mode in the chat: a confirm-mode token's order is confirmed by the person at the MCP
client through elicitation (MCP spec 2025-06-18, "Client Features → Elicitation") when the client
declared the ``elicitation`` capability (a ``/mcp`` session or a ``/mcp/ws`` connection).

``place_in_chat`` (sync, in the tool's worker thread): the order is held first, exactly as for
any confirm-mode order (``trading.approvals.order_hold`` through ``order_place``: validated, an
``OrderApproval``, audited ``order.hold``); then ``elicitation/create`` asks the person, showing
symbol, side, type, quantity, the estimated notional and the risk check's result
(``trading.approvals.approval_preview``, nothing booked). ``accept`` approves it
(``order_approve``: placed, audited ``order.approve``, the person as decider); ``decline``,
``cancel``, no answer within ``MCP_ELICITATION_TIMEOUT_S`` or an accept with ``confirm: false``
rejects it (``order_reject``, audited ``order.reject`` with the reason): nothing is booked.
Clients without the capability keep the pending-approval queue (``trading.approvals``).
"""
from __future__ import annotations

from django.conf import settings

from mcpapi import sessions
from risk.models import Channel
from trading import approvals

SCHEMA = {"type": "object", "properties": {"confirm": {"type": "boolean", "title": "Place this order",
                                                        "description": "Book the order now.", "default": True}}}


def confirm_message(approval_data: dict, preview: dict) -> str:
    """The text shown to the person: the order, its estimated notional and the risk check."""
    risk = preview["risk"]
    verdict = "passes the risk limits" if risk["allowed"] else f"would be REFUSED by the risk check: {risk['reason']}"
    order = approval_data.get("params") or approval_data
    return (f"Your agent asks to place a {order.get('side')} {order.get('type', 'MARKET')} order: "
            f"{preview['quantity']} {approval_data.get('symbol') or order.get('symbol')} "
            f"at about {preview['price']} (estimated notional {preview['estimatedNotional']}). "
            f"The order {verdict}. Confirm to book it; decline to drop it.")


def place_in_chat(call, place) -> dict:
    """Hold, ask, then place or drop (see module docstring). ``call``: the tool's
    ``mcpapi.guard.CallContext``; ``place()``: the tool's ``order_place`` call (holds the order,
    the token being in confirm mode). Returns the order as placed (``status`` from the venue) or
    the approval as rejected (``status: "REJECTED"``, ``decision``: accept/decline/cancel/timeout)."""
    result = place()
    order = result.order
    approval_id = order.get("approvalId")
    if result.duplicate or approval_id is None or order.get("status") != "PENDING_APPROVAL":
        return {**order, "duplicate": result.duplicate}
    approval = approvals.approval_get(user=call.user, approval_id=approval_id, need="trade")
    try:
        preview = approvals.approval_preview(approval=approval)
    except Exception as exc:  # the order went bad since it was held (e.g. stale quote): ask anyway
        preview = {"estimatedNotional": "unknown", "price": "unknown", "quantity": str(approval.params.get("quantity")),
                   "risk": {"allowed": False, "reason": str(exc), "checks": []}}
    action, content = sessions.elicit_sync(confirm_message(order, preview), SCHEMA, settings.MCP_ELICITATION_TIMEOUT_S)
    if action == "accept" and (content or {}).get("confirm", True) is not False:
        placed = approvals.order_approve(user=call.user, approval_id=approval_id, channel=Channel.MCP,
                                         note="confirmed in the chat (MCP elicitation)")
        return {**placed["order"], "approvalId": approval_id, "confirmedInChat": True, "risk": preview["risk"],
                "error": placed["error"], "duplicate": False}
    decision = action if action != "accept" else "decline"
    rejected = approvals.order_reject(user=call.user, approval_id=approval_id, channel=Channel.MCP,
                                      note=f"{decision} in the chat (MCP elicitation): nothing booked")
    return {**rejected, "status": "REJECTED", "decision": decision, "confirmedInChat": False, "duplicate": False}
