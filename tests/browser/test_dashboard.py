"""The dashboard (`GET /`) in a real headless Chromium against the real service and the demo
market with a 25% crash (`make sandbox CRASH=25%`), as a person would watch it.

- The page loads with no console error and no failed request, makes no request to another
  origin, and fills in: book levels on both sides, trades, the mark, the insurance fund; index,
  funding rate and countdown when the service has GET /v1/funding/{symbol}, "—" otherwise;
  where the service has the `funding:<symbol>` and `insurance_fund` channels, the index and
  the fund shown are values those channels sent.
- With an API key typed in (an account made through the admin route, long 0.01 BTC): the
  positions table shows that position with the ADL light equal to GET /v1/positions'
  `adl_quantile` and the same liquidation price; an order from the ticket shows as placed and
  appears under open orders; a refused one shows the API's own error message.
- After the crash the liquidation/ADL feed holds ADL rows whose numbers equal those of the
  `adl` events a WebSocket client of the test received (matched by seq), and liquidation rows
  equal to the `liquidation` events; where the service has GET /v1/events, those are the
  same events, and a page opened after the crash shows them from there, newest first.
- /docs (Swagger UI) and /redoc render from the vendored assets with every outside request
  refused, and without console errors.
- Static paths that try to leave web/ answer 404 over real HTTP (the raw path as sent).

Screenshots go to a temp dir; their paths are printed (`pytest -s`). Nothing here asserts on
speed: every wait is for a condition, with a generous bound.
"""

from __future__ import annotations

import http.client
import json
import re
import threading
from collections.abc import Iterator
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.sync.client import connect

from tests.browser.helpers import ADMIN, SYMBOL, Demo, wait_until

pytestmark = pytest.mark.slow

CRASH_TIMEOUT_S = 300  # the demo's feed: a 25% fall over three minutes, 30 s in (less with --speed)


WATCHED = ["adl", "liquidations", f"funding:{SYMBOL}", "insurance_fund"]


class Recorder:
    """A WebSocket client of the test's own: every message of the channels in WATCHED that
    the service has (`accepted`: a service without `funding:` or `insurance_fund` refuses
    those, and the page then shows "—" or polls)."""

    def __init__(self, base: str) -> None:
        self.url = base.replace("http://", "ws://") + "/v1/ws"
        self.messages: list[dict[str, Any]] = []
        self.accepted: set[str] = set()
        self.ready = threading.Event()
        self.stop = threading.Event()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        try:
            with connect(self.url, open_timeout=10) as ws:
                ws.send(json.dumps({"op": "subscribe", "channels": WATCHED}))
                while not self.stop.is_set():
                    try:
                        msg = json.loads(ws.recv(timeout=0.5))
                    except TimeoutError:
                        continue
                    if msg.get("channel") == "control" and msg["data"].get("type") == "subscribed":
                        self.accepted.update(msg["data"]["channels"])
                        self.ready.set()
                    elif msg.get("channel") in WATCHED:
                        self.messages.append(msg)
        except BaseException as exc:  # reported by the test
            self.error = exc
            self.ready.set()

    def by_seq(self, channel: str) -> dict[int, dict[str, Any]]:
        return {m["seq"]: m["data"] for m in list(self.messages) if m["channel"] == channel}

    def values(self, channel: str, *fields: str) -> list[str]:
        """Every value of `fields` this channel carried, oldest first."""
        return [m["data"][f] for m in list(self.messages) if m["channel"] == channel
                for f in fields if m["data"].get(f) is not None]


@pytest.fixture
def recorder(demo: Demo) -> Iterator[Recorder]:
    rec = Recorder(demo.base)
    rec.thread.start()
    assert rec.ready.wait(30) and rec.error is None, rec.error
    yield rec
    rec.stop.set()
    rec.thread.join(10)


