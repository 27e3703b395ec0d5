"""``/api/v1/``: the REST API for people's own programs. Each view is thin: it checks the
caller (token scope, account and symbol restrictions: the MCP tools' rules), validates the
request (``api.serializers``) and calls the same service or selector as the matching MCP tool
(``mcpapi/tools/trading.py``, ``mcpapi/tools/marketdata.py``, ``mcpapi/tools/risk.py``), then answers its dict.

Auth: ``Authorization: Bearer <agent token>`` or the dashboard's session (with its CSRF token
on writes); rate limits per token (``risk.authentication.TokenRateThrottle``, 429 + Retry-After).
Errors: ``api.exceptions``. Another user's account, order, fill, approval or audit event answers
404, as if it did not exist.
"""
from __future__ import annotations

import time
import uuid

from drf_spectacular.utils import OpenApiExample, OpenApiParameter, OpenApiResponse, extend_schema, inline_serializer
from rest_framework import serializers, status
from rest_framework.decorators import api_view, authentication_classes, permission_classes, schema, throttle_classes
from rest_framework.pagination import PageNumberPagination
from rest_framework.parsers import JSONParser
from rest_framework.permissions import AllowAny
from rest_framework.renderers import JSONRenderer
from rest_framework.response import Response
from rest_framework.views import APIView
from rest_framework_csv.renderers import PaginatedCSVRenderer

from api import exceptions
from api import serializers as s
from api.fields import Integer, Text
from core.errors import NotFound
from marketdata import selectors as md
from risk import access
from risk import selectors as risk_selectors
from risk import services as risk_services
from risk.audit import audit_enqueue
from risk.authentication import requested_symbols
from risk.models import AgentToken, Channel, Outcome, Scope
from trading import approvals, portfolio, selectors, services

ERRORS = {code: OpenApiResponse(s.ErrorSerializer, description=text) for code, text in {
    400: "Bad request: {code, msg, errors?}; nothing changed.",
    413: "Request body too large (code -1100).",
    415: "The body is not JSON (code -1100): send Content-Type: application/json.",
    401: "Missing, invalid, expired or revoked credentials (code -1002).",
    403: "The token lacks the scope, the symbol is outside its restriction, a viewer tried to trade, or "
         "a session write came without its CSRF token (code -2015).",
    404: "No such object among yours (code -2013), or no market data of that kind at all (code -1003).",
    429: "Over the token's rate limit; Retry-After says when to retry (code -1003).",
    503: "No fresh market data for the symbol yet (code -1003); retry shortly.",
}.items()}


def errors(*codes: int) -> dict:
    """The documented error responses of an operation (401 and 429 apply to all)."""
    return {c: ERRORS[c] for c in sorted({401, 429, *codes})}


def write_errors(*codes: int) -> dict:
    """``errors`` of an operation with a request body (413, 415 too)."""
    return errors(400, 413, 415, *codes)


ACCOUNT_ID = OpenApiParameter("accountId", int, OpenApiParameter.PATH, description="One of your accounts (accountId).",
                              examples=[OpenApiExample("accountId", value=1)])


