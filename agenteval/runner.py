"""Agent evaluation on replayed real markets (``manage.py evaluate_agent``).

One run: a fresh replay exchange (``replay``) positioned on a slice of the recorded
tape, a fresh paper account with its own agent token (restricted to that account), our MCP server
(``/mcp`` and ``/mcp/ws``, the production ``MCPEndpoint`` and ``MCPWebSocketApp``, on uvicorn in
this process, observed so every tool call's latency and outcome is counted), and the agent as a
child process (the reference ``examples/rsi_agent.py`` or any command line).

Determinism ("lockstep", the default). What can make fills depend on wall-clock timing, and what
removes it here:

- the replay clock runs with wall time → it stays **paused** and only moves between steps
  (``clock.advance(step_ms)``); the agent acts on a frozen market;
- the agent's pace → the agent is told each step on stdin (``{"step": n, "time": ms}``) and the
  clock does not move until it answers ``{"done": n}`` (see ``examples/rsi_agent.py --lockstep``);
- the quote cache (the ingester writes it as the stream comes) → rewritten at every step from the
  venue's REST ``ticker/bookTicker`` and 1m ``klines`` at the step's replay time;
- the paper engine's order-book cache (reused for ``PAPER_DEPTH_MAX_AGE_S`` wall seconds) →
  dropped at every step (``trading.market.depth_forget``), so a MARKET order walks the book of
  the step's replay second;
- resting orders filled by the paper matcher as the stream arrives → matched at each step on the
  step's replayed trades in time order (``trading.venues.paper.paper_match``), then on its quote;
- the time-shifted tape → the replay starts at the recorded time of the slice (offset 0), so the
  same slice has the same candle, trade and order-book ids on every run.

``mode="free"`` instead lets replay time run at ``speed``× while the agent does what it likes
(for agents that do not speak the step protocol; not deterministic).
"""
from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import statistics
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import asdict, dataclass, field
from decimal import Decimal
from pathlib import Path

from django.conf import settings

from core.redis import async_redis_shared_close
from marketdata import cache
from marketdata.binance import make_client
from marketdata.ingester import book_from_event
from marketdata.selectors import symbol_cache_clear
from marketdata.services import exchange_info_sync
from mcpapi.endpoint import MCPEndpoint
from mcpapi.ws import MCPWebSocketApp
from risk.services import agent_token_create
from trading.market import depth_forget
from trading.models import Balance, Fill, Order, OrderStatus
from trading.services import account_create
from trading.venues import paper as paper_venue
from trading.venues.paper import OPEN, paper_match, symbol_assets

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parent.parent
REFERENCE_AGENT = [sys.executable, str(ROOT / "examples" / "rsi_agent.py"), "--lockstep"]
MINUTE_MS = 60_000


class EvaluationError(Exception):
    """The evaluation could not run (bad slice, agent failed to start, ...)."""


def reports_dir() -> Path:
    """Where runs are written: ``<DATA_DIR>/evaluations/<run_id>/``."""
    return Path(settings.DATA_DIR) / "evaluations"


@dataclass
class EvalConfig:
    """One evaluation.

    Args:
        symbol: the replayed symbol traded (``BTCUSDT`` or ``ETHUSDT``).
        start_minute: index of the slice's first 1m candle in the recorded tape (0-based; the
            candles before it are the history indicators see).
        minutes: slice length in minutes of replay time.
        step_ms: replay ms between two agent steps (default one minute: one new closed candle).
        speed: lockstep: at most this many replay ms per wall ms (0 = as fast as the agent);
            free mode: the replay clock's speed.
        agent: the agent's command line (default: the reference RSI agent, lockstep).
        transport: ``http`` or ``ws``: which URL the agent gets as ``TRADINGMCP_URL``.
        username: owner of the fresh paper account (created if missing).
        mode: ``lockstep`` (deterministic) or ``free``.
        step_timeout_s: wall seconds an agent may take for one step before the run stops.
        max_order_notional: optional risk limit (quote asset) on the fresh account, to see how an
            agent copes with rejections.
    """

    symbol: str = "BTCUSDT"
    start_minute: int = 1000
    minutes: int = 60
    step_ms: int = MINUTE_MS
    speed: float = 0.0
    agent: list[str] = field(default_factory=lambda: list(REFERENCE_AGENT))
    transport: str = "http"
    username: str = "evaluator"
    mode: str = "lockstep"
    step_timeout_s: float = 60.0
    max_order_notional: Decimal | None = None
    run_id: str = ""


