"""Our Prometheus metrics (prometheus_client), next to django-prometheus's HTTP/DB ones.

Multi-process: ``project.settings`` sets ``PROMETHEUS_MULTIPROC_DIR`` before anything imports
prometheus_client, so every process of one machine (each uvicorn worker, Celery workers, the
ingester, the matcher) writes its samples to memory-mapped files there and ``/metrics``
(``ops.views.metrics_view``) sums them with ``prometheus_client.multiprocess.MultiProcessCollector``
("Multiprocess Mode (E.g. Gunicorn)", prometheus_client docs). ``manage.py runstack`` empties the
directory at start.

Names and labels (the Grafana dashboard ``deploy/grafana/tradingmcp.json`` uses only these;
``tests/test_ops_metrics.py`` checks it):

- ``tradingmcp_mcp_calls_total{tool,transport,outcome}`` and ``tradingmcp_mcp_call_seconds{tool,transport}``:
  MCP tool calls (transport ``http`` = /mcp, ``ws`` = /mcp/ws; outcome ``ok``/``rejected``/``error``).
- ``tradingmcp_orders_total{venue,type,status}``: orders placed (status as booked: FILLED, NEW, REJECTED…).
- ``tradingmcp_fills_total{venue,side}``: fills booked.
- ``tradingmcp_risk_rejections_total{limit}``: orders a risk limit refused (the limit's name).
- ``tradingmcp_breaker_trips_total``, ``tradingmcp_kill_switches_total``, ``tradingmcp_protection_locks_total{kind}``.
- ``tradingmcp_ingest_messages_total{stream}``, ``tradingmcp_ingest_lag_seconds{stream}``: market
  stream messages and event-time-to-receipt lag (events carrying Binance's ``E``).
- ``tradingmcp_websocket_connections{route}`` (open now) and ``tradingmcp_websocket_connects_total{route}``.
- ``tradingmcp_celery_task_seconds{task}``, ``tradingmcp_celery_tasks_total{task,state}``: Celery task
  runtime and outcome (``success``/``failure``/``retry``).
- ``tradingmcp_notifications_total{event,outcome}``: notifications sent (``notifications``).
"""
from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client import REGISTRY

from core import context

NS = "tradingmcp"
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
LAG_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
TASK_BUCKETS = (0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 120.0)

MCP_CALLS = Counter("mcp_calls", "MCP tool calls", ["tool", "transport", "outcome"], namespace=NS)
MCP_SECONDS = Histogram("mcp_call_seconds", "MCP tool call latency (s)", ["tool", "transport"], namespace=NS,
                        buckets=LATENCY_BUCKETS)
ORDERS = Counter("orders", "Orders placed, by venue, type and booked status", ["venue", "type", "status"], namespace=NS)
FILLS = Counter("fills", "Fills booked", ["venue", "side"], namespace=NS)
RISK_REJECTIONS = Counter("risk_rejections", "Orders refused by a risk limit", ["limit"], namespace=NS)
BREAKER_TRIPS = Counter("breaker_trips", "Daily-loss circuit breaker trips", namespace=NS)
KILL_SWITCHES = Counter("kill_switches", "Kill switch (account halt) activations", namespace=NS)
PROTECTION_LOCKS = Counter("protection_locks", "Protection locks written", ["kind"], namespace=NS)
INGEST_MESSAGES = Counter("ingest_messages", "Market stream messages ingested", ["stream"], namespace=NS)
INGEST_LAG = Histogram("ingest_lag_seconds", "Market stream event time to ingest (s)", ["stream"], namespace=NS,
                       buckets=LAG_BUCKETS)
WS_OPEN = Gauge("websocket_connections", "WebSocket connections open now", ["route"], namespace=NS,
                multiprocess_mode="livesum")
WS_CONNECTS = Counter("websocket_connects", "WebSocket connections accepted", ["route"], namespace=NS)
TASK_SECONDS = Histogram("celery_task_seconds", "Celery task runtime (s)", ["task"], namespace=NS, buckets=TASK_BUCKETS)
TASKS = Counter("celery_tasks", "Celery tasks finished, by state", ["task", "state"], namespace=NS)
NOTIFICATIONS = Counter("notifications", "Notifications sent", ["event", "outcome"], namespace=NS)

