"""Risk checks and agent tokens.

``risk_check`` runs inside the order's transaction, after the account row is locked, so the check
and the booking are atomic: two orders racing on one account are checked one after the other.
"""
from __future__ import annotations

import secrets
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from datetime import timezone as dt_timezone
from decimal import Decimal

from django.contrib.auth import get_user_model
from django.db import transaction
from django.db.models import Sum
from django.utils import timezone

from core.errors import InvalidInput, NotFound, PermissionDenied
from marketdata.selectors import quote_get, symbol_get
from risk.audit import audit_record
from risk.models import AccountGrant, AgentToken, ALL_SCOPES, GrantRole, Outcome, RiskLimit, TradingState
from risk.protections import protections_check

TOKEN_PREFIX = "tmcp_"
LAST_USED_RESOLUTION = timedelta(seconds=60)


# --- Agent tokens ----------------------------------------------------------------------------------

def agent_token_create(*, user, name: str, expires_at: datetime | None = None,
                       scopes: list[str] | None = None, confirm_orders: bool = False) -> tuple[AgentToken, str]:
    """Create a token for ``user`` and return ``(row, plain_token)``.

    ``scopes``: any of ``risk.models.ALL_SCOPES`` (default: all). ``confirm_orders``: confirm mode
    (its orders wait for a person's approval, ``trading.approvals``). The plain token (``tmcp_`` + 43
    URL-safe characters, 256 bits) is returned only here; only its SHA-256 is stored.
    Raises ``InvalidInput`` for an unknown scope.
    """
    scopes = list(ALL_SCOPES) if scopes is None else list(dict.fromkeys(scopes))
    unknown = [s for s in scopes if s not in ALL_SCOPES]
    if unknown:
        raise InvalidInput(f"Unknown scope(s) {', '.join(unknown)}; valid: {', '.join(ALL_SCOPES)}.")
    key = TOKEN_PREFIX + secrets.token_urlsafe(32)
    token = AgentToken.objects.create(
        user=user, name=name, prefix=key[:12], key_hash=AgentToken.hash_key(key), expires_at=expires_at, scopes=scopes,
        confirm_orders=confirm_orders,
    )
    return token, key


# Resolvers of bearer keys that are not ``tmcp_`` agent tokens (``oauth`` registers its access
# tokens' resolver here when its app is ready): each takes the raw key, returns the AgentToken
# permission record or None.
_bearer_resolvers: list = []


def bearer_resolver_register(resolve) -> None:
    """Let ``agent_token_authenticate`` try ``resolve(key) -> AgentToken | None`` for keys without
    the ``tmcp_`` prefix (the OAuth app registers ``oauth.selectors.resolve_oauth_access_token``
    in its ``AppConfig.ready``); registering the same function twice has no effect."""
    if resolve not in _bearer_resolvers:
        _bearer_resolvers.append(resolve)


def agent_token_authenticate(*, key: str) -> AgentToken | None:
    """Return the active ``AgentToken`` for a plain token, or None (unknown, expired, revoked,
    or its user inactive). Updates ``last_used_at`` at most once a minute per token.

    A key without the ``tmcp_`` prefix is tried with the registered resolvers
    (``bearer_resolver_register``: an OAuth access token, ``oauth.selectors.resolve_oauth_access_token``):
    the answer is then the permission record the person's consent created, its ``expires_at`` no
    later than the access token's."""
    if len(key) > 128:
        return None
    if not key.startswith(TOKEN_PREFIX):
        token = next((t for t in (resolve(key) for resolve in _bearer_resolvers) if t is not None), None)
    else:
        token = (
            AgentToken.objects.select_related("user")
            .filter(key_hash=AgentToken.hash_key(key))
            .first()
        )
    if token is None or not token.is_active or not token.user.is_active:
        return None
    now = timezone.now()
    if token.last_used_at is None or now - token.last_used_at > LAST_USED_RESOLUTION:
        AgentToken.objects.filter(pk=token.pk).update(last_used_at=now)
        token.last_used_at = now
    return token


