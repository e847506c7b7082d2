"""EXCHANGE_CONFIG keys of the version 2 risk rules: price band, order size limits (SPEC §3)."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine import commands as c
from engine.engine import Engine
from engine.errors import Reject
from service.config import build_engine, load_engine_config
from tests.unit.helpers import BIG, BTC, MARK, Ex


def _config(tmp_path: Path, text: str) -> Engine:
    path = tmp_path / "exchange.toml"
    path.write_text(text)
    return build_engine(load_engine_config(path))


def test_config_when_band_and_size_keys_set_engine_uses_them(tmp_path: Path) -> None:
    eng = _config(
        tmp_path,
        '[defaults]\nprice_band_ppm = 10000\n'
        '[instruments.BTC-PERP]\nmax_order_qty = "2.5"\nmax_order_notional = "30000"\n',
    )
    inst = eng.instruments[BTC]
    assert (inst.price_band_ppm, inst.max_order_lots, inst.max_order_notional_atoms) == (10_000, 2_500, 30_000 * 10**8)
    assert eng.instruments["ETH-PERP"].price_band_ppm == 10_000
    assert eng.instruments["ETH-PERP"].max_order_lots == 1_000_000  # 10,000 ETH


def test_config_when_max_order_qty_off_the_lot_grid_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="max_order_qty"):
        _config(tmp_path, '[instruments.BTC-PERP]\nmax_order_qty = "0.0005"\n')


def test_place_when_price_band_is_zero_far_prices_are_accepted(tmp_path: Path) -> None:
    eng = _config(tmp_path, "[defaults]\nprice_band_ppm = 0\n")
    ex = Ex(instruments=eng.instruments)
    ex.mark(MARK)
    a = ex.account(BIG)
    ex.rest(a, c.BUY, 1, MARK * 3)  # 200% above the mark: no band


def test_place_when_band_is_one_percent_refuses_one_tick_past_it(tmp_path: Path) -> None:
    eng = _config(tmp_path, "[defaults]\nprice_band_ppm = 10000\n")
    ex = Ex(instruments=eng.instruments)
    ex.mark(MARK)
    a = ex.account(BIG)
    ex.rest(a, c.BUY, 1, MARK * 101 // 100)  # exactly mark + 1%
    ex.reject(c.PlaceOrder(a, BTC, c.BUY, 1, MARK * 101 // 100 + 1), Reject.PRICE_OUT_OF_BAND)
    ex.rest(a, c.SELL, 1, MARK * 99 // 100 + 10_000)  # a sell far above is passive: no band
    ex.reject(c.PlaceOrder(a, BTC, c.SELL, 1, MARK * 99 // 100 - 1), Reject.PRICE_OUT_OF_BAND)


def test_config_when_index_and_funding_keys_set_engine_uses_them(tmp_path: Path) -> None:
    eng = _config(
        tmp_path,
        '[defaults]\nfunding_interval_s = 60\n'
        '[instruments.BTC-PERP]\nmark_source = "index"\nbasis_weight_ppm = 200000\n'
        'interest_ppm = -50\nfunding_cap_ppm = 1000\n',
    )
    btc, eth = eng.instruments["BTC-PERP"], eng.instruments["ETH-PERP"]
    assert (btc.mark_source, btc.basis_weight_ppm, btc.interest_ppm, btc.funding_cap_ppm) == ("index", 200_000, -50, 1_000)
    assert (btc.funding_interval_s, eth.funding_interval_s, eth.mark_source) == (60, 60, "admin")


@pytest.mark.parametrize(
    "line",
    ['mark_source = "oracle"', "basis_weight_ppm = 0", "funding_interval_s = 0", "funding_cap_ppm = 1000000"],
)
def test_config_when_index_or_funding_key_is_out_of_range_refused(tmp_path: Path, line: str) -> None:
    with pytest.raises(ValueError):
        _config(tmp_path, f"[instruments.BTC-PERP]\n{line}\n")