class ToolObserver:
    """Collects one row per MCP request: ``method``, ``tool``, ``ms`` (server-side latency),
    ``error`` (message of a tool error or JSON-RPC error, else None)."""

    def __init__(self):
        self.calls: list[dict] = []
        self._lock = threading.Lock()

    def record(self, method: str, tool: str | None, ms: float, error: str | None) -> None:
        with self._lock:
            self.calls.append({"method": method, "tool": tool, "ms": ms, "error": error})


class ObservedEndpoint(MCPEndpoint):
    """The production ``MCPEndpoint`` with each request timed and its outcome recorded."""

    def __init__(self, observer: ToolObserver):
        super().__init__()
        self.observer = observer

    async def handle_request(self, root, identity, meta: dict | None = None, **kwargs) -> dict:
        """``MCPEndpoint.handle_request`` (its keywords, e.g. ``session``, passed on), timed and
        recorded on the observer."""
        t0 = time.perf_counter()
        response = await super().handle_request(root, identity, meta, **kwargs)
        ms = (time.perf_counter() - t0) * 1000
        tool = (root.params or {}).get("name") if root.method == "tools/call" else None
        error = None
        if "error" in response:
            error = response["error"].get("message")
        elif response.get("result", {}).get("isError"):
            content = response["result"].get("content") or [{}]
            error = content[0].get("text", "")
        self.observer.record(root.method, tool, ms, error)
        return response


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class McpServer:
    """``/mcp`` and ``/mcp/ws`` on uvicorn in a background thread (this process's settings/DB)."""

    def __init__(self, observer: ToolObserver):
        self.endpoint = ObservedEndpoint(observer)
        self.ws = MCPWebSocketApp(endpoint=self.endpoint)
        self.port = _free_port()
        self.server = None
        self.thread = None

    async def app(self, scope, receive, send):
        path = scope.get("path", "")
        if scope["type"] == "http" and path in ("/mcp", "/mcp/"):
            await self.endpoint(scope, receive, send)
        elif scope["type"] == "websocket" and path in ("/mcp/ws", "/mcp/ws/"):
            await self.ws(scope, receive, send)
        elif scope["type"] == "http":
            await send({"type": "http.response.start", "status": 404, "headers": []})
            await send({"type": "http.response.body", "body": b""})

    def start(self) -> "McpServer":
        import uvicorn

        # loop="asyncio": the shared Redis client of a finished uvloop loop cannot be released by
        # marketdata.cache (uvloop's sockets refuse shutdown()); ours is closed on the way out anyway.
        config = uvicorn.Config(self.app, host="127.0.0.1", port=self.port, lifespan="off", log_level="warning", interface="asgi3",
                                ws="websockets-sansio", access_log=False, loop="asyncio")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=asyncio.run, args=(self._serve(),), name="eval-mcp", daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise EvaluationError("the MCP server did not start")
            time.sleep(0.02)
        return self

    async def _serve(self) -> None:
        try:
            await self.server.serve()
        finally:
            await async_redis_shared_close()

    def stop(self) -> None:
        if self.server is not None:
            self.server.should_exit = True
            self.thread.join(10)

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/mcp"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/mcp/ws"


