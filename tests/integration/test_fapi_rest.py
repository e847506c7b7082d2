"""The Binance USDⓈ-M compatible REST API (/fapi) driven by ccxt itself, sync and async,
against the real service (SPEC §13, docs/binance.md).

Every ccxt call the issue lists; the Binance error codes and messages that ccxt maps to the
right exception classes at a local URL; response shapes field by field against Binance's
documented examples; hostile input refused at the edge with nothing reaching the engine.
The stream side is in test_fapi_streams.py (it imports the helpers below).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import inspect
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlencode

import ccxt
import httpx
import pytest

from clients.ccxt_local import binanceusdm, binanceusdm_async
from tests.integration.helpers import Api, ServiceProcess

BTC = "BTC/USD:USD"
ETH = "ETH/USD:USD"


# -- helpers (also used by test_fapi_streams.py) -------------------------------------------------


class Trader:
    """An account with its key and secret, and ways to talk /fapi as it."""

    def __init__(self, svc: ServiceProcess, account_id: int, api_key: str, api_secret: str) -> None:
        self.svc = svc
        self.account_id = account_id
        self.key = api_key
        self.secret = api_secret

    def ccxt(self) -> Any:
        return binanceusdm(self.svc.base_url, self.key, self.secret, enableRateLimit=False)

    def ccxt_async(self) -> Any:
        return binanceusdm_async(self.svc.base_url, self.key, self.secret, enableRateLimit=False)

    def signed(self, method: str, path: str, params: dict[str, Any] | None = None, *,
               ts: int | None = None, secret: str | None = None, sign: bool = True,
               key: str | None = None) -> httpx.Response:
        """A signed request the way Binance documents it (query for GET/DELETE, form body
        for POST/PUT)."""
        query = dict(params or {})
        query.setdefault("timestamp", ts if ts is not None else int(time.time() * 1000))
        text = urlencode(query)
        if sign:
            sig = hmac.new((secret or self.secret).encode(), text.encode(), hashlib.sha256).hexdigest()
            text += "&signature=" + sig
        headers = {"X-MBX-APIKEY": key if key is not None else self.key}
        if method in ("GET", "DELETE"):
            return httpx.request(method, f"{self.svc.base_url}{path}?{text}", headers=headers, timeout=10)
        headers["Content-Type"] = "application/x-www-form-urlencoded"
        return httpx.request(method, self.svc.base_url + path, content=text.encode(), headers=headers, timeout=10)

    def cancel_everything(self) -> None:
        for symbol in ("BTCUSD", "ETHUSD"):
            self.signed("DELETE", "/fapi/v1/allOpenOrders", {"symbol": symbol})


class Market:
    """One service, its admin API, and the traders a test makes (their orders are canceled
    after the test, so every test starts with empty books)."""

    def __init__(self, svc: ServiceProcess) -> None:
        self.svc = svc
        self.api = Api(svc)
        self.traders: list[Trader] = []

    def trader(self, deposit: str = "100000") -> Trader:
        r = self.api.admin("POST", "/v1/admin/accounts")
        assert r.status_code == 200, r.text
        body = r.json()
        assert set(body) == {"account_id", "api_key", "api_secret"}
        if deposit:
            d = self.api.admin("POST", "/v1/admin/deposit", json={"account_id": body["account_id"], "amount": deposit})
            assert d.status_code == 200, d.text
        t = Trader(self.svc, body["account_id"], body["api_key"], body["api_secret"])
        self.traders.append(t)
        return t

    def seq(self) -> int:
        return int(self.api.admin("GET", "/v1/admin/engine").json()["seq"])

    def cleanup(self) -> None:
        for t in self.traders:
            t.cancel_everything()
        self.traders = []


def run(value: Any) -> Any:
    """`value`, awaited when a coroutine (so one scenario serves sync and async ccxt)."""
    if inspect.iscoroutine(value):
        return asyncio.get_event_loop().run_until_complete(value)
    return value


@pytest.fixture(scope="module")
def fapi_service(start_service: Any) -> ServiceProcess:
    svc: ServiceProcess = start_service(funding="off")
    api = Api(svc)
    api.set_mark("BTC-PERP", "50000")
    api.set_mark("ETH-PERP", "3000")
    return svc


@pytest.fixture
def market(fapi_service: ServiceProcess) -> Iterator[Market]:
    m = Market(fapi_service)
    yield m
    m.cleanup()


@pytest.fixture(params=["sync", "async"])
def flavour(request: pytest.FixtureRequest) -> Iterator[str]:
    """Run a test with ccxt's sync client and with ccxt.pro's async one."""
    if request.param == "async":
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        yield "async"
        loop.close()
        asyncio.set_event_loop(None)
    else:
        yield "sync"


def client(trader: Trader, flavour: str) -> Any:
    return trader.ccxt() if flavour == "sync" else trader.ccxt_async()


def close(ex: Any) -> None:
    if hasattr(ex, "close") and inspect.iscoroutinefunction(ex.close):
        run(ex.close())


# -- documented response examples (Binance USDⓈ-M docs), by JSON type ------------------------------

S, Z, B, L, D, N = str, int, bool, list, dict, (int, float)  # Z: integers

ORDER_DOC = {  # GET /fapi/v1/order
    "avgPrice": S, "clientOrderId": S, "cumQuote": S, "executedQty": S, "orderId": Z, "origQty": S,
    "origType": S, "price": S, "reduceOnly": B, "side": S, "positionSide": S, "status": S, "stopPrice": S,
    "closePosition": B, "symbol": S, "time": Z, "timeInForce": S, "type": S, "updateTime": Z,
    "workingType": S, "priceProtect": B, "priceMatch": S, "selfTradePreventionMode": S, "goodTillDate": Z,
}
NEW_ORDER_DOC = {k: v for k, v in ORDER_DOC.items() if k != "time"} | {"cumQty": S}
USER_TRADE_DOC = {
    "buyer": B, "commission": S, "commissionAsset": S, "id": Z, "maker": B, "orderId": Z, "price": S,
    "qty": S, "quoteQty": S, "realizedPnl": S, "side": S, "positionSide": S, "symbol": S, "time": Z,
}
ACCOUNT_V3_DOC = {
    "totalInitialMargin": S, "totalMaintMargin": S, "totalWalletBalance": S, "totalUnrealizedProfit": S,
    "totalMarginBalance": S, "totalPositionInitialMargin": S, "totalOpenOrderInitialMargin": S,
    "totalCrossWalletBalance": S, "totalCrossUnPnl": S, "availableBalance": S, "maxWithdrawAmount": S,
    "assets": L, "positions": L,
}
ACCOUNT_V2_DOC = ACCOUNT_V3_DOC | {
    "feeTier": Z, "canTrade": B, "canDeposit": B, "canWithdraw": B, "updateTime": Z, "multiAssetsMargin": B,
    "tradeGroupId": Z,
}
ASSET_V3_DOC = {
    "asset": S, "walletBalance": S, "unrealizedProfit": S, "marginBalance": S, "maintMargin": S,
    "initialMargin": S, "positionInitialMargin": S, "openOrderInitialMargin": S, "crossWalletBalance": S,
    "crossUnPnl": S, "availableBalance": S, "maxWithdrawAmount": S, "updateTime": Z,
}
ACCOUNT_POSITION_V3_DOC = {
    "symbol": S, "positionSide": S, "positionAmt": S, "unrealizedProfit": S, "isolatedMargin": S,
    "notional": S, "isolatedWallet": S, "initialMargin": S, "maintMargin": S, "updateTime": Z,
}
ACCOUNT_POSITION_V2_DOC = {
    "symbol": S, "initialMargin": S, "maintMargin": S, "unrealizedProfit": S, "positionInitialMargin": S,
    "openOrderInitialMargin": S, "leverage": S, "isolated": B, "entryPrice": S, "breakEvenPrice": S,
    "maxNotional": S, "bidNotional": S, "askNotional": S, "positionSide": S, "positionAmt": S, "updateTime": Z,
}
BALANCE_DOC = {
    "accountAlias": S, "asset": S, "balance": S, "crossWalletBalance": S, "crossUnPnl": S,
    "availableBalance": S, "maxWithdrawAmount": S, "marginAvailable": B, "updateTime": Z,
}
POSITION_RISK_V3_DOC = {
    "symbol": S, "positionSide": S, "positionAmt": S, "entryPrice": S, "breakEvenPrice": S, "markPrice": S,
    "unRealizedProfit": S, "liquidationPrice": S, "isolatedMargin": S, "notional": S, "marginAsset": S,
    "isolatedWallet": S, "initialMargin": S, "maintMargin": S, "positionInitialMargin": S,
    "openOrderInitialMargin": S, "adl": Z, "bidNotional": S, "askNotional": S, "updateTime": Z,
}
POSITION_RISK_V2_DOC = {
    "entryPrice": S, "breakEvenPrice": S, "marginType": S, "isAutoAddMargin": S, "isolatedMargin": S,
    "leverage": S, "liquidationPrice": S, "markPrice": S, "maxNotionalValue": S, "positionAmt": S,
    "notional": S, "isolatedWallet": S, "symbol": S, "unRealizedProfit": S, "positionSide": S, "updateTime": Z,
}
BRACKET_DOC = {"bracket": Z, "initialLeverage": Z, "notionalCap": N, "notionalFloor": N, "maintMarginRatio": N, "cum": N}
PREMIUM_INDEX_DOC = {
    "symbol": S, "markPrice": S, "indexPrice": S, "estimatedSettlePrice": S, "lastFundingRate": S,
    "interestRate": S, "nextFundingTime": Z, "time": Z,
}
FUNDING_RATE_DOC = {"symbol": S, "fundingRate": S, "fundingTime": Z, "markPrice": S}
TICKER_24HR_DOC = {
    "symbol": S, "priceChange": S, "priceChangePercent": S, "weightedAvgPrice": S, "lastPrice": S, "lastQty": S,
    "openPrice": S, "highPrice": S, "lowPrice": S, "volume": S, "quoteVolume": S, "openTime": Z, "closeTime": Z,
    "firstId": Z, "lastId": Z, "count": Z,
}
TICKER_PRICE_DOC = {"symbol": S, "price": S, "time": Z}
BOOK_TICKER_DOC = {"symbol": S, "bidPrice": S, "bidQty": S, "askPrice": S, "askQty": S, "time": Z}
DEPTH_DOC = {"lastUpdateId": Z, "E": Z, "T": Z, "bids": L, "asks": L}
TRADE_DOC = {"id": Z, "price": S, "qty": S, "quoteQty": S, "time": Z, "isBuyerMaker": B}
AGG_TRADE_DOC = {"a": Z, "p": S, "q": S, "f": Z, "l": Z, "T": Z, "m": B}
LEVERAGE_DOC = {"leverage": Z, "maxNotionalValue": S, "symbol": S}
EXCHANGE_INFO_DOC = {"exchangeFilters": L, "rateLimits": L, "serverTime": Z, "assets": L, "symbols": L, "timezone": S}
SYMBOL_DOC = {
    "symbol": S, "pair": S, "contractType": S, "deliveryDate": Z, "onboardDate": Z, "status": S,
    "maintMarginPercent": S, "requiredMarginPercent": S, "baseAsset": S, "quoteAsset": S, "marginAsset": S,
    "pricePrecision": Z, "quantityPrecision": Z, "baseAssetPrecision": Z, "quotePrecision": Z,
    "underlyingType": S, "underlyingSubType": L, "settlePlan": Z, "triggerProtect": S, "filters": L,
    "orderTypes": L, "timeInForce": L, "liquidationFee": S, "marketTakeBound": S,
}


def assert_shape(body: Any, doc: dict[str, Any], where: str = "") -> None:
    """Every documented field is there with the documented JSON type."""
    assert isinstance(body, dict), (where, body)
    missing = set(doc) - set(body)
    assert not missing, f"{where}: missing {sorted(missing)} in {body}"
    for key, kind in doc.items():
        assert isinstance(body[key], kind) and not (kind is Z and isinstance(body[key], bool)), (
            f"{where}.{key}: {body[key]!r} is not {kind}"
        )


# -- market data and markets -------------------------------------------------------------------------


def test_load_markets_when_ccxt_reads_exchange_info_gets_both_usd_perpetuals(market: Market, flavour: str) -> None:
    ex = client(market.trader(), flavour)
    try:
        markets = run(ex.load_markets())
        assert set(markets) == {BTC, ETH}
        btc = markets[BTC]
        assert (btc["id"], btc["base"], btc["quote"], btc["settle"]) == ("BTCUSD", "BTC", "USD", "USD")
        assert btc["swap"] and btc["linear"] and btc["contract"] and btc["active"]
        assert btc["precision"]["price"] == 0.1 and btc["precision"]["amount"] == 0.001
        assert btc["limits"]["amount"]["min"] == 0.001 and btc["limits"]["amount"]["max"] == 1000
        assert markets[ETH]["precision"] == {**markets[ETH]["precision"], "price": 0.01, "amount": 0.01}
    finally:
        close(ex)


def test_exchange_info_when_fetched_has_binance_fields_and_filters(market: Market) -> None:
    info = httpx.get(market.svc.base_url + "/fapi/v1/exchangeInfo").json()
    assert_shape(info, EXCHANGE_INFO_DOC, "exchangeInfo")
    symbols = {s["symbol"]: s for s in info["symbols"]}
    assert set(symbols) == {"BTCUSD", "ETHUSD"}
    btc = symbols["BTCUSD"]
    assert_shape(btc, SYMBOL_DOC, "symbols[BTCUSD]")
    assert (btc["baseAsset"], btc["quoteAsset"], btc["marginAsset"], btc["contractType"]) == ("BTC", "USD", "USD", "PERPETUAL")
    assert btc["orderTypes"] == ["LIMIT", "MARKET", "STOP", "STOP_MARKET", "TAKE_PROFIT", "TAKE_PROFIT_MARKET"]
    assert btc["timeInForce"] == ["GTC", "IOC", "FOK", "GTX"]
    filters = {f["filterType"]: f for f in btc["filters"]}
    assert {"PRICE_FILTER", "LOT_SIZE", "MARKET_LOT_SIZE", "PERCENT_PRICE", "MAX_NUM_ORDERS"} <= set(filters)
    assert filters["PRICE_FILTER"]["tickSize"] == "0.1" and filters["LOT_SIZE"]["stepSize"] == "0.001"
    assert filters["PERCENT_PRICE"]["multiplierUp"] == "1.05" and filters["PERCENT_PRICE"]["multiplierDown"] == "0.95"
    assert filters["MAX_NUM_ORDERS"]["limit"] == 200
    assert (btc["pricePrecision"], btc["quantityPrecision"]) == (1, 3)


def test_market_data_when_fetched_with_ccxt_matches_the_book_and_trades(market: Market, flavour: str) -> None:
    maker, taker = market.trader(), market.trader()
    mx, tx = client(maker, flavour), client(taker, flavour)
    try:
        run(mx.create_order(BTC, "limit", "sell", 0.5, 50100))
        run(mx.create_order(BTC, "limit", "sell", 0.25, 50200))
        run(mx.create_order(BTC, "limit", "buy", 0.1, 49900))
        trade = run(tx.create_order(BTC, "limit", "buy", 0.2, 50100, {"timeInForce": "IOC"}))
        assert trade["status"] == "closed" and trade["filled"] == 0.2 and trade["average"] == 50100
        book = run(tx.fetch_order_book(BTC))
        assert book["asks"][:2] == [[50100.0, 0.3], [50200.0, 0.25]] and book["bids"][0] == [49900.0, 0.1]
        assert book["nonce"] >= 1
        trades = run(tx.fetch_trades(BTC))
        assert trades[-1]["price"] == 50100 and trades[-1]["amount"] == 0.2 and trades[-1]["side"] == "buy"
        raw = run(tx.fetch_trades(BTC, params={"fetchTradesMethod": "fapiPublicGetTrades"}))
        assert raw[-1]["id"] == trades[-1]["id"] and raw[-1]["side"] == "buy"
        ticker = run(tx.fetch_ticker(BTC))
        assert ticker["last"] == 50100 and ticker["baseVolume"] >= 0.2
        bids_asks = run(tx.fetch_bids_asks([BTC]))
        assert bids_asks[BTC]["bid"] == 49900 and bids_asks[BTC]["ask"] == 50100
        assert run(tx.fetch_tickers([BTC, ETH]))[BTC]["last"] == 50100
        rate = run(tx.fetch_funding_rate(BTC))
        assert rate["markPrice"] == 50000 and rate["indexPrice"] == 50000
        assert rate["fundingRate"] == 0.0001 and rate["fundingTimestamp"] > time.time() * 1000
        r = market.api.admin("POST", "/v1/admin/funding", json={"symbol": "ETH-PERP", "rate": "0.0002"})
        assert r.status_code == 200, r.text
        history = run(tx.fetch_funding_rate_history(ETH))
        assert history[-1]["fundingRate"] == 0.0002
    finally:
        close(mx)
        close(tx)


def test_public_rest_shapes_when_compared_field_by_field_match_binance_docs(market: Market) -> None:
    maker, taker = market.trader(), market.trader()
    maker.signed("POST", "/fapi/v1/order", {"symbol": "ETHUSD", "side": "SELL", "type": "LIMIT", "quantity": "1", "price": "3010", "timeInForce": "GTC"})
    r = taker.signed("POST", "/fapi/v1/order", {"symbol": "ETHUSD", "side": "BUY", "type": "MARKET", "quantity": "0.5"})
    assert r.status_code == 200, r.text
    base = market.svc.base_url
    get = lambda path: httpx.get(base + path).json()  # noqa: E731
    depth = get("/fapi/v1/depth?symbol=ETHUSD&limit=5")
    assert_shape(depth, DEPTH_DOC, "depth")
    assert depth["asks"][0] == ["3010", "0.5"] and depth["lastUpdateId"] == market.seq()
    assert_shape(get("/fapi/v1/trades?symbol=ETHUSD&limit=1")[0], TRADE_DOC, "trades")
    assert_shape(get("/fapi/v1/aggTrades?symbol=ETHUSD&limit=1")[0], AGG_TRADE_DOC, "aggTrades")
    assert_shape(get("/fapi/v1/premiumIndex?symbol=ETHUSD"), PREMIUM_INDEX_DOC, "premiumIndex")
    assert [p["symbol"] for p in get("/fapi/v1/premiumIndex")] == ["BTCUSD", "ETHUSD"]
    assert_shape(get("/fapi/v1/ticker/24hr?symbol=ETHUSD"), TICKER_24HR_DOC, "ticker/24hr")
    assert_shape(get("/fapi/v1/ticker/price?symbol=ETHUSD"), TICKER_PRICE_DOC, "ticker/price")
    assert_shape(get("/fapi/v1/ticker/bookTicker?symbol=ETHUSD"), BOOK_TICKER_DOC, "bookTicker")
    market.api.admin("POST", "/v1/admin/funding", json={"symbol": "ETH-PERP", "rate": "-0.0001"})
    assert_shape(get("/fapi/v1/fundingRate?symbol=ETHUSD")[-1], FUNDING_RATE_DOC, "fundingRate")
    assert get("/fapi/v1/time")["serverTime"] > 0 and get("/fapi/v1/ping") == {}
    ticker = get("/fapi/v1/ticker/24hr?symbol=ETHUSD")
    assert ticker["lastPrice"] == "3010" and ticker["count"] >= 1


# -- trading and account ---------------------------------------------------------------------------------


def test_trading_when_ccxt_places_queries_and_cancels_every_call_works(market: Market, flavour: str) -> None:
    alice, bob = market.trader(), market.trader()
    a, b = client(alice, flavour), client(bob, flavour)
    try:
        run(a.load_markets())
        assert run(a.set_leverage(20, BTC))["leverage"] == 20
        resting = run(a.create_order(BTC, "limit", "buy", 0.05, 49500, {"clientOrderId": "alice-1"}))
        assert resting["status"] == "open" and resting["clientOrderId"] == "alice-1" and resting["price"] == 49500
        assert run(a.fetch_order(resting["id"], BTC))["status"] == "open"
        by_client = run(a.fetch_order(None, BTC, {"origClientOrderId": "alice-1"}))
        assert by_client["id"] == resting["id"]
        assert [o["id"] for o in run(a.fetch_open_orders(BTC))] == [resting["id"]]
        canceled = run(a.cancel_order(resting["id"], BTC))
        assert canceled["status"] == "canceled" and canceled["id"] == resting["id"]
        assert run(a.fetch_open_orders(BTC)) == []
        post_only = run(a.create_order(BTC, "limit", "sell", 0.1, 50300, {"timeInForce": "PO"}))
        assert post_only["postOnly"] and post_only["timeInForce"] == "PO"
        filled = run(b.create_order(BTC, "market", "buy", 0.1))
        assert filled["status"] == "closed" and filled["filled"] == 0.1 and filled["average"] == 50300
        fok = run(b.create_order(BTC, "limit", "buy", 1, 50300, {"timeInForce": "FOK"}))
        assert fok["status"] == "expired" and fok["filled"] == 0
        orders = run(a.fetch_orders(BTC))
        assert [o["status"] for o in orders[-2:]] == ["canceled", "closed"]
        mine = run(b.fetch_my_trades(BTC))
        assert mine[-1]["price"] == 50300 and mine[-1]["amount"] == 0.1 and mine[-1]["takerOrMaker"] == "taker"
        assert mine[-1]["fee"]["cost"] == pytest.approx(2.515) and mine[-1]["fee"]["currency"] == "USD"
        positions = {p["symbol"]: p for p in run(b.fetch_positions())}
        assert positions[BTC]["side"] == "long" and positions[BTC]["contracts"] == 0.1
        assert positions[BTC]["entryPrice"] == 50300 and positions[BTC]["markPrice"] == 50000
        assert run(a.fetch_positions([BTC]))[0]["side"] == "short"
        balance = run(b.fetch_balance())
        assert balance["USD"]["total"] == pytest.approx(100000 - 2.515 - 30)
        reduce = run(b.create_order(BTC, "limit", "sell", 0.1, 50400, {"reduceOnly": True}))
        assert reduce["reduceOnly"] is True and reduce["status"] == "open"
        canceled_all = run(b.cancel_all_orders(BTC))
        assert canceled_all is not None and run(b.fetch_open_orders(BTC)) == []
        assert run(a.fetch_leverage(BTC))["longLeverage"] == 20
        mode = run(a.fetch_position_mode(BTC))
        assert mode["hedged"] is False
    finally:
        close(a)
        close(b)


def test_private_shapes_when_compared_field_by_field_match_binance_docs(market: Market) -> None:
    t, other = market.trader(), market.trader()
    other.signed("POST", "/fapi/v1/order", {"symbol": "BTCUSD", "side": "SELL", "type": "LIMIT", "quantity": "0.2", "price": "50000", "timeInForce": "GTC"})
    new = t.signed("POST", "/fapi/v1/order", {"symbol": "BTCUSD", "side": "BUY", "type": "LIMIT", "quantity": "0.1", "price": "50000", "timeInForce": "GTC", "newClientOrderId": "shape-1"})
    assert new.status_code == 200, new.text
    assert_shape(new.json(), NEW_ORDER_DOC, "order (new)")
    assert new.json()["status"] == "FILLED" and new.json()["cumQty"] == "0.1" and new.json()["cumQuote"] == "5000"
    rest = t.signed("POST", "/fapi/v1/order", {"symbol": "BTCUSD", "side": "BUY", "type": "LIMIT", "quantity": "0.1", "price": "49000", "timeInForce": "GTC"}).json()
    assert_shape(t.signed("GET", "/fapi/v1/order", {"symbol": "BTCUSD", "orderId": rest["orderId"]}).json(), ORDER_DOC, "order")
    for o in t.signed("GET", "/fapi/v1/openOrders", {"symbol": "BTCUSD"}).json():
        assert_shape(o, ORDER_DOC, "openOrders[]")
    for o in t.signed("GET", "/fapi/v1/allOrders", {"symbol": "BTCUSD"}).json():
        assert_shape(o, ORDER_DOC, "allOrders[]")
    canceled = t.signed("DELETE", "/fapi/v1/order", {"symbol": "BTCUSD", "orderId": rest["orderId"]})
    assert_shape(canceled.json(), NEW_ORDER_DOC, "order (cancel)")
    assert canceled.json()["status"] == "CANCELED"
    trade = t.signed("GET", "/fapi/v1/userTrades", {"symbol": "BTCUSD"}).json()[-1]
    assert_shape(trade, USER_TRADE_DOC, "userTrades[]")
    assert (trade["price"], trade["qty"], trade["quoteQty"], trade["buyer"], trade["maker"]) == ("50000", "0.1", "5000", True, False)
    v3 = t.signed("GET", "/fapi/v3/account").json()
    assert_shape(v3, ACCOUNT_V3_DOC, "account v3")
    assert_shape(v3["assets"][0], ASSET_V3_DOC, "account v3 assets[]")
    assert [p["symbol"] for p in v3["positions"]] == ["BTCUSD"]
    assert_shape(v3["positions"][0], ACCOUNT_POSITION_V3_DOC, "account v3 positions[]")
    v2 = t.signed("GET", "/fapi/v2/account").json()
    assert_shape(v2, ACCOUNT_V2_DOC, "account v2")
    assert [p["symbol"] for p in v2["positions"]] == ["BTCUSD", "ETHUSD"]
    assert_shape(v2["positions"][0], ACCOUNT_POSITION_V2_DOC, "account v2 positions[]")
    assert v3["totalWalletBalance"] == "99997.5" and v3["assets"][0]["updateTime"] > 0
    for version in ("v2", "v3"):
        assert_shape(t.signed("GET", f"/fapi/{version}/balance").json()[0], BALANCE_DOC, f"balance {version}")
    risk3 = t.signed("GET", "/fapi/v3/positionRisk").json()
    assert len(risk3) == 1
    assert_shape(risk3[0], POSITION_RISK_V3_DOC, "positionRisk v3")
    assert (risk3[0]["positionAmt"], risk3[0]["entryPrice"], risk3[0]["markPrice"]) == ("0.1", "50000", "50000")
    assert 0 <= risk3[0]["adl"] <= 4
    risk2 = t.signed("GET", "/fapi/v2/positionRisk", {"symbol": "BTCUSD"}).json()
    assert_shape(risk2[0], POSITION_RISK_V2_DOC, "positionRisk v2")
    assert risk2[0]["leverage"] == "10" and risk2[0]["marginType"] == "cross"
    brackets = t.signed("GET", "/fapi/v1/leverageBracket", {"symbol": "BTCUSD"}).json()
    assert brackets[0]["symbol"] == "BTCUSD" and len(brackets[0]["brackets"]) == 3
    for b in brackets[0]["brackets"]:
        assert_shape(b, BRACKET_DOC, "brackets[]")
    assert brackets[0]["brackets"][0] | {} == {**brackets[0]["brackets"][0], "initialLeverage": 50, "notionalCap": 100000, "maintMarginRatio": 0.005}
    assert_shape(t.signed("POST", "/fapi/v1/leverage", {"symbol": "BTCUSD", "leverage": 5}).json(), LEVERAGE_DOC, "leverage")
    adl = t.signed("GET", "/fapi/v1/adlQuantile", {"symbol": "BTCUSD"}).json()
    assert adl[0]["symbol"] == "BTCUSD" and set(adl[0]["adlQuantile"]) == {"LONG", "SHORT", "BOTH"}
    key = t.signed("POST", "/fapi/v1/listenKey", sign=False)
    assert key.status_code == 200 and len(key.json()["listenKey"]) == 64
    assert t.signed("PUT", "/fapi/v1/listenKey", sign=False).json() == key.json()
    assert t.signed("DELETE", "/fapi/v1/listenKey", sign=False).json() == {}
    assert t.signed("PUT", "/fapi/v1/listenKey", sign=False).json()["code"] == -1125


def test_margin_type_and_position_margin_when_flat_answer_binance_style(market: Market) -> None:
    """SPEC §12 isolated margin on /fapi; the full story is in test_fapi_isolated.py."""
    t = market.trader()
    crossed = t.signed("POST", "/fapi/v1/marginType", {"symbol": "BTCUSD", "marginType": "CROSSED"})
    assert crossed.status_code == 400 and crossed.json() == {"code": -4046, "msg": "No need to change margin type."}
    margin = t.signed("POST", "/fapi/v1/positionMargin", {"symbol": "BTCUSD", "amount": "10", "type": 1})
    assert margin.status_code == 400 and margin.json()["code"] == -4049, margin.text
    isolated = t.signed("POST", "/fapi/v1/marginType", {"symbol": "BTCUSD", "marginType": "ISOLATED"})
    assert isolated.status_code == 200 and isolated.json() == {"code": 200, "msg": "success"}
    again = t.signed("POST", "/fapi/v1/marginType", {"symbol": "BTCUSD", "marginType": "ISOLATED"})
    assert again.status_code == 400 and again.json() == {"code": -4046, "msg": "No need to change margin type."}
    flat = t.signed("POST", "/fapi/v1/positionMargin", {"symbol": "BTCUSD", "amount": "10", "type": 1})
    assert flat.status_code == 400 and flat.json()["code"] == -4054, flat.text
    back = t.signed("POST", "/fapi/v1/marginType", {"symbol": "BTCUSD", "marginType": "CROSSED"})
    assert back.status_code == 200 and back.json() == {"code": 200, "msg": "success"}
    # trailing stops stay refused (stop and take-profit orders: test_fapi_stops.py)
    trailing = t.signed("POST", "/fapi/v1/algoOrder", {"symbol": "BTCUSD", "side": "SELL", "type": "TRAILING_STOP_MARKET", "quantity": "0.1", "callbackRate": "1", "algoType": "CONDITIONAL"})
    assert trailing.status_code == 400 and trailing.json()["code"] == -4136 and "Trailing" in trailing.json()["msg"]
    trailing2 = t.signed("POST", "/fapi/v1/order", {"symbol": "BTCUSD", "side": "SELL", "type": "TRAILING_STOP_MARKET", "quantity": "0.1", "callbackRate": "1"})
    assert trailing2.json()["code"] == -4136
    ex = t.ccxt()
    ex.load_markets()
    with pytest.raises(ccxt.MarginModeAlreadySet):  # ccxt's own class for -4046
        ex.set_margin_mode("cross", BTC)
    assert ex.set_margin_mode("isolated", BTC) == {"code": 200, "msg": "success"}
    assert ex.set_margin_mode("cross", BTC) == {"code": 200, "msg": "success"}
    with pytest.raises(ccxt.ExchangeError, match="Trailing stop orders"):
        ex.fapiPrivatePostAlgoOrder({"symbol": "BTCUSD", "side": "SELL", "type": "TRAILING_STOP_MARKET", "quantity": "0.1", "callbackRate": "1", "algoType": "CONDITIONAL"})


def test_capital_config_when_fetch_currencies_kept_on_load_markets_still_works(market: Market) -> None:
    t = market.trader()
    ex = binanceusdm(market.svc.base_url, t.key, t.secret, options={"fetchCurrencies": True})
    currencies = ex.fetch_currencies()
    assert "USD" in currencies
    ex.load_markets(reload=True)
    assert BTC in ex.markets


# -- errors: Binance codes that ccxt maps at a local URL ---------------------------------------


@pytest.mark.parametrize(
    ("case", "exc", "code"),
    [
        ("wrong-signature", ccxt.AuthenticationError, -1022),
        ("unknown-key", ccxt.AuthenticationError, -2015),
        ("stale-timestamp", ccxt.InvalidNonce, -1021),
        ("unknown-symbol", ccxt.BadSymbol, -1121),
        ("insufficient-margin", ccxt.InsufficientFunds, -2019),
        ("unknown-order", ccxt.OrderNotFound, -2013),
        ("unknown-order-cancel", ccxt.OrderNotFound, -2011),
        ("off-grid-quantity", ccxt.InvalidOrder, -1013),
        ("off-grid-price", ccxt.InvalidOrder, -1013),
        ("post-only-would-take", ccxt.InvalidOrder, -5022),
        ("reduce-only-nothing", ccxt.InvalidOrder, -2010),
        ("duplicate-client-id", ccxt.InvalidOrder, -2010),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_errors_when_ccxt_gets_them_raise_the_venue_exception_class(market: Market, flavour: str, case: str, exc: type, code: int) -> None:
    t, maker = market.trader("1000"), market.trader()
    maker.signed("POST", "/fapi/v1/order", {"symbol": "BTCUSD", "side": "SELL", "type": "LIMIT", "quantity": "0.01", "price": "50050", "timeInForce": "GTC"})
    ex = client(t, flavour)
    bad = binanceusdm(t.svc.base_url, t.key, "f" * 64) if flavour == "sync" else binanceusdm_async(t.svc.base_url, t.key, "f" * 64)
    nokey = binanceusdm(t.svc.base_url, "no-such-key", "f" * 64) if flavour == "sync" else binanceusdm_async(t.svc.base_url, "no-such-key", "f" * 64)
    try:
        run(ex.load_markets())
        if case == "duplicate-client-id":
            run(ex.create_order(BTC, "limit", "buy", 0.001, 49000, {"clientOrderId": "dup-1"}))
        calls = {
            "wrong-signature": lambda: bad.fetch_balance(),
            "unknown-key": lambda: nokey.fetch_balance(),
            "stale-timestamp": lambda: ex.fapiPrivateGetOpenOrders({"timestamp": int(time.time() * 1000) - 60_000}),
            "unknown-symbol": lambda: ex.fapiPrivateGetOpenOrders({"symbol": "DOGEUSD"}),
            "insufficient-margin": lambda: ex.create_order(BTC, "limit", "buy", 1, 50000),
            "unknown-order": lambda: ex.fetch_order("999999", BTC),
            "unknown-order-cancel": lambda: ex.cancel_order("999999", BTC),
            "off-grid-quantity": lambda: ex.fapiPrivatePostOrder({"symbol": "BTCUSD", "side": "BUY", "type": "LIMIT", "quantity": "0.0015", "price": "49000", "timeInForce": "GTC"}),
            "off-grid-price": lambda: ex.fapiPrivatePostOrder({"symbol": "BTCUSD", "side": "BUY", "type": "LIMIT", "quantity": "0.001", "price": "49000.05", "timeInForce": "GTC"}),
            "post-only-would-take": lambda: ex.create_order(BTC, "limit", "buy", 0.001, 50050, {"timeInForce": "PO"}),
            "reduce-only-nothing": lambda: ex.create_order(BTC, "limit", "sell", 0.001, 50100, {"reduceOnly": True}),
            "duplicate-client-id": lambda: ex.create_order(BTC, "limit", "buy", 0.001, 49000, {"clientOrderId": "dup-1"}),
        }
        seq = market.seq()
        with pytest.raises(exc) as info:
            run(calls[case]())
        # ccxt quotes the body, or only `msg` when the message table matched (-2019)
        text = str(info.value)
        assert f'"code":{code}' in text or (code == -2019 and text.endswith("Account has insufficient balance for requested action.")), text
        if case in ("wrong-signature", "unknown-key", "stale-timestamp", "unknown-symbol", "off-grid-quantity", "off-grid-price", "unknown-order", "unknown-order-cancel"):
            assert market.seq() == seq  # refused at the edge: nothing reached the engine
    finally:
        for each in (ex, bad, nokey):
            close(each)


def test_rate_limit_when_key_over_budget_answers_429_1003(start_service: Any) -> None:
    # one request back every 20 s: a slow machine between the requests below refills nothing
    svc = start_service(rate_limit_per_s="0.05", rate_limit_burst="3", funding="off")
    m = Market(svc)
    t = m.trader()
    codes = [t.signed("GET", "/fapi/v1/openOrders").status_code for _ in range(5)]
    assert codes[:3] == [200, 200, 200] and codes[-1] == 429
    r = t.signed("GET", "/fapi/v1/openOrders")
    assert r.json()["code"] == -1003 and int(r.headers["Retry-After"]) >= 1
    ex = t.ccxt()
    ex.options["timeDifference"] = 0
    with pytest.raises(ccxt.DDoSProtection):
        ex.fapiPrivateGetOpenOrders()


# -- hostile input: clear 4xx, nothing reaches the engine ---------------------------------------------


HOSTILE = [
    ("huge-quantity", {"quantity": "1" + "0" * 40}, -1100),
    ("huge-but-valid-grammar", {"quantity": "99999999999999999999"}, -4005),
    ("negative", {"quantity": "-1"}, -1100),
    ("exponent", {"quantity": "1e3"}, -1100),
    ("nan", {"price": "NaN"}, -1100),
    ("nine-decimals", {"quantity": "0.000000001"}, -1013),
    ("zero-quantity", {"quantity": "0"}, -1013),
    ("price-over-filter", {"price": "9999999999999"}, -1013),
    ("bad-side", {"side": "LONG"}, -1117),
    ("bad-type", {"type": "ICEBERG"}, -1116),
    ("bad-tif", {"timeInForce": "GTD"}, -1115),
    ("unknown-param", {"leverage": "100"}, -1104),
    ("bad-client-id", {"newClientOrderId": "has space"}, -4015),
    ("hedge-side", {"positionSide": "LONG"}, -4061),
    ("bad-bool", {"reduceOnly": "maybe"}, -1130),
    ("no-symbol", {"symbol": ""}, -1102),
]


@pytest.mark.parametrize(("case", "change", "code"), HOSTILE, ids=[c[0] for c in HOSTILE])
def test_hostile_order_when_refused_at_the_edge_answers_4xx_and_engine_untouched(market: Market, case: str, change: dict[str, str], code: int) -> None:
    t = market.trader()
    params = {"symbol": "BTCUSD", "side": "BUY", "type": "LIMIT", "quantity": "0.01", "price": "49000", "timeInForce": "GTC", **change}
    seq = market.seq()
    r = t.signed("POST", "/fapi/v1/order", params)
    assert 400 <= r.status_code < 500, r.text
    assert r.json()["code"] == code, r.text
    assert market.seq() == seq


def test_hostile_requests_when_malformed_or_replayed_are_refused_before_the_engine(market: Market) -> None:
    t = market.trader()
    order = {"symbol": "BTCUSD", "side": "BUY", "type": "LIMIT", "quantity": "0.01", "price": "49000", "timeInForce": "GTC"}
    seq = market.seq()
    base = market.svc.base_url
    cases: list[tuple[str, httpx.Response, int, int]] = []
    cases.append(("missing signature", t.signed("POST", "/fapi/v1/order", order, sign=False), 400, -1102))
    cases.append(("missing key", t.signed("POST", "/fapi/v1/order", order, key=""), 401, -2014))
    cases.append(("stale", t.signed("POST", "/fapi/v1/order", order, ts=int(time.time() * 1000) - 10_000), 400, -1021))
    cases.append(("future", t.signed("POST", "/fapi/v1/order", order, ts=int(time.time() * 1000) + 5_000), 400, -1021))
    cases.append(("window too large", t.signed("POST", "/fapi/v1/order", {**order, "recvWindow": 600_000}), 400, -1131))
    cases.append(("wrong secret", t.signed("POST", "/fapi/v1/order", order, secret="0" * 64), 400, -1022))
    body = urlencode({**order, "timestamp": int(time.time() * 1000)})
    sig = hmac.new(t.secret.encode(), body.encode(), hashlib.sha256).hexdigest()
    tampered = body.replace("0.01", "0.02") + "&signature=" + sig
    cases.append(("tampered body", httpx.post(base + "/fapi/v1/order", content=tampered, headers={"X-MBX-APIKEY": t.key}), 400, -1022))
    dup = body + "&side=SELL"
    dup_sig = hmac.new(t.secret.encode(), dup.encode(), hashlib.sha256).hexdigest()
    cases.append(("duplicate param", httpx.post(base + "/fapi/v1/order", content=f"{dup}&signature={dup_sig}", headers={"X-MBX-APIKEY": t.key}), 400, -1101))
    cases.append(("non-ascii", httpx.post(base + "/fapi/v1/order", content="symbol=BTC\xe9".encode("latin-1"), headers={"X-MBX-APIKEY": t.key}), 400, -1100))
    cases.append(("too many params", httpx.get(base + "/fapi/v1/depth?" + "&".join(f"p{i}=1" for i in range(40))), 400, -1101))
    cases.append(("body too large", httpx.post(base + "/fapi/v1/order", content=b"a=" + b"1" * 2_000_000, headers={"X-MBX-APIKEY": t.key}), 413, -1104))
    cases.append(("unknown path", httpx.get(base + "/fapi/v1/klines?symbol=BTCUSD"), 404, -5000))
    cases.append(("wrong method", httpx.put(base + "/fapi/v1/depth"), 405, -1020))
    cases.append(("bad depth limit", httpx.get(base + "/fapi/v1/depth?symbol=BTCUSD&limit=7"), 400, -4021))
    cases.append(("huge limit", httpx.get(base + "/fapi/v1/trades?symbol=BTCUSD&limit=99999999999999999999999"), 400, -1100))
    for name, r, status, code in cases:
        assert r.status_code == status, (name, r.status_code, r.text)
        assert r.json()["code"] == code, (name, r.text)
        assert set(r.json()) <= {"code", "msg", "detail"}, (name, r.text)
    assert market.seq() == seq
    # a signed command is accepted once: the same bytes again are a replay (-1021)
    fresh = urlencode({**order, "timestamp": int(time.time() * 1000)})
    payload = fresh + "&signature=" + hmac.new(t.secret.encode(), fresh.encode(), hashlib.sha256).hexdigest()
    first = httpx.post(base + "/fapi/v1/order", content=payload, headers={"X-MBX-APIKEY": t.key})
    assert first.status_code == 200, first.text
    seq = market.seq()
    again = httpx.post(base + "/fapi/v1/order", content=payload, headers={"X-MBX-APIKEY": t.key})
    assert again.status_code == 400 and again.json()["code"] == -1021 and "already used" in again.json()["msg"]
    assert market.seq() == seq
    # an identical read twice is fine (reads are not replay-checked)
    q = urlencode({"symbol": "BTCUSD", "timestamp": int(time.time() * 1000)})
    url = f"{base}/fapi/v1/openOrders?{q}&signature=" + hmac.new(t.secret.encode(), q.encode(), hashlib.sha256).hexdigest()
    assert httpx.get(url, headers={"X-MBX-APIKEY": t.key}).status_code == 200
    assert httpx.get(url, headers={"X-MBX-APIKEY": t.key}).status_code == 200


# -- the API secret ---------------------------------------------------------------------------------


def test_api_secret_when_created_or_asked_by_admin_is_the_same_and_signs(market: Market) -> None:
    t = market.trader()
    r = market.api.admin("GET", f"/v1/admin/accounts/{t.account_id}/api-secret")
    assert r.status_code == 200 and r.json() == {"account_id": t.account_id, "api_secret": t.secret}
    assert market.api.http.get(f"/v1/admin/accounts/{t.account_id}/api-secret").status_code == 403
    assert market.api.admin("GET", "/v1/admin/accounts/987654321/api-secret").status_code == 404
    assert market.api.admin("GET", "/v1/admin/accounts/0/api-secret").status_code == 400  # ids are 1..2^63-1
    assert market.api.admin("GET", "/v1/admin/accounts/abc/api-secret").status_code == 400
    other = market.trader()
    assert other.secret != t.secret
    assert t.signed("GET", "/fapi/v3/account", secret=other.secret).json()["code"] == -1022
