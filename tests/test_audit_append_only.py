"""The audit log is append-only in the database itself, on SQLite and PostgreSQL alike (issue 18,
finding 3): whatever goes around the model's refusals (the base manager, a bare QuerySet,
``_raw_delete``, raw SQL) is refused by a trigger (risk migrations 0004 and 0010)."""
import pytest
from django.db import DatabaseError, connection, transaction
from django.db.models import QuerySet

from risk.audit import audit_record
from risk.models import AuditEvent


@pytest.fixture
def event(trader):
    _, account, _ = trader
    return audit_record(channel="system", action="test.append_only", outcome="ok", account=account, message="original")


def _refused(fn):
    with pytest.raises(DatabaseError, match="append-only"), transaction.atomic():
        fn()


@pytest.mark.django_db
def test_every_way_around_the_model_is_refused_by_the_database(event):
    pk = event.pk
    _refused(lambda: AuditEvent._base_manager.filter(pk=pk).update(message="rewritten"))
    _refused(lambda: QuerySet(AuditEvent).filter(pk=pk).update(message="rewritten"))
    _refused(lambda: QuerySet(AuditEvent).filter(pk=pk)._raw_delete(connection.alias))
    _refused(lambda: AuditEvent._base_manager.all()._raw_delete(connection.alias))

    def raw(sql):
        with connection.cursor() as cur:
            cur.execute(sql, [pk])

    _refused(lambda: raw("UPDATE risk_auditevent SET message = 'rewritten' WHERE id = %s"))
    _refused(lambda: raw("DELETE FROM risk_auditevent WHERE id = %s"))
    assert AuditEvent.objects.get(pk=pk).message == "original"
    # appending still works
    audit_record(channel="system", action="test.append_only", outcome="ok", message="second")
    assert AuditEvent.objects.filter(action="test.append_only").count() == 2


@pytest.mark.django_db
def test_the_triggers_exist_after_every_migration():
    """A later migration that rebuilds the table on SQLite would drop the triggers silently."""
    with connection.cursor() as cur:
        if connection.vendor == "sqlite":
            cur.execute("SELECT name FROM sqlite_master WHERE type = 'trigger' AND tbl_name = 'risk_auditevent'")
            assert {r[0] for r in cur.fetchall()} >= {"risk_auditevent_no_update", "risk_auditevent_no_delete"}
        else:
            cur.execute("SELECT tgname FROM pg_trigger WHERE tgrelid = 'risk_auditevent'::regclass AND NOT tgisinternal")
            assert "risk_auditevent_no_change" in {r[0] for r in cur.fetchall()}


@pytest.mark.django_db(transaction=True)
def test_a_transactional_test_still_starts_from_an_empty_database(trader):
    """The test harness empties the audit table between transactional tests (tests/conftest.py)."""
    _, account, _ = trader
    audit_record(channel="system", action="test.flush", outcome="ok", account=account)
    assert AuditEvent.objects.filter(action="test.flush").count() == 1


@pytest.mark.django_db(transaction=True)
def test_a_transactional_test_still_starts_from_an_empty_database_again(trader):
    assert not AuditEvent.objects.filter(action="test.flush").exists()