class Market:
    """The run's view of the replay exchange: refreshes the quote cache and matches resting
    orders at each step (see module docstring)."""

    def __init__(self, replay, symbol: str):
        self.replay = replay
        self.symbol = symbol
        self.client = make_client()
        self.last_ms: int | None = None
        self.last_price: Decimal | None = None

    def refresh(self, account) -> None:
        """Quote cache at the current replay time, then resting orders matched on the trades
        printed since the previous refresh (oldest first) and on the quote."""
        from replay.tape import from_e8  # replay (aiohttp) loads in the evaluation run only, not in the web process serving reports

        now = self.replay.clock.now_ms()
        sym = self.symbol
        book = book_from_event(self.client.get_orderbook_ticker(symbol=sym), int(time.time() * 1000))
        k = self.client.get_klines(symbol=sym, interval="1m", limit=1)[-1]
        kline = {"t": k[0], "o": k[1], "h": k[2], "l": k[3], "c": k[4], "v": k[5], "T": k[6], "q": k[7], "n": k[8],
                 "x": False, "s": sym, "i": "1m"}
        r = cache.get_redis()
        r.set(cache.book_key(sym), cache.dumps(book))
        r.set(cache.kline_key(sym, "1m"), cache.dumps(kline))
        depth_forget(sym)
        self.last_price = Decimal(k[4])
        if self.last_ms is not None and Order.objects.filter(account=account, symbol=sym, status__in=OPEN).exists():
            start = self.last_ms + 1
            while start <= now:
                trades = self.replay.model.trades_between(sym, now, start, now, limit=500)
                for t in trades:
                    paper_match(sym, trade={"t": t.id, "p": format(from_e8(t.price_e8), "f"), "q": format(from_e8(t.qty_e8), "f")})
                if len(trades) < 500:
                    break
                start = trades[-1].time + 1
            paper_match(sym, book={"bidPrice": book["bidPrice"], "bidQty": book["bidQty"], "askPrice": book["askPrice"],
                                   "askQty": book["askQty"]})
        self.last_ms = now


def account_equity(account, symbol: str, price: Decimal) -> Decimal:
    """Quote-asset value of ``account``: every balance (free + locked), the base asset of
    ``symbol`` at ``price``; other assets are ignored (the agent trades one symbol)."""
    base, quote = symbol_assets(symbol)
    total = Decimal("0")
    for b in Balance.objects.filter(account=account):
        amount = b.free + b.locked
        if b.asset == quote:
            total += amount
        elif b.asset == base:
            total += amount * price
    return total


