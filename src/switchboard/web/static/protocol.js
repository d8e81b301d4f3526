// The Switchboard protocol in JavaScript: bytes in, messages out; messages in, bytes out.
// No I/O and no DOM here (the page's session.js moves the bytes), so Node runs it as is.
// Written from docs/PROTOCOL.md and checked against the same golden vectors as the Python
// codec (tests/js/protocol.test.mjs, run by tests/unit/test_web_javascript.py).
//
//   encode({kind: "TimeRequest", request_id: 2})        -> Uint8Array (the whole frame)
//   decodeFrame(bytes)        -> one message, for transports that carry one frame per message
//   const d = new FrameDecoder(); d.feed(chunk); for (const ev of d) ...   (a byte stream)
//
// A message is a plain object: ``kind`` (the Python class name), ``request_id``, then the
// payload fields by their names in PROTOCOL.md.  u64 and i64 fields are BigInt (message ids
// and timestamps survive the round trip whole); every other integer is a Number.
//
// Errors, as in switchboard.protocol.errors:
//   ProtocolError       the peer sent bytes we cannot accept (carries an ErrorCode)
//   LocalProtocolError  we were asked to encode something the protocol cannot carry

export const HEADER_SIZE = 14;
export const MAGIC = 0x5342; // "SB"
export const VERSION = 1;
export const DEFAULT_MAX_FRAME = 64 * 1024;
/** What the reference client accepts from its server (PROTOCOL.md, "Maximum frame size"). */
export const CLIENT_MAX_FRAME = 16 * 1024 * 1024;

export const MessageClass = Object.freeze({ REQUEST: 1, RESPONSE: 2, INDICATION: 3 });

export const MessageType = Object.freeze({
  HELLO: 0x01, TIME: 0x02, NAME: 0x03, LIST: 0x04, SEND: 0x05, NICK: 0x06, JOIN: 0x07,
  LEAVE: 0x08, BROADCAST: 0x09, PING_REQUEST: 0x0a, SEND_NICK: 0x0b, ROOMS: 0x0c,
  HISTORY: 0x0d,
  OK: 0x40, ERROR: 0x41,
  WELCOME: 0x80, MESSAGE: 0x81, ACK: 0x82, RECEIPT: 0x83, JOINED: 0x84, LEFT: 0x85,
  PING: 0x86, PONG: 0x87, SHUTDOWN: 0x88, NICK_CHANGED: 0x89, ACKS: 0x8a, RECEIPTS: 0x8b,
});

export const ErrorCode = Object.freeze({
  BAD_FRAME: 1, UNSUPPORTED_VERSION: 2, FRAME_TOO_LARGE: 3, UNKNOWN_TYPE: 4, BAD_PAYLOAD: 5,
  NO_SUCH_CLIENT: 6, SERVER_FULL: 7, RATE_LIMITED: 8, RECIPIENT_BUSY: 9, AUTH_REQUIRED: 10,
  AUTH_FAILED: 11, NICK_IN_USE: 12, INVALID_NICK: 13, NOT_IN_ROOM: 14, TEXT_TOO_LONG: 15,
  SHUTTING_DOWN: 16, INVALID_ROOM: 17, IDLE_TIMEOUT: 18, INTERNAL_ERROR: 19,
  HISTORY_UNAVAILABLE: 20, CLUSTER_UNAVAILABLE: 21,
});

/** Codes after which the sender of the ERROR closes the connection. */
export const CLOSING_CODES = new Set([
  ErrorCode.BAD_FRAME, ErrorCode.UNSUPPORTED_VERSION, ErrorCode.FRAME_TOO_LARGE,
  ErrorCode.SERVER_FULL, ErrorCode.AUTH_REQUIRED, ErrorCode.AUTH_FAILED,
  ErrorCode.SHUTTING_DOWN, ErrorCode.IDLE_TIMEOUT,
]);

const ERROR_NAMES = new Map(Object.entries(ErrorCode).map(([name, code]) => [code, name]));

