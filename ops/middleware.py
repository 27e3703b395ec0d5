"""Django middleware binding the request context (``core.context``) for one HTTP request."""
from __future__ import annotations

import re

from asgiref.sync import iscoroutinefunction, markcoroutinefunction

from core import context

_SAFE_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


def _incoming_id(request) -> str:
    """The caller's ``X-Request-ID`` when it is a plain identifier (≤ 64 of ``[A-Za-z0-9._-]``:
    it goes into logs), else a new id."""
    value = request.headers.get("X-Request-ID", "")
    return value if _SAFE_ID.match(value) else context.new_request_id()


class RequestContextMiddleware:
    """Binds a request id (the caller's ``X-Request-ID`` or a new one), the signed-in user's name
    and no account for the request, and answers with the id in ``X-Request-ID``. Place it after
    ``AuthenticationMiddleware``. Works for sync and async stacks."""

    sync_capable = True
    async_capable = True

    def __init__(self, get_response):
        self.get_response = get_response
        if iscoroutinefunction(get_response):
            markcoroutinefunction(self)

    def _bind(self, request, user) -> str:
        rid = _incoming_id(request)
        context.request_id.set(rid)
        context.actor.set(context.actor_name(user))
        context.account.set(None)
        return rid

    def __call__(self, request):
        if iscoroutinefunction(self):
            return self.__acall__(request)
        rid = self._bind(request, getattr(request, "user", None))
        response = self.get_response(request)
        response["X-Request-ID"] = rid
        return response

    async def __acall__(self, request):
        # request.user is lazy and reads the session from the database: resolve it the async way
        # (Django's ``HttpRequest.auser``), never in the event loop's thread.
        user = await request.auser() if hasattr(request, "auser") else None
        rid = self._bind(request, user)
        response = await self.get_response(request)
        response["X-Request-ID"] = rid
        return response
