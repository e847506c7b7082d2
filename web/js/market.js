// The order book (levels with depth bars, spread, last price) and the recent trades.
// Rows are made once and only their text changes, so a redraw is cheap.

import { DASH, clock, el, fixed, setText } from "./format.js";

const LEVELS = 14; // rows per side; the panel shows as many as fit

export class BookView {
  /** onPick(price): a level was clicked (the ticket takes its price). */
  constructor(asksNode, bidsNode, spreadNode, lastNode, onPick) {
    this.sides = { asks: this.rows(asksNode), bids: this.rows(bidsNode) };
    this.spreadNode = spreadNode;
    this.lastNode = lastNode;
    for (const node of [asksNode, bidsNode]) {
      node.addEventListener("click", (event) => {
        const row = event.target.closest(".level");
        if (row && row.dataset.price) onPick(row.dataset.price);
      });
    }
  }

  rows(node) {
    node.replaceChildren();
    const rows = [];
    for (let i = 0; i < LEVELS; i++) {
      const row = el("div", "level blank");
      const bar = el("div", "bar");
      const px = el("span", "px", "");
      const qty = el("span", "qty", "");
      const total = el("span", "total", "");
      row.append(bar, px, qty, total);
      node.append(row);
      rows.push({ row, bar, px, qty, total });
    }
    return rows;
  }

  /** book: {bids, asks} best first; pd/qd: price and size decimals. */
  draw(book, pd, qd) {
    const cums = {};
    let max = 0;
    for (const side of ["asks", "bids"]) {
      let cum = 0;
      cums[side] = book[side].slice(0, LEVELS).map(([, q]) => (cum += Number(q)));
      max = Math.max(max, cum);
    }
    for (const side of ["asks", "bids"]) {
      const levels = book[side];
      this.sides[side].forEach((r, i) => {
        const level = levels[i];
        if (!level) {
          r.row.className = "level blank";
          delete r.row.dataset.price;
          setText(r.px, "");
          setText(r.qty, "");
          setText(r.total, "");
          r.bar.style.width = "0";
          return;
        }
        const [p, q] = level;
        r.row.className = "level";
        r.row.dataset.price = p;
        setText(r.px, fixed(p, pd));
        setText(r.qty, fixed(q, qd));
        setText(r.total, fixed(String(Number(cums[side][i].toFixed(qd))), qd));
        r.bar.style.width = max > 0 ? `${((cums[side][i] / max) * 100).toFixed(1)}%` : "0";
      });
    }
    const bid = book.bids[0];
    const ask = book.asks[0];
    if (bid && ask) {
      const spread = Number(ask[0]) - Number(bid[0]);
      const mid = (Number(ask[0]) + Number(bid[0])) / 2;
      setText(this.spreadNode, `spread ${spread.toFixed(pd)} (${((spread / mid) * 100).toFixed(3)}%)`);
    } else {
      setText(this.spreadNode, "spread " + DASH);
    }
  }

  drawLast(price, dir, pd) {
    setText(this.lastNode, price === null ? DASH : fixed(price, pd));
    this.lastNode.className = "num " + (dir > 0 ? "up" : dir < 0 ? "down" : "");
  }
}

export class TradesView {
  constructor(node, rows = 60) {
    this.node = node;
    this.max = rows;
  }

  /** trades newest first: {trade_id, price, qty, taker_side, ts_ns} */
  draw(trades, pd, qd) {
    const frag = document.createDocumentFragment();
    for (const t of trades.slice(0, this.max)) {
      const row = el("div", "trade");
      row.dataset.tradeId = t.trade_id;
      row.append(
        el("span", t.taker_side === "buy" ? "buy-t" : "sell-t", fixed(t.price, pd)),
        el("span", "", fixed(t.qty, qd)),
        el("span", "t", t.ts_ns ? clock(Number(BigInt(t.ts_ns) / 1000000n)) : DASH),
      );
      frag.append(row);
    }
    this.node.replaceChildren(frag);
  }
}
