"""Helpers for tests that run against the replay exchange (no pytest dependency).

* :func:`recorded_rows` / :func:`aggregate_rows`: read the bundled kline CSVs with nothing but
  ``zipfile`` + ``csv`` and aggregate them with ``Decimal``: an expectation source independent of
  ``tape.py``/``model.py``.
* :func:`http`: a stdlib HTTP call returning ``(status, headers, json)``.
* :func:`run`: run a coroutine in a fresh event loop with a timeout (for sync tests).
* :func:`async_client` / :func:`socket_manager`: python-binance objects pointed at a server
  (``async_client(..., ws_api_url=...)`` also points its WebSocket API client there).
* :func:`ed25519_pair`: a fresh Ed25519 key pair as PEM texts (private PKCS#8, public SPKI).
"""
from __future__ import annotations

import asyncio
import csv
import io
import json
import urllib.error
import urllib.request
import zipfile
from decimal import Decimal

from .tape import DATA_DIR, TAPE_FILES


def recorded_rows(symbol: str) -> list[list[str]]:
    """Raw CSV rows (lists of strings) of ``symbol``'s bundled 1m kline files, in tape order."""
    rows: list[list[str]] = []
    for rel in TAPE_FILES[symbol]:
        with zipfile.ZipFile(DATA_DIR / rel) as zf:
            (name,) = zf.namelist()
            rows.extend(csv.reader(io.TextIOWrapper(zf.open(name), encoding="ascii")))
    return rows


def aggregate_rows(rows: list[list[str]]) -> list:
    """Aggregate consecutive recorded rows into one Binance kline row (12 fields, strings with 8
    decimals): first open, max high, min low, last close, summed volumes/counts."""
    def s8(d: Decimal) -> str:
        return f"{d:.8f}"

    return [
        int(rows[0][0]),
        s8(Decimal(rows[0][1])),
        s8(max(Decimal(r[2]) for r in rows)),
        s8(min(Decimal(r[3]) for r in rows)),
        s8(Decimal(rows[-1][4])),
        s8(sum(Decimal(r[5]) for r in rows)),
        int(rows[-1][6]),
        s8(sum(Decimal(r[7]) for r in rows)),
        sum(int(r[8]) for r in rows),
        s8(sum(Decimal(r[9]) for r in rows)),
        s8(sum(Decimal(r[10]) for r in rows)),
        "0",
    ]


def http(method: str, url: str, body: dict | None = None, timeout: float = 10) -> tuple[int, dict, object]:
    """Stdlib HTTP request with an optional JSON body -> ``(status, headers, parsed JSON or None)``."""
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            raw = r.read()
            return r.status, dict(r.headers), json.loads(raw) if raw else None
    except urllib.error.HTTPError as e:
        raw = e.read()
        return e.code, dict(e.headers), json.loads(raw) if raw else None


def run(coro, timeout: float = 20):
    """Run ``coro`` to completion in a new event loop, failing after ``timeout`` seconds."""
    return asyncio.run(asyncio.wait_for(coro, timeout))


def async_client(api_url: str, *, ws_api_url: str | None = None, api_key: str | None = None,
                 api_secret: str | None = None, private_key: str | None = None):
    """A python-binance ``AsyncClient`` pointed at ``api_url`` (no ping to Binance's default URL),
    with ``ws_api_url`` its WebSocket API (``client.ws_api``, used by ``ws_*`` methods and
    ``BinanceSocketManager.user_socket()``). ``private_key``: an Ed25519 private key PEM.

    Call inside a running event loop; close with ``await client.close_connection()``.
    """
    from binance import AsyncClient
    from binance.ws.websocket_api import WebsocketAPI

    client = AsyncClient(api_key, api_secret, private_key=private_key)
    client.API_URL = api_url
    if ws_api_url is not None:
        client.ws_api = WebsocketAPI(url=ws_api_url)
    return client


def ed25519_pair() -> tuple[str, str]:
    """``(private PEM, public PEM)`` of a new Ed25519 key (Binance "API Key types": the exchange
    gets the public half, the client signs with the private one)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    key = Ed25519PrivateKey.generate()
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption()).decode()
    public = key.public_key().public_bytes(serialization.Encoding.PEM,
                                           serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    return private, public


def socket_manager(client, stream_url: str):
    """A python-binance ``BinanceSocketManager`` whose streams connect to ``stream_url``."""
    from binance import BinanceSocketManager

    bsm = BinanceSocketManager(client)
    bsm.STREAM_URL = stream_url
    return bsm
