"""Loaded by pytest before Django's settings (``-p tests.pytest_plugin`` in pytest.ini): points
the test run at real services with keys no other run uses.

- ``REDIS_URL``: the machine's Redis (``redis://127.0.0.1:6379/0``) unless set.
- ``REDIS_KEY_PREFIX``: unique per run, so parallel runs and a running dev stack never collide.
- ``TRADINGMCP_DATA_DIR``: ``var/test`` (the SQLite test database file lives there).
- ``TRADINGMCP_LOCAL=1``: keys kept under that directory, plain HTTP, as in the local main job.
"""
import os
import uuid
from pathlib import Path

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")
os.environ.setdefault("REDIS_URL", "redis://127.0.0.1:6379/0")
os.environ["REDIS_KEY_PREFIX"] = f"tmcp-test-{uuid.uuid4().hex[:10]}:"
os.environ.setdefault("TRADINGMCP_DATA_DIR", str(Path(__file__).resolve().parent.parent / "var" / "test"))
os.environ.setdefault("TRADINGMCP_LOCAL", "1")
os.environ.setdefault("MARKET_PUSH_MIN_INTERVAL_S", "0.05")
