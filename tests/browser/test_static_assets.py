"""What api/static.py serves, in process (no browser): the dashboard, its JavaScript modules
and CSS, the vendored /docs and /redoc assets, with the right content types and headers, no
outside URL in our own HTML/JS/CSS, and nothing outside web/ whatever the path says.

The raw-path cases call the ASGI app with the scope uvicorn builds (`path` percent-decoded,
`raw_path` as sent), so `..` reaches the router exactly as it would over the network (the
same paths are sent over real HTTP in tests/browser/test_dashboard.py).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import httpx
import pytest
from fastapi import FastAPI

from api.app import create_app
from api.errors import install_error_handlers
from api.static import WEB_DIR, csp, install, scan
from service.settings import Settings

ADMIN_TOKEN = "static-admin-token-0123"
OUTSIDE_URL = re.compile(r"""(?:https?:)?//[A-Za-z0-9.-]+\.[A-Za-z]{2,}""")
JS = "text/javascript; charset=utf-8"
CSS = "text/css; charset=utf-8"
HTML = "text/html; charset=utf-8"


@pytest.fixture
async def app(tmp_path: Path) -> AsyncIterator[Any]:
    application = create_app(Settings(admin_token=ADMIN_TOKEN, data_dir=tmp_path, redis_url=None))
    async with application.router.lifespan_context(application):
        yield application


@pytest.fixture
async def client(app: Any) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1:8000") as c:
        yield c


def _own_files(*suffixes: str) -> list[Path]:
    """Our own page files (not the vendored libraries)."""
    return sorted(p for p in WEB_DIR.rglob("*") if p.suffix in suffixes and "vendor" not in p.parts)


def _local_refs(html: str) -> list[str]:
    return re.findall(r"""(?:src|href)="([^"]+)\"""", html)


async def test_dashboard_when_requested_is_html_with_strict_headers_and_only_local_refs(
    client: httpx.AsyncClient,
) -> None:
    res = await client.get("/")
    assert res.status_code == 200
    assert res.headers["content-type"] == HTML
    policy = res.headers["content-security-policy"]
    for directive in ("default-src 'none'", "script-src 'self'", "style-src 'self'", "frame-ancestors 'none'",
                      "connect-src 'self' ws://127.0.0.1:8000 wss://127.0.0.1:8000"):
        assert directive in policy
    assert "unsafe-inline" not in policy and "unsafe-eval" not in policy
    assert res.headers["x-content-type-options"] == "nosniff"
    assert res.headers["x-frame-options"] == "DENY"
    assert res.headers["referrer-policy"] == "no-referrer"
    assert not OUTSIDE_URL.search(res.text)
    assert "<script>" not in res.text and " style=" not in res.text  # nothing inline for the CSP to refuse
    refs = _local_refs(res.text)
    assert "/static/js/main.js" in refs and "/static/css/app.css" in refs
    for ref in refs:
        assert ref.startswith("/"), ref
        got = await client.get(ref)
        assert got.status_code == 200, ref


@pytest.mark.parametrize("path", _own_files(".js"), ids=lambda p: p.relative_to(WEB_DIR).as_posix())
async def test_own_js_when_requested_is_javascript_without_outside_urls(client: httpx.AsyncClient, path: Path) -> None:
    name = path.relative_to(WEB_DIR).as_posix()
    res = await client.get(f"/static/{name}")
    assert res.status_code == 200
    assert res.headers["content-type"] == JS
    assert res.headers["x-content-type-options"] == "nosniff"
    assert not OUTSIDE_URL.search(res.text), OUTSIDE_URL.search(res.text)
    assert "localStorage" not in res.text and "sessionStorage" not in res.text and "document.cookie" not in res.text
    assert ".innerHTML" not in res.text  # text only: nothing from the service is parsed as HTML
    for target in re.findall(r"""from\s+"(\.[^"]+)\"""", res.text):  # every module import resolves
        resolved = (path.parent / target).resolve().relative_to(WEB_DIR).as_posix()
        assert (await client.get(f"/static/{resolved}")).headers["content-type"] == JS, target


