"""Risk limits, agent tokens and the append-only audit log."""
from __future__ import annotations

import hashlib

from django.core.serializers.json import DjangoJSONEncoder

from django.conf import settings
from django.db import models
from django.utils import timezone

from risk import secrets as fernet

AMOUNT = {"max_digits": 30, "decimal_places": 8}


class TradingState(models.TextChoices):
    """Whether an account may trade: ACTIVE (yes), REDUCING (only orders that shrink a position),
    HALTED (no new orders: kill switch, or the daily-loss breaker until ``halted_until``)."""

    ACTIVE = "ACTIVE"
    REDUCING = "REDUCING"
    HALTED = "HALTED"


class RiskLimit(models.Model):
    """Per-account limits checked before every order. Every limit is optional: null = unlimited
    (so "let the agent trade freely" stays possible). Amounts are in the account's quote asset.

    - ``max_order_notional``: largest single order (quantity × price).
    - ``max_position_notional``: largest position in one symbol after the order, valued at the
      order's price.
    - ``max_total_exposure``: largest sum of all positions' values after the order.
    - ``max_open_orders``: most resting orders at once (all symbols).
    - ``max_orders_per_minute``: most orders placed in any trailing 60 s.
    - ``allowed_symbols``: only these symbols may be traded (empty = all).
    - ``price_band_pct``: a limit/stop price may be at most this many percent from the last price.
    - ``max_daily_loss``: the circuit breaker: once today's loss (realized P&L minus fees, UTC day)
      reaches it the account is HALTED until 00:00 UTC or an admin resumes it.
    """

    account = models.OneToOneField("trading.Account", on_delete=models.CASCADE, related_name="risk_limit")
    max_order_notional = models.DecimalField(**AMOUNT, null=True, blank=True)
    max_position_notional = models.DecimalField(**AMOUNT, null=True, blank=True)
    max_total_exposure = models.DecimalField(**AMOUNT, null=True, blank=True)
    max_open_orders = models.PositiveIntegerField(null=True, blank=True)
    max_orders_per_minute = models.PositiveIntegerField(null=True, blank=True)
    allowed_symbols = models.JSONField(default=list, blank=True, help_text='e.g. ["BTCUSDT", "ETHUSDT"]; empty = all symbols.')
    price_band_pct = models.DecimalField(max_digits=10, decimal_places=4, null=True, blank=True)
    max_daily_loss = models.DecimalField(**AMOUNT, null=True, blank=True)
    trading_state = models.CharField(max_length=10, choices=TradingState.choices, default=TradingState.ACTIVE)
    halted_reason = models.TextField(blank=True, default="")
    halted_until = models.DateTimeField(null=True, blank=True, help_text="The breaker lifts itself then; empty = until resumed.")
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"Risk limits of {self.account}"


class Scope(models.TextChoices):
    """What a token may do. Each MCP tool declares the one scope it needs (``mcpapi.guard``)."""

    MARKET_READ = "market:read", "Read market data"
    ACCOUNT_READ = "account:read", "Read accounts, orders and positions"
    TRADE = "trade", "Place and cancel orders"


ALL_SCOPES = [s.value for s in Scope]


def default_scopes() -> list[str]:
    return list(ALL_SCOPES)


class AgentToken(models.Model):
    """A bearer token an agent sends as ``Authorization: Bearer <token>``.

    Only the SHA-256 of the token is stored; the plain token is shown once, at creation
    (``risk.services.agent_token_create``). ``prefix`` (its first 12 characters) identifies it in
    lists and logs. ``scopes`` (``Scope`` values) bound what it may do; ``tools/list`` shows it only
    the tools its scopes allow.
    """

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="agent_tokens")
    name = models.CharField(max_length=100)
    scopes = models.JSONField(default=default_scopes, help_text="Any of: market:read, account:read, trade.")
    accounts = models.ManyToManyField("trading.Account", blank=True, related_name="+",
                                      help_text="Restrict the token to these accounts (empty: every account its user may use).")
    symbols = models.JSONField(default=list, blank=True, help_text='Restrict the token to these symbols, e.g. ["BTCUSDT"] (empty: all).')
    rate_limit_per_minute = models.PositiveIntegerField(
        null=True, blank=True, help_text="Calls per minute on MCP and REST (empty: the server default; 0: unlimited)."
    )
    prefix = models.CharField(max_length=16, db_index=True)
    key_hash = models.CharField(max_length=64, unique=True)
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    confirm_orders = models.BooleanField(
        default=False, help_text="Confirm mode: this token's orders wait as PENDING_APPROVAL until a person approves them."
    )

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"

    @staticmethod
    def hash_key(key: str) -> str:
        """SHA-256 hex digest of a plain token."""
        return hashlib.sha256(key.encode()).hexdigest()

    def has_scope(self, scope: str) -> bool:
        """True if this token was granted ``scope``."""
        return scope in (self.scopes or [])

    @property
    def is_active(self) -> bool:
        """Not revoked and not expired."""
        if self.revoked_at is not None:
            return False
        return self.expires_at is None or self.expires_at > timezone.now()


