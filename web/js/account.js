// The account panel: an API key typed by the user (held in this module's memory only: never
// written to a URL, a cookie or browser storage, and dropped by "Forget" or a reload), the
// account's balances, positions with ADL lights (adl_quantile 0..4) and liquidation
// prices, open orders (cancel), and an order ticket that shows the API's refusal as it is.
//
// Fresh state comes from GET /v1/account and /v1/orders after account events on the
// WebSocket (debounced) and every few seconds for the marks; `adl_quantile` pushes light
// the lamps at once.

import { ApiError, del, get, post } from "./api.js";
import { debounce } from "./schedule.js";
import { DASH, el, fixed, rounded, setText, sign, signed } from "./format.js";

const REFRESH_MS = 3000;

export class AccountPanel {
  /** live: the LiveSocket; market(): {symbol, instruments}; paint(part): ask for a redraw */
  constructor(live, market, paint) {
    this.live = live;
    this.market = market;
    this.paint = paint;
    this.key = null; // the typed key: memory only
    this.accountId = null;
    this.account = null;
    this.positions = [];
    this.orders = [];
    this.side = "buy";
    this.timer = null;
    this.$ = (id) => document.getElementById(id);
    this.refreshSoon = debounce(() => this.refresh(true), 250);
    this.wire();
  }

  wire() {
    this.$("key-form").addEventListener("submit", (event) => {
      event.preventDefault();
      if (this.key) this.forget();
      else this.connect(this.$("api-key").value.trim());
    });
    this.$("ticket").addEventListener("submit", (event) => {
      event.preventDefault();
      this.submit();
    });
    for (const button of document.querySelectorAll(".sides .side")) {
      button.addEventListener("click", () => this.setSide(button.dataset.side));
    }
    for (const id of ["type-limit", "type-market"]) {
      this.$(id).addEventListener("change", () => this.drawTicket());
    }
    this.$("orders").addEventListener("click", (event) => {
      const button = event.target.closest("button[data-order]");
      if (button) this.cancel(button.dataset.order, button);
    });
    document.addEventListener("visibilitychange", () => {
      if (!document.hidden && this.key) this.refresh(false);
    });
    this.drawTicket();
  }

  message(id, text, kind = "") {
    const node = this.$(id);
    node.textContent = text;
    node.className = "msg" + (kind ? " " + kind : "");
  }

  async connect(key) {
    if (!key) {
      this.message("key-msg", "Type an API key first.", "error");
      return;
    }
    this.message("key-msg", "Checking the key…");
    try {
      const account = await get("/v1/account", key);
      this.key = key;
      this.accountId = account.account_id;
      this.account = account;
      this.positions = account.positions || [];
      this.$("api-key").value = "";
      this.$("api-key").disabled = true;
      this.$("key-button").textContent = "Forget";
      setText(this.$("account-id"), `#${this.accountId}`);
      this.message("key-msg", `Connected as account #${this.accountId}; the key stays in this page only.`, "ok");
      this.live.setKey(key);
      clearInterval(this.timer);
      this.timer = setInterval(() => {
        if (!document.hidden) this.refresh(false);
      }, REFRESH_MS);
      await this.refresh(true);
    } catch (err) {
      this.message("key-msg", err instanceof ApiError ? err.message : `cannot reach the service (${err})`, "error");
    }
    this.drawTicket();
    this.paint("account");
  }

  forget() {
    this.key = null;
    this.accountId = null;
    this.account = null;
    this.positions = [];
    this.orders = [];
    clearInterval(this.timer);
    this.live.setKey(null);
    this.$("api-key").disabled = false;
    this.$("key-button").textContent = "Connect";
    setText(this.$("account-id"), "");
    this.message("key-msg", "Key forgotten.");
    this.message("ticket-msg", "");
    this.drawTicket();
    this.paint("account");
  }

  /** The account (and with `orders` its open orders) read again. */
  async refresh(orders) {
    const key = this.key;
    if (!key) return;
    try {
      const [account, open] = await Promise.all([
        get("/v1/account", key),
        orders ? get("/v1/orders", key) : Promise.resolve(null),
      ]);
      if (key !== this.key) return; // forgotten meanwhile
      this.account = account;
      this.positions = account.positions || [];
      if (open) this.orders = open;
      this.paint("account");
    } catch (err) {
      if (err instanceof ApiError && err.status === 401) {
        this.forget();
        this.message("key-msg", err.message, "error");
      }
    }
  }

  /** A message of the private `account` channel. */
  onMessage(data) {
    if (data.type === "adl_quantile") {
      const pos = this.positions.find((p) => p.symbol === data.symbol);
      if (pos) {
        pos.adl_quantile = data.adl_quantile;
        this.paint("account");
      }
      return;
    }
    this.refreshSoon();
  }

  onAuthError(data) {
    this.message("key-msg", `${data.error}: ${data.message}`, "error");
  }

  setSide(side) {
    this.side = side;
    for (const button of document.querySelectorAll(".sides .side")) {
      button.classList.toggle("active", button.dataset.side === side);
    }
    this.drawTicket();
  }

  setPrice(price) {
    if (!this.$("type-limit").checked) return;
    this.$("ticket-price").value = price;
  }