class ApiView(APIView):
    """Base of every ``/api/v1/`` view. ``scopes``: HTTP method → the token scope it needs (a
    person's session has them all)."""

    scopes: dict[str, str] = {}
    parser_classes = [JSONParser]  # bodies are JSON objects; a form or multipart body is a 415
    renderer_classes = [JSONRenderer]  # what the schema documents (browse it at /api/docs/)

    def get_exception_handler(self):
        return exceptions.handle

    def handle_exception(self, exc):
        """Errors are always JSON, even when the request asked for CSV (``?format=csv``)."""
        response = super().handle_exception(exc)
        if not isinstance(getattr(self.request, "accepted_renderer", None), JSONRenderer):
            self.request.accepted_renderer, self.request.accepted_media_type = JSONRenderer(), "application/json"
        return response

    def initial(self, request, *args, **kwargs):
        self.started = time.perf_counter()
        self.request_id = uuid.uuid4().hex[:16]
        self.audit_account = None
        super().initial(request, *args, **kwargs)
        token = self.token
        if token is None:
            return
        scope = self.scopes.get("GET" if request.method == "HEAD" else request.method)
        named = requested_symbols(kwargs) + requested_symbols(request.query_params.dict())
        if request.method in ("POST", "PUT", "PATCH") and isinstance(request.data, dict):
            named += requested_symbols(request.data)
        access.require(token, scope=scope, symbols=named, what=f"{request.method} {request.path}")

    def finalize_response(self, request, response, *args, **kwargs):
        """As the MCP guard audits every tool call: an agent token's reads (``api.<endpoint>``,
        through the audit write-ahead log, off the request path) and any refusal of its
        permissions. Writes are audited by their services (``order.place``, ...), in their
        transaction; a person's session reads are not audited (the dashboard polls them)."""
        response = super().finalize_response(request, response, *args, **kwargs)
        token = self.token
        if token is not None and (request.method == "GET" or response.status_code == 403):
            failed = response.status_code >= 400
            name = getattr(request.resolver_match, "url_name", None) or type(self).__name__
            params = {**request.query_params.dict(), **{k: str(v) for k, v in kwargs.items()}}
            audit_enqueue(channel=Channel.API, action=f"api.{name}", outcome=Outcome.REJECTED if failed else Outcome.OK,
                          actor_user=request.user, actor_token=token, account=self.audit_account, params=params,
                          message=str(response.data.get("msg", "")) if failed and isinstance(response.data, dict) else "",
                          result={"status": response.status_code},
                          latency_ms=(time.perf_counter() - getattr(self, "started", time.perf_counter())) * 1000,
                          request_id=getattr(self, "request_id", ""))
        return response

    @property
    def token(self) -> AgentToken | None:
        """The request's agent token, or None for a person's session."""
        return self.request.auth if isinstance(self.request.auth, AgentToken) else None

    @property
    def channel(self) -> str:
        return Channel.API if self.token is not None else Channel.DASHBOARD

    def visible(self, rows: list[dict], key: str = "symbol") -> list[dict]:
        """``rows`` a token restricted to some symbols may see (all of them for others): ``risk.access.visible``."""
        return access.visible(self.token, rows, key)

    def symbols_default(self) -> list[str] | None:
        """The symbols a read with no ``symbols`` covers: a restricted token's, else None (all)."""
        return access.symbols_default(self.token)

    def account(self, need: str = "read"):
        """The ``account_id`` of the URL, if the caller (and its token) may use it for ``need``."""
        self.audit_account = selectors.account_get(user=self.request.user, account_id=self.kwargs["accountId"], need=need,
                                                   token=self.token)
        return self.audit_account

    def query(self, serializer_class) -> dict:
        data = serializer_class(data=self.request.query_params.dict())
        data.is_valid(raise_exception=True)
        return data.validated_data

    def body(self, serializer_class) -> dict:
        payload = self.request.data
        if not isinstance(payload, dict):
            raise serializers.ValidationError({"non_field_errors": ["The request body must be a JSON object."]})
        data = serializer_class(data=payload)
        data.is_valid(raise_exception=True)
        return data.validated_data

    def path_id(self, name: str, what: str) -> int:
        """The URL's ``name`` id as an int; anything that cannot be a row's id is ``NotFound``."""
        value = str(self.kwargs[name])
        if not value.isascii() or not value.isdigit() or not 0 < int(value) < 2**63:
            raise NotFound(f"{what} does not exist.")
        return int(value)

    def order_visible(self, order: dict) -> dict:
        """``order`` if the token may see its symbol, else ``NotFound`` (as if it did not exist)."""
        return access.order_visible(self.token, order)


@api_view(["GET", "POST", "PUT", "PATCH", "DELETE"])
@authentication_classes([])
@permission_classes([AllowAny])
@throttle_classes([])
@schema(None)
def not_found(request, *args, **kwargs):
    """Any path under /api/v1/ that no endpoint serves: 404 with a Binance-style body."""
    return Response({"code": -2013, "msg": f"No such endpoint: {request.path}. See /api/docs/."}, status=status.HTTP_404_NOT_FOUND)


# --- market data ----------------------------------------------------------------------------------

