// Throttled drawing: state changes mark parts dirty; at most one frame every `minMs` redraws
// them (requestAnimationFrame, so a hidden tab draws nothing until it is shown again). A busy
// market changes state hundreds of times a second and is drawn a few times a second.

export class Painter {
  constructor(draw, minMs = 200) {
    this.draw = draw; // (Set of part names) => void
    this.minMs = minMs;
    this.dirty = new Set();
    this.pending = false;
    this.last = 0;
  }

  mark(...parts) {
    for (const part of parts) this.dirty.add(part);
    if (this.pending) return;
    this.pending = true;
    const wait = Math.max(0, this.last + this.minMs - performance.now());
    setTimeout(() => requestAnimationFrame(() => this.frame()), wait);
  }

  frame() {
    this.pending = false;
    this.last = performance.now();
    const parts = this.dirty;
    this.dirty = new Set();
    try {
      this.draw(parts);
    } catch (err) {
      console.warn("redraw failed", err);
    }
  }
}

/** `fn` called at most once per `ms`, after the last call of a burst (trailing debounce). */
export function debounce(fn, ms) {
  let timer = null;
  return (...args) => {
    clearTimeout(timer);
    timer = setTimeout(() => fn(...args), ms);
  };
}
