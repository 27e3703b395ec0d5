"""Shared helpers below every app: the error vocabulary (``core.errors``), Redis connections
(``core.redis``), the Channels event publisher (``core.events``), the sync worker pool
(``core.workers``), Host/Origin checks (``core.hostcheck``) and leader election (``core.leader``).
Nothing here imports an app of the project."""
