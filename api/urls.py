"""Routes of ``/api/v1/`` and of the OpenAPI schema and its viewers (``/api/schema/``,
``/api/docs/`` Swagger UI, ``/api/redoc/``; assets served locally by drf-spectacular-sidecar)."""
from django.urls import include, path, re_path
from drf_spectacular.views import SpectacularAPIView, SpectacularRedocView, SpectacularSwaggerView

from api import views as v

v1 = [
    path("markets", v.MarketListView.as_view(), name="markets"),
    path("ticker/bookTicker", v.TickerView.as_view(), name="ticker-book"),
    path("ticker/24hr", v.Ticker24hView.as_view(), name="ticker-24hr"),
    path("depth", v.DepthView.as_view(), name="depth"),
    path("klines", v.KlinesView.as_view(), name="klines"),
    path("indicators", v.IndicatorsView.as_view(), name="indicators"),
    path("fees", v.FeesView.as_view(), name="fees"),
    path("accounts", v.AccountListView.as_view(), name="accounts"),
    path("accounts/<str:accountId>", v.AccountDetailView.as_view(), name="account"),
    path("accounts/<str:accountId>/balances", v.BalancesView.as_view(), name="balances"),
    path("accounts/<str:accountId>/positions", v.PositionsView.as_view(), name="positions"),
    path("accounts/<str:accountId>/positions/<str:symbol>/close", v.ClosePositionView.as_view(), name="position-close"),
    path("accounts/<str:accountId>/portfolio", v.PortfolioView.as_view(), name="portfolio"),
    path("accounts/<str:accountId>/pnl", v.PnlView.as_view(), name="pnl"),
    path("accounts/<str:accountId>/orders", v.OrderListView.as_view(), name="orders"),
    path("accounts/<str:accountId>/open-orders", v.OpenOrderListView.as_view(), name="open-orders"),
    path("accounts/<str:accountId>/orders/<str:orderId>", v.OrderDetailView.as_view(), name="order"),
    path("accounts/<str:accountId>/orders/<str:orderId>/cancel-replace", v.CancelReplaceView.as_view(), name="order-cancel-replace"),
    path("accounts/<str:accountId>/oco", v.OcoView.as_view(), name="oco"),
    path("accounts/<str:accountId>/fills", v.FillListView.as_view(), name="fills"),
    path("accounts/<str:accountId>/approvals", v.ApprovalListView.as_view(), name="approvals"),
    path("accounts/<str:accountId>/risk", v.RiskStateView.as_view(), name="risk"),
    path("accounts/<str:accountId>/risk/limits", v.RiskLimitsView.as_view(), name="risk-limits"),
    path("accounts/<str:accountId>/audit-events", v.AuditEventListView.as_view(), name="audit-events"),
    path("approvals/<str:approvalId>/approve", v.ApprovalDecisionView.as_view(decision="approve"), name="approval-approve"),
    path("approvals/<str:approvalId>/reject", v.ApprovalDecisionView.as_view(decision="reject"), name="approval-reject"),
    re_path(r"^.*$", v.not_found, name="not-found"),  # any other /api/v1/ path: a JSON 404, not Django's page
]

urlpatterns = [
    path("v1/", include((v1, "api-v1"))),
    path("schema/", SpectacularAPIView.as_view(), name="schema"),
    path("docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="swagger-ui"),
    path("redoc/", SpectacularRedocView.as_view(url_name="schema"), name="redoc"),
]