def evaluate(config: EvalConfig, *, out_dir: Path | None = None, stdout=None) -> dict:
    """Run one evaluation (module docstring) and write ``report.json``, ``equity.png`` and
    ``report.html`` under ``out_dir`` (default ``reports_dir()/<run_id>``). Returns the report.

    Raises ``EvaluationError`` for a slice outside the tape, an unknown symbol or an agent that
    cannot start.
    """
    from django.contrib.auth import get_user_model

    from replay.server import ReplayServer  # loaded by an evaluation run only (see refresh)
    from replay.tape import load_tape

    run_id = config.run_id or time.strftime("%Y%m%d-%H%M%S") + "-" + uuid.uuid4().hex[:6]
    config.run_id = run_id
    out_dir = Path(out_dir or reports_dir() / run_id)
    out_dir.mkdir(parents=True, exist_ok=True)
    symbol = config.symbol.upper()
    try:
        tape = load_tape(symbol)
    except Exception as exc:
        raise EvaluationError(f"No recorded tape for {symbol}: {exc}") from None
    steps = config.minutes * MINUTE_MS // config.step_ms
    if config.start_minute < 1 or config.start_minute + config.minutes > tape.length or steps < 1:
        raise EvaluationError(f"Slice outside the {symbol} tape: start_minute 1..{tape.length - config.minutes}, "
                              f"minutes >= {config.step_ms // MINUTE_MS or 1}; the tape has {tape.length} minutes.")
    start_ms = tape.first_open_ms + config.start_minute * MINUTE_MS  # offset 0: replay time = recorded time

    replay = ReplayServer(port=0, speed=config.speed if config.mode == "free" and config.speed > 0 else 1.0,
                          start_wall_ms=start_ms, history_minutes=config.start_minute, paused=True,
                          symbols=[symbol]).start()
    saved = (settings.BINANCE_API_URL, settings.BINANCE_STREAM_URL)
    settings.BINANCE_API_URL, settings.BINANCE_STREAM_URL = replay.api_url, replay.stream_url
    observer = ToolObserver()
    server = None
    agent = None
    agent_log = open(out_dir / "agent.log", "w")
    try:
        symbol_cache_clear()
        paper_venue._last_trade_id.pop(symbol, None)  # trade ids restart with the fresh replay
        exchange_info_sync()
        user, _ = get_user_model().objects.get_or_create(username=config.username)
        account = account_create(owner=user, name=f"eval-{run_id}", max_order_notional=config.max_order_notional)
        token, key = agent_token_create(user=user, name=f"eval-{run_id}")
        token.accounts.add(account)
        market = Market(replay, symbol)
        market.refresh(account)
        initial = account_equity(account, symbol, market.last_price)
        server = McpServer(observer).start()
        url = server.ws_url if config.transport == "ws" else server.http_url
        env = {**os.environ, "TRADINGMCP_URL": url, "TRADINGMCP_TOKEN": key, "TRADINGMCP_SYMBOL": symbol,
               "TRADINGMCP_ACCOUNT_ID": str(account.pk), "TRADINGMCP_LOCKSTEP": "1" if config.mode == "lockstep" else "0",
               "PYTHONUNBUFFERED": "1"}
        try:
            agent = subprocess.Popen(config.agent, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=agent_log,
                                     env=env, cwd=ROOT, text=True)
        except OSError as exc:
            raise EvaluationError(f"cannot start the agent {config.agent!r}: {exc}") from None
        curve, stopped = _drive(config, replay, market, account, agent, steps, stdout)
        _finish_agent(agent)
        report = build_report(config=config, account=account, curve=curve, observer=observer, start_ms=start_ms, initial=initial,
                              steps=steps, stopped=stopped, agent_rc=agent.returncode)
    finally:
        if agent is not None and agent.poll() is None:
            agent.kill()
        agent_log.close()
        if server is not None:
            server.stop()
        settings.BINANCE_API_URL, settings.BINANCE_STREAM_URL = saved
        replay.stop()
        symbol_cache_clear()
    write_outputs(report, out_dir)
    return report


def _send(agent, message: dict) -> bool:
    try:
        agent.stdin.write(json.dumps(message) + "\n")
        agent.stdin.flush()
        return True
    except (BrokenPipeError, OSError):
        return False


def _drive(config: EvalConfig, replay, market: Market, account, agent, steps: int, stdout) -> tuple[list[dict], str]:
    """The step loop; returns the equity curve (one point per step, after the agent acted) and
    why it stopped (``completed``, ``agent exited``, ``agent timed out``)."""
    import select

    curve = []
    wall0 = time.monotonic()
    for n in range(steps):
        if n:
            if config.mode == "free":
                target = wall0 + n * config.step_ms / 1000 / max(config.speed, 1e-9)
                time.sleep(max(0.0, target - time.monotonic()))
            else:
                replay.clock.advance(config.step_ms)
                market.refresh(account)
                if config.speed > 0:
                    target = wall0 + n * config.step_ms / 1000 / config.speed
                    time.sleep(max(0.0, target - time.monotonic()))
        if config.mode == "free":
            if n == 0:
                replay.clock.resume()
            market.refresh(account)
        now = replay.clock.now_ms()
        if config.mode == "lockstep":
            if not _send(agent, {"step": n, "time": now}):
                return curve, "agent exited"
            deadline = time.monotonic() + config.step_timeout_s
            while True:
                ready, _, _ = select.select([agent.stdout], [], [], max(0.0, deadline - time.monotonic()))
                if not ready:
                    return curve, "agent timed out"
                line = agent.stdout.readline()
                if not line:
                    return curve, "agent exited"
                try:
                    if json.loads(line).get("done") == n:
                        break
                except (ValueError, AttributeError):
                    continue  # not a protocol line
        elif agent.poll() is not None:
            return curve, "agent exited"
        price = market.last_price
        curve.append({"step": n, "time": now, "price": str(price), "equity": str(account_equity(account, config.symbol.upper(), price))})
        if stdout is not None and (n % 20 == 0 or n == steps - 1):
            stdout.write(f"step {n + 1}/{steps}  price {price}  equity {curve[-1]['equity']}\n")
    return curve, "completed"