ORDER_ACTIONS = frozenset({"order.place", "order.oco"})


def observe_audit(sender=None, *, event: dict, **_) -> None:
    """``core.signals.audit_appended`` receiver: count one audited action (see module docstring).

    An ``mcp.<tool>`` event is one call of ``tool``; a service's own event on the MCP channel
    (``order.place`` for ``place_order``, …) is one call of the tool bound in ``core.context``."""
    action = event["action"]
    outcome = str(event["outcome"])
    if str(event["channel"]) == "mcp":
        tool = action[4:] if action.startswith("mcp.") else (context.tool.get() or action)
        transport = context.transport.get() or "unknown"
        MCP_CALLS.labels(tool, transport, outcome).inc()
        latency_ms = event.get("latency_ms")
        if latency_ms is not None:
            MCP_SECONDS.labels(tool, transport).observe(latency_ms / 1000.0)
    if action in ORDER_ACTIONS and not str(event.get("message") or "").startswith("duplicate clientOrderId"):
        result = event.get("result") or {}
        params = event.get("params") or {}
        venue = str(getattr(event.get("account"), "venue", "") or "unknown")
        status = result.get("status") or ("REJECTED" if outcome != "ok" else "NEW")
        order_type = result.get("type") or params.get("type") or ("OCO" if action == "order.oco" else "MARKET")
        ORDERS.labels(venue, str(order_type), str(status)).inc()
        for fill in result.get("fills") or ():
            FILLS.labels(venue, str(fill.get("side") or result.get("side") or "")).inc()
    decision = event.get("risk_decision")
    if decision and decision.get("allowed") is False:
        limit = refused_limit(decision)
        RISK_REJECTIONS.labels(limit).inc()
        if limit == "max_daily_loss":
            BREAKER_TRIPS.inc()
    elif action == "risk.halt":
        KILL_SWITCHES.inc()
    elif action == "risk.protection_lock":
        PROTECTION_LOCKS.labels(str((event.get("params") or {}).get("kind") or "unknown")).inc()
    elif action == "notification.send":
        NOTIFICATIONS.labels(str((event.get("params") or {}).get("event") or "unknown"), outcome).inc()


def refused_limit(decision: dict) -> str:
    """The name of the limit that refused an order in a ``risk.services.RiskDecision.as_dict()``
    (the last check, the one that did not pass)."""
    for check in reversed(decision.get("checks") or ()):
        if isinstance(check, dict) and check.get("passed") is False:
            return str(check.get("name") or "unknown")
    return "unknown"


def fills_counted(venue: str, fills: list[dict]) -> None:
    """Count fills booked outside an audited call (``core.signals.fills_observed``)."""
    for fill in fills:
        FILLS.labels(venue or "unknown", str(fill.get("side") or "")).inc()


def ingest_observed(batch: dict, now_ms: int) -> None:
    """Count one flushed ingester batch: ``batch`` maps a stream name to its new messages
    (Binance payloads); lag is measured on the newest message's event time ``E`` (ms UTC)."""
    for stream, items in batch.items():
        INGEST_MESSAGES.labels(stream).inc(len(items))
        event_ms = items[-1].get("E") if isinstance(items[-1], dict) else None
        if isinstance(event_ms, int):
            INGEST_LAG.labels(stream).observe(max(0.0, (now_ms - event_ms) / 1000.0))


def websocket_opened(route: str) -> None:
    WS_OPEN.labels(route).inc()
    WS_CONNECTS.labels(route).inc()


def websocket_closed(route: str) -> None:
    WS_OPEN.labels(route).dec()


def task_finished(task: str, state: str, seconds: float | None) -> None:
    """Count one Celery task run (``ops.celery_hooks``)."""
    TASKS.labels(task, state).inc()
    if seconds is not None:
        TASK_SECONDS.labels(task).observe(seconds)


def export_registry():
    """The registry ``/metrics`` serves: every process's samples (multiprocess mode) or this
    process's default registry."""
    from django.conf import settings

    if getattr(settings, "PROMETHEUS_MULTIPROC_DIR", None):
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry, path=settings.PROMETHEUS_MULTIPROC_DIR)
        return registry
    return REGISTRY


def now() -> float:
    return time.perf_counter()
