"""Settings for ``bench/bench_dashboard.py --layer pubsub``: the project's settings with Channels'
Redis *pub/sub* layer (``channels_redis.pubsub``): one PUBLISH per group message, fanned out to
the process's member sockets locally, instead of one queued copy per member channel."""
from project.settings import *  # noqa: F401,F403
from project.settings import REDIS_KEY_PREFIX, REDIS_URL

CHANNEL_LAYERS = {
    "default": {
        "BACKEND": "channels_redis.pubsub.RedisPubSubChannelLayer",
        "CONFIG": {"hosts": [REDIS_URL], "prefix": f"{REDIS_KEY_PREFIX}asgi"},
    }
}
