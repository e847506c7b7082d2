"""Unit tests of the /fapi edge's pure parts: signatures, parameters, timestamps, replays,
listen keys, symbols, error mapping and the derived API secrets (api/binance/, service/keys.py)."""

from __future__ import annotations

import hashlib
import hmac
import os
import stat
from pathlib import Path
from types import SimpleNamespace
from urllib.parse import urlencode

import pytest

from api.binance import errors as err
from api.binance.market_streams import _parse_name
from api.binance.signing import (
    ReplayGuard,
    boolean,
    check_timestamp,
    decimal_e8,
    integer,
    parse_params,
    signature_ok,
    split_signature,
)
from api.binance.user_stream import ListenKeys
from api.binance.views import Venue, binance_symbol
from engine.engine import Engine
from engine.errors import Reject
from service.keys import (
    SERVER_SECRET_FILE,
    KeyRegistry,
    derive_api_secret,
    hash_key,
    load_server_secret,
    main,
)

SECRET = b"s" * 64


def _sign(query: str) -> str:
    return hmac.new(SECRET, query.encode(), hashlib.sha256).hexdigest()


# -- signatures ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "rest", "sig"),
    [
        (b"a=1&b=2&signature=abc", b"a=1&b=2", b"abc"),
        (b"signature=abc", b"", b"abc"),
        (b"a=1&signature=abc&b=2", b"a=1&b=2", b"abc"),
        (b"signature=abc&b=2", b"b=2", b"abc"),
        (b"a=1&b=2", b"a=1&b=2", None),
        (b"xsignature=abc", b"xsignature=abc", None),
        (b"", b"", None),
    ],
    ids=["last", "only", "middle", "first", "none", "suffix-of-other-name", "empty"],
)
def test_split_signature_when_anywhere_removes_exactly_that_parameter(raw: bytes, rest: bytes, sig: bytes | None) -> None:
    assert split_signature(raw) == (rest, sig)


def test_signature_ok_when_ccxt_style_query_accepts_and_rejects_tampering() -> None:
    query = urlencode({"symbol": "BTCUSD", "side": "BUY", "quantity": "0.01", "timestamp": 1, "recvWindow": 10000})
    sig = _sign(query).encode()
    assert signature_ok(SECRET, query.encode(), sig)
    assert signature_ok(SECRET, query.encode(), sig.upper())
    assert not signature_ok(SECRET, query.replace("0.01", "0.02").encode(), sig)
    assert not signature_ok(b"other", query.encode(), sig)
    assert not signature_ok(SECRET, query.encode(), b"")


# -- parameters ----------------------------------------------------------------------------------


def test_parse_params_when_query_and_body_merges_and_decodes() -> None:
    assert parse_params(b"a=1&b=x%20y", b"c=%3D") == {"a": "1", "b": "x y", "c": "="}


@pytest.mark.parametrize(
    ("parts", "code"),
    [
        ((b"a=1&a=2",), -1101),
        ((b"a=1", b"a=2"), -1101),
        ((b"a=\xff",), -1100),
        ((b"&".join(b"p%d=1" % i for i in range(31)),), -1101),
        ((b"a=1&&b",), -1101),
    ],
    ids=["duplicate", "duplicate-across-parts", "non-ascii", "too-many", "malformed"],
)
def test_parse_params_when_malformed_refuses_with_binance_code(parts: tuple[bytes, ...], code: int) -> None:
    with pytest.raises(err.BinanceError) as info:
        parse_params(*parts)
    assert info.value.code == code


@pytest.mark.parametrize(
    ("text", "e8"),
    [("1", 100_000_000), ("0.001", 100_000), ("50000.10", 5_000_010_000_000), ("0.123456789", -1), ("1.000000000", 100_000_000)],
    ids=["int", "small", "trailing-zero", "nine-decimals", "zeros-beyond-eight"],
)
def test_decimal_e8_when_plain_decimal_parses_exactly(text: str, e8: int) -> None:
    assert decimal_e8({"x": text}, "x") == e8


