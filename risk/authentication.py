"""DRF authentication by agent token: ``Authorization: Bearer <token>`` (``Token <token>`` also accepted).

Used by the MCP endpoint (``DJANGO_MCP_AUTHENTICATION_CLASSES``) and the REST API. A missing or bad
token on ``/mcp`` answers HTTP 401 with ``WWW-Authenticate: Bearer``.
"""
from __future__ import annotations

from rest_framework import authentication, exceptions

from risk import services


class AgentTokenAuthentication(authentication.BaseAuthentication):
    """Authenticates ``AgentToken`` bearer tokens; ``request.auth`` is the ``AgentToken`` row."""

    keywords = ("bearer", "token")

    def authenticate(self, request):
        header = authentication.get_authorization_header(request).split()
        if not header or header[0].decode(errors="replace").lower() not in self.keywords:
            return None
        if len(header) != 2:
            raise exceptions.AuthenticationFailed("Invalid Authorization header: expected 'Bearer <token>'.")
        try:
            key = header[1].decode()
        except UnicodeDecodeError:
            raise exceptions.AuthenticationFailed("Invalid token.") from None
        token = services.agent_token_authenticate(key=key)
        if token is None:
            raise exceptions.AuthenticationFailed("Invalid, expired or revoked token.")
        return token.user, token

    def authenticate_header(self, request) -> str:
        return 'Bearer realm="tradingmcp"'


class TokenRateThrottle:
    """DRF throttle applying the per-token rate limit (``risk.ratelimit``) to agent-token requests;
    DRF answers 429 with ``Retry-After``. Session (dashboard) requests are not limited here."""

    def __init__(self):
        self._wait = 0

    def allow_request(self, request, view) -> bool:
        from risk.models import AgentToken
        from risk.ratelimit import check

        if not isinstance(request.auth, AgentToken):
            return True
        self._wait = check(request.auth)
        return self._wait == 0

    def wait(self):
        return self._wait
