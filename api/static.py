"""The dashboard (`GET /`, SPEC §14), its assets (`GET /static/...`) and the API docs on
vendored assets (`GET /docs`, `GET /redoc`): nothing is fetched from another origin.

The files live in web/ at the repository root (the page, its CSS and JavaScript modules,
and web/vendor/: uPlot, swagger-ui-dist and redoc at the versions pinned in web/vendor.sh,
with their licences). Invariants:

- Only the files found under web/ when the app is created, with a known type, are served:
  a request path is looked up in that table and never joined to a filesystem path, so `..`,
  encoded or not, a symlink or a file added later cannot reach anything else (404 with the
  API's error body, like any unknown route).
- Every answer carries a Content-Security-Policy that allows scripts, styles, images and
  connections to this origin only (and the WebSocket to the same host), `nosniff`, no
  framing and no referrer. The docs pages also allow inline styles, `data:` images and a
  `blob:` worker (ReDoc's search), never inline or foreign scripts.
- The page reads only public routes; the account panel sends the API key its user typed
  as `X-API-Key`, kept in the page's memory (never in a URL or browser storage). The page
  gives nobody more than the API already does.
- Files are read when first asked for and kept while their size and mtime stay the same;
  `ETag` / `If-None-Match` spare the transfer, `Cache-Control: no-cache` makes a browser
  ask again, so a re-vendored file is picked up without a stale copy.

Known limit: web/ is found next to the `api` package (a source checkout or an editable
install); an installed wheel has no web/, and then `/` and `/docs` answer 404 saying so.
"""

from __future__ import annotations

import hashlib
import html
import os
import re
from dataclasses import dataclass
from pathlib import Path

from fastapi import APIRouter, FastAPI, Request
from starlette.responses import Response

from api.errors import ApiCode, ApiError

# web/ beside the `api` package (a source checkout, an editable install); an installed wheel
# has none, so an image points EXCHANGE_WEB_DIR at its copy (the Dockerfile does)
WEB_DIR = Path(os.environ.get("EXCHANGE_WEB_DIR") or Path(__file__).resolve().parents[1] / "web")

_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".txt": "text/plain; charset=utf-8",
}
_TEXT_NAMES = frozenset(("LICENSE", "NOTICE", "VERSIONS"))  # licence files, served as text
_PLAIN = "text/plain; charset=utf-8"
# a Host header fit to be named in a CSP source (anything else: 'self' alone)
_HOST = re.compile(r"(?:[A-Za-z0-9.-]+|\[[0-9A-Fa-f:.]+\])(?::[0-9]{1,5})?")

_COMMON = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
}


@dataclass(frozen=True)
class _Asset:
    path: Path
    media_type: str


@dataclass
class _Loaded:
    stamp: tuple[int, int]  # (size, mtime_ns) when read
    body: bytes
    etag: str


def _media_type(path: Path) -> str | None:
    if path.name in _TEXT_NAMES:
        return _PLAIN
    return _TYPES.get(path.suffix)


def scan(web_dir: Path = WEB_DIR) -> dict[str, _Asset]:
    """The servable files under `web_dir`: relative POSIX path -> file and type (regular
    files with a known type; no symlinks, no hidden files, nothing outside `web_dir`)."""
    table: dict[str, _Asset] = {}
    if not web_dir.is_dir():
        return table
    root = web_dir.resolve()
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            path = Path(dirpath) / name
            media_type = _media_type(path)
            if name.startswith(".") or media_type is None or path.is_symlink() or not path.is_file():
                continue
            table[path.relative_to(root).as_posix()] = _Asset(path, media_type)
    return table


def csp(host: str | None, docs: bool = False) -> str:
    """The Content-Security-Policy of a page served to `host` (the request's Host header)."""
    connect = "'self'"
    if host and _HOST.fullmatch(host):
        connect += f" ws://{host} wss://{host}"
    if docs:  # Swagger UI and ReDoc style their elements inline; ReDoc searches in a worker
        return (
            "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
            f"img-src 'self' data:; font-src 'self'; connect-src {connect}; "
            "worker-src 'self' blob:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
        )
    return (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        f"font-src 'self'; connect-src {connect}; base-uri 'none'; form-action 'none'; "
        "frame-ancestors 'none'"
    )