class MarketListView(ApiView):
    """GET /api/v1/markets: ``marketdata.selectors.markets_list`` (MCP ``list_markets``)."""

    scopes = {"GET": Scope.MARKET_READ}

    @extend_schema(tags=["market data"], operation_id="markets_list", parameters=[s.MarketQuery],
                   responses={200: s.MarketPageSerializer, **errors(400, 403)},
                   summary="Spot markets with their trading rules (exchangeInfo), a page at a time")
    def get(self, request):
        q = self.query(s.MarketQuery)
        out = md.markets_list(quote_asset=q.get("quoteAsset"), status=q.get("status"), page=q["page"], page_size=q["pageSize"])
        out["markets"] = self.visible(out["markets"])
        return Response(out)


class TickerView(ApiView):
    """GET /api/v1/ticker/bookTicker?symbol=: ``marketdata.selectors.quote_get`` (MCP ``get_ticker``)."""

    scopes = {"GET": Scope.MARKET_READ}

    @extend_schema(tags=["market data"], operation_id="ticker_book", parameters=[s.CancelAllQuery],
                   responses={200: s.TickerSerializer, **errors(400, 403, 503)},
                   summary="Live best bid/ask (bookTicker) of a symbol")
    def get(self, request):
        q = self.query(s.CancelAllQuery)
        sym = md.symbol_get(q["symbol"])
        return Response(md.quote_get(sym.symbol).as_dict())


class Ticker24hView(ApiView):
    """GET /api/v1/ticker/24hr?symbols=: ``marketdata.selectors.ticker_24h_list`` (MCP ``get_ticker_24h``)."""

    scopes = {"GET": Scope.MARKET_READ}

    @extend_schema(tags=["market data"], operation_id="ticker_24hr", parameters=[s.SymbolsQuery],
                   responses={200: s.Ticker24hListSerializer, **errors(400, 403, 503)},
                   summary="Rolling 24 h statistics (GET /api/v3/ticker/24hr)")
    def get(self, request):
        q = self.query(s.SymbolsQuery)
        names = [x.symbol for x in md.symbols_check(q["symbols"])] if q.get("symbols") else self.symbols_default()
        return Response(md.ticker_24h_list(names))


class DepthView(ApiView):
    """GET /api/v1/depth?symbol=&limit=: ``marketdata.selectors.order_book`` (MCP ``get_order_book``)."""

    scopes = {"GET": Scope.MARKET_READ}

    class Query(s.BookQuery):
        symbol = s.symbol_field()

    @extend_schema(tags=["market data"], operation_id="depth", parameters=[Query],
                   responses={200: s.BookSerializer, **errors(400, 403, 503)},
                   summary="Order book of a symbol (GET /api/v3/depth)")
    def get(self, request):
        q = self.query(self.Query)
        sym = md.symbol_get(q["symbol"])
        return Response(md.order_book(symbol=sym.symbol, limit=q["limit"]))


class KlinesView(ApiView):
    """GET /api/v1/klines: ``marketdata.selectors.klines_range`` (MCP ``get_klines``)."""

    scopes = {"GET": Scope.MARKET_READ}

    class Query(s.KlineQuery):
        symbol = s.symbol_field()

    @extend_schema(tags=["market data"], operation_id="klines", parameters=[Query],
                   responses={200: s.KlinePageSerializer, **errors(400, 403, 503)},
                   summary="Candles (klines), oldest first; page with nextStartTime")
    def get(self, request):
        q = self.query(self.Query)
        sym = md.symbol_get(q["symbol"])
        return Response(md.klines_range(symbol=sym.symbol, interval=q["interval"], limit=q["limit"],
                                        start_time=q.get("startTime"), end_time=q.get("endTime")))


class IndicatorsView(ApiView):
    """GET /api/v1/indicators: ``marketdata.selectors.indicators_compute`` (MCP ``get_indicators``)."""

    scopes = {"GET": Scope.MARKET_READ}

    class Query(s.IndicatorQuery):
        symbol = s.symbol_field()

    @extend_schema(tags=["market data"], operation_id="indicators", parameters=[Query],
                   responses={200: s.IndicatorsSerializer, **errors(400, 403, 404, 503)},
                   summary="Technical indicators (TA-Lib) and seed signals at the latest closed candle")
    def get(self, request):
        q = self.query(self.Query)
        sym = md.symbol_get(q["symbol"])
        names = q["indicators"].split(",") if q.get("indicators") else None
        return Response(md.indicators_compute(symbol=sym.symbol, interval=q["interval"], indicators=names))