def _finish_agent(agent) -> None:
    _send(agent, {"end": True})
    try:
        agent.stdin.close()
    except OSError:
        pass
    for stop in (None, agent.terminate, agent.kill):  # a lockstep agent exits on "end"; others are stopped
        if stop is not None:
            stop()
        try:
            agent.wait(10)
            return
        except subprocess.TimeoutExpired:
            continue


def _pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    values = sorted(values)
    return round(values[min(len(values) - 1, int(q * len(values)))], 3)


def fill_fee_quote(fill) -> Decimal:
    """A fill's commission in the quote asset: as charged when charged in the quote asset, else
    commission × fill price (a BUY is charged in the base asset it receives)."""
    _, quote = symbol_assets(fill.symbol)
    return fill.commission if fill.commission_asset == quote else fill.commission * fill.price


def max_drawdown(equities: list[Decimal]) -> tuple[Decimal, Decimal]:
    """Largest peak-to-trough fall of an equity series: (amount in quote asset, fraction of the peak)."""
    peak, worst, worst_pct = None, Decimal("0"), Decimal("0")
    for e in equities:
        peak = e if peak is None or e > peak else peak
        if peak - e > worst:
            worst = peak - e
            worst_pct = worst / peak if peak else Decimal("0")
    return worst, worst_pct


def build_report(*, config: EvalConfig, account, curve: list[dict], observer: ToolObserver, start_ms: int, steps: int,
                 stopped: str, agent_rc, initial: Decimal) -> dict:
    """The report (all money as strings in the quote asset, rounded to 8 decimals): ``pnl`` =
    final − initial equity (``account_equity``: balances, the base asset at the last trade price
    of the last step), ``maxDrawdown`` over the per-step equity curve, ``fees`` (``fill_fee_quote``
    summed over the account's fills), ``trades`` (fills), rejections (REJECTED orders and order
    tool errors), tool calls with server-side latency percentiles."""
    e8 = Decimal("0.00000001")

    def d8(x: Decimal) -> str:
        return format(x.quantize(e8), "f")
    base, quote = symbol_assets(config.symbol.upper())
    fills = list(Fill.objects.filter(account=account).order_by("time", "id"))
    orders = list(Order.objects.filter(account=account).order_by("id"))
    final = Decimal(curve[-1]["equity"]) if curve else initial
    dd, dd_pct = max_drawdown([initial] + [Decimal(p["equity"]) for p in curve])
    fees = sum((fill_fee_quote(f) for f in fills), Decimal("0"))
    by_tool: dict[str, list] = {}
    for c in observer.calls:
        by_tool.setdefault(c["tool"] or c["method"], []).append(c)
    tools = {
        name: {"calls": len(rows), "errors": sum(1 for r in rows if r["error"]), "p50Ms": _pct([r["ms"] for r in rows], 0.5),
               "p95Ms": _pct([r["ms"] for r in rows], 0.95), "maxMs": round(max(r["ms"] for r in rows), 3),
               "meanMs": round(statistics.fmean(r["ms"] for r in rows), 3)}
        for name, rows in sorted(by_tool.items())
    }
    all_ms = [c["ms"] for c in observer.calls]
    order_errors = [c["error"] for c in observer.calls if c["error"] and c["tool"] in ("place_order", "close_position", "cancel_order")]
    return {
        "runId": config.run_id,
        "config": {**asdict(config), "agent": " ".join(config.agent),
                   "max_order_notional": None if config.max_order_notional is None else str(config.max_order_notional)},
        "user": config.username,
        "accountId": account.pk,
        "symbol": config.symbol.upper(), "baseAsset": base, "quoteAsset": quote,
        "slice": {"startMinute": config.start_minute, "minutes": config.minutes, "startTime": start_ms,
                  "endTime": start_ms + steps * config.step_ms, "steps": steps, "stepsRun": len(curve)},
        "stopped": stopped, "agentExitCode": agent_rc,
        "initialEquity": d8(initial), "finalEquity": d8(final),
        "pnl": d8(final - initial),
        "pnlPct": format(((final - initial) / initial * 100).quantize(Decimal("0.0001")), "f") if initial else None,
        "maxDrawdown": d8(dd), "maxDrawdownPct": format((dd_pct * 100).quantize(Decimal("0.0001")), "f"),
        "finalPrice": curve[-1]["price"] if curve else None,
        "trades": len(fills),
        "orders": {"total": len(orders), "filled": sum(1 for o in orders if o.status == OrderStatus.FILLED),
                   "buys": sum(1 for o in orders if o.side == "BUY" and o.executed_qty > 0),
                   "sells": sum(1 for o in orders if o.side == "SELL" and o.executed_qty > 0)},
        "fees": d8(fees),
        "rejections": {"orders": sum(1 for o in orders if o.status == OrderStatus.REJECTED),
                       "toolErrors": len(order_errors), "messages": order_errors[:20]},
        "toolCalls": {"total": len(observer.calls), "errors": sum(1 for c in observer.calls if c["error"]),
                      "p50Ms": _pct(all_ms, 0.5), "p95Ms": _pct(all_ms, 0.95), "byTool": tools},
        "fills": [{"orderId": f.order_id, "side": f.side, "price": str(f.price), "qty": str(f.qty), "quoteQty": str(f.quote_qty),
                   "commission": str(f.commission), "commissionAsset": f.commission_asset, "isMaker": f.is_maker} for f in fills],
        "curve": curve,
    }


