"""The isolation matrix (issue 18): every transport × every restriction of a token or a user,
against the real server (``conftest.stack``: the production web server and the ingester as
subprocesses, real Redis, the replay exchange, the test database).

Each cell asserts the refusal or the narrowing, and that nothing changed: no order booked, no
balance moved, no data of the other user or symbol in the answer. The token transports are one
adapter each (``McpHttp``, ``McpWs``, ``Rest``) answering the same calls; the dashboard uses a
person's session (``Dashboard``) and its WebSocket. The one access check every token transport
uses is ``risk.access`` (scope, symbols, what a restricted token may see), the account rules are
``trading.selectors.account_get``, confirm mode ``trading.services.order_place``, expiry and
revocation ``risk.authentication`` + ``risk.signals``.

| restriction            | MCP HTTP /mcp        | MCP WS /mcp/ws                     | REST /api/v1          | dashboard JSON                     | dashboard WS /ws/dashboard/        |
|------------------------|----------------------|------------------------------------|-----------------------|------------------------------------|------------------------------------|
| scope                  | tested               | tested (+ no account pushes)       | tested                | n/a: a session has every scope     | n/a: a session has every scope     |
| account: other user's  | tested               | tested                             | tested                | tested (halt → 404, state)         | tested (no pushes of it)           |
| account: token's list  | tested               | tested                             | tested                | n/a: sessions have no token        | n/a                                |
| account: viewer grant  | tested (reads, no trade) | tested                         | tested                | tested (halt → 403)                | tested (pushes of it)              |
| symbol                 | tested (reads+writes)| tested (+ pushes)                  | tested                | n/a: sessions are not restricted   | n/a                                |
| confirm mode           | tested (held)        | tested (held)                      | tested (202, held)    | n/a: a person's orders are not held| n/a                                |
| expiry                 | tested (401)         | tested (handshake closed 4401)     | tested (401)          | tested (expired session → login)   | tested (expired session → 4401)    |
| revocation, connected  | tested (next call 401)| tested (socket closed ≤ 1 s)      | tested (next call 401)| tested (logout → next call refused)| tested (logout → closed ≤ 1 s)     |

Holes this matrix found, fixed in ``risk.access`` and its callers: over MCP (HTTP and WebSocket)
``list_orders``, ``list_open_orders``, ``get_trade_history``, ``get_order`` by id,
``get_positions``/``get_portfolio``/``get_account`` positions, ``list_pending_orders``,
``list_markets``, ``get_ticker_24h`` and ``get_fees`` without a symbol showed a symbol-restricted
token other symbols; ``/mcp/ws`` pushed it other symbols' order and activity events; REST
narrowed lists after their ``limit`` (fewer rows than asked). Balances and P&L totals are the
account's, not a symbol's: a symbol-restricted token still sees them.
"""
from __future__ import annotations

import itertools
import json
import time
from datetime import timedelta

import httpx
import pytest
from django.conf import settings
from django.http import HttpRequest
from django.test import Client
from django.utils import timezone
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect as ws_connect

from risk.models import AccountGrant, AgentToken, ApprovalStatus, GrantRole, OrderApproval
from risk.services import agent_token_create, agent_token_revoke
from trading.models import Account, Balance, Fill, Order
from trading.services import account_create

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

WITHIN_S = 1.0  # revocation reaches an open socket within this (issue 18)
PASSWORD = "pw-for-tests-1"


# --- the transports -----------------------------------------------------------------------------------

class Answer:
    """One call's outcome on any transport: ``ok``, ``data`` (the JSON answer) or ``error`` (the
    text of the refusal), ``status`` (HTTP status; 200 for MCP tool results)."""

    def __init__(self, ok: bool, data=None, error: str = "", status: int = 200):
        self.ok, self.data, self.error, self.status = ok, data, error, status

    def __repr__(self):
        return f"Answer(ok={self.ok}, status={self.status}, error={self.error[:200]!r}, data={str(self.data)[:200]})"


def _tool_answer(result: dict) -> Answer:
    text = result["content"][0]["text"]
    if result.get("isError"):
        return Answer(False, error=text)
    return Answer(True, data=json.loads(text))


