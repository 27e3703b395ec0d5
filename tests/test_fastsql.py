"""``project.fastsql``: precompiled SQL run on the connection Django manages, with Django's types
and errors, and (PostgreSQL) in libpq pipelines of prepared statements driven directly.

Everything runs against the real test database: values written and read back as the ORM would,
errors surfacing as Django's, and the prepared-statement bookkeeping shared with psycopg
surviving its DEALLOCATE ALL after a rollback.
"""
from __future__ import annotations

from datetime import datetime, timezone
from decimal import Decimal

import pytest
from django.db import IntegrityError, connection, transaction

from project import fastsql
from risk.models import AuditEvent
from tests.conftest import ON_POSTGRES
from trading.models import Balance

pytestmark = pytest.mark.django_db


def _balance_sql() -> str:
    qn = fastsql.qn
    return (f"SELECT {fastsql.columns(Balance, 't')} FROM {qn(Balance._meta.db_table)} t "
            f"WHERE t.{qn('account_id')} = %s AND t.{qn('asset')} = %s")


def test_values_go_and_come_back_as_the_orm_gives_them(trader):
    """Decimals keep their digits, datetimes come back aware (UTC), JSON is stored as JSON, NULL
    as None: the same instance the ORM would load."""
    user, account, _ = trader
    row = Balance(account=account, asset="ZZZ", free=Decimal("12345.67891234"), locked=Decimal("0.00000001"))
    fastsql.insert([row])
    assert row.pk is not None and not row._state.adding
    found = fastsql.from_row(Balance, fastsql.execute(_balance_sql(), [account.pk, "ZZZ"], fetch="one"))
    orm = Balance.objects.get(pk=row.pk)
    assert (found.pk, found.free, found.locked, found.updated_at) == (orm.pk, orm.free, orm.locked, orm.updated_at)
    assert found.free == Decimal("12345.67891234") and found.updated_at.utcoffset().total_seconds() == 0

    event = AuditEvent(channel="mcp", action="fastsql.test", outcome="ok", account=account, actor_user=user,
                       params={"qty": "0.002", "nested": [1, {"a": None}]}, result={}, message="", latency_ms=1.5)
    fastsql.insert([event])
    stored = AuditEvent.objects.get(pk=event.pk)
    assert stored.params == {"qty": "0.002", "nested": [1, {"a": None}]} and stored.actor_token_id is None
    assert fastsql.execute(_balance_sql(), [account.pk, "NOPE"], fetch="one") is None
    assert fastsql.execute(_balance_sql(), [account.pk, "NOPE"]) == []


def test_a_batch_returns_each_statements_rows_in_order(trader):
    _, account, _ = trader
    Balance.objects.create(account=account, asset="AAA", free=Decimal("1"))
    qn = fastsql.qn
    update = f"UPDATE {qn(Balance._meta.db_table)} SET {qn('free')} = %s WHERE {qn('account_id')} = %s AND {qn('asset')} = %s"
    with transaction.atomic():
        results = fastsql.execute_batch([
            (_balance_sql(), [account.pk, "AAA"]),
            (update, [Decimal("2.5"), account.pk, "AAA"]),
            (_balance_sql(), [account.pk, "AAA"]),
        ])
    assert [len(r) for r in results] == [1, 0, 1]
    assert fastsql.from_row(Balance, results[0][0]).free == Decimal("1")
    assert fastsql.from_row(Balance, results[2][0]).free == Decimal("2.5")  # in order: after the update