/** The symbolic name of ``code``, or ``ERROR_<n>`` for a code this version does not know. */
export function errorName(code) {
  return ERROR_NAMES.get(code) ?? `ERROR_${code}`;
}

export const ReceiptStatus = Object.freeze({ DELIVERED: 1, NOT_DELIVERED: 2 });
export const LeftReason = Object.freeze({ LEFT: 1, DISCONNECTED: 2, TIMED_OUT: 3 });
export const MessageFlags = Object.freeze({ NONE: 0, HISTORY: 0x01 });
export const RoomFlags = Object.freeze({ NONE: 0, MEMBER: 0x01 });

export class SwitchboardProtocolError extends Error {}

/** The peer sent something that breaks the protocol; ``code`` says how to answer it. */
export class ProtocolError extends SwitchboardProtocolError {
  constructor(code, message, requestId = 0) {
    super(message);
    this.name = "ProtocolError";
    this.code = code;
    this.requestId = requestId;
  }

  get closesConnection() {
    return CLOSING_CODES.has(this.code);
  }
}

/** A message could not be encoded: a field is out of range, too long or of the wrong type. */
export class LocalProtocolError extends SwitchboardProtocolError {
  constructor(message) {
    super(message);
    this.name = "LocalProtocolError";
  }
}

// --- field kinds ---------------------------------------------------------------------------
// Each kind appends a value to a Writer and reads one back from a DataView at an offset,
// never past ``end`` (the end of the payload).

const INTS = {
  u8: { size: 1, min: 0, max: 0xff, get: (v, o) => v.getUint8(o), set: (v, o, x) => v.setUint8(o, x) },
  u16: { size: 2, min: 0, max: 0xffff, get: (v, o) => v.getUint16(o), set: (v, o, x) => v.setUint16(o, x) },
  u32: { size: 4, min: 0, max: 0xffffffff, get: (v, o) => v.getUint32(o), set: (v, o, x) => v.setUint32(o, x) },
  i32: { size: 4, min: -0x80000000, max: 0x7fffffff, get: (v, o) => v.getInt32(o), set: (v, o, x) => v.setInt32(o, x) },
};
const BIGINTS = {
  u64: { min: 0n, max: (1n << 64n) - 1n, get: (v, o) => v.getBigUint64(o), set: (v, o, x) => v.setBigUint64(o, x) },
  i64: { min: -(1n << 63n), max: (1n << 63n) - 1n, get: (v, o) => v.getBigInt64(o), set: (v, o, x) => v.setBigInt64(o, x) },
};
const STR_PREFIX = { str16: "u16", str32: "u32" };

const utf8Encoder = new TextEncoder();
const utf8Decoder = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });
const LONE_SURROGATE = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/;

class Writer {
  constructor(size = 256) {
    this.bytes = new Uint8Array(size);
    this.view = new DataView(this.bytes.buffer);
    this.length = 0;
  }

  reserve(n) {
    if (this.length + n <= this.bytes.length) return;
    let size = this.bytes.length * 2;
    while (size < this.length + n) size *= 2;
    const bigger = new Uint8Array(size);
    bigger.set(this.bytes.subarray(0, this.length));
    this.bytes = bigger;
    this.view = new DataView(bigger.buffer);
  }

  int(kind, value, what) {
    const spec = INTS[kind];
    if (!Number.isInteger(value) || value < spec.min || value > spec.max) {
      throw new LocalProtocolError(`${what}: ${String(value)} does not fit a ${kind}`);
    }
    this.reserve(spec.size);
    spec.set(this.view, this.length, value);
    this.length += spec.size;
  }

  bigint(kind, value, what) {
    const spec = BIGINTS[kind];
    let big;
    if (typeof value === "bigint") big = value;
    else if (Number.isSafeInteger(value)) big = BigInt(value);
    else throw new LocalProtocolError(`${what}: ${String(value)} does not fit a ${kind}`);
    if (big < spec.min || big > spec.max) {
      throw new LocalProtocolError(`${what}: ${big} does not fit a ${kind}`);
    }
    this.reserve(8);
    spec.set(this.view, this.length, big);
    this.length += 8;
  }