class FeesView(ApiView):
    """GET /api/v1/fees: ``marketdata.selectors.fees_list`` (MCP ``get_fees``)."""

    scopes = {"GET": Scope.MARKET_READ}

    @extend_schema(tags=["market data"], operation_id="fees", parameters=[s.SymbolsQuery],
                   responses={200: s.FeesSerializer, **errors(400, 403)},
                   summary="Maker/taker commission rates, per symbol and of your accounts")
    def get(self, request):
        q = self.query(s.SymbolsQuery)
        names = [x.symbol for x in md.symbols_check(q["symbols"])] if q.get("symbols") else self.symbols_default()
        return Response(md.fees_list(names=names, user=request.user))


# --- accounts -------------------------------------------------------------------------------------

class AccountListView(ApiView):
    """GET /api/v1/accounts: ``trading.selectors.account_state`` of each account you may use."""

    scopes = {"GET": Scope.ACCOUNT_READ}

    @extend_schema(tags=["accounts"], operation_id="accounts_list",
                   responses={200: s.AccountSerializer(many=True), **errors(403)},
                   summary="Your accounts: balances, positions, fee rates, main limits")
    def get(self, request):
        accounts = selectors.accounts_for_user(request.user, token=self.token).order_by("id")
        out = []
        for account in accounts:
            state = selectors.account_state(account=account)
            state["positions"] = self.visible(state["positions"])
            out.append(state)
        return Response(out)


class AccountDetailView(ApiView):
    """GET /api/v1/accounts/{id}: ``trading.selectors.account_state`` (MCP ``get_account``)."""

    scopes = {"GET": Scope.ACCOUNT_READ}

    @extend_schema(tags=["accounts"], operation_id="account_get", parameters=[ACCOUNT_ID],
                   responses={200: s.AccountSerializer, **errors(400, 403, 404)}, summary="One of your accounts")
    def get(self, request, accountId: int):
        state = selectors.account_state(account=self.account())
        state["positions"] = self.visible(state["positions"])
        return Response(state)


class BalancesView(ApiView):
    """GET /api/v1/accounts/{id}/balances: ``trading.selectors.balances_list``."""

    scopes = {"GET": Scope.ACCOUNT_READ}

    @extend_schema(tags=["accounts"], operation_id="balances", parameters=[ACCOUNT_ID],
                   responses={200: s.BalancesSerializer, **errors(400, 403, 404)}, summary="Balances (free, locked) per asset")
    def get(self, request, accountId: int):
        account = self.account()
        return Response({"accountId": account.pk, "balances": selectors.balances_list(account=account)})


class PositionsView(ApiView):
    """GET /api/v1/accounts/{id}/positions: ``trading.portfolio.positions_list`` (MCP ``get_positions``)."""

    scopes = {"GET": Scope.ACCOUNT_READ}

    @extend_schema(tags=["accounts"], operation_id="positions", parameters=[ACCOUNT_ID],
                   responses={200: s.PositionsSerializer, **errors(400, 403, 404)},
                   summary="Positions per symbol with mark price and P&L")
    def get(self, request, accountId: int):
        account = self.account()
        return Response({"accountId": account.pk, "positions": self.visible(portfolio.positions_list(account=account))})


class PortfolioView(ApiView):
    """GET /api/v1/accounts/{id}/portfolio: ``trading.portfolio.portfolio_get`` (MCP ``get_portfolio``)."""

    scopes = {"GET": Scope.ACCOUNT_READ}

    @extend_schema(tags=["accounts"], operation_id="portfolio", parameters=[ACCOUNT_ID],
                   responses={200: s.PortfolioSerializer, **errors(400, 403, 404)},
                   summary="The account valued in its quote asset")
    def get(self, request, accountId: int):
        out = portfolio.portfolio_get(account=self.account())
        out["positions"] = self.visible(out["positions"])
        return Response(out)


class PnlView(ApiView):
    """GET /api/v1/accounts/{id}/pnl?period=: ``trading.portfolio.pnl_get`` (MCP ``get_pnl``)."""

    scopes = {"GET": Scope.ACCOUNT_READ}

    @extend_schema(tags=["accounts"], operation_id="pnl", parameters=[ACCOUNT_ID, s.PnlQuery],
                   responses={200: s.PnlSerializer, **errors(400, 403, 404)},
                   summary="Profit and loss over a period, with daily rollups")
    def get(self, request, accountId: int):
        q = self.query(s.PnlQuery)
        return Response(portfolio.pnl_get(account=self.account(), period=q["period"]))


