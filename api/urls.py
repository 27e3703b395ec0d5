"""Routes of ``/api/v1/`` and of the OpenAPI schema and its viewers (``/api/schema/``,
``/api/docs/`` Swagger UI, ``/api/redoc/``; assets served locally by drf-spectacular-sidecar)."""
from django.urls import include, path
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
    path("accounts/<int:account_id>", v.AccountDetailView.as_view(), name="account"),
    path("accounts/<int:account_id>/balances", v.BalancesView.as_view(), name="balances"),
    path("accounts/<int:account_id>/positions", v.PositionsView.as_view(), name="positions"),
    path("accounts/<int:account_id>/positions/<str:symbol>/close", v.ClosePositionView.as_view(), name="position-close"),
    path("accounts/<int:account_id>/portfolio", v.PortfolioView.as_view(), name="portfolio"),
    path("accounts/<int:account_id>/pnl", v.PnlView.as_view(), name="pnl"),
    path("accounts/<int:account_id>/orders", v.OrderListView.as_view(), name="orders"),
    path("accounts/<int:account_id>/open-orders", v.OpenOrderListView.as_view(), name="open-orders"),
    path("accounts/<int:account_id>/orders/<int:order_id>", v.OrderDetailView.as_view(), name="order"),
    path("accounts/<int:account_id>/orders/<int:order_id>/cancel-replace", v.CancelReplaceView.as_view(), name="order-cancel-replace"),
    path("accounts/<int:account_id>/oco", v.OcoView.as_view(), name="oco"),
    path("accounts/<int:account_id>/fills", v.FillListView.as_view(), name="fills"),
    path("accounts/<int:account_id>/approvals", v.ApprovalListView.as_view(), name="approvals"),
    path("accounts/<int:account_id>/risk", v.RiskStateView.as_view(), name="risk"),
    path("accounts/<int:account_id>/risk/limits", v.RiskLimitsView.as_view(), name="risk-limits"),
    path("accounts/<int:account_id>/audit-events", v.AuditEventListView.as_view(), name="audit-events"),
    path("approvals/<int:approval_id>/approve", v.ApprovalDecisionView.as_view(decision="approve"), name="approval-approve"),
    path("approvals/<int:approval_id>/reject", v.ApprovalDecisionView.as_view(decision="reject"), name="approval-reject"),
]

urlpatterns = [
    path("v1/", include((v1, "api-v1"))),
    path("schema/", SpectacularAPIView.as_view(), name="schema"),
    path("docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="swagger-ui"),
    path("redoc/", SpectacularRedocView.as_view(url_name="schema"), name="redoc"),
]
