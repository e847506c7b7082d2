// The dashboard (GET /, SPEC §14): wires REST (the first state), the WebSocket (everything
// after) and the views, and draws at most a few frames a second (schedule.js).
//
// Sources per panel: book - `book:<symbol>` snapshots (GET /v1/orderbook first; the newer
// seq wins); trades - `trades:<symbol>` merged with GET /v1/trades by trade_id; mark -
// `mark:<symbol>`; index and funding - `funding:<symbol>` (a snapshot, then index and rate
// changes) and GET /v1/funding/{symbol} now and then (the schedule), where the service has
// them, else "—"; insurance fund and bad debt - `insurance_fund` (a snapshot, then changes)
// and GET /v1/insurance-fund every few seconds and after every liquidation or ADL fill (all
// a service without that channel gives); the feed - `liquidations` and `adl` (and GET
// /v1/events on load where it exists); the account - see account.js.

import { AccountPanel } from "./account.js";
import { get, routes } from "./api.js";
import { DepthChart, FundChart } from "./charts.js";
import { FeedView } from "./feed.js";
import { DASH, duration, fixed, percent, pick, places, setText } from "./format.js";
import { LiveSocket } from "./live.js";
import { BookView, TradesView } from "./market.js";
import { Painter, debounce } from "./schedule.js";

const FUND_POLL_MS = 2000;
const FUNDING_POLL_MS = 15000;
const TRADES_KEPT = 100;
const EVENTS_BACK = 50000; // how far back (in seqs) the feed's history is read
const EVENTS_PAGES = 5; // pages of GET /v1/events at most
const FEED_HISTORY = 200; // rows of history shown

const $ = (id) => document.getElementById(id);

class Dashboard {
  constructor() {
    this.instruments = new Map(); // symbol -> instrument + {pd, qd}
    this.symbol = null;
    this.routes = new Set(); // "GET /v1/..." the service documents
    this.book = { bids: [], asks: [], seq: -1 };
    this.trades = [];
    this.tradeIds = new Set();
    this.last = null;
    this.lastDir = 0;
    this.mark = null;
    this.index = null;
    this.funding = null; // GET /v1/funding/{symbol}, or null
    this.lastRate = null;
    this.fund = null; // {balance, bad_debt}
    this.opened = false; // the WebSocket was open once (a later open is a reconnect)
    this.fundingDue = null;
    this.painter = new Painter((parts) => this.draw(parts), 200);
    this.live = new LiveSocket({
      onStatus: (state) => this.status(state),
      onOpen: () => this.reopened(),
      onMessage: (channel, data, seq) => this.onMessage(channel, data, seq),
      onAuthError: (data) => this.account.onAuthError(data),
    });
    this.bookView = new BookView($("asks"), $("bids"), $("spread"), $("spread-last"), (price) => this.account.setPrice(price));
    this.tradesView = new TradesView($("trades"));
    this.feed = new FeedView($("feed"), $("feed-count"));
    this.depth = new DepthChart($("depth-chart"));
    this.fundChart = new FundChart($("fund-chart"));
    this.account = new AccountPanel(this.live, () => ({ symbol: this.symbol, instruments: this.instruments }), (part) => this.painter.mark(part));
    this.fundSoon = debounce(() => this.loadFund(), 150);
  }

  async start() {
    $("symbol").addEventListener("change", (event) => this.choose(event.target.value));
    const [instruments, known] = await Promise.all([get("/v1/instruments"), routes()]);
    this.routes = known;
    for (const inst of instruments) {
      this.instruments.set(inst.symbol, { ...inst, pd: places(inst.tick_size), qd: places(inst.lot_size) });
      const option = document.createElement("option");
      option.value = inst.symbol;
      option.textContent = inst.symbol;
      $("symbol").append(option);
    }
    const wanted = decodeURIComponent(location.hash.slice(1));
    const symbol = this.instruments.has(wanted) ? wanted : instruments[0]?.symbol;
    this.live.subscribe(["liquidations", "adl", "insurance_fund"]);
    this.choose(symbol);
    this.live.start();
    this.loadEvents();
    setInterval(() => this.loadFund(), FUND_POLL_MS);
    setInterval(() => this.loadFunding(), FUNDING_POLL_MS);
    setInterval(() => this.painter.mark("countdown"), 1000);
    this.loadCredits();
  }

  channels(symbol) {
    return [`book:${symbol}`, `trades:${symbol}`, `mark:${symbol}`, `funding:${symbol}`];
  }

