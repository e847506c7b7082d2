# syntax=docker/dockerfile:1
# Multi-stage: build wheels for the project and its runtime dependencies, then install
# them into a slim image that runs as a non-root user; runtime dependencies only.

FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY engine ./engine
COPY service ./service
COPY api ./api
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    EXCHANGE_DATA_DIR=/data
RUN useradd --create-home --uid 10001 exchange \
    && mkdir -p /data \
    && chown exchange:exchange /data
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels
USER exchange
WORKDIR /home/exchange
VOLUME ["/data"]
EXPOSE 8000
HEALTHCHECK --interval=5s --timeout=3s --start-period=10s --retries=5 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=2)"]
ENTRYPOINT ["python", "-m", "service", "--host", "0.0.0.0", "--port", "8000"]
