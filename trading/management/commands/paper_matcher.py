"""``manage.py paper_matcher``: fill resting paper orders on the venue's prints until interrupted.

Several copies may run: one is elected by a Redis lease (``core.leader``, lease
``paper_matcher``), the others wait and take over within seconds when it dies.
``--no-leader`` runs it without the lease.
"""
from django.core.management.base import BaseCommand

from marketdata.selectors import watched_symbols
from core.leader import run_as_leader_until_signal
from trading.matcher import PaperMatcher


class Command(BaseCommand):
    help = "Follow <symbol>@trade and @bookTicker and match resting paper orders (trading.matcher)."

    def add_arguments(self, parser):
        parser.add_argument("--symbols", help="comma-separated symbols (default: settings.WATCHED_SYMBOLS)")
        parser.add_argument("--lease", default="paper_matcher", help="name of the Redis lease electing one matcher")
        parser.add_argument("--no-leader", action="store_true", help="run at once, without the lease")

    def handle(self, *args, **options):
        symbols = options["symbols"].split(",") if options["symbols"] else watched_symbols()
        run_as_leader_until_signal(options["lease"], lambda: PaperMatcher(symbols), enabled=not options["no_leader"])
