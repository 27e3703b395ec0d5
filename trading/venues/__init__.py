"""Venues execute orders behind one interface (``VenueBase.submit`` / ``cancel`` / ``sync``):
``paper`` (our fill engine on the live or replayed market) and ``binance`` (testnet, live and the
replay exchange's signed endpoints through python-binance; they differ only by URL and keys)."""
from __future__ import annotations

from trading.models import Venue
from trading.venues.base import Execution, MarketView, OrderRequest, VenueBase
from trading.venues.binance import BinanceVenue
from trading.venues.paper import PaperVenue


def venue_for(account) -> VenueBase:
    """The venue object that executes ``account``'s orders."""
    if account.venue == Venue.PAPER:
        return PaperVenue()
    return BinanceVenue()


__all__ = ["Execution", "MarketView", "OrderRequest", "VenueBase", "venue_for"]
