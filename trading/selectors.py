"""Reads of accounts, balances, orders and fills shared by MCP tools, REST views and pages.

Every read takes the acting user and returns only what that user owns: another user's account is
reported as not found (the caller cannot tell it exists).
"""
from __future__ import annotations

from decimal import Decimal

from django.db.models import FilteredRelation, Q

from core.errors import InvalidInput, NotFound, PermissionDenied
from risk.models import AgentToken, RiskLimit
from trading.models import Account, Balance, Fill, Order, OrderList, Position


def dstr(value: Decimal | None) -> str | None:
    """A Decimal as Binance writes numbers: plain notation, never exponent ("0.00000000")."""
    return None if value is None else format(value, "f")


def _may_use(queryset, user_id: int, *, trade: bool):
    """The access rule, applied to a QuerySet of ``Account`` rows: owned by the user, or granted
    to them (``risk.models.AccountGrant``) in a role that allows it (``trader`` to trade, ``trader``
    or ``viewer`` to read). The user's grant is joined (``FilteredRelation``: at most one row per
    account, a grant being unique per account and user), which costs less to build than a
    correlated ``Exists``."""
    roles = ["trader"] if trade else ["trader", "viewer"]
    return queryset.annotate(user_grant=FilteredRelation("grants", condition=Q(grants__user_id=user_id))).filter(
        Q(owner_id=user_id) | Q(user_grant__role__in=roles))


def _token_admits(queryset, token=None, token_accounts=None):
    """The agent token's account restriction, applied to a QuerySet of ``Account`` rows: a token
    linked to no account may use all of its user's; one linked to some, only those.
    ``token_accounts``: the ids it is linked to when the caller knows them
    (``risk.authentication.Identity.accounts``, kept current by its cache invalidation); else
    they are read for ``token``."""
    if token_accounts is None:
        if token is None or not getattr(token, "pk", None):
            return queryset
        token_accounts = list(AgentToken.accounts.through.objects.filter(agenttoken_id=token.pk)
                              .values_list("account_id", flat=True))
    return queryset.filter(pk__in=sorted(token_accounts)) if token_accounts else queryset


def accounts_for_user(user, *, need: str = "read", token=None, token_accounts=None):
    """QuerySet of the accounts ``user`` may use: their own, plus accounts granted to them
    (``risk.models.AccountGrant``: a ``viewer`` grant for ``need="read"``, a ``trader`` grant for
    ``need="trade"``). With an agent ``token`` restricted to some accounts (``token_accounts``:
    their ids, when the caller knows them), only those.

    The rules are ``_may_use`` and ``_token_admits``; ``account_get`` runs the same two."""
    if not getattr(user, "is_authenticated", False):
        return Account.objects.none()
    return _token_admits(_may_use(Account.objects.all(), user.pk, trade=need == "trade"), token, token_accounts)


def account_get(*, user, account_id: int | None = None, need: str = "read", token=None, token_accounts=None) -> Account:
    """The account ``account_id`` the user may use (see ``accounts_for_user``), or their first
    such account when None. ``need``: "read" or "trade" (a viewer grant does not allow trading).
    ``token`` / ``token_accounts``: as in ``accounts_for_user`` (the MCP tools pass the identity's
    account ids, so no statement reads the token's links).

    Raises ``NotFound`` for an id the user may not use (or that does not exist; we do not say
    which) and when the user has no account at all; ``PermissionDenied`` when the user may read but
    not trade it; ``InvalidInput`` for a non-integer id.

    One statement when the account may be used for ``need`` and the token's accounts are known
    (every MCP trading call resolves its account here): ``accounts_for_user``'s QuerySet, so the
    rules are written once; a second one only to tell a viewer grant (``PermissionDenied``) from
    an unknown id.
    """
    if account_id is not None and (isinstance(account_id, bool) or not isinstance(account_id, int)):
        try:
            account_id = int(str(account_id))
        except ValueError:
            raise InvalidInput(f"account_id must be an integer, got {account_id!r}.") from None
    if account_id is not None and not 0 < account_id < 2**63:  # no such primary key (and no SQL overflow)
        raise NotFound(f"Account {account_id} not found among your accounts.")
    if not getattr(user, "is_authenticated", False):
        raise NotFound("You have no trading account yet: create one in the dashboard or ask an admin."
                       if account_id is None else f"Account {account_id} not found among your accounts.")
    usable = accounts_for_user(user, need=need, token=token, token_accounts=token_accounts)
    if account_id is None:
        account = usable.order_by("pk").first()
        if account is None:
            raise NotFound("You have no trading account yet: create one in the dashboard or ask an admin.")
        return account
    account = usable.filter(pk=account_id).first()
    if account is not None:
        return account
    if need == "trade" and accounts_for_user(user, need="read", token=token, token_accounts=token_accounts).filter(
            pk=account_id).exists():
        raise PermissionDenied(f"You may view account {account_id} but not trade on it (viewer grant).")
    raise NotFound(f"Account {account_id} not found among your accounts.")


