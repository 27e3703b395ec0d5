"""Money arguments (quantity, quote_order_qty, price, stop_price, stop_limit_price) are decimal
strings or JSON numbers of ASCII digits, checked before any coercion on every transport: JSON
``true`` never becomes 1, ``'٠.٠٠٢'`` is not 0.002, and a refused call books nothing."""
import json

import pytest
from hypothesis import HealthCheck, given, settings as hsettings, strategies as st
from rest_framework.test import APIClient

from test_mcp import rpc
from trading.models import Order

MONEY_FIELDS = {"quantity", "quote_order_qty", "price", "stop_price", "stop_limit_price"}
BASE_ARGS = {
    "place_order": {"symbol": "BTCUSDT", "side": "BUY", "type": "MARKET", "quantity": "0.002"},
    "place_oco": {"symbol": "BTCUSDT", "side": "SELL", "quantity": "0.002", "price": "200000", "stop_price": "1000"},
}

non_ascii_digit = st.characters(categories=["Nd"]).filter(lambda c: not ("0" <= c <= "9"))
bad_values = st.one_of(
    st.booleans(),
    st.lists(st.one_of(st.integers(0, 9), st.text(max_size=3)), max_size=3),
    st.dictionaries(st.text(max_size=3), st.integers(0, 9), max_size=2),
    st.builds(lambda a, b, c: f"{a}{b}{c}", st.text(non_ascii_digit, min_size=1, max_size=3), st.sampled_from(["", "."]),
              st.text(non_ascii_digit, max_size=3)),
    st.builds(lambda a, e, b: f"{a}{e}{b}", st.integers(0, 99), st.sampled_from(["e", "E"]), st.integers(-8, 8)),
    st.sampled_from(["NaN", "nan", "Infinity", "-Infinity", "inf", "+1", "-0.002", "0x10", "1_000", "", " ", "1.", ".5"]),
    st.sampled_from([float("nan"), float("inf"), float("-inf")]),
    st.integers(max_value=-1),
)


def money_params() -> list[tuple[str, str]]:
    return [(tool, field) for tool, args in BASE_ARGS.items() for field in MONEY_FIELDS
            if field in _schemas()[tool]["inputSchema"]["properties"]]


_schema_cache: dict = {}


def _schemas() -> dict:
    if not _schema_cache:
        from asgiref.sync import async_to_sync

        from mcpapi.guard import SERVER

        _schema_cache.update({t.name: t.model_dump() for t in async_to_sync(SERVER.list_tools)()})
    return _schema_cache


def test_every_tool_with_a_money_argument_is_covered():
    """Any tool that declares a money argument must be in BASE_ARGS (so the property test runs on it)."""
    with_money = {name for name, t in _schemas().items() if MONEY_FIELDS & set(t["inputSchema"]["properties"])}
    assert with_money == set(BASE_ARGS)


@pytest.mark.parametrize("tool, field", money_params())
@hsettings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(value=bad_values)
def test_bad_money_arguments_are_refused_over_mcp_and_nothing_is_booked(quotes, trader, tool, field, value):
    _, account, key = trader
    before = Order.objects.filter(account=account).count()
    args = {**BASE_ARGS[tool], field: value}
    resp = rpc(key, "tools/call", {"name": tool, "arguments": args})
    if resp.status_code == 200:
        result = resp.json()["result"]
        assert result["isError"], (args, result)
        assert "must be" in result["content"][0]["text"], result["content"][0]["text"]
    else:  # NaN/Infinity are not JSON: the request itself is refused
        assert resp.status_code == 400, resp.content
    assert Order.objects.filter(account=account).count() == before


@pytest.mark.parametrize("value", [True, False, "٠.٠٠٢", "1e-3", "NaN", "Infinity", [1], {"v": 1}, "-0.002"])
def test_bad_quantity_is_refused_over_rest_and_nothing_is_booked(quotes, trader, value):
    _, account, key = trader
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {key}")
    before = Order.objects.filter(account=account).count()
    resp = client.post(f"/api/v1/accounts/{account.pk}/orders",
                       data=json.dumps({"symbol": "BTCUSDT", "side": "BUY", "type": "MARKET", "quantity": value}),
                       content_type="application/json")
    assert resp.status_code == 400, resp.content
    assert "quantity" in resp.json()["errors"]
    assert Order.objects.filter(account=account).count() == before


def test_valid_money_arguments_still_book(quotes, trader):
    """A decimal string and a JSON number both work (the check refuses only what it must)."""
    _, account, key = trader
    for i, quantity in enumerate(["0.002", 0.002]):
        resp = rpc(key, "tools/call", {"name": "place_order", "arguments": {**BASE_ARGS["place_order"], "quantity": quantity,
                                                                           "client_order_id": f"money-ok-{i}"}})
        result = resp.json()["result"]
        assert not result["isError"], result
    assert Order.objects.filter(account=account, status="FILLED").count() == 2
