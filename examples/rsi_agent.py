#!/usr/bin/env python
"""Reference agent: RSI mean reversion with a stop, on a TradingMCP paper account, over MCP.

Strategy (long only, one position at a time, on ``--symbol``, ``--interval`` candles):

- **Entry**: flat and RSI(``--rsi-period``, default 14) of the latest closed candle below
  ``--oversold`` (30): MARKET BUY for ``--budget`` quote asset (``quote_order_qty``, default 1000 USDT).
- **Exit**: in a position and RSI above ``--overbought`` (70) → ``close_position`` (take profit:
  the price reverted); or the bid at or below entry × (1 − ``--stop-pct``/100) (default 1 %) →
  ``close_position`` (stop loss). The stop is the agent's own, checked at every step against the
  live bid, so it behaves the same on every venue.
- **Respecting the server**: every tool error is read, logged (stderr) and never blindly retried.
  A risk rejection (``rejected by risk check``) or an insufficient balance pauses new entries for
  ``--cooldown`` steps; a halted account (``HALTED``) or a missing ``trade`` scope stops trading
  for good (reads continue); stale or missing market data (``-1003``) skips the step. Every order
  carries a ``client_order_id`` derived from the step number, so a retried step never doubles an
  order (the server returns the first one).

Transports: ``--url http://host:8000/mcp`` (streamable HTTP, the SDK's ``streamable_http_client``)
or ``ws://host:8000/mcp/ws`` (``tradingmcp_client.websocket_client``). ``--token`` or
``TRADINGMCP_TOKEN``.

Pacing:

- default: one decision every ``--every`` seconds (live or replayed market at its own speed);
- ``--lockstep`` (what ``manage.py evaluate_agent`` uses): read one JSON line per step from stdin
  (``{"step": n, "time": ms}``), decide, then print ``{"done": n}`` on stdout; stop on
  ``{"end": true}`` or end of input. The evaluator moves the replay clock only between steps, so
  the agent's decisions and fills depend on the data only, never on timing.

Run: ``.venv/bin/python examples/rsi_agent.py --url http://127.0.0.1:8000/mcp --token tmcp_...``
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from contextlib import asynccontextmanager
from decimal import Decimal
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # for tradingmcp_client


def log(*parts) -> None:
    print(*parts, file=sys.stderr, flush=True)


class ToolFailed(Exception):
    """A tool answered with ``isError``; ``text`` is the server's message."""

    def __init__(self, name: str, text: str):
        super().__init__(f"{name}: {text}")
        self.name, self.text = name, text


@asynccontextmanager
async def connect(url: str, token: str):
    """An initialized ``mcp.ClientSession`` over streamable HTTP or WebSocket."""
    from mcp import ClientSession

    if url.startswith(("ws://", "wss://")):
        from tradingmcp_client import websocket_client

        async with websocket_client(url, token=token) as (read, write, _):
            async with ClientSession(read, write) as session:
                await session.initialize()
                yield session
    else:
        import httpx
        from mcp.client.streamable_http import streamable_http_client

        http = httpx.AsyncClient(headers={"Authorization": f"Bearer {token}"}, timeout=60)
        async with http, streamable_http_client(url, http_client=http) as (read, write, _):
            async with ClientSession(read, write) as session:
                await session.initialize()
                yield session


