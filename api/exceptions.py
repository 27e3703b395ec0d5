"""Errors of ``/api/v1/``: every refusal is the HTTP status plus a Binance-style body
``{"code": int, "msg": str}`` (Binance Spot API docs, "Error codes"), whatever raised it.

- ``core.errors.TradingError`` (the services' typed errors): its own status, code and details;
- DRF's exceptions: 401 → -1002 (unauthorized), 403 → -2015, 404 → -2013, 405/406 → -1000,
  415 → -1100, 429 → -1003 (too many requests, with ``Retry-After``), 400 validation → -1102 when
  only missing parameters were the problem, else -1100, with ``errors`` per parameter;
- a body over ``DATA_UPLOAD_MAX_MEMORY_SIZE`` → 413 / -1100, JSON nested too deeply → 400 / -1100.
Anything else is left to Django (a 500 that is logged): no handler hides a bug.
"""
from __future__ import annotations

from django.conf import settings
from django.core.exceptions import RequestDataTooBig, SuspiciousOperation
from rest_framework import exceptions as drf
from rest_framework import status
from rest_framework.response import Response
from rest_framework.views import exception_handler

from core.errors import TradingError

STATUS_CODES = {401: -1002, 403: -2015, 404: -2013, 405: -1000, 406: -1000, 415: -1100, 429: -1003}


def _codes(detail) -> set[str]:
    if isinstance(detail, dict):
        return set().union(*(_codes(v) for v in detail.values())) if detail else set()
    if isinstance(detail, list):
        return set().union(*(_codes(v) for v in detail)) if detail else set()
    return {str(detail)}


def _first_message(detail) -> str:
    if isinstance(detail, dict):
        for key, value in detail.items():
            return f"{key}: {_first_message(value)}" if key != "non_field_errors" else _first_message(value)
    if isinstance(detail, list):
        return _first_message(detail[0]) if detail else "invalid"
    return str(detail)


def handle(exc, context) -> Response | None:
    """DRF exception handler (``APIView.get_exception_handler``) of the ``/api/v1/`` views."""
    if isinstance(exc, TradingError):
        return Response(exc.as_dict(), status=exc.http_status)
    if isinstance(exc, RequestDataTooBig):
        return Response({"code": -1100, "msg": f"Request body too large: at most {settings.DATA_UPLOAD_MAX_MEMORY_SIZE} bytes."},
                        status=status.HTTP_413_REQUEST_ENTITY_TOO_LARGE)
    if isinstance(exc, SuspiciousOperation):  # e.g. TooManyFieldsSent
        return Response({"code": -1100, "msg": f"Malformed request: {exc}"}, status=status.HTTP_400_BAD_REQUEST)
    if isinstance(exc, RecursionError):  # DRF's JSON parser lets it through
        return Response({"code": -1100, "msg": "Malformed request: JSON nested too deeply."}, status=status.HTTP_400_BAD_REQUEST)
    response = exception_handler(exc, context)  # sets WWW-Authenticate / Retry-After headers
    if response is None:
        return None
    if isinstance(exc, drf.ValidationError):
        codes = _codes(exc.get_codes())
        code = -1102 if codes == {"required"} else -1100
        prefix = "Mandatory parameter missing" if code == -1102 else "Invalid parameter"
        response.data = {"code": code, "msg": f"{prefix}: {_first_message(exc.detail)}", "errors": exc.detail}
        return response
    detail = getattr(exc, "detail", "")
    msg = str(detail) if not isinstance(detail, (list, dict)) else _first_message(detail)
    if isinstance(exc, drf.Throttled):
        msg = f"Too many requests for this token: retry after {exc.wait and int(exc.wait + 0.999)} s."
    response.data = {"code": STATUS_CODES.get(response.status_code, -1100 if response.status_code == 400 else -1000), "msg": msg}
    return response
