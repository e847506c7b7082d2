// The two charts, drawn with uPlot (web/vendor/uplot, MIT): the book's depth (cumulative size
// per side around the spread) and the insurance fund and bad debt over time. Each follows
// its container's size; `set*` only stores data and redraws (callers throttle).

import uPlot from "../vendor/uplot/uPlot.esm.js";
import { clock } from "./format.js";

const GREEN = "#0ecb81";
const RED = "#f6465d";
const YELLOW = "#f0b90b";
const MUTED = "#848e9c";
const GRID = "#222830";
const FONT = '11px ui-monospace, "SFMono-Regular", Menlo, Consolas, "DejaVu Sans Mono", monospace';

function axis(extra = {}) {
  return {
    stroke: MUTED,
    font: FONT,
    grid: { stroke: GRID, width: 1 },
    ticks: { stroke: GRID, width: 1, size: 4 },
    ...extra,
  };
}

function sized(node) {
  return { width: Math.max(node.clientWidth, 100), height: Math.max(node.clientHeight, 60) };
}

function follow(node, plot) {
  new ResizeObserver(() => plot.setSize(sized(node))).observe(node);
}

const compact = (v) => {
  const a = Math.abs(v);
  if (a >= 1e6) return (v / 1e6).toFixed(a >= 1e7 ? 0 : 1) + "M";
  if (a >= 1e4) return (v / 1e3).toFixed(0) + "k";
  return String(Number(v.toFixed(4)));
};

const DEPTH_SPAN = 0.015; // the depth chart shows at most 1.5% of the mid either side

export class DepthChart {
  constructor(node) {
    this.node = node;
    this.range = null; // [lo, hi] around the mid, or null (uPlot's own)
    const stepped = uPlot.paths.stepped;
    this.plot = new uPlot(
      {
        ...sized(node),
        legend: { show: false },
        cursor: { drag: { x: false, y: false }, points: { show: false } },
        scales: {
          x: { time: false, range: (u, lo, hi) => this.range ?? [lo, hi] },
          y: { range: (u, lo, hi) => [0, hi > 0 ? hi * 1.08 : 1] },
        },
        axes: [axis({ values: (u, ticks) => ticks.map(compact) }), axis({ size: 48, values: (u, ticks) => ticks.map(compact) })],
        series: [
          {},
          { label: "bids", stroke: GREEN, fill: "rgba(14, 203, 129, 0.16)", width: 1.5, paths: stepped({ align: -1 }), points: { show: false } },
          { label: "asks", stroke: RED, fill: "rgba(246, 70, 93, 0.16)", width: 1.5, paths: stepped({ align: 1 }), points: { show: false } },
        ],
      },
      [[], [], []],
      node,
    );
    follow(node, this.plot);
  }

  /** bids best (highest) first, asks best (lowest) first: [[price, qty], ...] as strings.
   *  The x range is symmetric around the mid, as wide as the book but at most DEPTH_SPAN
   *  (an order far from the market would squash the rest into a corner). */
  set(bids, asks) {
    this.range = null;
    if (bids.length && asks.length) {
      const mid = (Number(bids[0][0]) + Number(asks[0][0])) / 2;
      const far = Math.max(mid - Number(bids[bids.length - 1][0]), Number(asks[asks.length - 1][0]) - mid);
      const half = Math.min(far, mid * DEPTH_SPAN);
      if (half > 0) this.range = [mid - half, mid + half];
    }
    const xs = [];
    const yb = [];
    const ya = [];
    let cum = 0;
    const below = [];
    for (const [p, q] of bids) {
      cum += Number(q);
      below.push([Number(p), cum]);
    }
    for (let i = below.length - 1; i >= 0; i--) {
      xs.push(below[i][0]);
      yb.push(below[i][1]);
      ya.push(null);
    }
    cum = 0;
    for (const [p, q] of asks) {
      cum += Number(q);
      xs.push(Number(p));
      yb.push(null);
      ya.push(cum);
    }
    this.plot.setData([xs, yb, ya]);
  }
}

export class FundChart {
  constructor(node, maxPoints = 3600) {
    const stepped = uPlot.paths.stepped;
    this.node = node;
    this.maxPoints = maxPoints;
    this.t = [];
    this.fund = [];
    this.debt = [];
    this.plot = new uPlot(
      {
        ...sized(node),
        legend: { show: false },
        cursor: { drag: { x: false, y: false }, points: { show: false } },
        scales: {
          x: { time: true },
          usd: { range: (u, lo, hi) => (lo === hi ? [lo - 1, hi + 1] : [lo - (hi - lo) * 0.1, hi + (hi - lo) * 0.1]) },
          debt: { range: (u, lo, hi) => [0, hi > 0 ? hi * 1.2 : 1] },
        },
        axes: [
          axis({ space: 70, values: (u, ticks) => ticks.map((t) => clock(t * 1000)) }), // one line: HH:MM:SS
          axis({ scale: "usd", size: 56, values: (u, ticks) => ticks.map(compact) }),
          axis({ scale: "debt", side: 1, size: 48, stroke: RED, grid: { show: false }, values: (u, ticks) => ticks.map(compact) }),
        ],
        series: [
          {},
          // a balance holds until it changes: steps, not slopes between the points
          { label: "insurance fund", scale: "usd", stroke: YELLOW, width: 1.5, paths: stepped({ align: 1 }), points: { show: false } },
          { label: "bad debt", scale: "debt", stroke: RED, width: 1.5, fill: "rgba(246, 70, 93, 0.12)", paths: stepped({ align: 1 }), points: { show: false } },
        ],
      },
      [[], [], []],
      node,
    );
    follow(node, this.plot);
  }

  /** A point at `ms` (epoch ms): balance and bad debt as decimal strings. */
  add(ms, balance, badDebt) {
    const t = ms / 1000;
    const n = this.t.length;
    if (n && t <= this.t[n - 1]) {
      this.fund[n - 1] = Number(balance);
      this.debt[n - 1] = Number(badDebt);
    } else {
      this.t.push(t);
      this.fund.push(Number(balance));
      this.debt.push(Number(badDebt));
    }
    if (this.t.length > this.maxPoints) {
      const cut = this.t.length - this.maxPoints;
      this.t.splice(0, cut);
      this.fund.splice(0, cut);
      this.debt.splice(0, cut);
    }
  }

  /** Past points [ms, balance] from before the page opened (bad debt unknown there: a gap),
   *  merged in time order with what is already drawn. */
  addHistory(points) {
    const rows = this.t.map((t, i) => [t, this.fund[i], this.debt[i]]);
    for (const [ms, balance] of points) rows.push([ms / 1000, Number(balance), null]);
    rows.sort((a, b) => a[0] - b[0]);
    const kept = rows.slice(-this.maxPoints);
    this.t = kept.map((r) => r[0]);
    this.fund = kept.map((r) => r[1]);
    this.debt = kept.map((r) => r[2]);
  }

  draw() {
    this.plot.setData([this.t, this.fund, this.debt]);
  }
}
