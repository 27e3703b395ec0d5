"""drf-spectacular extensions: the OpenAPI schema of our documented fields (``api.fields``) and
of the agent-token authenticator (HTTP bearer, RFC 6750)."""
from __future__ import annotations

from drf_spectacular.extensions import OpenApiAuthenticationExtension, OpenApiSerializerFieldExtension

from api.fields import Documented


class DocumentedFieldExtension(OpenApiSerializerFieldExtension):
    """Maps every ``api.fields.Documented`` field to its own ``openapi()`` schema (type, pattern,
    example); drf-spectacular adds the description (help text, with the unit), nullability and
    read/write-only flags."""

    target_class = Documented
    match_subclasses = True

    def map_serializer_field(self, auto_schema, direction):
        return self.target.openapi()


class AgentTokenScheme(OpenApiAuthenticationExtension):
    """``Authorization: Bearer tmcp_…``: an agent token made on the dashboard's Tokens page."""

    target_class = "risk.authentication.AgentTokenAuthentication"
    name = "agentToken"

    def get_security_definition(self, auto_schema):
        return {
            "type": "http", "scheme": "bearer",
            "description": "An agent token (tmcp_…) from the dashboard's Tokens page: its scopes (market:read, "
                           "account:read, trade), account and symbol restrictions, confirm mode and rate limit apply.",
        }
