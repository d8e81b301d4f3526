// One Switchboard session over a WebSocket (one protocol frame per binary message): requests
// matched to their answers, the protocol's own duties (PONG for PING, ACK for direct
// MESSAGEs, presuming the server gone after three silent heartbeat intervals), and
// reconnecting with capped exponential back-off when the connection drops.
// No DOM here: the page (app.js) listens to the events and draws.
//
// Events (an Event with a ``detail``, as CustomEvent has; details in brackets):
//   "state"       {state: "connecting" | "open" | "waiting" | "stopped", delay_ms, attempt, reason}
//   "welcome"     {welcome}        a connection was admitted: the page introduces itself now
//   "indication"  {message}        every indication from the server (MESSAGE, RECEIPT, JOINED...)
//   "fatal"       {error}          an ERROR with request id 0 (the server is full, stopping...)
//   "bad-frame"   {error}          a frame from the server this codec cannot accept

import { decodeFrame, encode, ErrorCode, errorName, ProtocolError } from "./protocol.js";

/** The WebSocket subprotocol (PROTOCOL.md, "WebSocket transport"): the server's
 * protocol.WEBSOCKET_SUBPROTOCOL (held equal by
 * tests/unit/test_web_page_files.py). */
export const SUBPROTOCOL = "switchboard.v1";

/** Reconnection delays, as the terminal clients' (switchboard.defaults RECONNECT_INITIAL_S,
 * RECONNECT_MAX_S; tests/unit/test_web_page_files.py holds them equal).  A page keeps trying
 * at the cap instead of giving up: a person is looking at it and can reload it. */
export const RECONNECT_INITIAL_MS = 1000;
export const RECONNECT_MAX_MS = 30000;

/** A request that the server refused: its ERROR's code, name and message. */
export class RequestError extends Error {
  constructor(code, name, message) {
    super(message);
    this.name = "RequestError";
    this.code = code;
    this.codeName = name || errorName(code);
  }
}

/** The connection ended before the request was answered. */
export class ConnectionLost extends Error {
  constructor(message = "the connection was lost") {
    super(message);
    this.name = "ConnectionLost";
  }
}

/** Capped exponential back-off with equal jitter (switchboard.client.reconnect.Backoff). */
export class Backoff {
  constructor({ initial = RECONNECT_INITIAL_MS, cap = RECONNECT_MAX_MS, random = Math.random } = {}) {
    this.initial = initial;
    this.cap = cap;
    this.random = random;
    this.attempts = 0;
  }

  nextDelay() {
    const base = Math.min(this.cap, this.initial * 2 ** this.attempts);
    this.attempts += 1;
    return base / 2 + this.random() * (base / 2);
  }

  reset() {
    this.attempts = 0;
  }
}

export function defaultUrl(location) {
  return `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/ws`;
}

export class Session extends EventTarget {
  constructor(url, { WebSocketImpl = globalThis.WebSocket, backoff = new Backoff() } = {}) {
    super();
    this.url = url;
    this.WebSocketImpl = WebSocketImpl;
    this.backoff = backoff;
    this.ws = null;
    this.welcome = null;
    this.state = "stopped";
    this.nextRequestId = 1;
    this.pending = new Map(); // request id -> {resolve, reject, kind}
    this.lastHeard = 0;
    this.livenessTimer = null;
    this.retryTimer = null;
    this.retryAt = 0;
    this.stopReason = "";
  }

  _emit(type, detail) {
    // An Event carrying ``detail`` (CustomEvent's shape): Node 18 has Event but no CustomEvent.
    const event = new Event(type);
    event.detail = detail;
    this.dispatchEvent(event);
  }

  _setState(state, extra = {}) {
    this.state = state;
    this._emit("state", { state, ...extra });
  }

  /** Connect (again): also ends a wait for the next attempt. */
  start() {
    clearTimeout(this.retryTimer);
    this.retryTimer = null;
    this.stopReason = "";
    if (this.ws !== null) return;
    this._setState("connecting", { attempt: this.backoff.attempts });
    let ws;
    try {
      ws = new this.WebSocketImpl(this.url, [SUBPROTOCOL]);
    } catch (err) {
      this._lost(`cannot connect: ${err.message}`);
      return;
    }
    ws.binaryType = "arraybuffer";
    this.ws = ws;
    ws.onmessage = (ev) => this._receive(ws, ev.data);
    ws.onclose = (ev) => {
      if (this.ws !== ws) return;
      this.ws = null;
      const why = this.closeReason || (ev.code === 1000 || ev.code === 1005 ? "the server closed the connection"
        : `the connection was lost (WebSocket close ${ev.code}${ev.reason ? `: ${ev.reason}` : ""})`);
      this.closeReason = "";
      this._lost(why);
    };
    ws.onerror = () => {}; // onclose follows and says what happened
  }

  /** Close and stay closed until start() (a fatal refusal, or the person logs out). */
  stop(reason = "disconnected") {
    this.stopReason = reason;
    clearTimeout(this.retryTimer);
    this.retryTimer = null;
    const ws = this.ws;
    this.ws = null;
    this._teardown(reason);
    if (ws !== null) ws.close(1000);
    this._setState("stopped", { reason });
  }

