// The page's session (src/switchboard/web/static/session.js) against a scripted WebSocket:
// answers matched to requests, PONG and ACK, reconnecting with back-off, the liveness rule.
// Real timers with short delays; every wait has a deadline.
import assert from "node:assert/strict";
import { describe, test } from "node:test";

import { decodeFrame, encode, ErrorCode } from "../../src/switchboard/web/static/protocol.js";
import {
  Backoff, ConnectionLost, RECONNECT_INITIAL_MS, RECONNECT_MAX_MS, RequestError, Session, SUBPROTOCOL,
} from "../../src/switchboard/web/static/session.js";

/** A WebSocket whose other end the test plays: ``open``, ``deliver``, ``drop``, ``sent``. */
class ScriptedSocket {
  static made = [];

  constructor(url, protocols) {
    this.url = url;
    this.protocols = protocols;
    this.readyState = 0;
    this.sent = [];
    this.closedWith = null;
    ScriptedSocket.made.push(this);
  }

  open() {
    this.readyState = 1;
  }

  deliver(msg) {
    const bytes = encode(msg);
    this.onmessage({ data: bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.length) });
  }

  deliverRaw(data) {
    this.onmessage({ data });
  }

  send(bytes) {
    this.sent.push(decodeFrame(bytes));
  }

  close(code = 1000) {
    if (this.readyState === 3) return;
    this.closedWith = code;
    this.readyState = 3;
    setTimeout(() => this.onclose({ code, reason: "" }), 0);
  }

  /** The server's side ends the connection. */
  drop(code = 1006) {
    this.readyState = 3;
    this.onclose({ code, reason: "" });
  }
}

const WELCOME = {
  kind: "Welcome", client_id: 7, server_name: "test", version: 1, heartbeat_ms: 10000,
  max_frame: 65536, max_text: 4096, max_clients: 1024, ip: "127.0.0.1", port: 50000,
};

function until(predicate, what, timeout = 2000) {
  return new Promise((resolve, reject) => {
    const deadline = Date.now() + timeout;
    const poll = () => {
      const value = predicate();
      if (value) resolve(value);
      else if (Date.now() > deadline) reject(new Error(`timed out waiting for ${what}`));
      else setTimeout(poll, 2);
    };
    poll();
  });
}

function started({ backoff = new Backoff({ initial: 20, cap: 80 }), welcome = WELCOME } = {}) {
  ScriptedSocket.made = [];
  const session = new Session("ws://test/ws", { WebSocketImpl: ScriptedSocket, backoff });
  const states = [];
  const indications = [];
  session.addEventListener("state", (ev) => states.push(ev.detail));
  session.addEventListener("indication", (ev) => indications.push(ev.detail.message));
  session.start();
  const ws = ScriptedSocket.made.at(-1);
  ws.open();
  ws.deliver(welcome);
  return { session, ws, states, indications };
}

describe("requests and answers", () => {
  test("the subprotocol is asked for and the answers resolve their own requests", async () => {
    const { session, ws } = started();
    assert.deepEqual(ws.protocols, [SUBPROTOCOL]);
    const time = session.request({ kind: "TimeRequest" });
    const name = session.request({ kind: "NameRequest" });
    const [t, n] = ws.sent;
    assert.deepEqual([t.kind, n.kind], ["TimeRequest", "NameRequest"]);
    assert.notEqual(t.request_id, n.request_id);
    ws.deliver({ kind: "NameOk", request_id: n.request_id, name: "test" });
    ws.deliver({ kind: "TimeOk", request_id: t.request_id, epoch_ms: 5n, utc_offset_s: 0, zone: "UTC" });
    assert.equal((await name).name, "test");
    assert.equal((await time).epoch_ms, 5n);
    session.stop();
  });

  test("an ERROR rejects its request with the code, name and message", async () => {
    const { session, ws } = started();
    const nick = session.request({ kind: "NickRequest", nick: "bob" });
    ws.deliver({ kind: "ErrorResponse", request_id: ws.sent[0].request_id, code: ErrorCode.NICK_IN_USE,
      name: "NICK_IN_USE", message: "taken" });
    await assert.rejects(nick, (e) => e instanceof RequestError && e.code === ErrorCode.NICK_IN_USE
      && e.codeName === "NICK_IN_USE" && e.message === "taken");
    session.stop();
  });

  test("requests before WELCOME or after the connection went are refused at once", async () => {
    ScriptedSocket.made = [];
    const session = new Session("ws://test/ws", { WebSocketImpl: ScriptedSocket });
    await assert.rejects(session.request({ kind: "TimeRequest" }), ConnectionLost);
    session.start();
    ScriptedSocket.made[0].open();
    await assert.rejects(session.request({ kind: "TimeRequest" }), ConnectionLost);
    session.stop();
  });
});

