// The web chat page: draws what the Session (session.js) hears and sends what the person
// types.  Every string a peer chose (nicknames, room names, texts, even the server's name and
// error messages) reaches the page through textContent, never as HTML.

import { ErrorCode, LeftReason, MessageFlags, ReceiptStatus } from "./protocol.js";
import { ConnectionLost, defaultUrl, RequestError, Session } from "./session.js";

const $ = (id) => document.getElementById(id);

/** An element with text content and attributes; children appended in order. */
function el(tag, { cls, text, attrs } = {}, ...children) {
  const node = document.createElement(tag);
  if (cls) node.className = cls;
  if (text !== undefined) node.textContent = text;
  for (const [name, value] of Object.entries(attrs ?? {})) node.setAttribute(name, value);
  for (const child of children) node.append(child);
  return node;
}

const pad = (n) => String(n).padStart(2, "0");

function timeOf(ms) {
  const d = new Date(ms);
  return el("time", {
    text: `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`,
    attrs: { datetime: d.toISOString(), title: d.toLocaleString() },
  });
}

/** A nickname isolated from the text around it (right-to-left names stay whole). */
function nickNode(nick, id) {
  return el("bdi", { cls: "nick", text: nick || `#${id}`, attrs: { "data-client-id": String(id) } });
}

function hostPort(ip, port) {
  return ip.includes(":") ? `[${ip}]:${port}` : `${ip}:${port}`;
}

function utf8Length(text) {
  return new TextEncoder().encode(text).length;
}

/** What went wrong, in words; the server's own message follows where it says more. */
function inWords(err) {
  if (err instanceof ConnectionLost) return `Not sent: ${err.message}.`;
  if (!(err instanceof RequestError)) return `Something went wrong: ${err.message}`;
  const words = {
    [ErrorCode.NICK_IN_USE]: "That nickname is taken: choose another one.",
    [ErrorCode.INVALID_NICK]: "That nickname cannot be used",
    [ErrorCode.INVALID_ROOM]: "That room cannot be joined",
    [ErrorCode.NO_SUCH_CLIENT]: "Nobody with that id is connected any more.",
    [ErrorCode.RECIPIENT_BUSY]: "They are not reading their messages right now: try again later.",
    [ErrorCode.TEXT_TOO_LONG]: "The message is too long",
    [ErrorCode.RATE_LIMITED]: "You are sending too fast: wait a moment and try again.",
    [ErrorCode.NOT_IN_ROOM]: "You are not in that room.",
    [ErrorCode.AUTH_REQUIRED]: "This server needs a token.",
    [ErrorCode.AUTH_FAILED]: "The server refused that token.",
    [ErrorCode.SERVER_FULL]: "The server is full",
    [ErrorCode.SHUTTING_DOWN]: "The server is stopping.",
    [ErrorCode.INTERNAL_ERROR]: "The server hit a bug answering that",
  }[err.code];
  if (words === undefined) return `The server refused: ${err.codeName} (${err.message})`;
  return words.endsWith(".") ? words : `${words}: ${err.message}`;
}

const LEFT_WORDS = {
  [LeftReason.LEFT]: "left",
  [LeftReason.DISCONNECTED]: "disconnected",
  [LeftReason.TIMED_OUT]: "timed out",
};

const RECEIPT_MARKS = {
  sending: ["…", "sending"],
  forwarded: ["✓", "forwarded"],
  delivered: ["✓✓", "delivered"],
  "not-delivered": ["✗", "not delivered"],
  failed: ["✗", "not sent"],
};

// --- state -------------------------------------------------------------------------------------

const page = {
  session: new Session(defaultUrl(window.location)),
  nick: localStorage.getItem("switchboard.nick") ?? "",
  token: "",
  loginWanted: false, // the person asked to connect; HELLO goes out on every WELCOME
  loggedIn: false,
  me: null, // our client id on this connection
  myNick: "",
  conversations: new Map(), // "room:<name>" | "direct:<id>" -> conversation
  active: null,
  clients: [],
  sent: new Map(), // message id (BigInt) -> the receipt mark of a direct message we sent
  clock: null, // {serverMs, at (performance.now()), utcOffsetS, zone}
  retryTick: null,
};

function conversation(key, make) {
  let conv = page.conversations.get(key);
  if (conv === undefined) {
    conv = make();
    conv.key = key;
    conv.list = el("ol", { cls: "lines", attrs: { "data-conversation": key } });
    conv.unread = 0;
    conv.seen = new Set(); // message ids (with their time) already shown: a rejoin replays history
    page.conversations.set(key, conv);
    drawConversationLists();
  }
  return conv;
}

