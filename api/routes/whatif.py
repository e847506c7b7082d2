"""`POST /v1/admin/what-if` (SPEC §9, §15): what a mark or index move would do now, per ADL policy.

Each policy runs in a forked child (service/storage/snapshotter.py `fork_child`, as the
background snapshots do): `fork` gives the child a copy-on-write image of the engine exactly as
it is between two batches, for the price of copying page tables (a few ms; a `pickle` copy of
10k accounts took over a second, bench/whatif_bench.py). The child sets the symbol's ADL
policy, applies the move and writes what it set off as JSON to a pipe; the engine loop goes on
meanwhile and the children run side by side. Nothing is journaled or published, the live state
hash does not change. Where `fork` is unavailable (or fails) each policy runs on a pickled copy
in a worker thread instead (the pickle then holds the engine loop).
"""

from __future__ import annotations

import asyncio
import pickle
from functools import partial
from typing import Annotated, Any

import orjson
from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field
from starlette.responses import Response

from api import convert
from api.deps import AdminDep, ServicesDep
from api.errors import ApiCode, ApiError
from api.response_models import ERROR_RESPONSES, ErrorBody
from api.responses import json_response
from api.schemas import Price, Symbol
from engine import commands as c
from engine import events as ev
from engine.errors import Reject
from service.format import EventFormatter, money_str, price_str
from service.storage.snapshotter import SnapshotChild, fork_child

router = APIRouter(prefix="/v1/admin", tags=["admin"])


class WhatIfRequest(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"symbol": "BTC-PERP", "mark_price": "42000", "policies": ["queue", "pro_rata"]}]},
    )

    symbol: Symbol
    mark_price: Price | None = Field(default=None, description="the move, on a symbol whose mark an admin sets")
    index_price: Price | None = Field(default=None, description="the move, on a symbol whose mark follows its index")
    policies: Annotated[list[str], Field(min_length=1, max_length=8)] | None = Field(
        default=None, description="ADL policies to compare (default: every policy)"
    )


class WhatIfPolicyOut(BaseModel):
    policy: str
    liquidations: list[dict[str, Any]]
    adl_fills: list[dict[str, Any]]
    insurance_fund_delta: str
    bad_debt: str
    haircut_total: str
    counterparties: int


class WhatIfOut(BaseModel):
    symbol: str
    mark_price: str | None
    index_price: str | None
    results: list[WhatIfPolicyOut]


@router.post(
    "/what-if",
    response_model=WhatIfOut,
    responses={**ERROR_RESPONSES, 403: {"model": ErrorBody, "description": "admin token required"},
               409: {"model": ErrorBody, "description": "mark_price on an index-marked symbol (or the reverse)"}},
    summary="What a mark or index move would do now, per ADL policy (changes nothing)",
)
async def what_if(services: ServicesDep, _admin: AdminDep, body: WhatIfRequest) -> Response:
    engine = services.engine
    inst = convert.instrument(engine, body.symbol)
    if (body.mark_price is None) == (body.index_price is None):
        raise ApiError.api(400, ApiCode.VALIDATION_ERROR, "give exactly one of mark_price and index_price")
    by_index = body.index_price is not None
    if by_index != (inst.mark_source == c.MARK_FROM_INDEX):
        raise ApiError.reject(
            Reject.MARK_SOURCE_IS_INDEX,
            f"the mark of {body.symbol} is set by "
            f"{'its index: use index_price' if inst.mark_source == c.MARK_FROM_INDEX else 'the admin: use mark_price'}",
        )
    policies = body.policies or list(c.ADL_POLICIES)
    unknown = [p for p in policies if p not in c.ADL_POLICIES]
    if unknown or len(set(policies)) != len(policies):
        raise ApiError.reject(Reject.INVALID_ADL_POLICY, f"policies must be distinct, each one of {list(c.ADL_POLICIES)}")
    price = convert.ticks(inst, body.index_price if by_index else body.mark_price)  # type: ignore[arg-type]
    move: Any = c.SetIndexPrice(body.symbol, price) if by_index else c.SetMarkPrice(body.symbol, price)
    fmt = services.formatter
    try:
        # all children forked now, before any await: each sees the same state between two batches
        children = [fork_child(partial(_child_work, engine, body.symbol, move, p, fmt)) for p in policies]
    except (OSError, AttributeError):  # no fork here: pickled copies instead
        blob = pickle.dumps(engine, pickle.HIGHEST_PROTOCOL)
        results = await asyncio.to_thread(_run_all, blob, body.symbol, move, policies, fmt)
    else:
        results = [_child_result(await _finished(child)) for child in children]
    text = price_str(inst, price)
    return json_response(
        {
            "symbol": body.symbol,
            "mark_price": None if by_index else text,
            "index_price": text if by_index else None,
            "results": results,
        }
    )


def _child_work(engine: Any, symbol: str, move: Any, policy: str, fmt: EventFormatter) -> str:
    """In the child: its own copy of the engine, changed freely; JSON for the parent."""
    try:
        return orjson.dumps({"ok": _run_one(engine, symbol, move, policy, fmt)}).decode()
    except ApiError as exc:
        return orjson.dumps({"rejected": exc.message}).decode()


async def _finished(child: SnapshotChild, timeout_s: float = 120.0) -> SnapshotChild:
    done = asyncio.Event()

    def readable() -> None:
        if child.poll():
            done.set()

    child.watch(readable)
    if not child.poll():
        try:
            await asyncio.wait_for(done.wait(), timeout_s)
        except TimeoutError:
            child.kill()
    return child


def _child_result(child: SnapshotChild) -> dict[str, Any]:
    if child.result is None:
        raise ApiError.api(500, ApiCode.INTERNAL_ERROR, f"what-if failed: {child.error}")
    answer = orjson.loads(child.result)
    if "rejected" in answer:
        raise ApiError.api(400, ApiCode.VALIDATION_ERROR, answer["rejected"])
    return dict(answer["ok"])


def _run_all(blob: bytes, symbol: str, move: Any, policies: list[str], fmt: EventFormatter) -> list[dict[str, Any]]:
    return [_run_one(pickle.loads(blob), symbol, move, policy, fmt) for policy in policies]


def _run_one(copy: Any, symbol: str, move: Any, policy: str, fmt: EventFormatter) -> dict[str, Any]:
    ts = copy.ts  # the copy's clock: the time of the last command it applied
    if copy.adl_policy[symbol] != policy:
        copy.apply(c.SetAdlPolicy(symbol, policy, ts_ns=ts))
    events = copy.apply(type(move)(move.symbol, move.price_ticks, ts_ns=ts))
    rejected = [e for e in events if isinstance(e, ev.REJECTION_TYPES)]
    if rejected:
        raise ApiError.api(400, ApiCode.VALIDATION_ERROR, rejected[0].message)
    liquidations = [e for e in events if type(e) is ev.AccountLiquidated]
    adl = [e for e in events if type(e) is ev.PositionDeleveraged]
    bad_debt = sum(e.bad_debt_atoms for e in liquidations) + sum(
        e.bad_debt_atoms for e in events if type(e) is ev.NegativeBalanceCovered
    )
    fund_delta = sum(e.delta_atoms for e in events if type(e) is ev.InsuranceFundChanged)
    return {
        "policy": policy,
        "liquidations": [fmt.data(e) for e in liquidations],
        "adl_fills": [fmt.data(e) for e in adl],
        "insurance_fund_delta": money_str(fund_delta),
        "bad_debt": money_str(bad_debt),
        "haircut_total": money_str(sum(e.haircut_atoms for e in adl)),
        "counterparties": len({e.counterparty_account_id for e in adl}),
    }