  raw(bytes) {
    this.reserve(bytes.length);
    this.bytes.set(bytes, this.length);
    this.length += bytes.length;
  }

  finish() {
    return this.bytes.slice(0, this.length);
  }
}

function truncated(what) {
  return new ProtocolError(ErrorCode.BAD_PAYLOAD, `payload ends inside the ${what} field`);
}

function writeStr(w, kind, value, what) {
  if (typeof value !== "string") {
    throw new LocalProtocolError(`${what}: ${kind} field needs a string, got ${typeof value}`);
  }
  if (LONE_SURROGATE.test(value)) {
    throw new LocalProtocolError(`${what}: ${kind} field is not valid Unicode (a lone surrogate)`);
  }
  const data = utf8Encoder.encode(value);
  const max = INTS[STR_PREFIX[kind]].max;
  if (data.length > max) {
    throw new LocalProtocolError(`${what}: ${data.length} bytes of UTF-8 do not fit a ${kind} (max ${max})`);
  }
  w.int(STR_PREFIX[kind], data.length, what);
  w.raw(data);
}

function readStr(view, off, end, kind) {
  const prefix = INTS[STR_PREFIX[kind]];
  if (off + prefix.size > end) throw truncated(`${kind} length`);
  const n = prefix.get(view, off);
  off += prefix.size;
  if (off + n > end) throw truncated(kind);
  const bytes = new Uint8Array(view.buffer, view.byteOffset + off, n);
  try {
    return [utf8Decoder.decode(bytes), off + n];
  } catch {
    throw new ProtocolError(ErrorCode.BAD_PAYLOAD, `invalid UTF-8 in ${kind} field`);
  }
}

// --- addresses -------------------------------------------------------------------------------

const ADDR_SIZES = new Map([[0, 0], [4, 4], [6, 16]]);

function parseIPv4(text) {
  const parts = text.split(".");
  if (parts.length !== 4) return null;
  const out = [];
  for (const part of parts) {
    if (!/^(0|[1-9][0-9]{0,2})$/.test(part) || Number(part) > 255) return null;
    out.push(Number(part));
  }
  return out;
}

function parseIPv6(text) {
  let tail = [];
  let head = text;
  const lastColon = text.lastIndexOf(":");
  if (text.includes(".")) { // an embedded IPv4 address in the last 32 bits
    const v4 = parseIPv4(text.slice(lastColon + 1));
    if (v4 === null) return null;
    tail = [(v4[0] << 8) | v4[1], (v4[2] << 8) | v4[3]];
    head = text.slice(0, lastColon + 1);
    if (head.endsWith(":") && !head.endsWith("::")) head = head.slice(0, -1);
  }
  const halves = head.split("::");
  if (halves.length > 2) return null;
  const groups = (s) => (s === "" ? [] : s.split(":"));
  const hextets = (list) => {
    const out = [];
    for (const g of list) {
      if (!/^[0-9a-fA-F]{1,4}$/.test(g)) return null;
      out.push(parseInt(g, 16));
    }
    return out;
  };
  const left = hextets(groups(halves[0]));
  const right = halves.length === 2 ? hextets(groups(halves[1])) : [];
  if (left === null || right === null) return null;
  const given = left.length + right.length + tail.length;
  let all;
  if (halves.length === 2) {
    if (given > 7) return null;
    all = [...left, ...new Array(8 - given).fill(0), ...right, ...tail];
  } else {
    if (given !== 8) return null;
    all = [...left, ...tail];
  }
  const bytes = [];
  for (const h of all) bytes.push(h >> 8, h & 0xff);
  return bytes;
}

