"""The main job (``scripts/run``) runs with DEBUG off unless asked (issue 18): a 404 lists no URLs,
an error shows no debug page, static files are served (whitenoise, collected) and its set-up
(migrate, collectstatic, setup_demo) works without DEBUG, on a fresh data directory."""
import os
import re
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.conftest import free_port, wait_until

ROOT = Path(__file__).resolve().parent.parent


def main_job_env(tmp_path: Path) -> dict:
    """The environment ``scripts/run`` gives its commands: the caller's minus DEBUG and any keys,
    plus what the script exports, with a fresh data directory and SQLite database."""
    env = {k: v for k, v in os.environ.items()
           if k not in {"DEBUG", "SECRET_KEY", "SECRETS_ENCRYPTION_KEY", "DJANGO_SETTINGS_MODULE", "TRADINGMCP_LOCAL",
                        "DATABASE_URL"}}
    script = (ROOT / "scripts" / "run").read_text()
    exported = dict(re.findall(r"^export (\w+)=(\S+)$", script, flags=re.M))
    assert "DEBUG" not in exported, "the main job must not turn DEBUG on"
    env.update(exported)
    env.update({"TRADINGMCP_DATA_DIR": str(tmp_path), "PYTHONUNBUFFERED": "1"})
    return env


def setup_commands() -> list[list[str]]:
    """The script's ``manage.py`` steps before ``runstack``."""
    script = (ROOT / "scripts" / "run").read_text()
    steps = re.findall(r"^\$PY manage\.py (.+)$", script, flags=re.M)
    assert steps and re.search(r"^exec \$PY manage\.py runstack", script, flags=re.M), script
    return [[sys.executable, "manage.py", *step.split()] for step in steps]


@pytest.mark.e2e
def test_main_job_runs_with_debug_off_and_serves_static_files(tmp_path):
    env = main_job_env(tmp_path)
    debug = subprocess.run([sys.executable, "manage.py", "shell", "-v", "0", "-c", "from django.conf import settings; print(settings.DEBUG)"],
                           cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert debug.stdout.strip() == "False", debug.stdout + debug.stderr
    for cmd in setup_commands():
        out = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
        assert out.returncode == 0, (cmd, out.stdout[-2000:], out.stderr[-2000:])
    assert (tmp_path / "staticfiles" / "css" / "app.css").exists()
    assert (tmp_path / "secret_key").stat().st_mode & 0o077 == 0  # the local key: owner-only

    from trading.management.commands.runstack import web_server_command

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log = open(tmp_path / "web.log", "w")
    web = subprocess.Popen(web_server_command(Path(sys.executable).parent, "127.0.0.1", port).split(), cwd=ROOT, env=env,
                           stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_until(lambda: httpx.get(base + "/login/", timeout=2).status_code == 200, timeout=30, what="the web server")
        css = httpx.get(base + "/static/css/app.css")
        assert css.status_code == 200 and "text/css" in css.headers["content-type"] and len(css.content) > 100
        js = httpx.get(base + "/static/js/dashboard.js")
        assert js.status_code == 200
        missing = httpx.get(base + "/no-such-page/")
        assert missing.status_code == 404
        assert "URLconf" not in missing.text and "admin/" not in missing.text and "Traceback" not in missing.text
        # the demo user logs in over plain HTTP (no HTTPS redirect, no Secure-only cookie)
        with httpx.Client(base_url=base) as client:
            page = client.get("/login/")
            csrf = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text).group(1)
            resp = client.post("/login/", data={"username": "demo", "password": "demo-trader-pass",
                                                "csrfmiddlewaretoken": csrf, "next": "/"})
            assert resp.status_code == 302 and resp.headers["location"] == "/", resp.text[:500]
            assert "secure" not in resp.headers.get("set-cookie", "").lower()
            assert client.get("/").status_code == 200
            # a malformed request is a 4xx without any debug detail
            bad = client.get("/dashboard/api/chart/BTCUSDT/?limit=not-a-number")
            assert 400 <= bad.status_code < 500 and "Traceback" not in bad.text
    finally:
        web.terminate()
        try:
            web.wait(timeout=5)
        except subprocess.TimeoutExpired:
            web.kill()
        log.close()


def test_debug_on_only_when_asked(tmp_path):
    env = {**main_job_env(tmp_path), "DEBUG": "1"}
    out = subprocess.run([sys.executable, "manage.py", "shell", "-v", "0", "-c", "from django.conf import settings; print(settings.DEBUG)"],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == "True", out.stderr