class GrantRole(models.TextChoices):
    """What a grantee may do on someone else's account (the owner may do everything)."""

    TRADER = "trader", "Trader (may trade)"
    VIEWER = "viewer", "Viewer (read only)"


class AccountGrant(models.Model):
    """``user`` may use ``account`` (owned by someone else) as ``role``. An account's data is
    visible only to its owner and its grantees."""

    account = models.ForeignKey("trading.Account", on_delete=models.CASCADE, related_name="grants")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="account_grants")
    role = models.CharField(max_length=8, choices=GrantRole.choices, default=GrantRole.VIEWER)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["account", "user"], name="grant_unique_account_user")]

    def __str__(self) -> str:
        return f"{self.user} {self.role} on {self.account}"


class AuditEventQuerySet(models.QuerySet):
    """Refuses bulk updates and deletes: the audit log is append-only."""

    def update(self, **kwargs):
        raise PermissionError("AuditEvent rows are append-only: they cannot be updated.")

    def delete(self):
        raise PermissionError("AuditEvent rows are append-only: they cannot be deleted.")


class Channel(models.TextChoices):
    """How an action reached us."""

    MCP = "mcp"
    API = "api"
    DASHBOARD = "dashboard"
    ADMIN = "admin"
    SYSTEM = "system"


class Outcome(models.TextChoices):
    OK = "ok"
    REJECTED = "rejected"
    ERROR = "error"


class AuditEvent(models.Model):
    """One action by a person, an agent or the system. Append-only: written by
    ``risk.audit.audit_record`` and never changed or deleted afterwards.

    ``params`` holds the call's arguments, ``result`` what it returned or why it failed,
    ``risk_decision`` the risk check's verdict (limit, value, usage) when an order was checked.
    """

    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    actor_user = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    actor_token = models.ForeignKey(AgentToken, null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    channel = models.CharField(max_length=16, choices=Channel.choices)
    action = models.CharField(max_length=64)  # indexed by audit_action (equality; no LIKE index to write)
    account = models.ForeignKey("trading.Account", null=True, blank=True, on_delete=models.PROTECT, related_name="+",
                                db_index=False)  # audit_account_recent leads with it
    params = models.JSONField(default=dict, blank=True, encoder=DjangoJSONEncoder)
    outcome = models.CharField(max_length=16, choices=Outcome.choices)
    message = models.TextField(blank=True, default="")
    result = models.JSONField(default=dict, blank=True, encoder=DjangoJSONEncoder)
    risk_decision = models.JSONField(null=True, blank=True, encoder=DjangoJSONEncoder)
    latency_ms = models.FloatField(null=True, blank=True)
    request_id = models.CharField(max_length=64, blank=True, default="")
    # The Redis stream id of the write-ahead entry this row was drained from (``risk.audit``), null
    # for rows written directly. Unique: an entry delivered twice (a drainer that died between its
    # commit and its XACK, or one whose pending entries another claimed) is written once.
    # (A constraint rather than unique=True: on PostgreSQL that adds a second, LIKE index to every insert.)
    wal_id = models.CharField(max_length=32, null=True, blank=True, editable=False)

    objects = AuditEventQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["account", "-created_at"], name="audit_account_recent"),
                   models.Index(fields=["action"], name="audit_action")]
        constraints = [models.UniqueConstraint(fields=["wal_id"], name="audit_unique_wal_id")]

    def __str__(self) -> str:
        return f"{self.created_at:%Y-%m-%d %H:%M:%S} {self.channel} {self.action} {self.outcome}"

    def save(self, *args, **kwargs):
        """Insert only: saving an existing row raises ``PermissionError``."""
        if self.pk is not None and not self._state.adding:
            raise PermissionError("AuditEvent rows are append-only: they cannot be updated.")
        kwargs["force_insert"] = True
        super().save(*args, **kwargs)

    def delete(self, *args, **kwargs):
        """Always raises ``PermissionError``."""
        raise PermissionError("AuditEvent rows are append-only: they cannot be deleted.")


