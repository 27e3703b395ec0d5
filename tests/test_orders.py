"""The order service on the paper venue, priced by quotes from the replay exchange."""
from decimal import Decimal

import pytest

from conftest import ON_POSTGRES
from risk.models import AuditEvent, RiskLimit
from core.errors import FilterFailure, InvalidInput, OrderRejected, RiskRejected, UnknownSymbol
from trading.models import Balance, Fill, Order, Position
from trading.services import order_place

E8 = Decimal("0.00000001")


def balances(account) -> dict:
    return {b.asset: b.free for b in Balance.objects.filter(account=account)}


def place(account, user, **kw):
    args = {"symbol": "BTCUSDT", "side": "BUY", "quantity": "0.002", "channel": "api"}
    args.update(kw)
    return order_place(account=account, actor_user=user, **args)


def test_market_buy_fills_at_best_ask_with_taker_fee_in_base(quotes, trader):
    user, account, _ = trader
    ask = Decimal(quotes["BTCUSDT"]["askPrice"])
    result = place(account, user, client_order_id="buy-1")

    order = Order.objects.get(account=account, client_order_id="buy-1")
    fill = Fill.objects.get(order=order)
    cost = (ask * Decimal("0.002")).quantize(E8)
    assert order.status == "FILLED" and order.executed_qty == Decimal("0.002")
    assert fill.price == ask and fill.qty == Decimal("0.002") and fill.quote_qty == cost
    assert fill.commission == Decimal("0.00000200") and fill.commission_asset == "BTC"
    assert balances(account) == {"USDT": Decimal("10000") - cost, "BTC": Decimal("0.00199800")}
    assert result.order["status"] == "FILLED" and result.order["fills"][0]["price"] == format(ask, "f")
    event = AuditEvent.objects.get(action="order.place", account=account)
    assert event.outcome == "ok" and event.actor_user == user and event.risk_decision["allowed"] is True


def test_sell_realizes_pnl_and_pays_fee_in_quote(quotes, trader):
    user, account, _ = trader
    bid, ask = Decimal(quotes["BTCUSDT"]["bidPrice"]), Decimal(quotes["BTCUSDT"]["askPrice"])
    place(account, user, quantity="0.004")
    place(account, user, side="SELL", quantity="0.002")
    sell = Fill.objects.get(side="SELL", account=account)
    proceeds = (bid * Decimal("0.002")).quantize(E8)
    assert sell.price == bid and sell.commission == (proceeds * Decimal("0.001")).quantize(E8)
    assert sell.commission_asset == "USDT"
    assert sell.realized_pnl == ((bid - ask) * Decimal("0.002")).quantize(E8)
    pos = Position.objects.get(account=account, symbol="BTCUSDT")
    assert pos.quantity == Decimal("0.004") - Decimal("0.000004") - Decimal("0.002")
    assert balances(account)["BTC"] == pos.quantity


def test_idempotent_by_client_order_id(quotes, trader):
    user, account, _ = trader
    first = place(account, user, client_order_id="same-id")
    again = place(account, user, client_order_id="same-id")
    assert again.duplicate and again.order["orderId"] == first.order["orderId"]
    assert Order.objects.filter(account=account).count() == 1
    assert Fill.objects.filter(account=account).count() == 1


def test_risk_max_order_notional_rejects_and_books_nothing(quotes, trader):
    user, account, _ = trader
    RiskLimit.objects.filter(account=account).update(max_order_notional=Decimal("5"))
    before = balances(account)
    with pytest.raises(RiskRejected) as exc:
        place(account, user, client_order_id="too-big")
    assert "max_order_notional" in exc.value.msg and "exceeds the limit of 5 USDT" in exc.value.msg
    notional = Decimal(quotes["BTCUSDT"]["askPrice"]) * Decimal("0.002")
    assert f"{notional.normalize():f}" in exc.value.msg
    order = Order.objects.get(client_order_id="too-big")
    assert order.status == "REJECTED" and "max_order_notional" in order.reject_reason
    assert balances(account) == before and not Fill.objects.exists()
    event = AuditEvent.objects.get(action="order.place")
    assert event.outcome == "rejected"
    check = event.risk_decision["checks"][-1]  # the refusing check comes last
    assert check["name"] == "max_order_notional" and check["limit"] == "5.00000000" and not check["passed"]