class McpHttp:
    name = "mcp_http"

    def __init__(self, base_url, key):
        self.base_url, self.key = base_url, key
        self.ids = itertools.count(1)

    def call(self, tool: str, **args) -> Answer:
        resp = httpx.post(f"{self.base_url}/mcp", timeout=30, json={
            "jsonrpc": "2.0", "id": next(self.ids), "method": "tools/call", "params": {"name": tool, "arguments": args}},
            headers={"Authorization": f"Bearer {self.key}", "Accept": "application/json, text/event-stream"})
        if resp.status_code != 200:
            return Answer(False, error=resp.text, status=resp.status_code)
        return _tool_answer(resp.json()["result"])

    def close(self):
        pass


class McpWs:
    """One ``/mcp/ws`` connection; pushed notifications are kept in ``pushes``."""

    name = "mcp_ws"

    def __init__(self, base_url, key):
        self.ids = itertools.count(1)
        self.pushes: list[dict] = []
        self.ws = ws_connect(base_url.replace("http://", "ws://") + "/mcp/ws", subprotocols=["mcp"], open_timeout=15, legacy=True,
                             additional_headers={"Authorization": f"Bearer {key}"})

    def call(self, tool: str, **args) -> Answer:
        rid = next(self.ids)
        self.ws.send(json.dumps({"jsonrpc": "2.0", "id": rid, "method": "tools/call", "params": {"name": tool, "arguments": args}}))
        while True:
            frame = json.loads(self.ws.recv(timeout=30))
            if frame.get("id") == rid:
                if "error" in frame:
                    return Answer(False, error=frame["error"]["message"], status=frame["error"]["code"])
                return _tool_answer(frame["result"])
            self.pushes.append(frame)

    def drain(self, seconds: float) -> list[dict]:
        """Frames pushed within ``seconds`` (added to ``pushes``)."""
        end = time.monotonic() + seconds
        while (left := end - time.monotonic()) > 0:
            try:
                self.pushes.append(json.loads(self.ws.recv(timeout=left)))
            except TimeoutError:
                break
        return self.pushes

    def order_pushes(self) -> list[dict]:
        return [p["params"]["data"] for p in self.pushes if p.get("params", {}).get("kind") == "order"]

    def close(self):
        self.ws.close()


class Rest:
    """The REST API with an agent token; each MCP tool the matrix uses mapped to its endpoint."""

    name = "rest"

    def __init__(self, base_url, key):
        self.http = httpx.Client(base_url=base_url + "/api/v1", timeout=30, headers={"Authorization": f"Bearer {key}"})

    def call(self, tool: str, **args) -> Answer:
        a = args.get("account_id")
        routes = {
            "get_account": lambda: self.http.get(f"/accounts/{a}"),
            "list_orders": lambda: self.http.get(f"/accounts/{a}/orders", params=_q(args, "symbol", "limit")),
            "list_open_orders": lambda: self.http.get(f"/accounts/{a}/open-orders", params=_q(args, "symbol")),
            "get_trade_history": lambda: self.http.get(f"/accounts/{a}/fills", params=_q(args, "symbol", "limit")),
            "get_order": lambda: self.http.get(f"/accounts/{a}/orders/{args['order_id']}"),
            "get_positions": lambda: self.http.get(f"/accounts/{a}/positions"),
            "get_ticker_24h": lambda: self.http.get("/ticker/24hr", params=_q(args, "symbols")),
            "get_ticker": lambda: self.http.get("/ticker/bookTicker", params=_q(args, "symbol")),
            "place_order": lambda: self.http.post(f"/accounts/{a}/orders", json={
                "symbol": args["symbol"], "side": args["side"], "type": args.get("type", "MARKET"),
                "quantity": args["quantity"], "clientOrderId": args.get("client_order_id")}),
            "cancel_order": lambda: self.http.delete(f"/accounts/{a}/orders/{args['order_id']}"),
        }
        resp = routes[tool]()
        body = resp.json()
        if resp.status_code >= 400:
            return Answer(False, error=body.get("msg") or body.get("detail") or json.dumps(body), status=resp.status_code)
        return Answer(True, data=body, status=resp.status_code)

    def close(self):
        self.http.close()


