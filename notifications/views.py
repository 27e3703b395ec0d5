"""The notification settings page (same look as the tokens page): list, add, test, delete."""
from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.shortcuts import redirect, render
from django.urls import reverse

from core.errors import TradingError
from core.views import post_action
from notifications import services, tasks
from notifications.models import NotificationEvent


@login_required
def settings_view(request):
    """GET: the person's channels and the form; POST: add a channel (Apprise URL + events)."""
    error = None
    if request.method == "POST":
        try:
            services.channel_create(user=request.user, url=request.POST.get("url", ""),
                                    events=request.POST.getlist("events"))
            return redirect(reverse("notifications") + "?added=1")
        except TradingError as exc:
            error = exc.msg
    labels = dict(NotificationEvent.choices)
    channels = [{"id": c.id, "hint": c.url_hint, "events": [labels.get(e, e) for e in c.events], "created": c.created_at,
                 "enabled": c.enabled} for c in services.channels_list(user=request.user)]
    context = {"page": "notifications", "channels": channels, "events": NotificationEvent.choices, "error": error,
               "max_channels": services.MAX_CHANNELS_PER_USER}
    return render(request, "notifications/settings.html", context, status=400 if error else 200)


def _refused(request, exc: TradingError):
    """The settings page with the refusal's message and its HTTP status (e.g. 404 for another's channel)."""
    return render(request, "notifications/settings.html", {"page": "notifications", "error": exc.msg,
                                                             "channels": [], "events": NotificationEvent.choices},
                  status=exc.http_status)


@post_action(done="notifications", query="deleted=1", refused=_refused)
def channel_delete_view(request, channel_id: int):
    """Delete one of your channels (404 for anyone else's)."""
    services.channel_delete(user=request.user, channel_id=channel_id)


@post_action(done="notifications", query="tested=1", refused=_refused)
def channel_test_view(request, channel_id: int):
    """Queue a test notification to one of your channels (404 for anyone else's)."""
    tasks.channel_test(user=request.user, channel_id=channel_id)