def test_daily_loss_breaker_trips_once_loss_reaches_limit(quotes, trader):
    user, account, _ = trader
    # The buy's taker fee alone is ~0.0144 USDT (< 0.02, so the sell passes); the round trip of
    # 0.002 BTC loses the spread plus two taker fees (~0.029 USDT at ~7.2k) and trips the breaker.
    RiskLimit.objects.filter(account=account).update(max_daily_loss=Decimal("0.02"))
    place(account, user, quantity="0.002")
    place(account, user, side="SELL", quantity="0.00199")
    with pytest.raises(RiskRejected) as exc:
        place(account, user, quantity="0.002")
    assert "max_daily_loss" in exc.value.msg


def test_insufficient_balance_is_rejected_with_binance_code(quotes, trader):
    user, account, _ = trader
    with pytest.raises(OrderRejected) as exc:
        place(account, user, quantity="10", client_order_id="whale")
    assert exc.value.code == -2010 and "insufficient balance" in exc.value.msg
    assert Order.objects.get(client_order_id="whale").status == "REJECTED"
    assert balances(account) == {"USDT": Decimal("10000")}


@pytest.mark.parametrize(
    "kwargs, error, text",
    [
        ({"symbol": "BTCUSD"}, UnknownSymbol, "Closest valid symbols: BTCUSDT"),
        ({"symbol": "<script>"}, UnknownSymbol, "Invalid symbol"),
        ({"quantity": "0"}, InvalidInput, "positive"),
        ({"quantity": "-1"}, InvalidInput, "positive"),
        ({"quantity": "abc"}, InvalidInput, "decimal number"),
        ({"quantity": "NaN"}, InvalidInput, "finite"),
        ({"quantity": "Infinity"}, InvalidInput, "finite"),
        ({"quantity": "1e30"}, InvalidInput, "too large"),
        ({"quantity": "0.0010001"}, FilterFailure, "nearest valid: 0.001"),
        ({"side": "HOLD"}, InvalidInput, "side must be"),
        ({"order_type": "TRAILING"}, InvalidInput, "not supported"),
        ({"client_order_id": "has spaces!"}, InvalidInput, "client_order_id"),
    ],
)
def test_bad_input_is_typed_and_changes_nothing(quotes, trader, kwargs, error, text):
    user, account, _ = trader
    with pytest.raises(error) as exc:
        place(account, user, **kwargs)
    assert text in exc.value.msg
    assert not Order.objects.exists() and balances(account) == {"USDT": Decimal("10000")}
    assert AuditEvent.objects.get(action="order.place").outcome == "rejected"


def test_stale_quote_refuses_market_order(quotes, trader, settings):
    user, account, _ = trader
    settings.MARKET_DATA_MAX_AGE_S = -1
    with pytest.raises(Exception) as exc:
        place(account, user)
    assert "stale" in str(exc.value)
    assert not Order.objects.exists()


def test_audit_events_are_append_only(quotes, trader):
    user, account, _ = trader
    place(account, user)
    event = AuditEvent.objects.get()
    event.message = "tampered"
    with pytest.raises(PermissionError):
        event.save()
    with pytest.raises(PermissionError):
        event.delete()
    with pytest.raises(PermissionError):
        AuditEvent.objects.all().update(message="x")
    with pytest.raises(PermissionError):
        AuditEvent.objects.all().delete()
    assert AuditEvent.objects.get().message != "tampered"


def test_retry_returns_the_booked_order_even_when_the_market_went_stale(quotes, trader, settings):
    """Idempotency comes before market checks: a client retrying after a timeout gets its order."""
    user, account, _ = trader
    first = place(account, user, client_order_id="retry-me")
    settings.MARKET_DATA_MAX_AGE_S = -1  # every quote is stale now
    again = place(account, user, client_order_id="retry-me")
    assert again.duplicate and again.order["orderId"] == first.order["orderId"]
    assert again.order["fills"] == first.order["fills"]
    with pytest.raises(Exception, match="stale"):
        place(account, user, client_order_id="new-id")
    assert Order.objects.filter(account=account).count() == 1


def test_market_order_answer_equals_the_stored_order(quotes, trader):
    """The answer is built from memory (no re-read): it must equal what a fresh read returns."""
    from trading.selectors import order_as_dict

    user, account, _ = trader
    place(account, user, quantity="0.004")
    result = place(account, user, side="SELL", quantity="0.002", client_order_id="sell-1")
    stored = order_as_dict(Order.objects.get(account=account, client_order_id="sell-1"))
    assert result.order == stored and len(stored["fills"]) >= 1