def agent_token_revoke(*, token: AgentToken) -> AgentToken:
    """Revoke a token at once; it authenticates nothing afterwards."""
    if token.revoked_at is None:
        token.revoked_at = timezone.now()
        token.save(update_fields=["revoked_at"])
    return token


# --- Risk checks -----------------------------------------------------------------------------------

@dataclass
class RiskCheck:
    """One limit as checked: ``limit`` (null = unlimited), the order's ``value``, the ``usage``
    before the order, all in the account's quote asset."""

    name: str
    limit: Decimal | None
    value: Decimal
    usage: Decimal
    passed: bool


@dataclass
class RiskDecision:
    """The verdict on one order: ``allowed``, each check, and the reason of a refusal."""

    allowed: bool
    checks: list[RiskCheck] = field(default_factory=list)
    reason: str = ""

    def as_dict(self) -> dict:
        """JSON-friendly form (Decimals as strings) for the audit log and tool results."""
        return {
            "allowed": self.allowed,
            "reason": self.reason,
            "checks": [{k: (format(v, "f") if isinstance(v, Decimal) else v) for k, v in asdict(c).items()} for c in self.checks],
        }


def utc_day_start(now: datetime | None = None) -> datetime:
    """Midnight UTC of the current day (the daily-loss window starts there)."""
    now = now or timezone.now()
    return now.astimezone(dt_timezone.utc).replace(hour=0, minute=0, second=0, microsecond=0)


def daily_loss(*, account) -> Decimal:
    """Loss of the current UTC day in the quote asset: −(realized P&L − fees) of today's fills,
    floored at 0 (a profitable day has no loss)."""
    agg = account.fills.filter(time__gte=utc_day_start()).aggregate(
        pnl=Sum("realized_pnl"), fees=Sum("commission_quote")
    )
    net = (agg["pnl"] or Decimal("0")) - (agg["fees"] or Decimal("0"))
    return max(Decimal("0"), -net)


def next_utc_midnight(now: datetime | None = None) -> datetime:
    """00:00 UTC of the next day (when the daily-loss breaker lifts itself)."""
    return utc_day_start(now) + timedelta(days=1)


STOP_AND_LIMIT_TYPES = {"LIMIT", "LIMIT_MAKER", "STOP_LOSS", "STOP_LOSS_LIMIT", "TAKE_PROFIT", "TAKE_PROFIT_LIMIT"}


def _fmt(value: Decimal) -> str:
    return f"{value.normalize():f}"


