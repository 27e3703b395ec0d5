"""Running TradingMCP as a service: health and readiness (``ops.health``), Prometheus metrics
(``ops.metrics``), structured logs with a request id (``ops.context``, ``ops.logs``) and the
audit hook the metrics and notifications hang on (``ops.signals``)."""
