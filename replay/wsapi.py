"""The replay exchange's WebSocket API (``/ws-api/v3``), Binance "WebSocket API for Binance" (spot,
``web-socket-api.md``) on the replay's accounts (``account.py``).

Requests are JSON text frames ``{"id", "method", "params"?}``; every answer is Binance's envelope
``{"id", "status", "result" | "error": {"code", "msg"}, "rateLimits": [...]}`` (``rateLimits``: the
IP's REQUEST_WEIGHT this minute, shared with REST, plus the account's ORDERS counts on order
placement). Methods:

* ``ping``, ``time``;
* ``session.logon`` (Ed25519 keys only, as on Binance; then ``apiKey``/``signature`` may be left out
  of later requests, ``timestamp`` stays mandatory), ``session.status``, ``session.logout``,
  ``session.subscriptions``;
* ``userDataStream.subscribe`` (logged-on session), ``userDataStream.subscribe.signature``
  (``apiKey``, ``timestamp``, ``signature``, any key type), ``userDataStream.unsubscribe``
  (``subscriptionId`` optional: all). One subscription per account per connection (-2035);
  unknown id -2036. Events arrive as ``{"subscriptionId": n, "event": {...}}``: ``executionReport``,
  ``outboundAccountPosition``, ``balanceUpdate``, ``listStatus``, and ``eventStreamTerminated``
  when a subscription ends by ``userDataStream.unsubscribe`` or ``session.logout``;
* the signed operations of :meth:`~.account.ReplayAccounts.operations`: ``order.place``,
  ``order.test``, ``order.cancel``, ``order.status``, ``openOrders.status``,
  ``openOrders.cancelAll``, ``orderList.place.oco``, ``orderList.cancel``, ``orderList.status``,
  ``openOrderLists.status``, ``allOrders``, ``myTrades``, ``account.status``,
  ``account.commission``, ``account.rateLimits.orders``.

Signatures ("SIGNED request security"): every parameter but ``signature``, sorted by name, as
``name=value`` joined by ``&`` (values as sent; their percent-encoded form is accepted too, as
python-binance signs ``urlencode(params)``); HMAC-SHA256 hex or Ed25519 base64 per the key.
Errors not documented by Binance for the WebSocket API use the REST codes and texts
(``errors.py``/``account.py``); a malformed frame answers ``-1000`` with a description of the
problem (the replay's own text).
"""
from __future__ import annotations

import asyncio
import json
import logging
from urllib.parse import urlencode

from aiohttp import WSMsgType, web

from . import wire
from .account import RAccount, ReplayAccounts
from .errors import BinanceError, mandatory_missing, too_much_weight
from .params import Params, dumps

log = logging.getLogger(__name__)

#: Request weight of each method (Binance "WebSocket API" method pages).
WEIGHTS = {
    "ping": 1, "time": 1, "session.logon": 2, "session.status": 2, "session.logout": 2,
    "session.subscriptions": 2, "userDataStream.subscribe": 2, "userDataStream.subscribe.signature": 2,
    "userDataStream.unsubscribe": 2, "order.place": 1, "order.test": 1, "order.cancel": 1, "order.status": 4,
    "openOrders.cancelAll": 1, "orderList.place.oco": 1, "orderList.cancel": 1, "orderList.status": 4,
    "openOrderLists.status": 6, "allOrders": 20, "myTrades": 20, "account.status": 20, "account.commission": 20,
    "account.rateLimits.orders": 40,
}
SIGN_PARAMS = ("apiKey", "timestamp", "recvWindow", "signature")
NOT_AUTHORIZED = (-1002, "You are not authorized to execute this request.")
SUBSCRIPTION_ACTIVE = (-2035, "User Data Stream subscription already active.")
SUBSCRIPTION_INACTIVE = (-2036, "User Data Stream subscription not active.")


def _text(value) -> str:
    """A JSON parameter value as the text Binance reads (booleans lower case, arrays compact JSON)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, dict)):
        return json.dumps(value, separators=(",", ":"))
    return "" if value is None else str(value)


def signature_payloads(params: dict) -> set[str]:
    """The texts a WebSocket API ``signature`` may sign: the parameters but ``signature``, sorted
    by name, ``k=v&...`` as sent and percent-encoded (Binance "SIGNED request example")."""
    pairs = sorted((k, _text(v)) for k, v in params.items() if k != "signature")
    return {"&".join(f"{k}={v}" for k, v in pairs), urlencode(pairs)}


class Subscription:
    """One user-data subscription of a session: ``deliver(event)`` sends
    ``{"subscriptionId": sid, "event": event}`` on the session's connection."""

    def __init__(self, session: "Session", sid: int, acct: RAccount, *, logon: bool):
        self.session, self.sid, self.acct, self.logon = session, sid, acct, logon

    async def deliver(self, event: dict) -> None:
        await self.session.send({"subscriptionId": self.sid, "event": event})

    async def terminate(self) -> None:
        """End this subscription from the exchange's side: ``eventStreamTerminated``, then no more events."""
        self.session.subs.pop(self.sid, None)
        self.acct.subscribers.discard(self)
        try:
            await self.deliver({"e": "eventStreamTerminated", "E": self.session.clock.now_ms()})
        except (ConnectionError, RuntimeError):
            pass


