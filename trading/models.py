"""Accounts, balances, orders, fills and positions.

Money is ``Decimal`` everywhere: prices in the quote asset, quantities in the base asset, balances
in their own asset, all with 8 decimal places as Binance reports them. Order fields and statuses
use Binance's names (Binance Spot API docs, "Public API definitions" -> "Enum definitions").
"""
from __future__ import annotations

from decimal import Decimal

from django.conf import settings
from django.db import models

AMOUNT = {"max_digits": 30, "decimal_places": 8}


class Venue(models.TextChoices):
    """Where an account's orders execute."""

    PAPER = "paper", "Paper (our fill engine on live prices)"
    TESTNET = "testnet", "Binance spot testnet"
    LIVE = "live", "Binance live"


class Account(models.Model):
    """A trading account owned by one user, on one venue, valued in ``quote_asset``.

    Fee rates are fractions (0.001 = 0.1 %), as Binance's ``commissionRates`` report them.
    """

    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="trading_accounts")
    name = models.CharField(max_length=100)
    venue = models.CharField(max_length=16, choices=Venue.choices, default=Venue.PAPER)
    quote_asset = models.CharField(max_length=16, default="USDT")
    maker_fee_rate = models.DecimalField(max_digits=10, decimal_places=8, default=Decimal("0.001"))
    taker_fee_rate = models.DecimalField(max_digits=10, decimal_places=8, default=Decimal("0.001"))
    # Testnet/live venue: the API key id only (never returned by any read), used when the account has
    # no risk.ExchangeCredential (its encrypted key pair); the secret then comes from settings.BINANCE_API_SECRET.
    api_key = models.CharField(max_length=128, blank=True, default="")
    # Reconciliation cursor of a Binance venue: highest exchange trade id booked per symbol.
    last_trade_ids = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]
        constraints = [models.UniqueConstraint(fields=["owner", "name"], name="account_unique_owner_name")]

    def __str__(self) -> str:
        return f"{self.name} ({self.venue}, #{self.pk})"


class Balance(models.Model):
    """One asset's balance in an account: ``free`` can be spent, ``locked`` backs open orders."""

    account = models.ForeignKey(Account, on_delete=models.CASCADE, related_name="balances", db_index=False)  # balance_unique_account_asset leads with it
    asset = models.CharField(max_length=16)
    free = models.DecimalField(**AMOUNT, default=Decimal("0"))
    locked = models.DecimalField(**AMOUNT, default=Decimal("0"))
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["account", "asset"]
        constraints = [
            models.UniqueConstraint(fields=["account", "asset"], name="balance_unique_account_asset"),
            models.CheckConstraint(condition=models.Q(free__gte=0), name="balance_free_not_negative"),
            models.CheckConstraint(condition=models.Q(locked__gte=0), name="balance_locked_not_negative"),
        ]

    def __str__(self) -> str:
        return f"{self.asset} free={self.free} locked={self.locked}"

    @property
    def total(self) -> Decimal:
        """free + locked, in the asset."""
        return self.free + self.locked


class OrderSide(models.TextChoices):
    BUY = "BUY"
    SELL = "SELL"


class OrderType(models.TextChoices):
    """Binance spot order types (Binance Spot API docs, "Enum definitions" -> Order types)."""

    MARKET = "MARKET"
    LIMIT = "LIMIT"
    LIMIT_MAKER = "LIMIT_MAKER"
    STOP_LOSS = "STOP_LOSS"
    STOP_LOSS_LIMIT = "STOP_LOSS_LIMIT"
    TAKE_PROFIT = "TAKE_PROFIT"
    TAKE_PROFIT_LIMIT = "TAKE_PROFIT_LIMIT"


class OrderStatus(models.TextChoices):
    """Binance's order status lifecycle."""

    NEW = "NEW"
    PARTIALLY_FILLED = "PARTIALLY_FILLED"
    FILLED = "FILLED"
    CANCELED = "CANCELED"
    REJECTED = "REJECTED"
    EXPIRED = "EXPIRED"
    EXPIRED_IN_MATCH = "EXPIRED_IN_MATCH"


