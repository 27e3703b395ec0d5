"""``manage.py paper_matcher``: fill resting paper orders on the venue's prints until interrupted.

Several copies may run: one is elected by a Redis lease (``core.leader``, lease
``paper_matcher``), the others wait and take over within seconds when it dies.
``--no-leader`` runs it without the lease.
"""
from core.leader import LeaderCommand
from marketdata.selectors import watched_symbols
from trading.matcher import PaperMatcher


class Command(LeaderCommand):
    help = "Follow <symbol>@trade and @bookTicker and match resting paper orders (trading.matcher)."
    lease_name = "paper_matcher"

    def worker(self, symbols):
        return PaperMatcher(symbols or watched_symbols())
