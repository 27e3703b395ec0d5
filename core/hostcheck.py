"""Host and Origin checks for the ASGI apps that answer ahead of Django (``/mcp``, ``/mcp/ws``).

``host_allowed``: the ``Host`` header against ``settings.ALLOWED_HOSTS`` with Django's own rules
(``django.http.request.validate_host``: exact names, ``.example.com`` subdomain patterns, ``*``;
with ``DEBUG`` and an empty list, localhost names as ``HttpRequest.get_host`` allows).
``origin_allowed``: an absent ``Origin`` is allowed (non-browser clients send none); a present one
must name an allowed host (as ``channels.security.websocket.AllowedHostsOriginValidator`` does)
or be listed in ``settings.CSRF_TRUSTED_ORIGINS``. The MCP transport spec (2025-06-18,
"Transports → Security Warning") requires servers to validate ``Origin`` against DNS rebinding.
"""
from __future__ import annotations

from urllib.parse import urlsplit

from django.conf import settings
from django.http.request import split_domain_port, validate_host


def _allowed_hosts() -> list[str]:
    hosts = list(settings.ALLOWED_HOSTS)
    if settings.DEBUG and not hosts:
        hosts = [".localhost", "127.0.0.1", "[::1]"]
    return hosts


def host_allowed(headers: dict[bytes, bytes], server: tuple | None = None) -> bool:
    """Is the request's ``Host`` header (bytes-keyed ASGI headers) one of ``ALLOWED_HOSTS``?
    Without the header, the ASGI scope's ``server`` name counts, as Django's ``get_host`` uses
    ``SERVER_NAME``."""
    raw = headers.get(b"host", b"").decode("latin-1").strip()
    if not raw and server:
        raw = str(server[0] or "")
    domain, _port = split_domain_port(raw)
    return bool(domain) and validate_host(domain, _allowed_hosts())


def origin_allowed(headers: dict[bytes, bytes]) -> bool:
    """Is the request's ``Origin`` header absent, or an allowed origin (see module docstring)?"""
    raw = headers.get(b"origin")
    if raw is None:
        return True
    origin = raw.decode("latin-1").strip()
    if origin in settings.CSRF_TRUSTED_ORIGINS:
        return True
    try:
        parts = urlsplit(origin)
    except ValueError:
        return False
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return False
    host = parts.hostname if ":" not in parts.hostname else f"[{parts.hostname}]"
    return validate_host(host, _allowed_hosts())