const roomConversation = (room) =>
  conversation(`room:${room}`, () => ({ kind: "room", room, members: new Map(), joined: false }));

const directConversation = (id, nick) => {
  const conv = conversation(`direct:${id}`, () => ({ kind: "direct", peerId: id, peerNick: nick }));
  if (nick) conv.peerNick = nick;
  return conv;
};

function title(conv) {
  return conv.kind === "room" ? `#${conv.room}` : `${conv.peerNick || "client"} (#${conv.peerId})`;
}

// --- drawing -----------------------------------------------------------------------------------

/** Lines kept per conversation: a page left open for days stays a page, not a leak. */
const MAX_LINES = 5000;

function addLine(conv, node) {
  const list = conv.list;
  const stick = list.parentNode !== null && isAtBottom();
  list.append(node);
  while (list.childElementCount > MAX_LINES) list.firstElementChild.remove();
  while (conv.seen.size > MAX_LINES) conv.seen.delete(conv.seen.values().next().value);
  if (conv !== page.active) {
    conv.unread += 1;
    drawConversationLists();
  } else if (stick) {
    node.scrollIntoView({ block: "end" });
  }
}

function isAtBottom() {
  const box = $("lines");
  return box.scrollHeight - box.scrollTop - box.clientHeight < 40;
}

function notice(conv, text, ms = Date.now(), cls = "") {
  addLine(conv, el("li", { cls: `notice ${cls}`.trim() }, timeOf(ms), " ", el("span", { cls: "text", text, attrs: { dir: "auto" } })));
}

/** A notice naming a client: the name as its own isolated node, never spliced into a string. */
function noticeAbout(conv, id, nick, after, ms = Date.now()) {
  addLine(conv, el("li", { cls: "notice" }, timeOf(ms), " ", nickNode(nick, id), " ", el("span", { cls: "text", text: after })));
}

// Inside a message, shown as visible escapes as the terminal clients show them
// (switchboard.protocol.printable): control characters other than tab and newline, and the
// bidi embeddings, overrides and isolates that would reorder what follows them ("gpj.exe"
// passing for "exe.jpg").  Each text is isolated besides (unicode-bidi: plaintext), so
// nothing in it can reach the line around it; the invisible direction marks stay.
const HIDDEN_CONTROLS = /[\u0000-\u0008\u000b-\u001f\u007f-\u009f\u202a-\u202e\u2066-\u2069]/g;
const SHORT_ESCAPES = { 0x0d: "\\r" };

function escapedControl(code) {
  const hex = code.toString(16);
  return SHORT_ESCAPES[code] ?? (code <= 0xff ? `\\x${hex.padStart(2, "0")}` : `\\u${hex.padStart(4, "0")}`);
}

/** A message text as a span of text nodes, its hidden controls as visible escapes. */
function textNode(text) {
  const span = el("span", { cls: "text", attrs: { dir: "auto" } });
  let last = 0;
  for (const match of text.matchAll(HIDDEN_CONTROLS)) {
    if (match.index > last) span.append(text.slice(last, match.index));
    const code = match[0].codePointAt(0);
    const title = `U+${code.toString(16).toUpperCase().padStart(4, "0")}, shown as an escape`;
    span.append(el("span", { cls: "escape", text: escapedControl(code), attrs: { title } }));
    last = match.index + 1;
  }
  if (last < text.length) span.append(text.slice(last));
  return span;
}

function messageLine({ ms, id, nick, text, mine = false, history = false, messageId }) {
  const li = el(
    "li",
    { cls: ["line", mine ? "mine" : "", history ? "history" : ""].filter(Boolean).join(" ") },
    timeOf(ms),
    " ",
    nickNode(nick, id),
    " ",
    textNode(text),
  );
  if (messageId !== undefined) li.dataset.messageId = String(messageId);
  return li;
}

function setMark(mark, status, detail = "") {
  const [symbol, words] = RECEIPT_MARKS[status];
  mark.dataset.status = status;
  mark.textContent = symbol;
  mark.title = detail ? `${words}: ${detail}` : words;
  mark.setAttribute("aria-label", mark.title);
}

