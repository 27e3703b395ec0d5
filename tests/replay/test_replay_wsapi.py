"""The replay's WebSocket API (``/ws-api/v3``) and the 2026 account surface, checked against
Binance's documented shapes (web-socket-api.md, user-data-stream.md, rest-api.md): the envelope,
session.logon with Ed25519 (refused for HMAC keys), user-data subscriptions and their events,
signature checks, error codes, listenKey endpoints gone (410), commission rates, order counts."""
from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import time
from decimal import Decimal

import aiohttp
import pytest
from binance import BinanceSocketManager, Client
from binance.exceptions import BinanceAPIException
from cryptography.hazmat.primitives.serialization import load_pem_private_key

from replay import testing as rt
from replay.server import ReplayServer

HMAC_KEY, HMAC_SECRET = "h" * 64, "x" * 64
ED_KEY = "e" * 64
ED_PRIVATE, ED_PUBLIC = rt.ed25519_pair()


@pytest.fixture(scope="module")
def srv():
    with ReplayServer(port=0, speed=1, accounts={HMAC_KEY: HMAC_SECRET, ED_KEY: ED_PUBLIC},
                      starting_balances={"USDT": "50000", "BTC": "1"}) as s:
        yield s


def _payload(params: dict) -> str:
    return "&".join(f"{k}={v}" for k, v in sorted(params.items()))


def signed_hmac(params: dict, key=HMAC_KEY, secret=HMAC_SECRET) -> dict:
    p = {**params, "apiKey": key, "timestamp": int(time.time() * 1000)}
    return {**p, "signature": hmac.new(secret.encode(), _payload(p).encode(), hashlib.sha256).hexdigest()}


def signed_ed(params: dict, key=ED_KEY, private=ED_PRIVATE) -> dict:
    p = {**params, "apiKey": key, "timestamp": int(time.time() * 1000)}
    sk = load_pem_private_key(private.encode(), None)
    return {**p, "signature": base64.b64encode(sk.sign(_payload(p).encode())).decode()}


class Conn:
    """A raw WebSocket API connection: ``call`` returns the response envelope; events queue up."""

    def __init__(self, ws):
        self.ws, self.events, self._n = ws, [], 0

    async def call(self, method: str, params: dict | None = None) -> dict:
        self._n += 1
        req_id = f"r{self._n}"
        await self.ws.send_str(json.dumps({"id": req_id, "method": method, **({"params": params} if params is not None else {})}))
        while True:
            msg = json.loads((await self.ws.receive(timeout=5)).data)
            if "event" in msg:
                self.events.append(msg)
            elif msg.get("id") == req_id:
                return msg

    async def event(self, kind: str) -> dict:
        while True:
            for i, ev in enumerate(self.events):
                if ev["event"]["e"] == kind:
                    return self.events.pop(i)
            msg = json.loads((await self.ws.receive(timeout=5)).data)
            assert "event" in msg, msg
            self.events.append(msg)


def with_conn(srv, fn):
    async def go():
        async with aiohttp.ClientSession() as s, s.ws_connect(srv.ws_api_url) as ws:
            return await fn(Conn(ws))

    return rt.run(go(), 30)


def test_envelope_and_errors_as_documented(srv):
    async def go(c: Conn):
        ok = await c.call("time")
        assert set(ok) == {"id", "status", "result", "rateLimits"} and ok["status"] == 200
        assert abs(ok["result"]["serverTime"] - time.time() * 1000) < 5000
        rl = ok["rateLimits"][0]
        assert (rl["rateLimitType"], rl["interval"], rl["intervalNum"]) == ("REQUEST_WEIGHT", "MINUTE", 1) and rl["count"] >= 1
        bad_sig = signed_hmac({"symbol": "BTCUSDT"})
        bad_sig["signature"] = "0" * 64
        err = await c.call("account.commission", bad_sig)
        assert (err["status"], err["error"]) == (400, {"code": -1022, "msg": "Signature for this request is not valid."})
        unknown = await c.call("account.status", signed_hmac({}, key="u" * 64))
        assert unknown["error"]["code"] == -2015 and unknown["status"] == 401
        stale = signed_hmac({})
        stale["timestamp"] -= 120_000
        assert (await c.call("account.status", stale))["error"]["code"] in (-1021, -1022)
        assert (await c.call("account.status", {}))["error"]["code"] == -1102  # not logged on, no apiKey
        no_such = await c.call("order.status", signed_hmac({"symbol": "BTCUSDT", "orderId": 1}))
        assert no_such["error"] == {"code": -2013, "msg": "Order does not exist."}
        # session.logon is for Ed25519 keys only
        assert (await c.call("session.logon", signed_hmac({})))["status"] != 200
        commission = await c.call("account.commission", signed_hmac({"symbol": "BTCUSDT"}))
        assert commission["result"]["standardCommission"] == {"maker": "0.00100000", "taker": "0.00100000",
                                                              "buyer": "0.00000000", "seller": "0.00000000"}
        assert set(commission["result"]) == {"symbol", "standardCommission", "specialCommission", "taxCommission", "discount"}

    with_conn(srv, go)


