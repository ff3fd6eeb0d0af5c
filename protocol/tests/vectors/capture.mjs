// Captures the wire bytes of @socket.io/redis-adapter 8.3.0 and @socket.io/redis-emitter 5.1.0 — one vector per
// message type: broadcasts (adapter and emitter, with binary and flags), every request type 0–7 (the legacy
// per-socket forms included) and every response type — into redis_adapter.json next to this script, for
// protocol/tests/adapter_vectors.rs.
//
// Re-capture (Node 20; the packages are the ones tests/node/package-lock.json pins):
//
//     cd tests/node && npm ci && node ../../protocol/tests/vectors/capture.mjs
//
// Nothing talks to Redis: the adapter and the emitter get an in-memory stand-in for the Redis client that records
// what they publish (and answers PUBSUB NUMSUB with 2, so that the adapter's requests are sent at all). The bytes
// are what the real packages produce: the real notepack.io (the copy @socket.io/redis-adapter depends on), the
// adapter's own request and response code paths. Answers come from the adapter's `onrequest` fed a request, with
// stand-in sockets (plain objects with an id, a handshake, rooms, data) registered in the namespace so that the
// answers are not empty. The legacy per-socket requests (type 2, 3, 4 with `sid`, and SOCKETS (0)) are no longer
// sent by 8.3.0, which still answers them: they are built here in the shape adapter 7.x published.
//
// `uid2`, which makes the adapter's uid and request ids, reads crypto.randomBytes: it is replaced by a counter so
// that a re-capture gives the same file. `request_ids` records uid2's output for chosen bytes.
//
// Each vector's `decoded` is computed here, independently of the Rust decoder, from what a Node server sees:
// `notepack.decode` (or `JSON.parse`) of the bytes, binary replaced by Socket.IO placeholders by socket.io-parser's
// own encoder (what a Node server sends its clients), room lists made into Sets as the adapter does. Its shape
// mirrors the Rust types (`kind` names the enum variant; an absent `data`/`arg` is `undefined` in Node, `None` in
// Rust; attachments are hex).

import { EventEmitter } from "node:events";
import { createRequire } from "node:module";
import { writeFileSync } from "node:fs";

const require = createRequire(new URL("../../../tests/node/package.json", import.meta.url));
const adapterRequire = createRequire(require.resolve("@socket.io/redis-adapter"));
const notepack = adapterRequire("notepack.io");
const uid2 = adapterRequire("uid2");
const crypto = require("crypto");
const { Server } = require("socket.io");
const { Encoder } = require("socket.io-parser");
const { createAdapter } = require("@socket.io/redis-adapter");
const { Emitter } = require("@socket.io/redis-emitter");

const version = (name) => require(`${name}/package.json`).version;
const packages = {
  "@socket.io/redis-adapter": version("@socket.io/redis-adapter"),
  "@socket.io/redis-emitter": version("@socket.io/redis-emitter"),
  "notepack.io": adapterRequire("notepack.io/package.json").version,
  uid2: adapterRequire("uid2/package.json").version,
  "socket.io": version("socket.io"),
};

// Deterministic "random" bytes for uid2.
let counter = 0;
let queued = [];
crypto.randomBytes = (n) => {
  if (queued.length) return Buffer.from(queued.shift());
  const b = Buffer.alloc(n);
  for (let i = 0; i < n; i++) b[i] = (counter++ * 53 + 7) & 0xff;
  return b;
};

class MockRedis extends EventEmitter {
  constructor() {
    super();
    this.published = [];
  }
  psubscribe() {}
  subscribe() {}
  punsubscribe() {}
  unsubscribe() {}
  publish(channel, msg) {
    this.published.push([channel, Buffer.isBuffer(msg) ? msg : Buffer.from(msg)]);
  }
  send_command(cmd, args, cb) {
    cb(null, ["x", 2]); // PUBSUB NUMSUB: two servers
  }
}

const tick = () => new Promise((r) => setTimeout(r, 5));
const hex = (b) => Buffer.from(b).toString("hex");
const uniq = (rooms) => [...new Set(rooms ?? [])].map(String);

/** `value` as a Node server would send it to clients: binary as placeholders, then JSON. */
function deconstruct(value) {
  const [str, ...buffers] = new Encoder().encode({ type: 2, nsp: "/", data: [value] });
  const json = str.replace(/^(2|5\d+-)/, "");
  return { value: JSON.parse(json)[0], attachments: buffers.map(hex) };
}