class Order(models.Model):
    """An order as the account sent it and as the venue executed it.

    ``client_order_id`` is unique per account: placing again with the same id returns this order
    instead of creating a second one. ``executed_qty`` is in the base asset,
    ``cummulative_quote_qty`` (Binance's spelling) in the quote asset.
    """

    account = models.ForeignKey(Account, on_delete=models.PROTECT, related_name="orders", db_index=False)  # order_unique_account_client_order_id leads with it
    client_order_id = models.CharField(max_length=64)
    symbol = models.CharField(max_length=32)
    side = models.CharField(max_length=4, choices=OrderSide.choices)
    type = models.CharField(max_length=24, choices=OrderType.choices, default=OrderType.MARKET)
    time_in_force = models.CharField(max_length=4, blank=True, default="")
    quantity = models.DecimalField(**AMOUNT)
    quote_order_qty = models.DecimalField(**AMOUNT, null=True, blank=True)
    price = models.DecimalField(**AMOUNT, null=True, blank=True)
    stop_price = models.DecimalField(**AMOUNT, null=True, blank=True)
    status = models.CharField(max_length=24, choices=OrderStatus.choices, default=OrderStatus.NEW)
    executed_qty = models.DecimalField(**AMOUNT, default=Decimal("0"))
    cummulative_quote_qty = models.DecimalField(**AMOUNT, default=Decimal("0"))
    # Paper engine state: a stop order is not working until its stopPrice triggers (Binance
    # ``isWorking``); ``locked_amount`` of ``locked_asset`` still backs the open remainder.
    is_working = models.BooleanField(default=True)
    locked_amount = models.DecimalField(**AMOUNT, default=Decimal("0"))
    locked_asset = models.CharField(max_length=16, blank=True, default="")
    order_list_id = models.BigIntegerField(null=True, blank=True)
    working_time = models.DateTimeField(null=True, blank=True)
    reject_reason = models.TextField(blank=True, default="")
    exchange_order_id = models.BigIntegerField(null=True, blank=True)
    channel = models.CharField(max_length=16, default="mcp")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    OPEN_STATUSES = ("NEW", "PARTIALLY_FILLED")

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.UniqueConstraint(fields=["account", "client_order_id"], name="order_unique_account_client_order_id"),
            # Binance's orderId is unique per symbol: one venue order is booked once per account,
            # whatever the user stream, reconciliation and the placing call race to record it.
            models.UniqueConstraint(fields=["account", "symbol", "exchange_order_id"], name="order_unique_exchange_order",
                                    condition=models.Q(exchange_order_id__isnull=False)),
        ]
        indexes = [
            models.Index(fields=["account", "status"], name="order_account_status"),
            models.Index(fields=["symbol", "status"], name="order_symbol_status"),
        ]

    def __str__(self) -> str:
        return f"{self.side} {self.quantity} {self.symbol} {self.type} [{self.status}]"

    @property
    def is_open(self) -> bool:
        """NEW or PARTIALLY_FILLED (can still fill or be canceled)."""
        return self.status in self.OPEN_STATUSES

    @property
    def remaining_qty(self) -> Decimal:
        """origQty − executedQty, in the base asset."""
        return self.quantity - self.executed_qty

    @property
    def avg_price(self) -> Decimal | None:
        """Average fill price in the quote asset, or None before any fill."""
        if not self.executed_qty:
            return None
        return self.cummulative_quote_qty / self.executed_qty


class Fill(models.Model):
    """One execution of an order (a Binance "trade" of ``GET /api/v3/myTrades``).

    ``commission`` is in ``commission_asset``: on a BUY the base asset received, on a SELL the quote
    asset received (Binance charges the asset you receive unless fees are paid in BNB).
    ``realized_pnl`` is in the quote asset, by the average-cost method, before fees.
    """

    order = models.ForeignKey(Order, on_delete=models.PROTECT, related_name="fills")
    account = models.ForeignKey(Account, on_delete=models.PROTECT, related_name="fills", db_index=False)  # fill_account_time leads with it
    symbol = models.CharField(max_length=32)
    side = models.CharField(max_length=4, choices=OrderSide.choices)
    price = models.DecimalField(**AMOUNT)
    qty = models.DecimalField(**AMOUNT)
    quote_qty = models.DecimalField(**AMOUNT)
    commission = models.DecimalField(**AMOUNT)
    commission_asset = models.CharField(max_length=16)
    commission_quote = models.DecimalField(**AMOUNT, default=Decimal("0"))
    is_maker = models.BooleanField(default=False)
    realized_pnl = models.DecimalField(**AMOUNT, default=Decimal("0"))
    time = models.DateTimeField(db_index=True)
    # The venue's trade id (Binance ``myTrades`` ``id``) on testnet/live: booking it twice is refused.
    exchange_trade_id = models.BigIntegerField(null=True, blank=True)

    class Meta:
        ordering = ["-time", "-id"]
        indexes = [models.Index(fields=["account", "time"], name="fill_account_time")]
        constraints = [
            models.UniqueConstraint(fields=["account", "symbol", "exchange_trade_id"], name="fill_unique_exchange_trade",
                                    condition=models.Q(exchange_trade_id__isnull=False)),
        ]

    def __str__(self) -> str:
        return f"{self.side} {self.qty} {self.symbol} @ {self.price}"


