"""The venue interface every execution venue implements (``submit``, ``cancel``, ``sync``)."""
from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal


@dataclass(frozen=True)
class OrderRequest:
    """A validated order, quantized to the symbol's filters (Binance "New order" parameters).

    ``symbol`` is a ``marketdata.models.Symbol``; ``quantity`` in its base asset (None for a
    MARKET order by ``quote_order_qty``, quote asset); ``price`` / ``stop_price`` in the quote
    asset; ``time_in_force`` GTC | IOC | FOK for limit types ("" otherwise).
    """

    symbol: object
    side: str
    type: str
    quantity: Decimal | None
    client_order_id: str
    channel: str
    quote_order_qty: Decimal | None = None
    price: Decimal | None = None
    stop_price: Decimal | None = None
    time_in_force: str = ""
    order_list_id: int | None = None
    # OCO legs share one lock: leg 1 locks ``lock_amount`` (the larger need of both), leg 2 zero.
    lock_amount: Decimal | None = None


@dataclass(frozen=True)
class MarketView:
    """What a venue prices an order from: the cached ``quote`` (``marketdata.selectors.Quote``),
    the order ``book`` (``trading.market.Book``, None when the order cannot execute at once) and
    the ``last_price`` (quote asset) stops are checked against."""

    quote: object
    book: object = None
    last_price: Decimal | None = None


@dataclass
class Execution:
    """What a venue did with an order: the booked ``order``; ``rejected`` with a ``reason`` (and
    Binance-style ``code``) when the venue refused it."""

    order: object
    rejected: bool = False
    reason: str = ""
    code: int = 0
    details: dict = field(default_factory=dict)
    fills: list | None = None  # the fills booked, when the venue knows them (saves a query)
    balances: list | None = None  # the balance rows after the order, when the venue knows them


class VenueBase:
    """Executes one account's orders. Every method runs inside the caller's transaction with the
    account row locked, and books every balance change with the order change that caused it."""

    def submit(self, *, account, request: OrderRequest, market: MarketView) -> Execution:
        """Book (paper) or send (exchange) ``request`` and return the resulting ``Execution``."""
        raise NotImplementedError

    def execute(self, *, account, request: OrderRequest, quote) -> Execution:
        """Walking-skeleton name of ``submit`` (a quote only)."""
        return self.submit(account=account, request=request, market=MarketView(quote=quote))

    def cancel(self, *, account, order) -> object:
        """Cancel an open ``order``; return it (status CANCELED)."""
        raise NotImplementedError

    def sync(self, *, account) -> dict:
        """Bring the account's orders, fills and balances in line with the venue (no-op on paper)."""
        return {}
