// The JavaScript codec (src/switchboard/web/static/protocol.js) against the Python one:
// the golden vectors of docs/PROTOCOL.md, decoded by the Python codec and exported with the
// Python message tables by tests/support/golden.py into the file GOLDEN_JSON names.
// Run by tests/unit/test_web_javascript.py (`node --test`), so `make test` runs it.
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { describe, test } from "node:test";

import * as P from "../../src/switchboard/web/static/protocol.js";

if (!process.env.GOLDEN_JSON) {
  throw new Error("GOLDEN_JSON must name the file tests/support/golden.py wrote (pytest sets it)");
}
const GOLDEN = JSON.parse(readFileSync(process.env.GOLDEN_JSON, "utf8"));

const WIDE = new Set(["u64", "i64"]);
const fromHex = (hex) => Uint8Array.from(hex.match(/../g) ?? [], (b) => parseInt(b, 16));
const toHex = (bytes) => Buffer.from(bytes).toString("hex");

/** The exported message with its 64-bit fields as BigInt, as the JS codec decodes them. */
function expected(message) {
  const convert = (obj, fields) => {
    const out = { ...obj };
    for (const [name, kind] of fields) {
      if (WIDE.has(kind)) out[name] = BigInt(obj[name]);
      else if (kind === "ids") out[name] = obj[name].map((id) => BigInt(id));
      else if (kind.startsWith("list:")) {
        out[name] = obj[name].map((item) => convert(item, P.RECORDS[kind.slice(5)].fields));
      }
    }
    return out;
  };
  return convert(message, P.MESSAGES[message.kind].fields);
}

function frame(cls, type, requestId, payload) {
  const out = new Uint8Array(14 + payload.length);
  const v = new DataView(out.buffer);
  v.setUint16(0, P.MAGIC);
  v.setUint8(2, P.VERSION);
  v.setUint8(3, cls);
  v.setUint16(4, type);
  v.setUint32(6, requestId);
  v.setUint32(10, payload.length);
  out.set(payload, 14);
  return out;
}

describe("the same tables as the Python codec", () => {
  test("every message, its class, type, answered type and fields in wire order", () => {
    const mine = Object.fromEntries(Object.entries(P.MESSAGES).map(([kind, s]) => [
      kind, { cls: s.cls, type: s.type, answers: s.answers ?? null, fields: s.fields },
    ]));
    assert.deepEqual(mine, GOLDEN.messages);
  });

  test("records of the list kind", () => {
    const mine = Object.fromEntries(Object.entries(P.RECORDS).map(([name, r]) => [
      name, { min_size: r.minSize, fields: r.fields },
    ]));
    assert.deepEqual(mine, GOLDEN.records);
  });

  test("classes, types, error codes, closing codes and header constants", () => {
    assert.deepEqual({ ...P.MessageClass }, GOLDEN.message_classes);
    assert.deepEqual({ ...P.MessageType }, GOLDEN.message_types);
    assert.deepEqual({ ...P.ErrorCode }, GOLDEN.error_codes);
    assert.deepEqual([...P.CLOSING_CODES].sort((a, b) => a - b), GOLDEN.closing_codes);
    assert.equal(P.HEADER_SIZE, GOLDEN.header_size);
    assert.equal(P.MAGIC, GOLDEN.magic);
    assert.equal(P.VERSION, GOLDEN.version);
    assert.equal(P.DEFAULT_MAX_FRAME, GOLDEN.default_max_frame);
  });

  test("a golden vector for every message", () => {
    assert.deepEqual(GOLDEN.vectors.map((v) => v.kind).sort(), Object.keys(P.MESSAGES).sort());
  });
});

describe("golden vectors", () => {
  for (const { kind, hex, message } of GOLDEN.vectors) {
    test(`${kind}: encoding gives the golden bytes`, () => {
      assert.equal(toHex(P.encode(expected(message))), hex);
    });
    test(`${kind}: decoding the golden bytes gives what the Python codec decodes`, () => {
      assert.deepEqual(P.decodeFrame(fromHex(hex)), expected(message));
    });
    test(`${kind}: every split point and byte at a time through FrameDecoder`, () => {
      const bytes = fromHex(hex);
      for (let cut = 0; cut <= bytes.length; cut++) {
        const d = new P.FrameDecoder();
        d.feed(bytes.subarray(0, cut));
        const first = [...d];
        d.feed(bytes.subarray(cut));
        const events = [...first, ...d];
        assert.deepEqual(events, [expected(message)], `cut at ${cut}`);
        assert.equal(d.buffered, 0);
      }
      const d = new P.FrameDecoder();
      const events = [];
      for (const b of bytes) {
        d.feed(Uint8Array.of(b));
        events.push(...d);
      }
      assert.deepEqual(events, [expected(message)]);
    });
  }

  test("all the vectors back to back in one chunk decode in order", () => {
    const all = GOLDEN.vectors.map((v) => fromHex(v.hex));
    const joined = new Uint8Array(all.reduce((n, b) => n + b.length, 0));
    let at = 0;
    for (const b of all) { joined.set(b, at); at += b.length; }
    const d = new P.FrameDecoder();
    d.feed(joined);
    assert.deepEqual([...d], GOLDEN.vectors.map((v) => expected(v.message)));
  });
});