@pytest.mark.parametrize("path", _own_files(".css", ".html"), ids=lambda p: p.relative_to(WEB_DIR).as_posix())
async def test_own_css_and_html_when_read_name_no_outside_url(path: Path) -> None:
    assert not OUTSIDE_URL.search(path.read_text())


async def test_docs_when_requested_load_vendored_assets_only(client: httpx.AsyncClient) -> None:
    for page, needed in (
        ("/docs", ["/static/vendor/swagger-ui/swagger-ui-bundle.js", "/static/vendor/swagger-ui/swagger-ui.css",
                   "/static/docs/swagger-init.js"]),
        ("/redoc", ["/static/vendor/redoc/redoc.standalone.js"]),
    ):
        res = await client.get(page)
        assert res.status_code == 200 and res.headers["content-type"] == HTML
        assert not OUTSIDE_URL.search(res.text), page
        assert "script-src 'self';" in res.headers["content-security-policy"]
        assert "<script>" not in res.text
        refs = _local_refs(res.text)
        assert set(needed) <= set(refs), refs
        for ref in refs:
            got = await client.get(ref)
            assert got.status_code == 200, ref
            kind = {".js": JS, ".css": CSS, ".png": "image/png"}[Path(ref).suffix]
            assert got.headers["content-type"] == kind, ref
    assert (await client.get("/openapi.json")).status_code == 200


async def test_openapi_when_generated_leaves_the_pages_out(client: httpx.AsyncClient) -> None:
    paths = (await client.get("/openapi.json")).json()["paths"]
    assert not {"/", "/docs", "/redoc", "/static/{name}"} & set(paths)


async def test_static_when_file_unchanged_answers_304_to_its_etag(client: httpx.AsyncClient) -> None:
    first = await client.get("/static/js/main.js")
    again = await client.get("/static/js/main.js", headers={"If-None-Match": first.headers["etag"]})
    assert again.status_code == 304 and again.content == b""
    assert first.headers["cache-control"] == "no-cache"


async def test_vendored_licences_when_requested_are_plain_text(client: httpx.AsyncClient) -> None:
    for name in ("uplot/LICENSE", "swagger-ui/LICENSE", "swagger-ui/NOTICE", "redoc/LICENSE", "VERSIONS"):
        res = await client.get(f"/static/vendor/{name}")
        assert res.status_code == 200 and res.headers["content-type"] == "text/plain; charset=utf-8", name