class Watched:
    """A page with everything that would show in its console recorded."""

    def __init__(self, browser: Any, origin: str) -> None:
        self.page = browser.new_page(viewport={"width": 1280, "height": 800})
        self.errors: list[str] = []
        self.outside: list[str] = []
        self.page.on("console", lambda m: m.type == "error" and self.errors.append(f"{m.text} [{m.location.get('url')}]"))
        self.page.on("pageerror", lambda e: self.errors.append(f"page error: {e}"))
        self.page.on("requestfailed", lambda r: self.errors.append(f"request failed: {r.url} {r.failure}"))

        def route(r: Any) -> None:
            if r.request.url.startswith((origin + "/", origin.replace("http", "ws", 1) + "/")):
                r.continue_()
            else:
                self.outside.append(r.request.url)
                r.abort()

        self.page.route("**/*", route)

    def text(self, selector: str) -> str:
        return str(self.page.inner_text(selector)).strip()

    def js(self, expression: str) -> Any:
        return self.page.evaluate(expression)

    def until(self, expression: str, timeout: float = 30) -> Any:
        """Poll `expression` in the page until it is truthy (Playwright's wait_for_function
        evaluates its string with eval, which the page's CSP rightly refuses)."""
        return self.wait(expression, lambda: self.js(expression), timeout, every=0.1)

    def wait(self, what: str, check: Any, timeout: float, every: float = 0.2) -> Any:
        """wait_until with the page's own waits in between (its event handlers keep running)."""
        return wait_until(what, check, timeout, every, sleep=lambda s: self.page.wait_for_timeout(s * 1000))

    def shot(self, path: Path) -> None:
        self.page.screenshot(path=str(path))
        print(f"screenshot: {path}")


def _d(text: str) -> Decimal:
    return Decimal(text.strip())


def _ints(text: str) -> list[int]:
    return [int(x) for x in re.findall(r"#(\d+)", text)]


FEED_ROWS = """() => Array.from(document.querySelectorAll('#feed tr')).map(tr => {
  const cell = {};
  for (const td of tr.children) { const c = [...td.classList].find(x => x.startsWith('c-')); if (c) cell[c.slice(2)] = td.innerText.trim(); }
  return {type: tr.dataset.type, seq: Number(tr.dataset.seq), cell};
})"""

POSITION_ROWS = """() => Array.from(document.querySelectorAll('#positions tr[data-symbol]')).map(tr => ({
  symbol: tr.dataset.symbol,
  light: Number(tr.querySelector('.adl-light').dataset.q),
  lit: tr.querySelector('.adl-light').querySelectorAll('i').length,
  shown: tr.querySelector('.adl-n').innerText.trim(),
  size: tr.querySelector('.c-size').innerText.trim(),
  liq: tr.querySelector('.c-liq').innerText.trim(),
  exact: tr.querySelector('.c-liq').dataset.exact ?? null,
}))"""


def _trade_long(http: httpx.Client) -> dict[str, Any]:
    """Two new accounts trade 0.01 BTC with each other (the seller's post-only order rests,
    the buyer's IOC takes the best ask at or under it): the buyer, long at about 2.5x (so
    its position has a liquidation price, below anything the crash reaches), is returned
    with its key. Retried while the maker's requotes get in the way."""
    ask = wait_until("an ask", lambda: http.get(f"/v1/orderbook/{SYMBOL}?depth=1").json()["asks"], 30)
    margin = (Decimal(ask[0][0]) * Decimal("0.004")).quantize(Decimal("0.01"))
    made = []
    for amount in ("100000", str(margin)):
        acct = http.post("/v1/admin/accounts", headers=ADMIN).json()
        http.post("/v1/admin/deposit", headers=ADMIN, json={"account_id": acct["account_id"], "amount": amount})
        made.append(acct)
    seller, buyer = ({"X-API-Key": a["api_key"]} for a in made)

    def filled() -> bool:
        book = http.get(f"/v1/orderbook/{SYMBOL}?depth=1").json()
        if not book["asks"] or not book["bids"]:
            return False
        price = book["asks"][0][0]
        sell = {"symbol": SYMBOL, "side": "sell", "type": "limit", "qty": "0.01", "price": price, "post_only": True}
        if http.post("/v1/orders", headers=seller, json=sell).status_code != 200:
            return False
        buy = {"symbol": SYMBOL, "side": "buy", "type": "limit", "qty": "0.01", "price": price, "time_in_force": "IOC"}
        http.post("/v1/orders", headers=buyer, json=buy)
        return bool(http.get("/v1/positions", headers=buyer).json())

    wait_until("the test account to hold a position", filled, 60, every=0.3)
    return made[1]


