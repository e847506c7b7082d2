"""Engine configuration from `EXCHANGE_CONFIG`: instruments, fees, tiers, bands, initial marks.

The TOML file overrides instruments, fees, tiers, bands and
initial marks; `load_engine_config` turns it into engine `Instrument` objects. Decimal values
in the TOML are strings (or numbers, read through their shortest decimal form) and are
converted exactly, never through floats.

TOML layout (every key optional):

    max_open_orders = 200          # per account
    closed_orders_kept = 10000     # per account, for GET /v1/orders/{id}
    recent_trades_kept = 1000      # per symbol, for GET /v1/trades/{symbol}
    fills_kept = 1000              # per account, for GET /v1/fills

    [defaults]                     # applied to every instrument unless it overrides the key
    maker_fee_ppm = 200
    taker_fee_ppm = 500
    market_band_ppm = 50000
    liquidation_band_ppm = 100000
    price_band_ppm = 50000         # limit buys at most mark + 5%, sells at least mark - 5%; 0 = off
    max_order_qty = "1000"         # base units per order (BTC-PERP's default; ETH-PERP: "10000")
    max_order_notional = "50000000"  # USD per order, at the mark
    max_leverage = 50
    default_leverage = 10
    mark_source = "admin"          # "index": the mark is median(index, index + basis, last) (SPEC §12)
    basis_weight_ppm = 100000      # EMA weight of (mid - index) per index update
    funding_interval_s = 28800     # seconds between funding rounds (00:00, 08:00, 16:00 UTC)
    interest_ppm = 100             # per interval
    funding_cap_ppm = 3750         # |rate| at most 0.375% per interval
    tiers = [
      { max_notional = "100000",   maintenance_ppm = 5000,  maintenance_amount = "0",     max_leverage = 50 },
      { max_notional = "1000000",  maintenance_ppm = 10000, maintenance_amount = "500",   max_leverage = 25 },
      { max_notional = "10000000", maintenance_ppm = 25000, maintenance_amount = "15500", max_leverage = 10 },
    ]

    [instruments.BTC-PERP]         # merged over the built-in BTC-PERP
    initial_mark = "50000"

    [instruments.SOL-PERP]         # a new symbol needs tick_size and lot_size
    tick_size = "0.001"
    lot_size = "0.1"

    [instruments.ETH-PERP]
    enabled = false                # drop a built-in symbol
"""

from __future__ import annotations

import dataclasses
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from engine.engine import Engine
from engine.instruments import Instrument, Tier, default_instruments
from engine.units import decimal_str_to_e8


@dataclasses.dataclass(frozen=True)
class EngineConfig:
    """What the engine is built from: instruments and per-account limits."""

    instruments: dict[str, Instrument]
    max_open_orders: int = 200
    closed_orders_kept: int = 10_000
    recent_trades_kept: int = 1_000
    fills_kept: int = 1_000


_INT_KEYS = (
    "max_leverage",
    "maker_fee_ppm",
    "taker_fee_ppm",
    "market_band_ppm",
    "liquidation_band_ppm",
    "price_band_ppm",
    "default_leverage",
    "basis_weight_ppm",
    "funding_interval_s",
    "interest_ppm",
    "funding_cap_ppm",
)
_INSTRUMENT_KEYS = {
    *_INT_KEYS,
    "tick_size",
    "lot_size",
    "tiers",
    "initial_mark",
    "enabled",
    "max_order_qty",
    "max_order_notional",
    "mark_source",
}