def _q(args: dict, *names) -> dict:
    return {n: (",".join(args[n]) if isinstance(args[n], list) else args[n]) for n in names if args.get(n) is not None}


TOKEN_TRANSPORTS = {"mcp_http": McpHttp, "mcp_ws": McpWs, "rest": Rest}


class Dashboard:
    """A person's session (created through Django's login, as the login page does) on the stack:
    the JSON views with the session cookie and its CSRF token, and the dashboard WebSocket."""

    def __init__(self, base_url, username):
        self.base_url = base_url
        self.client = Client()
        assert self.client.login(request=HttpRequest(), username=username, password=PASSWORD)
        self.session_key = self.client.cookies[settings.SESSION_COOKIE_NAME].value
        self.http = httpx.Client(base_url=base_url, timeout=30, follow_redirects=False,
                                 cookies={settings.SESSION_COOKIE_NAME: self.session_key})
        self.http.get("/tokens/")  # sets the CSRF cookie
        self.csrf = self.http.cookies.get(settings.CSRF_COOKIE_NAME)

    def get(self, path):
        return self.http.get(path)

    def post(self, path):
        return self.http.post(path, headers={"X-CSRFToken": self.csrf or "", "Referer": self.base_url + "/"})

    def socket(self):
        ws = ws_connect(self.base_url.replace("http://", "ws://") + "/ws/dashboard/", open_timeout=15, legacy=True, additional_headers={
            "Cookie": f"{settings.SESSION_COOKIE_NAME}={self.session_key}", "Origin": self.base_url})
        return ws

    def close(self):
        self.http.close()


def frames_within(ws, seconds: float) -> tuple[list[dict], int | None]:
    """(JSON frames received within ``seconds``, the close code if the socket closed)."""
    out, end = [], time.monotonic() + seconds
    while (left := end - time.monotonic()) > 0:
        try:
            out.append(json.loads(ws.recv(timeout=left)))
        except TimeoutError:
            break
        except ConnectionClosed as closed:
            return out, closed.rcvd.code if closed.rcvd else None
    return out, None


def closed_within(ws, seconds: float) -> tuple[int | None, float]:
    """(close code, seconds it took) of a socket that closes within ``seconds`` ((None, ...) if not)."""
    t0 = time.monotonic()
    _, code = frames_within(ws, seconds)
    return code, time.monotonic() - t0


# --- the world ------------------------------------------------------------------------------------------

class World:
    """alice (account A with a BTCUSDT and an ETHUSDT fill, a second account A2), bob (account B),
    vera (a viewer grant on A); tokens as each test asks."""

    def __init__(self, stack, make_user):
        self.base_url = stack.base_url
        self.alice, self.bob, self.vera = make_user("alice"), make_user("bob"), make_user("vera")
        self.a = account_create(owner=self.alice, name="Alice paper")
        self.a2 = account_create(owner=self.alice, name="Alice second")
        self.b = account_create(owner=self.bob, name="Bob paper")
        AccountGrant.objects.create(account=self.a, user=self.vera, role=GrantRole.VIEWER)
        _, self.alice_key = agent_token_create(user=self.alice, name="alice-full")
        self.btc = self.place(self.alice_key, "BTCUSDT", "0.002", "alice-btc")
        self.eth = self.place(self.alice_key, "ETHUSDT", "0.01", "alice-eth")

    def place(self, key, symbol, quantity, client_order_id, account=None) -> dict:
        answer = McpHttp(self.base_url, key).call("place_order", symbol=symbol, side="BUY", quantity=quantity,
                                                  client_order_id=client_order_id, account_id=(account or self.a).pk)
        assert answer.ok and answer.data["status"] == "FILLED", answer
        return answer.data

    def token(self, user=None, name="t", **restrict) -> str:
        """A token of ``user`` (alice) with ``scopes``, ``symbols``, ``accounts``, ``confirm_orders``, ``expires_at``."""
        row, key = agent_token_create(user=user or self.alice, name=name, scopes=restrict.get("scopes"),
                                      confirm_orders=restrict.get("confirm_orders", False),
                                      expires_at=restrict.get("expires_at"))
        if restrict.get("symbols"):
            row.symbols = restrict["symbols"]
            row.save()
        if restrict.get("accounts"):
            row.accounts.set(restrict["accounts"])
        return key

    def snapshot(self):
        """Everything a refused call must leave as it was."""
        return (sorted(Order.objects.values_list("id", "account_id", "status", "symbol")),
                sorted(Balance.objects.values_list("account_id", "asset", "free", "locked")),
                Fill.objects.count(), sorted(OrderApproval.objects.values_list("id", "status")),
                sorted(Account.objects.values_list("id", "risk_limit__trading_state")))