function flagsOf(flags = {}) {
  return {
    volatile: !!flags.volatile,
    compress: flags.compress === undefined ? null : !!flags.compress,
    local: !!flags.local,
    timeout: typeof flags.timeout === "number" ? Math.trunc(flags.timeout) : null,
  };
}

function broadcastOf(uid, packet, opts) {
  const { value: data, attachments } = deconstruct(packet.data);
  return {
    uid,
    packet_type: packet.type,
    nsp: packet.nsp ?? "/",
    data,
    attachments,
    rooms: uniq(opts.rooms),
    except: uniq(opts.except),
    flags: flagsOf(opts.flags),
  };
}

const selectorOf = (opts) => ({ rooms: uniq(opts.rooms), except: uniq(opts.except) });

/** What a request decodes to, by the rules of the adapter's `onrequest`. */
function requestOf(msg) {
  const r = msg[0] === 0x7b ? JSON.parse(msg.toString()) : notepack.decode(msg);
  const uid = r.uid ?? null;
  const id = r.requestId;
  let request;
  switch (r.type) {
    case 0:
      request = { kind: "Sockets", request_id: id, rooms: uniq(r.rooms) };
      break;
    case 1:
      request = { kind: "AllRooms", request_id: id };
      break;
    case 2:
    case 3: {
      const name = r.type === 2 ? "RemoteJoin" : "RemoteLeave";
      request = r.opts
        ? { kind: name, selector: selectorOf(r.opts), rooms: uniq(r.rooms) }
        : { kind: `${name}Socket`, request_id: id, sid: r.sid, room: String(r.room) };
      break;
    }
    case 4:
      request = r.opts
        ? { kind: "RemoteDisconnect", selector: selectorOf(r.opts), close: !!r.close }
        : { kind: "RemoteDisconnectSocket", request_id: id, sid: r.sid, close: !!r.close };
      break;
    case 5:
      request = { kind: "RemoteFetch", request_id: id, selector: selectorOf(r.opts) };
      break;
    case 6: {
      const { value: data, attachments } = deconstruct(r.data);
      request = { kind: "ServerSideEmit", request_id: id ?? null, data, attachments };
      break;
    }
    case 7:
      request = { kind: "BroadcastWithAck", request_id: id, broadcast: broadcastOf(uid ?? "", r.packet, r.opts) };
      break;
    default:
      request = { kind: "Other", type: r.type };
  }
  return { uid, request };
}

/** What a response decodes to; `kind` is what the script asked for (Node's answers mostly carry no type). */
function responseOf(kind, msg) {
  const r = msg[0] === 0x7b ? JSON.parse(msg.toString()) : notepack.decode(msg);
  const out = { kind, request_id: r.requestId };
  const optional = (key, value) => {
    if (value !== undefined) {
      const { value: v, attachments } = deconstruct(value);
      out[key] = v;
      out.attachments = attachments;
    } else {
      out.attachments = [];
    }
  };
  switch (kind) {
    case "Sockets":
      out.sockets = r.sockets;
      break;
    case "AllRooms":
      out.rooms = r.rooms.map(String);
      break;
    case "RemoteAck":
      break;
    case "RemoteFetch":
      out.sockets = r.sockets.map((s) => ({
        id: s.id,
        handshake: s.handshake ?? null,
        rooms: s.rooms.map(String),
        data: s.data ?? null,
      }));
      break;
    case "ServerSideEmit":
      optional("data", r.data);
      break;
    case "BroadcastClientCount":
      out.client_count = r.clientCount;
      break;
    case "BroadcastAck":
      optional("arg", r.packet);
      break;
  }
  return out;
}

const vectors = [];

function take(client, name, kind, how, extra = {}) {
  const next = client.published.shift();
  if (!next) throw new Error(`${name}: nothing published`);
  const [channel, msg] = next;
  const json = msg[0] === 0x7b;
  const v = { name, kind, how, channel, format: json ? "json" : "msgpack" };
  if (json) v.json = msg.toString();
  else v.hex = hex(msg);
  Object.assign(v, extra);
  if (kind === "broadcast") {
    v.decoded = broadcastOf(...notepack.decode(msg));
  } else if (kind === "request") {
    v.decoded = requestOf(msg);
  } else {
    v.decoded = responseOf(extra.response_kind, msg);
    delete v.response_kind;
  }
  vectors.push(v);
}

