"""System checks of the database the ledger runs on (``manage.py check --database default``)."""
from __future__ import annotations

from django.core import checks
from django.db import connections


@checks.register(checks.Tags.database)
def autovacuum_on(app_configs=None, databases=None, **kwargs) -> list[checks.CheckMessage]:
    """Warn (``trading.W001``) when a PostgreSQL database in ``databases`` runs with autovacuum off.

    Every order rewrites its account's balance and position rows, so a busy account leaves dead
    row versions behind at the rate it trades; without autovacuum (``SHOW autovacuum``) nothing
    removes them and the planner has no statistics. Measured here (bench/bench_mcp.py, session 7):
    one account's ``place_order`` at 32 connections fell from 372 to ~105 calls/s over a dozen
    benchmark runs, and one ``VACUUM ANALYZE`` restored it. Database checks run only when asked
    for: ``manage.py check --database default`` (Django's rule)."""
    found = []
    for alias in databases or ():
        connection = connections[alias]
        if connection.vendor != "postgresql":
            continue
        with connection.cursor() as cur:
            cur.execute("SHOW autovacuum")
            setting = cur.fetchone()[0]
        if setting != "on":
            found.append(checks.Warning(
                f"PostgreSQL runs with autovacuum={setting} on database '{alias}'.",
                hint="Turn autovacuum on (postgresql.conf: autovacuum = on), or run VACUUM ANALYZE on a schedule: "
                     "each order rewrites its account's balance and position rows, and their dead versions "
                     "slow every later order on that account.",
                id="trading.W001",
            ))
    return found
