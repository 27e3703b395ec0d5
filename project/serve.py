"""Uvicorn plumbing for the production web server.

``NoDelayHttpToolsProtocol`` sets ``TCP_NODELAY`` on every accepted connection. With
``uvicorn --workers N`` (N ≥ 2) the workers accept on a shared socket and the option is lost, so
each response on a kept-alive connection waits ~40 ms for a delayed ACK (uvicorn issue 3149;
../shared/docs/PERFORMANCE-NOTES.md). Pass it as ``--http project.serve:NoDelayHttpToolsProtocol``.
"""
import socket

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol


class NoDelayHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with Nagle's algorithm switched off per connection."""

    def connection_made(self, transport) -> None:
        sock = transport.get_extra_info("socket")
        if sock is not None:
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:  # not a TCP socket (e.g. a unix socket)
                pass
        super().connection_made(transport)
