"""`GET /v1/admin/accounts/{account_id}/api-secret`: an existing account's API secret.

Secrets are derived from the data dir's server secret and the key's stored hash
(service/keys.py), so accounts created before the Binance-compatible API existed have one
too; this is how an operator hands it out. Admin token required, like every admin route.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path
from pydantic import BaseModel, Field
from starlette.responses import Response

from api.deps import AdminDep, ServicesDep
from api.errors import ApiError
from api.response_models import ERROR_RESPONSES, ErrorBody
from api.responses import json_response
from api.schemas import PathId
from engine.accounts import INSURANCE_FUND_ID
from engine.errors import Reject

router = APIRouter(prefix="/v1/admin", tags=["admin"])


class ApiSecretOut(BaseModel):
    account_id: int
    api_secret: str = Field(description="HMAC-SHA256 secret for signed /fapi requests (64 hex digits)")


@router.get(
    "/accounts/{account_id}/api-secret",
    response_model=ApiSecretOut,
    responses={
        **{k: v for k, v in ERROR_RESPONSES.items() if k not in (401, 429)},
        403: {"model": ErrorBody, "description": "missing or wrong X-Admin-Token"},
        404: {"model": ErrorBody},
    },
    summary="The API secret of an account (signed /fapi requests)",
)
async def api_secret(
    services: ServicesDep,
    _admin: AdminDep,
    account_id: Annotated[PathId, Path(description="account id, 1..2^63-1 (else 400 INVALID_ID)")],
) -> Response:
    secret = services.keys.secret_of(account_id) if account_id != INSURANCE_FUND_ID else None
    if secret is None:
        raise ApiError.reject(Reject.ACCOUNT_NOT_FOUND, f"account {account_id} does not exist")
    return json_response({"account_id": account_id, "api_secret": secret})