function drawConversationLists() {
  let unread = 0;
  for (const conv of page.conversations.values()) unread += conv.unread;
  document.title = unread > 0 ? `(${unread}) Switchboard` : "Switchboard"; // seen from other tabs
  const rooms = $("room-list");
  const directs = $("direct-list");
  rooms.replaceChildren();
  directs.replaceChildren();
  for (const conv of page.conversations.values()) {
    const button = el("button", { cls: "conversation", attrs: { type: "button", "data-key": conv.key, dir: "auto" } });
    button.append(el("bdi", { text: title(conv) }));
    if (conv.kind === "room") button.append(el("span", { cls: "count", text: ` ${conv.members.size}` }));
    if (conv.unread > 0) button.append(el("span", { cls: "unread", text: String(conv.unread) }));
    if (conv === page.active) button.setAttribute("aria-current", "true");
    button.addEventListener("click", () => activate(conv));
    (conv.kind === "room" ? rooms : directs).append(el("li", {}, button));
  }
}

function drawMembers() {
  const conv = page.active;
  const box = $("members-box");
  if (conv === null || conv.kind !== "room") {
    box.hidden = true;
    return;
  }
  box.hidden = false;
  $("member-count").textContent = String(conv.members.size);
  const ids = [...conv.members.keys()].sort((a, b) => a - b);
  $("members").replaceChildren(
    ...ids.map((id) => el("li", {}, nickNode(conv.members.get(id), id), el("span", { cls: "id", text: ` #${id}` }))),
  );
}

function activate(conv) {
  page.active = conv;
  conv.unread = 0;
  $("conversation-title").textContent = title(conv);
  $("conversation-empty").hidden = true;
  $("lines").replaceChildren(conv.list);
  $("composer").hidden = false;
  $("leave-room").hidden = conv.kind !== "room";
  $("text").placeholder = conv.kind === "room" ? `Message #${conv.room}` : `Message ${conv.peerNick || `#${conv.peerId}`}`;
  drawConversationLists();
  drawMembers();
  closeMenu();
  $("lines").scrollTop = $("lines").scrollHeight;
  $("text").focus();
}

$("error").addEventListener("click", () => showError("")); // read: dismissed

function showError(text) {
  const box = $("error");
  box.textContent = text;
  box.hidden = !text;
}

function drawClients() {
  const rows = page.clients.map((c) => {
    const button = el("button", {
      cls: "message-client", text: "✉",
      attrs: { type: "button", "data-client-id": String(c.client_id), title: `Message #${c.client_id}`, "aria-label": `Message #${c.client_id}` },
    });
    button.addEventListener("click", () => activate(directConversation(c.client_id, c.nick)));
    const tr = el("tr", { attrs: { "data-client-id": String(c.client_id) } },
      el("td", { text: String(c.client_id) }),
      el("td", {}, nickNode(c.nick, c.client_id), c.client_id === page.me ? el("span", { cls: "you", text: " (you)" }) : ""),
      el("td", { cls: "address", text: hostPort(c.ip, c.port) }),
      el("td", {}, button));
    return tr;
  });
  $("clients").tBodies[0].replaceChildren(...rows);
}

function drawClock() {
  const c = page.clock;
  if (c === null) {
    $("server-time").textContent = "";
    return;
  }
  // The server's wall clock in its own zone: its UTC time moved by its offset, shown as UTC.
  const serverNow = c.serverMs + (performance.now() - c.at);
  const d = new Date(serverNow + c.utcOffsetS * 1000);
  const text = `${pad(d.getUTCHours())}:${pad(d.getUTCMinutes())}:${pad(d.getUTCSeconds())} ${c.zone}`;
  $("server-time").textContent = text;
  $("server-time").setAttribute("datetime", new Date(serverNow).toISOString());
}

// --- the session -------------------------------------------------------------------------------

const session = page.session;