/** A request in the shape adapter 7.x published it (8.3.0 only answers these). */
function legacy(name, obj) {
  const msg = Buffer.from(JSON.stringify(obj));
  vectors.push({
    name,
    kind: "request",
    how: `adapter 7.x: JSON.stringify(${JSON.stringify(obj)})`,
    channel: "socket.io-request#/events#",
    format: "json",
    json: msg.toString(),
    decoded: requestOf(msg),
  });
}

/** A stand-in socket: what the adapter reads of a socket when answering. */
function fakeSocket(nsp, id, rooms, handshake, data) {
  const socket = {
    id,
    handshake,
    rooms: new Set([id, ...rooms]),
    data,
    acks: new Map(),
    client: { writeToEngine() {} },
    join() {},
    leave() {},
    disconnect() {},
  };
  nsp.sockets.set(id, socket);
  nsp.adapter.addAll(id, socket.rooms);
  return socket;
}

// --- uid2 ---------------------------------------------------------------------------------------------------------

const request_ids = [];
for (const bytes of [
  [0, 25, 26, 51, 52, 61],
  [62, 63, 64, 127, 128, 255],
  [1, 2, 3, 200, 201, 202],
]) {
  queued.push(bytes);
  request_ids.push({ random: hex(bytes), id: uid2(6) });
}

// --- emitter ------------------------------------------------------------------------------------------------------

const er = new MockRedis();
const emitter = new Emitter(er);
const events = emitter.of("/events");
events.to("room1").emit("ev", "str", 42, { nested: { a: [1, 2.5, null], b: true }, u: undefined }, Buffer.from([1, 2, 3]));
take(er, "emitter_broadcast_room_binary", "broadcast", 'emitter.of("/events").to("room1").emit("ev", "str", 42, {nested: {a: [1, 2.5, null], b: true}, u: undefined}, Buffer.from([1, 2, 3]))', { encodable: false });
events.except(["r1", "r2"]).volatile.emit("hello", -1, [undefined, "x"]);
take(er, "emitter_broadcast_except_volatile", "broadcast", 'emitter.of("/events").except(["r1", "r2"]).volatile.emit("hello", -1, [undefined, "x"])', { encodable: false });
events.to(["a", "b"]).compress(false).emit("multi", new Date(Date.UTC(2024, 0, 2, 3, 4, 5, 678)), 1.5, -300, 2 ** 40);
take(er, "emitter_broadcast_rooms_date_compress", "broadcast", 'emitter.of("/events").to(["a", "b"]).compress(false).emit("multi", new Date(Date.UTC(2024, 0, 2, 3, 4, 5, 678)), 1.5, -300, 2 ** 40)', { encodable: false });
events.in("r").socketsJoin(["x", "y"]);
take(er, "emitter_remote_join", "request", 'emitter.of("/events").in("r").socketsJoin(["x", "y"])');
events.socketsLeave("x");
take(er, "emitter_remote_leave", "request", 'emitter.of("/events").socketsLeave("x")');
events.except("r").disconnectSockets(true);
take(er, "emitter_remote_disconnect", "request", 'emitter.of("/events").except("r").disconnectSockets(true)');
events.serverSideEmit("hi", { a: 1 });
take(er, "emitter_server_side_emit", "request", 'emitter.of("/events").serverSideEmit("hi", {a: 1})');

// --- adapter: broadcasts and requests -----------------------------------------------------------------------------

const pub = new MockRedis();
const sub = new MockRedis();
const io = new Server();
io.adapter(createAdapter(pub, sub, { key: "socket.io" }));
const nsp = io.of("/events");
const uid = nsp.adapter.uid;
const handshake = {
  headers: { host: "example.test", "user-agent": "node" },
  time: "Tue Jan 02 2024 03:04:05 GMT+0000 (Coordinated Universal Time)",
  address: "::1",
  xdomain: false,
  secure: false,
  issued: 1704164645678,
  url: "/socket.io/?EIO=4&transport=websocket",
  query: { EIO: "4", transport: "websocket" },
  auth: {},
};
const socket = fakeSocket(nsp, "sid1", ["room1"], handshake, { user: "u", score: 1.5 });

