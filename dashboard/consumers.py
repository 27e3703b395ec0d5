"""The dashboard's WebSocket ``/ws/dashboard/``: live quotes, candles and the user's own events.

A connection must carry an authenticated session (accepted, then closed with code 4401, so the page
can tell "logged out" from a network error). It joins only groups the user may see:

- ``market.<SYMBOL>`` of the watched symbols, and of up to ``MAX_SYMBOLS`` more symbols the page
  asks for (``{"type": "subscribe", "symbols": ["BTCUSDT"]}``; each checked against exchangeInfo);
- ``account.<id>`` of each account the user may read (own or granted,
  ``trading.selectors.accounts_for_user``), and ``user.<id>`` (the user's account-less activity).

Every stream is coalesced per client (``Coalescer``): at most one frame per ``COALESCE_S`` (0.1 s,
so ≤ 10/s) per stream — a market stream sends its latest value, an account stream sends every event
of the window in one frame (orders deduplicated by ``orderId``, latest state wins) — so a fast
market or a busy agent cannot flood a tab, and nothing but superseded states is dropped.

Frames sent: ``{"type": "hello", "user", "accounts", "symbols"}``, ``{"type": "market", "symbol",
"stream", "data"}``, ``{"type": "account", "kind": "order"|"balances"|"activity", "account",
"data": <last item>, "items": [...]}`` (kinds also ``approval``: confirm-mode orders held, approved or
rejected, ``trading.approvals``) and ``{"type": "user", "kind": "activity", "data", "items"}``.

Idle sockets: channels_redis 4.3 waits on an empty channel with a 5 s ``BZPOPMIN`` and redis-py 8's
default ``socket_timeout`` is also 5 s, so ``layer.receive()`` raises ``redis.exceptions.TimeoutError``
when nothing arrives for ~5 s (which closed every idle dashboard socket). The settings give the
layer's connections a longer socket timeout (with it the pop simply returns empty and is repeated):
keep ``CHANNEL_LAYERS``' ``socket_timeout`` above 5 s.
"""
from __future__ import annotations

import asyncio
import logging
import time
from typing import Awaitable, Callable

import orjson
from channels.consumer import get_handler_name
from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer

from core.events import account_group, user_group
from marketdata.ingester import market_group
from marketdata.selectors import symbol_get, watched_symbols
from risk.signals import access_group
from trading.selectors import accounts_for_user

log = logging.getLogger(__name__)

COALESCE_S = 0.1
MAX_SYMBOLS = 10
ACTIVITY_KEEP = 50


def merge_latest(pending, message):
    """Coalescing rule of a state stream (quotes, candles, balances): the newest value wins."""
    return message


def merge_balances(pending, message):
    """Coalescing rule of balances: the newest row of each asset wins. A ``partial`` message (only
    the assets an order changed, see ``trading.services._publish``) is merged into the pending one;
    the result stays partial only if both were."""
    if not pending:
        return message
    old, new = pending["data"], message["data"]
    rows = {b["asset"]: b for b in old["balances"]} if new.get("partial") else {}
    rows.update({b["asset"]: b for b in new["balances"]})
    data = {"balances": sorted(rows.values(), key=lambda b: b["asset"])}
    if new.get("partial") and old.get("partial"):
        data["partial"] = True
    return {**message, "data": data, "items": [data]}


def merge_items(pending, message):
    """Coalescing rule of an event stream: keep every item of the window (orders deduplicated by
    ``orderId``, the newest state kept); the frame's ``data`` is the newest item."""
    items = list(pending["items"]) if pending else []
    for item in message["items"]:
        oid = item.get("orderId") if message.get("kind") == "order" else None
        if oid is not None:
            items = [x for x in items if x.get("orderId") != oid]
        items.append(item)
    return {**message, "items": items[-ACTIVITY_KEEP:], "data": items[-1]}


class Coalescer:
    """Rate-limits sends per stream key to one per ``interval`` seconds.

    ``offer(key, message, merge)``: send at once when the key's previous send was at least
    ``interval`` ago (by ``clock``, monotonic seconds), else fold the message into the key's pending
    one with ``merge(pending_or_None, message)`` and send that when the interval has passed (a timer
    on the running loop). ``close()`` cancels pending timers. ``send`` is an async callable taking
    the message.
    """

    def __init__(self, send: Callable[[dict], Awaitable[None]], interval: float = COALESCE_S,
                 clock: Callable[[], float] = time.monotonic):
        self.send = send
        self.interval = interval
        self.clock = clock
        self._last: dict = {}
        self._pending: dict = {}
        self._timers: dict = {}
        self.sent = 0
        self.coalesced = 0

    async def offer(self, key, message: dict, merge=merge_latest) -> None:
        now = self.clock()
        last = self._last.get(key)
        if key not in self._pending and (last is None or now - last >= self.interval):
            self._last[key] = now
            self.sent += 1
            await self.send(merge(None, message))
            return
        self.coalesced += 1
        self._pending[key] = merge(self._pending.get(key), message)
        if key not in self._timers:
            delay = max(0.0, (last if last is not None else now) + self.interval - now)
            loop = asyncio.get_running_loop()
            self._timers[key] = loop.call_later(delay, lambda: loop.create_task(self._flush(key)))

    async def _flush(self, key) -> None:
        self._timers.pop(key, None)
        message = self._pending.pop(key, None)
        if message is None:
            return
        self._last[key] = self.clock()
        self.sent += 1
        await self.send(message)

    def close(self) -> None:
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()
        self._pending.clear()