@pytest.fixture
def world(live_stack, make_user):
    return World(live_stack, make_user)


@pytest.fixture(params=list(TOKEN_TRANSPORTS))
def transport(request, world):
    """Opens the transport named by the test's parameter for a token: ``transport(key)``."""
    opened = []

    def open_(key):
        t = TOKEN_TRANSPORTS[request.param](world.base_url, key)
        opened.append(t)
        return t

    open_.name = request.param
    yield open_
    for t in opened:
        try:
            t.close()
        except Exception:
            pass


def _secret_free(answer: Answer, *secrets) -> None:
    text = json.dumps(answer.data) + answer.error
    for secret in secrets:
        assert secret not in text, (secret, answer)


# --- scope ----------------------------------------------------------------------------------------------

def test_scope_a_market_read_token_reads_markets_only(world, transport):
    t = transport(world.token(name="market-only", scopes=["market:read"]))
    before = world.snapshot()
    assert t.call("get_ticker", symbol="BTCUSDT").ok
    for tool, args in (("get_account", {}), ("list_orders", {}), ("get_order", {"order_id": world.btc["orderId"]}),
                       ("place_order", {"symbol": "BTCUSDT", "side": "BUY", "quantity": "0.002", "client_order_id": "scope-x"})):
        answer = t.call(tool, account_id=world.a.pk, **args)
        assert not answer.ok and answer.status in (200, 403) and "scope" in answer.error, (tool, answer)
        _secret_free(answer, "alice-btc", "alice-eth")
    if transport.name == "mcp_ws":  # and no account events are pushed to it
        world.place(world.alice_key, "BTCUSDT", "0.002", "alice-btc-2")
        before = world.snapshot()
        assert not [p for p in t.drain(0.8) if p.get("params", {}).get("kind")]
    assert world.snapshot() == before


# --- account ----------------------------------------------------------------------------------------------

def test_account_another_users_account_is_not_found_and_untouched(world, transport):
    t = transport(world.token(user=world.bob, name="bob-agent"))
    before = world.snapshot()
    for tool, args in (("get_account", {}), ("list_orders", {}), ("get_trade_history", {}),
                       ("get_order", {"order_id": world.btc["orderId"]}), ("cancel_order", {"order_id": world.btc["orderId"], "symbol": "BTCUSDT"}),
                       ("place_order", {"symbol": "BTCUSDT", "side": "SELL", "quantity": "0.002", "client_order_id": "bob-x"})):
        answer = t.call(tool, account_id=world.a.pk, **args)
        assert not answer.ok and answer.status in (200, 404) and "not found" in answer.error.lower() \
            or "does not exist" in answer.error, (tool, answer)
        _secret_free(answer, "alice-btc", "alice-eth", "Alice paper")
    mine = t.call("get_account", account_id=world.b.pk)
    assert mine.ok and mine.data["accountId"] == world.b.pk
    assert world.snapshot() == before