def write_outputs(report: dict, out_dir: Path) -> None:
    """``report.json``, ``equity.png`` (matplotlib, Agg) and a standalone ``report.html``."""
    from django.template.loader import render_to_string

    (out_dir / "report.json").write_text(json.dumps(report, indent=2))
    equity_png(report, out_dir / "equity.png")
    (out_dir / "report.html").write_text(render_to_string("evaluation/report.html", report_context(report, "equity.png")))


def report_context(report: dict, png_url: str, base_template: str = "evaluation/standalone.html") -> dict:
    """Template context of ``evaluation/report.html`` (standalone file or dashboard page)."""
    return {"report": report, "png_url": png_url, "base_template": base_template,
            "tool_rows": sorted(report["toolCalls"]["byTool"].items())}


def equity_png(report: dict, path: Path) -> None:
    """Equity (quote asset) against replay minutes, the price on a second axis, buys and sells marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curve = report["curve"]
    fig, ax = plt.subplots(figsize=(9, 4), dpi=100)
    if curve:
        t0 = report["slice"]["startTime"]
        xs = [(p["time"] - t0) / MINUTE_MS for p in curve]
        ax.plot(xs, [float(p["equity"]) for p in curve], color="#1f6feb", label=f"equity ({report['quoteAsset']})")
        ax2 = ax.twinx()
        ax2.plot(xs, [float(p["price"]) for p in curve], color="#999999", linewidth=0.8, label="price")
        ax2.set_ylabel(f"{report['symbol']} price")
    ax.set_xlabel("replay minutes from the slice start")
    ax.set_ylabel(f"equity ({report['quoteAsset']})")
    ax.set_title(f"{report['symbol']} · P&L {report['pnl']} {report['quoteAsset']} · max drawdown {report['maxDrawdown']}")
    ax.ticklabel_format(axis="y", useOffset=False, style="plain")
    ax.grid(alpha=0.3)
    if curve:
        ax.legend(loc="upper left")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
