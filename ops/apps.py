from django.apps import AppConfig


class OpsConfig(AppConfig):
    name = "ops"
    verbose_name = "Operations"

    def ready(self):
        """Connect the metrics to the audit hook and to Celery's task signals."""
        from ops import celery_hooks, metrics, signals

        signals.audit_appended.connect(metrics.observe_audit, dispatch_uid="ops.metrics.observe_audit")
        celery_hooks.connect()