def test_dashboard_when_watching_a_crash_shows_the_market_the_feed_and_the_account(
    demo: Demo, browser: Any, recorder: Recorder, shots: Path
) -> None:
    w = Watched(browser, demo.base)
    page = w.page
    http = demo.http()
    page.goto(demo.base + "/")

    # -- the market fills in -----------------------------------------------------------------
    w.until("document.querySelectorAll('#bids .level:not(.blank)').length > 0"
        " && document.querySelectorAll('#asks .level:not(.blank)').length > 0", 30)
    w.until("document.querySelectorAll('#trades .trade').length > 0", 60)
    w.until("document.getElementById('mark').innerText.trim() !== '—'", 30)
    w.until("document.getElementById('fund').innerText.trim() !== '—'", 30)
    assert _d(w.text("#fund")) >= 0 and _d(w.text("#bad-debt")) >= 0
    assert w.text("#conn-text") == "live"
    top_bid = _d(page.inner_text("#bids .level .px"))
    top_ask = _d(page.inner_text("#asks .level .px"))
    assert top_bid < top_ask  # never crossed, both sides shown best first
    trade = page.query_selector("#trades .trade")
    assert trade is not None
    assert _d(trade.query_selector("span").inner_text()) > 0

    funding = http.get(f"/v1/funding/{SYMBOL}")
    if funding.status_code == 200:
        w.until("['index', 'funding-rate'].every(id => document.getElementById(id).innerText.trim() !== '—')", 30)
        assert re.fullmatch(r"-?\d+\.\d{4}%", w.text("#funding-rate"))
        w.until("/^\\d\\d:\\d\\d:\\d\\d$/.test(document.getElementById('funding-countdown').innerText.trim())", 30)
        assert _d(w.text("#index")) > 0
        if f"funding:{SYMBOL}" in recorder.accepted:  # the index shown is one the channel sent
            w.wait("the index shown to be one `funding:` sent",
                       lambda: w.text("#index") in recorder.values(f"funding:{SYMBOL}", "index_price", "price")[-20:], 30)
    else:  # a service without the funding route: the page says nothing rather than a guess
        assert w.text("#index") == w.text("#funding-rate") == w.text("#funding-countdown") == "—"

    # -- an account: key typed in, positions with ADL light, orders, the ticket --------------
    long = _trade_long(http)
    key = {"X-API-Key": long["api_key"]}
    page.fill("#api-key", long["api_key"])
    page.click("#key-button")
    w.until(f"document.getElementById('account-id').innerText.trim() === '#{long['account_id']}'", 30)
    assert page.input_value("#api-key") == ""  # the key is not left in the field
    assert long["api_key"] not in page.url
    assert page.evaluate("JSON.stringify(localStorage) + JSON.stringify(sessionStorage) + document.cookie") == "{}{}"

    def light_agrees() -> Any:
        [pos] = http.get("/v1/positions", headers=key).json()
        rows = w.js(POSITION_ROWS)
        row = next((r for r in rows if r["symbol"] == SYMBOL), None)
        if row is None or row["light"] != pos["adl_quantile"] or row["shown"] != str(pos["adl_quantile"]):
            return None
        if row["exact"] != pos["liquidation_price"]:
            return None
        return row, pos

    row, pos = w.wait("the ADL light to equal GET /v1/positions' adl_quantile", light_agrees, 30, every=0.3)
    assert 0 <= row["light"] <= 4 and row["lit"] == 4  # four bars, `light` of them lit
    assert _d(row["size"]) == Decimal(pos["size"]) > 0
    # the liquidation price: exact on hover, shown at the tick (0.1)
    assert pos["liquidation_price"] is not None
    assert _d(row["liq"]) == Decimal(pos["liquidation_price"]).quantize(Decimal("0.1"), ROUND_HALF_UP)

    # an order from the ticket: a sell 4% over the mark rests
    mark = Decimal(http.get(f"/v1/funding/{SYMBOL}").json()["mark_price"]) if funding.status_code == 200 else top_ask
    price = str((mark * Decimal("1.04")).quantize(Decimal("0.1")))
    page.click(".sides .side.sell")
    page.check("#type-limit")
    page.fill("#ticket-price", price)
    page.fill("#ticket-qty", "0.002")
    page.click("#ticket-submit")
    w.until("document.getElementById('ticket-msg').className.includes('ok')", 30)
    placed = re.match(r"Order #(\d+) new$", w.text("#ticket-msg"))
    assert placed, w.text("#ticket-msg")
    order_id = placed.group(1)
    page.wait_for_selector(f"#orders tr[data-order-id='{order_id}']", timeout=30_000)
    assert [o["order_id"] for o in http.get("/v1/orders", headers=key).json()] == [int(order_id)]

    # a refused order: the API's own error, as it answers the same request (and the one
    # console line Chromium writes for any 4xx answer, nothing else)
    assert w.errors == [], w.errors
    refused_body = {"symbol": SYMBOL, "side": "sell", "type": "limit", "qty": "0.0001", "price": price}
    refused = http.post("/v1/orders", headers=key, json=refused_body)
    assert refused.status_code == 400, refused.text
    page.fill("#ticket-qty", "0.0001")
    page.click("#ticket-submit")
    w.until("document.getElementById('ticket-msg').className.includes('error')", 30)
    assert w.text("#ticket-msg") == f"{refused.json()['error']}: {refused.json()['message']}"
    assert [e for e in w.errors if not re.match(r"Failed to load resource: .* 400 .*\[.*/v1/orders\]$", e)] == []
    w.errors.clear()
    page.fill("#ticket-qty", "")
    w.shot(shots / "dashboard-market-and-account.png")

    # -- the crash fills the liquidation/ADL feed ---------------------------------------------
    page.wait_for_selector("#feed tr.adl", timeout=CRASH_TIMEOUT_S * 1000)

    def matched() -> Any:
        rows = w.js(FEED_ROWS)
        adl, liq = recorder.by_seq("adl"), recorder.by_seq("liquidations")
        adl_rows = [r for r in rows if r["type"] == "adl" and r["seq"] in adl]
        liq_rows = [r for r in rows if r["type"] == "liquidation" and r["seq"] in liq]
        return (adl_rows, liq_rows, adl, liq) if adl_rows and liq_rows else None

    adl_rows, liq_rows, adl, liq = w.wait("feed rows the test's WebSocket also got", matched, 30)
    for r in adl_rows:
        event, cell = adl[r["seq"]], r["cell"]
        assert _ints(cell["account"]) == [event["counterparty_account_id"], event["liquidated_account_id"]]
        assert cell["event"] == f"ADL {event['side']}"
        assert cell["qty"] == f"{event['qty']} {event['symbol'].split('-')[0]}"
        assert _d(cell["price"]) == Decimal(event["price"])  # the liquidated position's bankruptcy price
        assert int(cell["rank"]) == event["rank"]
        assert _d(cell["haircut"]) == Decimal(event["haircut"])
        assert cell["policy"] == event["policy"]
    for r in liq_rows:
        event, cell = liq[r["seq"]], r["cell"]
        assert _ints(cell["account"]) == [event["account_id"]]
        assert cell["event"] == "LIQUIDATED"
        assert cell["qty"] == f"{event['qty']} {event['symbol'].split('-')[0]}"
        assert _d(cell["price"]) == Decimal(event["bankruptcy_price"])
        if event["book_fill_avg_price"] is None:
            assert cell["fill"] == "none"
        else:
            qty, avg = cell["fill"].split(" @ ")
            assert (_d(qty), _d(avg)) == (Decimal(event["book_fill_qty"]), Decimal(event["book_fill_avg_price"]))
        assert _d(cell["debt"]) == Decimal(event["bad_debt"])
    assert re.fullmatch(r"\d+ liquidations? · \d+ ADL fills?", w.text("#feed-count"))

    # the fund's chart and numbers follow GET /v1/insurance-fund
    fund = http.get("/v1/insurance-fund").json()
    w.wait("the fund shown to equal GET /v1/insurance-fund",
               lambda: _d(w.text("#fund")) == Decimal(http.get("/v1/insurance-fund").json()["balance"]), 30)
    assert Decimal(fund["bad_debt"]) >= 0
    if "insurance_fund" in recorder.accepted:  # and its numbers are ones the channel sent
        w.wait("the fund shown to be a balance `insurance_fund` sent",
                   lambda: w.text("#fund") in recorder.values("insurance_fund", "balance"), 30)
        w.wait("the bad debt shown to be a total `insurance_fund` or GET gave",
                   lambda: w.text("#bad-debt") in [*recorder.values("insurance_fund", "bad_debt"),
                                                    http.get("/v1/insurance-fund").json()["bad_debt"]], 30)

    page.wait_for_timeout(500)  # one more throttled frame, for the picture only
    w.shot(shots / "dashboard-after-crash.png")
    assert w.outside == [], w.outside
    assert w.errors == [], w.errors

    # where the service keeps its history (GET /v1/events): the same events, and a page
    # opened after the crash shows them too, newest first
    past = http.get("/v1/events", params={"types": "liquidation,adl", "limit": 1000})
    if past.status_code == 200:
        history = {(e["type"], e["seq"]): e["data"] for e in past.json()["events"]}
        def same(data: dict[str, Any]) -> dict[str, Any]:  # the WebSocket adds the type
            return {k: v for k, v in data.items() if k != "type"}

        for r in adl_rows:
            assert history[("adl", r["seq"])] == same(adl[r["seq"]])
        for r in liq_rows:
            assert history[("liquidation", r["seq"])] == same(liq[r["seq"]])
        late = Watched(browser, demo.base)
        late.page.goto(demo.base + "/")
        shown = late.wait("a page opened now to show the past events",
                          lambda: (rows := late.js(FEED_ROWS)) and set(history) <= {(r["type"], r["seq"]) for r in rows} and rows, 30)
        assert [r["seq"] for r in shown] == sorted((r["seq"] for r in shown), reverse=True)
        for r in shown:
            if (r["type"], r["seq"]) in history and r["type"] == "adl":
                assert _d(r["cell"]["haircut"]) == Decimal(history[("adl", r["seq"])]["haircut"])
        assert late.outside == [] and late.errors == [], (late.outside, late.errors)
        late.page.close()
    page.close()
    http.close()


