"""Test plumbing: a local HTTP forwarder that adds ``Authorization: Bearer <token>`` to every
request, for MCP clients that cannot send a header (the conformance runner).

Everything else passes through unchanged, both ways: method, path, query, body, and the request's
own ``Host`` and ``Origin`` headers (so the server's DNS-rebinding checks see what the client sent);
responses are streamed back (SSE works) with their status and headers, minus hop-by-hop headers.
An aiohttp server and client on one event loop in a background thread.
"""
from __future__ import annotations

import asyncio
import threading

import aiohttp
from aiohttp import web

HOP_BY_HOP = {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailer",
              "transfer-encoding", "upgrade", "content-length"}


class AuthProxy:
    """``AuthProxy(target).start()`` listens on ``127.0.0.1:<port>`` (``url``) and forwards to
    ``target`` (an origin, ``http://127.0.0.1:8000``), adding the bearer ``token`` (set it at any
    time; None forwards no Authorization header). ``stop()`` shuts it down."""

    def __init__(self, target: str, token: str | None = None):
        self.target = target.rstrip("/")
        self.token = token
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="mcp-auth-proxy", daemon=True)
        self._runner: web.AppRunner | None = None
        self._client: aiohttp.ClientSession | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> "AuthProxy":
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)
        return self

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self._stop(), self._loop).result(30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)

    async def _start(self) -> None:
        # No automatic decompression: bodies pass through byte for byte with their Content-Encoding.
        self._client = aiohttp.ClientSession(auto_decompress=False, timeout=aiohttp.ClientTimeout(total=None))
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._forward)
        # Open SSE streams (the runner's GET streams) would hold a shutdown for aiohttp's 60 s
        # default: stop() gives handlers a second, then cancels them.
        self._runner = web.AppRunner(app, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = self._runner.addresses[0][1]

    async def _stop(self) -> None:
        await self._client.close()  # ends the forwarded streams first, so their handlers return
        await self._runner.cleanup()

    async def _forward(self, request: web.Request) -> web.StreamResponse:
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP | {"authorization"}}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        body = await request.read()
        async with self._client.request(request.method, self.target + request.rel_url.raw_path_qs, headers=headers,
                                        data=body or None, allow_redirects=False) as upstream:
            response = web.StreamResponse(status=upstream.status, reason=upstream.reason)
            for key, value in upstream.headers.items():
                if key.lower() not in HOP_BY_HOP:
                    response.headers.add(key, value)
            await response.prepare(request)
            async for chunk in upstream.content.iter_any():
                await response.write(chunk)
            await response.write_eof()
            return response
