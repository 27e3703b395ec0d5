"""URL routes: dashboard, auth, admin and the REST API. ``/mcp`` is served by
``project.mcp_endpoint`` ahead of Django (see ``project.asgi``)."""
from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path

urlpatterns = [
    path("admin/", admin.site.urls),
    path("login/", auth_views.LoginView.as_view(template_name="registration/login.html"), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("api/", include("trading.api_urls")),
    path("evaluations/", include("agenteval.urls")),
    path("", include("ops.urls")),  # /healthz, /readyz, /metrics
    path("notifications/", include("notifications.urls")),
    path("", include("trading.urls")),
]
