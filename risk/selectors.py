"""Reads of the risk app shared by the REST API and pages: an account's audit events and its
risk limits. The caller resolves the account first (``trading.selectors.account_get``), which is
where access is decided: these functions read only the account they are given."""
from __future__ import annotations

from datetime import datetime, timezone

from django.db.models import Q

from risk.models import AuditEvent, RiskLimit


def _dstr(value) -> str | None:
    return None if value is None else format(value, "f")


def audit_events_list(*, account, action: str | None = None, outcome: str | None = None, channel: str | None = None,
                      since_ms: int | None = None, until_ms: int | None = None, symbols=None):
    """QuerySet of ``account``'s audit events, newest first, filtered by exact ``action``,
    ``outcome``, ``channel`` and time (``since_ms`` inclusive, ``until_ms`` exclusive, ms since the
    epoch UTC). ``symbols`` (a symbol-restricted credential's, ``risk.access.symbols_default``):
    only events whose ``params.symbol`` is one of them or that name no symbol (token, limit and
    account changes); None: all. Rows of other accounts are never included."""
    qs = AuditEvent.objects.filter(account=account).select_related("actor_user", "actor_token")
    if symbols is not None:
        names = {str(x).upper() for x in symbols} | {str(x).lower() for x in symbols}
        qs = qs.filter(Q(params__symbol__isnull=True) | Q(params__symbol__in=sorted(names)))
    if action:
        qs = qs.filter(action=action)
    if outcome:
        qs = qs.filter(outcome=outcome)
    if channel:
        qs = qs.filter(channel=channel)
    if since_ms is not None:
        qs = qs.filter(created_at__gte=datetime.fromtimestamp(since_ms / 1000, tz=timezone.utc))
    if until_ms is not None:
        qs = qs.filter(created_at__lt=datetime.fromtimestamp(until_ms / 1000, tz=timezone.utc))
    return qs.order_by("-created_at", "-id")


def audit_event_as_dict(event: AuditEvent) -> dict:
    """One audit event: ``{id, time (ms UTC), accountId, channel, action, outcome, actorUser
    (username), actorToken (token name), message, params, result, riskDecision, latencyMs,
    requestId}``. Token plaintexts and exchange secrets are never in audit rows (``risk.audit``)."""
    return {
        "id": event.pk,
        "time": int(event.created_at.timestamp() * 1000),
        "accountId": event.account_id,
        "channel": event.channel,
        "action": event.action,
        "outcome": event.outcome,
        "actorUser": event.actor_user.get_username() if event.actor_user_id else None,
        "actorToken": event.actor_token.name if event.actor_token_id else None,
        "message": event.message,
        "params": event.params if isinstance(event.params, dict) else {"value": event.params},
        "result": event.result,
        "riskDecision": event.risk_decision,
        "latencyMs": event.latency_ms,
        "requestId": event.request_id,
    }


LIMIT_FIELDS = {  # API name → RiskLimit field
    "maxOrderNotional": "max_order_notional",
    "maxPositionNotional": "max_position_notional",
    "maxTotalExposure": "max_total_exposure",
    "maxOpenOrders": "max_open_orders",
    "maxOrdersPerMinute": "max_orders_per_minute",
    "allowedSymbols": "allowed_symbols",
    "priceBandPct": "price_band_pct",
    "maxDailyLoss": "max_daily_loss",
}


def risk_limits_get(*, account) -> dict:
    """``account``'s ``RiskLimit`` with the API's names (amounts in the quote asset as decimal
    strings, null = unlimited) and its ``tradingState``; an account without a row has no limits."""
    limit = RiskLimit.objects.filter(account=account).first() or RiskLimit(account=account)
    out = {"accountId": account.pk, "tradingState": limit.trading_state}
    for name, attr in LIMIT_FIELDS.items():
        value = getattr(limit, attr)
        if attr == "allowed_symbols":
            out[name] = list(value or [])
        elif attr in ("max_open_orders", "max_orders_per_minute"):
            out[name] = value
        else:
            out[name] = _dstr(value)
    return out


def limit_usage(*, account, symbol: str | None = None) -> list[dict]:
    """How much of ``account``'s limits is in use now: ``[{"limit", "used", "max", "pct"}]`` for
    each limit it has of ``max_daily_loss`` (today's loss, ``risk.services.daily_loss``),
    ``max_orders_per_minute`` (orders of the last 60 s), ``max_open_orders`` (NEW and
    PARTIALLY_FILLED orders) and, given ``symbol``, ``max_position_notional`` (the position at its
    average entry price). Amounts in the account's quote asset as strings; ``pct`` a float.
    ``account``: a ``trading.models.Account`` (read through its ``orders`` / ``positions``
    relations: risk sits below trading and does not import its models)."""
    from datetime import timedelta

    from django.utils import timezone as dj_timezone

    from risk.services import daily_loss

    limits = RiskLimit.objects.filter(account=account).first()
    if limits is None:
        return []
    out = []

    def add(name, used, maximum):
        if maximum:
            out.append({"limit": name, "used": _dstr(used), "max": _dstr(maximum), "pct": float(used / maximum * 100)})

    if limits.max_daily_loss is not None:
        add("max_daily_loss", daily_loss(account=account), limits.max_daily_loss)
    if limits.max_orders_per_minute is not None:
        recent = account.orders.filter(created_at__gte=dj_timezone.now() - timedelta(seconds=60)).count()
        add("max_orders_per_minute", recent, limits.max_orders_per_minute)
    if limits.max_open_orders is not None:
        add("max_open_orders", account.orders.filter(status__in=("NEW", "PARTIALLY_FILLED")).count(),
            limits.max_open_orders)
    if symbol and limits.max_position_notional is not None:
        position = account.positions.filter(symbol=symbol).first()
        held = (position.quantity * position.avg_entry_price) if position else 0
        add("max_position_notional", held, limits.max_position_notional)
    return out