nsp.to("room1").emit("bin", Buffer.from("hi"), { x: Buffer.alloc(0), y: [Buffer.from([255])] });
take(pub, "adapter_broadcast_room_binary", "broadcast", 'io.of("/events").to("room1").emit("bin", Buffer.from("hi"), {x: Buffer.alloc(0), y: [Buffer.from([255])]})', { encodable: true });
nsp.except("a").volatile.compress(false).emit("all", { 2: "two", b: 1, 1: "one", u: undefined }, -1.5, 2 ** 53 + 2, -(2 ** 40), "é✓𝄞\n\"", [undefined, null, false]);
take(pub, "adapter_broadcast_except_flags", "broadcast", 'io.of("/events").except("a").volatile.compress(false).emit("all", {2: "two", b: 1, 1: "one", u: undefined}, -1.5, 2 ** 53 + 2, -(2 ** 40), "é✓𝄞\\n\\"", [undefined, null, false])', { encodable: true });
nsp.to(["r1", "r2"]).except(["x", "x"]).emit("many", { nested: { deep: [[1, [2]], {}] } }, "a".repeat(40), 0.1);
take(pub, "adapter_broadcast_rooms", "broadcast", 'io.of("/events").to(["r1", "r2"]).except(["x", "x"]).emit("many", {nested: {deep: [[1, [2]], {}]}}, "a".repeat(40), 0.1)', { encodable: true });
io.emit("root", 1);
take(pub, "adapter_broadcast_root_namespace", "broadcast", 'io.emit("root", 1)', { encodable: true });

legacy("legacy_sockets", { uid: "old1", requestId: "rq1", type: 0, rooms: ["r1", "r2"] });
nsp.adapter.allRooms().catch(() => {});
await tick();
take(pub, "adapter_all_rooms", "request", "io.of(\"/events\").adapter.allRooms()");
nsp.in("r").socketsJoin(["j1", "j2"]);
take(pub, "adapter_remote_join", "request", 'io.of("/events").in("r").socketsJoin(["j1", "j2"])');
legacy("legacy_remote_join_socket", { uid: "old1", requestId: "rq2", type: 2, sid: "sid1", room: "newroom" });
nsp.except("e").socketsLeave(["l1", "l2"]);
take(pub, "adapter_remote_leave", "request", 'io.of("/events").except("e").socketsLeave(["l1", "l2"])');
legacy("legacy_remote_leave_socket", { uid: "old1", requestId: "rq3", type: 3, sid: "sid1", room: "room1" });
nsp.in("r").disconnectSockets(true);
take(pub, "adapter_remote_disconnect", "request", 'io.of("/events").in("r").disconnectSockets(true)');
legacy("legacy_remote_disconnect_socket", { uid: "old1", requestId: "rq4", type: 4, sid: "sid1", close: false });
nsp.in("room1").except("x").fetchSockets().catch(() => {});
await tick();
take(pub, "adapter_remote_fetch", "request", 'io.of("/events").in("room1").except("x").fetchSockets()');
nsp.serverSideEmit("sse", 1, "two", { a: [true, null] });
take(pub, "adapter_server_side_emit", "request", 'io.of("/events").serverSideEmit("sse", 1, "two", {a: [true, null]})');
nsp.serverSideEmit("sse-ack", { q: 1.5 }, () => {});
await tick();
take(pub, "adapter_server_side_emit_ack", "request", 'io.of("/events").serverSideEmit("sse-ack", {q: 1.5}, () => {})');
nsp.timeout(1000).emit("ack-me", 7, () => {});
take(pub, "adapter_broadcast_with_ack", "request", 'io.of("/events").timeout(1000).emit("ack-me", 7, () => {})');
nsp.to("room1").except("x").volatile.compress(false).timeout(250).emit("ack-bin", Buffer.from([1, 2, 3]), { file: Buffer.from("z") }, () => {});
take(pub, "adapter_broadcast_with_ack_binary_flags", "request", 'io.of("/events").to("room1").except("x").volatile.compress(false).timeout(250).emit("ack-bin", Buffer.from([1, 2, 3]), {file: Buffer.from("z")}, () => {})');
if (pub.published.length) throw new Error(`unexpected messages: ${pub.published.map((p) => p[0])}`);

// --- adapter: responses -------------------------------------------------------------------------------------------

const reqCh = "socket.io-request#/events#";
const feed = async (obj, msgpack) => {
  await nsp.adapter.onrequest(reqCh, msgpack ? notepack.encode(obj) : Buffer.from(JSON.stringify(obj)));
  await tick();
};
const resp = (name, kind, how) => take(pub, name, "response", how, { response_kind: kind, encodable: true });

