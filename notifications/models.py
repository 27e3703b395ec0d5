"""A person's notification channels."""
from django.conf import settings
from django.db import models


class NotificationEvent(models.TextChoices):
    """What a channel can be told about. The texts are fixed wording filled with ids, symbols and
    numbers only (``notifications.messages``)."""

    FILL = "fill", "Fills"
    RISK_REJECTED = "risk_rejected", "Orders rejected by a risk limit"
    BREAKER_TRIP = "breaker_trip", "Daily-loss breaker trips"
    KILL_SWITCH = "kill_switch", "Kill switch (account halted)"
    PROTECTION_LOCK = "protection_lock", "Protection locks"
    APPROVAL_PENDING = "approval_pending", "Orders waiting for my approval"
    VENUE_DISCONNECT = "venue_disconnect", "Venue disconnects (market data silent)"


class NotificationChannel(models.Model):
    """One Apprise URL of ``user`` (``json://host/path``, ``tgram://bot/chat``, ``mailtos://…``;
    Apprise docs "Supported Notifications") and the ``events`` it receives for the accounts the
    user may see (owner or grantee). The URL often carries a secret (a bot token, an SMTP
    password): it is stored Fernet-encrypted (``risk.secrets``) and shown only as Apprise's
    privacy-masked form ``url_hint``."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="notification_channels")
    url_encrypted = models.TextField()
    url_hint = models.CharField(max_length=300)
    events = models.JSONField(default=list)
    enabled = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]

    def __str__(self) -> str:
        return f"{self.user} → {self.url_hint}"
