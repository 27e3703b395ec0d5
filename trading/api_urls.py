from django.urls import path

from trading import api

urlpatterns = [
    path("accounts/", api.AccountListView.as_view(), name="api-accounts"),
    path("accounts/<int:account_id>/", api.AccountDetailView.as_view(), name="api-account"),
    path("orders/", api.OrderListView.as_view(), name="api-orders"),
    path("approvals/", api.ApprovalListView.as_view(), name="api-approvals"),
    path("approvals/<int:approval_id>/approve/", api.ApprovalDecisionView.as_view(decision="approve"), name="api-approval-approve"),
    path("approvals/<int:approval_id>/reject/", api.ApprovalDecisionView.as_view(decision="reject"), name="api-approval-reject"),
]
