from django.apps import AppConfig


class NotificationsConfig(AppConfig):
    name = "notifications"
    verbose_name = "Notifications"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self):
        """Hang the triggers on the audit hook and the matcher's fill hook (``core.signals``)."""
        from notifications import triggers
        from core import signals

        signals.audit_appended.connect(triggers.on_audit, dispatch_uid="notifications.on_audit")
        signals.fills_booked.connect(triggers.on_fills, dispatch_uid="notifications.on_fills")
