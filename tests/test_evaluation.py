"""``manage.py evaluate_agent``: the reference agent on a short slice of recorded ETHUSDT data,
its report checked against the fills in the database, determinism, risk rejections, and the
dashboard page.

Each run starts its own replay exchange and MCP server (in this process, on uvicorn) and the agent
(``examples/rsi_agent.py``) as a child process; ``--in-place`` uses the test database.
"""
import json
import uuid
from decimal import Decimal

import pytest
from django.core.management import call_command

from trading.models import Account, Fill, Order

pytestmark = [pytest.mark.django_db(transaction=True)]

# ETHUSDT tape minutes 1420..1480: RSI(14) on 1m dips under 30 around minute 1450 and goes over 70
# around 1474, so the reference agent buys and takes profit in this slice.
SLICE = ["--symbol", "ETHUSDT", "--start-minute", "1420", "--minutes", "60"]
E8 = Decimal("0.00000001")


@pytest.fixture
def isolated(settings, tmp_path):
    """Reports under tmp_path, and Redis keys no other process (e.g. a running test stack) writes."""
    settings.DATA_DIR = tmp_path
    settings.REDIS_KEY_PREFIX = f"{settings.REDIS_KEY_PREFIX}eval-{uuid.uuid4().hex[:6]}:"
    return tmp_path


def run_eval(tmp_path, run_id, *extra):
    call_command("evaluate_agent", "--in-place", "--run-id", run_id, *SLICE, *extra)
    return json.loads((tmp_path / "evaluations" / run_id / "report.json").read_text())


def fee_in_quote(fill: Fill) -> Decimal:
    return fill.commission if fill.commission_asset == "USDT" else fill.commission * fill.price


def test_report_matches_the_fills_and_runs_are_deterministic(isolated, client, make_user):
    report = run_eval(isolated, "run-a")
    account = Account.objects.get(pk=report["accountId"])
    fills = list(Fill.objects.filter(account=account).order_by("time", "id"))
    orders = list(Order.objects.filter(account=account))
    assert report["stopped"] == "completed" and report["slice"]["stepsRun"] == 60
    assert any(f.side == "BUY" for f in fills) and any(f.side == "SELL" for f in fills)  # a round trip happened

    # Trades, orders and fees from the rows.
    assert report["trades"] == len(fills)
    assert report["orders"]["total"] == len(orders)
    assert report["orders"]["buys"] == sum(1 for o in orders if o.side == "BUY" and o.executed_qty > 0)
    assert Decimal(report["fees"]) == sum((fee_in_quote(f) for f in fills), Decimal("0")).quantize(E8)

    # P&L from the fills alone: cash flows plus what is left of the base asset at the last price.
    cash = Decimal("10000")
    base = Decimal("0")
    for f in fills:
        if f.side == "BUY":
            cash -= f.quote_qty
            base += f.qty - (f.commission if f.commission_asset == "ETH" else 0)
        else:
            cash += f.quote_qty - (f.commission if f.commission_asset == "USDT" else 0)
            base -= f.qty
    final = cash + base * Decimal(report["finalPrice"])
    assert Decimal(report["finalEquity"]) == final.quantize(E8)
    assert Decimal(report["pnl"]) == (final - Decimal("10000")).quantize(E8)

    # Max drawdown of the reported curve, recomputed.
    peak, worst = Decimal("10000"), Decimal("0")
    for point in report["curve"]:
        e = Decimal(point["equity"])
        peak = max(peak, e)
        worst = max(worst, peak - e)
    assert Decimal(report["maxDrawdown"]) == worst.quantize(E8) and worst > 0

    # Tool calls were counted by the server: the agent reads indicators and the ticker every step.
    by_tool = report["toolCalls"]["byTool"]
    assert by_tool["get_indicators"]["calls"] == 60 and by_tool["get_ticker"]["calls"] == 60
    assert by_tool["place_order"]["calls"] + by_tool["close_position"]["calls"] == len(orders)
    assert report["toolCalls"]["p50Ms"] > 0 and report["rejections"] == {"orders": 0, "toolErrors": 0, "messages": []}

    # Same agent, same data: the same fills (a new account, a new replay exchange, a new server).
    again = run_eval(isolated, "run-b")
    key = lambda f: (f["side"], f["price"], f["qty"], f["quoteQty"], f["commission"], f["commissionAsset"])  # noqa: E731
    assert [key(f) for f in again["fills"]] == [key(f) for f in report["fills"]]
    assert again["curve"] == report["curve"] and again["pnl"] == report["pnl"]

    # Files and the dashboard page (only for the user the run was for).
    for name in ("report.json", "equity.png", "report.html"):
        assert (isolated / "evaluations" / "run-a" / name).stat().st_size > 0
    assert (isolated / "evaluations" / "run-a" / "equity.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    client.force_login(account.owner)
    page = client.get("/evaluations/run-a/")
    assert page.status_code == 200 and report["pnl"] in page.content.decode()
    assert client.get("/evaluations/run-a/equity.png").status_code == 200
    assert "run-b" in client.get("/evaluations/").content.decode()
    client.force_login(make_user("mallory"))
    assert client.get("/evaluations/run-a/").status_code == 404
    assert client.get("/evaluations/run-a/equity.png").status_code == 404
    assert "run-a" not in client.get("/evaluations/").content.decode()


def test_risk_rejections_are_reported_and_respected(isolated):
    # A 500 USDT order limit refuses the agent's 1000 USDT entries; after each refusal the agent
    # waits --cooldown (5) steps instead of retrying.
    report = run_eval(isolated, "run-risk", "--max-order-notional", "500")
    account = Account.objects.get(pk=report["accountId"])
    rejected = Order.objects.filter(account=account, status="REJECTED")
    assert report["trades"] == 0 == Fill.objects.filter(account=account).count()
    assert report["rejections"]["orders"] == rejected.count() >= 1
    assert report["rejections"]["toolErrors"] == rejected.count()
    assert all("risk check" in m for m in report["rejections"]["messages"])
    assert all(o.reject_reason.startswith("Risk:") for o in rejected)
    oversold_steps = report["toolCalls"]["byTool"]["place_order"]["calls"]
    assert oversold_steps == rejected.count()
    times = sorted(o.client_order_id for o in rejected)
    steps = sorted(int(cid.split("-")[1]) for cid in times)
    assert all(b - a >= 5 for a, b in zip(steps, steps[1:]))  # cooldown respected between attempts
    assert Decimal(report["pnl"]) == 0