  _teardown(reason) {
    clearInterval(this.livenessTimer);
    this.livenessTimer = null;
    this.welcome = null;
    const pending = [...this.pending.values()];
    this.pending.clear();
    for (const p of pending) p.reject(new ConnectionLost(reason));
  }

  _lost(reason) {
    this._teardown(reason);
    if (this.stopReason) {
      this._setState("stopped", { reason: this.stopReason });
      return;
    }
    const delay = this.backoff.nextDelay();
    this.retryAt = Date.now() + delay;
    this._setState("waiting", { reason, delay_ms: delay, attempt: this.backoff.attempts });
    this.retryTimer = setTimeout(() => this.start(), delay);
  }

  _receive(ws, data) {
    if (this.ws !== ws) return;
    this.lastHeard = Date.now();
    if (!(data instanceof ArrayBuffer)) {
      this._drop("the server sent a text message; the protocol is binary");
      return;
    }
    let msg;
    try {
      msg = decodeFrame(data);
    } catch (err) {
      if (!(err instanceof ProtocolError)) throw err;
      this._drop(`the server sent a frame that cannot be read: ${err.message}`);
      return;
    }
    if (msg.kind === "InvalidFrame") { // unknown or malformed: ignored, as PROTOCOL.md says
      this._emit("bad-frame", { error: msg.error });
      const p = msg.request_id !== 0 && msg.message_class === 2 ? this.pending.get(msg.request_id) : undefined;
      if (p !== undefined) {
        this.pending.delete(msg.request_id);
        p.reject(new RequestError(msg.error.code, errorName(msg.error.code), msg.error.message));
      }
      return;
    }
    if (msg.kind === "Welcome") {
      this.welcome = msg;
      this.backoff.reset();
      this._watchLiveness(msg.heartbeat_ms);
      this._setState("open");
      this._emit("welcome", { welcome: msg });
      return;
    }
    if (msg.kind === "ErrorResponse" && msg.request_id === 0) {
      this.closeReason = `${msg.name}: ${msg.message}`;
      this._emit("fatal", { error: new RequestError(msg.code, msg.name, msg.message) });
      return;
    }
    if (msg.request_id !== 0 && (msg.kind.endsWith("Ok") || msg.kind === "ErrorResponse")) {
      const p = this.pending.get(msg.request_id);
      if (p === undefined) return; // an answer to nothing we asked: ignored
      this.pending.delete(msg.request_id);
      if (msg.kind === "ErrorResponse") {
        if (msg.code === ErrorCode.AUTH_REQUIRED || msg.code === ErrorCode.AUTH_FAILED) {
          this.closeReason = `${msg.name}: ${msg.message}`;
        }
        p.reject(new RequestError(msg.code, msg.name, msg.message));
      } else {
        p.resolve(msg);
      }
      return;
    }
    if (msg.kind === "Ping") this.send({ kind: "Pong" });
    if (msg.kind === "Shutdown") this.closeReason = `the server is stopping (${msg.reason})`;
    this._emit("indication", { message: msg });
    // Acknowledged after the page has shown it: the RECEIPT means "a person's screen has it".
    if (msg.kind === "Message" && msg.room === "") this.send({ kind: "Ack", message_id: msg.message_id });
  }

  _drop(reason) {
    this._emit("bad-frame", { error: new Error(reason) });
    this.closeReason = reason;
    this.ws?.close(1002);
  }

  _watchLiveness(heartbeatMs) {
    clearInterval(this.livenessTimer);
    // PROTOCOL.md, "Heartbeat": nothing at all for three intervals and the server (or the
    // path to it) is presumed gone; checked eight times per interval, like the server.
    const silentLimit = 3 * heartbeatMs;
    this.livenessTimer = setInterval(() => {
      if (Date.now() - this.lastHeard > silentLimit && this.ws !== null) {
        this.closeReason = `the server sent nothing for ${Math.round(silentLimit / 1000)} s`;
        const ws = this.ws;
        this.ws = null;
        ws.close(1000);
        this._lost(this.closeReason);
        this.closeReason = "";
      }
    }, Math.max(100, heartbeatMs / 8));
  }

  /** Send an indication (ACK, PONG): no answer comes. */
  send(msg) {
    if (this.ws === null || this.ws.readyState !== 1) return false;
    this.ws.send(encode({ request_id: 0, ...msg }));
    return true;
  }

  /** Send a request; resolves with its OK result, rejects with RequestError or ConnectionLost. */
  request(msg) {
    if (this.ws === null || this.ws.readyState !== 1 || this.welcome === null) {
      return Promise.reject(new ConnectionLost("not connected"));
    }
    const requestId = this.nextRequestId;
    this.nextRequestId = requestId >= 0xffffffff ? 1 : requestId + 1;
    const frame = encode({ ...msg, request_id: requestId }); // throws LocalProtocolError first
    return new Promise((resolve, reject) => {
      this.pending.set(requestId, { resolve, reject, kind: msg.kind });
      this.ws.send(frame);
    });
  }
}
