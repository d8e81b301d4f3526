-- Wireshark dissector for Switchboard: the TCP protocol (docs/PROTOCOL.md, Part 1) and the
-- UDP chat room datagrams (Part 2).
--
-- Install: copy this file into the personal Lua plugin folder (~/.local/lib/wireshark/plugins/
-- on Linux and macOS, %APPDATA%\Wireshark\plugins\ on Windows), or load it for one run:
--     tshark -X lua_script:tools/wireshark/switchboard.lua -r capture.pcapng
-- docs/WIRESHARK.md has the fields, filters and an example.
--
-- Written against the Lua API of Wireshark 4.0 (Lua 5.2): nothing newer is used.
--
-- The message tables below mirror src/switchboard/protocol/messages.py field by field, in wire
-- order, with the Python names and kinds; tests/unit/test_dissector_tables.py checks that
-- they agree, so keep one msg()/ok() call per line.

local sb = Proto("switchboard", "Switchboard Protocol")
local su = Proto("switchboard_udpchat", "Switchboard UDP Chat")

local HEADER_SIZE = 14
local MAGIC = 0x5342 -- "SB"
local VERSION = 1
local DEFAULT_TCP_PORT = 7000 -- switchboard.defaults.PORT
local DEFAULT_UDP_PORT = 7002 -- switchboard.defaults.UDPCHAT_PORT
-- The reference client accepts frames up to 16 MiB from its server; a header announcing more
-- is not worth reassembling (it would make Wireshark buffer the stream forever).
local DEFAULT_MAX_FRAME = 16 * 1024 * 1024
-- Smallest ClientInfo record: u32 + addr(none) + u16 + str16("") + i64.
local CLIENT_INFO_MIN_SIZE = 4 + 1 + 2 + 2 + 8
-- Smallest RoomInfo record: str16("") + u32 + u8.
local ROOM_INFO_MIN_SIZE = 2 + 4 + 1
-- Characters of text shown in the Info column before it is cut with an ellipsis.
local INFO_TEXT_CHARS = 40

-- --- value strings ----------------------------------------------------------------------------

local CLASSES = { [1] = "Request", [2] = "Response", [3] = "Indication" }

local TYPES = {
    [0x01] = "HELLO", [0x02] = "TIME", [0x03] = "NAME", [0x04] = "LIST", [0x05] = "SEND",
    [0x06] = "NICK", [0x07] = "JOIN", [0x08] = "LEAVE", [0x09] = "BROADCAST",
    [0x0A] = "PING_REQUEST", [0x0B] = "SEND_NICK", [0x0C] = "ROOMS",
    [0x0D] = "HISTORY",
    [0x40] = "OK", [0x41] = "ERROR",
    [0x80] = "WELCOME", [0x81] = "MESSAGE", [0x82] = "ACK", [0x83] = "RECEIPT",
    [0x84] = "JOINED", [0x85] = "LEFT", [0x86] = "PING", [0x87] = "PONG", [0x88] = "SHUTDOWN",
    [0x89] = "NICK_CHANGED", [0x8A] = "ACKS", [0x8B] = "RECEIPTS",
}

local ERROR_CODES = {
    [1] = "BAD_FRAME", [2] = "UNSUPPORTED_VERSION", [3] = "FRAME_TOO_LARGE",
    [4] = "UNKNOWN_TYPE", [5] = "BAD_PAYLOAD", [6] = "NO_SUCH_CLIENT", [7] = "SERVER_FULL",
    [8] = "RATE_LIMITED", [9] = "RECIPIENT_BUSY", [10] = "AUTH_REQUIRED", [11] = "AUTH_FAILED",
    [12] = "NICK_IN_USE", [13] = "INVALID_NICK", [14] = "NOT_IN_ROOM", [15] = "TEXT_TOO_LONG",
    [16] = "SHUTTING_DOWN", [17] = "INVALID_ROOM", [18] = "IDLE_TIMEOUT",
    [19] = "INTERNAL_ERROR", [20] = "HISTORY_UNAVAILABLE", [21] = "CLUSTER_UNAVAILABLE",
}

local RECEIPT_STATUS = { [1] = "DELIVERED", [2] = "NOT_DELIVERED" }
local HISTORY_MODES = { [1] = "LATEST", [2] = "BEFORE", [3] = "AFTER", [4] = "BETWEEN" }
local LEFT_REASONS = { [1] = "LEFT", [2] = "DISCONNECTED", [3] = "TIMED_OUT" }
local ADDRESS_FAMILIES = { [0] = "none", [4] = "IPv4", [6] = "IPv6" }
local ADDRESS_SIZES = { [0] = 0, [4] = 4, [6] = 16 }
local FLAG_HISTORY = 0x01
local FLAG_MEMBER = 0x01 -- RoomInfo flags

-- --- message tables (mirror protocol/messages.py) ----------------------------------------------

local REQUEST, RESPONSE, INDICATION = 1, 2, 3
local MESSAGES = {}   -- type -> {name, class, py, fields}; every type but OK
local OK_RESULTS = {} -- answered request type -> {py, fields}

local function msg(mtype, name, mclass, py, fields)
    MESSAGES[mtype] = { name = name, class = mclass, py = py, fields = fields }
end

local function ok(answers, py, fields)
    OK_RESULTS[answers] = { py = py, fields = fields }
end

msg(0x01, "HELLO", REQUEST, "HelloRequest", { {"version", "u16"}, {"nick", "str16"}, {"token", "str16"} })
msg(0x02, "TIME", REQUEST, "TimeRequest", {})
msg(0x03, "NAME", REQUEST, "NameRequest", {})
msg(0x04, "LIST", REQUEST, "ListRequest", { {"room", "str16"} })
msg(0x05, "SEND", REQUEST, "SendRequest", { {"target", "u32"}, {"text", "str32"} })
msg(0x06, "NICK", REQUEST, "NickRequest", { {"nick", "str16"} })
msg(0x07, "JOIN", REQUEST, "JoinRequest", { {"room", "str16"} })
msg(0x08, "LEAVE", REQUEST, "LeaveRequest", { {"room", "str16"} })
msg(0x09, "BROADCAST", REQUEST, "BroadcastRequest", { {"room", "str16"}, {"text", "str32"} })
msg(0x0A, "PING_REQUEST", REQUEST, "PingRequest", {})
msg(0x0B, "SEND_NICK", REQUEST, "SendNickRequest", { {"nick", "str16"}, {"text", "str32"} })
msg(0x0C, "ROOMS", REQUEST, "RoomsRequest", { {"after", "str16"} })
msg(0x0D, "HISTORY", REQUEST, "HistoryRequest", { {"room", "str16"}, {"mode", "u8"}, {"anchor", "u64"}, {"until", "u64"}, {"limit", "u16"} })
msg(0x41, "ERROR", RESPONSE, "ErrorResponse", { {"code", "u16"}, {"name", "str16"}, {"message", "str16"} })
msg(0x80, "WELCOME", INDICATION, "Welcome", { {"client_id", "u32"}, {"server_name", "str16"}, {"version", "u16"}, {"heartbeat_ms", "u32"}, {"max_frame", "u32"}, {"max_text", "u32"}, {"max_clients", "u32"}, {"ip", "addr"}, {"port", "u16"} })
msg(0x81, "MESSAGE", INDICATION, "Message", { {"message_id", "u64"}, {"sender_id", "u32"}, {"sender_ip", "addr"}, {"sender_port", "u16"}, {"sender_nick", "str16"}, {"room", "str16"}, {"sent_ms", "i64"}, {"flags", "u8"}, {"text", "str32"} })
msg(0x82, "ACK", INDICATION, "Ack", { {"message_id", "u64"} })
msg(0x83, "RECEIPT", INDICATION, "Receipt", { {"message_id", "u64"}, {"target", "u32"}, {"status", "u8"} })
msg(0x84, "JOINED", INDICATION, "Joined", { {"room", "str16"}, {"client_id", "u32"}, {"nick", "str16"} })
msg(0x85, "LEFT", INDICATION, "Left", { {"room", "str16"}, {"client_id", "u32"}, {"nick", "str16"}, {"reason", "u8"} })
msg(0x86, "PING", INDICATION, "Ping", {})
msg(0x87, "PONG", INDICATION, "Pong", {})
msg(0x88, "SHUTDOWN", INDICATION, "Shutdown", { {"reason", "str16"} })
msg(0x89, "NICK_CHANGED", INDICATION, "NickChanged", { {"client_id", "u32"}, {"old_nick", "str16"}, {"new_nick", "str16"} })
msg(0x8A, "ACKS", INDICATION, "Acks", { {"message_ids", "id_list"} })
msg(0x8B, "RECEIPTS", INDICATION, "Receipts", { {"target", "u32"}, {"status", "u8"}, {"message_ids", "id_list"} })

