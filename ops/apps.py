from django.apps import AppConfig


class OpsConfig(AppConfig):
    name = "ops"
    verbose_name = "Operations"

    def ready(self):
        """Connect the metrics to the audit hook and to Celery's task signals."""
        from core import metrics, signals
        from ops import celery_hooks

        signals.audit_appended.connect(metrics.observe_audit, dispatch_uid="core.metrics.observe_audit")
        celery_hooks.connect()