/** ``addr`` field bytes for a textual IP address ("" for none; an IPv6 zone id is dropped). */
export function packAddress(ip) {
  if (typeof ip !== "string") throw new LocalProtocolError(`not an IP address: ${String(ip)}`);
  if (ip === "") return Uint8Array.of(0);
  const bare = ip.split("%", 1)[0];
  const v4 = parseIPv4(bare);
  if (v4 !== null) return Uint8Array.of(4, ...v4);
  const v6 = bare.includes(":") ? parseIPv6(bare) : null;
  if (v6 !== null) return Uint8Array.of(6, ...v6);
  throw new LocalProtocolError(`not an IP address: ${JSON.stringify(ip)}`);
}

/** The text of 4 or 16 address bytes: dotted IPv4, or IPv6 as RFC 5952 writes it. */
export function formatAddress(bytes) {
  if (bytes.length === 4) return Array.from(bytes).join(".");
  const h = [];
  for (let i = 0; i < 16; i += 2) h.push((bytes[i] << 8) | bytes[i + 1]);
  if (h.slice(0, 5).every((x) => x === 0) && h[5] === 0xffff) { // IPv4-mapped
    return `::ffff:${bytes[12]}.${bytes[13]}.${bytes[14]}.${bytes[15]}`;
  }
  // The longest run of two or more zero groups (the first of equals) becomes "::".
  let best = -1, bestLen = 0;
  for (let i = 0; i < 8; ) {
    if (h[i] !== 0) { i++; continue; }
    let j = i;
    while (j < 8 && h[j] === 0) j++;
    if (j - i > bestLen) { best = i; bestLen = j - i; }
    i = j;
  }
  const hex = h.map((x) => x.toString(16));
  if (bestLen < 2) return hex.join(":");
  return `${hex.slice(0, best).join(":")}::${hex.slice(best + bestLen).join(":")}`;
}

function readAddr(view, off, end) {
  if (off >= end) throw truncated("addr family");
  const family = view.getUint8(off);
  const size = ADDR_SIZES.get(family);
  if (size === undefined) throw new ProtocolError(ErrorCode.BAD_PAYLOAD, `unknown address family ${family}`);
  off += 1;
  if (off + size > end) throw truncated("addr");
  if (size === 0) return ["", off];
  return [formatAddress(new Uint8Array(view.buffer, view.byteOffset + off, size)), off + size];
}

// --- the messages ------------------------------------------------------------------------------
// Each layout lists the payload fields in wire order as [name, kind]; a list kind names its
// record layout.  The same tables as PROTOCOL.md's (and the Python classes' annotations):
// tests/js/protocol.test.mjs checks the two field by field.

/** Record layouts of the ``list`` kind, with the smallest record's size. */
export const RECORDS = Object.freeze({
  ClientInfo: {
    minSize: 4 + 1 + 2 + 2 + 8,
    fields: [["client_id", "u32"], ["ip", "addr"], ["port", "u16"], ["nick", "str16"], ["connected_ms", "i64"]],
  },
  RoomInfo: {
    minSize: 2 + 4 + 1,
    fields: [["name", "str16"], ["members", "u32"], ["flags", "u8"]],
  },
});

const { REQUEST, RESPONSE, INDICATION } = MessageClass;
const T = MessageType;