class RsiAgent:
    """The strategy in the module docstring; ``step(n)`` makes one decision."""

    def __init__(self, session, args):
        self.mcp = session
        self.args = args
        self.symbol = args.symbol
        self.entry_price: Decimal | None = None
        self.in_position = False
        self.cooldown = 0
        self.trading_allowed = True
        self.stats = {"steps": 0, "buys": 0, "sells": 0, "stops": 0, "errors": 0, "rejections": 0}

    async def call(self, name: str, **arguments) -> dict:
        result = await self.mcp.call_tool(name, arguments)
        text = result.content[0].text if result.content else ""
        if result.isError:
            self.stats["errors"] += 1
            raise ToolFailed(name, text)
        return json.loads(text)

    def on_refusal(self, exc: ToolFailed) -> None:
        """Decide what a refused order means for the next steps (see module docstring)."""
        text = exc.text
        log(f"[agent] {exc}")
        if "risk check" in text or "insufficient balance" in text.lower():
            self.stats["rejections"] += 1
            self.cooldown = self.args.cooldown
        if "HALTED" in text or "lacks the 'trade' scope" in text:
            self.trading_allowed = False
            log("[agent] trading stopped for this run")

    async def sync_position(self) -> None:
        """Read the account's position (the source of truth after any refusal or restart)."""
        try:
            positions = await self.call("get_positions")
        except ToolFailed as exc:
            log(f"[agent] {exc}")
            return
        rows = positions.get("positions", positions if isinstance(positions, list) else [])
        def worth(p):  # dust below the minimum notional is not a position one can sell
            price = Decimal(p.get("markPrice") or p.get("avgEntryPrice") or "0")
            return Decimal(p.get("quantity") or "0") * price >= self.args.min_notional

        mine = next((p for p in rows if p.get("symbol") == self.symbol and worth(p)), None)
        self.in_position = mine is not None
        if mine is not None and self.entry_price is None:
            self.entry_price = Decimal(mine.get("avgEntryPrice") or mine.get("avg_entry_price") or "0") or None

    async def step(self, n: int) -> None:
        self.stats["steps"] += 1
        try:
            ind = await self.call("get_indicators", symbol=self.symbol, interval=self.args.interval, indicators=["rsi"],
                                  params={"rsi": {"period": self.args.rsi_period}})
            ticker = await self.call("get_ticker", symbol=self.symbol)
        except ToolFailed as exc:
            log(f"[agent] step {n}: no market data, skipping: {exc.text}")
            return
        rsi = Decimal(str(ind["values"]["rsi"]["rsi"])) if ind["values"]["rsi"].get("rsi") is not None else None
        bid, ask = Decimal(ticker["bidPrice"]), Decimal(ticker["askPrice"])
        if rsi is None:
            return
        if self.cooldown:
            self.cooldown -= 1
        if not self.trading_allowed:
            return
        if self.in_position:
            stop = self.entry_price * (1 - Decimal(str(self.args.stop_pct)) / 100) if self.entry_price else None
            reason = "stop" if stop is not None and bid <= stop else ("take-profit" if rsi > self.args.overbought else None)
            if reason:
                try:
                    order = await self.call("close_position", symbol=self.symbol, client_order_id=f"{self.args.tag}-{n}-exit")
                    self.stats["sells"] += 1
                    self.stats["stops"] += reason == "stop"
                    log(f"[agent] step {n}: {reason} exit, RSI {rsi:.1f}, bid {bid}: {order.get('status')} {order.get('executedQty')}")
                    self.in_position, self.entry_price = False, None
                except ToolFailed as exc:
                    self.on_refusal(exc)
                    await self.sync_position()
        elif rsi < self.args.oversold and not self.cooldown:
            try:
                order = await self.call("place_order", symbol=self.symbol, side="BUY", type="MARKET",
                                        quote_order_qty=str(self.args.budget), client_order_id=f"{self.args.tag}-{n}-entry")
            except ToolFailed as exc:
                self.on_refusal(exc)
                await self.sync_position()
                return
            if Decimal(order.get("executedQty") or "0") > 0:
                self.in_position = True
                self.entry_price = Decimal(order.get("avgPrice") or ask)
                self.stats["buys"] += 1
                log(f"[agent] step {n}: entry, RSI {rsi:.1f}, {order['status']} {order['executedQty']} @ {self.entry_price}")


async def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--url", default=os.environ.get("TRADINGMCP_URL", "http://127.0.0.1:8000/mcp"))
    p.add_argument("--token", default=os.environ.get("TRADINGMCP_TOKEN"))
    p.add_argument("--symbol", default=os.environ.get("TRADINGMCP_SYMBOL", "BTCUSDT"))
    p.add_argument("--interval", default="1m")
    p.add_argument("--rsi-period", type=int, default=14)
    p.add_argument("--oversold", type=float, default=30.0)
    p.add_argument("--overbought", type=float, default=70.0)
    p.add_argument("--stop-pct", type=float, default=1.0)
    p.add_argument("--budget", default="1000", help="quote asset per entry")
    p.add_argument("--min-notional", type=Decimal, default=Decimal("10"), help="smaller holdings count as flat")
    p.add_argument("--cooldown", type=int, default=5, help="steps without entries after a refusal")
    p.add_argument("--tag", default="rsi", help="client_order_id prefix")
    p.add_argument("--every", type=float, default=60.0, help="seconds between decisions (not with --lockstep)")
    p.add_argument("--lockstep", action="store_true", default=os.environ.get("TRADINGMCP_LOCKSTEP") == "1")
    args = p.parse_args(argv)
    if not args.token:
        p.error("--token or TRADINGMCP_TOKEN is required")

    async with connect(args.url, args.token) as session:
        agent = RsiAgent(session, args)
        await agent.sync_position()
        if args.lockstep:
            loop = asyncio.get_running_loop()
            while True:
                line = await loop.run_in_executor(None, sys.stdin.readline)
                if not line:
                    break
                msg = json.loads(line)
                if msg.get("end"):
                    break
                await agent.step(int(msg["step"]))
                print(json.dumps({"done": msg["step"]}), flush=True)
        else:
            n = 0
            while True:
                await agent.step(n)
                n += 1
                await asyncio.sleep(args.every)
        log(f"[agent] done: {json.dumps(agent.stats)}")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
