// The liquidation and ADL feed: one row per `liquidation` or `adl` event (SPEC §8), newest
// (highest seq) first, as the service sent it (WebSocket channels `liquidations` and `adl`,
// and on load the recent ones from GET /v1/events where the service has it; an event seen
// both ways is shown once). Values are shown exactly as sent.

import { DASH, clock, el, fixed, signed } from "./format.js";

const KEEP = 300;

/** "BTC" of "BTC-PERP": the unit of a quantity. */
const base = (symbol) => String(symbol ?? "").split("-")[0];

export class FeedView {
  constructor(tbody, countNode) {
    this.tbody = tbody;
    this.countNode = countNode;
    this.seen = new Set(); // "type:seq"
    this.pending = []; // rows made since the last draw, oldest first
    this.counts = { liquidation: 0, adl: 0 };
  }

  /** One event: type "liquidation" or "adl", its data, seq, and when (epoch ms). */
  add(type, data, seq, ms, fresh = true) {
    const id = `${type}:${seq}`;
    if (seq !== undefined && seq !== null) {
      if (this.seen.has(id)) return false;
      this.seen.add(id);
    }
    this.counts[type] += 1;
    this.pending.push(type === "adl" ? this.adlRow(data, seq, ms) : this.liquidationRow(data, seq, ms));
    if (fresh) this.pending[this.pending.length - 1].classList.add("fresh");
    return true;
  }

  row(type, seq, ms, cells) {
    const tr = el("tr", type);
    tr.dataset.type = type;
    if (seq !== undefined && seq !== null) tr.dataset.seq = String(seq);
    tr.append(el("td", "c-time", clock(ms)));
    for (const [cls, text, right] of cells) {
      const td = el("td", `c-${cls}${right ? " r" : ""}`);
      if (text instanceof Node) td.append(text);
      else td.textContent = text;
      tr.append(td);
    }
    return tr;
  }

  liquidationRow(d, seq, ms) {
    const account = d.account_id ?? d.account;
    const fill = d.book_fill_avg_price === null || d.book_fill_avg_price === undefined
      ? "none"
      : `${d.book_fill_qty} @ ${d.book_fill_avg_price}`;
    const adl = Number(d.adl_qty) > 0 ? `→ ADL ${d.adl_qty}` : DASH;
    return this.row("liquidation", seq, ms, [
      ["event", "LIQUIDATED"],
      ["account", `#${account}`],
      ["qty", `${d.qty} ${base(d.symbol)}`, true],
      ["price", d.bankruptcy_price, true],
      ["fill", fill, true],
      ["rank", adl, true],
      ["haircut", DASH, true],
      ["policy", DASH],
      ["fund", signed(d.insurance_fund_delta), true],
      ["debt", fixed(d.bad_debt), true],
    ]);
  }

  adlRow(d, seq, ms) {
    const who = el("span", "", `#${d.counterparty_account_id}`);
    who.append(el("span", "from", ` ← #${d.liquidated_account_id}`));
    return this.row("adl", seq, ms, [
      ["event", `ADL ${d.side ?? ""}`.trim()],
      ["account", who],
      ["qty", `${d.qty} ${base(d.symbol)}`, true],
      ["price", d.price, true],
      ["fill", DASH, true],
      ["rank", String(d.rank), true],
      ["haircut", d.haircut, true],
      ["policy", d.policy],
      ["fund", DASH, true],
      ["debt", DASH, true],
    ]);
  }

  draw() {
    if (this.pending.length) {
      const seqOf = (tr) => Number(tr.dataset.seq ?? Infinity);
      const pending = this.pending.sort((a, b) => seqOf(a) - seqOf(b)); // oldest first
      this.pending = [];
      const top = this.tbody.firstElementChild;
      if (!top || seqOf(pending[0]) > seqOf(top)) {
        // the usual case: newer than everything shown
        const frag = document.createDocumentFragment();
        for (let i = pending.length - 1; i >= 0; i--) frag.append(pending[i]);
        this.tbody.prepend(frag);
      } else {
        // history read after live events arrived: put every row in seq order again
        const rows = [...this.tbody.children, ...pending].sort((a, b) => seqOf(b) - seqOf(a));
        this.tbody.replaceChildren(...rows);
      }
      while (this.tbody.children.length > KEEP) this.tbody.lastElementChild.remove();
    }
    const { liquidation, adl } = this.counts;
    this.countNode.textContent = liquidation + adl === 0
      ? "none yet"
      : `${liquidation} liquidation${liquidation === 1 ? "" : "s"} · ${adl} ADL fill${adl === 1 ? "" : "s"}`;
  }
}