class Session:
    """One ``/ws-api/v3`` connection: its logged-on key, its subscriptions, a send lock."""

    def __init__(self, ws: web.WebSocketResponse, peer: str, clock, micros: bool = False):
        self.ws, self.peer, self.clock = ws, peer, clock
        self.micros = micros  # timeUnit=MICROSECOND in the URL: time fields in µs
        self.connected_since = clock.wall_ms()
        self.acct: RAccount | None = None
        self.authorized_since: int | None = None
        self.subs: dict[int, Subscription] = {}
        self.next_sid = 0
        self.lock = asyncio.Lock()

    async def send(self, body: dict) -> None:
        if self.micros:
            if "event" in body:
                body = {**body, "event": wire.event_micros(body["event"])}
            elif "result" in body:
                body = {**body, "result": wire.rest_micros(body["result"])}
        async with self.lock:
            await self.ws.send_str(dumps(body))


class WsApi:
    """``/ws-api/v3`` of a replay app (its clock, weights and :class:`ReplayAccounts`)."""

    def __init__(self, app, accounts: ReplayAccounts):
        self.app = app
        self.accounts = accounts
        self.ops = accounts.operations()
        self.sessions: set[Session] = set()

    # -- connection ---------------------------------------------------------------------------------
    async def handler(self, request: web.Request):
        """The WebSocket API endpoint (pings every 20 s, like Binance)."""
        ws = web.WebSocketResponse(heartbeat=self.app.ping_interval, compress=False, max_msg_size=1 << 20)
        if not ws.can_prepare(request).ok:
            return web.Response(status=400, text="expected a WebSocket upgrade")
        await ws.prepare(request)
        session = Session(ws, request.remote or "unknown", self.accounts.clock,
                          wire.is_microsecond(request.query.get("timeUnit")))
        self.sessions.add(session)
        try:
            async for msg in ws:
                if msg.type == WSMsgType.TEXT:
                    await self._on_request(session, msg.data)
                elif msg.type == WSMsgType.ERROR:
                    break
        except (ConnectionError, RuntimeError):
            pass
        finally:
            self.sessions.discard(session)
            for sub in session.subs.values():
                sub.acct.subscribers.discard(sub)
            session.subs.clear()
        return ws

    async def close_all(self, code: int, message: bytes) -> int:
        """Close every WebSocket API connection; return how many were open."""
        sessions = list(self.sessions)
        for s in sessions:
            try:
                await s.ws.close(code=code, message=message)
            except Exception:  # noqa: BLE001 - already broken connections are fine to skip
                pass
        return len(sessions)

    # -- requests -----------------------------------------------------------------------------------
    async def _on_request(self, session: Session, text: str) -> None:
        try:
            req = json.loads(text)
        except ValueError:
            await session.send({"id": None, "status": 400, "error": {"code": -1000, "msg": "Request is not valid JSON."}})
            return
        if not isinstance(req, dict) or not isinstance(req.get("method"), str):
            await session.send({"id": req.get("id") if isinstance(req, dict) else None, "status": 400,
                                "error": {"code": -1000, "msg": "Request must be a JSON object with a 'method' string."}})
            return
        req_id = req.get("id")
        method = req["method"].removeprefix("v3/")
        params = req.get("params") or {}
        rate_limits: list[dict] = []
        try:
            if not isinstance(params, dict):
                raise BinanceError(-1000, "'params' must be a JSON object.")
            rate_limits = self._weigh(session, method)
            result, extra = await self._dispatch(session, method, params)
            rate_limits = extra + rate_limits
            await session.send({"id": req_id, "status": 200, "result": result, "rateLimits": rate_limits})
            await self.accounts.flush()
        except BinanceError as e:
            body = {"id": req_id, "status": e.status, "error": e.body()}
            if "Retry-After" in e.headers:
                body["error"]["data"] = {"retryAfter": self.accounts.clock.wall_ms() + int(e.headers["Retry-After"]) * 1000}
            if rate_limits:
                body["rateLimits"] = rate_limits
            await session.send(body)

    def _weigh(self, session: Session, method: str) -> list[dict]:
        """Add the method's weight to the IP's minute (shared with REST): the REQUEST_WEIGHT
        ``rateLimits`` entry; -1003 (429) above the limit."""
        weight = WEIGHTS.get(method, 1)
        used, retry_after = self.app.weights.add(session.peer, weight)
        if used > self.app.weight_limit:
            raise too_much_weight(self.app.weight_limit, retry_after)
        return [{"rateLimitType": "REQUEST_WEIGHT", "interval": "MINUTE", "intervalNum": 1,
                 "limit": self.app.weight_limit, "count": used}]

    def _authenticate(self, session: Session, params: dict, allowed: tuple[str, ...]) -> tuple[RAccount, Params]:
        """A signed request's account: by its own ``apiKey`` + ``signature``, or the session's
        logged-on key (then only ``timestamp``/``recvWindow`` are checked)."""
        p = Params.from_pairs([(k, _text(v)) for k, v in params.items()], (*allowed, *SIGN_PARAMS))
        if "apiKey" in params or "signature" in params or session.acct is None:
            if not p.has("apiKey"):
                raise mandatory_missing("apiKey")
            acct = self.accounts.authenticate(p.str("apiKey", required=True), p, signature_payloads(params))
        else:
            self.accounts.check_timestamp(p)
            acct = session.acct
        return acct, p

    async def _dispatch(self, session: Session, method: str, params: dict) -> tuple[object, list[dict]]:
        """``(result, extra rateLimits)`` of one request; raises ``BinanceError``."""
        clock = self.accounts.clock
        if method == "ping":
            Params.from_pairs([(k, _text(v)) for k, v in params.items()], ()).done()
            return {}, []
        if method == "time":
            return {"serverTime": clock.wall_ms()}, []
        if method == "session.logon":
            p = Params.from_pairs([(k, _text(v)) for k, v in params.items()], SIGN_PARAMS)
            acct = self.accounts.authenticate(p.str("apiKey", required=True), p, signature_payloads(params))
            p.done()
            if acct.public_key is None:
                raise BinanceError(NOT_AUTHORIZED[0], "Only Ed25519 API keys are supported for session.logon.", 401)
            if session.acct is not acct:
                await self._end_logon_subscription(session)
            session.acct, session.authorized_since = acct, clock.wall_ms()
            return self._status(session), []
        if method == "session.status":
            return self._status(session), []
        if method == "session.logout":
            await self._end_logon_subscription(session)
            session.acct = session.authorized_since = None
            return self._status(session), []
        if method == "session.subscriptions":
            return [{"subscriptionId": sid} for sid in session.subs], []
        if method == "userDataStream.subscribe":
            if session.acct is None:
                raise BinanceError(*NOT_AUTHORIZED, 401)
            return {"subscriptionId": await self._subscribe(session, session.acct, logon=True)}, []
        if method == "userDataStream.subscribe.signature":
            p = Params.from_pairs([(k, _text(v)) for k, v in params.items()], SIGN_PARAMS)
            acct = self.accounts.authenticate(p.str("apiKey", required=True), p, signature_payloads(params))
            p.done()
            return {"subscriptionId": await self._subscribe(session, acct, logon=False)}, []
        if method == "userDataStream.unsubscribe":
            p = Params.from_pairs([(k, _text(v)) for k, v in params.items()], ("subscriptionId",))
            sid = p.int("subscriptionId")
            p.done()
            if sid is None:
                for s in list(session.subs):
                    await self._end(session, s)
            elif sid in session.subs:
                await self._end(session, sid)
            else:
                raise BinanceError(*SUBSCRIPTION_INACTIVE)
            return {}, []
        op = self.ops.get(method)
        if op is None:
            raise BinanceError(-1000, f"Unknown method '{method}'.")
        handler, allowed = op
        acct, p = self._authenticate(session, params, allowed)
        result = await handler(acct, p)
        extra = self.accounts.order_rate_limits(acct) if method in ("order.place", "orderList.place.oco") else []
        return result, extra

    def _status(self, session: Session) -> dict:
        return {"apiKey": session.acct.api_key if session.acct else None, "authorizedSince": session.authorized_since,
                "connectedSince": session.connected_since, "returnRateLimits": True,
                "serverTime": self.accounts.clock.wall_ms(), "userDataStream": bool(session.subs)}

    async def _subscribe(self, session: Session, acct: RAccount, *, logon: bool) -> int:
        if any(sub.acct is acct for sub in session.subs.values()):
            raise BinanceError(*SUBSCRIPTION_ACTIVE)
        self.accounts.advance()  # what happened before the subscription is not sent to it
        await self.accounts.flush()
        sid = session.next_sid
        session.next_sid += 1
        sub = Subscription(session, sid, acct, logon=logon)
        session.subs[sid] = sub
        acct.subscribers.add(sub)
        return sid

    async def _end(self, session: Session, sid: int) -> None:
        """End subscription ``sid`` with ``eventStreamTerminated`` (Binance "Event Stream Terminated")."""
        await session.subs[sid].terminate()

    async def _end_logon_subscription(self, session: Session) -> None:
        for sid, sub in list(session.subs.items()):
            if sub.logon:
                await self._end(session, sid)
