"""Running TradingMCP as a service: health and readiness (``ops.health``), Prometheus metrics
(``core.metrics``), structured logs with a request id (``core.context``, ``core.logs``) and the
audit hook the metrics and notifications hang on (``core.signals``)."""
