"""What is worth telling people, derived from the audit hook (``core.signals``): each audited
action that matters becomes one ``notification_send`` task per subscribed channel, queued when
the action's transaction commits (nothing is sent for a rolled-back order).

- ``order.place`` accepted with fills → ``fill`` (one per fill; also the matcher's fills, through
  ``core.signals.fills_booked``); refused by a risk limit → ``risk_rejected``, or ``breaker_trip``
  when the daily-loss breaker refused it (that refusal trips it).
- ``risk.halt`` → ``kill_switch``; ``risk.protection_lock`` → ``protection_lock``;
  ``order.hold`` → ``approval_pending`` (with a link).
- Venue disconnects are polled (``venue_disconnect_check``), not audited.

Facts are ids, symbols, sides and numbers from our own rows; ``notifications.messages`` renders them.
"""
from __future__ import annotations

import uuid

from django.conf import settings
from django.db import transaction

from notifications.services import channels_for
from core.metrics import refused_limit


def _queue(event: str, account_id: int | None, facts: dict, dedupe: str) -> None:
    channel_ids = channels_for(account_id, event)
    if not channel_ids:
        return
    from notifications.tasks import notification_send

    def send():
        for channel_id in channel_ids:
            notification_send.delay(channel_id, event, account_id, facts, dedupe)

    transaction.on_commit(send)


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
        _queue("breaker_trip" if limit == "max_daily_loss" else "risk_rejected", account_id, facts, dedupe)
    elif action == "order.place" and outcome == "ok" and result.get("fills") \
            and not str(event.get("message") or "").startswith("duplicate clientOrderId"):
        fills_queue(account_id, result)
    elif action == "risk.halt" and outcome == "ok":
        _queue("kill_switch", account_id, {}, f"halt:{event.get('request_id') or uuid.uuid4().hex}")
    elif action == "risk.protection_lock" and outcome == "ok":
        facts = {"kind": params.get("kind"), "scope": result.get("symbol") or "account", "until": result.get("until", "")[:19]}
        _queue("protection_lock", account_id, facts, f"lock:{result.get('lock_id')}")
    elif action == "order.hold" and outcome == "ok" and result.get("approvalId") is not None:
        facts = {"approval_id": result.get("approvalId"), "symbol": result.get("symbol"), "side": result.get("side"),
                 "qty": result.get("origQty") or result.get("origQuoteOrderQty")}
        _queue("approval_pending", account_id, facts, f"approval:{result.get('approvalId')}")


def fills_queue(account_id: int, order: dict) -> None:
    """Queue one ``fill`` notification per fill of ``order`` (``order_as_dict`` shape); the fill
    id is the dedupe key, so a fill reported twice is sent once."""
    if not channels_for(account_id, "fill"):
        return
    for fill in order.get("fills") or ():
        facts = {"symbol": fill.get("symbol") or order.get("symbol"), "side": fill.get("side") or order.get("side"),
                 "qty": fill.get("qty"), "price": fill.get("price"), "order_id": order.get("orderId"),
                 "fill_id": fill.get("id")}
        _queue("fill", account_id, facts, f"fill:{fill.get('id')}")


def on_fills(sender=None, *, account_id: int, fills: list[dict], **_) -> None:
    """``core.signals.fills_booked`` receiver: fills booked by the paper matcher."""
    fills_queue(account_id, {"fills": fills})


def venue_disconnect_check(now_s: float) -> bool:
    """Queue ``venue_disconnect`` to its subscribers when market data has been silent for over
    ``NOTIFY_VENUE_DISCONNECT_S`` and this outage was not reported yet (a Redis flag, cleared when
    data flows again). Returns True when it queued."""
    from core.redis import get_redis
    from marketdata.selectors import ingester_age_s

    age = ingester_age_s(int(now_s * 1000))
    flag = f"{settings.REDIS_KEY_PREFIX}notif:venue_down"
    redis = get_redis()
    if age is None or age <= settings.NOTIFY_VENUE_DISCONNECT_S:
        if age is not None:
            redis.delete(flag)
        return False
    started_ms = int(now_s * 1000 - age * 1000)
    if not redis.set(flag, str(started_ms), nx=True):
        return False
    _queue("venue_disconnect", None, {"seconds": int(age)}, f"venue:{started_ms}")
    return True