  drawTicket() {
    const { symbol } = this.market();
    const market = this.$("type-market").checked;
    const submit = this.$("ticket-submit");
    this.$("ticket-price").disabled = market;
    submit.disabled = !this.key;
    submit.className = `submit ${this.side}`;
    submit.textContent = this.key
      ? `${this.side === "buy" ? "Buy" : "Sell"} ${symbol || ""}`.trim()
      : "Connect a key to trade";
    setText(this.$("ticket-symbol"), symbol || "");
  }

  async submit() {
    const key = this.key;
    const { symbol } = this.market();
    if (!key || !symbol) return;
    const market = this.$("type-market").checked;
    const body = { symbol, side: this.side, type: market ? "market" : "limit", qty: this.$("ticket-qty").value.trim() };
    if (!market) body.price = this.$("ticket-price").value.trim();
    const button = this.$("ticket-submit");
    button.disabled = true;
    this.message("ticket-msg", "Sending…");
    try {
      const order = await post("/v1/orders", body, key);
      const filled = sign(order.filled_qty) !== 0 ? `, filled ${order.filled_qty} @ ${order.avg_price}` : "";
      this.message("ticket-msg", `Order #${order.order_id} ${order.status}${filled}`, "ok");
      this.refresh(true);
    } catch (err) {
      this.message("ticket-msg", err instanceof ApiError ? err.message : `cannot reach the service (${err})`, "error");
    } finally {
      button.disabled = !this.key;
    }
  }

  async cancel(orderId, button) {
    const key = this.key;
    if (!key) return;
    button.disabled = true;
    try {
      await del(`/v1/orders/${encodeURIComponent(orderId)}`, key);
      this.message("ticket-msg", `Order #${orderId} canceled`, "ok");
    } catch (err) {
      this.message("ticket-msg", err instanceof ApiError ? err.message : String(err), "error");
    }
    this.refresh(true);
  }

  draw() {
    const { instruments } = this.market();
    const a = this.account;
    setText(this.$("acc-equity"), a ? a.equity : DASH);
    setText(this.$("acc-wallet"), a ? a.wallet_balance : DASH);
    setText(this.$("acc-available"), a ? a.available : DASH);
    setText(this.$("acc-mm"), a ? a.maintenance_margin : DASH);
    this.drawPositions(instruments);
    this.drawOrders(instruments);
    this.drawTicket();
  }

  drawPositions(instruments) {
    const body = this.$("positions");
    if (!this.positions.length) {
      body.replaceChildren(emptyRow(7, this.key ? "no open positions" : DASH));
      return;
    }
    const rows = this.positions.map((p) => {
      const inst = instruments.get(p.symbol) || {};
      const tr = el("tr");
      tr.dataset.symbol = p.symbol;
      const light = el("span", "adl-light");
      light.dataset.q = String(p.adl_quantile);
      light.title = `ADL quantile ${p.adl_quantile} of 4 (4 = first in line to be deleveraged)`;
      for (let i = 0; i < 4; i++) light.append(el("i"));
      // the liquidation price is exact (not on the tick grid): shown at the tick, exact on hover
      const liq = el("td", "c-liq r", p.liquidation_price === null ? DASH : rounded(p.liquidation_price, inst.pd));
      if (p.liquidation_price !== null) {
        liq.title = p.liquidation_price;
        liq.dataset.exact = p.liquidation_price;
      }
      const adl = el("td", "c-adl");
      adl.append(light, el("span", "adl-n", String(p.adl_quantile)));
      tr.append(
        el("td", "c-symbol", p.symbol),
        el("td", `c-size r ${sign(p.size) > 0 ? "up" : "down"}`, fixed(p.size, inst.qd)),
        el("td", "c-entry r", fixed(p.entry_price, inst.pd)),
        el("td", `c-upnl r ${sign(p.unrealized_pnl) > 0 ? "up" : sign(p.unrealized_pnl) < 0 ? "down" : ""}`, signed(p.unrealized_pnl)),
        liq,
        el("td", "c-lev r", `${p.leverage}x`),
        adl,
      );
      return tr;
    });
    body.replaceChildren(...rows);
  }

  drawOrders(instruments) {
    const body = this.$("orders");
    if (!this.orders.length) {
      body.replaceChildren(emptyRow(6, this.key ? "no open orders" : DASH));
      return;
    }
    const rows = this.orders.map((o) => {
      const inst = instruments.get(o.symbol) || {};
      const tr = el("tr");
      tr.dataset.orderId = String(o.order_id);
      const cancel = el("button", "cancel", "×");
      cancel.type = "button";
      cancel.title = "cancel";
      cancel.dataset.order = String(o.order_id);
      const action = el("td", "r");
      action.append(cancel);
      tr.append(
        el("td", "", o.symbol),
        el("td", o.side === "buy" ? "up" : "down", o.side),
        el("td", "r", o.price === null ? "market" : fixed(o.price, inst.pd)),
        el("td", "r", fixed(o.qty, inst.qd)),
        el("td", "r", fixed(o.filled_qty, inst.qd)),
        action,
      );
      return tr;
    });
    body.replaceChildren(...rows);
  }
}

function emptyRow(span, text) {
  const tr = el("tr", "empty");
  const td = el("td", "", text);
  td.colSpan = span;
  tr.append(td);
  return tr;
}
