"""MCP tools of the risk app (declared with ``mcpapi.guard.mcp_tool``; imported by ``mcpapi.mcp``, which django-mcp-server autodiscovers): orders held in confirm mode."""
from typing import Optional

from mcpapi import results
from mcpapi.guard import READ_OWN_STORE, current_call, mcp_tool
from risk import access
from risk.models import Scope


@mcp_tool(scope=Scope.ACCOUNT_READ, title="Orders waiting for approval", annotations=READ_OWN_STORE)
def list_pending_orders(account_id: Optional[int] = None) -> results.PendingApprovals:
    """Your orders waiting for a person's approval (placed by a token in confirm mode), oldest first.

    A person approves or rejects them in the dashboard or admin; approval places the order then
    (risk-checked at that moment) under the same clientOrderId, so get_order(client_order_id=...)
    finds it afterwards. Args: account_id: one of your accounts (default: your first).
    Returns {"accountId", "approvals": [{approvalId, clientOrderId, symbol, side, type, origQty,
    price, stopPrice, status: PENDING_APPROVAL, requestedBy, time}]}.
    """
    from trading import approvals, selectors

    call = current_call()
    call.account = selectors.account_get(user=call.user, account_id=account_id, need="read", token=call.token)
    return {"accountId": call.account.pk, "approvals": access.visible(call.identity, approvals.pending_list(account=call.account))}
