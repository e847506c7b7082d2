"""ccxt's `binanceusdm` pointed at this exchange (SPEC §13; docs/binance.md).

    from clients.ccxt_local import binanceusdm
    ex = binanceusdm("http://127.0.0.1:8000", api_key, api_secret)
    ex.load_markets(); ex.create_order("BTC/USD:USD", "limit", "buy", 0.01, 50000)

`binanceusdm` is the synchronous client; `binanceusdm_async` the asyncio one from ccxt.pro,
which also has the `watch_*` streams. Both are ccxt's own classes, configured only through
ccxt's public options:

- `urls.api`: every `fapi*` REST family at `<base>/fapi/v1|v2|v3`, `sapi` at
  `<base>/sapi/v1`, and `ws.linear` at `<ws base>/ws`, from which ccxt derives
  `/public/ws`, `/market/ws` and `/private/ws`. No other family is set: a call that would
  need one (spot, coin-margined, options...) raises ccxt's NotSupported instead of reaching
  binance.com, which makes these clients safe in tests.
- `options.fetchCurrencies = False`: ccxt would otherwise call
  `/sapi/v1/capital/config/getall` in `load_markets` when keys are set (this service answers
  it too, minimally, so True works as well).
- `options.adjustForTimeDifference = True` keeps signed requests inside `recvWindow` even if
  this machine's clock is off (ccxt syncs with `GET /fapi/v1/time` once).

Importing this module needs ccxt (a dev dependency; bots bring their own).
"""

from __future__ import annotations

from typing import Any

import ccxt  # type: ignore[import-untyped]
import ccxt.pro  # type: ignore[import-untyped]

_REST = {
    "fapiPublic": "/fapi/v1",
    "fapiPublicV2": "/fapi/v2",
    "fapiPublicV3": "/fapi/v3",
    "fapiPrivate": "/fapi/v1",
    "fapiPrivateV2": "/fapi/v2",
    "fapiPrivateV3": "/fapi/v3",
    "fapiData": "/futures/data",
    "sapi": "/sapi/v1",
}


def config(base_url: str, api_key: str | None = None, secret: str | None = None, **extra: Any) -> dict[str, Any]:
    """The ccxt constructor config for a service at `base_url` (`http://host:port`)."""
    base = base_url.rstrip("/")
    ws_base = "ws" + base[len("http") :] if base.startswith("http") else base
    api: dict[str, Any] = {name: base + path for name, path in _REST.items()}
    api["ws"] = {"linear": ws_base + "/ws"}
    options = {
        "fetchCurrencies": False,
        "adjustForTimeDifference": True,
        "defaultType": "swap",
        **extra.pop("options", {}),
    }
    out: dict[str, Any] = {"urls": {"api": api}, "options": options, **extra}
    if api_key is not None:
        out["apiKey"] = api_key
    if secret is not None:
        out["secret"] = secret
    return out


def _pointed(exchange: Any, cfg: dict[str, Any]) -> Any:
    # ccxt deep-merges the constructor's urls into its own: replace `api` whole, so that no
    # binance.com address is left for any family
    exchange.urls["api"] = cfg["urls"]["api"]
    return exchange


def binanceusdm(base_url: str, api_key: str | None = None, secret: str | None = None, **extra: Any) -> Any:
    """A synchronous ccxt `binanceusdm` for the service at `base_url`."""
    cfg = config(base_url, api_key, secret, **extra)
    return _pointed(ccxt.binanceusdm(cfg), cfg)


def binanceusdm_async(base_url: str, api_key: str | None = None, secret: str | None = None, **extra: Any) -> Any:
    """An asyncio ccxt.pro `binanceusdm` (REST and `watch_*` streams) for the service."""
    cfg = config(base_url, api_key, secret, **extra)
    return _pointed(ccxt.pro.binanceusdm(cfg), cfg)