class Position(models.Model):
    """Net holding of one symbol's base asset in an account, with its average entry price.

    ``quantity`` in the base asset, ``avg_entry_price`` and ``realized_pnl`` in the quote asset.
    """

    account = models.ForeignKey(Account, on_delete=models.CASCADE, related_name="positions", db_index=False)  # position_unique_account_symbol leads with it
    symbol = models.CharField(max_length=32)
    quantity = models.DecimalField(**AMOUNT, default=Decimal("0"))
    avg_entry_price = models.DecimalField(**AMOUNT, default=Decimal("0"))
    realized_pnl = models.DecimalField(**AMOUNT, default=Decimal("0"))
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["account", "symbol"]
        constraints = [models.UniqueConstraint(fields=["account", "symbol"], name="position_unique_account_symbol")]

    def __str__(self) -> str:
        return f"{self.symbol} {self.quantity} @ {self.avg_entry_price}"


class OrderList(models.Model):
    """An OCO order list (Binance ``POST /api/v3/order/oco``): two orders, one cancels the other.

    ``list_status_type``: RESPONSE | EXEC_STARTED | ALL_DONE; ``list_order_status``: EXECUTING |
    ALL_DONE | REJECT (Binance "Enum definitions" -> Order list status).
    """

    account = models.ForeignKey(Account, on_delete=models.PROTECT, related_name="order_lists")
    list_client_order_id = models.CharField(max_length=64)
    symbol = models.CharField(max_length=32)
    contingency_type = models.CharField(max_length=8, default="OCO")
    list_status_type = models.CharField(max_length=16, default="EXEC_STARTED")
    list_order_status = models.CharField(max_length=16, default="EXECUTING")
    exchange_order_list_id = models.BigIntegerField(null=True, blank=True)  # testnet/live: the exchange's orderListId
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-id"]
        constraints = [
            models.UniqueConstraint(fields=["account", "list_client_order_id"], name="orderlist_unique_client_id"),
        ]


class PortfolioSnapshot(models.Model):
    """The value of an account at one moment, in its ``quote_asset`` (taken each minute).

    ``value`` = Σ balances (free + locked) × last price in the quote asset; ``balances``:
    ``{asset: "total"}``; ``unrealized_pnl`` / ``realized_pnl``: totals over positions (quote asset).
    """

    account = models.ForeignKey(Account, on_delete=models.CASCADE, related_name="snapshots")
    time = models.DateTimeField(db_index=True)
    value = models.DecimalField(**AMOUNT)
    realized_pnl = models.DecimalField(**AMOUNT, default=Decimal("0"))
    unrealized_pnl = models.DecimalField(**AMOUNT, default=Decimal("0"))
    balances = models.JSONField(default=dict)

    class Meta:
        ordering = ["-time"]
        indexes = [models.Index(fields=["account", "time"], name="snapshot_account_time")]


class DailyPnl(models.Model):
    """Daily P&L rollup of an account (UTC days, quote asset): value at the day's first and last
    snapshot, realized P&L and fees of the day's fills, ``pnl`` = end − start value."""

    account = models.ForeignKey(Account, on_delete=models.CASCADE, related_name="daily_pnl")
    day = models.DateField()
    start_value = models.DecimalField(**AMOUNT)
    end_value = models.DecimalField(**AMOUNT)
    pnl = models.DecimalField(**AMOUNT)
    realized_pnl = models.DecimalField(**AMOUNT, default=Decimal("0"))
    fees = models.DecimalField(**AMOUNT, default=Decimal("0"))
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-day"]
        constraints = [models.UniqueConstraint(fields=["account", "day"], name="dailypnl_unique_account_day")]
