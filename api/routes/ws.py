"""WebSocket endpoint `/v1/ws` (protocol in service/ws_hub.py)."""

from __future__ import annotations

from fastapi import APIRouter, WebSocket

router = APIRouter(prefix="/v1")


@router.websocket("/ws")
async def ws(websocket: WebSocket) -> None:
    await websocket.app.state.services.hub.serve(websocket)