ok(0x01, "HelloOk", { {"version", "u16"}, {"client_id", "u32"}, {"nick", "str16"} })
ok(0x02, "TimeOk", { {"epoch_ms", "i64"}, {"utc_offset_s", "i32"}, {"zone", "str16"} })
ok(0x03, "NameOk", { {"name", "str16"} })
ok(0x04, "ListOk", { {"room", "str16"}, {"clients", "client_list"} })
ok(0x05, "SendOk", { {"message_id", "u64"}, {"target", "u32"} })
ok(0x06, "NickOk", { {"nick", "str16"} })
ok(0x07, "JoinOk", { {"room", "str16"}, {"members", "u32"}, {"history", "u32"} })
ok(0x08, "LeaveOk", { {"room", "str16"} })
ok(0x09, "BroadcastOk", { {"message_id", "u64"}, {"reached", "u32"} })
ok(0x0A, "PingOk", {})
ok(0x0B, "SendNickOk", { {"message_id", "u64"}, {"target", "u32"} })
ok(0x0C, "RoomsOk", { {"total", "u32"}, {"more", "u8"}, {"rooms", "room_list"} })
ok(0x0D, "HistoryOk", { {"room", "str16"}, {"epoch", "u64"}, {"more", "u8"}, {"count", "u32"} })

local CLIENT_INFO = { {"client_id", "u32"}, {"ip", "addr"}, {"port", "u16"}, {"nick", "str16"}, {"connected_ms", "i64"} }
local ROOM_INFO = { {"name", "str16"}, {"members", "u32"}, {"flags", "u8"} }

local OK_TYPE = 0x40
local ERROR_TYPE = 0x41
local WELCOME_TYPE = 0x80
local MESSAGE_TYPE = 0x81

-- --- fields ------------------------------------------------------------------------------------

local f = {
    pdu_length = ProtoField.uint32("switchboard.frame_length", "Frame length", base.DEC),
    magic = ProtoField.uint16("switchboard.magic", "Magic", base.HEX),
    version = ProtoField.uint8("switchboard.version", "Version", base.DEC),
    class = ProtoField.uint8("switchboard.class", "Class", base.DEC, CLASSES),
    type = ProtoField.uint16("switchboard.type", "Type", base.HEX, TYPES),
    request_id = ProtoField.uint32("switchboard.request_id", "Request id", base.DEC),
    length = ProtoField.uint32("switchboard.length", "Payload length", base.DEC),
    payload = ProtoField.bytes("switchboard.payload", "Payload"),
    answers = ProtoField.uint16("switchboard.answers", "Answers", base.HEX, TYPES),
    str_length = ProtoField.uint32("switchboard.string_length", "String length (bytes)", base.DEC),
    addr_family = ProtoField.uint8("switchboard.addr.family", "Address family", base.DEC, ADDRESS_FAMILIES),
    addr_ipv4 = ProtoField.ipv4("switchboard.addr.ipv4", "IPv4 address"),
    addr_ipv6 = ProtoField.ipv6("switchboard.addr.ipv6", "IPv6 address"),
    recipient_id = ProtoField.uint32("switchboard.recipient_id", "Recipient id (from this stream's WELCOME)", base.DEC),
    -- payload fields, one per meaning, shared by every message that carries it
    proto_version = ProtoField.uint16("switchboard.proto_version", "Protocol version", base.DEC),
    nick = ProtoField.string("switchboard.nick", "Nickname", base.UNICODE),
    token = ProtoField.string("switchboard.token", "Token", base.UNICODE),
    room = ProtoField.string("switchboard.room", "Room", base.UNICODE),
    target = ProtoField.uint32("switchboard.target", "Target client id", base.DEC),
    text = ProtoField.string("switchboard.text", "Text", base.UNICODE),
    client_id = ProtoField.uint32("switchboard.client_id", "Client id", base.DEC),
    epoch_ms = ProtoField.int64("switchboard.epoch_ms", "Epoch (ms)", base.DEC),
    epoch_time = ProtoField.absolute_time("switchboard.epoch_time", "Server time", base.UTC),
    utc_offset_s = ProtoField.int32("switchboard.utc_offset_s", "UTC offset (s)", base.DEC),
    zone = ProtoField.string("switchboard.zone", "Time zone", base.UNICODE),
    server_name = ProtoField.string("switchboard.server_name", "Server name", base.UNICODE),
    client_count = ProtoField.uint32("switchboard.clients.count", "Client count", base.DEC),
    message_id = ProtoField.uint64("switchboard.message_id", "Message id", base.DEC),
    message_ids = ProtoField.uint32("switchboard.message_ids.count", "Message ids", base.DEC),
    members = ProtoField.uint32("switchboard.members", "Members", base.DEC),
    history = ProtoField.uint32("switchboard.history", "History messages", base.DEC),
    reached = ProtoField.uint32("switchboard.reached", "Members reached", base.DEC),
    error_code = ProtoField.uint16("switchboard.error_code", "Error code", base.DEC, ERROR_CODES),
    error_name = ProtoField.string("switchboard.error_name", "Error name", base.UNICODE),
    error_message = ProtoField.string("switchboard.error_message", "Error message", base.UNICODE),
    heartbeat_ms = ProtoField.uint32("switchboard.heartbeat_ms", "Heartbeat (ms)", base.DEC),
    max_frame = ProtoField.uint32("switchboard.max_frame", "Max frame (bytes)", base.DEC),
    max_text = ProtoField.uint32("switchboard.max_text", "Max text (bytes)", base.DEC),
    max_clients = ProtoField.uint32("switchboard.max_clients", "Max clients", base.DEC),
    ip = ProtoField.string("switchboard.ip", "IP address"),
    port = ProtoField.uint16("switchboard.port", "Port", base.DEC),
    sender_id = ProtoField.uint32("switchboard.sender_id", "Sender id", base.DEC),
    sender_ip = ProtoField.string("switchboard.sender_ip", "Sender IP address"),
    sender_port = ProtoField.uint16("switchboard.sender_port", "Sender port", base.DEC),
    sender_nick = ProtoField.string("switchboard.sender_nick", "Sender nickname", base.UNICODE),
    sent_ms = ProtoField.int64("switchboard.sent_ms", "Sent (ms since epoch)", base.DEC),
    sent_time = ProtoField.absolute_time("switchboard.sent_time", "Sent", base.UTC),
    flags = ProtoField.uint8("switchboard.flags", "Flags", base.HEX),
    flag_history = ProtoField.bool("switchboard.flags.history", "History (replayed on JOIN or sent by HISTORY)", 8, nil, FLAG_HISTORY),
    status = ProtoField.uint8("switchboard.status", "Receipt status", base.DEC, RECEIPT_STATUS),
    left_reason = ProtoField.uint8("switchboard.left_reason", "Left reason", base.DEC, LEFT_REASONS),
    shutdown_reason = ProtoField.string("switchboard.shutdown_reason", "Shutdown reason", base.UNICODE),
    -- the ClientInfo records of a client list
    client = ProtoField.none("switchboard.client", "Client"),
    client_client_id = ProtoField.uint32("switchboard.client.id", "Client id", base.DEC),
    client_ip = ProtoField.string("switchboard.client.ip", "IP address"),
    client_port = ProtoField.uint16("switchboard.client.port", "Port", base.DEC),
    client_nick = ProtoField.string("switchboard.client.nick", "Nickname", base.UNICODE),
    client_connected_ms = ProtoField.int64("switchboard.client.connected_ms", "Connected (ms since epoch)", base.DEC),
    client_connected_time = ProtoField.absolute_time("switchboard.client.connected_time", "Connected", base.UTC),
    -- NICK_CHANGED, ROOMS and the RoomInfo records of a room list
    old_nick = ProtoField.string("switchboard.old_nick", "Old nickname", base.UNICODE),
    new_nick = ProtoField.string("switchboard.new_nick", "New nickname", base.UNICODE),
    after = ProtoField.string("switchboard.after", "After room", base.UNICODE),
    rooms_total = ProtoField.uint32("switchboard.rooms.total", "Rooms on the server", base.DEC),
    rooms_more = ProtoField.uint8("switchboard.rooms.more", "More rooms follow", base.DEC),
    room_count = ProtoField.uint32("switchboard.rooms.count", "Room count", base.DEC),
    room_record = ProtoField.none("switchboard.room_info", "Room"),
    room_name = ProtoField.string("switchboard.room_info.name", "Name", base.UNICODE),
    room_members = ProtoField.uint32("switchboard.room_info.members", "Members", base.DEC),
    room_flags = ProtoField.uint8("switchboard.room_info.flags", "Flags", base.HEX),
    flag_member = ProtoField.bool("switchboard.room_info.flags.member", "Member (you are in it)", 8, nil, FLAG_MEMBER),
    -- HISTORY and its answer
    history_mode = ProtoField.uint8("switchboard.history.mode", "History mode", base.DEC, HISTORY_MODES),
    history_anchor = ProtoField.uint64("switchboard.history.anchor", "From message id (excluded)", base.DEC),
    history_until = ProtoField.uint64("switchboard.history.until", "Until message id (excluded)", base.DEC),
    history_limit = ProtoField.uint16("switchboard.history.limit", "Lines wanted at most", base.DEC),
    history_epoch = ProtoField.uint64("switchboard.history.epoch", "History store epoch", base.DEC),
    history_more = ProtoField.uint8("switchboard.history.more", "More lines beyond the page", base.DEC),
    history_count = ProtoField.uint32("switchboard.history.count", "MESSAGEs that follow", base.DEC),
}