def _access_now(user_id: int, session) -> tuple[bool, set[int]]:
    """(Is the user still active and this socket's session still theirs?, the account ids they
    may read now). A session that was flushed (logout) no longer exists in the session store."""
    from django.contrib.auth import SESSION_KEY, get_user_model

    user = get_user_model().objects.filter(pk=user_id, is_active=True).first()
    key = getattr(session, "session_key", None)
    if user is None or not key or not session.exists(key):
        return False, set()
    if str(session.__class__(key).get(SESSION_KEY)) != str(user_id):
        return False, set()
    return True, set(accounts_for_user(user).values_list("id", flat=True))


def _symbol_ok(name: str) -> str:
    return symbol_get(name).symbol


class DashboardConsumer(AsyncJsonWebsocketConsumer):
    """See the module docstring."""

    @classmethod
    async def decode_json(cls, text_data):
        """A client frame as JSON (orjson: nesting deeper than 1024 levels is refused, where the
        standard library's parser raised ``RecursionError`` and dropped the socket); a frame that
        is not JSON becomes ``{"type": "invalid"}``, which ``receive_json`` ignores."""
        try:
            return orjson.loads(text_data)
        except orjson.JSONDecodeError:
            return {"type": "invalid"}

    async def connect(self):
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            await self.accept()
            await self.close(code=4401)
            return
        self.user_id = user.pk
        self.account_ids = await database_sync_to_async(lambda: list(accounts_for_user(user).values_list("id", flat=True)))()
        self.symbols = list(watched_symbols())
        self.coalescer = Coalescer(self.send_json)
        self.groups_joined = ([market_group(s) for s in self.symbols] + [account_group(a) for a in self.account_ids]
                              + [user_group(user.pk), access_group(user.pk)])
        for group in self.groups_joined:
            await self.channel_layer.group_add(group, self.channel_name)
        await self.accept()
        await self.send_json({"type": "hello", "user": user.get_username(), "accounts": self.account_ids, "symbols": self.symbols})

    async def disconnect(self, code):
        if getattr(self, "coalescer", None):
            self.coalescer.close()
        groups = getattr(self, "groups_joined", [])
        results = await asyncio.gather(*(self.channel_layer.group_discard(g, self.channel_name) for g in groups),
                                       return_exceptions=True)
        failed = [g for g, r in zip(groups, results) if isinstance(r, Exception)]
        if failed:  # e.g. Redis busy when hundreds of tabs close at once; memberships expire by themselves
            log.info("dashboard socket: leaving %s failed (%s); left to the layer's group expiry", failed, results[groups.index(failed[0])])

    async def receive_json(self, content, **kwargs):
        if not isinstance(content, dict):
            return
        kind = content.get("type")
        if kind == "ping":
            await self.send_json({"type": "pong"})
        elif kind == "subscribe" and hasattr(self, "symbols"):
            added, errors = [], []
            for name in (content.get("symbols") or [])[:MAX_SYMBOLS]:
                if len(self.symbols) >= len(watched_symbols()) + MAX_SYMBOLS:
                    errors.append(f"at most {MAX_SYMBOLS} extra symbols per connection")
                    break
                try:
                    sym = await database_sync_to_async(_symbol_ok)(str(name))
                except Exception as exc:
                    errors.append(str(exc))
                    continue
                if sym not in self.symbols:
                    self.symbols.append(sym)
                    self.groups_joined.append(market_group(sym))
                    await self.channel_layer.group_add(market_group(sym), self.channel_name)
                added.append(sym)
            await self.send_json({"type": "subscribed", "symbols": added, "errors": errors})

    async def market_update(self, event):
        message = {"type": "market", "symbol": event["symbol"], "stream": event["stream"], "data": event["data"]}
        await self.coalescer.offer(("market", event["symbol"], event["stream"]), message)

    async def events_batch(self, event):
        """Several messages to one group in one channel-layer message (``core.events``), each
        handled as if it had come alone (``dispatch`` already ran its connection hygiene once)."""
        for message in event["messages"]:
            handler = getattr(self, get_handler_name(message), None)
            if handler is not None and handler != self.events_batch:
                await handler(message)

    async def account_event(self, event):
        if event["account"] not in self.account_ids:
            return
        kind = event["kind"]
        message = {"type": "account", "kind": kind, "account": event["account"], "data": event["data"], "items": [event["data"]]}
        merge = merge_balances if kind == "balances" else merge_items
        await self.coalescer.offer(("account", event["account"], kind), message, merge)

    async def access_changed(self, event):
        """The user's access changed (``risk.signals``: logout, deactivation, a grant deleted or
        narrowed): close (4401) when this socket's session is gone or its user inactive, else stop
        pushing accounts the user may no longer read."""
        if event.get("user") != self.user_id:
            return
        still_in, allowed = await database_sync_to_async(_access_now)(self.user_id, self.scope.get("session"))
        if not still_in:
            await self.close(code=4401)
            return
        for account_id in [a for a in self.account_ids if a not in allowed]:
            self.account_ids.remove(account_id)
            group = account_group(account_id)
            if group in self.groups_joined:
                self.groups_joined.remove(group)
                await self.channel_layer.group_discard(group, self.channel_name)

    async def user_event(self, event):
        if event.get("user") != self.user_id:
            return
        message = {"type": "user", "kind": event["kind"], "data": event["data"], "items": [event["data"]]}
        await self.coalescer.offer(("user", event["kind"]), message, merge_items)