async function login() {
  try {
    const ok = await session.request({ kind: "HelloRequest", nick: page.nick, token: page.token });
    page.me = ok.client_id;
    page.myNick = ok.nick;
    page.loggedIn = true;
  } catch (err) {
    if (err instanceof ConnectionLost) return; // the next WELCOME tries again
    page.loggedIn = false;
    if (err.code === ErrorCode.AUTH_REQUIRED || err.code === ErrorCode.AUTH_FAILED) {
      // The server closes after these: wait for the person rather than retry a wrong token.
      session.stop(err.code === ErrorCode.AUTH_FAILED ? "the token was refused" : "a token is needed");
      $("token-row").hidden = false;
      if (!page.token) {
        showLogin("This server needs a token: enter it below.");
        return;
      }
    }
    showLogin(inWords(err));
    return;
  }
  drawMe();
  if ($("login").open) $("login").close();
  try {
    const [name, time] = await Promise.all([
      session.request({ kind: "NameRequest" }),
      session.request({ kind: "TimeRequest" }),
    ]);
    $("server-name").textContent = name.name;
    page.clock = { serverMs: Number(time.epoch_ms), at: performance.now(), utcOffsetS: time.utc_offset_s, zone: time.zone };
    drawClock();
    await refreshClients();
    for (const conv of page.conversations.values()) {
      if (conv.kind === "room" && conv.joined) await join(conv.room, { rejoin: true });
    }
  } catch (err) {
    if (!(err instanceof ConnectionLost)) showError(inWords(err));
  }
}

function drawMe() {
  $("me").textContent = page.myNick;
  $("me").title = `you are client #${page.me}`;
  $("change-nick").hidden = !page.loggedIn;
}

async function changeNick(nick) {
  try {
    const ok = await session.request({ kind: "NickRequest", nick });
    page.nick = page.myNick = ok.nick;
    localStorage.setItem("switchboard.nick", ok.nick);
    drawMe();
    if ($("login").open) $("login").close();
    refreshClientsSoon();
  } catch (err) {
    showLogin(inWords(err));
  }
}

async function refreshClients() {
  if (!page.loggedIn) return;
  try {
    const ok = await session.request({ kind: "ListRequest", room: "" });
    page.clients = ok.clients;
    drawClients();
  } catch (err) {
    if (!(err instanceof ConnectionLost)) showError(inWords(err));
  }
}

let clientsRefresh = null;
function refreshClientsSoon() {
  if (clientsRefresh !== null) return;
  clientsRefresh = setTimeout(() => {
    clientsRefresh = null;
    refreshClients();
  }, 200);
}

async function refreshMembers(conv) {
  const ok = await session.request({ kind: "ListRequest", room: conv.room });
  conv.members = new Map(ok.clients.map((c) => [c.client_id, c.nick]));
  drawConversationLists();
  if (conv === page.active) drawMembers();
}

async function join(room, { rejoin = false } = {}) {
  try {
    const ok = await session.request({ kind: "JoinRequest", room });
    const conv = roomConversation(ok.room); // the name as the server keeps it (NFC, first spelling)
    conv.joined = true;
    notice(conv, rejoin ? `rejoined #${ok.room}` : `you joined #${ok.room} (${ok.members} here)`);
    await refreshMembers(conv);
    if (!rejoin) activate(conv);
    if ([...conv.members.keys()].some((id) => !page.clients.some((c) => c.client_id === id))) refreshClientsSoon();
  } catch (err) {
    if (!(err instanceof ConnectionLost)) showError(inWords(err));
  }
}

async function leave(conv) {
  try {
    await session.request({ kind: "LeaveRequest", room: conv.room });
  } catch (err) {
    if (err instanceof ConnectionLost || err.code !== ErrorCode.NOT_IN_ROOM) {
      showError(inWords(err));
      return;
    }
  }
  page.conversations.delete(conv.key);
  if (page.active === conv) {
    page.active = null;
    $("lines").replaceChildren();
    $("conversation-title").textContent = "Welcome";
    $("conversation-empty").hidden = false;
    $("composer").hidden = true;
    $("leave-room").hidden = true;
  }
  drawConversationLists();
  drawMembers();
}