# --- Protections (freqtrade-style) -----------------------------------------------------------------

class ProtectionKind(models.TextChoices):
    """The protections, after freqtrade's ("Protections", https://www.freqtrade.io/en/stable/plugins/#protections).

    - COOLDOWN: freqtrade's ``CooldownPeriod``: after a losing trade, no new entry for ``lock_minutes``.
    - STOPLOSS_GUARD: freqtrade's ``StoplossGuard``: ``trade_limit`` losing trades within
      ``lookback_minutes`` lock for ``lock_minutes``.
    - MAX_DRAWDOWN: freqtrade's ``MaxDrawdown``: a drawdown of at least ``max_drawdown_pct`` of the
      account over the trades of ``lookback_minutes`` locks for ``lock_minutes``.
    - LOW_PROFIT: freqtrade's ``LowProfitPairs``: a symbol whose trades of ``lookback_minutes``
      (at least ``trade_limit`` of them) made less than ``required_profit_pct`` is locked.
    """

    COOLDOWN = "cooldown", "Cooldown after a losing trade (CooldownPeriod)"
    STOPLOSS_GUARD = "stoploss_guard", "Stop after N losing trades in a window (StoplossGuard)"
    MAX_DRAWDOWN = "max_drawdown", "Max drawdown over a window (MaxDrawdown)"
    LOW_PROFIT = "low_profit", "Low-profit symbols (LowProfitPairs)"


class ProtectionScope(models.TextChoices):
    """What a tripped protection locks: the whole account, or only the symbol that tripped it
    (freqtrade's ``only_per_pair``)."""

    ACCOUNT = "account", "Whole account"
    SYMBOL = "symbol", "Only the symbol"


class Protection(models.Model):
    """One protection of an account, editable in the admin; evaluated by ``risk.services.risk_check``
    before every BUY (``risk.protections``). A tripped protection writes a ``ProtectionLock``.

    A "trade" is one SELL order's fills (a spot position shrinking), its profit the fills'
    realized P&L minus fees in the quote asset; a losing trade's profit is below 0. Amounts in the
    account's quote asset, windows and lock durations in minutes, percentages in percent (5 = 5 %).
    """

    account = models.ForeignKey("trading.Account", on_delete=models.CASCADE, related_name="protections")
    kind = models.CharField(max_length=20, choices=ProtectionKind.choices)
    scope = models.CharField(max_length=8, choices=ProtectionScope.choices, default=ProtectionScope.ACCOUNT)
    enabled = models.BooleanField(default=True)
    lookback_minutes = models.PositiveIntegerField(default=60, help_text="Window of trades considered (not used by cooldown).")
    lock_minutes = models.PositiveIntegerField(default=30, help_text="How long a tripped protection locks, from the trade that tripped it.")
    trade_limit = models.PositiveIntegerField(default=1, help_text="stoploss_guard: losing trades that trip it; low_profit: trades needed before judging.")
    max_drawdown_pct = models.DecimalField(max_digits=10, decimal_places=4, null=True, blank=True,
                                           help_text="max_drawdown: trips at this drawdown, in % of the account value at the window's start.")
    required_profit_pct = models.DecimalField(max_digits=10, decimal_places=4, null=True, blank=True,
                                              help_text="low_profit: a symbol earning less than this % of its traded value is locked.")
    note = models.CharField(max_length=200, blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["account", "id"]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} on {self.account} ({self.scope})"

    def clean(self):
        from django.core.exceptions import ValidationError

        if self.kind == ProtectionKind.MAX_DRAWDOWN and self.max_drawdown_pct is None:
            raise ValidationError({"max_drawdown_pct": "max_drawdown needs max_drawdown_pct."})
        if self.kind == ProtectionKind.LOW_PROFIT:
            if self.required_profit_pct is None:
                raise ValidationError({"required_profit_pct": "low_profit needs required_profit_pct."})
            if self.scope != ProtectionScope.SYMBOL:
                raise ValidationError({"scope": "low_profit locks symbols: use scope 'symbol'."})
        if self.kind == ProtectionKind.MAX_DRAWDOWN and self.scope != ProtectionScope.ACCOUNT:
            raise ValidationError({"scope": "max_drawdown is measured over the whole account: use scope 'account'."})


