"""Production settings pass Django's deployment checklist (``manage.py check --deploy``)."""
import os
import secrets
import subprocess
import sys
from pathlib import Path

from cryptography.fernet import Fernet

ROOT = Path(__file__).resolve().parent.parent


def test_check_deploy_is_clean_with_production_settings(tmp_path):
    env = {
        **os.environ, "DEBUG": "0", "SECRET_KEY": secrets.token_urlsafe(60), "ALLOWED_HOSTS": "trading.example.com",
        "SECRETS_ENCRYPTION_KEY": Fernet.generate_key().decode(), "TRADINGMCP_DATA_DIR": str(tmp_path),
    }
    env.pop("DJANGO_SETTINGS_MODULE", None)
    env.pop("TRADINGMCP_LOCAL", None)
    out = subprocess.run([sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "no issues" in out.stdout


def test_debug_off_without_secret_key_refuses_to_start(tmp_path):
    env = {**os.environ, "DEBUG": "0", "TRADINGMCP_DATA_DIR": str(tmp_path)}
    env.pop("SECRET_KEY", None)
    env.pop("TRADINGMCP_LOCAL", None)
    out = subprocess.run([sys.executable, "manage.py", "check"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode != 0 and "SECRET_KEY must be set" in out.stderr


def test_the_database_check_warns_when_postgresql_runs_without_autovacuum(db):
    """``manage.py check --database default`` warns (trading.W001) exactly when the PostgreSQL
    server's autovacuum is off; SQLite has nothing to vacuum."""
    from django.db import connection

    from trading.checks import autovacuum_on

    found = autovacuum_on(databases=["default"])
    if connection.vendor != "postgresql":
        assert found == []
        return
    with connection.cursor() as cur:
        cur.execute("SHOW autovacuum")
        setting = cur.fetchone()[0]
    assert [w.id for w in found] == ([] if setting == "on" else ["trading.W001"])
    if found:
        assert f"autovacuum={setting}" in found[0].msg and "VACUUM ANALYZE" in found[0].hint