def test_account_a_token_restricted_to_one_account_reaches_no_other(world, transport):
    t = transport(world.token(name="only-a2", accounts=[world.a2]))
    before = world.snapshot()
    for tool in ("get_account", "list_orders", "get_trade_history"):
        answer = t.call(tool, account_id=world.a.pk)
        assert not answer.ok and "not found" in answer.error.lower(), (tool, answer)
        _secret_free(answer, "alice-btc", "alice-eth")
    answer = t.call("place_order", account_id=world.a.pk, symbol="BTCUSDT", side="SELL", quantity="0.002", client_order_id="a2-x")
    assert not answer.ok and "not found" in answer.error.lower(), answer
    assert world.snapshot() == before
    assert t.call("get_account", account_id=world.a2.pk).data["accountId"] == world.a2.pk


def test_account_a_viewer_grant_reads_but_never_trades(world, transport):
    t = transport(world.token(user=world.vera, name="vera-agent"))
    orders = t.call("list_orders", account_id=world.a.pk)
    assert orders.ok and {o["clientOrderId"] for o in orders.data["orders"]} == {"alice-btc", "alice-eth"}
    before = world.snapshot()
    for tool, args in (("place_order", {"symbol": "BTCUSDT", "side": "SELL", "quantity": "0.002", "client_order_id": "vera-x"}),
                       ("cancel_order", {"order_id": world.btc["orderId"], "symbol": "BTCUSDT"})):
        answer = t.call(tool, account_id=world.a.pk, **args)
        assert not answer.ok and answer.status in (200, 403) and "not trade" in answer.error, (tool, answer)
    assert world.snapshot() == before


# --- symbol -------------------------------------------------------------------------------------------------

def test_symbol_a_token_restricted_to_ethusdt_sees_and_trades_nothing_else(world, transport):
    t = transport(world.token(name="eth-only", symbols=["ETHUSDT"]))
    before = world.snapshot()
    refused = (("place_order", {"symbol": "BTCUSDT", "side": "SELL", "quantity": "0.002", "client_order_id": "eth-only-x"}),
               ("cancel_order", {"order_id": world.btc["orderId"], "symbol": "BTCUSDT"}),
               ("list_orders", {"symbol": "BTCUSDT"}), ("get_ticker", {"symbol": "BTCUSDT"}))
    for tool, args in refused:
        answer = t.call(tool, account_id=world.a.pk, **args)
        if tool == "cancel_order" and transport.name == "rest":  # its URL names the order, not the symbol
            assert not answer.ok and answer.status == 404 and "does not exist" in answer.error, answer
            continue
        assert not answer.ok and answer.status in (200, 403) and "only ETHUSDT" in answer.error, (tool, answer)
    for tool in ("get_order", "cancel_order"):  # by id alone, naming no symbol: as if it did not exist
        answer = t.call(tool, account_id=world.a.pk, order_id=world.btc["orderId"],
                        **({"symbol": "ETHUSDT"} if tool == "cancel_order" else {}))
        assert not answer.ok and "does not exist" in answer.error, (tool, answer)
        _secret_free(answer, "alice-btc")
    # reads without a symbol are narrowed to ETHUSDT, not refused
    orders = t.call("list_orders", account_id=world.a.pk)
    assert orders.ok and [o["clientOrderId"] for o in orders.data["orders"]] == ["alice-eth"], orders
    open_orders = t.call("list_open_orders", account_id=world.a.pk)
    assert open_orders.ok and open_orders.data["orders"] == []
    trades = t.call("get_trade_history", account_id=world.a.pk)
    assert trades.ok and trades.data["trades"] and {f["symbol"] for f in trades.data["trades"]} == {"ETHUSDT"}, trades
    positions = t.call("get_positions", account_id=world.a.pk)
    assert positions.ok and [p["symbol"] for p in positions.data["positions"]] == ["ETHUSDT"], positions
    state = t.call("get_account", account_id=world.a.pk)
    assert state.ok and [p["symbol"] for p in state.data["positions"]] == ["ETHUSDT"], state
    tickers = t.call("get_ticker_24h")
    assert tickers.ok and [x["symbol"] for x in tickers.data["tickers"]] == ["ETHUSDT"], tickers
    assert world.snapshot() == before
    if transport.name == "mcp_ws":  # pushes: the ETHUSDT order arrives, the BTCUSDT one does not
        world.place(world.alice_key, "BTCUSDT", "0.002", "pushed-btc")
        world.place(world.alice_key, "ETHUSDT", "0.01", "pushed-eth")
        deadline = time.monotonic() + 10
        while "pushed-eth" not in {o.get("clientOrderId") for o in t.order_pushes()} and time.monotonic() < deadline:
            t.drain(0.2)
        t.drain(0.5)
        seen = {o.get("clientOrderId") for o in t.order_pushes()}
        assert "pushed-eth" in seen and "pushed-btc" not in seen, seen
        texts = json.dumps(t.pushes)
        assert "pushed-btc" not in texts and "BTCUSDT" not in texts