describe("the protocol's duties", () => {
  test("PING is answered with PONG; a direct MESSAGE is acknowledged after it is shown", () => {
    const { session, ws, indications } = started();
    ws.deliver({ kind: "Ping" });
    assert.deepEqual(ws.sent.map((f) => f.kind), ["Pong"]);
    let sentWhenShown = null;
    session.addEventListener("indication", () => { sentWhenShown = ws.sent.length; });
    const message = {
      kind: "Message", message_id: 42n, sender_id: 2, sender_ip: "127.0.0.1", sender_port: 1,
      sender_nick: "bob", room: "", sent_ms: 1n, flags: 0, text: "hi",
    };
    ws.deliver(message);
    assert.equal(sentWhenShown, 1); // the ACK was not out yet when the page drew it
    assert.deepEqual(ws.sent.at(-1), { kind: "Ack", request_id: 0, message_id: 42n });
    ws.deliver({ ...message, message_id: 43n, room: "lobby" }); // room messages: no ACK
    assert.equal(ws.sent.length, 2);
    assert.deepEqual(indications.map((m) => m.kind), ["Ping", "Message", "Message"]);
    session.stop();
  });

  test("an unknown indication is ignored and the session goes on", async () => {
    const { session, ws, indications } = started();
    const odd = encode({ kind: "Ping" });
    new DataView(odd.buffer).setUint16(4, 0xfe);
    ws.deliverRaw(odd.buffer);
    const time = session.request({ kind: "TimeRequest" });
    ws.deliver({ kind: "TimeOk", request_id: ws.sent[0].request_id, epoch_ms: 1n, utc_offset_s: 0, zone: "UTC" });
    await time;
    assert.deepEqual(indications, []);
    assert.equal(ws.closedWith, null);
    session.stop();
  });

  test("a text message or a bad header ends the connection, then it reconnects", async () => {
    for (const bad of ["hello", new Uint8Array(14).buffer]) {
      const { session, ws, states } = started();
      ws.deliverRaw(bad);
      assert.equal(ws.closedWith, 1002);
      await until(() => states.some((s) => s.state === "waiting"), "waiting");
      await until(() => ScriptedSocket.made.length === 2, "a second socket");
      session.stop();
    }
  });

  test("an ERROR with request id 0 is the connection's: reported, and the reason kept", async () => {
    const { session, ws, states } = started();
    const fatal = [];
    session.addEventListener("fatal", (ev) => fatal.push(ev.detail.error));
    ws.deliver({ kind: "ErrorResponse", code: ErrorCode.SERVER_FULL, name: "SERVER_FULL", message: "full" });
    ws.drop(1000);
    assert.equal(fatal[0].code, ErrorCode.SERVER_FULL);
    assert.equal(states.at(-1).state, "waiting");
    assert.equal(states.at(-1).reason, "SERVER_FULL: full");
    session.stop();
  });
});

describe("reconnecting", () => {
  test("a lost connection fails what was pending and reconnects with growing delays", async () => {
    const { session, ws, states } = started({ backoff: new Backoff({ initial: 20, cap: 80, random: () => 1 }) });
    const pending = session.request({ kind: "TimeRequest" });
    ws.drop();
    await assert.rejects(pending, ConnectionLost);
    const delays = [];
    for (let i = 1; i <= 4; i++) {
      await until(() => ScriptedSocket.made.length === i + 1, `attempt ${i + 1}`);
      delays.push(states.filter((s) => s.state === "waiting").at(-1).delay_ms);
      ScriptedSocket.made.at(-1).drop(); // the server is still down
    }
    assert.deepEqual(delays, [20, 40, 80, 80]); // doubling up to the cap
    await until(() => ScriptedSocket.made.length === 6, "attempt 6");
    const again = ScriptedSocket.made.at(-1);
    again.open();
    again.deliver(WELCOME); // admitted: the back-off starts over
    assert.equal(session.backoff.attempts, 0);
    assert.equal(states.at(-1).state, "open");
    session.stop();
  });

  test("stop() closes and stays closed", async () => {
    const { session, ws, states } = started();
    session.stop("logged out");
    await new Promise((r) => setTimeout(r, 60));
    assert.equal(ScriptedSocket.made.length, 1);
    assert.equal(ws.closedWith, 1000);
    assert.deepEqual(states.at(-1), { state: "stopped", reason: "logged out" });
  });

  test("three silent heartbeat intervals and the server is presumed gone", async () => {
    const { session, states } = started({ welcome: { ...WELCOME, heartbeat_ms: 20 } });
    const waiting = await until(() => states.find((s) => s.state === "waiting"), "the liveness rule", 1000);
    assert.match(waiting.reason, /sent nothing for/);
    session.stop();
  });

  test("the default delays: 1 s doubling to 30 s, each jittered to between half and all", () => {
    assert.equal(RECONNECT_INITIAL_MS, 1000);
    assert.equal(RECONNECT_MAX_MS, 30000);
    const high = new Backoff({ random: () => 1 });
    assert.deepEqual(Array.from({ length: 7 }, () => high.nextDelay()), [1000, 2000, 4000, 8000, 16000, 30000, 30000]);
    const low = new Backoff({ random: () => 0 });
    assert.deepEqual(Array.from({ length: 3 }, () => low.nextDelay()), [500, 1000, 2000]);
  });
});
