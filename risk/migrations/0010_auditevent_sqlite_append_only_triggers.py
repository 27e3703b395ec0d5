"""On SQLite, triggers refuse UPDATE and DELETE on the audit log, whoever asks (raw SQL, a
queryset built around the model's manager, ``_raw_delete``), as the PostgreSQL trigger of
0004_auditevent_append_only_trigger does there.

A later migration that makes SQLite rebuild ``risk_auditevent`` (Django's table remake for most
AlterField/RemoveField operations) drops these triggers with the old table: such a migration must
create them again (``tests/test_audit_append_only.py`` checks they exist after every migration).
"""
from django.db import migrations

SQLITE_CREATE = [
    """CREATE TRIGGER IF NOT EXISTS risk_auditevent_no_update BEFORE UPDATE ON risk_auditevent
       BEGIN SELECT RAISE(ABORT, 'risk_auditevent is append-only: UPDATE refused'); END""",
    """CREATE TRIGGER IF NOT EXISTS risk_auditevent_no_delete BEFORE DELETE ON risk_auditevent
       BEGIN SELECT RAISE(ABORT, 'risk_auditevent is append-only: DELETE refused'); END""",
]
SQLITE_DROP = [
    "DROP TRIGGER IF EXISTS risk_auditevent_no_update",
    "DROP TRIGGER IF EXISTS risk_auditevent_no_delete",
]


def forwards(apps, schema_editor):
    if schema_editor.connection.vendor == "sqlite":
        for sql in SQLITE_CREATE:
            schema_editor.execute(sql, params=None)


def backwards(apps, schema_editor):
    if schema_editor.connection.vendor == "sqlite":
        for sql in SQLITE_DROP:
            schema_editor.execute(sql, params=None)


class Migration(migrations.Migration):
    dependencies = [("risk", "0009_audit_fewer_indexes")]
    operations = [migrations.RunPython(forwards, backwards)]