/** kind -> {cls, type, answers (OK results: the answered request type), fields}. */
export const MESSAGES = Object.freeze({
  HelloRequest: { cls: REQUEST, type: T.HELLO, fields: [["version", "u16"], ["nick", "str16"], ["token", "str16"]] },
  TimeRequest: { cls: REQUEST, type: T.TIME, fields: [] },
  NameRequest: { cls: REQUEST, type: T.NAME, fields: [] },
  ListRequest: { cls: REQUEST, type: T.LIST, fields: [["room", "str16"]] },
  SendRequest: { cls: REQUEST, type: T.SEND, fields: [["target", "u32"], ["text", "str32"]] },
  NickRequest: { cls: REQUEST, type: T.NICK, fields: [["nick", "str16"]] },
  JoinRequest: { cls: REQUEST, type: T.JOIN, fields: [["room", "str16"]] },
  LeaveRequest: { cls: REQUEST, type: T.LEAVE, fields: [["room", "str16"]] },
  BroadcastRequest: { cls: REQUEST, type: T.BROADCAST, fields: [["room", "str16"], ["text", "str32"]] },
  PingRequest: { cls: REQUEST, type: T.PING_REQUEST, fields: [] },
  SendNickRequest: { cls: REQUEST, type: T.SEND_NICK, fields: [["nick", "str16"], ["text", "str32"]] },
  RoomsRequest: { cls: REQUEST, type: T.ROOMS, fields: [["after", "str16"]] },
  HistoryRequest: {
    cls: REQUEST, type: T.HISTORY,
    fields: [["room", "str16"], ["mode", "u8"], ["anchor", "u64"], ["until", "u64"], ["limit", "u16"]],
  },

  HelloOk: { cls: RESPONSE, type: T.OK, answers: T.HELLO, fields: [["version", "u16"], ["client_id", "u32"], ["nick", "str16"]] },
  TimeOk: { cls: RESPONSE, type: T.OK, answers: T.TIME, fields: [["epoch_ms", "i64"], ["utc_offset_s", "i32"], ["zone", "str16"]] },
  NameOk: { cls: RESPONSE, type: T.OK, answers: T.NAME, fields: [["name", "str16"]] },
  ListOk: { cls: RESPONSE, type: T.OK, answers: T.LIST, fields: [["room", "str16"], ["clients", "list:ClientInfo"]] },
  SendOk: { cls: RESPONSE, type: T.OK, answers: T.SEND, fields: [["message_id", "u64"], ["target", "u32"]] },
  SendNickOk: { cls: RESPONSE, type: T.OK, answers: T.SEND_NICK, fields: [["message_id", "u64"], ["target", "u32"]] },
  RoomsOk: { cls: RESPONSE, type: T.OK, answers: T.ROOMS, fields: [["total", "u32"], ["more", "u8"], ["rooms", "list:RoomInfo"]] },
  NickOk: { cls: RESPONSE, type: T.OK, answers: T.NICK, fields: [["nick", "str16"]] },
  JoinOk: { cls: RESPONSE, type: T.OK, answers: T.JOIN, fields: [["room", "str16"], ["members", "u32"], ["history", "u32"]] },
  LeaveOk: { cls: RESPONSE, type: T.OK, answers: T.LEAVE, fields: [["room", "str16"]] },
  BroadcastOk: { cls: RESPONSE, type: T.OK, answers: T.BROADCAST, fields: [["message_id", "u64"], ["reached", "u32"]] },
  PingOk: { cls: RESPONSE, type: T.OK, answers: T.PING_REQUEST, fields: [] },
  HistoryOk: {
    cls: RESPONSE, type: T.OK, answers: T.HISTORY,
    fields: [["room", "str16"], ["epoch", "u64"], ["more", "u8"], ["count", "u32"]],
  },
  ErrorResponse: { cls: RESPONSE, type: T.ERROR, fields: [["code", "u16"], ["name", "str16"], ["message", "str16"]] },

  Welcome: {
    cls: INDICATION, type: T.WELCOME,
    fields: [["client_id", "u32"], ["server_name", "str16"], ["version", "u16"], ["heartbeat_ms", "u32"],
      ["max_frame", "u32"], ["max_text", "u32"], ["max_clients", "u32"], ["ip", "addr"], ["port", "u16"]],
  },
  Message: {
    cls: INDICATION, type: T.MESSAGE,
    fields: [["message_id", "u64"], ["sender_id", "u32"], ["sender_ip", "addr"], ["sender_port", "u16"],
      ["sender_nick", "str16"], ["room", "str16"], ["sent_ms", "i64"], ["flags", "u8"], ["text", "str32"]],
  },
  Ack: { cls: INDICATION, type: T.ACK, fields: [["message_id", "u64"]] },
  Receipt: { cls: INDICATION, type: T.RECEIPT, fields: [["message_id", "u64"], ["target", "u32"], ["status", "u8"]] },
  Joined: { cls: INDICATION, type: T.JOINED, fields: [["room", "str16"], ["client_id", "u32"], ["nick", "str16"]] },
  Left: { cls: INDICATION, type: T.LEFT, fields: [["room", "str16"], ["client_id", "u32"], ["nick", "str16"], ["reason", "u8"]] },
  Ping: { cls: INDICATION, type: T.PING, fields: [] },
  Pong: { cls: INDICATION, type: T.PONG, fields: [] },
  Shutdown: { cls: INDICATION, type: T.SHUTDOWN, fields: [["reason", "str16"]] },
  NickChanged: { cls: INDICATION, type: T.NICK_CHANGED, fields: [["client_id", "u32"], ["old_nick", "str16"], ["new_nick", "str16"]] },
  Acks: { cls: INDICATION, type: T.ACKS, fields: [["message_ids", "ids"]] },
  Receipts: { cls: INDICATION, type: T.RECEIPTS, fields: [["target", "u32"], ["status", "u8"], ["message_ids", "ids"]] },
});

