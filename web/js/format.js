// Display helpers. Prices, sizes and money arrive as decimal strings (SPEC §1) and are shown
// as they are, only padded to the instrument's decimals: no float ever rounds a shown value.
// Numbers (floats) are made only for the charts' geometry.

export const DASH = "—";

/** Decimal places of a step such as "0.1" (1) or "1" (0). */
export function places(step) {
  const s = String(step ?? "");
  const dot = s.indexOf(".");
  return dot < 0 ? 0 : s.length - dot - 1;
}

/** `value` (a decimal string) with at least `n` decimals; DASH for null or undefined. */
export function fixed(value, n = 0) {
  if (value === null || value === undefined || value === "") return DASH;
  const s = String(value);
  const dot = s.indexOf(".");
  const have = dot < 0 ? 0 : s.length - dot - 1;
  if (have >= n) return s;
  return (dot < 0 ? s + "." : s) + "0".repeat(n - have);
}

/** `value` (a decimal string) rounded half-up to `n` decimals, exactly (BigInt, no float):
 *  for values that are not on the price grid (a liquidation price), shown at the tick. */
export function rounded(value, n) {
  if (value === null || value === undefined || value === "") return DASH;
  const m = /^(-?)(\d+)(?:\.(\d*))?$/.exec(String(value));
  if (!m) return String(value);
  const [, neg, whole, frac = ""] = m;
  if (frac.length <= n) return fixed(value, n);
  let scaled = BigInt(whole + frac.slice(0, n));
  if (frac.charCodeAt(n) >= 53) scaled += 1n; // next digit >= "5"
  const digits = scaled.toString().padStart(n + 1, "0");
  const out = n ? `${digits.slice(0, -n)}.${digits.slice(-n)}` : digits;
  return (neg && /[1-9]/.test(out) ? "-" : "") + out;
}

/** A decimal string with its sign always shown ("+1.5", "-2", "0"). */
export function signed(value) {
  if (value === null || value === undefined) return DASH;
  const s = String(value);
  return s.startsWith("-") || /^0(\.0*)?$/.test(s) ? s : "+" + s;
}

/** -1, 0 or 1: the sign of a decimal string. */
export function sign(value) {
  const s = String(value ?? "0");
  if (/^-?0*(\.0*)?$/.test(s)) return 0;
  return s.startsWith("-") ? -1 : 1;
}

/** A rate given as a decimal fraction ("0.0001") as a percentage ("0.0100%"). */
export function percent(rate, digits = 4) {
  if (rate === null || rate === undefined) return DASH;
  const x = Number(rate);
  return Number.isFinite(x) ? (x * 100).toFixed(digits) + "%" : DASH;
}

/** HH:MM:SS of a time in ms since the epoch (local time). */
export function clock(ms) {
  const d = new Date(ms);
  return [d.getHours(), d.getMinutes(), d.getSeconds()].map((x) => String(x).padStart(2, "0")).join(":");
}

/** HH:MM:SS of a duration in ms (0 and below: "00:00:00"). */
export function duration(ms) {
  const t = Math.max(0, Math.floor(ms / 1000));
  const h = Math.floor(t / 3600);
  const m = Math.floor((t % 3600) / 60);
  return [h, m, t % 60].map((x) => String(x).padStart(2, "0")).join(":");
}

/** A new element with a class and text (text only: nothing from the server is parsed as HTML). */
export function el(tag, cls, text) {
  const node = document.createElement(tag);
  if (cls) node.className = cls;
  if (text !== undefined && text !== null) node.textContent = String(text);
  return node;
}

/** Set `node`'s text only when it differs (cheap repeated renders). */
export function setText(node, text) {
  const s = String(text);
  if (node.textContent !== s) node.textContent = s;
}

/** The first of `names` that `obj` has (not null): routes still settling may name a field differently. */
export function pick(obj, ...names) {
  if (!obj) return null;
  for (const name of names) {
    if (obj[name] !== undefined && obj[name] !== null) return obj[name];
  }
  return null;
}
