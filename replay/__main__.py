"""CLI: ``python -m replay [--host H] [--port P] [--speed S] [--history-minutes N]
[--start-ms MS] [--paused] [--weight-limit W] [--full-exchange-info] [--account KEY:SECRET ...]
[--balances USDT=10000,BTC=0.5]``.

The signed endpoints always accept the demo key pair (``account.DEMO_API_KEY`` /
``DEMO_API_SECRET``, Binance's documentation example); ``--account`` adds more keys.

Starts the replay exchange in the foreground, prints its base URL (and the python-binance
``API_URL``/``STREAM_URL`` to use), and stops cleanly on Ctrl-C or SIGTERM.
"""
from __future__ import annotations

import argparse
import asyncio
import signal
import sys

from .server import ReplayServer


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options (see the module docstring)."""
    ap = argparse.ArgumentParser(prog="python -m replay", description="Binance spot replay exchange")
    ap.add_argument("--host", default="127.0.0.1", help="interface to bind (default 127.0.0.1)")
    ap.add_argument("--port", type=int, default=9900, help="TCP port (default 9900; 0 = any free port)")
    ap.add_argument("--speed", type=float, default=1.0, help="replay ms per wall ms (default 1)")
    ap.add_argument("--history-minutes", type=int, default=600, help="closed minutes before the start (default 600)")
    ap.add_argument("--start-ms", type=int, default=None, help="replay start, ms since epoch UTC (default: now)")
    ap.add_argument("--paused", action="store_true", help="start with the replay clock frozen")
    ap.add_argument("--weight-limit", type=int, default=6000, help="request weight per IP per minute (default 6000)")
    ap.add_argument("--full-exchange-info", action="store_true", help="serve all recorded symbols in exchangeInfo")
    ap.add_argument("--account", action="append", default=[], metavar="KEY:SECRET",
                    help="an API key and its secret for the signed endpoints (repeatable; the demo pair always exists)")
    ap.add_argument("--balances", default=None, metavar="ASSET=AMOUNT,...",
                    help="starting balances of every key (default USDT=10000)")
    return ap.parse_args(argv)


def parse_accounts(items: list[str]) -> dict[str, str]:
    """``["KEY:SECRET", ...]`` -> ``{key: secret}``."""
    out = {}
    for item in items:
        key, sep, secret = item.partition(":")
        if not sep or not key or not secret:
            raise SystemExit(f"--account must be KEY:SECRET, got {item!r}")
        out[key] = secret
    return out


def parse_balances(text: str | None) -> dict | None:
    """``"USDT=10000,BTC=0.5"`` -> ``{"USDT": "10000", "BTC": "0.5"}`` (None when not given)."""
    if not text:
        return None
    return {a.strip(): v.strip() for a, _, v in (part.partition("=") for part in text.split(",") if part)}


async def _main(args: argparse.Namespace) -> None:
    srv = ReplayServer(
        args.host,
        args.port,
        speed=args.speed,
        start_wall_ms=args.start_ms,
        paused=args.paused,
        history_minutes=args.history_minutes,
        weight_limit=args.weight_limit,
        full_exchange_info=args.full_exchange_info,
        accounts=parse_accounts(args.account),
        starting_balances=parse_balances(args.balances),
    )
    await srv.start_async()
    print(srv.base_url, flush=True)
    print(
        f"replay exchange: symbols {', '.join(srv.model.symbols)}; speed {srv.clock.speed}x"
        f"{' (paused)' if srv.clock.paused else ''}; API_URL={srv.api_url} STREAM_URL={srv.stream_url}",
        file=sys.stderr,
        flush=True,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError):  # pragma: no cover - non-Unix
            pass
    try:
        await stop.wait()
    finally:
        await srv.stop_async()
        print("replay exchange stopped", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the process exit status."""
    args = parse_args(argv)
    try:
        asyncio.run(_main(args))
    except KeyboardInterrupt:  # pragma: no cover - signal handler normally catches it
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
