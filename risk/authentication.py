"""The one bearer-token authenticator of every agent transport: MCP over HTTP (``/mcp``), MCP over
WebSocket (``/mcp/ws``) and the REST API (DRF, ``AgentTokenAuthentication`` below).

``authenticate_bearer(raw)`` (sync) and ``authenticate_bearer_async(raw, ...)`` turn the text of
an ``Authorization`` header (``Bearer <token>``; ``Token <token>`` also accepted) or a bare token
into an ``Identity``, or None. They are the single place a new kind of credential plugs in (e.g.
OAuth 2.1 access tokens, RFC 6750 bearer usage): add a branch in ``_load_identity`` that
recognises it and returns the same ``Identity``.

Caching: the identity's fields are cached in Redis under ``auth:token:<sha256 of the token>`` for
``TOKEN_CACHE_TTL_S`` (a refused token for 10 s as ``-``); saving or revoking a token, changing its
accounts, or saving its user deletes the entry (``risk.signals``), so a revocation is seen by the
next call on every process. Each process keeps the ``Identity`` (with its user and token rows, as
loaded from the database) it built from those exact cached bytes and reuses it while Redis holds the
same bytes: a call costs one Redis read, and a process meets the database once per token per cache
entry. An expired token is refused even while cached.
"""
from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import dataclass, field

import orjson
from django.conf import settings
from rest_framework import authentication, exceptions
from core.redis import async_redis_shared, get_redis
from core.workers import run_sync
from risk import ratelimit
from risk.models import AgentToken
from risk.ratelimit import check
from risk.services import TOKEN_PREFIX, agent_token_authenticate

log = logging.getLogger(__name__)

TOKEN_CACHE_TTL_S = 300
REFUSED = b"-"
MEMO_MAX = 4096


@dataclass(frozen=True)
class Identity:
    """Who is calling, as every transport and tool sees it.

    - ``user``: the authenticated ``User`` row (active when the identity was built).
    - ``token``: the permission record the credential stands for (an ``risk.models.AgentToken`` row;
      ``request.auth`` on DRF requests), or None for a credential kind that has none.
    - ``scopes``: the ``risk.models.Scope`` values granted.
    - ``symbols``: the symbols it is restricted to (upper case; empty = all).
    - ``accounts``: the account ids it is restricted to (empty = every account its user may use).
    - ``confirm_orders``: its orders wait for a person's approval (confirm mode).
    - ``rate_limit_per_minute``: its own limit (None: the server default; 0: unlimited).
    - ``expires_at``: seconds since the epoch UTC, or None.
    - ``kind``: the credential kind: ``"agent_token"`` (a static bearer token pasted from the
      tokens page) or ``"oauth"`` (an OAuth access token; its client can re-authorize for more
      scopes, docs/adr/0010-step-up-for-oauth-tokens-only.md).
    """

    user: object
    token: object
    scopes: frozenset = frozenset()
    symbols: tuple = ()
    accounts: frozenset = frozenset()
    confirm_orders: bool = False
    rate_limit_per_minute: int | None = None
    expires_at: float | None = None
    kind: str = "agent_token"
    key_hash: str = field(default="", repr=False)

    @property
    def auth(self):
        """The permission record (DRF's ``request.auth``)."""
        return self.token

    @property
    def token_id(self):
        return getattr(self.token, "pk", None)

    def has_scope(self, scope: str) -> bool:
        """Was ``scope`` granted?"""
        return str(scope) in self.scopes

    def expired(self, now: float | None = None) -> bool:
        return self.expires_at is not None and self.expires_at <= (time.time() if now is None else now)


@dataclass
class AuthResult:
    """``authenticate_bearer_async``'s answer: ``identity`` (None: refused), ``retry_after``
    (seconds; 0 = within the rate limit) and ``values`` (the read-ahead cache keys' raw values)."""

    identity: Identity | None
    retry_after: int = 0
    values: dict = field(default_factory=dict)


def token_cache_key(key_hash: str) -> str:
    """Redis key of a token's cached identity."""
    return f"{settings.REDIS_KEY_PREFIX}auth:token:{key_hash}"


def bearer_key(raw: str | bytes | None) -> str | None:
    """The credential in an ``Authorization`` header value (``Bearer <t>`` or ``Token <t>``, RFC
    6750 section 2.1), or None when there is none or the scheme is another."""
    if raw is None:
        return None
    if isinstance(raw, bytes):
        raw = raw.decode("latin-1")
    scheme, _, key = raw.strip().partition(" ")
    if scheme.lower() not in ("bearer", "token") or not key.strip() or " " in key.strip():
        return None
    return key.strip()


