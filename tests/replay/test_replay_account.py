"""The replay exchange's signed endpoints against a real server, through python-binance and raw HTTP:
request security (-2014/-2015/-1102/-1131/-1021/-1022, signature over query + body), order
endpoints, duplicate client ids, user data streams, and matching checked against the model."""
from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import time
import urllib.error
import urllib.request
from decimal import ROUND_HALF_UP, Decimal

import pytest
from binance import BinanceSocketManager, Client
from binance.exceptions import BinanceAPIException

from replay.account import DEMO_API_KEY, DEMO_API_SECRET
from replay.server import ReplayServer
from replay import testing as rt
from replay.testing import http

E8 = Decimal("0.00000001")
KEY, SECRET = "k" * 64, "s" * 64


def q8(d):
    return d.quantize(E8, rounding=ROUND_HALF_UP)


@pytest.fixture(scope="module")
def srv():
    start = int(time.time() // 60) * 60_000  # a whole minute: the same prints on every run
    with ReplayServer(port=0, paused=True, start_wall_ms=start, accounts={KEY: SECRET},
                      starting_balances={"USDT": "50000", "BTC": "2"}) as s:
        yield s


_n = [0]


@pytest.fixture
def client(srv):
    """A python-binance client on a fresh key (50,000 USDT, 2 BTC)."""
    _n[0] += 1
    key, secret = f"key{_n[0]:061d}", f"secret{_n[0]:058d}"
    srv.add_key(key, secret, {"USDT": "50000", "BTC": "2"})
    c = Client(key, secret, ping=False)
    c.API_URL = srv.api_url
    c.key = key
    return c


def api_error(fn, **kw) -> BinanceAPIException:
    with pytest.raises(BinanceAPIException) as err:
        fn(**kw)
    return err.value


def signed(secret: str, query: str, body: str = "") -> str:
    return hmac.new(secret.encode(), (query + body).encode(), hashlib.sha256).hexdigest()


def raw(srv, method: str, path: str, query: str = "", body: str = "", key: str | None = DEMO_API_KEY):
    req = urllib.request.Request(f"{srv.api_url}/v3/{path}" + (f"?{query}" if query else ""), data=body.encode() or None,
                                 method=method, headers={"Content-Type": "application/x-www-form-urlencoded",
                                                         **({"X-MBX-APIKEY": key} if key else {})})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def test_request_security_like_binance(srv):
    ts = int(time.time() * 1000)
    q = f"timestamp={ts}&recvWindow=5000"
    ok = f"{q}&signature={signed(DEMO_API_SECRET, q)}"
    assert raw(srv, "GET", "account", ok)[0] == 200
    assert raw(srv, "GET", "account", ok, key=None) == (401, {"code": -2014, "msg": "API-key format invalid."})
    assert raw(srv, "GET", "account", ok, key="A" * 64) == (401, {"code": -2015, "msg": "Invalid API-key, IP, or permissions for action."})
    assert raw(srv, "GET", "account", f"{q}&signature={'0' * 64}") == (400, {"code": -1022, "msg": "Signature for this request is not valid."})
    assert raw(srv, "GET", "account", q)[1]["code"] == -1102
    old = f"timestamp={ts - 6000}&recvWindow=5000"
    assert raw(srv, "GET", "account", f"{old}&signature={signed(DEMO_API_SECRET, old)}") == (
        400, {"code": -1021, "msg": "Timestamp for this request is outside of the recvWindow."})
    ahead = f"timestamp={ts + 5000}"
    assert raw(srv, "GET", "account", f"{ahead}&signature={signed(DEMO_API_SECRET, ahead)}")[1] == {
        "code": -1021, "msg": "Timestamp for this request was 1000ms ahead of the server's time."}
    wide = f"timestamp={ts}&recvWindow=70000"
    assert raw(srv, "GET", "account", f"{wide}&signature={signed(DEMO_API_SECRET, wide)}")[1]["code"] == -1131
    # totalParams = query string + request body (Binance's mixed example), signature in the body.
    query = "symbol=BTCUSDT&side=BUY&type=LIMIT&timeInForce=GTC"
    body = f"quantity=0.002&price=6000&recvWindow=5000&timestamp={int(time.time() * 1000)}"
    status, order = raw(srv, "POST", "order/test", query, f"{body}&signature={signed(DEMO_API_SECRET, query, body)}")
    assert (status, order) == (200, {})


def test_market_and_limit_orders_match_the_model_book(srv, client):
    now = srv.clock.now_ms()
    d = srv.model.depth("BTCUSDT", now, 1000)
    qty = d.asks[0][1].quantize(Decimal("0.00001"), rounding="ROUND_UP") + Decimal("0.01")
    expected, left = [], qty
    for p, size in d.asks:
        take = min(size, left)
        expected.append((p, take))
        left -= take
        if not left:
            break
    r = client.create_order(symbol="BTCUSDT", side="BUY", type="MARKET", quantity=f"{qty:f}", newClientOrderId="m1")
    assert r["status"] == "FILLED"
    assert [(Decimal(f["price"]), Decimal(f["qty"])) for f in r["fills"]] == expected
    assert [Decimal(f["commission"]) for f in r["fills"]] == [q8(q * Decimal("0.001")) for _, q in expected]
    cost = sum(q8(p * q) for p, q in expected)
    assert Decimal(r["cummulativeQuoteQty"]) == cost
    bal = {b["asset"]: b for b in client.get_account()["balances"]}
    assert Decimal(bal["USDT"]["free"]) == Decimal("50000") - cost
    assert Decimal(bal["BTC"]["free"]) == Decimal("2") + qty - sum(Decimal(f["commission"]) for f in r["fills"])

    trades = client.get_my_trades(symbol="BTCUSDT")
    assert [t["id"] for t in trades] == [f["tradeId"] for f in r["fills"]] and len(trades) >= 2
    assert client.get_my_trades(symbol="BTCUSDT", fromId=trades[1]["id"]) == trades[1:]

    # newClientOrderId: unique among orders not FILLED.
    rest = client.create_order(symbol="BTCUSDT", side="BUY", type="LIMIT", timeInForce="GTC", quantity="0.002",
                               price="6000", newClientOrderId="dup")
    e = api_error(client.create_order, symbol="BTCUSDT", side="BUY", type="LIMIT", timeInForce="GTC", quantity="0.002",
                  price="6000", newClientOrderId="dup")
    assert (e.code, e.message) == (-2010, "Duplicate order sent.")
    assert client.create_order(symbol="BTCUSDT", side="SELL", type="MARKET", quantity="0.002", newClientOrderId="m1")["status"] == "FILLED"
    assert Decimal(client.get_account()["balances"][1]["locked"]) == Decimal("12.00000000")  # 6000 x 0.002 USDT
    assert client.get_order(symbol="BTCUSDT", origClientOrderId="dup")["orderId"] == rest["orderId"]
    assert api_error(client.get_order, symbol="BTCUSDT", orderId=1).code == -2013
    canceled = client.cancel_all_open_orders(symbol="BTCUSDT")
    assert [(c["orderId"], c["status"], c["origClientOrderId"]) for c in canceled] == [(rest["orderId"], "CANCELED", "dup")]
    assert api_error(client.cancel_order, symbol="BTCUSDT", orderId=rest["orderId"]).code == -2011
    assert api_error(client.cancel_all_open_orders, symbol="BTCUSDT").code == -2011
    assert [o["status"] for o in client.get_all_orders(symbol="BTCUSDT")] == ["FILLED", "CANCELED", "FILLED"]
    assert client.get_open_orders() == []
    assert api_error(client.create_order, symbol="BTCUSDT", side="BUY", type="LIMIT_MAKER", quantity="0.002",
                     price=f"{d.asks[0][0]:f}").message == "Order would immediately match and take."
    assert api_error(client.create_order, symbol="BTCUSDT", side="BUY", type="LIMIT", quantity="0.002", price="6000").code == -1102
    assert api_error(client.create_order, symbol="BTCUSDT", side="BUY", type="MARKET", quantity="0.0000001").message == "Filter failure: LOT_SIZE"
    assert api_error(client.create_order, symbol="BTCUSDT", side="BUY", type="MARKET", quantity="100").message == \
        "Account has insufficient balance for requested action."


def test_resting_orders_share_a_print_in_price_time_priority_and_the_ws_api_user_stream_reports_it(srv, client):
    m = srv.model
    now = srv.clock.now_ms()
    i = m.trade_index("BTCUSDT", now)
    # the limit price: at or below the bid (it rests) and every later print until the first one
    # through it, which is big enough for 3/4 of it to pass the NOTIONAL filter
    last = m.book_ticker("BTCUSDT", now).bid_price
    for j in range(i + 1, i + 20000):
        tr = m.trade_at_index("BTCUSDT", j)
        if tr.price < last and tr.qty * 3 / 4 * last >= 11:
            break
        last = min(last, tr.price)
    assert all(m.trade_at_index("BTCUSDT", j).price >= last for j in range(i + 1, tr.index)) and tr.price < last
    qty = (tr.qty * 3 / 4).quantize(Decimal("0.00001"))
    events = []

    async def listen():
        ac = rt.async_client(srv.api_url, ws_api_url=srv.ws_api_url, api_key=client.key, api_secret=client.API_SECRET)
        try:
            async with BinanceSocketManager(ac).user_socket() as us:  # userDataStream.subscribe.signature
                a = await asyncio.to_thread(client.create_order, symbol="BTCUSDT", side="BUY", type="LIMIT",
                                            timeInForce="GTC", quantity=f"{qty:f}", price=f"{last:f}",
                                            newClientOrderId="first")
                b = await asyncio.to_thread(client.create_order, symbol="BTCUSDT", side="BUY", type="LIMIT",
                                            timeInForce="GTC", quantity=f"{qty:f}", price=f"{last:f}",
                                            newClientOrderId="second")
                srv.clock.advance(tr.time - srv.clock.now_ms())
                while not (events and events[-1]["e"] == "outboundAccountPosition"
                           and any(e.get("X") == "PARTIALLY_FILLED" for e in events)):
                    events.append(await asyncio.wait_for(us.recv(), 5))
        finally:
            await ac.close_connection()
        return a, b

    a, b = asyncio.run(listen())
    first = client.get_order(symbol="BTCUSDT", orderId=a["orderId"])
    second = client.get_order(symbol="BTCUSDT", orderId=b["orderId"])
    assert (first["status"], Decimal(first["executedQty"])) == ("FILLED", qty)
    assert (second["status"], Decimal(second["executedQty"])) == ("PARTIALLY_FILLED", tr.qty - qty)
    trades = client.get_my_trades(symbol="BTCUSDT")[-2:]
    assert [(Decimal(t["price"]), Decimal(t["qty"]), t["isMaker"], t["time"]) for t in trades] == [
        (last, qty, True, tr.time), (last, tr.qty - qty, True, tr.time)]
    kinds = [(e["e"], e.get("x"), e.get("i")) for e in events]
    assert kinds[:2] == [("executionReport", "NEW", a["orderId"]), ("outboundAccountPosition", None, None)]
    trade_reports = [e for e in events if e.get("x") == "TRADE"]
    assert [(e["i"], e["X"], e["l"], e["L"], e["t"]) for e in trade_reports] == [
        (a["orderId"], "FILLED", f"{qty:.8f}", f"{last:.8f}", trades[0]["id"]),
        (b["orderId"], "PARTIALLY_FILLED", f"{tr.qty - qty:.8f}", f"{last:.8f}", trades[1]["id"])]
    position = [e for e in events if e["e"] == "outboundAccountPosition"][-1]
    bal = {x["asset"]: x for x in client.get_account()["balances"]}
    assert {x["a"]: (x["f"], x["l"]) for x in position["B"]} == {a: (bal[a]["free"], bal[a]["locked"]) for a in ("BTC", "USDT")}
    # Binance removed the REST listenKey endpoints on 2026-02-20: 410 Gone
    assert api_error(client.stream_get_listen_key).status_code == 410
    client.cancel_all_open_orders(symbol="BTCUSDT")


def test_control_api_adds_keys(srv):
    status, _, body = http("POST", srv.base_url + "/_replay/accounts", {"balances": {"ETH": "3"}})
    assert status == 200 and len(body["apiKey"]) == 64
    c = Client(body["apiKey"], body["secretKey"], ping=False)
    c.API_URL = srv.api_url
    assert c.get_account(omitZeroBalances="true")["balances"] == [{"asset": "ETH", "free": "3.00000000", "locked": "0.00000000"}]
    status, _, state = http("GET", srv.base_url + f"/_replay/accounts/{body['apiKey']}")
    assert status == 200 and "secretKey" not in state and state["orders"] == []