describe("headers that end the connection", () => {
  const time = () => P.encode({ kind: "TimeRequest", request_id: 7 });

  test("bad magic: BAD_FRAME with request id 0, after the frames before it", () => {
    const bad = time();
    bad[0] = 0x58;
    const d = new P.FrameDecoder();
    d.feed(Buffer.concat([time(), bad]));
    assert.equal(d.next().kind, "TimeRequest");
    assert.throws(() => d.next(), (e) => e instanceof P.ProtocolError
      && e.code === P.ErrorCode.BAD_FRAME && e.requestId === 0 && e.closesConnection);
    assert.throws(() => d.feed(time()), P.ProtocolError); // refuses further calls
  });

  test("version 2: UNSUPPORTED_VERSION with the frame's request id", () => {
    const bad = time();
    bad[2] = 2;
    assert.throws(() => P.decodeFrame(bad),
      (e) => e.code === P.ErrorCode.UNSUPPORTED_VERSION && e.requestId === 7);
  });

  test("an oversized announcement is refused from the header alone", () => {
    const header = time();
    new DataView(header.buffer).setUint32(10, 65536 - 14 + 1);
    const d = new P.FrameDecoder();
    d.feed(header); // the payload never arrives: the header is enough
    assert.throws(() => d.next(), (e) => e.code === P.ErrorCode.FRAME_TOO_LARGE && e.requestId === 7);
    const ok = time();
    new DataView(ok.buffer).setUint32(10, 65536 - 14);
    const d2 = new P.FrameDecoder();
    d2.feed(ok);
    assert.equal(d2.next(), null); // exactly the maximum: waits for its payload
  });

  test("class 4: BAD_FRAME with the frame's request id", () => {
    const bad = time();
    bad[3] = 4;
    assert.throws(() => P.decodeFrame(bad), (e) => e.code === P.ErrorCode.BAD_FRAME && e.requestId === 7);
  });

  test("a WebSocket message that is not exactly one frame", () => {
    const two = Buffer.concat([time(), time()]);
    assert.throws(() => P.decodeFrame(two), (e) => e.code === P.ErrorCode.BAD_FRAME);
    assert.throws(() => P.decodeFrame(time().subarray(0, 13)), (e) => e.code === P.ErrorCode.BAD_FRAME);
    assert.throws(() => P.decodeFrame(time().subarray(0, 0)), (e) => e.code === P.ErrorCode.BAD_FRAME);
  });
});

describe("frames that are skipped, the stream going on", () => {
  const { REQUEST, RESPONSE, INDICATION } = P.MessageClass;
  const invalid = (bytes, code) => {
    const ev = P.decodeFrame(bytes);
    assert.equal(ev.kind, "InvalidFrame");
    assert.equal(ev.error.code, code, ev.error.message);
    assert.equal(ev.error.requestId, ev.request_id);
    return ev;
  };

  test("unknown types, an OK without its answered type or of an unknown one", () => {
    invalid(frame(REQUEST, 0x3f, 5, []), P.ErrorCode.UNKNOWN_TYPE);
    invalid(frame(INDICATION, 0xff, 0, []), P.ErrorCode.UNKNOWN_TYPE);
    invalid(frame(RESPONSE, 0x40, 5, [0x00]), P.ErrorCode.BAD_PAYLOAD);
    invalid(frame(RESPONSE, 0x40, 5, [0x00, 0x3f]), P.ErrorCode.UNKNOWN_TYPE);
  });

  test("trailing bytes, a truncated field, invalid UTF-8, a bad address family", () => {
    invalid(frame(REQUEST, P.MessageType.TIME, 1, [0]), P.ErrorCode.BAD_PAYLOAD);
    invalid(frame(REQUEST, P.MessageType.NICK, 1, [0, 5, 0x61]), P.ErrorCode.BAD_PAYLOAD);
    invalid(frame(REQUEST, P.MessageType.NICK, 1, [0, 2, 0xc3, 0x28]), P.ErrorCode.BAD_PAYLOAD);
    invalid(frame(REQUEST, P.MessageType.NICK, 1, [0, 3, 0xed, 0xa0, 0x80]), P.ErrorCode.BAD_PAYLOAD); // a surrogate
    const welcome = [0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 5, 0, 0];
    invalid(frame(INDICATION, P.MessageType.WELCOME, 0, welcome), P.ErrorCode.BAD_PAYLOAD);
    welcome[24] = 0; // family 0, no address: valid
    assert.equal(P.decodeFrame(frame(INDICATION, P.MessageType.WELCOME, 0, welcome)).ip, "");
  });

  test("a list count the payload cannot hold is refused before any record is read", () => {
    const payload = [0, 4, 0, 0, 0xff, 0xff, 0xff, 0xff];
    invalid(frame(RESPONSE, 0x40, 3, payload), P.ErrorCode.BAD_PAYLOAD);
  });

  test("after an invalid frame the next one decodes", () => {
    const d = new P.FrameDecoder();
    d.feed(Buffer.concat([frame(REQUEST, 0x3f, 5, [1, 2, 3]), P.encode({ kind: "PingRequest", request_id: 6 })]));
    assert.equal(d.next().kind, "InvalidFrame");
    assert.deepEqual(d.next(), { kind: "PingRequest", request_id: 6 });
    assert.equal(d.next(), null);
  });
});