def test_symbol_restricted_token_reads_resources_and_audit_events_of_its_symbols_only(world):
    """The resources (``tradingmcp://accounts/{id}``, ``/orders/open``, ``/activity``), the prompts
    built from an account and the REST audit events narrow to an ETHUSDT-only token's symbol as the tools do; events naming no symbol
    stay visible, and the full token still sees the BTCUSDT ones."""
    key = world.token(name="eth-only-reads", symbols=["ETHUSDT"])
    world.place(world.alice_key, "BTCUSDT", "0.002", "resting-btc")  # a BTCUSDT order event after the fills

    def read(token, uri):
        resp = httpx.post(f"{world.base_url}/mcp", timeout=30, json={
            "jsonrpc": "2.0", "id": 1, "method": "resources/read", "params": {"uri": uri}},
            headers={"Authorization": f"Bearer {token}", "Accept": "application/json, text/event-stream"})
        assert resp.status_code == 200, resp.text
        return json.loads(resp.json()["result"]["contents"][0]["text"])

    def audit(token):
        resp = httpx.get(f"{world.base_url}/api/v1/accounts/{world.a.pk}/audit-events?page_size=200", timeout=30,
                         headers={"Authorization": f"Bearer {token}"})
        assert resp.status_code == 200, resp.text
        return resp.json()["results"]

    def symbols_of(events):
        return {e["params"].get("symbol") for e in events if isinstance(e.get("params"), dict)} - {None}

    state = read(key, f"tradingmcp://accounts/{world.a.pk}")
    assert [p["symbol"] for p in state["positions"]] == ["ETHUSDT"], state["positions"]
    activity = read(key, f"tradingmcp://accounts/{world.a.pk}/activity")
    assert activity["events"] and symbols_of(activity["events"]) == {"ETHUSDT"}, activity
    full_activity = read(world.alice_key, f"tradingmcp://accounts/{world.a.pk}/activity")
    assert {"BTCUSDT", "ETHUSDT"} <= symbols_of(full_activity["events"])
    def prompt_data(token, name):
        resp = httpx.post(f"{world.base_url}/mcp", timeout=30, json={
            "jsonrpc": "2.0", "id": 1, "method": "prompts/get",
            "params": {"name": name, "arguments": {"account_id": str(world.a.pk)}}},
            headers={"Authorization": f"Bearer {token}", "Accept": "application/json, text/event-stream"})
        assert resp.status_code == 200, resp.text
        text = resp.json()["result"]["messages"][0]["content"]["text"]
        return json.loads(text.split("Data (JSON, read from this server just now):", 1)[1])

    eod, eod_full = prompt_data(key, "eod_pnl_report"), prompt_data(world.alice_key, "eod_pnl_report")
    assert {f["symbol"] for f in eod["fills"]} == {"ETHUSDT"} and [p["symbol"] for p in eod["positions"]] == ["ETHUSDT"]
    assert {"BTCUSDT", "ETHUSDT"} <= {f["symbol"] for f in eod_full["fills"]}
    review = prompt_data(key, "portfolio_review")
    assert [p["symbol"] for p in review["portfolio"]["positions"]] == ["ETHUSDT"]
    narrowed, full = audit(key), audit(world.alice_key)
    assert symbols_of(narrowed) == {"ETHUSDT"} and {"BTCUSDT", "ETHUSDT"} <= symbols_of(full)
    assert len(narrowed) < len(full)
    assert "resting-btc" not in json.dumps(narrowed) + json.dumps(activity)


