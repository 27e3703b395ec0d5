"""``manage.py setup_demo``: the demo user, a 10,000 USDT paper account and a fresh agent token.

Idempotent: the user and account are created once; each run revokes the previous demo token and
prints a new one (only its hash is stored, so an old one cannot be shown again).
"""
import os

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand

from risk.models import AgentToken
from risk.services import agent_token_create, agent_token_revoke
from trading.models import Account
from trading.services import account_create


class Command(BaseCommand):
    help = "Create the demo user, paper account and agent token; print the MCP URL and token."

    def add_arguments(self, parser):
        parser.add_argument("--username", default=settings.DEMO_USERNAME)
        parser.add_argument("--password", default=settings.DEMO_PASSWORD)
        parser.add_argument("--base-url", default=settings.PUBLIC_BASE_URL)
        parser.add_argument("--token-file", help="also write the token to this file (mode 600)")

    def handle(self, *args, **opts):
        User = get_user_model()
        user, created = User.objects.get_or_create(username=opts["username"])
        if created:
            user.set_password(opts["password"])
            user.is_staff = True
            user.is_superuser = True
            user.save()
        if not Account.objects.filter(owner=user).exists():
            account_create(owner=user, name="Paper")
        for old in AgentToken.objects.filter(user=user, name="demo-agent", revoked_at__isnull=True):
            agent_token_revoke(token=old)
        _, key = agent_token_create(user=user, name="demo-agent")
        if opts["token_file"]:
            with open(opts["token_file"], "w") as fh:
                fh.write(key)
            os.chmod(opts["token_file"], 0o600)
        base = opts["base_url"].rstrip("/")
        self.stdout.write(self.style.SUCCESS("TradingMCP demo is ready."))
        self.stdout.write(f"  Dashboard : {base}/   (login {user.username} / {opts['password'] if created else '<unchanged>'})")
        self.stdout.write(f"  Admin     : {base}/admin/")
        self.stdout.write(f"  MCP URL   : {base}/mcp")
        self.stdout.write(f"  MCP token : {key}")
        self.stdout.write(f"  Header    : Authorization: Bearer {key}")
        self.stdout.write(f"  OAuth     : or add {settings.MCP_RESOURCE_URL} as a connector and sign in (docs/connect-oauth.md)")