def test_ed25519_logon_subscribe_order_events_and_termination(srv):
    async def go(c: Conn):
        logon = await c.call("session.logon", signed_ed({}))
        assert logon["status"] == 200, logon
        assert logon["result"]["apiKey"] == ED_KEY and logon["result"]["userDataStream"] is False
        sub = await c.call("userDataStream.subscribe")
        sid = sub["result"]["subscriptionId"]
        assert (await c.call("userDataStream.subscribe"))["error"]["code"] == -2035
        assert (await c.call("session.status"))["result"]["userDataStream"] is True
        # after logon, apiKey and signature may be left out; timestamp stays
        placed = await c.call("order.place", {"symbol": "BTCUSDT", "side": "BUY", "type": "MARKET",
                                              "quoteOrderQty": "100", "timestamp": int(time.time() * 1000)})
        assert placed["status"] == 200 and placed["result"]["status"] == "FILLED"
        kinds = {x["rateLimitType"] + x["interval"] for x in placed["rateLimits"]}
        assert {"ORDERSSECOND", "ORDERSDAY", "REQUEST_WEIGHTMINUTE"} <= kinds
        fill = await c.event("executionReport")
        while fill["event"]["x"] != "TRADE":
            fill = await c.event("executionReport")
        assert fill["subscriptionId"] == sid and fill["event"]["i"] == placed["result"]["orderId"]
        pos = await c.event("outboundAccountPosition")
        assert {b["a"] for b in pos["event"]["B"]} == {"BTC", "USDT"}
        # a deposit: balanceUpdate then outboundAccountPosition
        status, _, _ = rt.http("POST", f"{srv.base_url}/_replay/accounts/{ED_KEY}/balance", {"asset": "ETH", "delta": "2"})
        assert status == 200
        bu = await c.event("balanceUpdate")
        assert (bu["event"]["a"], bu["event"]["d"]) == ("ETH", "2.00000000")
        assert (await c.event("outboundAccountPosition"))["event"]["B"] == [{"a": "ETH", "f": "2.00000000", "l": "0.00000000"}]
        assert (await c.call("userDataStream.unsubscribe", {"subscriptionId": sid + 5}))["error"]["code"] == -2036
        assert (await c.call("userDataStream.unsubscribe", {"subscriptionId": sid}))["result"] == {}
        ended = await c.event("eventStreamTerminated")
        assert ended["subscriptionId"] == sid and set(ended["event"]) == {"e", "E"}
        out = await c.call("session.logout")
        assert out["result"]["apiKey"] is None
        assert (await c.call("order.status", {"symbol": "BTCUSDT", "orderId": placed["result"]["orderId"],
                                              "timestamp": int(time.time() * 1000)}))["error"]["code"] == -1102

    with_conn(srv, go)


def test_python_binance_user_socket_receives_fills_signed_with_ed25519(srv):
    """python-binance's own ``user_socket()`` (``userDataStream.subscribe.signature``) and its
    Ed25519 signing of REST and WebSocket API requests."""
    async def go():
        c = rt.async_client(srv.api_url, ws_api_url=srv.ws_api_url, api_key=ED_KEY, private_key=ED_PRIVATE)
        try:
            async with BinanceSocketManager(c).user_socket() as us:
                rest = await c.create_order(symbol="BTCUSDT", side="SELL", type="MARKET", quantity="0.002")
                ws = await c.ws_create_order(symbol="BTCUSDT", side="SELL", type="MARKET", quantity="0.002")
                got = []
                while len([e for e in got if e.get("x") == "TRADE"]) < 2:
                    got.append(await asyncio.wait_for(us.recv(), 5))
            rates = await c.ws_get_commission_rates(symbol="BTCUSDT")
        finally:
            await c.close_connection()
        return rest, ws, got, rates

    rest, ws, got, rates = rt.run(go())
    trades = [e for e in got if e.get("x") == "TRADE"]
    assert [e["i"] for e in trades] == [rest["orderId"], ws["orderId"]]
    assert all(e["X"] == "FILLED" and Decimal(e["l"]) == Decimal("0.002") for e in trades)
    assert rates["standardCommission"]["taker"] == "0.00100000"


def test_listen_key_endpoints_are_gone_and_order_counts_are_reported(srv):
    client = Client(HMAC_KEY, HMAC_SECRET, ping=False)
    client.API_URL = srv.api_url
    with pytest.raises(BinanceAPIException) as err:
        client.stream_get_listen_key()
    assert err.value.status_code == 410
    before = {(x["interval"], x["intervalNum"]): x["count"] for x in client.get_current_order_count()}
    assert set(before) == {("SECOND", 10), ("DAY", 1)}
    client.create_order(symbol="BTCUSDT", side="BUY", type="MARKET", quoteOrderQty="20")
    headers = client.response.headers
    assert int(headers["X-MBX-ORDER-COUNT-1D"]) == before[("DAY", 1)] + 1
    assert int(headers["X-MBX-ORDER-COUNT-10S"]) >= 1
    rates = client.create_test_order(symbol="BTCUSDT", side="BUY", type="MARKET", quoteOrderQty="20",
                                     computeCommissionRates="true")
    assert rates["standardCommissionForOrder"] == {"maker": "0.00100000", "taker": "0.00100000"}
    assert client.create_test_order(symbol="BTCUSDT", side="BUY", type="MARKET", quoteOrderQty="20") == {}
    status, _, body = rt.http("GET", srv.api_url + "/v3/account/commission?symbol=BTCUSDT")
    assert (status, body["code"]) == (401, -2014)


def test_order_rate_limit_answers_429_minus_1015():
    with ReplayServer(port=0, speed=1, accounts={HMAC_KEY: HMAC_SECRET}) as s:
        client = Client(HMAC_KEY, HMAC_SECRET, ping=False)
        client.API_URL = s.api_url
        codes = []
        for _ in range(200):  # 50 per fixed 10 s window; a window boundary may reset the count once
            try:
                client.create_order(symbol="BTCUSDT", side="BUY", type="MARKET", quoteOrderQty="11")
            except BinanceAPIException as e:
                codes.append((e.status_code, e.code, e.message))
                break
        assert codes and codes[0][:2] == (429, -1015)
        assert int(client.response.headers["Retry-After"]) <= 10
        assert codes[0][2].startswith("Too many new orders; current limit is 50 orders per 10 SECOND")
