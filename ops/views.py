"""``/healthz``, ``/readyz`` and ``/metrics``: thin views over ``ops.health`` and ``core.metrics``."""
from __future__ import annotations

import hmac

from django.conf import settings
from django.http import HttpResponse, JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from core import metrics
from ops import health


@never_cache
@require_GET
def healthz(request):
    """Liveness: the process answers. No I/O."""
    return JsonResponse({"status": "ok"})


@never_cache
@require_GET
def readyz(request):
    """Readiness: every check of ``ops.health`` with status and age; 503 when a required one fails."""
    ready, body = health.readiness()
    return JsonResponse(body, status=200 if ready else 503)


def metrics_allowed(request) -> bool:
    """A staff session, or ``Authorization: Bearer <METRICS_TOKEN>`` when that setting is set."""
    user = getattr(request, "user", None)
    if user is not None and user.is_authenticated and user.is_staff:
        return True
    token = settings.METRICS_TOKEN
    header = request.headers.get("Authorization", "")
    if token and header.startswith("Bearer "):
        return hmac.compare_digest(header[7:].strip().encode(), token.encode())
    return False


@never_cache
@require_GET
def metrics_view(request):
    """Prometheus text exposition of every process's metrics (``core.metrics.export_registry``);
    401 with a ``WWW-Authenticate: Bearer`` challenge (RFC 6750 section 3) for anyone else."""
    if not metrics_allowed(request):
        response = HttpResponse("metrics need a staff session or the metrics bearer token\n", status=401,
                                content_type="text/plain")
        response["WWW-Authenticate"] = 'Bearer realm="metrics"'
        return response
    return HttpResponse(generate_latest(metrics.export_registry()), content_type=CONTENT_TYPE_LATEST)