def risk_check(*, account, symbol: str, side: str, quantity: Decimal, price: Decimal,
               order_type: str = "MARKET", reference_price: Decimal | None = None,
               limits: RiskLimit | None = None, has_protections: bool | None = None) -> RiskDecision:
    """Check one order against the account's ``RiskLimit`` and trading state.

    Args:
        account: ``trading.Account``; its row must be locked by the caller's transaction
            (``select_for_update``), which makes check-then-book atomic: concurrent orders on one
            account are checked one after another and can never together exceed a limit.
        symbol: e.g. "BTCUSDT"; side: "BUY" | "SELL"; order_type: Binance ``type``.
        quantity: base-asset quantity; price: the price the order is valued at (quote asset):
            best ask/bid for MARKET, the limit or stop price otherwise.
        reference_price: last/mid price (quote asset) the price band is measured from.
        limits: the account's ``RiskLimit`` when the caller read it with the locked account row
            (an unsaved default row when it has none); read here when None.
        has_protections: whether the account has any ``Protection`` row, when the caller read it
            with the locked account row (False skips ``risk.protections``' query); None: unknown.

    Returns a ``RiskDecision`` naming every limit checked with its value and usage; it never raises
    for a refusal (the caller books the rejection). When the daily-loss breaker trips, the
    account's state is set to HALTED until 00:00 UTC in the caller's transaction.
    Checks, in order: trading state (HALTED refuses all, REDUCING allows only a SELL no larger
    than the position), protection locks for BUYs (``risk.protections``: freqtrade's CooldownPeriod,
    StoplossGuard, MaxDrawdown, LowProfitPairs; a tripped protection's lock is written here), allowed_symbols, max_order_notional, price_band_pct, max_orders_per_minute,
    max_open_orders (orders that can rest), max_position_notional and max_total_exposure (BUYs),
    max_daily_loss.
    """
    if limits is None:
        limits = RiskLimit.objects.filter(account=account).first() or RiskLimit(account=account)
    notional = quantity * price
    quote = account.quote_asset
    checks: list[RiskCheck] = []
    zero = Decimal("0")

    def refuse(name, limit, value, usage, reason):
        checks.append(RiskCheck(name, limit, value, usage, False))
        return RiskDecision(allowed=False, checks=checks, reason=reason)

    def passed(name, limit, value, usage=zero):
        checks.append(RiskCheck(name, limit, value, usage, True))

    # 1. Trading state.
    now = timezone.now()
    if limits.trading_state == "HALTED" and limits.halted_until is not None and now >= limits.halted_until:
        limits.trading_state, limits.halted_reason, limits.halted_until = "ACTIVE", "", None
        limits.save(update_fields=["trading_state", "halted_reason", "halted_until", "updated_at"])
    position = None
    if limits.trading_state == "HALTED":
        until = f" until {limits.halted_until:%Y-%m-%d %H:%M} UTC" if limits.halted_until else " until an admin resumes it"
        return refuse("trading_state", None, notional, zero,
                      f"trading_state: account is HALTED{until} ({limits.halted_reason or 'kill switch'})")
    if limits.trading_state == "REDUCING":
        position = account.positions.filter(symbol=symbol).first()
        held = position.quantity if position else zero
        if side != "SELL" or quantity > held:
            return refuse("trading_state", held, quantity, held,
                          f"trading_state: account is REDUCING: only SELL orders up to the position "
                          f"({_fmt(held)} of {symbol}) are allowed")
    passed("trading_state", None, notional)

    # 1b. Protections (freqtrade-style locks, risk.protections): BUYs only.
    if side == "BUY":
        lock = protections_check(account=account, symbol=symbol, side=side, now=now, has_protections=has_protections)
        if lock is not None:
            return refuse("protections", None, notional, zero,
                          f"protections: {'the account' if not lock.symbol else lock.symbol} is locked until "
                          f"{lock.until:%Y-%m-%d %H:%M:%S} UTC by {lock.protection.kind} ({lock.reason})")

    # 2. Symbols.
    if limits.allowed_symbols and symbol not in limits.allowed_symbols:
        return refuse("allowed_symbols", None, notional, zero,
                      f"allowed_symbols: {symbol} is not allowed on this account (allowed: {', '.join(limits.allowed_symbols)})")

    # 3. Order size.
    if limits.max_order_notional is not None and notional > limits.max_order_notional:
        return refuse("max_order_notional", limits.max_order_notional, notional, zero,
                      f"max_order_notional: order notional {_fmt(notional)} {quote} exceeds the limit of "
                      f"{_fmt(limits.max_order_notional)} {quote}")
    passed("max_order_notional", limits.max_order_notional, notional)

    # 4. Price band for priced orders.
    if limits.price_band_pct is not None and order_type in STOP_AND_LIMIT_TYPES and reference_price:
        off = abs(price - reference_price) / reference_price * 100
        if off > limits.price_band_pct:
            return refuse("price_band_pct", limits.price_band_pct, off.quantize(Decimal("0.0001")), zero,
                          f"price_band_pct: price {_fmt(price)} is {off:.2f} % from the last price "
                          f"{_fmt(reference_price)}; the band is {_fmt(limits.price_band_pct)} %")
        passed("price_band_pct", limits.price_band_pct, off.quantize(Decimal("0.0001")))

    # 5. Order rate.
    if limits.max_orders_per_minute is not None:
        recent = account.orders.filter(created_at__gte=now - timedelta(seconds=60)).count()
        if recent >= limits.max_orders_per_minute:
            return refuse("max_orders_per_minute", Decimal(limits.max_orders_per_minute), Decimal(1), Decimal(recent),
                          f"max_orders_per_minute: {recent} orders in the last 60 s; the limit is "
                          f"{limits.max_orders_per_minute}; retry in a few seconds")
        passed("max_orders_per_minute", Decimal(limits.max_orders_per_minute), Decimal(1), Decimal(recent))

    # 6. Resting orders.
    if limits.max_open_orders is not None and order_type != "MARKET":
        open_count = account.orders.filter(status__in=("NEW", "PARTIALLY_FILLED")).count()
        if open_count >= limits.max_open_orders:
            return refuse("max_open_orders", Decimal(limits.max_open_orders), Decimal(1), Decimal(open_count),
                          f"max_open_orders: {open_count} orders are open; the limit is {limits.max_open_orders}")
        passed("max_open_orders", Decimal(limits.max_open_orders), Decimal(1), Decimal(open_count))

    # 7./8. Position and exposure (a BUY grows them; a SELL of a long position only shrinks them).
    if side == "BUY" and (limits.max_position_notional is not None or limits.max_total_exposure is not None):
        positions = {p.symbol: p for p in account.positions.exclude(quantity=0)}
        held = positions[symbol].quantity if symbol in positions else zero
        if limits.max_position_notional is not None:
            usage = held * price
            after = usage + notional
            if after > limits.max_position_notional:
                return refuse("max_position_notional", limits.max_position_notional, notional, usage,
                              f"max_position_notional: the {symbol} position would be worth {_fmt(after)} {quote}, "
                              f"over the limit of {_fmt(limits.max_position_notional)} {quote}")
            passed("max_position_notional", limits.max_position_notional, notional, usage)
        if limits.max_total_exposure is not None:
            usage = sum((_mark(p.symbol, price if p.symbol == symbol else None, p.avg_entry_price) * p.quantity
                         for p in positions.values()), zero)
            if usage + notional > limits.max_total_exposure:
                return refuse("max_total_exposure", limits.max_total_exposure, notional, usage,
                              f"max_total_exposure: positions would be worth {_fmt(usage + notional)} {quote}, "
                              f"over the limit of {_fmt(limits.max_total_exposure)} {quote}")
            passed("max_total_exposure", limits.max_total_exposure, notional, usage)

    # 9. The daily-loss circuit breaker.
    if limits.max_daily_loss is not None:
        loss = daily_loss(account=account)
        if loss >= limits.max_daily_loss:
            limits.trading_state = "HALTED"
            limits.halted_until = next_utc_midnight(now)
            limits.halted_reason = (f"daily loss {_fmt(loss)} {quote} reached max_daily_loss "
                                    f"{_fmt(limits.max_daily_loss)} {quote}")
            if limits.pk:
                limits.save(update_fields=["trading_state", "halted_reason", "halted_until", "updated_at"])
            return refuse("max_daily_loss", limits.max_daily_loss, notional, loss,
                          f"max_daily_loss: today's loss {_fmt(loss)} {quote} has reached the limit of "
                          f"{_fmt(limits.max_daily_loss)} {quote}; the account is HALTED until 00:00 UTC")
        passed("max_daily_loss", limits.max_daily_loss, notional, loss)
    else:
        passed("max_daily_loss", None, notional)

    return RiskDecision(allowed=True, checks=checks)