@pytest.mark.parametrize(
    ("path", "ready"),
    [
        ("/docs", "document.querySelectorAll('.opblock').length > 10"),
        ("/redoc", "document.querySelectorAll('[data-section-id]').length > 10"),
    ],
    ids=["swagger-ui", "redoc"],
)
def test_docs_when_offline_render_from_vendored_assets(
    demo: Demo, browser: Any, shots: Path, path: str, ready: str
) -> None:
    w = Watched(browser, demo.base)
    w.page.goto(demo.base + path)
    w.until(ready, 60)
    assert "/v1/orders" in w.page.inner_text("body")
    w.shot(shots / f"docs{path.replace('/', '-')}.png")
    assert w.outside == [], w.outside
    assert w.errors == [], w.errors
    w.page.close()


@pytest.mark.parametrize(
    "raw",
    [
        "/static/../api/app.py",
        "/static/../../etc/passwd",
        "/static/js/../../api/app.py",
        "/static/%2e%2e/api/app.py",
        "/static/..%2fapi%2fapp.py",
        "/static/%2e%2e%2fapi%2fapp.py",
        "/static/%252e%252e%252fapi%252fapp.py",
        "/static/..%5capi%5capp.py",
        "/static/%2fetc%2fpasswd",
        "/static//etc/passwd",
        "/static/vendor.sh",
        "/static/js/main.js%00.png",
    ],
)
def test_static_when_path_leaves_web_answers_404_over_real_http(demo: Demo, raw: str) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", demo.port, timeout=10)
    try:
        conn.request("GET", raw)  # sent as is: no client-side normalisation of `..`
        res = conn.getresponse()
        body = res.read()
    finally:
        conn.close()
    assert res.status == 404, (raw, res.status, body[:200])
    assert json.loads(body)["error"] == "NOT_FOUND"


