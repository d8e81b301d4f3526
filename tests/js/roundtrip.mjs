// A filter for tests/unit/test_web_javascript.py's round trips: each input line is the hex of
// a byte stream of frames (any number, back to back); each output line is JSON with the
// frames the JavaScript codec decoded from it, each re-encoded by the JavaScript codec.
// 64-bit integers are written as decimal strings.  The Python test compares both with the
// Python codec's view of the same bytes.
import { createInterface } from "node:readline";

import { encode, FrameDecoder, ProtocolError } from "../../src/switchboard/web/static/protocol.js";

const toHex = (bytes) => Buffer.from(bytes).toString("hex");
const plain = (value) => JSON.stringify(value, (_, v) => (typeof v === "bigint" ? v.toString() : v));

for await (const line of createInterface({ input: process.stdin })) {
  const decoder = new FrameDecoder({ maxFrame: 16 * 1024 * 1024 });
  const frames = [];
  let error = null;
  try {
    decoder.feed(Buffer.from(line.trim(), "hex"));
    for (const msg of decoder) {
      if (msg.kind === "InvalidFrame") {
        frames.push({ invalid: msg.error.message, code: msg.error.code });
      } else {
        frames.push({ message: msg, hex: toHex(encode(msg)) });
      }
    }
  } catch (err) {
    if (!(err instanceof ProtocolError)) throw err;
    error = { code: err.code, message: err.message };
  }
  process.stdout.write(plain({ frames, error, buffered: decoder.buffered }) + "\n");
}
