"""Confirm mode: orders from an agent token with ``confirm_orders`` wait as PENDING_APPROVAL until a
person approves or rejects them (issue 5; users of other trading MCP servers ask for exactly this).

Flow: ``trading.services.order_place`` sees a confirm-mode token and hands the call to
``order_hold``, which validates the order as ``order_place`` would (so a bad order is refused at
once, with the same typed error), stores it as a ``risk.models.OrderApproval`` and answers with
status ``PENDING_APPROVAL``; nothing is booked and no balance is locked. A person (the owner or a
trader grantee, never an agent token) then calls ``order_approve``, which places the order through
``order_place`` *at approval time*, so validation and the risk check (limits, trading state,
protections) run against the account as it is then, or ``order_reject``. The ``clientOrderId`` the
agent chose is kept, so it stays idempotent: placing again with it returns the held order while
pending and the placed order afterwards.

What is held: every new order (``place_order``, the sell of ``close_position``, a cancel-replace's
new order). What is not: canceling (``cancel_order``, ``cancel_all_orders``) goes through at once,
because it only lowers risk (a person would approve it anyway, and a held cancel could leave a
stop-loss or a bad limit working while it waits); it is audited with the token like any action.
``close_position`` does not cancel the symbol's resting orders for a confirm-mode token: it holds
only the sell of the free quantity (see ``trading.services.position_close``). OCO lists are refused.

Every step is audited: ``order.hold`` (the request), ``order.approve`` / ``order.reject`` (the
person's decision, with before/after status), and ``order.place`` for the order placed on approval
(actor: the agent's token, as if it had placed it then).
"""
from __future__ import annotations

from django.db import transaction
from django.utils import timezone

from core.errors import InvalidInput, NotFound, PermissionDenied, TradingError
from risk.audit import audit_record
from risk.models import ApprovalStatus, OrderApproval, Outcome
from trading import services
from trading.models import Order
from trading.selectors import accounts_for_user, order_as_dict
from trading.services import ORDER_KEYS, approval_as_dict, placing_approved, publish_approval

def approval_get(*, user, approval_id, need: str = "trade") -> OrderApproval:
    """The approval ``approval_id`` on an account ``user`` may use (``need``: "trade" to decide,
    "read" to see); staff with the ``risk.change_orderapproval`` permission may use any. Raises ``NotFound`` (also for other users' approvals),
    ``PermissionDenied`` when ``user`` may see the account but ``need`` is more (a viewer deciding),
    ``InvalidInput`` for a non-integer id."""
    try:
        pk = int(str(approval_id))
    except ValueError:
        raise InvalidInput(f"approval_id must be an integer, got {approval_id!r}.") from None
    qs = OrderApproval.objects.select_related("account", "token", "decided_by", "requested_by").filter(pk=pk)
    if not (getattr(user, "is_staff", False) and user.has_perm("risk.change_orderapproval")):  # admins decide any
        qs = qs.filter(account__in=accounts_for_user(user, need=need))
    approval = qs.first()
    if approval is None:
        if need != "read" and OrderApproval.objects.filter(pk=pk, account__in=accounts_for_user(user, need="read")).exists():
            raise PermissionDenied(f"Approval {pk} is on an account you may only view: its owner or a trader decides it.")
        raise NotFound(f"Approval {pk} not found among your accounts.")
    return approval


def pending_list(*, account) -> list[dict]:
    """The account's orders waiting for approval, oldest first."""
    qs = (OrderApproval.objects.select_related("token", "decided_by")
          .filter(account=account, status=ApprovalStatus.PENDING).order_by("created_at", "id"))
    return [approval_as_dict(a) for a in qs]


def _decide_guard(user, actor_token) -> None:
    if actor_token is not None:
        raise PermissionDenied("Orders held for approval are decided by a person (dashboard, admin or a session), "
                               "not by an agent token.")
    if not getattr(user, "is_authenticated", False):
        raise PermissionDenied("Sign in to approve or reject orders.")