def _e8(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise ValueError(f"{what}: expected a decimal string, got {value!r}")
    text = repr(value) if isinstance(value, float) else str(value)
    e8 = decimal_str_to_e8(text) if text.isascii() else None
    if e8 is None:
        raise ValueError(f"{what}: {value!r} is not a decimal with at most 8 decimals")
    return e8


def _tiers(rows: Any, what: str) -> tuple[Tier, ...]:
    if not isinstance(rows, list) or not rows:
        raise ValueError(f"{what}.tiers: expected a non-empty array of tables")
    out = []
    for i, row in enumerate(rows):
        unknown = set(row) - {
            "max_notional",
            "maintenance_ppm",
            "maintenance_amount",
            "max_leverage",
        }
        if unknown:
            raise ValueError(f"{what}.tiers[{i}]: unknown keys {sorted(unknown)}")
        out.append(
            Tier(
                max_notional_atoms=_e8(row["max_notional"], f"{what}.tiers[{i}].max_notional"),
                maintenance_ppm=int(row["maintenance_ppm"]),
                maintenance_amount_atoms=_e8(
                    row.get("maintenance_amount", "0"), f"{what}.tiers[{i}]"
                ),
                max_leverage=int(row["max_leverage"]),
            )
        )
    return tuple(out)


def load_engine_config(path: Path | None) -> EngineConfig:
    """Built-in instruments (SPEC §2), overridden by the TOML file at `path` if given."""
    instruments = default_instruments()
    if path is None:
        return EngineConfig(instruments)
    with open(path, "rb") as fh:
        doc = tomllib.load(fh)
    unknown = set(doc) - {
        "defaults",
        "instruments",
        "max_open_orders",
        "closed_orders_kept",
        "recent_trades_kept",
        "fills_kept",
    }
    if unknown:
        raise ValueError(f"{path}: unknown top-level keys {sorted(unknown)}")
    defaults: dict[str, Any] = dict(doc.get("defaults", {}))
    bad = set(defaults) - (_INSTRUMENT_KEYS - {"tick_size", "lot_size", "initial_mark", "enabled"})
    if bad:
        raise ValueError(f"{path}: unknown keys in [defaults]: {sorted(bad)}")
    overrides: dict[str, dict[str, Any]] = doc.get("instruments", {})
    out: dict[str, Instrument] = {}
    for symbol in sorted(set(instruments) | set(overrides)):
        spec = {**defaults, **overrides.get(symbol, {})}
        bad = set(spec) - _INSTRUMENT_KEYS
        if bad:
            raise ValueError(f"{path}: unknown keys for {symbol}: {sorted(bad)}")
        if not spec.pop("enabled", True):
            continue
        base = instruments.get(symbol)
        if base is None and not ("tick_size" in spec and "lot_size" in spec):
            raise ValueError(f"{path}: new instrument {symbol} needs tick_size and lot_size")
        kwargs: dict[str, Any] = {}
        if base is not None:
            kwargs = {f.name: getattr(base, f.name) for f in dataclasses.fields(base) if f.init}
        kwargs["symbol"] = symbol
        if "tick_size" in spec:
            kwargs["tick_size_e8"] = _e8(spec["tick_size"], f"{symbol}.tick_size")
        if "lot_size" in spec:
            kwargs["lot_size_e8"] = _e8(spec["lot_size"], f"{symbol}.lot_size")
        for key in _INT_KEYS:
            if key in spec:
                kwargs[key] = int(spec[key])
        if "tiers" in spec:
            kwargs["tiers"] = _tiers(spec["tiers"], symbol)
        if "mark_source" in spec:
            kwargs["mark_source"] = str(spec["mark_source"])
        if "max_order_notional" in spec:
            kwargs["max_order_notional_atoms"] = _e8(
                spec["max_order_notional"], f"{symbol}.max_order_notional"
            )
        max_qty_e8 = _e8(spec["max_order_qty"], f"{symbol}.max_order_qty") if "max_order_qty" in spec else None
        if max_qty_e8 is not None:
            kwargs["max_order_lots"] = 1  # replaced below, once the lot size is known
        inst = Instrument(**kwargs)
        if max_qty_e8 is not None:
            lots = inst.lots_from_e8(max_qty_e8)
            if lots is None or lots <= 0:
                raise ValueError(f"{path}: {symbol}.max_order_qty must be a positive multiple of the lot size")
            inst = dataclasses.replace(inst, max_order_lots=lots)
        if "initial_mark" in spec:
            ticks = inst.ticks_from_e8(_e8(spec["initial_mark"], f"{symbol}.initial_mark"))
            if ticks is None or ticks <= 0:
                raise ValueError(
                    f"{path}: {symbol}.initial_mark must be a positive price on the tick grid"
                )
            inst = dataclasses.replace(inst, initial_mark_ticks=ticks)
        out[symbol] = inst
    if not out:
        raise ValueError(f"{path}: no instruments left")
    return EngineConfig(
        out,
        max_open_orders=int(doc.get("max_open_orders", 200)),
        closed_orders_kept=int(doc.get("closed_orders_kept", 10_000)),
        recent_trades_kept=int(doc.get("recent_trades_kept", 1_000)),
        fills_kept=int(doc.get("fills_kept", 1_000)),
    )


def build_engine(cfg: EngineConfig) -> Engine:
    """A fresh engine for `cfg`."""
    return Engine(
        cfg.instruments,
        max_open_orders=cfg.max_open_orders,
        closed_orders_kept=cfg.closed_orders_kept,
        recent_trades_kept=cfg.recent_trades_kept,
        fills_kept=cfg.fills_kept,
    )


def engine_factory_from_toml(path: Path | None) -> Callable[[], Engine]:
    """A factory of fresh engines configured by the TOML at `path` (None: built-in defaults)."""
    cfg = load_engine_config(path)
    return lambda: build_engine(cfg)
