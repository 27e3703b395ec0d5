"""What is worth telling people, derived from the audit hook (``core.signals``): each audited
action that matters becomes one ``notification_send`` task per subscribed channel, queued when
the action's transaction commits (nothing is sent for a rolled-back order).

- ``order.place`` accepted with fills → ``fill`` (one per fill; also the matcher's fills, through
  ``core.signals.fills_booked``); refused by a risk limit → ``risk_rejected``, or ``breaker_trip``
  when the daily-loss breaker refused it (that refusal trips it).
- ``risk.halt`` → ``kill_switch``; ``risk.protection_lock`` → ``protection_lock``;
  ``order.hold`` → ``approval_pending`` (with a link).
- Venue disconnects are polled (``notifications.tasks.venue_disconnect_check``), not audited.

Facts are ids, symbols, sides and numbers from our own rows; ``notifications.messages`` renders them.
"""
from __future__ import annotations

import uuid

from core.metrics import refused_limit
from notifications import services
from notifications.tasks import notification_queue


def _account_id(event: dict) -> int | None:
    acc = event.get("account")
    return acc if isinstance(acc, int) or acc is None else getattr(acc, "pk", None)


def on_audit(sender=None, *, event: dict, **_) -> None:
    """``core.signals.audit_appended`` receiver (see module docstring)."""
    action = event["action"]
    if not (action.startswith("order.") or action.startswith("risk.")):
        return
    account_id = _account_id(event)
    if account_id is None:
        return
    outcome = str(event["outcome"])
    result = event.get("result") or {}
    params = event.get("params") or {}
    decision = event.get("risk_decision")
    if decision and decision.get("allowed") is False:
        limit = refused_limit(decision)
        facts = {"symbol": params.get("symbol"), "side": params.get("side"),
                 "qty": params.get("quantity") or params.get("quote_order_qty"), "limit": limit}
        dedupe = f"{action}:{event.get('request_id') or uuid.uuid4().hex}"
        notification_queue("breaker_trip" if limit == "max_daily_loss" else "risk_rejected", account_id, facts, dedupe)
    elif action == "order.place" and outcome == "ok" and result.get("fills") \
            and not str(event.get("message") or "").startswith("duplicate clientOrderId"):
        fills_queue(account_id, result)
    elif action == "risk.halt" and outcome == "ok":
        notification_queue("kill_switch", account_id, {}, f"halt:{event.get('request_id') or uuid.uuid4().hex}")
    elif action == "risk.protection_lock" and outcome == "ok":
        facts = {"kind": params.get("kind"), "scope": result.get("symbol") or "account", "until": result.get("until", "")[:19]}
        notification_queue("protection_lock", account_id, facts, f"lock:{result.get('lock_id')}")
    elif action == "order.hold" and outcome == "ok" and result.get("approvalId") is not None:
        facts = {"approval_id": result.get("approvalId"), "symbol": result.get("symbol"), "side": result.get("side"),
                 "qty": result.get("origQty") or result.get("origQuoteOrderQty")}
        notification_queue("approval_pending", account_id, facts, f"approval:{result.get('approvalId')}")


def fills_queue(account_id: int, order: dict) -> None:
    """Queue one ``fill`` notification per fill of ``order`` (``order_as_dict`` shape); the fill
    id is the dedupe key, so a fill reported twice is sent once."""
    if not services.channels_for(account_id, "fill"):
        return
    for fill in order.get("fills") or ():
        facts = {"symbol": fill.get("symbol") or order.get("symbol"), "side": fill.get("side") or order.get("side"),
                 "qty": fill.get("qty"), "price": fill.get("price"), "order_id": order.get("orderId"),
                 "fill_id": fill.get("id")}
        notification_queue("fill", account_id, facts, f"fill:{fill.get('id')}")


def on_fills(sender=None, *, account_id: int, fills: list[dict], **_) -> None:
    """``core.signals.fills_booked`` receiver: fills booked by the paper matcher."""
    fills_queue(account_id, {"fills": fills})
