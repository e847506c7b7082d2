"""uvicorn's httptools protocol, answering what the HTTP parser refuses with the error body.

uvicorn answers a request its parser cannot read (an unknown method such as `FOO`, a bad
request line, a malformed header) with a plain-text 400 before the app sees anything.
`JsonErrorHttpProtocol` answers the SPEC error body instead, and closes the connection as
uvicorn does (the byte stream can no longer be trusted):

- a method the parser does not know: 405 METHOD_NOT_ALLOWED, like a known method that no
  route serves (the app answers those);
- anything else: 400 MALFORMED_REQUEST.

Used by `python -m service` (service/__main__.py); nothing reaches the app, the engine or the
journal in either case.
"""

from __future__ import annotations

import sys

import httptools
import orjson
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from api.errors import ApiCode, ApiError

_REASONS = {400: b"Bad Request", 405: b"Method Not Allowed"}


def parser_error_body(exc: BaseException | None) -> tuple[int, bytes]:
    """(status, JSON error body) for a request the HTTP parser refused with `exc`."""
    if isinstance(exc, httptools.HttpParserInvalidMethodError):
        err = ApiError.api(405, ApiCode.METHOD_NOT_ALLOWED, "unknown HTTP method")
    else:
        err = ApiError.api(
            400, ApiCode.MALFORMED_REQUEST, "malformed HTTP request (request line or headers)"
        )
    return err.status, orjson.dumps(err.body())


class JsonErrorHttpProtocol(HttpToolsProtocol):
    """HttpToolsProtocol whose parser-error answer is the JSON error body."""

    def send_400_response(self, msg: str) -> None:
        # uvicorn calls this from its `except httptools.HttpParserError` block (data_received),
        # so the parser's exception is the one being handled.
        status, body = parser_error_body(sys.exc_info()[1])
        content = [b"HTTP/1.1 %d %s\r\n" % (status, _REASONS[status])]
        for name, value in self.server_state.default_headers:
            content.extend([name, b": ", value, b"\r\n"])
        content.extend(
            [
                b"content-type: application/json\r\n",
                b"content-length: " + str(len(body)).encode("ascii") + b"\r\n",
                b"connection: close\r\n",
                b"\r\n",
                body,
            ]
        )
        self.transport.write(b"".join(content))
        self.transport.close()
