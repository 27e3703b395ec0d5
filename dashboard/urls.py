from django.urls import path

from dashboard import views

urlpatterns = [
    path("", views.dashboard_view, name="dashboard"),
    path("market/", views.market_view, name="market-default"),
    path("market/<str:symbol>/", views.market_view, name="market"),
    path("tokens/", views.tokens_view, name="tokens"),
    path("tokens/<int:token_id>/revoke/", views.token_revoke_view, name="token-revoke"),
    path("accounts/<int:account_id>/sharing/", views.account_sharing_view, name="account-sharing"),
    path("dashboard/state/", views.dashboard_state, name="dashboard-state"),
    path("dashboard/api/chart/<str:symbol>/", views.chart_json, name="dashboard-chart"),
    path("dashboard/api/market/<str:symbol>/", views.market_json, name="dashboard-market"),
    path("dashboard/api/accounts/<int:account_id>/halt/", views.account_halt, name="dashboard-halt"),
    path("dashboard/api/accounts/<int:account_id>/resume/", views.account_resume, name="dashboard-resume"),
]