class ProtectionLock(models.Model):
    """A tripped protection: BUY orders of ``account`` (in ``symbol``, or in every symbol when
    ``symbol`` is empty) are refused until ``until`` (freqtrade's ``PairLock``). Exits (SELLs) stay
    allowed. An admin may release a lock early (``released_at``)."""

    account = models.ForeignKey("trading.Account", on_delete=models.CASCADE, related_name="protection_locks")
    protection = models.ForeignKey(Protection, on_delete=models.CASCADE, related_name="locks")
    symbol = models.CharField(max_length=32, blank=True, default="", help_text="Empty: the whole account.")
    reason = models.TextField()
    locked_at = models.DateTimeField(default=timezone.now)
    until = models.DateTimeField(db_index=True)
    released_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-until", "-id"]
        constraints = [models.UniqueConstraint(fields=["protection", "symbol", "until"], name="protectionlock_unique_trip")]

    def __str__(self) -> str:
        return f"{self.symbol or 'account'} locked until {self.until:%Y-%m-%d %H:%M} UTC ({self.protection.kind})"


# --- Confirm mode ------------------------------------------------------------------------------------

class ApprovalStatus(models.TextChoices):
    """PENDING_APPROVAL: waiting for a person; APPROVED: the order was placed (whatever the venue or
    the risk check then made of it, see ``order``); REJECTED: a person refused it."""

    PENDING = "PENDING_APPROVAL"
    APPROVED = "APPROVED"
    REJECTED = "REJECTED"


class OrderApproval(models.Model):
    """An order from a token in confirm mode, held until a person approves or rejects it
    (``trading.approvals``). ``params`` are ``trading.services.order_place``'s order arguments as the
    agent sent them; ``order`` is the order placed on approval."""

    account = models.ForeignKey("trading.Account", on_delete=models.CASCADE, related_name="order_approvals")
    requested_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    token = models.ForeignKey(AgentToken, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    channel = models.CharField(max_length=16)
    request_id = models.CharField(max_length=64, blank=True, default="")
    client_order_id = models.CharField(max_length=64)
    symbol = models.CharField(max_length=32)
    side = models.CharField(max_length=4)
    params = models.JSONField(default=dict, encoder=DjangoJSONEncoder)
    status = models.CharField(max_length=20, choices=ApprovalStatus.choices, default=ApprovalStatus.PENDING, db_index=True)
    decided_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    decided_at = models.DateTimeField(null=True, blank=True)
    decision_note = models.TextField(blank=True, default="")
    order = models.ForeignKey("trading.Order", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.UniqueConstraint(fields=["account", "client_order_id"], name="orderapproval_unique_account_cid"),
        ]

    def __str__(self) -> str:
        return f"{self.side} {self.symbol} ({self.client_order_id}) {self.status}"


# --- Exchange credentials ------------------------------------------------------------------------------

class KeyType(models.TextChoices):
    """Binance API key types ("API Key types"): an HMAC secret, or an Ed25519 key pair whose
    private half signs (Binance recommends Ed25519; ``session.logon`` accepts nothing else)."""

    HMAC_SHA256 = "HMAC_SHA256", "HMAC-SHA256 (API key + secret key)"
    ED25519 = "ED25519", "Ed25519 (API key + private key PEM)"


class ExchangeCredential(models.Model):
    """The Binance API key of one testnet/live account: an HMAC secret or an Ed25519 private key
    (PEM), stored only as a Fernet token (``risk.secrets``) and decrypted only when the venue builds
    its python-binance client (``trading.venues.binance``); no tool, API, page or audit row shows
    it. ``api_url`` / ``ws_api_url``: this account's venue endpoints (REST base ``.../api``,
    WebSocket API ``.../ws-api/v3``); blank = the deployment's for the account's venue."""

    account = models.OneToOneField("trading.Account", on_delete=models.CASCADE, related_name="exchange_credential")
    api_key = models.CharField(max_length=128)
    key_type = models.CharField(max_length=16, choices=KeyType.choices, default=KeyType.HMAC_SHA256)
    secret_encrypted = models.TextField()
    api_url = models.CharField(max_length=200, blank=True, default="")
    ws_api_url = models.CharField(max_length=200, blank=True, default="")
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"API key {self.api_key[:6]}… of {self.account}"

    def set_secret(self, plain: str) -> None:
        """Encrypt ``plain`` (the HMAC secret, or the Ed25519 private key PEM) into
        ``secret_encrypted`` (not saved)."""
        self.secret_encrypted = fernet.encrypt(plain)

    def secret(self) -> str:
        """The plain secret. Only the venue's client builder may call this."""
        return fernet.decrypt(self.secret_encrypted)