  choose(symbol) {
    if (!symbol || symbol === this.symbol) return;
    if (this.symbol) this.live.unsubscribe(this.channels(this.symbol));
    this.symbol = symbol;
    $("symbol").value = symbol;
    history.replaceState(null, "", `#${encodeURIComponent(symbol)}`);
    this.book = { bids: [], asks: [], seq: -1 };
    this.trades = [];
    this.tradeIds = new Set();
    this.last = null;
    this.lastDir = 0;
    this.mark = this.instruments.get(symbol)?.mark_price ?? null;
    this.index = null;
    this.funding = null;
    this.lastRate = null;
    this.live.subscribe(this.channels(symbol));
    this.reload();
    this.painter.mark("book", "trades", "header", "account");
  }

  reopened() {
    if (this.opened) this.reload(); // what was missed while the connection was down
    this.opened = true;
  }

  /** REST state for what the WebSocket only sends from now on (at start and after reconnects). */
  reload() {
    const symbol = this.symbol;
    if (!symbol) return;
    const sym = encodeURIComponent(symbol);
    get(`/v1/orderbook/${sym}?depth=20`).then((b) => {
      if (symbol === this.symbol) this.setBook(b, b.seq);
    }).catch(() => {});
    get(`/v1/trades/${sym}?limit=${TRADES_KEPT}`).then((list) => {
      if (symbol === this.symbol) this.addTrades([...list].reverse());
    }).catch(() => {});
    this.loadFund();
    this.loadFunding();
    if (this.account.key) this.account.refresh(true);
  }

  status(state) {
    $("conn").dataset.state = state;
    setText($("conn-text"), state === "live" ? "live" : state === "offline" ? "reconnecting…" : "connecting…");
  }

  onMessage(channel, data, seq) {
    const [kind, symbol] = channel.split(":");
    if (channel === "account") {
      this.account.onMessage(data);
    } else if (kind === "liquidations" || kind === "adl") {
      if (this.feed.add(kind === "adl" ? "adl" : "liquidation", data, seq, Date.now())) this.painter.mark("feed");
      this.fundSoon();
    } else if (kind === "insurance_fund") {
      if (data.balance !== undefined) {
        this.fund = { balance: data.balance, bad_debt: pick(data, "bad_debt") ?? this.fund?.bad_debt ?? "0" };
        this.fundChart.add(Date.now(), this.fund.balance, this.fund.bad_debt);
        this.painter.mark("fund");
      }
      this.fundSoon();
    } else if (symbol !== this.symbol) {
      return; // a message of the symbol we just left
    } else if (kind === "book") {
      this.setBook(data, seq);
    } else if (kind === "trades") {
      this.addTrades([data]);
    } else if (kind === "mark") {
      this.mark = pick(data, "price", "mark_price");
      this.painter.mark("header");
    } else if (kind === "funding") {
      if (data.type === "funding") {
        this.funding = data; // the channel's snapshot: GET /v1/funding/{symbol}'s shape
        this.index = pick(data, "index_price", "index") ?? this.index;
      } else if (data.type === "index_price_changed") {
        this.index = pick(data, "price", "index_price", "index");
      } else if (data.type === "funding_rate_changed") {
        this.lastRate = pick(data, "rate", "funding_rate");
        this.loadFunding();
      }
      this.painter.mark("header");
    }
  }

  setBook(book, seq) {
    if (seq !== undefined && seq < this.book.seq) return;
    this.book = { bids: book.bids || [], asks: book.asks || [], seq: seq ?? this.book.seq };
    this.painter.mark("book");
  }

  /** trades oldest first */
  addTrades(list) {
    let added = false;
    for (const t of list) {
      if (this.tradeIds.has(t.trade_id)) continue;
      this.tradeIds.add(t.trade_id);
      this.trades.push(t);
      added = true;
    }
    if (!added) return;
    this.trades.sort((a, b) => b.trade_id - a.trade_id);
    for (const t of this.trades.splice(TRADES_KEPT)) this.tradeIds.delete(t.trade_id);
    const [newest, before] = this.trades;
    if (newest) {
      if (before && newest.price !== this.last) this.lastDir = Math.sign(Number(newest.price) - Number(before.price)) || this.lastDir;
      this.last = newest.price;
    }
    this.painter.mark("trades", "header");
  }

  async loadFund() {
    try {
      const fund = await get("/v1/insurance-fund");
      this.fund = fund;
      this.fundChart.add(Date.now(), fund.balance, fund.bad_debt ?? "0");
      this.painter.mark("fund");
    } catch {
      // the next poll tries again
    }
  }

