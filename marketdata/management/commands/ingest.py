"""``manage.py ingest``: run the market-data ingester until interrupted.

Several copies may run (on several machines): one is elected by a Redis lease
(``core.leader``, lease ``ingester``) and streams; the others wait and take over within
seconds when it dies. ``--no-leader`` runs it without the lease.
"""
from core.leader import LeaderCommand
from marketdata.ingester import Ingester
from marketdata.selectors import watched_symbols


class Command(LeaderCommand):
    help = "Stream bookTicker and kline_1m of the watched symbols into the cache and the channel layer."
    lease_name = "ingester"

    def worker(self, symbols):
        return Ingester(symbols or watched_symbols())