def _mark(symbol: str, price: Decimal | None, fallback: Decimal) -> Decimal:
    """Value of one unit of ``symbol`` for exposure: the given price, else the cached best bid,
    else the position's average entry price."""
    if price is not None:
        return price
    try:
        return quote_get(symbol).bid_price
    except Exception:
        return fallback


# --- Trading state ---------------------------------------------------------------------------------

def account_set_state(*, account, actor_user, channel: str, state: str, reason: str = "") -> RiskLimit:
    """Set the trading state (ACTIVE resumes a halted account, REDUCING allows only reducing
    orders). Audited as ``risk.state`` with before/after. Raises ``InvalidInput`` for an unknown state."""
    from django.db import transaction

    if state not in TradingState.values:
        raise InvalidInput(f"state must be one of {', '.join(TradingState.values)}, got {state!r}.")
    with transaction.atomic():
        limits, _ = RiskLimit.objects.select_for_update().get_or_create(account=account)
        before = limits.trading_state
        limits.trading_state = state
        limits.halted_reason = reason if state != "ACTIVE" else ""
        limits.halted_until = None
        limits.save(update_fields=["trading_state", "halted_reason", "halted_until", "updated_at"])
        audit_record(channel=channel, action="risk.state", outcome=Outcome.OK, actor_user=actor_user, account=account,
                     params={"state": state, "reason": reason}, result={"before": before, "after": state})
    return limits


