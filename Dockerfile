# syntax=docker/dockerfile:1
# Multi-stage: build wheels for the project and its runtime dependencies, then install
# them into a slim image that runs as a non-root user; runtime dependencies only, at the
# versions pinned in requirements.lock (regenerate it as docs/sandbox.md says).

FROM python:3.11-slim AS build
WORKDIR /src
# The pinned dependencies first: this layer changes only with the lock file.
COPY requirements.lock ./
RUN pip wheel --no-cache-dir --wheel-dir /wheels -r requirements.lock
COPY pyproject.toml README.md ./
COPY engine ./engine
COPY service ./service
COPY api ./api
COPY native ./native
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /wheels .

FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    EXCHANGE_DATA_DIR=/data
RUN useradd --create-home --uid 10001 exchange \
    && mkdir -p /data \
    && chown exchange:exchange /data
COPY --from=build /wheels /wheels
COPY requirements.lock /wheels/requirements.lock
# the sandbox's market: its config and price paths (docker-compose.yml points the service at them)
COPY feeds /opt/exchange/feeds
# the dashboard and the offline /docs assets (api/static.py finds them through EXCHANGE_WEB_DIR)
COPY web /opt/exchange/web
ENV EXCHANGE_WEB_DIR=/opt/exchange/web
# --no-index: only the wheels built above, so a dependency missing from the lock fails the
# build instead of being fetched at whatever version is newest.
RUN pip install --no-cache-dir --no-index --find-links=/wheels -r /wheels/requirements.lock perp-exchange \
    && rm -rf /wheels
USER exchange
WORKDIR /home/exchange
VOLUME ["/data"]
EXPOSE 8000
HEALTHCHECK --interval=5s --timeout=3s --start-period=10s --retries=5 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=2)"]
ENTRYPOINT ["python", "-m", "service", "--host", "0.0.0.0", "--port", "8000"]
