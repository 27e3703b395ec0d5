"""SQLite (the default database) under lock contention and with a full disk: the caller gets a
clear error, and an order is either booked whole (order, fills, balances, position, audit) or not
at all, never half-written. A full disk is simulated with ``PRAGMA max_page_count`` (the
database cannot grow past its current pages: ``SQLITE_FULL``, "database or disk is full"), lock
contention with another connection holding the write lock (``BEGIN IMMEDIATE``).
"""
import sqlite3
from decimal import Decimal

import pytest
from django.db import OperationalError, connection, connections

from test_mcp import rpc
from risk.models import AuditEvent
from trading.models import Balance, Fill, Order
from trading.services import order_place

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(120)]
E8 = Decimal("0.00000001")


@pytest.fixture(autouse=True)
def _sqlite_only():
    """SQLite only; connections opened meanwhile (the MCP tool's worker thread) wait 0.5 s for a
    lock instead of the configured 20 s."""
    if connection.vendor != "sqlite":
        pytest.skip("SQLite's locking and max_page_count (the PostgreSQL pass has its own concurrency tests)")
    options = connections.settings["default"]["OPTIONS"]
    old = options.get("timeout")
    options["timeout"] = 0.5
    yield
    options["timeout"] = old


def assert_books_are_whole(account):
    """Every order is complete: filled ones have fills adding up to their quantity, each order
    has its audit event, and the balances are exactly the starting 10,000 USDT moved by the fills."""
    orders = list(Order.objects.filter(account=account))
    fills = list(Fill.objects.filter(account=account))
    for o in orders:
        qty = sum((f.qty for f in fills if f.order_id == o.pk), Decimal(0))
        assert qty == o.executed_qty, (o.pk, o.status, qty, o.executed_qty)
        if o.status == "FILLED":
            assert qty == o.quantity
    assert AuditEvent.objects.filter(account=account, action="order.place", outcome="ok").count() == len(orders)
    spent = sum(((f.price * f.qty).quantize(E8) for f in fills), Decimal(0))
    bal = {b.asset: b.free for b in Balance.objects.filter(account=account)}
    assert bal["USDT"] == Decimal("10000") - spent
    assert bal.get("BTC", Decimal(0)) == sum((f.qty - f.commission for f in fills), Decimal(0))


def buy(user, account, cid):
    return order_place(account=account, actor_user=user, channel="api", symbol="BTCUSDT", side="BUY",
                       quantity="0.002", client_order_id=cid)


def test_lock_contention_gives_a_clear_error_and_books_nothing(quotes, trader):
    user, account, key = trader
    buy(user, account, "before-lock")
    assert rpc(key, "tools/call", {"name": "get_ticker", "arguments": {"symbol": "BTCUSDT"}}).status_code == 200  # token cached
    other = sqlite3.connect(connection.settings_dict["NAME"], timeout=1, isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")  # another process holds the write lock
        with connection.cursor() as cur:
            cur.execute("PRAGMA busy_timeout = 300")  # wait 0.3 s, not the configured 20 s
        with pytest.raises(OperationalError, match="database is locked"):
            buy(user, account, "during-lock")
        # An agent over MCP gets a tool error saying nothing changed, not a crash.
        resp = rpc(key, "tools/call", {"name": "place_order", "arguments": {
            "symbol": "BTCUSDT", "side": "BUY", "quantity": "0.002", "client_order_id": "mcp-during-lock"}})
        assert resp.status_code == 200
        result = resp.json()["result"]
        assert result["isError"] and "nothing was changed" in result["content"][0]["text"], result
    finally:
        other.execute("ROLLBACK")
        other.close()
    assert not Order.objects.filter(client_order_id__in=["during-lock", "mcp-during-lock"]).exists()
    assert_books_are_whole(account)
    # The lock gone, the same client_order_id goes through once.
    assert buy(user, account, "during-lock").order["status"] == "FILLED"
    assert Order.objects.filter(client_order_id="during-lock").count() == 1
    assert_books_are_whole(account)


def test_full_disk_gives_a_clear_error_and_no_half_written_order(quotes, trader):
    user, account, _ = trader
    with connection.cursor() as cur:
        # Use up the free pages earlier tests left (flushed tables), so new rows must grow the file.
        cur.execute("CREATE TABLE IF NOT EXISTS faults_filler (b BLOB)")
        cur.execute("PRAGMA page_size")
        page_size = cur.fetchone()[0]
        cur.execute("PRAGMA freelist_count")
        free = cur.fetchone()[0]
        if free:
            cur.execute("INSERT INTO faults_filler VALUES (zeroblob(%s))", [free * page_size])
        cur.execute("PRAGMA page_count")
        pages = cur.fetchone()[0]
        cur.execute(f"PRAGMA max_page_count = {pages + 1}")
    errors, placed = [], 0
    try:
        for i in range(300):
            try:
                buy(user, account, f"full-{i}")
                placed += 1
            except OperationalError as exc:
                errors.append(str(exc))
                if len(errors) >= 3:
                    break
        # (max_page_count is per connection, so the MCP path, which may run on another thread's
        # connection, is checked under lock contention above: the same OperationalError path.)
    finally:
        with connection.cursor() as cur:
            cur.execute("PRAGMA max_page_count = 1073741823")
            cur.execute("DROP TABLE faults_filler")
    assert errors and all("full" in e for e in errors), errors
    assert_books_are_whole(account)
    # Space back: trading resumes, the refused client_order_ids are free to use.
    failed_cid = f"full-{placed}"
    assert not Order.objects.filter(client_order_id=failed_cid).exists()
    assert buy(user, account, failed_cid).order["status"] == "FILLED"
    assert_books_are_whole(account)
