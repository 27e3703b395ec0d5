"""The audit hook: every audit append (``risk.audit.audit_record`` / ``audit_enqueue`` /
``audit_enqueue_async``) calls ``audit_observed`` with the event's fields, before the event is
written. Every action of every transport passes there, so the metrics (``core.metrics``) and the
notification triggers (``notifications.triggers``) are derived from it instead of being hooked
into each service.

Receivers of ``audit_appended`` get ``event``: a dict with the ``audit_record`` keyword
arguments (``channel``, ``action``, ``outcome``, ``actor_user``, ``actor_token``, ``account``
as objects or ids, ``params``, ``result``, ``risk_decision``, ``latency_ms``, ``request_id``,
``message``). They must not change it, must be cheap (this runs on every MCP call) and must
defer any I/O to ``transaction.on_commit``: the append may be inside the order's transaction.

``fills_booked`` is sent where fills are booked outside an audited call (the paper matcher's
resting orders): see ``fills_observed``.
"""
from __future__ import annotations

import logging

from django.dispatch import Signal

from core import context
from core.metrics import fills_counted

log = logging.getLogger(__name__)

LOGGED_PREFIXES = ("order.", "risk.", "notification.")

audit_appended = Signal()
fills_booked = Signal()


def audit_observed(event: dict) -> None:
    """Tell the receivers of ``audit_appended`` about one audit event; never raises (a receiver's
    failure is logged: it must not undo or hide the action being audited)."""
    acc = event.get("account")
    acc_id = acc if isinstance(acc, int) or acc is None else getattr(acc, "pk", None)
    if acc_id is not None:
        context.account.set(acc_id)
    if event.get("request_id"):
        context.request_id.set(event["request_id"])
    action = event.get("action") or ""
    if action.startswith(LOGGED_PREFIXES):  # writes: one line each (reads are counted, not logged)
        log.info("%s %s", action, event.get("outcome"),
                 extra={"action": action, "outcome": str(event.get("outcome")), "channel": str(event.get("channel"))})
    for receiver, result in audit_appended.send_robust(sender=None, event=event):
        if isinstance(result, Exception):
            log.error("audit hook %s failed on %s", getattr(receiver, "__name__", receiver), event.get("action"),
                      exc_info=result)


def fills_observed(account_id: int, venue: str, fills: list) -> None:
    """Tell the receivers of ``fills_booked`` (and the fill counter) about ``fills`` (``Fill`` rows
    just written in the caller's transaction, outside an audited call: the paper matcher); never
    raises. Receivers get ``account_id`` and ``fills`` as dicts: ``id``, ``orderId``, ``symbol``,
    ``side``, ``price`` (quote asset), ``qty`` (base asset)."""
    if not fills:
        return
    rows = [{"id": f.pk, "orderId": f.order_id, "symbol": f.symbol, "side": f.side, "price": format(f.price, "f"),
             "qty": format(f.qty, "f")} for f in fills]
    try:
        fills_counted(venue, rows)
    except Exception:
        log.exception("fill metrics failed")
    for receiver, result in fills_booked.send_robust(sender=None, account_id=account_id, fills=rows):
        if isinstance(result, Exception):
            log.error("fills hook %s failed", getattr(receiver, "__name__", receiver), exc_info=result)