# --- confirm mode ---------------------------------------------------------------------------------------

def test_confirm_mode_holds_the_order_for_a_person(world, transport):
    t = transport(world.token(name="careful", confirm_orders=True))
    before_orders = set(Order.objects.values_list("id", flat=True))
    balances = sorted(Balance.objects.values_list("account_id", "asset", "free", "locked"))
    answer = t.call("place_order", account_id=world.a.pk, symbol="BTCUSDT", side="BUY", quantity="0.002",
                    client_order_id=f"held-{transport.name}")
    assert answer.ok and answer.data["status"] == "PENDING_APPROVAL", answer
    if transport.name == "rest":
        assert answer.status == 202
    assert set(Order.objects.values_list("id", flat=True)) == before_orders  # nothing booked
    assert sorted(Balance.objects.values_list("account_id", "asset", "free", "locked")) == balances
    held = OrderApproval.objects.get(client_order_id=f"held-{transport.name}")
    assert held.status == ApprovalStatus.PENDING and held.account_id == world.a.pk and held.order_id is None


# --- expiry ---------------------------------------------------------------------------------------------

def test_expiry_an_expired_token_is_refused(world, transport):
    key = world.token(name="expired", expires_at=timezone.now() - timedelta(seconds=1))
    before = world.snapshot()
    if transport.name == "mcp_ws":
        with pytest.raises(ConnectionClosed) as closed:
            t = transport(key)
            t.call("get_account", account_id=world.a.pk)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 4401
    else:
        t = transport(key)
        for tool, args in (("get_account", {}), ("place_order", {"symbol": "BTCUSDT", "side": "BUY", "quantity": "0.002"})):
            answer = t.call(tool, account_id=world.a.pk, **args)
            assert not answer.ok and answer.status == 401, (tool, answer)
            _secret_free(answer, "alice-btc", "Alice paper")
    assert world.snapshot() == before


# --- revocation while connected -------------------------------------------------------------------------

def test_revocation_cuts_off_an_open_connection(world, transport):
    key = world.token(name="to-revoke")
    t = transport(key)
    assert t.call("get_account", account_id=world.a.pk).ok
    before = world.snapshot()
    t0 = time.monotonic()
    agent_token_revoke(token=AgentToken.objects.get(name="to-revoke"))
    if transport.name == "mcp_ws":
        code, _ = closed_within(t.ws, WITHIN_S - (time.monotonic() - t0))
        assert code == 4401, "the open /mcp/ws socket was not closed within 1 s of the revocation"
    else:
        for tool, args in (("get_account", {}), ("place_order", {"symbol": "BTCUSDT", "side": "BUY", "quantity": "0.002"})):
            answer = t.call(tool, account_id=world.a.pk, **args)
            assert not answer.ok and answer.status == 401, (tool, answer)
    assert world.snapshot() == before


# --- the dashboard (a person's session) ---------------------------------------------------------------

def test_dashboard_another_users_account_is_not_found_and_untouched(world):
    bob = Dashboard(world.base_url, "bob")
    state = bob.get("/dashboard/state/")
    assert state.status_code == 200 and "Alice" not in state.text and "alice-btc" not in state.text
    assert [a["accountId"] for a in state.json()["accounts"]] == [world.b.pk]
    before = world.snapshot()
    for action in ("halt", "resume"):
        resp = bob.post(f"/dashboard/api/accounts/{world.a.pk}/{action}/")
        assert resp.status_code == 404 and "Alice" not in resp.text, (action, resp.status_code, resp.text[:300])
    vera = Dashboard(world.base_url, "vera")  # a viewer grant: sees it, may not halt it
    assert world.a.pk in [a["accountId"] for a in vera.get("/dashboard/state/").json()["accounts"]]
    resp = vera.post(f"/dashboard/api/accounts/{world.a.pk}/halt/")
    assert resp.status_code == 403, resp.text[:300]
    assert world.snapshot() == before
    own = bob.post(f"/dashboard/api/accounts/{world.b.pk}/halt/")  # the same call on his own account works
    assert own.status_code == 200 and own.json()["state"] == "HALTED"


