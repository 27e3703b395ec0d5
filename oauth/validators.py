"""django-oauth-toolkit's request validator (oauthlib's ``RequestValidator`` interface), extended
with what the MCP authorization spec and our permission model need:

- the RFC 8707 ``resource`` is required at the authorization and token endpoints and must be our
  MCP resource (``settings.MCP_RESOURCE_URL``), else ``invalid_target``;
- the authorization code is bound to the consent (``OAuthGrant``) the person just gave, and the
  tokens minted from it (and from their refreshes) to the same grant, through the refresh-token
  family; a revoked grant or permission record exchanges and refreshes nothing.
"""
from __future__ import annotations

from django.conf import settings
from oauthlib.oauth2.rfc6749 import errors
from oauth2_provider.oauth2_validators import OAuth2Validator

from oauth import selectors, services


def request_resources(request) -> list[str]:
    """The RFC 8707 ``resource`` values of an oauthlib request: from the consent form (a list),
    or every ``resource`` parameter of a token request's body (oauthlib keeps only the last)."""
    value = getattr(request, "resource", None)
    if isinstance(value, list):
        return value
    if isinstance(value, str) and value:
        body = [v for k, v in (getattr(request, "decoded_body", None) or []) if k == "resource"]
        return body or [value]
    return []


def require_resource(request) -> None:
    """Raise oauthlib's ``invalid_target`` (RFC 8707 §2) unless the request names exactly our MCP resource."""
    if not selectors.resource_matches(request_resources(request)):
        raise errors.CustomOAuth2Error(
            error="invalid_target",
            description=f"The resource parameter is required and must be {settings.MCP_RESOURCE_URL} (RFC 8707).",
            request=request,
        )


class GrantLinkingValidator(OAuth2Validator):
    """``OAuth2Validator`` that enforces our resource and links codes and tokens to consents."""

    def save_authorization_code(self, client_id, code, request, *args, **kwargs):
        """Refuse without our resource or without a consent (``tradingmcp_grant_id``, set by the
        consent view), then store the code and bind it to the consent."""
        require_resource(request)
        grant_id = getattr(request, "tradingmcp_grant_id", None)
        if grant_id is None:
            raise errors.AccessDeniedError(description="No consent was recorded for this authorization.", request=request)
        super().save_authorization_code(client_id, code, request, *args, **kwargs)
        services.oauth_grant_bind_code(grant_id=grant_id, code=code["code"])

    def validate_code(self, client_id, code, client, request, *args, **kwargs):
        """The code is valid (django-oauth-toolkit), the token request names our resource, and the
        consent it was issued for is still active and not yet exchanged."""
        if not super().validate_code(client_id, code, client, request, *args, **kwargs):
            return False
        require_resource(request)
        grant = services.oauth_grant_for_code(application=client, code=code)
        if grant is None:
            return False
        request.tradingmcp_grant = grant
        return True

    def validate_refresh_token(self, refresh_token, client, request, *args, **kwargs):
        """The refresh token is valid (django-oauth-toolkit, with reuse protection), the request
        names our resource, and its grant is still active."""
        if not super().validate_refresh_token(refresh_token, client, request, *args, **kwargs):
            return False
        require_resource(request)
        instance = getattr(request, "refresh_token_instance", None)
        grant = services.oauth_grant_for_family(application=client, token_family=getattr(instance, "token_family", None))
        if grant is None:
            return False
        request.tradingmcp_grant = grant
        return True

    def save_bearer_token(self, token, request, *args, **kwargs):
        """Store the tokens (django-oauth-toolkit), then bind the grant to their refresh-token family."""
        result = super().save_bearer_token(token, request, *args, **kwargs)
        grant = getattr(request, "tradingmcp_grant", None)
        if grant is not None and grant.token_family is None and token.get("refresh_token"):
            services.oauth_grant_bind_tokens(grant=grant, refresh_token=token["refresh_token"])
        return result

    def revoke_token(self, token, token_type_hint, request, *args, **kwargs):
        """RFC 7009 (django-oauth-toolkit revokes the token and its pair); the client gave its
        grant up, so the grant and its permission record are revoked too."""
        client = getattr(request, "client", None)
        family = services.oauth_token_family(application=client, raw=token)
        super().revoke_token(token, token_type_hint, request, *args, **kwargs)
        if family is not None:
            services.oauth_grant_revoke_family(application=client, token_family=family)
