"""REST API (DRF): accounts and orders, by agent token or session. Thin over the services."""
from __future__ import annotations

from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from rest_framework import serializers, status
from rest_framework.response import Response
from rest_framework.views import APIView

from risk.models import Channel
from trading import selectors, services
from trading.errors import PermissionDenied, TradingError
from trading.money import money_input


def error_response(exc: TradingError) -> Response:
    return Response(exc.as_dict(), status=exc.http_status)


def _token(request):
    """The agent token of the request, or None for a session (person) request."""
    from risk.models import AgentToken

    return request.auth if isinstance(request.auth, AgentToken) else None


def _require_scope(request, scope: str) -> None:
    """Raise ``PermissionDenied`` if the request's agent token lacks ``scope``."""
    token = _token(request)
    if token is not None and not token.has_scope(scope):
        raise PermissionDenied(f"This token lacks the '{scope}' scope needed here.")


class AccountListView(APIView):
    """GET /api/accounts/: your accounts with balances, positions and limits."""

    def get(self, request):
        try:
            _require_scope(request, "account:read")
        except TradingError as exc:
            return error_response(exc)
        accounts = selectors.accounts_for_user(request.user, token=_token(request)).order_by("id")
        return Response([selectors.account_state(account=a) for a in accounts])


class AccountDetailView(APIView):
    """GET /api/accounts/<id>/: one of your accounts."""

    def get(self, request, account_id: int):
        try:
            _require_scope(request, "account:read")
            account = selectors.account_get(user=request.user, account_id=account_id, token=_token(request))
        except TradingError as exc:
            return error_response(exc)
        return Response(selectors.account_state(account=account))


class MoneyField(serializers.CharField):
    """A money field: a decimal string or a JSON number, checked before any coercion
    (``trading.money.money_input``: no booleans, signs, exponents, NaN or non-ASCII digits)."""

    def to_internal_value(self, data):
        try:
            return money_input(data, field=self.field_name or "value")
        except ValueError as exc:
            raise serializers.ValidationError(str(exc)) from None


class OrderInput(serializers.Serializer):
    account_id = serializers.IntegerField(required=False)
    symbol = serializers.CharField(max_length=32)
    side = serializers.CharField(max_length=8)
    type = serializers.CharField(max_length=24, default="MARKET")
    quantity = MoneyField(max_length=64)
    client_order_id = serializers.CharField(max_length=64, required=False, allow_blank=True)


class OrderListView(APIView):
    """GET /api/orders/?account_id=&symbol=&limit=: your recent orders.
    POST /api/orders/: place an order (same service, risk checks and audit as MCP)."""

    def get(self, request):
        try:
            _require_scope(request, "account:read")
            account = selectors.account_get(user=request.user, account_id=request.query_params.get("account_id"),
                                            token=_token(request))
            limit = request.query_params.get("limit", "50")
            orders = selectors.orders_list(account=account, symbol=request.query_params.get("symbol"),
                                           limit=int(limit) if limit.isdigit() else -1)
        except TradingError as exc:
            return error_response(exc)
        return Response({"accountId": account.pk, "orders": orders})

    def post(self, request):
        try:
            payload = request.data
        except RequestDataTooBig:
            return Response({"code": -1100, "msg": f"Request body too large: at most {settings.DATA_UPLOAD_MAX_MEMORY_SIZE} bytes."},
                            status=status.HTTP_413_REQUEST_ENTITY_TOO_LARGE)
        except RecursionError:  # DRF's JSONParser lets it through: JSON nested too deeply
            return Response({"code": -1100, "msg": "Invalid order: JSON nested too deeply."}, status=status.HTTP_400_BAD_REQUEST)
        data = OrderInput(data=payload)
        if not data.is_valid():
            return Response({"code": -1100, "msg": "Invalid order.", "errors": data.errors}, status=status.HTTP_400_BAD_REQUEST)
        v = data.validated_data
        channel = Channel.DASHBOARD if request.auth is None else Channel.API
        try:
            _require_scope(request, "trade")
            account = selectors.account_get(user=request.user, account_id=v.get("account_id"), need="trade",
                                            token=_token(request))
            result = services.order_place(
                account=account, actor_user=request.user, actor_token=request.auth, channel=channel,
                symbol=v["symbol"], side=v["side"], quantity=v["quantity"], order_type=v["type"],
                client_order_id=v.get("client_order_id") or None,
            )
        except TradingError as exc:
            return error_response(exc)
        held = result.order.get("status") == "PENDING_APPROVAL"  # confirm-mode token: 202, waits for a person
        return Response({**result.order, "duplicate": result.duplicate},
                        status=status.HTTP_200_OK if result.duplicate else
                        status.HTTP_202_ACCEPTED if held else status.HTTP_201_CREATED)


class ApprovalListView(APIView):
    """GET /api/approvals/?account_id=: orders of confirm-mode tokens waiting for approval."""

    def get(self, request):
        from trading import approvals

        try:
            _require_scope(request, "account:read")
            account = selectors.account_get(user=request.user, account_id=request.query_params.get("account_id"),
                                            token=_token(request))
        except TradingError as exc:
            return error_response(exc)
        return Response({"accountId": account.pk, "approvals": approvals.pending_list(account=account)})


class ApprovalDecisionView(APIView):
    """POST /api/approvals/<id>/approve/ or /reject/ (body: {"note": ""}): a person's decision
    (session only: an agent token gets 403). Approval places the order now, risk-checked then."""

    decision = "approve"

    def post(self, request, approval_id: int):
        from trading import approvals

        note = str(request.data.get("note", ""))[:500] if hasattr(request.data, "get") else ""
        channel = Channel.DASHBOARD if request.auth is None else Channel.API
        decide = approvals.order_approve if self.decision == "approve" else approvals.order_reject
        try:
            out = decide(user=request.user, approval_id=approval_id, channel=channel, note=note, actor_token=request.auth)
        except TradingError as exc:
            return error_response(exc)
        return Response(out)