def test_dashboard_when_its_websocket_drops_reconnects_and_subscribes_again(demo: Demo, browser: Any) -> None:
    """The service going away (here: the page's WebSocket closed from the server's side, by a
    route between the two) is shown, and the page connects again by itself and asks for the
    same channels: the book keeps moving on the new connection."""
    w = Watched(browser, demo.base)
    routes: list[Any] = []
    sent: list[list[str]] = []  # what the page sent on each connection

    def proxy(ws: Any) -> None:
        frames: list[str] = []
        sent.append(frames)
        server = ws.connect_to_server()
        ws.on_message(lambda m: (frames.append(m), server.send(m)))
        server.on_message(lambda m: ws.send(m))
        routes.append(ws)

    w.page.route_web_socket(re.compile(r".*/v1/ws$"), proxy)
    w.page.goto(demo.base + "/")
    w.until("document.getElementById('conn').dataset.state === 'live'"
            " && document.querySelectorAll('#bids .level:not(.blank)').length > 0", 30)
    routes[0].close(code=1012, reason="service restart")
    w.wait("a second connection", lambda: len(routes) >= 2, 30)
    w.until("document.getElementById('conn').dataset.state === 'live'", 30)
    first = [json.loads(f) for f in sent[0]]
    again = w.wait("the page to subscribe again",
                       lambda: [json.loads(f) for f in sent[1] if json.loads(f)["op"] == "subscribe"], 30)
    channels = {ch for msg in again for ch in msg["channels"]}
    assert {f"book:{SYMBOL}", f"trades:{SYMBOL}", f"mark:{SYMBOL}", "adl", "liquidations"} <= channels
    assert channels == {ch for msg in first if msg["op"] == "subscribe" for ch in msg["channels"]}
    # the book is drawn from the new connection: a snapshot comes right after subscribing
    w.page.evaluate("document.querySelectorAll('#bids .level').forEach(r => r.className = 'level blank')")
    w.until("document.querySelectorAll('#bids .level:not(.blank)').length > 0", 30)
    assert w.outside == [] and w.errors == [], (w.outside, w.errors)
    w.page.close()