/** Field defaults a caller may leave out (as the Python classes' defaults). */
const DEFAULTS = Object.freeze({
  HelloRequest: { version: VERSION, nick: "", token: "" },
  ListRequest: { room: "" },
  RoomsRequest: { after: "" },
  HistoryRequest: { mode: 1, anchor: 0n, until: 0n, limit: 0 },
});

const DECODERS = new Map(); // (class << 16 | type) -> kind, for everything but OK
const OK_DECODERS = new Map(); // answered request type -> kind
for (const [kind, spec] of Object.entries(MESSAGES)) {
  if (spec.answers !== undefined) OK_DECODERS.set(spec.answers, kind);
  else DECODERS.set((spec.cls << 16) | spec.type, kind);
}

function writeFields(w, fields, obj, owner) {
  for (const [name, kind] of fields) {
    const what = `${owner}.${name}`;
    const value = obj[name];
    if (value === undefined) throw new LocalProtocolError(`${what} is missing`);
    if (kind in INTS) w.int(kind, value, what);
    else if (kind in BIGINTS) w.bigint(kind, value, what);
    else if (kind in STR_PREFIX) writeStr(w, kind, value, what);
    else if (kind === "addr") w.raw(packAddress(value));
    else if (kind === "ids") {
      // ACKS, RECEIPTS: a u32 count, then that many u64 message ids (BigInt).
      if (!Array.isArray(value)) throw new LocalProtocolError(`${what} needs an array of ids`);
      w.int("u32", value.length, what);
      for (const id of value) w.bigint("u64", id, what);
    } else {
      const record = kind.slice("list:".length);
      if (!Array.isArray(value)) throw new LocalProtocolError(`${what} needs an array of ${record}`);
      w.int("u32", value.length, what);
      for (const item of value) writeFields(w, RECORDS[record].fields, item, record);
    }
  }
}

