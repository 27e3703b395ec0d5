"""Notifications people actually receive: per-user Apprise channels (e-mail, Telegram, Slack,
Discord, ntfy, webhooks…) for fills, risk rejections, breaker trips, the kill switch, protection
locks, orders waiting for approval and venue disconnects; sent by a Celery task, retried,
rate-limited and audited."""