async function sendText(conv, text) {
  const maxText = session.welcome?.max_text;
  if (maxText !== undefined && utf8Length(text) > maxText) {
    showError(`The message is too long: ${utf8Length(text)} bytes of UTF-8, at most ${maxText}.`);
    return false;
  }
  showError("");
  if (conv.kind === "room") {
    const line = messageLine({ ms: Date.now(), id: page.me, nick: page.myNick, text, mine: true });
    const mark = el("span", { cls: "receipt" });
    setMark(mark, "sending");
    line.append(" ", mark);
    addLine(conv, line);
    try {
      const ok = await session.request({ kind: "BroadcastRequest", room: conv.room, text });
      line.dataset.messageId = String(ok.message_id);
      conv.seen.add(`mine:${ok.message_id}:${text}`); // a rejoin's history replays it
      mark.dataset.status = "reached";
      mark.textContent = `✓ ${ok.reached}`;
      mark.title = `sent to ${ok.reached} other member${ok.reached === 1 ? "" : "s"}`;
      mark.setAttribute("aria-label", mark.title);
    } catch (err) {
      setMark(mark, "failed", inWords(err));
      showError(inWords(err));
    }
    return true;
  }
  const line = messageLine({ ms: Date.now(), id: page.me, nick: page.myNick, text, mine: true });
  const mark = el("span", { cls: "receipt" });
  setMark(mark, "sending");
  line.append(" ", mark);
  addLine(conv, line);
  try {
    const ok = await session.request({ kind: "SendRequest", target: conv.peerId, text });
    line.dataset.messageId = String(ok.message_id);
    // A RECEIPT may already be here only if it overtook its SendOk, which the server's
    // in-order answers rule out; set "forwarded" unless a later state arrived.
    if (mark.dataset.status === "sending") setMark(mark, "forwarded");
    page.sent.set(ok.message_id, mark);
  } catch (err) {
    setMark(mark, "failed", inWords(err));
    showError(inWords(err));
    if (err.code === ErrorCode.NO_SUCH_CLIENT) refreshClientsSoon(); // the list is out of date
  }
  return true;
}

function onMessage(m) {
  const history = (m.flags & MessageFlags.HISTORY) !== 0;
  let conv;
  if (m.room === "") {
    conv = directConversation(m.sender_id, m.sender_nick);
  } else {
    conv = page.conversations.get(`room:${m.room}`);
    if (conv === undefined) return; // a room we left since
  }
  if (!page.clients.some((c) => c.client_id === m.sender_id)) refreshClientsSoon();
  const seenKey = `${m.message_id}:${m.sent_ms}`;
  if (conv.seen.has(seenKey) || (history && conv.seen.has(`mine:${m.message_id}:${m.text}`))) {
    return; // history replayed again on a rejoin, or our own line
  }
  conv.seen.add(seenKey);
  addLine(conv, messageLine({
    ms: Number(m.sent_ms), id: m.sender_id, nick: m.sender_nick, text: m.text,
    history, messageId: m.message_id,
  }));
}

function onIndication(m) {
  switch (m.kind) {
    case "Message":
      onMessage(m);
      break;
    case "Receipt": {
      const mark = page.sent.get(m.message_id);
      if (mark === undefined) break;
      page.sent.delete(m.message_id);
      setMark(mark, m.status === ReceiptStatus.DELIVERED ? "delivered" : "not-delivered");
      break;
    }
    case "Joined": {
      const conv = page.conversations.get(`room:${m.room}`);
      if (conv === undefined) break;
      conv.members.set(m.client_id, m.nick);
      noticeAbout(conv, m.client_id, m.nick, `joined #${m.room}`);
      drawConversationLists();
      if (conv === page.active) drawMembers();
      refreshClientsSoon();
      break;
    }
    case "Left": {
      const conv = page.conversations.get(`room:${m.room}`);
      if (conv === undefined) break;
      conv.members.delete(m.client_id);
      noticeAbout(conv, m.client_id, m.nick, `${LEFT_WORDS[m.reason] ?? "left"} (#${m.room})`);
      drawConversationLists();
      if (conv === page.active) drawMembers();
      refreshClientsSoon();
      break;
    }
    case "NickChanged": {
      for (const conv of page.conversations.values()) {
        const shared = conv.kind === "room" ? conv.members.has(m.client_id) : conv.peerId === m.client_id;
        if (!shared) continue;
        if (conv.kind === "room") conv.members.set(m.client_id, m.new_nick);
        else conv.peerNick = m.new_nick;
        addLine(conv, el("li", { cls: "notice" }, timeOf(Date.now()), " ", nickNode(m.old_nick, m.client_id), " ",
          el("span", { cls: "text" }, "is now known as ", nickNode(m.new_nick, m.client_id))));
      }
      drawConversationLists();
      drawMembers();
      refreshClientsSoon();
      break;
    }
    case "Shutdown":
      for (const conv of page.conversations.values()) notice(conv, `the server is stopping: ${m.reason}`, Date.now(), "warning");
      break;
    default:
      break; // Ping is answered by the session; unknown kinds are ignored
  }
}

function setStatus(text, cls) {
  const status = $("status");
  status.textContent = text;
  status.dataset.state = cls;
}

