"""The Celery application (broker and result backend: Redis at ``settings.REDIS_URL``)."""
import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")

app = Celery("tradingmcp")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