# --- Limits ----------------------------------------------------------------------------------------

LIMIT_AMOUNT_FIELDS = ("max_order_notional", "max_position_notional", "max_total_exposure", "max_daily_loss")
LIMIT_COUNT_FIELDS = ("max_open_orders", "max_orders_per_minute")


def _limit_decimal(name: str, value, *, places: int, int_digits: int) -> Decimal | None:
    if value is None:
        return None
    try:
        number = Decimal(str(value))
    except Exception:
        raise InvalidInput(f"{name} must be a decimal number, got {value!r}.") from None
    if not number.is_finite() or number < 0:
        raise InvalidInput(f"{name} must be a non-negative decimal number, got {value!r}.")
    if number.as_tuple().exponent < -places:
        raise InvalidInput(f"{name} has at most {places} decimal places, got {value!r}.")
    if number >= Decimal(10) ** int_digits:
        raise InvalidInput(f"{name} is too large: at most {int_digits} digits before the point, got {value!r}.")
    return number


def risk_limit_update(*, account, actor_user, channel: str, changes: dict, actor_token=None) -> RiskLimit:
    """Change some of ``account``'s risk limits. ``changes``: ``RiskLimit`` field name → new value
    (None = unlimited): the amounts (quote asset; ``max_order_notional``, ``max_position_notional``,
    ``max_total_exposure``, ``max_daily_loss``; at most 8 decimals), the counts
    (``max_open_orders``, ``max_orders_per_minute``), ``price_band_pct`` (percent, at most 4
    decimals) and ``allowed_symbols`` (symbol names; empty = all).

    Only the account's owner, as a person, may change them: an agent token (``actor_token``) or a
    grantee gets ``PermissionDenied`` (an agent must never loosen its own limits). Raises
    ``InvalidInput`` for an unknown field or a bad value, ``UnknownSymbol`` for an unknown symbol;
    nothing changes then. Audited as ``risk_limit.change`` with the changed fields' values
    before and after, as the admin records its edits."""
    from django.db import transaction

    if actor_token is not None:
        raise PermissionDenied("Risk limits are changed by the account's owner in person (a session), not by an agent token.")
    if account.owner_id != getattr(actor_user, "pk", None):
        raise PermissionDenied(f"Only the owner of account {account.pk} may change its risk limits.")
    values = {}
    for field, value in changes.items():
        if field in LIMIT_AMOUNT_FIELDS:
            values[field] = _limit_decimal(field, value, places=8, int_digits=22)
        elif field == "price_band_pct":
            values[field] = _limit_decimal(field, value, places=4, int_digits=6)
        elif field in LIMIT_COUNT_FIELDS:
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**31):
                raise InvalidInput(f"{field} must be an integer from 0 to {2**31 - 1} or null, got {value!r}.")
            values[field] = value
        elif field == "allowed_symbols":
            if not isinstance(value, (list, tuple)):
                raise InvalidInput(f"allowed_symbols must be a list of symbols, got {value!r}.")
            values[field] = sorted({symbol_get(s).symbol for s in value})
        else:
            raise InvalidInput(f"Unknown risk limit {field!r}.")
    with transaction.atomic():
        limits, _ = RiskLimit.objects.select_for_update().get_or_create(account=account)
        before = {f: getattr(limits, f) for f in values}
        for field, value in values.items():
            setattr(limits, field, value)
        limits.save(update_fields=[*values, "updated_at"])
        audit_record(channel=channel, action="risk_limit.change", outcome=Outcome.OK, actor_user=actor_user,
                     account=account, params={"fields": sorted(values)},
                     result={"before": before, "after": {f: getattr(limits, f) for f in values}})
    return limits


# --- Account grants ----------------------------------------------------------------------------------
#
# Who besides its owner may use an account (``AccountGrant``: a viewer reads, a trader also trades).
# Only the owner manages them, on every channel (dashboard, admin); each change is audited on the
# account with the role before and after.

