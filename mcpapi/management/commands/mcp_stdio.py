"""``manage.py mcp_stdio``: serve the MCP tools over stdio as one agent token, for desktop clients
that start their servers as subprocesses (Claude Desktop's ``claude_desktop_config.json``:
``command``/``args``/``env``). See ``mcpapi.stdio`` and docs/connect-agents.md.

The token comes from ``--token-file`` (its first line) or the ``TRADINGMCP_TOKEN`` environment
variable (``settings.TRADINGMCP_TOKEN``). A missing, unknown, revoked or expired token: a message
on stderr, exit status 2, nothing on stdout. Redis or the database unreachable at start: exit
status 1.
"""
from pathlib import Path

import anyio
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.db import DatabaseError
from redis.exceptions import RedisError

from mcpapi.stdio import protocol_streams, serve, token_identity

BAD_TOKEN = 2


def read_token(token_file: str | None) -> str:
    """The agent token: the first line of ``token_file`` when given, else ``settings.TRADINGMCP_TOKEN``
    ("" when neither has one). Raises ``CommandError`` (status 2) when the file cannot be read."""
    if token_file:
        try:
            lines = Path(token_file).expanduser().read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeError) as exc:
            raise CommandError(f"cannot read the token file {token_file}: {exc}", returncode=BAD_TOKEN) from None
        return lines[0].strip() if lines else ""
    return settings.TRADINGMCP_TOKEN.strip()


class Command(BaseCommand):
    help = ("Serve the MCP tools over stdio (one JSON-RPC message per line) as the agent token in "
            "TRADINGMCP_TOKEN or --token-file; for Claude Desktop and other clients that start a command.")

    def add_arguments(self, parser):
        parser.add_argument("--token-file", help="file whose first line is the agent token (instead of TRADINGMCP_TOKEN)")

    def handle(self, *args, **options):
        key = read_token(options.get("token_file"))
        if not key:
            raise CommandError("no agent token: set TRADINGMCP_TOKEN (or pass --token-file) to a token made on the "
                               "dashboard's Agents & tokens page", returncode=BAD_TOKEN)
        stdin, stdout = protocol_streams()
        anyio.run(self._serve, key, stdin, stdout)

    async def _serve(self, key, stdin, stdout):
        try:
            identity = await token_identity(key)
        except RedisError as exc:
            raise CommandError(f"the token cache (Redis, REDIS_URL) is unreachable: {exc}") from None
        except DatabaseError as exc:
            raise CommandError(f"the database (DATABASE_URL) cannot be read; is it migrated? {exc}") from None
        if identity is None:
            raise CommandError("the agent token is unknown, revoked or expired (or its user is inactive): make a "
                               "new one on the dashboard's Agents & tokens page", returncode=BAD_TOKEN)
        self.stderr.write(f"TradingMCP: serving MCP on stdio as token {identity.token.name!r} of "
                          f"{identity.user.get_username()} (scopes: {', '.join(sorted(identity.scopes))})")
        await serve(key, stdin, stdout)
