"""Order books for the paper fill engine: the venue's depth through python-binance, cached.

``depth_get`` returns the venue's ``GET /api/v3/depth`` (Binance Spot API docs, "Order book") as
a ``Book``; it is kept in process memory and reused while it is younger than
``settings.PAPER_DEPTH_MAX_AGE_S`` (wall seconds) **and** at least as new as the caller's quote
(``min_update_id``: Binance's bookTicker ``u`` and the depth ``lastUpdateId`` share one sequence,
as they do on the replay exchange), so a market order never walks a book older than the quote it
was priced from. Network I/O happens here, outside any database transaction.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from decimal import Decimal

from django.conf import settings

from core.errors import MarketDataUnavailable
from marketdata.binance import make_client


@dataclass(frozen=True)
class Book:
    """One order book: ``bids`` best (highest) first, ``asks`` best (lowest) first, each a tuple
    of ``(price quote asset, qty base asset)``; ``last_update_id``; ``fetched_at`` (monotonic s)."""

    symbol: str
    bids: tuple
    asks: tuple
    last_update_id: int
    fetched_at: float

    @property
    def best_bid(self) -> Decimal | None:
        return self.bids[0][0] if self.bids else None

    @property
    def best_ask(self) -> Decimal | None:
        return self.asks[0][0] if self.asks else None


_books: dict[str, Book] = {}
_lock = threading.Lock()
_local = threading.local()


def _client():
    client = getattr(_local, "client", None)
    if client is None or client.API_URL != settings.BINANCE_API_URL:
        client = make_client()
        _local.client = client
    return client


def book_from_depth(symbol: str, raw: dict) -> Book:
    """A ``Book`` from a REST depth answer (``{"lastUpdateId", "bids": [[p, q]], "asks": ...}``)."""
    return Book(
        symbol=symbol,
        bids=tuple((Decimal(p), Decimal(q)) for p, q in raw["bids"]),
        asks=tuple((Decimal(p), Decimal(q)) for p, q in raw["asks"]),
        last_update_id=int(raw["lastUpdateId"]),
        fetched_at=time.monotonic(),
    )


def depth_get(symbol: str, *, min_update_id: int = 0, limit: int | None = None) -> Book:
    """The order book of ``symbol`` (cached, see module docstring).

    Raises ``MarketDataUnavailable`` (-1003) when the venue cannot be reached.
    """
    max_age = settings.PAPER_DEPTH_MAX_AGE_S
    book = _books.get(symbol)
    if book is not None and time.monotonic() - book.fetched_at <= max_age and book.last_update_id >= min_update_id:
        return book
    try:
        raw = _client().get_order_book(symbol=symbol, limit=limit or settings.PAPER_DEPTH_LIMIT)
    except Exception as exc:  # python-binance raises requests/BinanceAPIException subclasses
        raise MarketDataUnavailable(f"Cannot read the {symbol} order book from the venue: {type(exc).__name__}: {exc}") from None
    book = book_from_depth(symbol, raw)
    with _lock:
        _books[symbol] = book
    return book


def depth_forget(symbol: str | None = None) -> None:
    """Drop cached books (all when ``symbol`` is None)."""
    with _lock:
        if symbol is None:
            _books.clear()
        else:
            _books.pop(symbol, None)