def credential(raw: str | bytes | None) -> str | None:
    """The plain credential of ``raw``: an ``Authorization`` header value (``Bearer <t>``) or a
    bare token; None when empty or malformed."""
    if raw is None:
        return None
    text = raw.decode("latin-1") if isinstance(raw, bytes) else str(raw)
    text = text.strip()
    if not text:
        return None
    return bearer_key(text) if " " in text else text


def _key_hash(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def _load_fields(key: str):
    """Database lookup of a plain credential → (the cacheable fields of its identity, its token
    row), or (None, None)."""
    token = agent_token_authenticate(key=key)
    if token is None:
        return None, None
    return {
        "kind": "agent_token" if key.startswith(TOKEN_PREFIX) else "oauth",
        "token_id": token.pk,
        "user_id": token.user_id,
        "name": token.name,
        "scopes": sorted(token.scopes or []),
        "symbols": [str(s).upper() for s in (token.symbols or [])],
        "accounts": sorted(token.accounts.values_list("id", flat=True)),
        "confirm_orders": bool(token.confirm_orders),
        "rate_limit_per_minute": token.rate_limit_per_minute,
        "expires_at": token.expires_at.timestamp() if token.expires_at else None,
    }, token


def _load_identity(key_hash: str, fields: dict, token=None) -> Identity | None:
    """The ``Identity`` of cached ``fields``: its user and token rows (``token``, or read from the
    database)."""
    if token is None:
        token = AgentToken.objects.select_related("user").filter(pk=fields["token_id"], key_hash=key_hash).first()
    if token is None or not token.is_active or not token.user.is_active:
        return None
    return Identity(
        user=token.user, token=token, scopes=frozenset(fields["scopes"]), symbols=tuple(fields["symbols"]),
        accounts=frozenset(fields["accounts"]), confirm_orders=fields["confirm_orders"],
        rate_limit_per_minute=fields["rate_limit_per_minute"], expires_at=fields["expires_at"],
        kind=fields["kind"], key_hash=key_hash,
    )


# key hash → (cached bytes, Identity) built from those exact bytes.
_memo: dict[str, tuple[bytes, Identity | None]] = {}


def known_credential(raw: str | bytes | None) -> bool:
    """Has this process authenticated this credential before (a valid one)? Lets a transport
    spare known callers a pre-authentication check."""
    key = credential(raw)
    if key is None:
        return False
    memo = _memo.get(_key_hash(key))
    return memo is not None and memo[1] is not None


def _memo_get(key_hash: str, cached: bytes):
    memo = _memo.get(key_hash)
    if memo is not None and memo[0] == cached:
        return memo
    return None


def _memo_put(key_hash: str, cached: bytes, identity: Identity | None) -> None:
    if len(_memo) >= MEMO_MAX:
        _memo.clear()
    _memo[key_hash] = (cached, identity)


def _resolve_sync(key: str, key_hash: str, cached: bytes | None) -> tuple[bytes, Identity | None, bool]:
    """(bytes to cache, identity, whether Redis must be written) from the database."""
    token = None
    if cached is None or cached == REFUSED:
        fields, token = _load_fields(key)
        if fields is None:
            return REFUSED, None, cached is None
        cached = orjson.dumps(fields)
        write = True
    else:
        fields = orjson.loads(cached)
        write = False
    return cached, _load_identity(key_hash, fields, token), write


def authenticate_bearer(raw: str | bytes | None) -> Identity | None:
    """The ``Identity`` of an ``Authorization`` header value or a bare token, or None (unknown,
    revoked or expired token, inactive user, no credential). Sync (DRF, management code).
    A Redis failure falls back to the database (logged)."""
    key = credential(raw)
    if key is None:
        return None
    key_hash = _key_hash(key)
    try:
        cached = get_redis().get(token_cache_key(key_hash))
    except Exception as exc:  # Redis down: the database decides
        log.warning("token cache unreachable (%s); reading the database", exc)
        cached = None
    if cached == REFUSED:
        return None
    memo = _memo_get(key_hash, cached) if cached is not None else None
    if memo is None:
        cached, identity, write = _resolve_sync(key, key_hash, cached)
        if write:
            try:
                get_redis().set(token_cache_key(key_hash), cached, ex=TOKEN_CACHE_TTL_S if identity else 10)
            except Exception as exc:
                log.warning("token cache unreachable (%s)", exc)
        if cached != REFUSED:
            _memo_put(key_hash, cached, identity)
    else:
        identity = memo[1]
    if identity is None or identity.expired():
        return None
    return identity


async def authenticate_bearer_async(raw: str | bytes | None, *, count: bool = False,
                                    read_ahead: list[str] | tuple = ()) -> AuthResult:
    """``authenticate_bearer`` for the event loop, plus, in the same pipelined Redis round trip
    (redis-py asyncio client, hiredis parser): the per-token rate-limit count of this call
    (``count``, ``risk.ratelimit``) and the raw values of the cache keys ``read_ahead`` (what the
    call will read, ``marketdata.cache.read_ahead_keys``). Count and read-ahead ride on the first
    round trip only when this process has met the token before; otherwise they follow the
    database lookup. Raises ``redis.RedisError`` when Redis is unreachable."""
    key = credential(raw)
    if key is None:
        return AuthResult(None)
    key_hash = _key_hash(key)
    known = _memo.get(key_hash)
    known_identity = known[1] if known is not None else None
    limit = ratelimit.limit_for(known_identity) if (count and known_identity is not None) else 0
    redis = async_redis_shared()
    pipe = redis.pipeline(transaction=False)
    pipe.get(token_cache_key(key_hash))
    retry = 0
    if limit:
        rl_key, retry = ratelimit.window_key(known_identity.token_id, time.time())
        pipe.incr(rl_key)
        pipe.expire(rl_key, 61)
    if known_identity is not None and read_ahead:
        pipe.mget(*read_ahead)
    out = await pipe.execute()
    cached = out[0]
    values = dict(zip(read_ahead, out[-1])) if (known_identity is not None and read_ahead) else {}
    if cached == REFUSED:
        return AuthResult(None)
    memo = _memo_get(key_hash, cached) if cached is not None else None
    if memo is None:
        cached, identity, write = await run_sync(_resolve_sync, key, key_hash, cached)
        if write:
            await redis.set(token_cache_key(key_hash), cached, ex=TOKEN_CACHE_TTL_S if identity else 10)
        if cached != REFUSED:
            _memo_put(key_hash, cached, identity)
    else:
        identity = memo[1]
    if identity is None or identity.expired():
        return AuthResult(None)
    if not count:
        return AuthResult(identity, 0, values)
    if limit and identity.rate_limit_per_minute == known_identity.rate_limit_per_minute:
        return AuthResult(identity, 0 if out[1] <= limit else max(1, retry), values)
    return AuthResult(identity, await ratelimit.check_async(identity), values)


class AgentTokenAuthentication(authentication.BaseAuthentication):
    """DRF authentication through ``authenticate_bearer``: ``request.user`` is the identity's user,
    ``request.auth`` its ``AgentToken`` row. A bad token answers 401 with ``WWW-Authenticate``."""

    keywords = ("bearer", "token")

    def authenticate(self, request):
        header = authentication.get_authorization_header(request)
        parts = header.split()
        if not parts or parts[0].decode(errors="replace").lower() not in self.keywords:
            return None
        if len(parts) != 2:
            raise exceptions.AuthenticationFailed("Invalid Authorization header: expected 'Bearer <token>'.")
        try:
            identity = authenticate_bearer(header.decode("latin-1"))
        except UnicodeDecodeError:
            identity = None
        if identity is None:
            raise exceptions.AuthenticationFailed("Invalid, expired or revoked token.")
        return identity.user, identity.token

    def authenticate_header(self, request) -> str:
        return 'Bearer realm="tradingmcp"'


class TokenRateThrottle:
    """DRF throttle applying the per-token rate limit (``risk.ratelimit``) to agent-token requests;
    DRF answers 429 with ``Retry-After``. Session (dashboard) requests are not limited here."""

    def __init__(self):
        self.wait_s = 0

    def allow_request(self, request, view) -> bool:
        if not isinstance(request.auth, AgentToken):
            return True
        self.wait_s = check(request.auth)
        return self.wait_s == 0

    def wait(self):
        return self.wait_s


def requested_symbols(kwargs: dict) -> list[str]:
    """The symbols a tool call names (upper case): ``symbol``, ``symbols`` (a list or a
    comma-separated string) and the symbol part of a ``stream`` name (``btcusdt@trade``)."""
    names = []
    if isinstance(kwargs.get("symbol"), str):
        names.append(kwargs["symbol"])
    many = kwargs.get("symbols")
    if isinstance(many, str):
        names += many.split(",")
    elif isinstance(many, (list, tuple)):
        names += [x for x in many if isinstance(x, str)]
    stream = kwargs.get("stream")
    if isinstance(stream, str) and "@" in stream:
        names.append(stream.split("@", 1)[0])
    return [n.strip().upper() for n in names if n.strip()]
