from django.urls import path

from agenteval import views

urlpatterns = [
    path("", views.evaluation_list, name="evaluation-list"),
    path("<str:run_id>/", views.evaluation_detail, name="evaluation-detail"),
    path("<str:run_id>/equity.png", views.evaluation_png, name="evaluation-png"),
]
