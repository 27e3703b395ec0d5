"""On PostgreSQL, a trigger refuses UPDATE and DELETE on the audit log, whoever asks (the model
and queryset refuse them in Django on every database)."""
from django.db import migrations

CREATE = """
CREATE OR REPLACE FUNCTION risk_auditevent_append_only() RETURNS trigger AS $$
BEGIN
    RAISE EXCEPTION 'risk_auditevent is append-only: % refused', TG_OP;
END;
$$ LANGUAGE plpgsql;
DROP TRIGGER IF EXISTS risk_auditevent_no_change ON risk_auditevent;
CREATE TRIGGER risk_auditevent_no_change BEFORE UPDATE OR DELETE ON risk_auditevent
    FOR EACH ROW EXECUTE FUNCTION risk_auditevent_append_only();
"""
DROP = """
DROP TRIGGER IF EXISTS risk_auditevent_no_change ON risk_auditevent;
DROP FUNCTION IF EXISTS risk_auditevent_append_only();
"""


def forwards(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(CREATE, params=None)


def backwards(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(DROP, params=None)


class Migration(migrations.Migration):
    dependencies = [("risk", "0003_risk_limits_and_trading_state")]
    operations = [migrations.RunPython(forwards, backwards)]
