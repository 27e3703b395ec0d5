"""OCO order lists on the replay exchange through python-binance (Binance "New Order list - OCO",
"Cancel Order list", "Query Order list", user-stream ``listStatus``): one lock for both legs, the
other leg EXPIRES when one fills, canceling a leg cancels the list, and bad lists change nothing."""
from __future__ import annotations

import time
from decimal import Decimal

import pytest
from binance import Client
from binance.exceptions import BinanceAPIException

from replay.server import ReplayServer

TICK = Decimal("0.01")


@pytest.fixture(scope="module")
def srv():
    start = int(time.time() // 60) * 60_000
    with ReplayServer(port=0, paused=True, start_wall_ms=start) as s:
        yield s


_n = [0]


@pytest.fixture
def client(srv):
    _n[0] += 1
    key, secret = f"oco{_n[0]:061d}", f"sec{_n[0]:061d}"
    srv.add_key(key, secret, {"USDT": "50000", "BTC": "1"})
    c = Client(key, secret, ping=False)
    c.API_URL = srv.api_url
    return c


def balance(client, asset):
    b = next(x for x in client.get_account()["balances"] if x["asset"] == asset)
    return Decimal(b["free"]), Decimal(b["locked"])


def sell_oco(client, above, stop, qty="0.002", **kw):
    return client.create_oco_order(symbol="BTCUSDT", side="SELL", quantity=qty, aboveType="LIMIT_MAKER",
                                   abovePrice=f"{above:f}", belowType="STOP_LOSS_LIMIT", belowStopPrice=f"{stop:f}",
                                   belowPrice=f"{stop - 10:f}", belowTimeInForce="GTC", **kw)


def test_one_lock_backs_both_legs_and_a_fill_expires_the_other(srv, client):
    m = srv.model
    now = srv.clock.now_ms()
    i = m.trade_index("BTCUSDT", now)
    ask = m.depth("BTCUSDT", now, 5).asks[0][0]
    above, stop = ask + TICK, ask - 200
    fill_at = next(j for j in range(i + 1, i + 50_000) if m.trade_at_index("BTCUSDT", j).price > above)
    assert all(m.trade_at_index("BTCUSDT", j).price > stop for j in range(i + 1, fill_at + 1))

    placed = sell_oco(client, above, stop, listClientOrderId="my-list")
    legs = placed["orderReports"]
    assert placed["listStatusType"] == "EXEC_STARTED" and placed["listClientOrderId"] == "my-list"
    assert [x["type"] for x in legs] == ["LIMIT_MAKER", "STOP_LOSS_LIMIT"]
    assert {x["orderListId"] for x in legs} == {placed["orderListId"]} and all(x["status"] == "NEW" for x in legs)
    assert balance(client, "BTC") == (Decimal("0.998"), Decimal("0.002"))  # locked once, not twice

    srv.clock.advance(m.trade_at_index("BTCUSDT", fill_at).time - srv.clock.now_ms())
    maker = client.get_order(symbol="BTCUSDT", orderId=legs[0]["orderId"])
    other = client.get_order(symbol="BTCUSDT", orderId=legs[1]["orderId"])
    assert Decimal(maker["executedQty"]) > 0 and maker["orderListId"] == placed["orderListId"]
    assert other["status"] == "EXPIRED" and Decimal(other["executedQty"]) == 0
    left = Decimal(maker["origQty"]) - Decimal(maker["executedQty"])
    assert balance(client, "BTC")[1] == left  # the lock now backs the filled leg's remainder only
    listed = client.v3_get_order_list(orderListId=placed["orderListId"])
    assert (listed["listStatusType"], listed["listOrderStatus"]) == ("ALL_DONE", "ALL_DONE")
    trade = client.get_my_trades(symbol="BTCUSDT")[-1]
    assert trade["orderListId"] == placed["orderListId"] and trade["isMaker"] is True
    assert Decimal(trade["price"]) == above


def test_canceling_a_leg_cancels_the_list_and_frees_the_lock(srv, client):
    now = srv.clock.now_ms()
    ask = srv.model.depth("BTCUSDT", now, 5).asks[0][0]
    placed = sell_oco(client, ask + 500, ask - 500)
    assert client.get_open_oco_orders()[0]["orderListId"] == placed["orderListId"]
    client.cancel_order(symbol="BTCUSDT", orderId=placed["orderReports"][1]["orderId"])
    statuses = [client.get_order(symbol="BTCUSDT", orderId=x["orderId"])["status"] for x in placed["orderReports"]]
    assert statuses == ["CANCELED", "CANCELED"]
    assert balance(client, "BTC") == (Decimal("1"), Decimal("0"))
    assert client.get_open_oco_orders() == []

    again = sell_oco(client, ask + 500, ask - 500)
    out = client.v3_delete_order_list(symbol="BTCUSDT", orderListId=again["orderListId"])
    assert out["listStatusType"] == "ALL_DONE" and [r["status"] for r in out["orderReports"]] == ["CANCELED", "CANCELED"]
    assert balance(client, "BTC") == (Decimal("1"), Decimal("0"))


@pytest.mark.parametrize("above_off, stop_off, qty, code", [
    (-500, 500, "0.002", -1013),   # prices the wrong way round
    (500, -500, "5", -2010),       # more BTC than the account holds
    (-1000, -500, "0.002", -1013),  # a SELL LIMIT_MAKER under the stop: wrong relationship
])
def test_bad_lists_are_refused_and_place_nothing(srv, client, above_off, stop_off, qty, code):
    now = srv.clock.now_ms()
    ask = srv.model.depth("BTCUSDT", now, 5).asks[0][0]
    with pytest.raises(BinanceAPIException) as err:
        sell_oco(client, ask + above_off, ask + stop_off, qty=qty)
    assert err.value.code == code
    assert client.get_open_orders(symbol="BTCUSDT") == [] and balance(client, "BTC") == (Decimal("1"), Decimal("0"))


def test_a_triggered_stop_leg_takes_the_lock_and_expires_the_maker_leg(srv, client):
    m = srv.model
    now = srv.clock.now_ms()
    i = m.trade_index("BTCUSDT", now)
    bid = m.depth("BTCUSDT", now, 5).bids[0][0]
    stop = bid - TICK
    hit = next(j for j in range(i + 1, i + 50_000) if m.trade_at_index("BTCUSDT", j).price <= stop)
    placed = client.create_oco_order(symbol="BTCUSDT", side="SELL", quantity="0.002", aboveType="LIMIT_MAKER",
                                     abovePrice=f"{bid + 3000:f}", belowType="STOP_LOSS", belowStopPrice=f"{stop:f}")
    srv.clock.advance(m.trade_at_index("BTCUSDT", hit).time - srv.clock.now_ms())
    maker, stop_leg = (client.get_order(symbol="BTCUSDT", orderId=x["orderId"]) for x in placed["orderReports"])
    assert maker["status"] == "EXPIRED"
    assert stop_leg["status"] in ("FILLED", "EXPIRED") and Decimal(stop_leg["executedQty"]) > 0
    sold = sum(Decimal(t["qty"]) for t in client.get_my_trades(symbol="BTCUSDT", orderId=stop_leg["orderId"]))
    assert sold == Decimal(stop_leg["executedQty"])
    assert balance(client, "BTC") == (Decimal("1") - sold, Decimal("0"))
