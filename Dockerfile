# TradingMCP image: one image, every process type (see docker-compose.yml and the Procfile).
# Build: docker build -t tradingmcp .     (not built in CI; the compose file is the reference setup)
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    TRADINGMCP_DATA_DIR=/app/var

WORKDIR /app

# Build tools only for wheels that have none for this platform; dropped in the same layer.
COPY requirements.txt .
RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential \
 && pip install -r requirements.txt \
 && apt-get purge -y build-essential && apt-get autoremove -y && rm -rf /var/lib/apt/lists/*

COPY . .
# Static files are served by whitenoise from the image (DEBUG=1 here only so settings load
# without the production secrets, which are given at run time).
RUN DEBUG=1 SECRET_KEY=build-only python manage.py collectstatic --noinput -v0 \
 && useradd --system --home /app tradingmcp && mkdir -p /app/var && chown -R tradingmcp /app/var
USER tradingmcp

EXPOSE 8000
# The web server; other process types override the command (docker-compose.yml).
CMD ["sh", "-c", "uvicorn project.asgi:application --host 0.0.0.0 --port ${PORT:-8000} --workers ${WEB_WORKERS:-2} --http project.serve:NoDelayHttpToolsProtocol --loop uvloop --ws websockets-sansio --lifespan off --no-access-log --log-level warning --ws-per-message-deflate false"]