function readFields(view, off, end, fields, out) {
  for (const [name, kind] of fields) {
    if (kind in INTS) {
      const spec = INTS[kind];
      if (off + spec.size > end) throw truncated(name);
      out[name] = spec.get(view, off);
      off += spec.size;
    } else if (kind in BIGINTS) {
      if (off + 8 > end) throw truncated(name);
      out[name] = BIGINTS[kind].get(view, off);
      off += 8;
    } else if (kind in STR_PREFIX) {
      [out[name], off] = readStr(view, off, end, kind);
    } else if (kind === "addr") {
      [out[name], off] = readAddr(view, off, end);
    } else if (kind === "ids") {
      if (off + 4 > end) throw truncated(name);
      const count = view.getUint32(off);
      off += 4;
      // Refuse a count the remaining bytes cannot hold before looping over it.
      if (count * 8 > end - off) throw truncated("ids");
      const ids = [];
      for (let i = 0; i < count; i++, off += 8) ids.push(BIGINTS.u64.get(view, off));
      out[name] = ids;
    } else {
      const record = RECORDS[kind.slice("list:".length)];
      if (off + 4 > end) throw truncated(name);
      const count = view.getUint32(off);
      off += 4;
      // Refuse a count the remaining bytes cannot hold before looping over it.
      if (count * record.minSize > end - off) throw truncated(`list of ${kind.slice(5)}`);
      const items = [];
      for (let i = 0; i < count; i++) {
        const item = {};
        off = readFields(view, off, end, record.fields, item);
        items.push(item);
      }
      out[name] = items;
    }
  }
  return off;
}

/** The whole frame (header and payload) for ``msg`` ({kind, request_id, ...fields}). */
export function encode(msg) {
  const spec = MESSAGES[msg?.kind];
  if (spec === undefined) throw new LocalProtocolError(`${msg?.kind} is not a known message`);
  const requestId = msg.request_id ?? 0;
  if (!Number.isInteger(requestId) || requestId < 0 || requestId > 0xffffffff) {
    throw new LocalProtocolError(`request id ${requestId} does not fit a u32`);
  }
  const w = new Writer();
  w.length = HEADER_SIZE;
  if (spec.answers !== undefined) w.int("u16", spec.answers, `${msg.kind} answered type`);
  writeFields(w, spec.fields, { ...DEFAULTS[msg.kind], ...msg }, msg.kind);
  const v = w.view;
  v.setUint16(0, MAGIC);
  v.setUint8(2, VERSION);
  v.setUint8(3, spec.cls);
  v.setUint16(4, spec.type);
  v.setUint32(6, requestId);
  v.setUint32(10, w.length - HEADER_SIZE);
  return w.finish();
}

/** A header that cannot be accepted: the ProtocolError a receiver answers and closes with. */
function headerError(view, off, maxFrame) {
  const magic = view.getUint16(off);
  const version = view.getUint8(off + 2);
  const mclass = view.getUint8(off + 3);
  const requestId = view.getUint32(off + 6);
  const length = view.getUint32(off + 10);
  const hex = (n) => `0x${n.toString(16).padStart(4, "0")}`;
  if (magic !== MAGIC) {
    return new ProtocolError(ErrorCode.BAD_FRAME, `bad magic ${hex(magic)} (expected ${hex(MAGIC)})`);
  }
  if (version !== VERSION) {
    return new ProtocolError(ErrorCode.UNSUPPORTED_VERSION,
      `protocol version ${version} is not supported (this peer speaks ${VERSION})`, requestId);
  }
  if (length > maxFrame - HEADER_SIZE) {
    return new ProtocolError(ErrorCode.FRAME_TOO_LARGE,
      `frame of ${HEADER_SIZE + length} bytes exceeds the maximum of ${maxFrame}`, requestId);
  }
  if (mclass < REQUEST || mclass > INDICATION) {
    return new ProtocolError(ErrorCode.BAD_FRAME, `unknown message class ${mclass}`, requestId);
  }
  return null;
}

/** The message, or an InvalidFrame ({kind: "InvalidFrame", ..., error}) when the frame is
 * well delimited but its type or payload is not acceptable (the stream goes on). */
