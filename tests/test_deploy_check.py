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


def test_without_secret_key_one_is_kept_owner_only_and_reused(tmp_path):
    """Management commands work without configuration (DEBUG off by default): a missing SECRET_KEY
    is created once under the data directory, readable by its owner only, and reused."""
    env = {**os.environ, "DEBUG": "0", "TRADINGMCP_DATA_DIR": str(tmp_path)}
    env.pop("SECRET_KEY", None)
    env.pop("TRADINGMCP_LOCAL", None)
    cmd = [sys.executable, "manage.py", "shell", "-v", "0", "-c", "from django.conf import settings; print(settings.SECRET_KEY)"]
    first = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    second = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert first.returncode == 0, first.stderr
    key = (tmp_path / "secret_key").read_text().strip()
    assert len(key) >= 50 and first.stdout.strip() == second.stdout.strip() == key
    assert (tmp_path / "secret_key").stat().st_mode & 0o077 == 0


def test_debug_off_outside_the_local_job_needs_the_secrets_key(tmp_path):
    env = {**os.environ, "DEBUG": "0", "TRADINGMCP_DATA_DIR": str(tmp_path), "SECRETS_ENCRYPTION_KEY": ""}
    env.pop("TRADINGMCP_LOCAL", None)
    out = subprocess.run([sys.executable, "manage.py", "shell", "-v", "0", "-c", "from risk.secrets import encrypt; encrypt('x')"],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode != 0 and "SECRETS_ENCRYPTION_KEY must be set" in out.stderr
    assert not (tmp_path / "secrets_key").exists()


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
