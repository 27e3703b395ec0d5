"""OAuth routes, in django-oauth-toolkit's ``oauth2_provider`` namespace (its views reverse these
names): the endpoints under ``/oauth/``, the metadata documents at the origin's ``/.well-known/``
(RFC 8414 §3, RFC 9728 §3, and the OpenID path some MCP clients probe)."""
from django.urls import path
from oauth2_provider import views as dot_views

from oauth import views

app_name = "oauth2_provider"

urlpatterns = [
    path(".well-known/oauth-authorization-server", dot_views.OAuthServerMetadataView.as_view(),
         name="oauth-server-metadata"),
    path(".well-known/openid-configuration", dot_views.OAuthServerMetadataView.as_view(),
         name="openid-configuration"),
    path(".well-known/oauth-protected-resource", dot_views.OAuthProtectedResourceMetadataView.as_view(),
         name="oauth-resource-metadata"),
    path(".well-known/oauth-protected-resource/mcp", dot_views.OAuthProtectedResourceMetadataView.as_view(),
         name="oauth-resource-metadata-mcp"),
    path("oauth/authorize/", views.ConsentView.as_view(), name="authorize"),
    path("oauth/token/", views.TokenView.as_view(), name="token"),
    path("oauth/revoke_token/", views.RevokeTokenView.as_view(), name="revoke-token"),
    path("oauth/introspect/", views.IntrospectView.as_view(), name="introspect"),
    path("oauth/register/", views.RegistrationView.as_view(), name="dcr-register"),
    path("oauth/register/<str:client_id>/", views.RegistrationManagementView.as_view(),
         name="dcr-register-management"),
    path("oauth/grants/<int:grant_id>/revoke/", views.grant_revoke_view, name="grant-revoke"),
]