  async loadFunding() {
    const symbol = this.symbol;
    if (!symbol || !this.routes.has("GET /v1/funding/{symbol}")) return;
    try {
      const f = await get(`/v1/funding/${encodeURIComponent(symbol)}`);
      if (symbol !== this.symbol) return;
      this.funding = f;
      const index = pick(f, "index", "index_price");
      if (index !== null) this.index = index;
      this.painter.mark("header");
    } catch {
      // shown as "—" until it answers
    }
  }

  /** The recent liquidations, ADL fills and insurance-fund changes (GET /v1/events, oldest
   *  first, paged): from EVENTS_BACK events before now, so the service reads its memory, not
   *  its journal. They fill the feed and the fund's line from before the page opened. */
  async loadEvents() {
    if (!this.routes.has("GET /v1/events")) return;
    try {
      const book = await get(`/v1/orderbook/${encodeURIComponent(this.symbol)}?depth=1`);
      let from = Math.max(1, (book.seq ?? 0) - EVENTS_BACK);
      const feed = [];
      const fund = [];
      for (let page = 0; page < EVENTS_PAGES && from; page++) {
        const res = await get(`/v1/events?types=liquidation,adl,insurance_fund_changed&from_seq=${from}&limit=1000`);
        for (const e of res.events || []) (e.type === "insurance_fund_changed" ? fund : feed).push(e);
        from = res.next_from_seq;
      }
      const when = (e) => (e.ts_ns ? Number(BigInt(e.ts_ns) / 1000000n) : Date.now());
      for (const e of feed.slice(-FEED_HISTORY)) this.feed.add(e.type, e.data || {}, e.seq, when(e), false);
      this.fundChart.addHistory(fund.filter((e) => e.data?.balance !== undefined).map((e) => [when(e), e.data.balance]));
      this.painter.mark("feed", "fund");
    } catch {
      // the live feed still fills
    }
  }

  async loadCredits() {
    try {
      const res = await fetch("/static/vendor/VERSIONS", { cache: "no-store" });
      if (!res.ok) return;
      const line = (await res.text()).split("\n").find((l) => l.startsWith("uplot "));
      if (line) setText($("credits").firstElementChild, `uPlot ${line.split(" ")[1]} (MIT)`);
    } catch {
      // the link stays as it is
    }
  }

  draw(parts) {
    const inst = this.instruments.get(this.symbol) || { pd: 0, qd: 0 };
    if (parts.has("book")) {
      this.bookView.draw(this.book, inst.pd, inst.qd);
      this.depth.set(this.book.bids, this.book.asks);
      setText($("book-symbol"), this.symbol || "");
    }
    if (parts.has("trades")) this.tradesView.draw(this.trades, inst.pd, inst.qd);
    if (parts.has("header") || parts.has("trades")) {
      this.bookView.drawLast(this.last, this.lastDir, inst.pd);
      const last = $("last");
      setText(last, this.last === null ? DASH : fixed(this.last, inst.pd));
      last.className = "v num " + (this.lastDir > 0 ? "up" : this.lastDir < 0 ? "down" : "");
      setText($("mark"), fixed(this.mark, inst.pd));
      setText($("index"), fixed(this.index, inst.pd));
      const rate = pick(this.funding, "predicted_rate", "predicted_funding_rate");
      const rateNode = $("funding-rate");
      setText(rateNode, percent(rate));
      rateNode.className = "v num " + (rate === null ? "" : Number(rate) >= 0 ? "up" : "down");
      rateNode.title = this.lastRate === null ? "" : `last applied ${percent(this.lastRate)}`;
    }
    if (parts.has("header") || parts.has("countdown")) {
      const next = Number(pick(this.funding, "next_funding_time", "next_funding_time_ms"));
      setText($("funding-countdown"), next > 0 ? duration(next - Date.now()) : DASH);
      if (next > 0 && next <= Date.now() && !this.fundingDue) {
        this.fundingDue = setTimeout(() => {
          this.fundingDue = null;
          this.loadFunding();
        }, 1500);
      }
    }
    if (parts.has("fund")) {
      setText($("fund"), this.fund ? this.fund.balance : DASH);
      setText($("bad-debt"), this.fund ? this.fund.bad_debt ?? "0" : DASH);
      $("bad-debt").className = "v num " + (this.fund && Number(this.fund.bad_debt) > 0 ? "down" : "");
      this.fundChart.draw();
    }
    if (parts.has("feed")) this.feed.draw();
    if (parts.has("account")) this.account.draw();
  }
}

const app = new Dashboard();
app.start().catch((err) => {
  setText($("conn-text"), `cannot load: ${err.message || err}`);
  $("conn").dataset.state = "offline";
});