await feed({ uid: "other", requestId: "r0", type: 0, rooms: ["room1"] });
resp("response_sockets", "Sockets", 'onrequest({uid: "other", requestId: "r0", type: 0, rooms: ["room1"]}), socket sid1 in room1');
await feed({ uid: "other", requestId: "r1", type: 1 });
resp("response_all_rooms", "AllRooms", 'onrequest({uid: "other", requestId: "r1", type: 1})');
await feed({ uid: "old1", requestId: "rq2", type: 2, sid: "sid1", room: "newroom" });
resp("response_remote_join_socket", "RemoteAck", 'onrequest({uid: "old1", requestId: "rq2", type: 2, sid: "sid1", room: "newroom"})');
await feed({ uid: "old1", requestId: "rq3", type: 3, sid: "sid1", room: "room1" });
resp("response_remote_leave_socket", "RemoteAck", 'onrequest({uid: "old1", requestId: "rq3", type: 3, sid: "sid1", room: "room1"})');
await feed({ uid: "old1", requestId: "rq4", type: 4, sid: "sid1", close: false });
resp("response_remote_disconnect_socket", "RemoteAck", 'onrequest({uid: "old1", requestId: "rq4", type: 4, sid: "sid1", close: false})');
await feed({ uid: "other", requestId: "r5", type: 5, opts: { rooms: ["room1"], except: [] } });
resp("response_remote_fetch", "RemoteFetch", 'onrequest({uid: "other", requestId: "r5", type: 5, opts: {rooms: ["room1"], except: []}})');
await feed({ uid: "other", requestId: "r5b", type: 5, opts: { rooms: ["nobody"], except: [] } });
resp("response_remote_fetch_none", "RemoteFetch", 'onrequest({uid: "other", requestId: "r5b", type: 5, opts: {rooms: ["nobody"], except: []}})');
nsp.on("sse-ack", (arg, cb) => cb({ pong: arg, at: 1.25 }));
nsp.on("sse-void", (cb) => cb());
await feed({ uid: "other", requestId: "r6", type: 6, data: ["sse-ack", 5] });
resp("response_server_side_emit", "ServerSideEmit", 'onrequest({uid: "other", requestId: "r6", type: 6, data: ["sse-ack", 5]}), listener cb({pong: arg, at: 1.25})');
await feed({ uid: "other", requestId: "r6b", type: 6, data: ["sse-void"] });
resp("response_server_side_emit_no_argument", "ServerSideEmit", 'onrequest({uid: "other", requestId: "r6b", type: 6, data: ["sse-void"]}), listener cb()');
// The broadcasts with an acknowledgement above reached the stand-in socket too: forget their acks.
socket.acks.clear();
await feed(
  { uid: "other", requestId: "r7", type: 7, packet: { type: 2, data: ["x"], nsp: "/events" }, opts: { rooms: ["room1"], except: [], flags: { timeout: 100 } } },
  true,
);
resp("response_broadcast_client_count", "BroadcastClientCount", 'onrequest(BROADCAST {requestId: "r7", opts.rooms: ["room1"]}) in msgpack, socket sid1 in room1');
const [ack] = socket.acks.values();
ack({ ok: true, n: 2 });
resp("response_broadcast_ack", "BroadcastAck", "the client acknowledges with {ok: true, n: 2}");
ack(Buffer.from([9, 8, 7]));
resp("response_broadcast_ack_binary", "BroadcastAck", "the client acknowledges with Buffer.from([9, 8, 7])");

// A responder that answers on the requester's own channel.
const pub2 = new MockRedis();
const io2 = new Server();
io2.adapter(createAdapter(pub2, new MockRedis(), { key: "socket.io", publishOnSpecificResponseChannel: true }));
const nsp2 = io2.of("/events");
fakeSocket(nsp2, "sid2", ["room2"], handshake, {});
await nsp2.adapter.onrequest(reqCh, Buffer.from(JSON.stringify({ uid: "other", requestId: "r1b", type: 1 })));
await tick();
take(pub2, "response_all_rooms_specific_channel", "response", 'publishOnSpecificResponseChannel: true; onrequest({uid: "other", requestId: "r1b", type: 1})', {
  response_kind: "AllRooms",
  encodable: true,
  requester: "other",
});

const out = {
  generator: "protocol/tests/vectors/capture.mjs (run from tests/node: node ../../protocol/tests/vectors/capture.mjs)",
  packages,
  key: "socket.io",
  nsp: "/events",
  adapter_uid: uid,
  request_ids,
  vectors,
};
writeFileSync(new URL("redis_adapter.json", import.meta.url), JSON.stringify(out, null, 2) + "\n");
console.log(`${vectors.length} vectors written`);
process.exit(0);
