"""Resource subscriptions (MCP spec 2025-06-18, "Server Features → Resources → Subscriptions"):
which ``tradingmcp://`` URIs a client may subscribe to, which Channels groups feed them, and which
``notifications/resources/updated`` a channel-layer message becomes.

URIs (the resources themselves are declared in ``mcpapi.resources``; this module needs only the
scheme):

- ``tradingmcp://markets/{symbol}/ticker`` and ``tradingmcp://markets/{symbol}/book``: each
  bookTicker update of the symbol (best bid/ask, ``marketdata.ingester`` group ``market.<SYMBOL>``);
- ``tradingmcp://markets/{symbol}/klines/{interval}``: each kline update of that interval the
  ingester streams (same group);
- ``tradingmcp://accounts/{account_id}``: the account's ``order`` and ``balances`` events;
- ``tradingmcp://accounts/{account_id}/orders/open``: its ``order`` and ``approval`` events;
- ``tradingmcp://accounts/{account_id}/activity``: its ``activity`` events (the audit trail), all
  from the ``account.<id>`` group (``core.events``).

Market topics are coalesced by whoever queues them (latest wins per URI); account topics never
are. ``Topic.priority`` says which.

Access (``authorize``, sync, reads the database): market topics need the ``market:read`` scope, a
known symbol inside the token's symbol restriction and, for klines, a valid interval; account
topics need ``account:read`` and an account the token may read (own account or a grant,
``trading.selectors.accounts_for_user``). A refused subscription raises ``PermissionDenied`` /
``NotFound`` / ``InvalidInput`` whose message an agent can act on. ``still_allowed`` re-checks a
set of URIs after an access change (``risk.signals``).
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from marketdata.ingester import market_group
from risk.models import Scope
from core.errors import InvalidInput, NotFound, PermissionDenied
from core.events import BATCH_TYPE, account_group

SCHEME = "tradingmcp://"
_MARKET = re.compile(r"^tradingmcp://markets/([A-Za-z0-9]{1,20})/(ticker|book|klines/([0-9]{1,2}[smhdwM]))$")
_ACCOUNT = re.compile(r"^tradingmcp://accounts/([0-9]{1,18})(/orders/open|/activity)?$")

# account.event kind → the account topics it updates
_ACCOUNT_KINDS = {"": ("order", "balances"), "/orders/open": ("order", "approval"), "/activity": ("activity",)}


@dataclass(frozen=True)
class Topic:
    """One subscribable resource: its ``uri``; ``kind`` (``ticker``, ``book``, ``klines``,
    ``account``, ``orders``, ``activity``); ``symbol`` (upper case) and ``interval`` for market
    topics, ``account_id`` for account ones; ``group``: the Channels group feeding it;
    ``priority``: never dropped nor coalesced (account topics)."""

    uri: str
    kind: str
    group: str
    symbol: str = ""
    interval: str = ""
    account_id: int = 0

    @property
    def priority(self) -> bool:
        return self.account_id != 0


def parse(uri: str) -> Topic:
    """The ``Topic`` of ``uri``; ``InvalidInput`` for a URI outside the scheme (the message lists it)."""
    uri = str(uri or "").strip()
    m = _MARKET.match(uri)
    if m:
        symbol, what, interval = m.group(1).upper(), m.group(2), m.group(3) or ""
        kind = "klines" if interval else what
        canonical = f"{SCHEME}markets/{symbol}/{what}"
        return Topic(uri=canonical, kind=kind, group=market_group(symbol), symbol=symbol, interval=interval)
    m = _ACCOUNT.match(uri)
    if m:
        account_id, tail = int(m.group(1)), m.group(2) or ""
        kind = {"": "account", "/orders/open": "orders", "/activity": "activity"}[tail]
        return Topic(uri=uri, kind=kind, group=account_group(account_id), account_id=account_id)
    raise InvalidInput(
        f"Cannot subscribe to {uri!r}: subscribable resources are tradingmcp://markets/{{symbol}}/ticker, "
        "tradingmcp://markets/{symbol}/book, tradingmcp://markets/{symbol}/klines/{interval}, "
        "tradingmcp://accounts/{account_id}, tradingmcp://accounts/{account_id}/orders/open and "
        "tradingmcp://accounts/{account_id}/activity.")


def authorize(identity, topic: Topic) -> None:
    """May ``identity`` (``risk.authentication.Identity``) receive ``topic``? Raises
    ``PermissionDenied`` (missing scope, symbol outside the token's restriction), ``NotFound``
    (unknown symbol, an account it may not read) or ``InvalidInput`` (bad interval). Sync: reads
    the database."""
    from marketdata import selectors
    from trading.selectors import accounts_for_user

    if topic.symbol:
        if not identity.has_scope(Scope.MARKET_READ):
            raise PermissionDenied(f"This token lacks the '{Scope.MARKET_READ.value}' scope needed to subscribe to {topic.uri}.")
        if identity.symbols and topic.symbol not in identity.symbols:
            raise PermissionDenied(f"This token may read only {', '.join(identity.symbols)}, not {topic.symbol!r}.")
        selectors.symbol_get(topic.symbol)
        if topic.interval:
            selectors.interval_check(topic.interval)
        return
    if not identity.has_scope(Scope.ACCOUNT_READ):
        raise PermissionDenied(f"This token lacks the '{Scope.ACCOUNT_READ.value}' scope needed to subscribe to {topic.uri}.")
    if not accounts_for_user(identity.user, need="read", token=identity.auth).filter(pk=topic.account_id).exists():
        raise NotFound(f"Account {topic.account_id} not found among the accounts this token may read.")


def still_allowed(identity, uris) -> set[str]:
    """The URIs of ``uris`` ``identity`` may still receive (sync; after an access change)."""
    kept = set()
    for uri in uris:
        try:
            authorize(identity, parse(uri))
        except (PermissionDenied, NotFound, InvalidInput):
            continue
        kept.add(uri)
    return kept


def updates(message: dict, topics: dict[str, Topic]) -> list[tuple[Topic, dict]]:
    """The notifications a channel-layer ``message`` makes for the subscribed ``topics`` (uri →
    Topic): ``[(topic, params)]`` where ``params`` is the ``notifications/resources/updated``
    params: ``{uri, value}`` (the spec's params plus the new value: bookTicker, kline or the
    account event's ``{kind, data}``). ``events.batch`` messages are unpacked."""
    kind = message.get("type")
    if kind == BATCH_TYPE:
        out = []
        for one in message.get("messages") or ():
            out += updates(one, topics)
        return out
    if not topics:
        return []
    if kind == "market.update":
        symbol, stream = str(message.get("symbol", "")).upper(), str(message.get("stream", ""))
        if stream == "bookTicker":
            uris = (f"{SCHEME}markets/{symbol}/ticker", f"{SCHEME}markets/{symbol}/book")
        elif stream.startswith("kline_"):
            uris = (f"{SCHEME}markets/{symbol}/klines/{stream[6:]}",)
        else:
            return []
        data = message.get("data")
        return [(topics[u], {"uri": u, "value": data}) for u in uris if u in topics]
    if kind == "account.event":
        account, event_kind = message.get("account"), message.get("kind")
        out = []
        for tail, kinds in _ACCOUNT_KINDS.items():
            uri = f"{SCHEME}accounts/{account}{tail}"
            if event_kind in kinds and uri in topics:
                out.append((topics[uri], {"uri": uri, "value": {"kind": event_kind, "data": message.get("data")}}))
        return out
    return []