@pytest.mark.parametrize(
    "text",
    ["-1", "+1", "1e5", "1.", ".5", " 1", "0x10", "NaN", "inf", "1" * 21, "1.2.3", "١"],
    ids=["neg", "plus", "exp", "trailing-dot", "leading-dot", "space", "hex", "nan", "inf", "huge", "two-dots", "arabic"],
)
def test_decimal_e8_when_not_the_spec_grammar_refuses_with_1100(text: str) -> None:
    with pytest.raises(err.BinanceError) as info:
        decimal_e8({"x": text}, "x")
    assert info.value.code == -1100


def test_integer_and_boolean_when_out_of_range_or_malformed_refuse() -> None:
    assert integer({"n": "5"}, "n", low=1, high=10) == 5
    assert integer({}, "n") is None
    for bad, code in (("0", -1130), ("11", -1130), ("-1", -1100), ("9" * 20, -1100), ("1.0", -1100)):
        with pytest.raises(err.BinanceError) as info:
            integer({"n": bad}, "n", low=1, high=10)
        assert info.value.code == code, bad
    with pytest.raises(err.BinanceError):
        integer({}, "n", required=True)
    assert boolean({"b": "TRUE"}, "b") and not boolean({"b": "false"}, "b") and not boolean({}, "b")
    with pytest.raises(err.BinanceError):
        boolean({"b": "yes"}, "b")


# -- timestamps and replays ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("params", "outcome"),
    [
        ({"timestamp": "100000"}, (100000, 5000)),
        ({"timestamp": "95000"}, (95000, 5000)),
        ({"timestamp": "94999"}, -1021),
        ({"timestamp": "100999"}, (100999, 5000)),
        ({"timestamp": "101000"}, -1021),
        ({"timestamp": "50000", "recvWindow": "60000"}, (50000, 60000)),
        ({"timestamp": "50000", "recvWindow": "60001"}, -1131),
        ({"timestamp": "50000", "recvWindow": "0"}, -1131),
        ({}, -1102),
        ({"timestamp": "1e5"}, -1100),
    ],
    ids=["now", "window-edge", "stale", "ahead-999", "ahead-1000", "max-window", "window-too-large", "window-zero", "missing", "malformed"],
)
def test_check_timestamp_when_around_the_window_follows_binance(params: dict[str, str], outcome: object) -> None:
    if isinstance(outcome, int):
        with pytest.raises(err.BinanceError) as info:
            check_timestamp(params, 100_000)
        assert info.value.code == outcome
    else:
        assert check_timestamp(params, 100_000) == outcome


def test_replay_guard_when_same_signature_in_window_refuses_and_forgets_after() -> None:
    guard = ReplayGuard()
    assert guard.admit(b"sig1", 1000, 5000, 1000)
    assert not guard.admit(b"sig1", 1000, 5000, 3000)
    assert guard.admit(b"sig2", 1000, 5000, 3000)
    assert guard.admit(b"sig3", 9000, 5000, 9000)  # prunes what expired before 9000
    assert len(guard) == 1


# -- listen keys, symbols, streams ---------------------------------------------------------------


def test_listen_keys_when_opened_again_same_key_and_expiry_lapses() -> None:
    now = [0]
    keys = ListenKeys(clock=lambda: now[0])
    k = keys.open(7)
    assert len(k) == 64 and keys.open(7) == k and keys.account_of(k) == 7
    assert keys.keepalive(8, k) is None  # another account's key
    now[0] = 60 * 60 * 1000 + 1
    assert keys.account_of(k) is None and keys.keepalive(7, k) is None
    assert keys.lapsed() == [(k, 7)]
    k2 = keys.open(7)
    assert k2 != k and keys.close(7, None) == k2 and keys.account_of(k2) is None


def test_venue_when_default_instruments_maps_perp_names_to_usd_pairs() -> None:
    venue = Venue(Engine())
    assert venue.to_binance == {"BTC-PERP": "BTCUSD", "ETH-PERP": "ETHUSD"}
    assert venue.to_engine["ETHUSD"] == "ETH-PERP" and venue.base["BTC-PERP"] == "BTC"
    assert binance_symbol("SOL-USD-PERP") == "SOLUSDUSD"