function decodePayload(view, start, end) {
  const mclass = view.getUint8(start - HEADER_SIZE + 3);
  const mtype = view.getUint16(start - HEADER_SIZE + 4);
  const requestId = view.getUint32(start - HEADER_SIZE + 6);
  const invalid = (error) => {
    error.requestId = requestId;
    return { kind: "InvalidFrame", message_class: mclass, message_type: mtype, request_id: requestId, error };
  };
  let kind;
  if (mclass === RESPONSE && mtype === T.OK) {
    if (end - start < 2) {
      return invalid(new ProtocolError(ErrorCode.BAD_PAYLOAD, "OK payload lacks the answered request type"));
    }
    kind = OK_DECODERS.get(view.getUint16(start));
    start += 2;
  } else {
    kind = DECODERS.get((mclass << 16) | mtype);
  }
  if (kind === undefined) {
    return invalid(new ProtocolError(ErrorCode.UNKNOWN_TYPE,
      `unknown message type 0x${mtype.toString(16).padStart(2, "0")} in class ${mclass}`));
  }
  const msg = { kind, request_id: requestId };
  try {
    const off = readFields(view, start, end, MESSAGES[kind].fields, msg);
    if (off !== end) {
      throw new ProtocolError(ErrorCode.BAD_PAYLOAD,
        `${end - off} unexpected byte(s) after the last field of ${kind}`);
    }
  } catch (err) {
    if (err instanceof ProtocolError) return invalid(err);
    throw err;
  }
  return msg;
}

function viewOf(bytes) {
  if (bytes instanceof ArrayBuffer) bytes = new Uint8Array(bytes);
  return new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}

/** Exactly one frame (a WebSocket binary message): the message or an InvalidFrame.  Throws a
 * ProtocolError for a header that cannot be accepted or bytes that are not one whole frame. */
export function decodeFrame(bytes, { maxFrame = CLIENT_MAX_FRAME } = {}) {
  const view = viewOf(bytes);
  if (view.byteLength < HEADER_SIZE) {
    throw new ProtocolError(ErrorCode.BAD_FRAME, `${view.byteLength} bytes are shorter than a frame header`);
  }
  const bad = headerError(view, 0, maxFrame);
  if (bad !== null) throw bad;
  const length = view.getUint32(10);
  if (HEADER_SIZE + length !== view.byteLength) {
    throw new ProtocolError(ErrorCode.BAD_FRAME,
      `the header announces ${HEADER_SIZE + length} bytes, the message holds ${view.byteLength}`,
      view.getUint32(6));
  }
  return decodePayload(view, HEADER_SIZE, view.byteLength);
}

/** Incremental decoder for a byte stream: ``feed`` any chunk, iterate complete events.
 * A fatal header ProtocolError is thrown from the iteration after every frame before it;
 * from then on the decoder throws the same error again on every call. */
export class FrameDecoder {
  constructor({ maxFrame = DEFAULT_MAX_FRAME } = {}) {
    if (maxFrame < HEADER_SIZE) throw new RangeError(`maxFrame must be at least ${HEADER_SIZE}`);
    this.maxFrame = maxFrame;
    this._buf = new Uint8Array(0);
    this._pos = 0;
    this._error = null;
  }

  /** Bytes received but not yet decoded (a partial frame). */
  get buffered() {
    return this._buf.length - this._pos;
  }

  feed(chunk) {
    if (this._error !== null) throw this._error;
    const data = chunk instanceof ArrayBuffer ? new Uint8Array(chunk) : chunk;
    const rest = this._buf.subarray(this._pos);
    const joined = new Uint8Array(rest.length + data.length);
    joined.set(rest);
    joined.set(data, rest.length);
    this._buf = joined;
    this._pos = 0;
  }

  /** The next complete event, or null when more data is needed. */
  next() {
    if (this._error !== null) throw this._error;
    const buf = this._buf;
    if (buf.length - this._pos < HEADER_SIZE) return null;
    const view = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
    const bad = headerError(view, this._pos, this.maxFrame);
    if (bad !== null) {
      this._error = bad;
      this._buf = new Uint8Array(0);
      this._pos = 0;
      throw bad;
    }
    const start = this._pos + HEADER_SIZE;
    const end = start + view.getUint32(this._pos + 10);
    if (end > buf.length) return null;
    this._pos = end;
    return decodePayload(view, start, end);
  }

  *[Symbol.iterator]() {
    for (let event = this.next(); event !== null; event = this.next()) yield event;
  }
}
