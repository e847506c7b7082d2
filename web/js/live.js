// The WebSocket /v1/ws (protocol in service/ws_hub.py): subscribes to the page's channels,
// authenticates with the typed key (the private "account" channel), reconnects by itself
// with a growing delay (0.5 s doubling up to 8 s) and subscribes again after a reconnect.
//
// A channel the service does not know (an older service without `funding:` or
// `insurance_fund`) is answered with a control error: it is dropped from the set (until the
// page asks for it again) and reported through onRefused; the page's REST polling covers it.

const MAX_DELAY_MS = 8000;

export class LiveSocket {
  /** handlers (each optional): onMessage(channel, data, seq), onStatus(state), onOpen(),
   *  onRefused(channel), onAuthenticated(data), onAuthError(data) */
  constructor(handlers) {
    this.handlers = handlers;
    this.channels = new Set();
    this.key = null;
    this.ws = null;
    this.delay = 500;
    this.timer = null;
  }

  url() {
    return `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/v1/ws`;
  }

  start() {
    this.connect();
  }

  connect() {
    clearTimeout(this.timer);
    this.handlers.onStatus?.("connecting");
    const ws = new WebSocket(this.url());
    this.ws = ws;
    ws.onopen = () => {
      if (ws !== this.ws) return;
      this.delay = 500;
      this.handlers.onStatus?.("live");
      if (this.channels.size) this.send({ op: "subscribe", channels: [...this.channels] });
      if (this.key) this.send({ op: "auth", api_key: this.key });
      this.handlers.onOpen?.();
    };
    ws.onmessage = (event) => {
      if (ws !== this.ws) return;
      let msg;
      try {
        msg = JSON.parse(event.data);
      } catch {
        return;
      }
      this.dispatch(msg);
    };
    ws.onclose = () => {
      if (ws !== this.ws) return;
      this.ws = null;
      this.handlers.onStatus?.("offline");
      this.timer = setTimeout(() => this.connect(), this.delay);
      this.delay = Math.min(this.delay * 2, MAX_DELAY_MS);
    };
    ws.onerror = () => {}; // a close follows, which reconnects
  }

  /** Close this connection and open a new one now (a different key: the service keeps the
   *  first account a connection authenticated as). */
  restart() {
    const old = this.ws;
    this.ws = null;
    if (old) {
      old.onclose = null;
      old.close();
    }
    this.delay = 500;
    this.connect();
  }

  open() {
    return this.ws !== null && this.ws.readyState === WebSocket.OPEN;
  }

  send(msg) {
    if (this.open()) this.ws.send(JSON.stringify(msg));
  }

  subscribe(channels) {
    const fresh = channels.filter((ch) => !this.channels.has(ch));
    for (const ch of fresh) this.channels.add(ch);
    if (fresh.length) this.send({ op: "subscribe", channels: fresh });
  }

  unsubscribe(channels) {
    const known = channels.filter((ch) => this.channels.delete(ch));
    if (known.length) this.send({ op: "unsubscribe", channels: known });
  }

  /** Authenticate with `key` (null: forget the key). Either way a fresh connection. */
  setKey(key) {
    this.key = key;
    this.restart();
  }

  dispatch(msg) {
    const { channel, data, seq } = msg;
    if (channel === "heartbeat" || !data) return;
    if (channel !== "control") {
      this.handlers.onMessage?.(channel, data, seq);
      return;
    }
    if (data.type === "authenticated") {
      this.handlers.onAuthenticated?.(data);
    } else if (data.type === "error") {
      if (data.error === "UNKNOWN_CHANNEL") {
        const m = /unknown channel ['"](.+)['"]/.exec(data.message || "");
        if (m) {
          this.channels.delete(m[1]);
          this.handlers.onRefused?.(m[1]);
        }
      } else if (String(data.error).startsWith("AUTH")) {
        this.handlers.onAuthError?.(data);
      }
    }
  }
}