@pytest.mark.parametrize(
    ("name", "topic"),
    [
        ("btcusd@depth@100ms", ("depth", "BTC-PERP")),
        ("BTCUSD@depth", ("depth", "BTC-PERP")),
        ("ethusd@depth5@100ms", ("partial", "ETH-PERP", 5)),
        ("btcusd@aggTrade", ("agg", "BTC-PERP")),
        ("btcusd@markPrice@1s", ("mark", "BTC-PERP")),
        ("!forceOrder@arr", ("force", None)),
        ("!markPrice@arr", ("mark", None)),
        ("btcusd@bookTicker", ("book", "BTC-PERP")),
        ("xyzusd@depth", None),
        ("btcusd@kline_1m", None),
        ("btcusd@depth7", None),
    ],
    ids=["diff", "upper", "partial", "agg", "mark", "force-all", "mark-all", "ticker", "unknown-symbol", "kline", "bad-level"],
)
def test_parse_name_when_binance_stream_names_resolves_topics(name: str, topic: object) -> None:
    assert _parse_name(Venue(Engine()), name) == topic


# -- error mapping -------------------------------------------------------------------------------


def test_from_rejection_when_any_engine_reason_has_a_binance_code() -> None:
    for reason in Reject:
        event = SimpleNamespace(code=int(reason), message="why", order_id=3)
        e = err.from_rejection(event)
        assert e.code < 0 and e.msg and e.status == 400, reason
        assert reason.name in (e.detail or ""), reason


@pytest.mark.parametrize(
    ("reason", "code", "msg"),
    [
        (Reject.INSUFFICIENT_MARGIN, -2019, "Account has insufficient balance for requested action."),
        (Reject.WOULD_TAKE, -5022, None),
        (Reject.NOTHING_TO_REDUCE, -2010, "ReduceOnly Order is rejected."),
        (Reject.INVALID_QUANTITY, -1013, "Filter failure: LOT_SIZE"),
        (Reject.ORDER_NOT_FOUND, -2013, "Order does not exist."),
    ],
    ids=["margin", "post-only", "reduce-only", "lot", "not-found"],
)
def test_from_rejection_when_ccxt_relevant_picks_the_mapped_code_and_message(reason: Reject, code: int, msg: str | None) -> None:
    e = err.from_rejection(SimpleNamespace(code=int(reason), message="m", order_id=None))
    assert e.code == code
    if msg is not None:
        assert e.msg == msg


# -- API secrets -------------------------------------------------------------------------------


def test_load_server_secret_when_absent_creates_0600_once_and_reuses(tmp_path: Path) -> None:
    first = load_server_secret(tmp_path)
    path = tmp_path / SERVER_SECRET_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_server_secret(tmp_path) == first and len(first) == 32
    path.write_text("not hex")
    with pytest.raises(ValueError):
        load_server_secret(tmp_path)


def test_key_registry_when_attached_derives_stable_secrets_per_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    server = load_server_secret(tmp_path)
    keys = KeyRegistry()
    keys.add(hash_key("key-a"), 1)
    keys.add(hash_key("key-b"), 2)
    assert keys.secret_of(1) is None  # nothing attached yet
    keys.attach_server_secret(server)
    a, b = keys.secret_of(1), keys.secret_of(2)
    assert a and b and a != b and len(a) == 64
    assert a == derive_api_secret(server, hash_key("key-a")) == keys.api_secret(hash_key("key-a"))
    assert keys.signing_key(1) == a.encode() and keys.signing_key(99) is None
    assert main(["api-secret", str(tmp_path), "key-a"]) == 0
    assert capsys.readouterr().out.strip() == a
    assert main(["api-secret", str(tmp_path / "nowhere"), "key-a"]) == 1
    assert main(["bogus"]) == 2
    os.remove(tmp_path / SERVER_SECRET_FILE)
    keys.attach_server_secret(load_server_secret(tmp_path))  # a new server secret rotates all
    assert keys.secret_of(1) != a