# The statements of one paper MARKET SELL order (balances and position existing): the account lock
# with its risk limit; once it is held, the duplicate check and open-order counts; its balance rows;
# its position row; an UPDATE of each of the two balance rows; the position UPDATE; the order
# INSERT; the fills INSERT; the audit row (a BUY also reads the account's protections).
# bench/bench_orders.py measures what they cost.
MARKET_ORDER_STATEMENTS = 10


def _order_statements(captured) -> list[str]:
    """The SQL statements of captured queries, without transaction control (BEGIN, SAVEPOINT,
    COMMIT, ...)."""
    control = ("BEGIN", "COMMIT", "ROLLBACK", "SAVEPOINT", "RELEASE SAVEPOINT")
    return [q["sql"] for q in captured if not q["sql"].upper().startswith(control)]


def test_market_order_statement_budget(quotes, trader):
    """The order hot path stays lean: a paper MARKET order on an account whose balance and position
    rows exist is ``MARKET_ORDER_STATEMENTS`` statements, each table written once, the account row
    locked first (FOR UPDATE on PostgreSQL), its balance and position rows locked before they are
    written."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    user, account, _ = trader
    place(account, user, quantity="0.004")  # position and balances exist
    with CaptureQueriesContext(connection) as ctx:
        order = place(account, user, side="SELL", quantity="0.002").order
    statements = _order_statements(ctx.captured_queries)
    assert order["status"] == "FILLED"
    assert len(statements) <= MARKET_ORDER_STATEMENTS, statements
    writes = [s.split()[0] + " " + next(t for t in ("trading_order", "trading_balance", "trading_position",
                                                    "trading_fill", "risk_auditevent") if t in s)
              for s in statements if s.startswith(("INSERT", "UPDATE"))]
    assert sorted(writes) == sorted(["INSERT trading_order", "UPDATE trading_balance", "UPDATE trading_balance",
                                     "UPDATE trading_position", "INSERT trading_fill", "INSERT risk_auditevent"]), writes
    assert "trading_account" in statements[0] and "risk_risklimit" in statements[0]
    if connection.vendor == "postgresql":
        assert statements[0].rstrip().endswith('FOR UPDATE OF "trading_account"'), statements[0]
        locked = [s for s in statements if s.rstrip().endswith("FOR UPDATE")]
        assert any("trading_balance" in s for s in locked) and any("trading_position" in s for s in locked), locked
    ids = [f["id"] for f in order["fills"]]  # returned by the INSERT, as the database kept them
    assert ids == list(Fill.objects.filter(order_id=order["orderId"]).order_by("id").values_list("id", flat=True))


@pytest.mark.skipif(not ON_POSTGRES, reason="prepared statements are PostgreSQL's")
def test_order_path_statements_are_prepared_once_per_connection(quotes, trader):
    """PostgreSQL parses and plans the order path's statements once per connection: with
    server-side binding (settings: OPTIONS ``server_side_binding``) psycopg runs a statement seen
    ``prepare_threshold`` times as a named prepared statement (``pg_prepared_statements``), not as
    an unnamed one planned every time."""
    from django.db import connection

    user, account, _ = trader
    threshold = connection.settings_dict["OPTIONS"]["prepare_threshold"]
    for _ in range(threshold + 1):
        place(account, user, quantity="0.002")
    with connection.cursor() as cur:
        cur.execute("SELECT statement FROM pg_prepared_statements")
        prepared = [row[0] for row in cur.fetchall()]
    for table in ("trading_order", "trading_fill", "risk_auditevent", "trading_balance", "trading_account"):
        assert any(table in sql for sql in prepared), (table, prepared)


@pytest.mark.django_db(transaction=True)
def test_the_audit_row_goes_with_the_commit(quotes, trader):
    """Outside any enclosing transaction (as in production), a MARKET order is one transaction that
    ``transaction.atomic()`` owns: its writes and its audit row, then one COMMIT (none before, no
    rollback). The order, its fills and the audit row are committed together, and the order's
    pushes (order, balances, activity with the row's id) are handed to the publisher at once, after
    the commit."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from risk.models import AuditEvent
    from core import events

    user, account, _ = trader
    place(account, user, quantity="0.004")
    pushed = []
    put_many = events._publisher.put_many
    events._publisher.put_many = lambda items: pushed.append(
        ([message for _, message in items], connection.in_atomic_block))
    try:
        with CaptureQueriesContext(connection) as ctx:
            order = place(account, user, side="SELL", quantity="0.002", client_order_id="tail-1").order
    finally:
        events._publisher.put_many = put_many
    event = AuditEvent.objects.get(action="order.place", params__client_order_id="tail-1")
    assert event.result["orderId"] == order["orderId"] and event.outcome == "ok"
    assert Order.objects.get(pk=order["orderId"]).fills.count() == len(order["fills"]) >= 1
    # One handover after the commit: the order, its balances and the activity row, with its id.
    assert [[m["kind"] for m in items] for items, _ in pushed] == [["order", "balances", "activity"]]
    assert pushed[0][0][0]["data"]["orderId"] == order["orderId"] and pushed[0][0][2]["data"]["id"] == event.pk
    assert pushed[0][1] is False  # handed over outside the transaction: after its COMMIT
    sql = [q["sql"].upper() for q in ctx.captured_queries]
    assert sum(s.startswith("COMMIT") for s in sql) == 1 and not any(s.startswith("ROLLBACK") for s in sql), sql
    commit = next(i for i, s in enumerate(sql) if s.startswith("COMMIT"))
    audit_insert = next(i for i, s in enumerate(sql) if s.startswith("INSERT") and "RISK_AUDITEVENT" in s)
    fill_insert = next(i for i, s in enumerate(sql) if s.startswith("INSERT") and "TRADING_FILL" in s)
    assert fill_insert < audit_insert < commit == len(sql) - 1, sql


def test_one_exchange_order_is_booked_once_per_account(trader):
    from django.db import IntegrityError, transaction

    user, account, _ = trader
    kw = {"account": account, "symbol": "BTCUSDT", "side": "BUY", "type": "LIMIT", "quantity": Decimal("0.002"),
          "price": Decimal("7000"), "exchange_order_id": 42}
    Order.objects.create(client_order_id="a", **kw)
    Order.objects.create(client_order_id="b", **{**kw, "symbol": "ETHUSDT"})  # orderIds are per symbol
    Order.objects.create(client_order_id="c", **{**kw, "exchange_order_id": None})
    Order.objects.create(client_order_id="d", **{**kw, "exchange_order_id": None})
    with pytest.raises(IntegrityError), transaction.atomic():
        Order.objects.create(client_order_id="e", **kw)


def test_an_unreachable_market_data_cache_is_a_typed_refusal(quotes, trader, monkeypatch):
    """Redis down or restarting: the order is refused with -1003 and a retry hint, nothing booked
    (found by tests/faults/test_redis_restart.py, where it surfaced as an internal error)."""
    import redis

    from marketdata import cache
    from core.errors import MarketDataUnavailable

    user, account, _ = trader
    dead = redis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.2)  # nothing listens on port 1
    with monkeypatch.context() as m, pytest.raises(MarketDataUnavailable) as exc:
        m.setattr(cache, "get_redis", lambda: dead)
        place(account, user, client_order_id="redis-down")
    assert exc.value.code == -1003 and "unreachable" in exc.value.msg
    assert not Order.objects.filter(account=account).exists()


@pytest.mark.django_db(transaction=True)
def test_an_order_is_one_transaction_of_a_bounded_number_of_statements(quotes, trader):
    """As in production (no enclosing transaction): a MARKET order opens one transaction, runs at
    most ``MARKET_ORDER_STATEMENTS`` statements in it and commits once; what a statement costs in
    round trips is the driver's (each one on PostgreSQL, BEGIN sent with the first)."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    user, account, _ = trader
    place(account, user, quantity="0.004")  # balances and position exist
    with CaptureQueriesContext(connection) as ctx:
        order = place(account, user, side="SELL", quantity="0.002").order
    assert order["status"] == "FILLED"
    sql = [q["sql"].upper() for q in ctx.captured_queries]
    assert sum(s.startswith("COMMIT") for s in sql) == 1 and not any(s.startswith(("ROLLBACK", "SAVEPOINT")) for s in sql)
    assert len(_order_statements(ctx.captured_queries)) <= MARKET_ORDER_STATEMENTS, sql
