"""Request dependencies (`Annotated` aliases used by the route modules).

- `ServicesDep`: the running `Services` (engine loop, engine state for reads, hub, ...).
- `AccountDep`: the account id of the `X-API-Key` header (401 when missing or unknown;
  429 with Retry-After when that key is over its rate limit).
- `AdminDep`: requires `X-Admin-Token` (403 otherwise); admin calls are not rate limited.

`authenticate` is also called directly by the lean order-entry route (api/lean.py), which
skips FastAPI's dependency solver for speed; it is the same check.
"""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import APIKeyHeader

from api.errors import ApiCode, ApiError
from service.keys import retry_after_header
from service.runtime import Services

_api_key_scheme = APIKeyHeader(
    name="X-API-Key", scheme_name="ApiKey", auto_error=False, description="account API key"
)
_admin_scheme = APIKeyHeader(
    name="X-Admin-Token", scheme_name="AdminToken", auto_error=False, description="admin token"
)


def get_services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


ServicesDep = Annotated[Services, Depends(get_services)]


def authenticate(services: Services, api_key: str | None) -> int:
    """The account of `api_key`, after its rate limit; raises 401 / 429."""
    account_id = services.keys.lookup(api_key)
    if account_id is None:
        raise ApiError.api(
            401,
            ApiCode.UNAUTHORIZED,
            "missing or unknown X-API-Key" if api_key else "X-API-Key header required",
        )
    wait = services.limiter.acquire(account_id)
    if wait:
        services.metrics.rate_limited.inc()
        raise ApiError.api(
            429,
            ApiCode.RATE_LIMITED,
            "rate limit exceeded",
            headers={"Retry-After": retry_after_header(wait)},
        )
    return account_id


def current_account(
    services: ServicesDep, api_key: Annotated[str | None, Depends(_api_key_scheme)]
) -> int:
    return authenticate(services, api_key)


AccountDep = Annotated[int, Depends(current_account)]


def require_admin(
    services: ServicesDep, token: Annotated[str | None, Depends(_admin_scheme)]
) -> None:
    expected = services.settings.admin_token.encode()
    if not token or not hmac.compare_digest(token.encode(), expected):
        raise ApiError.api(403, ApiCode.FORBIDDEN, "valid X-Admin-Token required")


AdminDep = Annotated[None, Depends(require_admin)]