def _owner_only(*, account, actor) -> None:
    """Raise unless ``actor`` owns ``account``: ``PermissionDenied`` for a grantee (who may see the
    account), ``NotFound`` for anyone else (who may not even learn that it exists)."""
    if getattr(actor, "pk", None) is not None and account.owner_id == actor.pk:
        return
    if getattr(actor, "pk", None) is not None and AccountGrant.objects.filter(account=account, user_id=actor.pk).exists():
        raise PermissionDenied(f"Only the owner of account {account.pk} decides who may use it.")
    raise NotFound(f"Account {account.pk} not found among your accounts.")


def account_grants_list(*, account, actor) -> list[dict]:
    """The grants of ``account`` for its owner ``actor``: ``[{"id", "username", "role",
    "createdAt" (ms UTC), "created" (datetime)}]`` by username. Raises like ``account_grant_set``
    for a non-owner."""
    _owner_only(account=account, actor=actor)
    return [{"id": g.pk, "username": g.user.get_username(), "role": g.role, "createdAt": int(g.created_at.timestamp() * 1000),
             "created": g.created_at}
            for g in AccountGrant.objects.filter(account=account).select_related("user").order_by("user__username")]


def account_grant_set(*, account, actor, username: str, role: str, channel: str) -> AccountGrant:
    """Let the user ``username`` use ``account`` as ``role`` (``viewer``: read only; ``trader``:
    also trade and decide confirm-mode approvals), or change the role of their grant.

    Only the account's owner (``actor``) may: a grantee gets ``PermissionDenied``, anyone else
    ``NotFound``. Raises ``InvalidInput`` for an unknown role or the owner naming themself,
    ``NotFound`` for no active user of that name. Nothing changes when it raises. Audited on the
    account as ``grant.set`` with the role before (null: new) and after, in the same transaction.
    """
    _owner_only(account=account, actor=actor)
    if role not in GrantRole.values:
        raise InvalidInput(f"role must be one of {', '.join(GrantRole.values)}, got {role!r}.")
    username = str(username or "").strip()
    User = get_user_model()
    grantee = User.objects.filter(**{User.USERNAME_FIELD: username}, is_active=True).first() if username else None
    if grantee is None:
        raise NotFound(f"No active user named {username[:150]!r}.")
    if grantee.pk == account.owner_id:
        raise InvalidInput("The owner always has full access to their own account.")
    with transaction.atomic():
        grant = AccountGrant.objects.select_for_update().filter(account=account, user=grantee).first()
        before = grant.role if grant else None
        if grant is None:
            grant = AccountGrant.objects.create(account=account, user=grantee, role=role)
        elif grant.role != role:
            grant.role = role
            grant.save(update_fields=["role"])
        audit_record(channel=channel, action="grant.set", outcome=Outcome.OK, actor_user=actor, account=account,
                     params={"username": grantee.get_username(), "role": role},
                     message=f"{grantee.get_username()} may use account {account.pk} as {role}",
                     result={"before": before, "after": role})
    return grant


def account_grant_remove(*, account, actor, username: str, channel: str) -> None:
    """Withdraw ``username``'s grant on ``account``; they can no longer see or use it. Only the
    owner may (see ``account_grant_set``). Raises ``NotFound`` when that user has no grant.
    Audited on the account as ``grant.remove`` with the role before."""
    _owner_only(account=account, actor=actor)
    username = str(username or "").strip()
    User = get_user_model()
    with transaction.atomic():
        grant = (AccountGrant.objects.select_for_update().select_related("user")
                 .filter(account=account, **{f"user__{User.USERNAME_FIELD}": username}).first())
        if grant is None:
            raise NotFound(f"{username[:150]!r} has no grant on account {account.pk}.")
        before = grant.role
        grant.delete()
        audit_record(channel=channel, action="grant.remove", outcome=Outcome.OK, actor_user=actor, account=account,
                     params={"username": username}, message=f"{username} may no longer use account {account.pk}",
                     result={"before": before, "after": None})
