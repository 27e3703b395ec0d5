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


# OpenAPI links (OpenAPI 3.1 "Link Object"): which later calls take an id from a response. Clients
# and Schemathesis's stateful phase follow them (place an order, then read, amend or cancel it).
ORDER_LINKS = {
    "GetOrder": "order_get", "CancelOrder": "order_cancel", "AmendOrder": "order_cancel_replace",
}
APPROVAL_LINKS = {"ApproveOrder": "approvals_approve_create", "RejectOrder": "approvals_reject_create"}
LINKED = {  # (path, method, status) → {link name: (operationId, parameters)}
    ("/api/v1/accounts/{accountId}/orders", "post", "201"): {
        name: (op, {"accountId": "$request.path.accountId", "orderId": "$response.body#/orderId"})
        for name, op in ORDER_LINKS.items()},
    ("/api/v1/accounts/{accountId}/orders/{orderId}/cancel-replace", "post", "200"): {
        name: (op, {"accountId": "$request.path.accountId", "orderId": "$response.body#/newOrderResponse/orderId"})
        for name, op in ORDER_LINKS.items()},
    ("/api/v1/accounts/{accountId}/oco", "post", "201"): {
        name: (op, {"accountId": "$request.path.accountId", "orderId": "$response.body#/orders/0/orderId"})
        for name, op in ORDER_LINKS.items()},
    ("/api/v1/accounts/{accountId}/orders", "post", "202"): {
        name: (op, {"approvalId": "$response.body#/approvalId"}) for name, op in APPROVAL_LINKS.items()},
}


def add_links(result, generator, request, public):
    """drf-spectacular postprocessing hook (``SPECTACULAR_SETTINGS["POSTPROCESSING_HOOKS"]``):
    adds ``LINKED``'s links to the responses they start from. Returns the schema."""
    for (path, method, code), links in LINKED.items():
        response = result.get("paths", {}).get(path, {}).get(method, {}).get("responses", {}).get(code)
        if response is None:
            continue
        response["links"] = {name: {"operationId": op, "parameters": params} for name, (op, params) in links.items()}
    return result