local field_list = {}
for _, field in pairs(f) do
    field_list[#field_list + 1] = field
end
sb.fields = field_list

-- Which ProtoField shows a Python field: by name, except where one name means different things
-- in different messages (version in the header vs the payload, ERROR's name and message, ...).
local FIELD_OF = {
    version = f.proto_version, nick = f.nick, token = f.token, room = f.room, target = f.target,
    text = f.text, client_id = f.client_id, epoch_ms = f.epoch_ms,
    utc_offset_s = f.utc_offset_s, zone = f.zone, name = f.server_name,
    server_name = f.server_name, message_id = f.message_id, members = f.members,
    history = f.history, reached = f.reached, heartbeat_ms = f.heartbeat_ms,
    max_frame = f.max_frame, max_text = f.max_text, max_clients = f.max_clients, ip = f.ip,
    port = f.port, sender_id = f.sender_id, sender_ip = f.sender_ip,
    sender_port = f.sender_port, sender_nick = f.sender_nick, sent_ms = f.sent_ms,
    flags = f.flags, status = f.status, clients = f.client_count,
    old_nick = f.old_nick, new_nick = f.new_nick, after = f.after, rooms = f.room_count,
    message_ids = f.message_ids,
}
local FIELD_OF_CLASS = {
    ErrorResponse = { code = f.error_code, name = f.error_name, message = f.error_message },
    Left = { reason = f.left_reason },
    Shutdown = { reason = f.shutdown_reason },
    RoomsOk = { total = f.rooms_total, more = f.rooms_more },
    HistoryRequest = {
        mode = f.history_mode, anchor = f.history_anchor, ["until"] = f.history_until,
        limit = f.history_limit,
    },
    HistoryOk = { epoch = f.history_epoch, more = f.history_more, count = f.history_count },
}
local RECORD_FIELD_OF = {
    client_id = f.client_client_id, ip = f.client_ip, port = f.client_port,
    nick = f.client_nick, connected_ms = f.client_connected_ms,
}
local ROOM_RECORD_FIELD_OF = { name = f.room_name, members = f.room_members, flags = f.room_flags }
-- Flag bits shown under their flags field.
local FLAG_BITS_OF = { [f.flags] = f.flag_history, [f.room_flags] = f.flag_member }
-- Millisecond timestamps also shown as a date (a generated field).
local TIME_OF = {
    epoch_ms = f.epoch_time, sent_ms = f.sent_time, connected_ms = f.client_connected_time,
}

-- --- expert info -------------------------------------------------------------------------------

local function malformed(abbr, text)
    return ProtoExpert.new("switchboard." .. abbr, text, expert.group.MALFORMED, expert.severity.ERROR)
end

local ef = {
    bad_magic = malformed("bad_magic", "Bad magic: frame boundaries are lost from here on"),
    bad_version = malformed("bad_version", "Unsupported protocol version"),
    bad_class = malformed("bad_class", "Unknown message class"),
    unknown_type = malformed("unknown_type", "Unknown message type for this class"),
    too_large = malformed("too_large", "Payload length beyond the largest frame reassembled"),
    truncated = malformed("truncated", "Payload ends inside a field"),
    trailing = malformed("trailing", "Unexpected bytes after the last field"),
    bad_utf8 = malformed("bad_utf8", "Invalid UTF-8"),
    bad_family = malformed("bad_family", "Unknown address family"),
    bad_count = malformed("bad_count", "Record count larger than the payload can hold"),
    incomplete = malformed("incomplete", "Frame incomplete (TCP reassembly is off or the capture ends)"),
}
sb.experts = { ef.bad_magic, ef.bad_version, ef.bad_class, ef.unknown_type, ef.too_large,
               ef.truncated, ef.trailing, ef.bad_utf8, ef.bad_family, ef.bad_count, ef.incomplete }

-- --- preferences -------------------------------------------------------------------------------

sb.prefs.tcp_port = Pref.uint("TCP port", DEFAULT_TCP_PORT, "The server's port (other ports are found by the heuristic)")
sb.prefs.max_frame = Pref.uint("Largest frame (bytes)", DEFAULT_MAX_FRAME, "Headers announcing a larger frame are marked malformed and not reassembled")
su.prefs.udp_port = Pref.uint("UDP port", DEFAULT_UDP_PORT, "The chat room's port (other ports are found by the heuristic)")

-- --- helpers -----------------------------------------------------------------------------------

-- The length of the well-formed UTF-8 sequence at byte `i` of `s`, or nil (no overlongs,
-- surrogates or values past U+10FFFF, as Python's decoder requires).  Lua 5.2 has no utf8
-- library.
local function utf8_sequence(s, i)
    local c = s:byte(i)
    local need, min
    if c < 0x80 then
        return 1
    elseif c >= 0xC2 and c <= 0xDF then
        need, min = 1, 0x80
    elseif c >= 0xE0 and c <= 0xEF then
        need, min = 2, 0x800
    elseif c >= 0xF0 and c <= 0xF4 then
        need, min = 3, 0x10000
    else
        return nil
    end
    if i + need > #s then
        return nil
    end
    local cp = c % (2 ^ (6 - need))
    for k = 1, need do
        local cc = s:byte(i + k)
        if cc < 0x80 or cc > 0xBF then
            return nil
        end
        cp = cp * 64 + (cc - 0x80)
    end
    if cp < min or cp > 0x10FFFF or (cp >= 0xD800 and cp <= 0xDFFF) then
        return nil
    end
    return need + 1
end

-- `raw` bytes as text: (the same string, true) when they are well-formed UTF-8, else a copy
-- with each bad byte replaced by U+FFFD and false.  Done here rather than by TvbRange:string
-- with ENC_UTF_8, which in Wireshark 4.0 cuts its result to the raw length and so can return
-- a broken replacement character.
local function utf8_text(raw)
    local i, n = 1, #raw
    local out, valid = {}, true
    while i <= n do
        local size = utf8_sequence(raw, i)
        if size then
            out[#out + 1] = raw:sub(i, i + size - 1)
            i = i + size
        else
            out[#out + 1] = "\239\191\189" -- U+FFFD
            valid = false
            i = i + 1
        end
    end
    if valid then
        return raw, true
    end
    return table.concat(out), false
end

-- Text for the Info column: control characters escaped, cut after INFO_TEXT_CHARS characters.
local function quote(s)
    local out, chars, i = {}, 0, 1
    while i <= #s do
        local c = s:byte(i)
        local size = (c >= 0xF0 and 4) or (c >= 0xE0 and 3) or (c >= 0xC0 and 2) or 1
        if chars == INFO_TEXT_CHARS then
            out[#out + 1] = "…"
            break
        end
        if c < 0x20 or c == 0x7F then
            out[#out + 1] = string.format("\\x%02x", c)
        elseif c == 0x22 or c == 0x5C then
            out[#out + 1] = "\\" .. string.char(c)
        else
            out[#out + 1] = s:sub(i, i + size - 1)
        end
        chars = chars + 1
        i = i + size
    end
    return '"' .. table.concat(out) .. '"'
end

local function name_of(tbl, value, fallback_prefix)
    return tbl[value] or string.format("%s_%d", fallback_prefix, value)
end

-- ms since the epoch (a Lua number) as an NSTime, for the generated date fields.
local function ms_to_nstime(ms)
    local secs = math.floor(ms / 1000)
    return NSTime(secs, (ms - secs * 1000) * 1000000)
end

-- --- payload reading ---------------------------------------------------------------------------
-- A reader walks the payload of one frame: ctx = {tvb, off, stop, broken}.  On the first error
-- it adds expert info, sets ctx.broken and returns nil; the caller stops reading fields.

local INT_KINDS = {
    u8 = { 1, "uint" }, u16 = { 2, "uint" }, u32 = { 4, "uint" }, i32 = { 4, "int" },
    u64 = { 8, "uint64" }, i64 = { 8, "int64" },
}

local function truncated(ctx, tree, what)
    local rest = ctx.stop - ctx.off
    local item
    if rest > 0 then
        item = tree:add(f.payload, ctx.tvb(ctx.off, rest))
    else
        item = tree
    end
    item:add_proto_expert_info(ef.truncated, "Payload ends inside the " .. what .. " field")
    ctx.broken = true
end

local function read_int(ctx, tree, field, kind, label)
    local size, getter = INT_KINDS[kind][1], INT_KINDS[kind][2]
    if ctx.off + size > ctx.stop then
        truncated(ctx, tree, label)
        return nil
    end
    local range = ctx.tvb(ctx.off, size)
    local item = tree:add(field, range)
    ctx.off = ctx.off + size
    local value = range[getter](range)
    if getter == "uint64" or getter == "int64" then
        return value:tonumber(), item, value
    end
    return value, item, value
end

local function read_str(ctx, tree, field, kind, label)
    local psize = kind == "str16" and 2 or 4
    if ctx.off + psize > ctx.stop then
        truncated(ctx, tree, label .. " length")
        return nil
    end
    local n = ctx.tvb(ctx.off, psize):uint()
    if ctx.off + psize + n > ctx.stop then
        local item = tree:add(f.str_length, ctx.tvb(ctx.off, psize))
        item:add_proto_expert_info(ef.truncated, string.format(
            "Payload ends inside the %s field: %d bytes announced, %d left", label, n,
            ctx.stop - ctx.off - psize))
        ctx.broken = true
        return nil
    end
    local text, valid = "", true
    if n > 0 then
        text, valid = utf8_text(ctx.tvb(ctx.off + psize, n):raw())
    end
    local item = tree:add(field, ctx.tvb(ctx.off, psize + n), text)
    item:add(f.str_length, ctx.tvb(ctx.off, psize))
    if not valid then
        item:add_proto_expert_info(ef.bad_utf8, "Invalid UTF-8 in the " .. label .. " field")
        ctx.broken = true -- the reference decoder rejects the whole payload here
    end
    ctx.off = ctx.off + psize + n
    return text, item
end

local function read_addr(ctx, tree, field, label)
    if ctx.off + 1 > ctx.stop then
        truncated(ctx, tree, label .. " family")
        return nil
    end
    local family = ctx.tvb(ctx.off, 1):uint()
    local size = ADDRESS_SIZES[family]
    if size == nil then
        local item = tree:add(f.addr_family, ctx.tvb(ctx.off, 1))
        item:add_proto_expert_info(ef.bad_family, string.format("Unknown address family %d", family))
        ctx.broken = true
        return nil
    end
    if ctx.off + 1 + size > ctx.stop then
        truncated(ctx, tree, label)
        return nil
    end
    local range = ctx.tvb(ctx.off + 1, size)
    local text = ""
    if family == 4 then
        text = tostring(range:ipv4())
    elseif family == 6 then
        text = tostring(range:ipv6())
    end
    local item = tree:add(field, ctx.tvb(ctx.off, 1 + size), text)
    item:add(f.addr_family, ctx.tvb(ctx.off, 1))
    if family == 4 then
        item:add(f.addr_ipv4, range)
    elseif family == 6 then
        item:add(f.addr_ipv6, range)
    end
    ctx.off = ctx.off + 1 + size
    return text, item
end

local read_fields -- forward: records are read with the same function

-- A u32 count, then that many records of `layout` (at least `min_size` bytes each), each a
-- subtree of `record_field` whose text `describe(index, values)` gives.
local function read_record_list(ctx, tree, field, label, kind)
    local count, count_item = read_int(ctx, tree, field, "u32", label .. " count")
    if count == nil then
        return nil
    end
    if count * kind.min_size > ctx.stop - ctx.off then
        count_item:add_proto_expert_info(ef.bad_count, string.format(
            "%d records cannot fit in the %d bytes left", count, ctx.stop - ctx.off))
        ctx.broken = true
        return nil
    end
    -- Bounded: the check above limits count to the bytes left / kind.min_size.
    for index = 1, count do
        local start = ctx.off
        local record = tree:add(kind.record_field, ctx.tvb(start, kind.min_size))
        local values = read_fields(ctx, record, kind.layout, kind.field_of, {})
        record:set_len(ctx.off - start)
        if ctx.broken then
            return nil
        end
        record:append_text(kind.describe(index, values))
    end
    return count
end

-- A u32 count, then that many u64 message ids (ACKS, RECEIPTS): a subtree of ids.
local function read_id_list(ctx, tree, field, label)
    local count, count_item = read_int(ctx, tree, field, "u32", label .. " count")
    if count == nil then
        return nil
    end
    if count * 8 > ctx.stop - ctx.off then
        count_item:add_proto_expert_info(ef.bad_count, string.format(
            "%d message ids cannot fit in the %d bytes left", count, ctx.stop - ctx.off))
        ctx.broken = true
        return nil
    end
    local first, last = nil, nil
    for _ = 1, count do  -- bounded by the check above
        local id = read_int(ctx, count_item, f.message_id, "u64", "message_id")
        first = first or id
        last = id
    end
    return { count = count, first = first, last = last }
end

local CLIENT_RECORDS = {
    min_size = CLIENT_INFO_MIN_SIZE, record_field = f.client, layout = CLIENT_INFO,
    field_of = RECORD_FIELD_OF,
    describe = function(index, values)
        return string.format(" %d: #%d %s:%d %s", index, values.client_id,
            values.ip ~= "" and values.ip or "-", values.port,
            values.nick ~= "" and quote(values.nick) or "-")
    end,
}

local ROOM_RECORDS = {
    min_size = ROOM_INFO_MIN_SIZE, record_field = f.room_record, layout = ROOM_INFO,
    field_of = ROOM_RECORD_FIELD_OF,
    describe = function(index, values)
        return string.format(" %d: %s %d member(s)%s", index, quote(values.name), values.members,
            values.flags % (2 * FLAG_MEMBER) >= FLAG_MEMBER and ", you are in it" or "")
    end,
}

-- Read `fields` (a list of {python name, kind}) into `tree`; returns the values by name.
read_fields = function(ctx, tree, fields, field_of, overrides)
    local values = {}
    for _, spec in ipairs(fields) do
        local name, kind = spec[1], spec[2]
        local field = overrides[name] or field_of[name]
        local value, item
        if INT_KINDS[kind] then
            local raw
            value, item, raw = read_int(ctx, tree, field, kind, name)
            if value ~= nil and TIME_OF[name] then
                item:add(TIME_OF[name], ctx.tvb(ctx.off - 8, 8), ms_to_nstime(value)):set_generated()
            end
            if value ~= nil and FLAG_BITS_OF[field] then
                item:add(FLAG_BITS_OF[field], ctx.tvb(ctx.off - 1, 1))
            end
        elseif kind == "str16" or kind == "str32" then
            value = read_str(ctx, tree, field, kind, name)
        elseif kind == "addr" then
            value = read_addr(ctx, tree, field, name)
        elseif kind == "client_list" then
            value = read_record_list(ctx, tree, field, name, CLIENT_RECORDS)
        elseif kind == "room_list" then
            value = read_record_list(ctx, tree, field, name, ROOM_RECORDS)
        elseif kind == "id_list" then
            value = read_id_list(ctx, tree, field, name)
        end
        if ctx.broken then
            return values
        end
        values[name] = value
    end
    return values
end

-- --- per-stream state --------------------------------------------------------------------------
-- The recipient of a MESSAGE is the client at the other end of its TCP stream: the id that
-- stream's WELCOME announced.  Remembered per stream while frames are first dissected in order,
-- and per frame so that later passes (clicking around in the GUI) show the same.

local tcp_stream_field = Field.new("tcp.stream")
local welcome_id_of_stream = {}
local recipient_of_frame = {}

local function stream_id()
    local info = tcp_stream_field()
    return info and info.value or nil
end

-- --- one frame ---------------------------------------------------------------------------------

local function request_details(name, v)
    if name == "HELLO" and v.nick ~= nil and v.nick ~= "" then
        return " nick=" .. quote(v.nick)
    elseif name == "LIST" and v.room ~= nil and v.room ~= "" then
        return " room=" .. quote(v.room)
    elseif name == "SEND" and v.target ~= nil then
        return string.format(" →#%d", v.target) .. (v.text and (" " .. quote(v.text)) or "")
    elseif (name == "NICK") and v.nick ~= nil then
        return " " .. quote(v.nick)
    elseif (name == "JOIN" or name == "LEAVE") and v.room ~= nil then
        return " " .. quote(v.room)
    elseif name == "BROADCAST" and v.room ~= nil then
        return " room=" .. quote(v.room) .. (v.text and (" " .. quote(v.text)) or "")
    elseif name == "SEND_NICK" and v.nick ~= nil then
        return " →" .. quote(v.nick) .. (v.text and (" " .. quote(v.text)) or "")
    elseif name == "ROOMS" and v.after ~= nil and v.after ~= "" then
        return " after=" .. quote(v.after)
    elseif name == "HISTORY" and v.mode ~= nil then
        local text = " " .. quote(v.room) .. " " .. name_of(HISTORY_MODES, v.mode, "MODE")
        if v.anchor ~= nil and v.anchor ~= 0 then
            text = text .. string.format(" %d", v.anchor)
        end
        if v["until"] ~= nil and v["until"] ~= 0 then
            text = text .. string.format("..%d", v["until"])
        end
        return text
    end
    return ""
end

-- " 3 messages 17..19" (first..last as listed) for ACKS' and RECEIPTS' Info column.
local function ids_text(ids)
    if ids.count == 0 then
        return " 0 messages"
    elseif ids.count == 1 then
        return string.format(" message=%s", tostring(ids.first))
    end
    return string.format(" %d messages %s..%s", ids.count, tostring(ids.first), tostring(ids.last))
end

local function indication_details(name, v, pinfo, frame_tree, frame_tvb)
    if name == "WELCOME" and v.client_id ~= nil then
        return string.format(" #%d", v.client_id) .. (v.server_name and (" from " .. quote(v.server_name)) or "")
    elseif name == "MESSAGE" and v.sender_id ~= nil then
        local recipient = recipient_of_frame[pinfo.number]
        local to = recipient and ("#" .. recipient) or "?"
        local where = (v.room ~= nil and v.room ~= "") and (" in " .. quote(v.room)) or ""
        return string.format(" #%d→%s%s", v.sender_id, to, where) .. (v.text and (" " .. quote(v.text)) or "")
    elseif name == "ACK" and v.message_id ~= nil then
        return string.format(" message=%d", v.message_id)
    elseif name == "RECEIPT" and v.status ~= nil then
        return string.format(" message=%d →#%d %s", v.message_id, v.target,
            name_of(RECEIPT_STATUS, v.status, "STATUS"))
    elseif name == "ACKS" and v.message_ids ~= nil then
        return ids_text(v.message_ids)
    elseif name == "RECEIPTS" and v.message_ids ~= nil then
        return string.format(" →#%d %s", v.target, name_of(RECEIPT_STATUS, v.status, "STATUS"))
            .. ids_text(v.message_ids)
    elseif name == "JOINED" and v.nick ~= nil then
        return string.format(" %s #%d %s", quote(v.room), v.client_id, quote(v.nick))
    elseif name == "LEFT" and v.reason ~= nil then
        return string.format(" %s #%d %s %s", quote(v.room), v.client_id, quote(v.nick),
            name_of(LEFT_REASONS, v.reason, "REASON"))
    elseif name == "SHUTDOWN" and v.reason ~= nil then
        return " " .. quote(v.reason)
    elseif name == "NICK_CHANGED" and v.new_nick ~= nil then
        return string.format(" #%d %s→%s", v.client_id, quote(v.old_nick), quote(v.new_nick))
    end
    return ""
end

-- Dissect the complete frame at `off` (header checked by the caller: magic ok, length known).
-- Returns the frame's Info text.
local function dissect_frame(tvb, pinfo, tree, off, total)
    local item = tree:add(sb, tvb(off, total))
    local version = tvb(off + 2, 1):uint()
    local mclass = tvb(off + 3, 1):uint()
    local mtype = tvb(off + 4, 2):uint()
    local rid = tvb(off + 6, 4):uint()
    local plen = tvb(off + 10, 4):uint()
    item:add(f.magic, tvb(off, 2))
    local version_item = item:add(f.version, tvb(off + 2, 1))
    local class_item = item:add(f.class, tvb(off + 3, 1))
    local type_item = item:add(f.type, tvb(off + 4, 2))
    item:add(f.request_id, tvb(off + 6, 4))
    item:add(f.length, tvb(off + 10, 4))

    local class_name = CLASSES[mclass] or string.format("Class_%d", mclass)
    local type_name = TYPES[mtype] or string.format("0x%04x", mtype)
    item:append_text(string.format(", %s %s", class_name, type_name))
    if version ~= VERSION then
        version_item:add_proto_expert_info(ef.bad_version, string.format("Unsupported version %d", version))
        return string.format("Bad frame: version %d", version)
    end
    if CLASSES[mclass] == nil then
        class_item:add_proto_expert_info(ef.bad_class, string.format("Unknown class %d", mclass))
        return string.format("Bad frame: class %d", mclass)
    end

    local ctx = { tvb = tvb, off = off + HEADER_SIZE, stop = off + total, broken = false }
    local def, fields, overrides, answers
    local info = string.format("%s %s id=%d", class_name, type_name, rid)
    if mclass == RESPONSE and mtype == OK_TYPE then
        answers = read_int(ctx, item, f.answers, "u16", "answered type")
        if answers == nil then
            return info .. " [malformed]"
        end
        local result = OK_RESULTS[answers]
        if result == nil then
            item:add_proto_expert_info(ef.unknown_type, string.format("OK answers unknown request type 0x%04x", answers))
            return info .. string.format(" (0x%04x) [unknown type]", answers)
        end
        fields, overrides = result.fields, FIELD_OF_CLASS[result.py] or {}
        info = info .. string.format(" (%s)", TYPES[answers])
        item:append_text(string.format(" (%s)", TYPES[answers]))
    else
        def = MESSAGES[mtype]
        if def == nil or def.class ~= mclass then
            type_item:add_proto_expert_info(ef.unknown_type, string.format(
                "No message of type 0x%04x in class %s", mtype, class_name))
            if plen > 0 then
                item:add(f.payload, tvb(off + HEADER_SIZE, plen))
            end
            return info .. " [unknown type]"
        end
        fields, overrides = def.fields, FIELD_OF_CLASS[def.py] or {}
    end

    if def ~= nil and mtype == MESSAGE_TYPE and not pinfo.visited then
        local sid = stream_id()
        recipient_of_frame[pinfo.number] = sid and welcome_id_of_stream[sid] or nil
    end

    local values = read_fields(ctx, item, fields, FIELD_OF, overrides)
    if not ctx.broken and ctx.off < ctx.stop then
        local rest = item:add(f.payload, tvb(ctx.off, ctx.stop - ctx.off))
        rest:add_proto_expert_info(ef.trailing, string.format(
            "%d unexpected byte(s) after the last field", ctx.stop - ctx.off))
        ctx.broken = true
    end

    if def ~= nil then
        if mtype == ERROR_TYPE then
            if values.code ~= nil then
                info = info .. " " .. name_of(ERROR_CODES, values.code, "ERROR")
            end
        elseif mclass == REQUEST then
            info = info .. request_details(def.name, values)
        elseif mclass == INDICATION then
            -- Indications carry request id 0: the id adds nothing to their summary.
            info = class_name .. " " .. type_name .. indication_details(def.name, values, pinfo)
            if mtype == WELCOME_TYPE and values.client_id ~= nil and not pinfo.visited then
                local sid = stream_id()
                if sid ~= nil then
                    welcome_id_of_stream[sid] = values.client_id
                end
            end
            if mtype == MESSAGE_TYPE and recipient_of_frame[pinfo.number] ~= nil then
                item:add(f.recipient_id, recipient_of_frame[pinfo.number]):set_generated()
            end
        end
    end
    if ctx.broken then
        info = info .. " [malformed]"
    end
    return info
end

-- --- the TCP stream ----------------------------------------------------------------------------

-- Several frames in one segment each get their own tree; their Info texts are joined with
-- " | ".  TCP may call us more than once for one packet (the end of a reassembled frame, then
-- the rest of the segment), so the column is appended to when it already shows Switchboard.
local function show_info(pinfo, infos)
    if #infos == 0 then
        return
    end
    local text = table.concat(infos, " | ")
    if tostring(pinfo.cols.protocol) == "Switchboard" then
        pinfo.cols.info:append(" | " .. text)
    else
        pinfo.cols.protocol = "Switchboard"
        pinfo.cols.info = text
    end
end

local function bad_stream(tvb, pinfo, tree, off, ef_kind, message, infos)
    local item = tree:add(sb, tvb(off, tvb:len() - off))
    item:append_text(", undecodable bytes")
    item:add(f.payload, tvb(off, tvb:len() - off))
    item:add_proto_expert_info(ef_kind, message)
    infos[#infos + 1] = "Bad frame: " .. message
end

function sb.dissector(tvb, pinfo, tree)
    local len = tvb:len()
    local off = 0
    local infos = {}
    -- Bounded: every round consumes at least one 14-byte header or returns.
    while off < len do
        local rest = len - off
        if rest >= 2 and tvb(off, 2):uint() ~= MAGIC then
            bad_stream(tvb, pinfo, tree, off, ef.bad_magic,
                string.format("magic 0x%04x, not 0x%04x", tvb(off, 2):uint(), MAGIC), infos)
            break
        end
        if rest < HEADER_SIZE then
            if pinfo.can_desegment > 0 then
                pinfo.desegment_offset = off
                pinfo.desegment_len = DESEGMENT_ONE_MORE_SEGMENT
                show_info(pinfo, infos)
                return len
            end
            bad_stream(tvb, pinfo, tree, off, ef.incomplete, string.format("%d of 14 header bytes", rest), infos)
            break
        end
        local plen = tvb(off + 10, 4):uint()
        if HEADER_SIZE + plen > sb.prefs.max_frame then
            bad_stream(tvb, pinfo, tree, off, ef.too_large,
                string.format("payload length %d beyond the %d-byte limit", plen, sb.prefs.max_frame), infos)
            break
        end
        local total = HEADER_SIZE + plen
        if rest < total then
            if pinfo.can_desegment > 0 then
                pinfo.desegment_offset = off
                pinfo.desegment_len = total - rest
                show_info(pinfo, infos)
                return len
            end
            bad_stream(tvb, pinfo, tree, off, ef.incomplete, string.format("%d of %d frame bytes", rest, total), infos)
            break
        end
        infos[#infos + 1] = dissect_frame(tvb, pinfo, tree, off, total)
        off = off + total
    end
    show_info(pinfo, infos)
    return len
end

-- The heuristic: a header whose magic, version, class and type all make sense.
local function heuristic_tcp(tvb, pinfo, tree)
    if tvb:len() < 6 then
        return false
    end
    if tvb(0, 2):uint() ~= MAGIC or tvb(2, 1):uint() ~= VERSION then
        return false
    end
    local mclass, mtype = tvb(3, 1):uint(), tvb(4, 2):uint()
    local def = MESSAGES[mtype]
    if not ((mclass == RESPONSE and mtype == OK_TYPE) or (def ~= nil and def.class == mclass)) then
        return false
    end
    if tvb:len() >= HEADER_SIZE and HEADER_SIZE + tvb(10, 4):uint() > sb.prefs.max_frame then
        return false
    end
    -- The rest of this connection is Switchboard: later segments (the second half of a split
    -- frame, a malformed frame) go straight to the dissector.
    pinfo.conversation = sb
    sb.dissector(tvb, pinfo, tree)
    return true
end

-- --- UDP chat datagrams (Part 2) ---------------------------------------------------------------

local U_HEADER_SIZE = 9
local U_MAGIC = 0x5355 -- "SU"
local U_TOKEN_SIZE = 8
local U_MAX_TEXT = 1200 -- switchboard.defaults.UDPCHAT_MAX_PAYLOAD

local U_TYPES = {
    [0x01] = "JOIN", [0x02] = "LEAVE", [0x03] = "CHAT", [0x04] = "KEEPALIVE",
    [0x41] = "WELCOME", [0x42] = "ERROR", [0x43] = "ACK", [0x44] = "RELAY", [0x45] = "JOINED",
    [0x46] = "LEFT", [0x47] = "SHUTDOWN",
}
local U_ERROR_CODES = {
    [1] = "INVALID_NICK", [2] = "NICK_IN_USE", [3] = "ROOM_FULL", [4] = "NOT_A_MEMBER",
    [5] = "TEXT_TOO_LONG", [6] = "BAD_TEXT", [7] = "ADDRESS_FULL", [8] = "JOIN_NOT_PADDED",
}
local U_LEFT_REASONS = { [0] = "LEFT", [1] = "TIMED_OUT" }

-- What each type carries: its identity ("nick", "token" or "none") and its payload layout.
-- Mirrors services/udpchat/codec.py (checked by tests/unit/test_dissector_tables.py).
local U_LAYOUT = {
    [0x01] = { ident = "nick", payload = { "padding" } },
    [0x02] = { ident = "token", payload = {} },
    [0x03] = { ident = "token", payload = { "text" } },
    [0x04] = { ident = "token", payload = {} },
    [0x41] = { ident = "nick", payload = { "token", "members", "expiry_ms" } },
    [0x42] = { ident = "nick", payload = { "code", "reason" } },
    [0x43] = { ident = "none", payload = {} },
    [0x44] = { ident = "nick", payload = { "timestamp", "text" } },
    [0x45] = { ident = "nick", payload = { "timestamp" } },
    [0x46] = { ident = "nick", payload = { "timestamp", "left_reason" } },
    [0x47] = { ident = "none", payload = { "timestamp" } },
}

local uf = {
    magic = ProtoField.uint16("switchboard_udpchat.magic", "Magic", base.HEX),
    version = ProtoField.uint8("switchboard_udpchat.version", "Version", base.DEC),
    type = ProtoField.uint8("switchboard_udpchat.type", "Type", base.HEX, U_TYPES),
    seq = ProtoField.uint32("switchboard_udpchat.seq", "Sequence number", base.DEC),
    ident_length = ProtoField.uint8("switchboard_udpchat.ident_length", "Identity length", base.DEC),
    nick = ProtoField.string("switchboard_udpchat.nick", "Nickname", base.UNICODE),
    session = ProtoField.bytes("switchboard_udpchat.session", "Session token (identity)"),
    token = ProtoField.bytes("switchboard_udpchat.token", "Session token (granted)"),
    members = ProtoField.uint16("switchboard_udpchat.members", "Others in the room", base.DEC),
    expiry_ms = ProtoField.uint32("switchboard_udpchat.expiry_ms", "Member expiry (ms)", base.DEC),
    error_code = ProtoField.uint8("switchboard_udpchat.error_code", "Error code", base.DEC, U_ERROR_CODES),
    reason = ProtoField.string("switchboard_udpchat.reason", "Reason", base.UNICODE),
    timestamp_ms = ProtoField.uint64("switchboard_udpchat.timestamp_ms", "Timestamp (ms since epoch)", base.DEC),
    time = ProtoField.absolute_time("switchboard_udpchat.time", "Timestamp", base.UTC),
    text = ProtoField.string("switchboard_udpchat.text", "Text", base.UNICODE),
    left_reason = ProtoField.uint8("switchboard_udpchat.left_reason", "Left reason", base.DEC, U_LEFT_REASONS),
    extra = ProtoField.bytes("switchboard_udpchat.unexpected", "Unexpected bytes"),
    padding = ProtoField.bytes("switchboard_udpchat.padding", "Padding (zero bytes up to 160)"),
}
local ufield_list = {}
for _, field in pairs(uf) do
    ufield_list[#ufield_list + 1] = field
end
su.fields = ufield_list

local function umalformed(abbr, text)
    return ProtoExpert.new("switchboard_udpchat." .. abbr, text, expert.group.MALFORMED, expert.severity.ERROR)
end
local uef = {
    short = umalformed("short", "Datagram shorter than the 9-byte header"),
    bad_magic = umalformed("bad_magic", "Bad magic"),
    bad_version = umalformed("bad_version", "Unsupported version"),
    unknown_type = umalformed("unknown_type", "Unknown datagram type"),
    ident_overrun = umalformed("ident_overrun", "Identity runs past the end of the datagram"),
    bad_token = umalformed("bad_token", "A session token is 8 bytes"),
    bad_ident = umalformed("bad_ident", "This type carries no identity"),
    bad_utf8 = umalformed("bad_utf8", "Invalid UTF-8"),
    bad_size = umalformed("bad_size", "Payload of the wrong size"),
    too_long = umalformed("too_long", "Text longer than 1,200 bytes"),
    bad_padding = umalformed("bad_padding", "Padding that is not zero bytes"),
}
su.experts = { uef.short, uef.bad_magic, uef.bad_version, uef.unknown_type, uef.ident_overrun,
               uef.bad_token, uef.bad_ident, uef.bad_utf8, uef.bad_size, uef.too_long,
               uef.bad_padding }

local function u_text(tvb, tree, field, off, stop, what)
    local text, valid = "", true
    local item
    if stop > off then
        local range = tvb(off, stop - off)
        text, valid = utf8_text(range:raw())
        item = tree:add(field, range, text)
    else
        -- An empty text at the very end of the datagram: no bytes to point at.
        item = tree:add(field, "")
    end
    local bad = false
    if not valid then
        item:add_proto_expert_info(uef.bad_utf8, "Invalid UTF-8 in the " .. what)
        bad = true
    end
    return text, item, bad
end

function su.dissector(tvb, pinfo, tree)
    local len = tvb:len()
    pinfo.cols.protocol = "Switchboard UDP"
    local root = tree:add(su, tvb())
    if len < U_HEADER_SIZE then
        root:add_proto_expert_info(uef.short, string.format("%d bytes is shorter than the header", len))
        pinfo.cols.info = "Bad datagram: too short"
        return len
    end
    local magic, version = tvb(0, 2):uint(), tvb(2, 1):uint()
    local utype, seq, ilen = tvb(3, 1):uint(), tvb(4, 4):uint(), tvb(8, 1):uint()
    root:add(uf.magic, tvb(0, 2))
    local version_item = root:add(uf.version, tvb(2, 1))
    local type_item = root:add(uf.type, tvb(3, 1))
    root:add(uf.seq, tvb(4, 4))
    local ilen_item = root:add(uf.ident_length, tvb(8, 1))
    local type_name = U_TYPES[utype] or string.format("0x%02x", utype)
    root:append_text(", " .. type_name)
    if magic ~= U_MAGIC then
        root:add_proto_expert_info(uef.bad_magic, string.format("Magic 0x%04x, not 0x%04x", magic, U_MAGIC))
        pinfo.cols.info = "Bad datagram: magic"
        return len
    end
    if version ~= VERSION then
        version_item:add_proto_expert_info(uef.bad_version, string.format("Unsupported version %d", version))
        pinfo.cols.info = "Bad datagram: version"
        return len
    end
    local layout = U_LAYOUT[utype]
    if layout == nil then
        type_item:add_proto_expert_info(uef.unknown_type, string.format("Unknown type 0x%02x", utype))
        pinfo.cols.info = string.format("Bad datagram: type 0x%02x", utype)
        return len
    end
    local info = string.format("%s seq=%d", type_name, seq)
    local bad = false
    local pstart = U_HEADER_SIZE + ilen
    if pstart > len then
        ilen_item:add_proto_expert_info(uef.ident_overrun, string.format(
            "Identity of %d bytes, %d left", ilen, len - U_HEADER_SIZE))
        pinfo.cols.info = info .. " [malformed]"
        return len
    end

    local nick
    if layout.ident == "nick" then
        local item, nick_bad
        nick, item, nick_bad = u_text(tvb, root, uf.nick, U_HEADER_SIZE, pstart, "nickname")
        bad = bad or nick_bad
    elseif layout.ident == "token" then
        if ilen > 0 then
            local item = root:add(uf.session, tvb(U_HEADER_SIZE, ilen))
            if ilen ~= U_TOKEN_SIZE then
                item:add_proto_expert_info(uef.bad_token, string.format("%s carries a %d-byte token", type_name, ilen))
                bad = true
            end
        else
            ilen_item:add_proto_expert_info(uef.bad_token, string.format("%s carries a 0-byte token", type_name))
            bad = true
        end
    elseif ilen > 0 then
        local item = root:add(uf.extra, tvb(U_HEADER_SIZE, ilen))
        item:add_proto_expert_info(uef.bad_ident, type_name .. " carries no identity")
        bad = true
    end

    -- The payload: fixed-size fields first, then an optional text running to the end.
    local off = pstart
    local fixed = { token = U_TOKEN_SIZE, members = 2, expiry_ms = 4, code = 1, timestamp = 8, left_reason = 1 }
    local expected = 0
    local has_text = false
    for _, name in ipairs(layout.payload) do
        if fixed[name] then
            expected = expected + fixed[name]
        else
            has_text = true
        end
    end
    local size = len - pstart
    if (has_text and size < expected) or (not has_text and size ~= expected) then
        local item = size > 0 and root:add(uf.extra, tvb(pstart, size)) or root
        item:add_proto_expert_info(uef.bad_size, string.format(
            "%s payload of %d bytes, expected %s%d", type_name, size, has_text and "at least " or "", expected))
        pinfo.cols.info = info .. " [malformed]"
        return len
    end
    local v = {}
    for _, name in ipairs(layout.payload) do
        if name == "token" then
            root:add(uf.token, tvb(off, U_TOKEN_SIZE))
            off = off + U_TOKEN_SIZE
        elseif name == "members" then
            root:add(uf.members, tvb(off, 2))
            v.members = tvb(off, 2):uint()
            off = off + 2
        elseif name == "expiry_ms" then
            root:add(uf.expiry_ms, tvb(off, 4))
            v.expiry_ms = tvb(off, 4):uint()
            off = off + 4
        elseif name == "code" then
            root:add(uf.error_code, tvb(off, 1))
            v.code = tvb(off, 1):uint()
            off = off + 1
        elseif name == "left_reason" then
            root:add(uf.left_reason, tvb(off, 1))
            v.left_reason = tvb(off, 1):uint()
            off = off + 1
        elseif name == "timestamp" then
            local item = root:add(uf.timestamp_ms, tvb(off, 8))
            item:add(uf.time, tvb(off, 8), ms_to_nstime(tvb(off, 8):uint64():tonumber())):set_generated()
            off = off + 8
        elseif name == "padding" then
            if len > off then
                local item = root:add(uf.padding, tvb(off, len - off))
                local raw = tvb(off, len - off):raw()
                if raw:find("[^%z]") then
                    item:add_proto_expert_info(uef.bad_padding, "JOIN padding is not zero bytes")
                    bad = true
                end
            end
            off = len
        elseif name == "text" or name == "reason" then
            local item, text_bad
            v[name], item, text_bad = u_text(tvb, root, name == "text" and uf.text or uf.reason, off, len, name)
            bad = bad or text_bad
            if len - off > U_MAX_TEXT then
                item:add_proto_expert_info(uef.too_long, string.format("Text of %d bytes", len - off))
                bad = true
            end
            off = len
        end
    end

    if utype == 0x01 or utype == 0x45 then -- JOIN, JOINED
        info = info .. " " .. quote(nick)
    elseif utype == 0x41 then -- WELCOME
        info = info .. string.format(" %s others=%d expiry=%dms", quote(nick), v.members, v.expiry_ms)
    elseif utype == 0x42 then -- ERROR
        info = info .. " " .. name_of(U_ERROR_CODES, v.code, "ERROR")
    elseif utype == 0x03 then -- CHAT
        info = info .. " " .. quote(v.text)
    elseif utype == 0x44 then -- RELAY
        info = info .. " " .. quote(nick) .. ": " .. quote(v.text)
    elseif utype == 0x46 then -- LEFT
        info = info .. string.format(" %s %s", quote(nick), name_of(U_LEFT_REASONS, v.left_reason, "REASON"))
    end
    if bad then
        info = info .. " [malformed]"
    end
    pinfo.cols.info = info
    return len
end

local function heuristic_udp(tvb, pinfo, tree)
    if tvb:len() < U_HEADER_SIZE then
        return false
    end
    if tvb(0, 2):uint() ~= U_MAGIC or tvb(2, 1):uint() ~= VERSION or U_LAYOUT[tvb(3, 1):uint()] == nil then
        return false
    end
    su.dissector(tvb, pinfo, tree)
    return true
end

-- --- registration ------------------------------------------------------------------------------

local tcp_port_table = DissectorTable.get("tcp.port")
local udp_port_table = DissectorTable.get("udp.port")
local registered_tcp_port = sb.prefs.tcp_port
local registered_udp_port = su.prefs.udp_port
tcp_port_table:add(registered_tcp_port, sb)
udp_port_table:add(registered_udp_port, su)

function sb.prefs_changed()
    if sb.prefs.tcp_port ~= registered_tcp_port then
        tcp_port_table:remove(registered_tcp_port, sb)
        registered_tcp_port = sb.prefs.tcp_port
        tcp_port_table:add(registered_tcp_port, sb)
    end
end

function su.prefs_changed()
    if su.prefs.udp_port ~= registered_udp_port then
        udp_port_table:remove(registered_udp_port, su)
        registered_udp_port = su.prefs.udp_port
        udp_port_table:add(registered_udp_port, su)
    end
end

sb:register_heuristic("tcp", heuristic_tcp)

-- Over a WebSocket (docs/PROTOCOL.md, "WebSocket transport"): one frame per binary message,
-- found by the subprotocol the upgrade chose, whatever the HTTP port (tell Wireshark which
-- port is HTTP: Decode As, or tshark -d tcp.port==8080,http).
local ok, ws_protocol_table = pcall(DissectorTable.get, "ws.protocol")
if ok and ws_protocol_table ~= nil then
    ws_protocol_table:add("switchboard.v1", sb)
end
su:register_heuristic("udp", heuristic_udp)