def test_a_failing_statement_raises_djangos_error_and_the_rest_does_not_run(trader):
    """A unique violation in the middle of a batch is Django's ``IntegrityError``; the statements
    after it do not run, the block rolls back, and the connection serves the next batch."""
    _, account, _ = trader
    Balance.objects.create(account=account, asset="DUP", free=Decimal("1"))
    qn = fastsql.qn
    table = qn(Balance._meta.db_table)
    insert = (f"INSERT INTO {table} ({qn('account_id')}, {qn('asset')}, {qn('free')}, {qn('locked')}, {qn('updated_at')}) "
              "VALUES (%s, %s, %s, %s, %s)")
    now = datetime.now(timezone.utc)
    with pytest.raises(IntegrityError), transaction.atomic():
        fastsql.execute_batch([
            (insert, [account.pk, "NEW1", Decimal("1"), Decimal("0"), now]),
            (insert, [account.pk, "DUP", Decimal("1"), Decimal("0"), now]),  # balance_unique_account_asset
            (insert, [account.pk, "NEW2", Decimal("1"), Decimal("0"), now]),
        ])
    assert sorted(Balance.objects.filter(account=account).values_list("asset", flat=True)) == ["DUP", "USDT"]
    with transaction.atomic():  # the same statements again, on the same connection
        fastsql.execute_batch([(insert, [account.pk, "NEW1", Decimal("1"), Decimal("0"), now]),
                               (_balance_sql(), [account.pk, "NEW1"])])
    assert Balance.objects.filter(account=account, asset="NEW1").exists()


def test_a_wrong_parameter_count_is_refused_before_anything_is_sent(trader):
    _, account, _ = trader
    before = fastsql.round_trips
    with pytest.raises(Exception) as exc, transaction.atomic():
        fastsql.execute_batch([(_balance_sql(), [account.pk]), (_balance_sql(), [account.pk, "USDT"])])
    assert "placeholders" in str(exc.value) or connection.vendor != "postgresql"
    assert fastsql.round_trips == before


@pytest.mark.skipif(not ON_POSTGRES, reason="prepared statements are PostgreSQL's")
@pytest.mark.django_db(transaction=True)
def test_statements_are_prepared_once_and_again_after_psycopgs_deallocate_all(trader):
    """fastsql names its prepared statements through psycopg's own ``PrepareManager``: psycopg
    sends DEALLOCATE ALL on every rollback, and the next batch must prepare again instead of
    executing a statement the server no longer has ("prepared statement does not exist")."""
    _, account, _ = trader
    sql = _balance_sql()

    def prepared_count():
        with connection.cursor() as cur:
            cur.execute("SELECT count(*) FROM pg_prepared_statements WHERE statement LIKE %s",
                        ["%trading_balance%account_id\" = $1 AND t.\"asset\" = $2"])
            return cur.fetchone()[0]

    fastsql.execute(sql, [account.pk, "USDT"])
    fastsql.execute(sql, [account.pk, "USDT"])
    assert prepared_count() == 1  # prepared once, executed twice
    with pytest.raises(IntegrityError), transaction.atomic():  # rolled back: psycopg deallocates all
        Balance.objects.create(account=account, asset="USDT")
    assert prepared_count() == 0
    assert fastsql.execute(sql, [account.pk, "USDT"], fetch="one") is not None
    assert prepared_count() == 1


@pytest.mark.skipif(not ON_POSTGRES, reason="a PostgreSQL backend is terminated")
@pytest.mark.django_db(transaction=True)
def test_a_connection_lost_mid_call_is_djangos_operational_error_and_the_next_call_reconnects(trader):
    """The server ends the session (restart, failover, idle kill): the next pipeline fails at once
    with Django's ``OperationalError`` (no hang, no psycopg class leaking out), and after Django
    drops the broken connection, as it does after a request, the next call opens a new one."""
    import psycopg
    from django.db import OperationalError, close_old_connections

    _, account, _ = trader
    assert fastsql.execute(_balance_sql(), [account.pk, "USDT"], fetch="one") is not None
    pid = connection.connection.info.backend_pid
    dsn = connection.connection.info.dsn
    with psycopg.connect(dsn, autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", [pid])
    with pytest.raises(OperationalError):
        fastsql.execute_batch([(_balance_sql(), [account.pk, "USDT"]), (_balance_sql(), [account.pk, "BTC"])])
    close_old_connections()  # what Django runs after every request (and the tool pool after every call)
    assert connection.connection is None
    row = fastsql.execute(_balance_sql(), [account.pk, "USDT"], fetch="one")
    assert row is not None and connection.connection.info.backend_pid != pid