def order_as_dict(order: Order, *, with_fills: bool = True, fills: list | None = None) -> dict:
    """An order with Binance's field names (numbers as strings, times in ms UTC). ``fills``: the
    order's fills when the caller has them (else they are read)."""
    data = {
        "accountId": order.account_id,
        "orderId": order.pk,
        "clientOrderId": order.client_order_id,
        "symbol": order.symbol,
        "side": order.side,
        "type": order.type,
        "timeInForce": order.time_in_force or None,
        "origQty": dstr(order.quantity),
        "origQuoteOrderQty": dstr(order.quote_order_qty),
        "price": dstr(order.price),
        "stopPrice": dstr(order.stop_price),
        "isWorking": order.is_working,
        "orderListId": order.order_list_id if order.order_list_id is not None else -1,
        "executedQty": dstr(order.executed_qty),
        "cummulativeQuoteQty": dstr(order.cummulative_quote_qty),
        "avgPrice": None if order.avg_price is None else dstr(order.avg_price.quantize(Decimal("0.00000001"))),
        "status": order.status,
        "rejectReason": order.reject_reason or None,
        "channel": order.channel,
        "time": int(order.created_at.timestamp() * 1000),
        "updateTime": int(order.updated_at.timestamp() * 1000),
        "workingTime": int(order.working_time.timestamp() * 1000) if order.working_time else -1,
    }
    if with_fills:
        rows = fills if fills is not None else order.fills.all().order_by("id")
        data["fills"] = [fill_as_dict(f) for f in rows]
    return data


def fill_as_dict(fill: Fill) -> dict:
    """A fill with Binance's names (``GET /api/v3/myTrades``)."""
    return {
        "id": fill.pk,
        "orderId": fill.order_id,
        "symbol": fill.symbol,
        "side": fill.side,
        "price": dstr(fill.price),
        "qty": dstr(fill.qty),
        "quoteQty": dstr(fill.quote_qty),
        "commission": dstr(fill.commission),
        "commissionAsset": fill.commission_asset,
        "isMaker": fill.is_maker,
        "realizedPnl": dstr(fill.realized_pnl),
        "time": int(fill.time.timestamp() * 1000),
    }


def balance_as_dict(b: Balance) -> dict:
    return {"asset": b.asset, "free": dstr(b.free), "locked": dstr(b.locked)}


def balances_list(*, account: Account) -> list[dict]:
    """The account's non-zero balances by asset: ``[{asset, free, locked}]`` (amounts in that
    asset, decimal strings), as in ``account_state``."""
    return [balance_as_dict(b) for b in Balance.objects.filter(account=account).order_by("asset") if b.free or b.locked]


def account_state(*, account: Account) -> dict:
    """Balances, positions and limits of one account (the ``get_account`` tool's answer)."""
    limit = RiskLimit.objects.filter(account=account).first()
    return {
        "accountId": account.pk,
        "name": account.name,
        "venue": account.venue,
        "quoteAsset": account.quote_asset,
        "makerFeeRate": dstr(account.maker_fee_rate),
        "takerFeeRate": dstr(account.taker_fee_rate),
        "balances": balances_list(account=account),
        "positions": [
            {"symbol": p.symbol, "quantity": dstr(p.quantity), "avgEntryPrice": dstr(p.avg_entry_price), "realizedPnl": dstr(p.realized_pnl)}
            for p in Position.objects.filter(account=account).order_by("symbol")
        ],
        "riskLimits": {
            "maxOrderNotional": None if not limit or limit.max_order_notional is None else dstr(limit.max_order_notional),
            "maxDailyLoss": None if not limit or limit.max_daily_loss is None else dstr(limit.max_daily_loss),
        },
    }


