"""``manage.py ingest``: run the market-data ingester until interrupted.

Several copies may run (on several machines): one is elected by a Redis lease
(``core.leader``, lease ``ingester``) and streams; the others wait and take over within
seconds when it dies. ``--no-leader`` runs it without the lease.
"""
from django.core.management.base import BaseCommand

from marketdata.ingester import Ingester
from marketdata.selectors import watched_symbols
from core.leader import run_as_leader_until_signal


class Command(BaseCommand):
    help = "Stream bookTicker and kline_1m of the watched symbols into the cache and the channel layer."

    def add_arguments(self, parser):
        parser.add_argument("--symbols", help="comma-separated symbols (default: settings.WATCHED_SYMBOLS)")
        parser.add_argument("--lease", default="ingester", help="name of the Redis lease electing one ingester")
        parser.add_argument("--no-leader", action="store_true", help="run at once, without the lease")

    def handle(self, *args, **options):
        symbols = options["symbols"].split(",") if options["symbols"] else watched_symbols()
        run_as_leader_until_signal(options["lease"], lambda: Ingester(symbols), enabled=not options["no_leader"])