# --- orders ---------------------------------------------------------------------------------------

def _place_status(order: dict, duplicate: bool) -> int:
    if order.get("status") == "PENDING_APPROVAL":
        return status.HTTP_202_ACCEPTED  # confirm mode: waits for a person
    return status.HTTP_200_OK if duplicate else status.HTTP_201_CREATED


class OrderListView(ApiView):
    """GET (MCP ``list_orders``), POST (``order_place``, MCP ``place_order``) and DELETE?symbol= (``order_cancel_all``, MCP ``cancel_all_orders``) on /api/v1/accounts/{id}/orders."""

    scopes = {"GET": Scope.ACCOUNT_READ, "POST": Scope.TRADE, "DELETE": Scope.TRADE}

    @extend_schema(tags=["orders"], operation_id="orders_list", parameters=[ACCOUNT_ID, s.OrderQuery],
                   responses={200: s.OrdersSerializer, **errors(400, 403, 404)},
                   summary="Your most recent orders, newest first, with their fills")
    def get(self, request, accountId: int):
        q = self.query(s.OrderQuery)
        account = self.account()
        orders = selectors.orders_list(account=account, symbol=q.get("symbol"), limit=q["limit"], symbols=self.symbols_default())
        return Response({"accountId": account.pk, "orders": self.visible(orders)})

    @extend_schema(tags=["orders"], operation_id="order_place", parameters=[ACCOUNT_ID], request=s.OrderInput,
                   responses={201: s.PlacedOrderSerializer,
                              200: OpenApiResponse(s.PlacedOrderSerializer, description="Duplicate clientOrderId: the first order."),
                              202: OpenApiResponse(s.ApprovalSerializer, description="Confirm-mode token: held for a person's approval."),
                              **write_errors(400, 403, 404, 503)},
                   summary="Place an order of any type (risk-checked, audited, idempotent by clientOrderId)")
    def post(self, request, accountId: int):
        v = self.body(s.OrderInput)
        account = self.account("trade")
        result = services.order_place(
            account=account, actor_user=request.user, actor_token=self.token, channel=self.channel,
            symbol=v["symbol"], side=v["side"], order_type=v["type"], quantity=v.get("quantity"),
            quote_order_qty=v.get("quoteOrderQty"), price=v.get("price"), stop_price=v.get("stopPrice"),
            time_in_force=v.get("timeInForce"), client_order_id=v.get("clientOrderId"), request_id=self.request_id,
        )
        return Response({**result.order, "duplicate": result.duplicate}, status=_place_status(result.order, result.duplicate))

    @extend_schema(tags=["orders"], operation_id="orders_cancel_all", parameters=[ACCOUNT_ID, s.CancelAllQuery],
                   responses={200: s.CanceledSerializer, **errors(400, 403, 404)},
                   summary="Cancel every open order of one symbol")
    def delete(self, request, accountId: int):
        q = self.query(s.CancelAllQuery)
        account = self.account("trade")
        out = services.order_cancel_all(account=account, actor_user=request.user, actor_token=self.token,
                                        channel=self.channel, symbol=q["symbol"], request_id=self.request_id)
        return Response({"accountId": account.pk, "symbol": q["symbol"].upper(), "canceled": out})


class OpenOrderListView(ApiView):
    """GET /api/v1/accounts/{id}/open-orders: ``trading.selectors.open_orders_list`` (MCP ``list_open_orders``)."""

    scopes = {"GET": Scope.ACCOUNT_READ}

    @extend_schema(tags=["orders"], operation_id="open_orders", parameters=[ACCOUNT_ID, s.OpenOrderQuery],
                   responses={200: s.OrdersSerializer, **errors(400, 403, 404)},
                   summary="Open orders (NEW, PARTIALLY_FILLED), oldest first")
    def get(self, request, accountId: int):
        q = self.query(s.OpenOrderQuery)
        account = self.account()
        orders = selectors.open_orders_list(account=account, symbol=q.get("symbol"))
        return Response({"accountId": account.pk, "orders": self.visible(orders)})


ORDER_ID = OpenApiParameter("orderId", int, OpenApiParameter.PATH, description="The order's orderId.",
                            examples=[OpenApiExample("orderId", value=42)])