class StaticFiles:
    """The table of servable files and their cached bodies."""

    def __init__(self, web_dir: Path = WEB_DIR) -> None:
        self.web_dir = web_dir
        self.assets = scan(web_dir)
        self._loaded: dict[str, _Loaded] = {}

    def response(self, request: Request, name: str, docs: bool = False) -> Response:
        """The file `name` (a key of the table) with its headers, or 404."""
        asset = self.assets.get(name)
        if asset is None:
            raise ApiError.api(404, ApiCode.NOT_FOUND, "no such route")
        try:
            stat = asset.path.stat()
            stamp = (stat.st_size, stat.st_mtime_ns)
            loaded = self._loaded.get(name)
            if loaded is None or loaded.stamp != stamp:
                body = asset.path.read_bytes()
                etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
                loaded = self._loaded[name] = _Loaded(stamp, body, etag)
        except OSError:  # removed since the scan
            raise ApiError.api(404, ApiCode.NOT_FOUND, "no such route") from None
        headers = {
            **_COMMON,
            "Content-Security-Policy": csp(request.headers.get("host"), docs),
            "Cache-Control": "no-cache",
            "ETag": loaded.etag,
        }
        if request.headers.get("if-none-match") == loaded.etag:
            return Response(status_code=304, headers=headers)
        return Response(loaded.body, media_type=asset.media_type, headers=headers)


def _docs_page(title: str, head: str, body: str) -> str:
    return (
        "<!doctype html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
        f"<title>{html.escape(title)}</title>\n"
        '<link rel="icon" href="/static/vendor/swagger-ui/favicon-32x32.png">\n'
        f"{head}</head>\n<body>\n{body}</body>\n</html>\n"
    )


def install(app: FastAPI, web_dir: Path = WEB_DIR) -> None:
    """Serve `/`, `/static/{path}`, `/docs` and `/redoc` from `web_dir` (none in the OpenAPI).
    The app is created with `docs_url=None, redoc_url=None`: these replace FastAPI's pages,
    which load their scripts from a CDN."""
    files = StaticFiles(web_dir)
    router = APIRouter(include_in_schema=False)
    openapi = html.escape(app.openapi_url or "/openapi.json", quote=True)
    title = app.title
    swagger = _docs_page(
        f"{title} - Swagger UI",
        '<link rel="stylesheet" href="/static/vendor/swagger-ui/swagger-ui.css">\n',
        f'<div id="swagger-ui" data-openapi-url="{openapi}"></div>\n'
        '<script src="/static/vendor/swagger-ui/swagger-ui-bundle.js"></script>\n'
        '<script src="/static/docs/swagger-init.js"></script>\n',
    ).encode()
    redoc = _docs_page(
        f"{title} - ReDoc",
        '<link rel="stylesheet" href="/static/docs/redoc.css">\n',
        f'<redoc spec-url="{openapi}"></redoc>\n'
        '<script src="/static/vendor/redoc/redoc.standalone.js"></script>\n',
    ).encode()

    def docs_response(request: Request, body: bytes, needs: str) -> Response:
        if needs not in files.assets:
            raise ApiError.api(404, ApiCode.NOT_FOUND, f"docs assets not installed (web/{needs})")
        headers = {
            **_COMMON,
            "Content-Security-Policy": csp(request.headers.get("host"), docs=True),
            "Cache-Control": "no-cache",
        }
        return Response(body, media_type="text/html; charset=utf-8", headers=headers)

    @router.api_route("/", methods=["GET", "HEAD"])
    async def dashboard(request: Request) -> Response:
        if "index.html" not in files.assets:
            raise ApiError.api(404, ApiCode.NOT_FOUND, "dashboard not installed (web/index.html)")
        return files.response(request, "index.html")

    @router.api_route("/static/{name:path}", methods=["GET", "HEAD"])
    async def static(request: Request, name: str) -> Response:
        return files.response(request, name)

    @router.api_route("/docs", methods=["GET", "HEAD"])
    async def swagger_ui(request: Request) -> Response:
        return docs_response(request, swagger, "vendor/swagger-ui/swagger-ui-bundle.js")

    @router.api_route("/redoc", methods=["GET", "HEAD"])
    async def redoc_ui(request: Request) -> Response:
        return docs_response(request, redoc, "vendor/redoc/redoc.standalone.js")

    app.include_router(router)
