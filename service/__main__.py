"""`python -m service [--host H] [--port P]`: run the exchange service (SPEC §11).

uvicorn with uvloop + httptools, one process (the engine is a single writer); requests the
HTTP parser refuses get the JSON error body too (api/http_protocol.py). SIGTERM and
SIGINT are handled by uvicorn: it stops accepting connections, lets in-flight requests
finish (up to EXCHANGE_SHUTDOWN_TIMEOUT_S), then runs the lifespan shutdown, which drains
the engine queue and flushes the Redis publisher (and first stops the price feed and the
funding scheduler). The exit status is 0 after that graceful stop, for SIGTERM too (uvicorn
re-raises the signal it stopped for; the handler installed here turns it into a normal exit).

Settings that cannot be used (e.g. an `EXCHANGE_ADMIN_TOKEN` shorter than 16 characters, an
`EXCHANGE_CONFIG` that does not load, an `EXCHANGE_PRICE_FEED` file with a bad row) are
refused before anything starts, one line per problem on stderr, exit status 2. A port that
is in use (or an address it cannot listen on) is one line on stderr naming a free port, exit
status 1, before anything starts. The soft open-files limit is raised to the hard one
(connections are file descriptors; SPEC §10).
"""

from __future__ import annotations

import argparse
import errno
import logging
import os
import signal
import socket
import sys
from types import FrameType

import uvicorn
from pydantic import ValidationError

from api.app import create_app
from api.http_protocol import JsonErrorHttpProtocol
from service.config import load_engine_config
from service.feed import FeedError, load_feed
from service.limits import raise_open_files_limit
from service.settings import Settings


def _settings_or_exit() -> Settings:
    try:
        return Settings()
    except ValidationError as exc:
        for err in exc.errors():
            field = ".".join(str(p) for p in err["loc"])
            name = f"EXCHANGE_{field.upper()}: " if field else ""
            message = str(err["msg"]).removeprefix("Value error, ")
            print(f"error: {name}{message}", file=sys.stderr)
        raise SystemExit(2) from None


def _config_and_feed_or_exit(settings: Settings) -> None:
    """Load EXCHANGE_CONFIG and read EXCHANGE_PRICE_FEED as the service will: one line each."""
    try:
        instruments = load_engine_config(settings.config).instruments
    except (OSError, ValueError, TypeError, KeyError) as exc:  # tomllib's errors are ValueErrors
        message = str(exc) if str(settings.config) in str(exc) else f"{settings.config}: {exc}"
        print(f"error: EXCHANGE_CONFIG: {message}", file=sys.stderr)
        raise SystemExit(2) from None
    if settings.price_feed:
        try:
            load_feed(settings.price_feed, instruments)
        except FeedError as exc:
            print(f"error: EXCHANGE_PRICE_FEED: {exc}", file=sys.stderr)
            raise SystemExit(2) from None


def _bind_error(host: str, port: int) -> OSError | None:
    """Why uvicorn could not listen on host:port (None: it can), tried as it binds."""
    try:
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind((host, port))
    except OSError as exc:
        return exc
    return None


def _port_usable_or_exit(host: str, port: int) -> None:
    error = _bind_error(host, port)
    if error is None:
        return
    if error.errno != errno.EADDRINUSE:
        print(f"error: cannot listen on {host}:{port}: {error.strerror or error}", file=sys.stderr)
        raise SystemExit(1)
    free = next((p for p in range(port + 1, min(port + 100, 65536)) if _bind_error(host, p) is None), None)
    other = str(free) if free is not None else "<another port>"
    fix = f"make run PORT={other}" if "MAKELEVEL" in os.environ else f"python -m service --port {other}"
    print(f"error: port {port} on {host} is in use (another exchange or sandbox?); run {fix}", file=sys.stderr)
    raise SystemExit(1)


def _exit_0(signum: int, frame: FrameType | None) -> None:
    """SIGTERM before uvicorn handles it, or re-raised by uvicorn once it has shut down."""
    raise SystemExit(0)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m service", description="perpetual-futures exchange service"
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument(
        "--role", choices=("embedded", "engine"), default=None,
        help="engine: also consume the Redis command bus (service/bus.py); default EXCHANGE_ROLE or embedded",
    )
    args = parser.parse_args(argv)
    settings = _settings_or_exit()
    if args.role is not None:
        settings.role = args.role
    if settings.role == "engine" and not settings.redis_url:
        print("error: --role engine consumes commands from Redis: set EXCHANGE_REDIS_URL", file=sys.stderr)
        raise SystemExit(2)
    _config_and_feed_or_exit(settings)
    _port_usable_or_exit(args.host, args.port)
    level = settings.log_level.upper()
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("service").info("open-files limit: %d", raise_open_files_limit())
    signal.signal(signal.SIGTERM, _exit_0)
    uvicorn.run(
        create_app(settings),
        host=args.host,
        port=args.port,
        loop="uvloop",
        http=JsonErrorHttpProtocol,
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
