"""``manage.py evaluate_agent``: run an agent against a fresh replay exchange on a slice of the
recorded data, on a fresh paper account, and write its report (``agenteval.runner``).

Examples::

    manage.py evaluate_agent                                   # reference RSI agent, BTCUSDT minutes 1000..1060
    manage.py evaluate_agent --symbol ETHUSDT --start-minute 1420 --minutes 120 --transport ws
    manage.py evaluate_agent --agent "python my_agent.py --lockstep" --speed 60
    manage.py evaluate_agent --mode free --speed 60 --agent "node agent.js"   # no step protocol: not deterministic

By default the run gets its own SQLite database and Redis key prefix (market data and accounts
of the running stack are neither read nor touched): the command migrates
``<DATA_DIR>/evaluations/<run_id>/eval.sqlite3`` and re-runs itself there with ``--in-place``.
``--in-place`` uses the configured database (tests do, on their fresh test database).
The report: ``<DATA_DIR>/evaluations/<run_id>/report.json``, ``equity.png``, ``report.html``, also at
``/evaluations/<run_id>/`` in the dashboard for the user it ran for (``--user``).
"""
from __future__ import annotations

import os
import shlex
import subprocess
import sys
import time
import uuid
from decimal import Decimal

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from agenteval.runner import ROOT, EvalConfig, EvaluationError, evaluate, reports_dir


class Command(BaseCommand):
    help = "Evaluate an MCP agent on a slice of replayed real market data (deterministic lockstep by default)."

    def add_arguments(self, parser):
        parser.add_argument("--symbol", default="BTCUSDT")
        parser.add_argument("--start-minute", type=int, default=1000, help="first 1m candle of the slice (tape index)")
        parser.add_argument("--minutes", type=int, default=60, help="slice length (replay minutes)")
        parser.add_argument("--step-seconds", type=int, default=60, help="replay seconds between agent steps")
        parser.add_argument("--speed", type=float, default=0.0,
                            help="replay speed cap (x wall time; 0 = as fast as the agent); free mode: the clock speed")
        parser.add_argument("--agent", default="", help="agent command line (default: examples/rsi_agent.py --lockstep)")
        parser.add_argument("--transport", choices=["http", "ws"], default="http", help="URL given to the agent")
        parser.add_argument("--user", default="evaluator", help="owner of the fresh paper account")
        parser.add_argument("--mode", choices=["lockstep", "free"], default="lockstep")
        parser.add_argument("--step-timeout", type=float, default=60.0)
        parser.add_argument("--max-order-notional", type=Decimal, default=None, help="risk limit on the fresh account (quote asset)")
        parser.add_argument("--run-id", default="")
        parser.add_argument("--in-place", action="store_true", help="use the configured database instead of a fresh one")

    def handle(self, *args, **opts):
        run_id = opts["run_id"] or time.strftime("%Y%m%d-%H%M%S") + "-" + uuid.uuid4().hex[:6]
        if not opts["in_place"]:
            return self._isolated(run_id, opts)
        config = EvalConfig(
            symbol=opts["symbol"], start_minute=opts["start_minute"], minutes=opts["minutes"],
            step_ms=opts["step_seconds"] * 1000, speed=opts["speed"], transport=opts["transport"], username=opts["user"],
            mode=opts["mode"], step_timeout_s=opts["step_timeout"], run_id=run_id, max_order_notional=opts["max_order_notional"],
        )
        if opts["agent"]:
            config.agent = shlex.split(opts["agent"])
        try:
            report = evaluate(config, stdout=self.stdout)
        except EvaluationError as exc:
            raise CommandError(str(exc)) from None
        out = reports_dir() / run_id
        self.stdout.write(
            f"run {run_id}: P&L {report['pnl']} {report['quoteAsset']} ({report['pnlPct']} %), max drawdown "
            f"{report['maxDrawdown']}, {report['trades']} fills, fees {report['fees']}, {report['rejections']['orders']} rejected "
            f"orders, {report['toolCalls']['total']} tool calls (p50 {report['toolCalls']['p50Ms']} ms); stopped: {report['stopped']}\n"
            f"report: {out / 'report.html'} (dashboard: /evaluations/{run_id}/)"
        )

    def _isolated(self, run_id: str, opts) -> None:
        out = reports_dir() / run_id
        out.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "DATABASE_URL": f"sqlite:///{out / 'eval.sqlite3'}",
               "REDIS_KEY_PREFIX": f"{settings.REDIS_KEY_PREFIX}eval-{run_id}:", "TRADINGMCP_DATA_DIR": str(settings.DATA_DIR),
               "REDIS_URL": settings.REDIS_URL}
        manage = [sys.executable, str(ROOT / "manage.py")]
        self.stdout.write(f"run {run_id}: migrating a fresh database {out / 'eval.sqlite3'}")
        subprocess.run(manage + ["migrate", "--noinput", "-v", "0"], env=env, cwd=ROOT, check=True)
        argv = ["evaluate_agent", "--in-place", "--run-id", run_id]
        for name in ("symbol", "start_minute", "minutes", "step_seconds", "speed", "agent", "transport", "user", "mode", "step_timeout", "max_order_notional"):
            if opts[name] not in ("", None):
                argv += [f"--{name.replace('_', '-')}", str(opts[name])]
        rc = subprocess.run(manage + argv, env=env, cwd=ROOT).returncode
        if rc:
            raise CommandError(f"evaluation {run_id} failed (exit {rc})")