def _only(qs, symbols):
    """``qs`` narrowed to ``symbols`` (a token's symbol restriction, ``risk.access.symbols_default``;
    None: every symbol)."""
    return qs if symbols is None else qs.filter(symbol__in=[str(s).upper() for s in symbols])


def orders_list(*, account: Account, symbol: str | None = None, limit: int = 50, symbols=None) -> list[dict]:
    """The account's most recent orders, newest first (``limit`` 1..500); ``symbols``: only these
    (None: all)."""
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= 500:
        raise InvalidInput(f"limit must be an integer from 1 to 500, got {limit!r}.")
    qs = _only(Order.objects.filter(account=account).prefetch_related("fills"), symbols)
    if symbol:
        qs = qs.filter(symbol=symbol.upper())
    return [order_as_dict(o) for o in qs.order_by("-created_at", "-id")[:limit]]


OPEN_STATUSES = ("NEW", "PARTIALLY_FILLED")


def order_list_as_dict(olist: OrderList) -> dict:
    """An OCO order list with Binance's names (``POST /api/v3/order/oco`` answer) and its legs."""
    legs = list(Order.objects.filter(order_list_id=olist.pk).order_by("id"))
    return {
        "orderListId": olist.pk,
        "contingencyType": olist.contingency_type,
        "listStatusType": olist.list_status_type,
        "listOrderStatus": olist.list_order_status,
        "listClientOrderId": olist.list_client_order_id,
        "symbol": olist.symbol,
        "orders": [order_as_dict(o) for o in legs],
    }


def order_get(*, account: Account, order_id=None, client_order_id: str | None = None, symbol: str | None = None) -> dict:
    """One order of the account by ``order_id`` or ``client_order_id`` (Binance "Query order").
    Raises ``NotFound`` (-2013 "Order does not exist.")."""
    if order_id is None and not client_order_id:
        raise InvalidInput("Send order_id or client_order_id.", code=-1102)
    order = orders_matching(account=account, symbol=symbol, order_id=order_id,
                            client_order_id=client_order_id).prefetch_related("fills").first()
    if order is None:
        raise NotFound("Order does not exist.")
    return order_as_dict(order)


def orders_matching(*, account: Account, symbol: str | None, order_id, client_order_id: str | None):
    """The account's orders (a queryset) with ``order_id`` and/or ``client_order_id``, of ``symbol``
    when given (case-insensitive). Raises ``InvalidInput`` for a non-integer ``order_id``."""
    qs = Order.objects.filter(account=account)
    if symbol:
        qs = qs.filter(symbol=str(symbol).strip().upper())
    if order_id is not None:
        try:
            qs = qs.filter(pk=int(str(order_id)))
        except ValueError:
            raise InvalidInput(f"order_id must be an integer, got {order_id!r}.") from None
    if client_order_id:
        qs = qs.filter(client_order_id=client_order_id)
    return qs


def open_orders_list(*, account: Account, symbol: str | None = None, symbols=None) -> list[dict]:
    """The account's open orders (NEW, PARTIALLY_FILLED), oldest first (Binance "Current open
    orders"); ``symbols``: only these (None: all)."""
    qs = _only(Order.objects.filter(account=account, status__in=OPEN_STATUSES).prefetch_related("fills"), symbols)
    if symbol:
        qs = qs.filter(symbol=str(symbol).strip().upper())
    return [order_as_dict(o) for o in qs.order_by("created_at", "id")]


def trades_list(*, account: Account, symbol: str | None = None, limit: int = 100, from_id: int | None = None,
                symbols=None) -> list[dict]:
    """The account's fills, newest first (Binance "Account trade list", ``myTrades``); ``limit``
    1..1000; ``from_id``: only fills with id >= it, oldest first; ``symbols``: only these (None: all)."""
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= 1000:
        raise InvalidInput(f"limit must be an integer from 1 to 1000, got {limit!r}.")
    qs = _only(Fill.objects.filter(account=account), symbols)
    if symbol:
        qs = qs.filter(symbol=str(symbol).strip().upper())
    if from_id is not None:
        return [fill_as_dict(f) for f in qs.filter(pk__gte=from_id).order_by("id")[:limit]]
    return [fill_as_dict(f) for f in qs.order_by("-time", "-id")[:limit]]