class OrderDetailView(ApiView):
    """GET (MCP ``get_order``) and DELETE (``order_cancel``, MCP ``cancel_order``) of one order."""

    scopes = {"GET": Scope.ACCOUNT_READ, "DELETE": Scope.TRADE}

    @extend_schema(tags=["orders"], operation_id="order_get", parameters=[ACCOUNT_ID, ORDER_ID],
                   responses={200: s.OrderSerializer, **errors(400, 403, 404)}, summary="One order with its fills")
    def get(self, request, accountId: int, orderId: int):
        order_id = self.path_id("orderId", "Order")
        return Response(self.order_visible(selectors.order_get(account=self.account(), order_id=order_id)))

    @extend_schema(tags=["orders"], operation_id="order_cancel", parameters=[ACCOUNT_ID, ORDER_ID],
                   responses={200: s.OrderSerializer, **errors(400, 403, 404)},
                   summary="Cancel an open order (an OCO leg cancels its list); -2011 when no longer open")
    def delete(self, request, accountId: int, orderId: int):
        account = self.account("trade")
        order_id = self.path_id("orderId", "Order")
        order = self.order_visible(selectors.order_get(account=account, order_id=order_id))
        return Response(services.order_cancel(account=account, actor_user=request.user, actor_token=self.token,
                                              channel=self.channel, symbol=order["symbol"], order_id=order_id,
                                              request_id=self.request_id))


class CancelReplaceView(ApiView):
    """POST .../orders/{orderId}/cancel-replace: ``trading.services.order_cancel_replace``."""

    scopes = {"POST": Scope.TRADE}

    @extend_schema(tags=["orders"], operation_id="order_cancel_replace", parameters=[ACCOUNT_ID, ORDER_ID],
                   request=s.CancelReplaceInput, responses={200: s.CancelReplaceSerializer, **write_errors(400, 403, 404, 503)},
                   summary="Amend: cancel this open order, then place the new one (nothing placed if the cancel fails)")
    def post(self, request, accountId: int, orderId: int):
        v = self.body(s.CancelReplaceInput)
        account = self.account("trade")
        order_id = self.path_id("orderId", "Order")
        order = self.order_visible(selectors.order_get(account=account, order_id=order_id))
        if order["symbol"] != v["symbol"].upper():
            raise serializers.ValidationError({"symbol": [f"Order {order_id} is on {order['symbol']}: the new order must be too."]})
        return Response(services.order_cancel_replace(
            account=account, actor_user=request.user, actor_token=self.token, channel=self.channel,
            symbol=order["symbol"], side=v["side"], order_type=v["type"], cancel_order_id=order_id,
            quantity=v.get("quantity"), quote_order_qty=v.get("quoteOrderQty"), price=v.get("price"),
            stop_price=v.get("stopPrice"), time_in_force=v.get("timeInForce"), client_order_id=v.get("clientOrderId"),
            request_id=self.request_id,
        ))


class OcoView(ApiView):
    """POST /api/v1/accounts/{id}/oco: ``trading.services.oco_place`` (MCP ``place_oco``)."""

    scopes = {"POST": Scope.TRADE}

    @extend_schema(tags=["orders"], operation_id="oco_place", parameters=[ACCOUNT_ID], request=s.OcoInput,
                   responses={201: s.OcoSerializer,
                              200: OpenApiResponse(s.OcoSerializer, description="Duplicate listClientOrderId: the first list."),
                              **write_errors(400, 403, 404, 503)},
                   summary="Place an OCO pair (take-profit LIMIT_MAKER + stop)")
    def post(self, request, accountId: int):
        v = self.body(s.OcoInput)
        account = self.account("trade")
        out = services.oco_place(account=account, actor_user=request.user, actor_token=self.token, channel=self.channel,
                                 symbol=v["symbol"], side=v["side"], quantity=v["quantity"], price=v["price"],
                                 stop_price=v["stopPrice"], stop_limit_price=v.get("stopLimitPrice"),
                                 stop_limit_time_in_force=v.get("stopLimitTimeInForce"),
                                 list_client_order_id=v.get("listClientOrderId"), request_id=self.request_id)
        return Response(out, status=status.HTTP_200_OK if out.get("duplicate") else status.HTTP_201_CREATED)


