"""/metrics in-process: who may read it, counters moving by exactly the calls and orders made,
and the Grafana dashboard naming only metrics that exist (the two-worker run is in
tests/test_ops_e2e.py)."""
import json
import re
from decimal import Decimal
from pathlib import Path

import pytest
from django.test import Client
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families
from test_mcp import call

from core.metrics import export_registry
from risk.models import RiskLimit

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.django_db


def sample(name: str, **labels) -> float:
    """A sample of every process's metrics, as /metrics would show it (0 when absent)."""
    return export_registry().get_sample_value(name, labels) or 0.0


def test_metrics_need_a_staff_session_or_the_token(make_user, settings):
    settings.METRICS_TOKEN = "metrics-secret-123"
    assert Client().get("/metrics").status_code == 401
    assert Client().get("/metrics").headers["WWW-Authenticate"].startswith("Bearer")
    assert Client(headers={"Authorization": "Bearer wrong"}).get("/metrics").status_code == 401
    user = make_user("plain")
    client = Client()
    client.force_login(user)
    assert client.get("/metrics").status_code == 401
    user.is_staff = True
    user.save()
    assert client.get("/metrics").status_code == 200
    resp = Client(headers={"Authorization": "Bearer metrics-secret-123"}).get("/metrics")
    assert resp.status_code == 200 and resp["Content-Type"].startswith("text/plain")
    names = {f.name for f in text_string_to_metric_families(resp.content.decode())}
    assert {"tradingmcp_mcp_calls", "django_http_requests_latency_seconds_by_view_method"} <= names
    settings.METRICS_TOKEN = ""
    assert Client(headers={"Authorization": "Bearer "}).get("/metrics").status_code == 401


def test_counters_move_by_the_calls_and_orders_made(quotes, trader):
    user, account, key = trader
    calls0 = sample("tradingmcp_mcp_calls_total", tool="get_ticker", transport="http", outcome="ok")
    hist0 = sample("tradingmcp_mcp_call_seconds_count", tool="get_ticker", transport="http")
    orders0 = sample("tradingmcp_orders_total", venue="paper", type="MARKET", status="FILLED")
    place0 = sample("tradingmcp_mcp_calls_total", tool="place_order", transport="http", outcome="ok")
    fills0 = sample("tradingmcp_fills_total", venue="paper", side="BUY")
    rejected0 = sample("tradingmcp_risk_rejections_total", limit="max_order_notional")
    for _ in range(3):
        assert call(key, "get_ticker", symbol="BTCUSDT")[0] is False
    fills = 0
    for i in range(2):
        err, order = call(key, "place_order", symbol="BTCUSDT", side="BUY", quantity="0.002", client_order_id=f"m-{i}")
        assert not err and order["status"] == "FILLED"
        fills += len(order["fills"])
    err, _ = call(key, "place_order", symbol="BTCUSDT", side="BUY", quantity="0.002", client_order_id="m-0")  # replay
    assert not err
    RiskLimit.objects.filter(account=account).update(max_order_notional=Decimal("5"))
    err, text = call(key, "place_order", symbol="BTCUSDT", side="BUY", quantity="0.002")
    assert err and "max_order_notional" in text
    assert sample("tradingmcp_mcp_calls_total", tool="get_ticker", transport="http", outcome="ok") - calls0 == 3
    assert sample("tradingmcp_mcp_call_seconds_count", tool="get_ticker", transport="http") - hist0 == 3
    assert sample("tradingmcp_mcp_calls_total", tool="place_order", transport="http", outcome="ok") - place0 == 3
    assert sample("tradingmcp_orders_total", venue="paper", type="MARKET", status="FILLED") - orders0 == 2
    assert sample("tradingmcp_fills_total", venue="paper", side="BUY") - fills0 == fills
    assert sample("tradingmcp_risk_rejections_total", limit="max_order_notional") - rejected0 == 1


def test_kill_switch_and_breaker_trip_are_counted(quotes, trader):
    from risk.models import Channel
    from trading.services import account_halt

    user, account, key = trader
    kills0, trips0 = sample("tradingmcp_kill_switches_total"), sample("tradingmcp_breaker_trips_total")
    RiskLimit.objects.filter(account=account).update(max_daily_loss=Decimal("0"))
    err, text = call(key, "place_order", symbol="BTCUSDT", side="BUY", quantity="0.002")
    assert err and "max_daily_loss" in text
    err, text = call(key, "place_order", symbol="BTCUSDT", side="BUY", quantity="0.002")
    assert err and "HALTED" in text  # refused by the trading state now: no second trip
    account_halt(account=account, actor_user=user, channel=Channel.DASHBOARD)
    assert sample("tradingmcp_breaker_trips_total") - trips0 == 1
    assert sample("tradingmcp_kill_switches_total") - kills0 == 1


def _known_sample_names() -> set[str]:
    Client().get("/healthz")  # django-prometheus creates its request metrics with the first request
    names = set()
    for family in REGISTRY.collect():
        suffixes = {"counter": ["_total", "_created"], "histogram": ["_bucket", "_sum", "_count", "_created"],
                    "gauge": [""], "summary": ["_sum", "_count", "_created"]}.get(family.type, [""])
        names |= {family.name + s for s in suffixes}
    return names


def test_grafana_dashboard_names_only_metrics_that_exist():
    dashboard = json.loads((ROOT / "deploy" / "grafana" / "tradingmcp.json").read_text())
    assert dashboard["title"] and dashboard["uid"] and dashboard["panels"]
    known = _known_sample_names()
    promql_words = {"sum", "by", "rate", "increase", "histogram_quantile", "le", "without", "avg", "max", "min"}
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    assert len(exprs) >= 15
    for expr in exprs:
        labels_stripped = re.sub(r"\{[^}]*\}|\[[^\]]*\]", "", expr)
        words = set(re.findall(r"[a-zA-Z_:][a-zA-Z0-9_:]*", labels_stripped))
        metrics = {w for w in words if w.startswith(("tradingmcp_", "django_"))}
        others = words - metrics - promql_words
        assert metrics, expr
        assert metrics <= known, (expr, metrics - known)
        # what is left are label names in by (...): ours and django-prometheus's
        assert others <= {"tool", "outcome", "transport", "venue", "type", "status", "side", "limit", "stream", "route",
                          "task", "state", "event", "view"}, (expr, others)