session.addEventListener("state", ({ detail }) => {
  clearInterval(page.retryTick);
  page.retryTick = null;
  $("reconnect-now").hidden = detail.state !== "waiting";
  if (detail.state === "connecting") {
    setStatus(detail.attempt > 0 ? `reconnecting (attempt ${detail.attempt + 1})…` : "connecting…", "connecting");
  } else if (detail.state === "open") {
    setStatus("connected", "open");
  } else if (detail.state === "waiting") {
    const wasIn = page.loggedIn;
    page.loggedIn = false;
    $("change-nick").hidden = true;
    page.sent.clear(); // their RECEIPTs will not come on a new connection
    for (const mark of document.querySelectorAll('.receipt[data-status="forwarded"], .receipt[data-status="sending"]')) {
      setMark(mark, "not-delivered", "the connection was lost before a receipt came");
    }
    if (wasIn) {
      for (const conv of page.conversations.values()) notice(conv, `connection lost: ${detail.reason}`, Date.now(), "warning");
    }
    const tick = () => {
      const left = Math.max(0, Math.ceil((session.retryAt - Date.now()) / 1000));
      setStatus(`${detail.reason}; reconnecting in ${left} s`, "waiting");
    };
    tick();
    page.retryTick = setInterval(tick, 500);
  } else {
    page.loggedIn = false;
    $("change-nick").hidden = true;
    setStatus(detail.reason ? `not connected: ${detail.reason}` : "not connected", "stopped");
  }
});

session.addEventListener("welcome", () => {
  if (page.loginWanted) login();
});
session.addEventListener("indication", ({ detail }) => onIndication(detail.message));
session.addEventListener("fatal", ({ detail }) => {
  showError(inWords(detail.error));
  if (!page.loggedIn && $("login").open) showLogin(inWords(detail.error));
});

// --- the person --------------------------------------------------------------------------------

function showLogin(error = "") {
  // Logged in, the same form changes the nickname (NICK) and may be cancelled.
  $("login-title").textContent = page.loggedIn ? "Change your nickname" : "Connect to Switchboard";
  $("login-submit").textContent = page.loggedIn ? "Change" : "Connect";
  $("login-cancel").hidden = !page.loggedIn;
  $("nick").value = page.nick;
  $("login-error").textContent = error;
  $("login-error").hidden = !error;
  if (!$("login").open) $("login").showModal();
  $("nick").focus();
}

$("login-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  const nick = $("nick").value.trim();
  if (!nick) return;
  if (page.loggedIn) {
    changeNick(nick);
    return;
  }
  page.nick = nick;
  page.token = $("token").value;
  localStorage.setItem("switchboard.nick", page.nick);
  page.loginWanted = true;
  $("login-error").hidden = true;
  if (session.welcome !== null) login();
  else session.start();
});
$("login").addEventListener("cancel", (ev) => {
  if (!page.loggedIn) ev.preventDefault(); // no page without a nickname
});
$("login-cancel").addEventListener("click", () => $("login").close());
$("change-nick").addEventListener("click", () => showLogin());

$("join-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  const room = $("join-room").value.trim();
  if (!room) return;
  $("join-room").value = "";
  join(room);
});

$("composer").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const conv = page.active;
  const text = $("text").value;
  if (conv === null || text === "") return;
  if (await sendText(conv, text)) $("text").value = "";
});

$("text").addEventListener("keydown", (ev) => {
  if (ev.key === "Enter" && !ev.shiftKey && !ev.isComposing) { // IME composition keeps Enter
    ev.preventDefault();
    $("composer").requestSubmit();
  }
});

$("leave-room").addEventListener("click", () => page.active?.kind === "room" && leave(page.active));
$("refresh-clients").addEventListener("click", () => refreshClients());
$("reconnect-now").addEventListener("click", () => session.start());

function closeMenu() {
  document.body.classList.remove("menu-open");
  $("menu-button").setAttribute("aria-expanded", "false");
}
$("menu-button").addEventListener("click", (ev) => {
  ev.stopPropagation();
  const open = document.body.classList.toggle("menu-open");
  $("menu-button").setAttribute("aria-expanded", String(open));
});
// The drawer closes on a tap beside it or Escape, as drawers do.
document.addEventListener("click", (ev) => {
  if (document.body.classList.contains("menu-open") && !$("side").contains(ev.target)) closeMenu();
});
document.addEventListener("keydown", (ev) => ev.key === "Escape" && closeMenu());

setInterval(drawClock, 1000);
// The client list has no indication of its own: asked again now and then while visible.
setInterval(() => document.visibilityState === "visible" && refreshClients(), 15000);

window.switchboardPage = page; // for the browser tests and a curious person's console
showLogin();