class ClosePositionView(ApiView):
    """POST .../positions/{symbol}/close: ``trading.services.position_close`` (MCP ``close_position``)."""

    scopes = {"POST": Scope.TRADE}

    @extend_schema(tags=["orders"], operation_id="position_close",
                   parameters=[ACCOUNT_ID, OpenApiParameter("symbol", str, OpenApiParameter.PATH, description="The position's symbol.",
                                                   examples=[OpenApiExample("BTCUSDT", value="BTCUSDT")])],
                   request=s.ClosePositionInput,
                   responses={201: s.PlacedOrderSerializer,
                              200: OpenApiResponse(s.PlacedOrderSerializer, description="Duplicate clientOrderId: the first order."),
                              202: OpenApiResponse(s.ApprovalSerializer, description="Confirm-mode token: held for approval."),
                              **write_errors(400, 403, 404, 503)},
                   summary="Close a position: cancel its open orders, then MARKET SELL the free base asset")
    def post(self, request, accountId: int, symbol: str):
        v = self.body(s.ClosePositionInput)
        account = self.account("trade")
        result = services.position_close(account=account, actor_user=request.user, actor_token=self.token,
                                         channel=self.channel, symbol=symbol, client_order_id=v.get("clientOrderId"),
                                         request_id=self.request_id)
        return Response({**result.order, "duplicate": result.duplicate}, status=_place_status(result.order, result.duplicate))


class FillListView(ApiView):
    """GET /api/v1/accounts/{id}/fills: ``trading.selectors.trades_list`` (MCP ``get_trade_history``)."""

    scopes = {"GET": Scope.ACCOUNT_READ}

    @extend_schema(tags=["orders"], operation_id="fills", parameters=[ACCOUNT_ID, s.FillQuery],
                   responses={200: s.FillsSerializer, **errors(400, 403, 404)},
                   summary="Your fills (trades), newest first (or from fromId, oldest first)")
    def get(self, request, accountId: int):
        q = self.query(s.FillQuery)
        account = self.account()
        trades = selectors.trades_list(account=account, symbol=q.get("symbol"), limit=q["limit"], from_id=q.get("fromId"),
                                       symbols=self.symbols_default())
        return Response({"accountId": account.pk, "trades": self.visible(trades)})


# --- approvals ------------------------------------------------------------------------------------

class ApprovalListView(ApiView):
    """GET /api/v1/accounts/{id}/approvals: ``trading.approvals.pending_list`` (MCP ``list_pending_orders``)."""

    scopes = {"GET": Scope.ACCOUNT_READ}

    @extend_schema(tags=["approvals"], operation_id="approvals_list", parameters=[ACCOUNT_ID],
                   responses={200: s.ApprovalsSerializer, **errors(400, 403, 404)},
                   summary="Orders of confirm-mode tokens waiting for a person's approval")
    def get(self, request, accountId: int):
        account = self.account()
        return Response({"accountId": account.pk, "approvals": self.visible(approvals.pending_list(account=account))})


class ApprovalDecisionView(ApiView):
    """A person's decision on a held order (session only: an agent token gets 403)."""

    scopes = {"POST": Scope.TRADE}
    decision = "approve"

    @extend_schema(tags=["approvals"], request=s.DecisionInput,
                   parameters=[OpenApiParameter("approvalId", int, OpenApiParameter.PATH, description="approvalId.")],
                   responses={200: s.DecisionSerializer, **write_errors(400, 403, 404, 503)},
                   summary="Approve (places the order now, risk-checked then) or reject a held order; persons only")
    def post(self, request, approvalId: int):
        v = self.body(s.DecisionInput)
        note = v.get("note", "")
        approval_id = self.path_id("approvalId", "Approval")
        approvals.approval_get(user=request.user, approval_id=approval_id, need="read")  # others': 404, before anything
        if self.decision == "approve":
            out = approvals.order_approve(user=request.user, approval_id=approval_id, channel=self.channel, note=note,
                                          actor_token=self.token)
        else:
            out = {"approval": approvals.order_reject(user=request.user, approval_id=approval_id, channel=self.channel,
                                                      note=note, actor_token=self.token), "order": None, "error": None}
        return Response(out)


# --- risk -----------------------------------------------------------------------------------------