async def _raw_get(app: Any, raw: str) -> tuple[int, bytes]:
    """GET `raw` through the ASGI app with the scope uvicorn builds for it."""
    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET",
        "scheme": "http", "path": unquote(raw), "raw_path": raw.encode(), "query_string": b"",
        "root_path": "", "headers": [(b"host", b"127.0.0.1:8000")],
        "client": ("127.0.0.1", 40000), "server": ("127.0.0.1", 8000),
    }
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app(scope, receive, send)
    status = next(m["status"] for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return status, body


ESCAPES = [
    "/static/../api/app.py",
    "/static/../../etc/passwd",
    "/static/js/../../api/app.py",
    "/static/js/../main.js",  # even one that would land inside web/: paths are never resolved
    "/static/%2e%2e/api/app.py",
    "/static/..%2fapi%2fapp.py",
    "/static/%2e%2e%2fapi%2fapp.py",
    "/static/%252e%252e%252fapi%252fapp.py",
    "/static/..%5capi%5capp.py",
    "/static/..\\api\\app.py",
    "/static/%2fetc%2fpasswd",
    "/static//etc/passwd",
    "/static/vendor.sh",
    "/static/js/main.js%00.png",
    "/static/",
    "/static/js",
]


@pytest.mark.parametrize("raw", ESCAPES)
async def test_static_when_path_leaves_web_or_names_no_asset_answers_404(app: Any, raw: str) -> None:
    status, body = await _raw_get(app, raw)
    assert status == 404, (raw, body[:200])
    assert json.loads(body)["error"] == "NOT_FOUND"
    assert b"create_app" not in body and b"root:" not in body


def test_scan_when_web_has_symlinks_hidden_or_unknown_files_lists_only_plain_assets(tmp_path: Path) -> None:
    web = tmp_path / "web"
    (web / "js").mkdir(parents=True)
    (web / "js" / "a.js").write_text("export {};\n")
    (web / "index.html").write_text("<!doctype html>\n")
    (web / ".secret.js").write_text("x\n")
    (web / "vendor.sh").write_text("#!/bin/sh\n")
    (web / "notes.md").write_text("# notes\n")
    outside = tmp_path / "outside.js"
    outside.write_text("secret\n")
    (web / "js" / "link.js").symlink_to(outside)
    (web / "linked").symlink_to(tmp_path, target_is_directory=True)
    assert sorted(scan(web)) == ["index.html", "js/a.js"]
    assert scan(tmp_path / "missing") == {}


@pytest.mark.parametrize(
    ("host", "connect"),
    [
        ("127.0.0.1:8000", "connect-src 'self' ws://127.0.0.1:8000 wss://127.0.0.1:8000;"),
        ("[::1]:8000", "connect-src 'self' ws://[::1]:8000 wss://[::1]:8000;"),
        ("evil.example; script-src *", "connect-src 'self';"),
        ("a b", "connect-src 'self';"),
        (None, "connect-src 'self';"),
    ],
    ids=["ipv4", "ipv6", "directive-injection", "space", "none"],
)
def test_csp_when_host_header_is_odd_names_only_this_origin(host: str | None, connect: str) -> None:
    policy = csp(host)
    assert connect in policy
    assert policy.count("script-src") == 1


def test_vendored_versions_when_read_match_the_pins_in_vendor_sh() -> None:
    script = (WEB_DIR / "vendor.sh").read_text()
    pins = {
        "uplot": re.search(r"^UPLOT=(\S+)$", script, re.M),
        "swagger-ui-dist": re.search(r"^SWAGGER_UI=(\S+)$", script, re.M),
        "redoc": re.search(r"^REDOC=(\S+)$", script, re.M),
    }
    lines = (WEB_DIR / "vendor" / "VERSIONS").read_text().splitlines()
    vendored = {line.split()[0]: line.split()[1] for line in lines if not line.startswith("patched:")}
    assert vendored == {name: m.group(1) for name, m in pins.items() if m is not None}
    assert all(line.split()[2].startswith("sha512-") for line in lines if not line.startswith("patched:"))
    for folder in ("uplot", "swagger-ui", "redoc"):
        assert (WEB_DIR / "vendor" / folder / "LICENSE").is_file(), folder
    # the one outside URL ReDoc loads by itself is pointed at our own file
    bundle = (WEB_DIR / "vendor" / "redoc" / "redoc.standalone.js").read_text()
    assert "cdn.redoc.ly/redoc/logo-mini.svg" not in bundle and "/static/docs/redoc-logo.svg" in bundle


async def test_pages_when_web_is_missing_answer_404_saying_so(tmp_path: Path) -> None:
    """An install without web/ (a wheel): the pages say what is missing, the API still works."""
    bare = FastAPI(docs_url=None, redoc_url=None)
    install_error_handlers(bare)
    install(bare, tmp_path / "no-web")
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=bare), base_url="http://app") as c:
        for path, what in (("/", "dashboard not installed"), ("/docs", "docs assets not installed"),
                           ("/redoc", "docs assets not installed"), ("/static/js/main.js", "no such route")):
            res = await c.get(path)
            assert res.status_code == 404 and what in res.json()["message"], (path, res.text)
        assert (await c.get("/openapi.json")).status_code == 200


def test_web_dir_when_exchange_web_dir_is_set_is_read_from_it(tmp_path: Path) -> None:
    # the Docker image installs a wheel (no web/ beside the api package) and points here
    out = subprocess.run(
        [sys.executable, "-c", "from api.static import WEB_DIR; print(WEB_DIR)"],
        env={**os.environ, "EXCHANGE_WEB_DIR": str(tmp_path)}, capture_output=True, text=True, check=True,
    )
    assert out.stdout.strip() == str(tmp_path)
