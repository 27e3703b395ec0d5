"""Replay exchange: a local server speaking Binance's spot REST and WebSocket market-data APIs,
replaying recorded real Binance 1m klines (``replay/data/binance/``) shifted onto "now".

Modules: ``tape`` (recorded klines), ``refdata`` (recorded exchangeInfo and depth snapshots),
``clock`` (replay time), ``model`` (every derived value as a pure function of symbol and replay
time), ``wire`` (Binance JSON shapes), ``streams`` (WebSocket stream events), ``errors``
(Binance error payloads), ``params`` (parameter validation and JSON answers shared by
``server`` and ``account``), ``account`` (signed endpoints), ``server`` (aiohttp app, :class:`~replay.server.ReplayServer`).
Run it with ``python -m replay``; see ``replay/README.md``.

The server module (aiohttp) is imported lazily so that ``replay.model`` can be used
without it.
"""
from .clock import ReplayClock
from .model import ReplayModel

__all__ = ["ReplayClock", "ReplayModel", "ReplayServer"]


def __getattr__(name):
    if name == "ReplayServer":
        from .server import ReplayServer

        return ReplayServer
    raise AttributeError(name)