class RiskStateView(ApiView):
    """GET /api/v1/accounts/{id}/risk: ``trading.portfolio.risk_panel`` (state, limits with usage, locks)."""

    scopes = {"GET": Scope.ACCOUNT_READ}

    @extend_schema(tags=["risk"], operation_id="risk_state", parameters=[ACCOUNT_ID],
                   responses={200: s.RiskStateSerializer, **errors(400, 403, 404)},
                   summary="Trading state, each limit with its current use, protection locks")
    def get(self, request, accountId: int):
        return Response(portfolio.risk_panel(account=self.account()))


class RiskLimitsView(ApiView):
    """GET/PATCH /api/v1/accounts/{id}/risk/limits: ``risk.selectors.risk_limits_get`` / ``risk.services.risk_limit_update``."""

    scopes = {"GET": Scope.ACCOUNT_READ, "PATCH": Scope.TRADE}

    @extend_schema(tags=["risk"], operation_id="risk_limits", parameters=[ACCOUNT_ID],
                   responses={200: s.RiskLimitsOutSerializer, **errors(400, 403, 404)}, summary="The account's risk limits")
    def get(self, request, accountId: int):
        return Response(risk_selectors.risk_limits_get(account=self.account()))

    @extend_schema(tags=["risk"], operation_id="risk_limits_update", parameters=[ACCOUNT_ID], request=s.RiskLimitsSerializer,
                   responses={200: s.RiskLimitsOutSerializer, **write_errors(400, 403, 404)},
                   summary="Change limits (the owner, by session only; audited with before/after)")
    def patch(self, request, accountId: int):
        v = self.body(s.RiskLimitsSerializer)
        account = self.account("trade")
        changes = {risk_selectors.LIMIT_FIELDS[name]: value for name, value in v.items()}
        risk_services.risk_limit_update(account=account, actor_user=request.user, actor_token=self.token,
                                        channel=self.channel, changes=changes)
        return Response(risk_selectors.risk_limits_get(account=account))


# --- audit ----------------------------------------------------------------------------------------

class AuditPagination(PageNumberPagination):
    """``?page=&pageSize=`` (1-500, default 100)."""

    page_size = 100
    page_size_query_param = "pageSize"
    max_page_size = 500


class AuditCSVRenderer(PaginatedCSVRenderer):
    """``?format=csv`` (or ``Accept: text/csv``): one row per event of the page, nested fields
    flattened to dotted columns (``params.symbol``)."""

    format = "csv"

    def render(self, data, media_type=None, renderer_context=None, writer_opts=None):
        """An empty page is the header row alone (an empty body would lose its Content-Type)."""
        if isinstance(data, dict) and not data.get(self.results_field):
            return (",".join(s.AuditEventSerializer().fields) + "\r\n").encode()
        return super().render(data, media_type, renderer_context or {}, writer_opts)


class AuditEventListView(ApiView):
    """GET /api/v1/accounts/{id}/audit-events: ``risk.selectors.audit_events_list``, paginated; CSV with ?format=csv."""

    scopes = {"GET": Scope.ACCOUNT_READ}
    renderer_classes = [JSONRenderer, AuditCSVRenderer]

    @extend_schema(tags=["audit"], operation_id="audit_events",
                   parameters=[ACCOUNT_ID, s.AuditQuery],
                   responses={200: inline_serializer("AuditEventPage", {
                       "count": Integer(help_text="Events matching the filters.", example=1),
                       "next": Text(allow_null=True, help_text="URL of the next page, null on the last.", example=None),
                       "previous": Text(allow_null=True, help_text="URL of the previous page.", example=None),
                       "results": s.AuditEventSerializer(many=True),
                   }), **errors(400, 403, 404)},
                   summary="Audit events of one of your accounts, newest first (paginated, filterable, CSV)")
    def get(self, request, accountId: int):
        q = self.query(s.AuditQuery)
        events = risk_selectors.audit_events_list(account=self.account(), action=q.get("action"), outcome=q.get("outcome"),
                                                  channel=q.get("channel"), since_ms=q.get("since"), until_ms=q.get("until"),
                                                  symbols=self.symbols_default())
        paginator = AuditPagination()
        page = paginator.paginate_queryset(events, request, view=self)
        return paginator.get_paginated_response([risk_selectors.audit_event_as_dict(e) for e in page])