def order_approve(*, user, approval_id, channel: str, note: str = "", actor_token=None) -> dict:
    """Approve a held order: place it now through ``order_place`` (validation and the risk check
    run at approval time, with the agent's token as actor).

    Args: user: the deciding person (owner or trader of the account); approval_id: int;
        channel: ``risk.models.Channel``; note: free text kept with the decision;
        actor_token: must be None (agents may not approve).

    Returns ``{"approval": approval_as_dict, "order": order_as_dict | None, "error": {code, msg} | None}``:
    when the risk check or the venue refuses the order, a REJECTED order is booked, the approval is
    APPROVED and ``error`` says why. Raises ``PermissionDenied`` (a token, or a viewer),
    ``NotFound``, ``InvalidInput`` (-1100) when it is no longer pending, and, leaving it pending,
    any error that booked nothing (stale market data, the symbol stopped trading...).
    Audited as ``order.approve`` with the status before/after and the placed order.
    """
    _decide_guard(user, actor_token)
    approval = approval_get(user=user, approval_id=approval_id, need="trade")
    error: TradingError | None = None
    with transaction.atomic():
        approval = OrderApproval.objects.select_for_update().get(pk=approval.pk)
        if approval.status != ApprovalStatus.PENDING:
            raise InvalidInput(f"Approval {approval.pk} is {approval.status}, not pending: it cannot be approved.")
        p = approval.params
        kwargs = {name: p[key] for name, key in ORDER_KEYS.items() if p.get(key) is not None}
        try:
            with placing_approved():
                services.order_place(account=approval.account, actor_user=approval.requested_by,
                                     actor_token=approval.token, channel=approval.channel,
                                     request_id=approval.request_id, **kwargs)
        except TradingError as exc:
            error = exc
        order = Order.objects.filter(account=approval.account, client_order_id=approval.client_order_id).first()
        if order is not None:
            approval.status, approval.order = ApprovalStatus.APPROVED, order
            approval.decided_by, approval.decided_at, approval.decision_note = user, timezone.now(), note
            approval.save(update_fields=["status", "order", "decided_by", "decided_at", "decision_note"])
            data = approval_as_dict(approval)
            audit_record(channel=channel, action="order.approve", outcome=Outcome.OK if error is None else Outcome.REJECTED,
                         actor_user=user, account=approval.account,
                         params={"approval_id": approval.pk, "note": note},
                         message=(f"approved approval {approval.pk}: order {order.pk} {order.status}"
                                  + (f" ({error})" if error else "")),
                         result={"before": ApprovalStatus.PENDING, "after": ApprovalStatus.APPROVED, "orderId": order.pk,
                                 "orderStatus": order.status})
            publish_approval(approval, data)
    if order is None:
        audit_record(channel=channel, action="order.approve", outcome=Outcome.REJECTED, actor_user=user,
                     account=approval.account, params={"approval_id": approval.pk, "note": note},
                     message=f"approval {approval.pk} stays pending: {error}", result=error.as_dict() if error else {})
        if error is not None:
            raise error
        raise InvalidInput(f"Approval {approval.pk} could not be placed; it stays pending.")
    return {"approval": data, "order": order_as_dict(order), "error": error.as_dict() if error else None}


def order_reject(*, user, approval_id, channel: str, note: str = "", actor_token=None) -> dict:
    """Reject a held order: nothing is placed. Returns ``approval_as_dict``. Raises like
    ``order_approve``. Audited as ``order.reject`` with the status before/after."""
    _decide_guard(user, actor_token)
    approval = approval_get(user=user, approval_id=approval_id, need="trade")
    with transaction.atomic():
        approval = OrderApproval.objects.select_for_update().get(pk=approval.pk)
        if approval.status != ApprovalStatus.PENDING:
            raise InvalidInput(f"Approval {approval.pk} is {approval.status}, not pending: it cannot be rejected.")
        approval.status = ApprovalStatus.REJECTED
        approval.decided_by, approval.decided_at, approval.decision_note = user, timezone.now(), note
        approval.save(update_fields=["status", "decided_by", "decided_at", "decision_note"])
        data = approval_as_dict(approval)
        audit_record(channel=channel, action="order.reject", outcome=Outcome.OK, actor_user=user, account=approval.account,
                     params={"approval_id": approval.pk, "note": note},
                     message=f"rejected approval {approval.pk} ({approval.side} {approval.symbol})",
                     result={"before": ApprovalStatus.PENDING, "after": ApprovalStatus.REJECTED})
        publish_approval(approval, data)
    return data


def approval_preview(*, approval: OrderApproval) -> dict:
    """What approving the held ``approval`` now would do, booking nothing: ``{"estimatedNotional",
    "price" (what the order is valued at: its limit/stop price, or the best ask/bid for MARKET),
    "quantity" (base asset; derived from quoteOrderQty when that was given), "risk":
    ``RiskDecision.as_dict()``}`` (amounts in the account's quote asset, as strings). The risk check
    runs on the locked account row in a transaction that is rolled back. Raises what
    ``order_hold`` raises for an order that is no longer valid (e.g. stale market data)."""
    from django.conf import settings

    from marketdata.selectors import quote_get
    from risk.services import risk_check
    from trading import services
    from trading.models import Account

    p = approval.params
    request = services._validate(
        symbol=p.get("symbol"), side=p.get("side"), quantity=p.get("quantity"), quote_order_qty=p.get("quote_order_qty"),
        order_type=p.get("type", "MARKET"), price=p.get("price"), stop_price=p.get("stop_price"),
        time_in_force=p.get("time_in_force"), client_order_id=p.get("client_order_id"), channel=approval.channel)
    quote = quote_get(request.symbol.symbol, max_age_s=settings.MARKET_DATA_MAX_AGE_S)
    price, quantity = services._risk_terms(request, quote)
    with transaction.atomic():
        account = Account.objects.select_for_update().get(pk=approval.account_id)
        decision = risk_check(account=account, symbol=request.symbol.symbol, side=request.side, quantity=quantity,
                              price=price, order_type=request.type, reference_price=services.reference_price(quote))
        transaction.set_rollback(True)
    return {"estimatedNotional": format(price * quantity, "f"), "price": format(price, "f"),
            "quantity": format(quantity, "f"), "risk": decision.as_dict()}
