"""`python -m service [--host H] [--port P]`: run the exchange service (SPEC §11).

uvicorn with uvloop + httptools, one process (the engine is a single writer). SIGTERM and
SIGINT are handled by uvicorn: it stops accepting connections, lets in-flight requests
finish (up to EXCHANGE_SHUTDOWN_TIMEOUT_S), then runs the lifespan shutdown, which drains
the engine queue and flushes the Redis publisher.
"""

from __future__ import annotations

import argparse
import logging

import uvicorn

from api.app import create_app
from service.settings import Settings


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m service", description="perpetual-futures exchange service"
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args(argv)
    settings = Settings()
    level = settings.log_level.upper()
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    uvicorn.run(
        create_app(settings),
        host=args.host,
        port=args.port,
        loop="uvloop",
        http="httptools",
        log_level=settings.log_level.lower(),
        access_log=settings.access_log,
        timeout_graceful_shutdown=int(settings.shutdown_timeout_s),
        ws_ping_interval=settings.ws_ping_interval_s,
        ws_ping_timeout=settings.ws_ping_interval_s,
        ws_max_size=settings.max_body_bytes,
        server_header=False,
        proxy_headers=settings.proxy_headers,
    )


if __name__ == "__main__":
    main()
