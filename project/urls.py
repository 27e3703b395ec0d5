"""URL routes: dashboard, auth, admin and the REST API. ``/mcp`` is served by
``mcpapi.endpoint`` ahead of Django (see ``project.asgi``)."""
from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path

from oauth.views import LoginView

urlpatterns = [
    path("admin/", admin.site.urls),
    path("login/", LoginView.as_view(), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("", include("oauth.urls")),
    path("api/", include("api.urls")),
    path("evaluations/", include("agenteval.urls")),
    path("", include("ops.urls")),  # /healthz, /readyz, /metrics
    path("notifications/", include("notifications.urls")),
    path("", include("dashboard.urls")),
]
