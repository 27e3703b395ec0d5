"""One shape for the dashboard's small POST actions (revoke a token, delete a channel, ...): a
signed-in person posts, one service call runs, the browser is sent back to its page."""
from __future__ import annotations

import functools
from collections.abc import Callable

from django.contrib.auth.decorators import login_required
from django.shortcuts import redirect
from django.urls import reverse
from django.views.decorators.http import require_POST

from core.errors import TradingError


def post_action(*, done: str, query: str, refused: Callable):
    """Decorate ``fn(request, **url_kwargs)``, which makes one service call, into a view that needs
    a signed-in user and POST, answers ``refused(request, exc)`` when the service raises a
    ``TradingError`` (nothing changed), else redirects to the URL named ``done`` with ``?query``."""

    def wrap(fn):
        @login_required
        @require_POST
        @functools.wraps(fn)
        def view(request, **kwargs):
            try:
                fn(request, **kwargs)
            except TradingError as exc:
                return refused(request, exc)
            return redirect(f"{reverse(done)}?{query}")

        return view

    return wrap