def test_dashboard_socket_pushes_only_the_users_own_and_granted_accounts(world):
    bob, vera = Dashboard(world.base_url, "bob"), Dashboard(world.base_url, "vera")
    bob_ws, vera_ws = bob.socket(), vera.socket()
    try:
        hello = json.loads(bob_ws.recv(timeout=10))
        assert hello["type"] == "hello" and hello["accounts"] == [world.b.pk]
        assert json.loads(vera_ws.recv(timeout=10))["accounts"] == [world.a.pk]
        world.place(world.alice_key, "BTCUSDT", "0.002", "dash-push")
        vera_frames, _ = frames_within(vera_ws, 3)
        bob_frames, _ = frames_within(bob_ws, 0.5)
    finally:
        bob_ws.close()
        vera_ws.close()
    assert any(f.get("type") == "account" and f["account"] == world.a.pk for f in vera_frames), vera_frames
    assert not [f for f in bob_frames if f.get("type") in ("account", "user")], bob_frames
    assert "dash-push" not in json.dumps(bob_frames)


def test_dashboard_an_expired_session_is_refused(world):
    from django.contrib.sessions.models import Session

    alice = Dashboard(world.base_url, "alice")
    assert alice.get("/dashboard/state/").status_code == 200
    Session.objects.filter(session_key=alice.session_key).update(expire_date=timezone.now() - timedelta(seconds=1))
    before = world.snapshot()
    state = alice.get("/dashboard/state/")
    assert state.status_code == 302 and "/login/" in state.headers["location"]
    assert alice.post(f"/dashboard/api/accounts/{world.a.pk}/halt/").status_code in (302, 403)
    ws = alice.socket()
    frames, code = frames_within(ws, 5)
    assert code == 4401 and not frames, (code, frames)
    assert world.snapshot() == before


def test_dashboard_logout_closes_the_socket_and_refuses_the_next_call(world):
    alice = Dashboard(world.base_url, "alice")
    ws = alice.socket()
    assert json.loads(ws.recv(timeout=10))["type"] == "hello"
    t0 = time.monotonic()
    alice.client.logout()  # the session is flushed, as the logout page does
    code, _ = closed_within(ws, WITHIN_S - (time.monotonic() - t0))
    assert code == 4401, "the dashboard socket was not closed within 1 s of the logout"
    before = world.snapshot()
    state = alice.get("/dashboard/state/")
    assert state.status_code == 302 and "/login/" in state.headers["location"]
    assert world.snapshot() == before


# --- /mcp/ws handshakes: per-IP limit before authentication ---------------------------------------------

def test_mcp_ws_handshakes_without_a_valid_token_are_limited_per_ip(world):
    """Past ``MCP_UNAUTHENTICATED_PER_MINUTE`` (the stack's default, the counter ``/mcp`` uses) failed
    handshakes from one address, the next is refused with HTTP 429; a token the server has
    authenticated before still connects and works."""
    url = world.base_url.replace("http://", "ws://") + "/mcp/ws"
    good = McpWs(world.base_url, world.alice_key)  # authenticated before the flood
    good.close()
    refused = None
    for i in range(settings.MCP_UNAUTHENTICATED_PER_MINUTE + 2):
        try:
            with ws_connect(url, subprotocols=["mcp"], open_timeout=15,
                            additional_headers={"Authorization": f"Bearer tmcp_bad{i:040d}"}) as ws:
                with pytest.raises(ConnectionClosed):
                    ws.recv(timeout=10)
        except InvalidStatus as exc:
            refused = (i, exc.response.status_code, exc.response.headers.get("retry-after"))
            break
    assert refused is not None and refused[1] == 429 and refused[2] == "60", refused
    assert refused[0] >= settings.MCP_UNAUTHENTICATED_PER_MINUTE, refused
    with pytest.raises(InvalidStatus):  # no token at all: refused too
        ws_connect(url, subprotocols=["mcp"], open_timeout=15)
    again = McpWs(world.base_url, world.alice_key)
    try:
        assert again.call("get_account", account_id=world.a.pk).ok
    finally:
        again.close()