describe("encoding refuses what the protocol cannot carry", () => {
  const refuses = (msg) => assert.throws(() => P.encode(msg), P.LocalProtocolError);

  test("out of range and missing fields, unknown kinds, bad request ids", () => {
    refuses({ kind: "SendRequest", request_id: 1, target: -1, text: "x" });
    refuses({ kind: "SendRequest", request_id: 1, target: 2 ** 32, text: "x" });
    refuses({ kind: "SendRequest", request_id: 1, target: 1.5, text: "x" });
    refuses({ kind: "SendRequest", request_id: 1, text: "x" });
    refuses({ kind: "Ack", message_id: -1n });
    refuses({ kind: "Ack", message_id: 1n << 64n });
    refuses({ kind: "Ack", message_id: 2 ** 53 });
    refuses({ kind: "NoSuchThing" });
    refuses({ kind: "TimeRequest", request_id: 2 ** 32 });
  });

  test("strings: not a string, a lone surrogate, longer than the length prefix holds", () => {
    refuses({ kind: "NickRequest", request_id: 1, nick: 5 });
    refuses({ kind: "NickRequest", request_id: 1, nick: "a\uD800b" });
    refuses({ kind: "NickRequest", request_id: 1, nick: "é".repeat(32768) }); // 65,536 bytes
    const max = P.encode({ kind: "NickRequest", request_id: 1, nick: "a".repeat(65535) });
    assert.equal(max.length, 14 + 2 + 65535);
  });

  test("u64 and i64 take BigInt or safe Numbers and decode to BigInt", () => {
    const big = P.encode({ kind: "Ack", message_id: (1n << 64n) - 1n });
    assert.equal(P.decodeFrame(big).message_id, (1n << 64n) - 1n);
    assert.equal(P.decodeFrame(P.encode({ kind: "Ack", message_id: 42 })).message_id, 42n);
  });

  test("text round trips: Chinese, emoji, right-to-left, controls", () => {
    for (const text of ["你好，世界", "🎉👩‍💻", "שלום עולם", "مرحبا", "\u202eevil", "a\u0000b", ""]) {
      const bytes = P.encode({ kind: "BroadcastRequest", request_id: 3, room: "lobby", text });
      assert.equal(P.decodeFrame(bytes).text, text);
    }
  });
});

describe("addresses", () => {
  const cases = [
    ["127.0.0.1", "047f000001"],
    ["::1", "06" + "00".repeat(15) + "01"],
    ["::", "06" + "00".repeat(16)],
    ["2001:db8::1", "0620010db8" + "00".repeat(11) + "01"],
    ["fe80::1%eth0", "06fe80" + "00".repeat(13) + "01"],
    ["1:0:1:1:1:1:1:1", "06" + "0001000000010001000100010001" + "0001"],
    ["1:0:0:1:0:0:0:1", "06" + "0001000000000001000000000000" + "0001"],
    ["::ffff:127.0.0.1", "06" + "00".repeat(10) + "ffff7f000001"],
  ];
  for (const [text, hex] of cases) {
    test(`${text} packs as ${hex}`, () => assert.equal(toHex(P.packAddress(text)), hex));
  }

  test("formatting is RFC 5952's: the longest zero run of two or more, lowercase", () => {
    assert.equal(P.formatAddress(fromHex("20010db8" + "00".repeat(11) + "01")), "2001:db8::1");
    assert.equal(P.formatAddress(fromHex("0001000000010001000100010001" + "0001")), "1:0:1:1:1:1:1:1");
    assert.equal(P.formatAddress(fromHex("0001000000000001000000000000" + "0001")), "1:0:0:1::1");
    assert.equal(P.formatAddress(fromHex("00010000000000010000000000010000")), "1::1:0:0:1:0");
    assert.equal(P.formatAddress(fromHex("ABCD".toLowerCase() + "00".repeat(14))), "abcd::");
  });

  test("not addresses", () => {
    for (const bad of ["1.2.3", "256.1.1.1", "01.2.3.4", "1::2::3", "12345::", "localhost", "1:2:3:4:5:6:7:8:9"]) {
      assert.throws(() => P.packAddress(bad), P.LocalProtocolError, bad);
    }
  });
});
