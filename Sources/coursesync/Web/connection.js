// One protocol connection over WebSocket, kept up: the handshake, heartbeats (§8), reconnects with
// exponential backoff and full jitter, and push pacing at the rate Welcome states (§9). It knows
// nothing of courses: `onReady` is told when a connection is welcomed (subscribe and resend
// there), `onMessage` gets every other server message, `onState` the indicator's state.

import { PERMANENT_REFUSALS } from "./limits.js";

const PROTOCOL = "coursesync.v1+json";

/** Codes after which reconnecting with the same token cannot help: the server's own list (limits.js is made by it). */
const FATAL = PERMANENT_REFUSALS;

export class Connection {
  constructor({ url, token, clientID, onReady, onMessage, onState }) {
    Object.assign(this, { url, token, clientID, onReady, onMessage, onState });
    this.socket = null;
    this.welcomed = false;
    this.attempt = 0;
    this.retryFloorMs = 0;
    this.stopped = false;
    this.heartbeatMs = 15000;
    this.lastHeard = 0;
    this.lastPing = 0;
    this.timer = null;
    // Pacing: a token bucket of pushes (one second's worth at once, then the rate).
    this.pushRate = 0;
    this.tokens = 0;
    this.refilled = 0;
    this.queue = []; // pushes waiting for the bucket
  }

  start() {
    this.stopped = false;
    this.open();
  }

  open() {
    this.onState("connecting");
    const socket = new WebSocket(this.url, [PROTOCOL]);
    this.socket = socket;
    this.welcomed = false;
    socket.onopen = () => {
      this.heard();
      this.sendNow({ hello: { protocolVersion: 1, clientId: this.clientID, token: this.token } });
    };
    socket.onmessage = (event) => {
      if (socket !== this.socket) return;
      this.heard();
      let envelope;
      try {
        envelope = JSON.parse(event.data);
      } catch {
        return this.drop("the server sent a message that is not JSON");
      }
      this.receive(envelope);
    };
    socket.onclose = () => {
      if (socket !== this.socket) return;
      this.socket = null;
      this.welcomed = false;
      clearInterval(this.timer);
      if (!this.stopped) this.scheduleReconnect();
    };
    socket.onerror = () => {}; // onclose follows
  }

  receive(envelope) {
    const [kind, body] = Object.entries(envelope)[0] ?? [];
    switch (kind) {
      case "welcome":
        this.welcomed = true;
        this.attempt = 0;
        this.retryFloorMs = 0;
        this.heartbeatMs = body.heartbeatIntervalMs || 15000;
        this.pushRate = body.maxPushesPerSecond || 0;
        this.tokens = this.pushRate;
        this.refilled = performance.now();
        this.queue = [];
        clearInterval(this.timer);
        this.timer = setInterval(() => this.tick(), Math.min(1000, this.heartbeatMs / 4));
        this.onState("online");
        this.onReady(body);
        break;
      case "ping":
        this.sendNow({ pong: { nonce: body.nonce ?? "0" } });
        break;
      case "pong":
        break;
      case "error": {
        const code = body.code ?? "ERROR_CODE_UNSPECIFIED";
        this.retryFloorMs = body.retryAfterMs ?? 0;
        if (FATAL.has(code)) {
          this.stopped = true;
          this.onState("refused", `${code}: ${body.message ?? ""}`);
        }
        this.socket?.close(1000);
        break;
      }
      default:
        this.onMessage(kind, body ?? {});
    }
  }

  /** Sends a message now (handshake, subscriptions, heartbeats). */
  sendNow(envelope) {
    if (this.socket?.readyState === WebSocket.OPEN) this.socket.send(JSON.stringify(envelope));
  }

  /** Sends a push as the pacing allows; false if there is no welcomed connection to send it on. */
  push(envelope) {
    if (!this.welcomed) return false;
    this.queue.push(envelope);
    this.drain();
    return true;
  }

  drain() {
    if (this.pushRate > 0) {
      const now = performance.now();
      this.tokens = Math.min(this.pushRate, this.tokens + ((now - this.refilled) / 1000) * this.pushRate);
      this.refilled = now;
    }
    while (this.queue.length > 0 && (this.pushRate === 0 || this.tokens >= 1)) {
      this.tokens -= 1;
      this.sendNow(this.queue.shift());
    }
  }

  heard() {
    this.lastHeard = performance.now();
  }

  /** Heartbeats: ping after one quiet interval, give up after three (§8); and paced pushes. */
  tick() {
    this.drain();
    const quiet = performance.now() - this.lastHeard;
    if (quiet > 3 * this.heartbeatMs) return this.drop("the server went silent");
    if (quiet > this.heartbeatMs && performance.now() - this.lastPing > this.heartbeatMs) {
      this.lastPing = performance.now();
      this.sendNow({ ping: { nonce: String(Math.floor(Math.random() * 2 ** 31)) } });
    }
  }

  /** Ends this connection (a broken stream, a gap): the reconnect resumes from the cursor. */
  drop(reason) {
    console.warn(`coursesync: closing the connection: ${reason}`);
    this.socket?.close(1000);
  }

  scheduleReconnect() {
    const ceiling = Math.min(30000, 100 * 2 ** this.attempt);
    const delay = Math.max(this.retryFloorMs, Math.random() * ceiling);
    this.attempt = Math.min(this.attempt + 1, 16);
    this.onState("offline", delay);
    setTimeout(() => {
      if (!this.stopped) this.open();
    }, delay);
  }
}
