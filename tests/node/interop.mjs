// Redis mode interop: two eventfeed instances (EF_A, EF_B) and an in-process
// Node socket.io@4 server using @socket.io/redis-adapter@8 share one Redis;
// a @socket.io/redis-emitter publisher talks to all of them. The official
// socket.io-client connects to each server (websocket only, and the default
// polling + upgrade) for tenants company_a and company_b.
//
// Usage: EF_A=http://127.0.0.1:P1 EF_B=http://127.0.0.1:P2 REDIS_URL=redis://127.0.0.1:P node interop.mjs
// Both instances run with the demo tokens and NB_BACKEND_REDIS_URL=REDIS_URL on
// a fresh Redis. Without EF_A/EF_B ("node only" mode) the eventfeed parts are
// skipped and a second in-process Node server stands in for them, so the Redis
// paths are still exercised. Ends with "N passed, M failed".

import { io as connectClient } from "socket.io-client";
import { Server, Socket as ServerSocket } from "socket.io";
import { createAdapter } from "@socket.io/redis-adapter";
import { Emitter } from "@socket.io/redis-emitter";
import { createClient } from "redis";
import { createRequire } from "node:module";
import http from "node:http";
import assert from "node:assert/strict";
import { check as checkWithTimeout, finish, once, rest, until } from "./harness.mjs";

// The adapter's own msgpack codec, to read the wire format as its peers do.
const require = createRequire(import.meta.url);
const msgpack = createRequire(require.resolve("@socket.io/redis-adapter"))("notepack.io");

const EF_A = process.env.EF_A;
const EF_B = process.env.EF_B;
const REDIS_URL = process.env.REDIS_URL;
if (!REDIS_URL) {
  console.error("REDIS_URL is required (redis://127.0.0.1:PORT)");
  process.exit(2);
}
if (!!EF_A !== !!EF_B) {
  console.error("set both EF_A and EF_B, or neither (node only mode)");
  process.exit(2);
}
const WITH_EF = !!EF_A;
console.log(
  WITH_EF
    ? `# interop: eventfeed A=${EF_A} B=${EF_B}, Redis ${REDIS_URL}`
    : `# interop: NODE ONLY mode (EF_A/EF_B unset): the eventfeed checks are skipped; a second Node server stands in`,
);

const NSP = "/events";
const A = { tenant: "company_a", token: "token_admin_a", user: "admin_a" };
const B = { tenant: "company_b", token: "token_admin_b", user: "admin_b" };
const R = { tenant: "company_a", token: "token_reader_a", user: "reader_a" };
const TOKENS = {
  token_admin_a: { user: "admin_a", tenant: "company_a", role: "admin" },
  token_admin_b: { user: "admin_b", tenant: "company_b", role: "admin" },
  token_reader_a: { user: "reader_a", tenant: "company_a", role: "reader" },
};
const room = (tenant) => `tenant:${tenant}`;
const UUID_V4 = /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;
/// Each wait on the servers is bounded by SERVER_MS; a check by CHECK_MS (several waits).
const SERVER_MS = 8000;
const CHECK_MS = 30000;
const check = (name, fn) => checkWithTimeout(name, fn, CHECK_MS);

// ------------------------------------------------------------ Redis clients

const redisClients = [];
async function redis() {
  const c = createClient({ url: REDIS_URL, socket: { reconnectStrategy: false, connectTimeout: 5000 } });
  c.on("error", (e) => console.log(`# redis client error: ${e.message}`));
  await c.connect();
  redisClients.push(c);
  return c;
}

// A spy on every broadcast channel of the namespace: [channel, decoded message].
const wire = [];
const spy = await redis();
await spy.pSubscribe(
  `socket.io#${NSP}#*`,
  (msg, channel) => {
    let decoded;
    try {
      decoded = msgpack.decode(msg);
    } catch (e) {
      decoded = { undecodable: msg.toString("hex"), error: e.message };
    }
    wire.push([channel.toString(), decoded]);
  },
  true,
);

// ---------------------------------------------------- in-process Node servers

const nodeServers = [];
async function nodeServer(name) {
  const pub = await redis();
  const sub = await redis();
  const httpServer = http.createServer();
  const io = new Server(httpServer, { adapter: createAdapter(pub, sub) });
  const nsp = io.of(NSP);
  nsp.use((socket, next) => {
    const { tenantId, token } = socket.handshake.auth || {};
    const t = TOKENS[token];
    if (!t || t.tenant !== tenantId) return next(new Error("unauthorized"));
    socket.data = { user: t.user, tenant: t.tenant, role: t.role };
    next();
  });
  nsp.on("connection", (socket) => socket.join(room(socket.data.tenant)));
  await new Promise((res) => httpServer.listen(0, "127.0.0.1", res));
  const url = `http://127.0.0.1:${httpServer.address().port}`;
  const s = { name, io, nsp, url, httpServer };
  nodeServers.push(s);
  return s;
}

const node = await nodeServer("node");
// In node only mode a second Node server plays eventfeed's part on Redis.
const node2 = WITH_EF ? null : await nodeServer("node2");
const emitter = new Emitter(await redis()).of(NSP);

// ------------------------------------------------------------------ clients

const clients = [];
/// A client that records every event it receives, in order.
function client(server, url, who, mode) {
  const transports = mode === "websocket" ? ["websocket"] : ["polling", "websocket"];
  const socket = connectClient(`${url}${NSP}`, {
    path: "/socket.io/",
    transports,
    forceNew: true,
    reconnection: false,
    auth: { tenantId: who.tenant, token: who.token },
  });
  const c = { name: `${server}/${who.user}/${mode}`, server, who, socket, log: [], snapshots: [], errors: [] };
  socket.onAny((ev, ...args) => c.log.push([ev, args]));
  socket.on("snapshot", (s) => c.snapshots.push(s));
  socket.on("connect_error", (e) => c.errors.push(e));
  clients.push(c);
  return c;
}
/// The argument lists of every `ev` a client got.
const got = (c, ev) => c.log.filter(([e]) => e === ev).map(([, args]) => args);

const servers = WITH_EF
  ? [
      ["A", EF_A],
      ["B", EF_B],
      ["node", node.url],
    ]
  : [
      ["node", node.url],
      ["node2", node2.url],
    ];
const isEventfeed = (c) => c.server === "A" || c.server === "B";

// ---------------------------------------------------------------- REST

async function post(base, who, message) {
  const res = await rest(base, "POST", "/api/events", who, { message });
  assert.equal(res.status, 201, res.text);
  assert.equal(res.json.message, message);
  assert.equal(res.json.tenant_id, who.tenant);
  assert.match(res.json.id, UUID_V4);
  return res.json;
}

/// Waits until every client in `cs` got an `ev` whose args satisfy `match`.
async function allGet(cs, ev, match, what) {
  try {
    await until(() => cs.every((c) => got(c, ev).some(match)), what, SERVER_MS);
  } catch (e) {
    const missing = cs.filter((c) => !got(c, ev).some(match));
    throw new Error(`${e.message}: still missing on\n${missing.map(describe).join("\n")}`);
  }
}
/// A client's state and what it received, for failure messages.
const describe = (c) =>
  `  ${c.name} id=${c.socket.id} connected=${c.socket.connected} transport=${c.socket.io.engine?.transport?.name} got=${JSON.stringify(c.log.map(([e, args]) => [e, ...args.map(brief)]))}`.slice(0, 800);
const brief = (a) =>
  Array.isArray(a) && a.every((x) => x && typeof x === "object" && "seq" in x)
    ? `events seq [${a.map((x) => x.seq)}]`
    : a && typeof a === "object" && "seq" in a
      ? `event seq ${a.seq} ${a.tenant_id}`
      : a;
/// Asserts that every client in `cs` got exactly one `ev` matching `match`.
function exactlyOnce(cs, ev, match, what) {
  for (const c of cs) assert.equal(got(c, ev).filter(match).length, 1, `${what} on ${c.name}: ${JSON.stringify(got(c, ev))}`);
}
/// Asserts that no client in `cs` got an `ev` matching `match`.
function never(cs, ev, match, what) {
  for (const c of cs) assert.equal(got(c, ev).filter(match).length, 0, `${what} leaked to ${c.name}: ${JSON.stringify(got(c, ev))}`);
}
const sameBytes = (x, expected) => {
  if (!(x instanceof ArrayBuffer) && !ArrayBuffer.isView(x)) return false;
  const bytes = x instanceof ArrayBuffer ? new Uint8Array(x) : new Uint8Array(x.buffer, x.byteOffset, x.byteLength);
  return bytes.length === expected.length && bytes.every((b, i) => b === expected[i]);
};

let first; // the event created before any client connects
let onA; // the event POSTed on A in check 2

try {
  // ------------------------------------------------------------ 1. connect

  if (WITH_EF) {
    await check("an event posted on A before anyone connects", async () => {
      first = await post(EF_A, A, "before connect");
      assert.equal(typeof first.seq, "number");
    });
  }

  for (const [server, url] of servers) {
    for (const mode of ["websocket", "default"]) {
      client(server, url, A, mode);
      client(server, url, B, mode);
    }
    client(server, url, R, "websocket");
  }
  const cA = () => clients.filter((c) => c.who.tenant === "company_a");
  const cB = () => clients.filter((c) => c.who.tenant === "company_b");

  await check(`1. every client connects (${clients.length} clients on ${servers.map(([s]) => s).join(", ")})`, async () => {
    await until(
      () => clients.every((c) => c.socket.connected || c.errors.length),
      `connect: ${clients.filter((c) => !c.socket.connected).map((c) => c.name)}`,
      SERVER_MS,
    );
    for (const c of clients) assert.deepEqual(c.errors.map(String), [], `${c.name} connect_error`);
    for (const c of clients) assert.match(c.socket.id, /^\S+$/, c.name);
    assert.equal(new Set(clients.map((c) => c.socket.id)).size, clients.length, "socket ids are unique across servers");
  });

  if (WITH_EF) {
    await check("1. eventfeed clients get a snapshot array; A and B show the same shared store", async () => {
      const efs = clients.filter(isEventfeed);
      await until(() => efs.every((c) => c.snapshots.length === 1), "a snapshot on every eventfeed client", SERVER_MS);
      for (const c of efs) assert.ok(Array.isArray(c.snapshots[0]), c.name);
      for (const c of efs.filter((c) => c.who.tenant === "company_a")) {
        assert.deepEqual(c.snapshots[0].at(-1), first, `${c.name}: the event posted on A is in the snapshot`);
      }
      for (const c of efs.filter((c) => c.who.tenant === "company_b")) {
        assert.ok(!c.snapshots[0].some((e) => e.tenant_id !== "company_b"), `${c.name}: company_a in a company_b snapshot`);
      }
      const a = efs.filter((c) => c.server === "A" && c.who === A)[0].snapshots[0];
      const b = efs.filter((c) => c.server === "B" && c.who === A)[0].snapshots[0];
      assert.deepEqual(a, b);
    });
  }

  await check("1. an unknown token or another tenant's token is refused (unauthorized) on every server", async () => {
    for (const [server, url] of servers) {
      for (const auth of [{ tenantId: "company_a", token: "nope" }, { tenantId: "company_b", token: A.token }]) {
        const s = connectClient(`${url}${NSP}`, { transports: ["websocket"], forceNew: true, reconnection: false, auth });
        try {
          const [err] = await once(s, "connect_error");
          assert.equal(err.message, "unauthorized", `${server} ${JSON.stringify(auth)}`);
        } finally {
          s.close();
        }
      }
    }
  });

  // -------------------------------------------------- 2. REST event on A

  if (WITH_EF) {
    let barrier;
    await check("2. an event POSTed on A reaches company_a on A, B and Node exactly once, not company_b", async () => {
      onA = await post(EF_A, A, "posted on A");
      assert.equal(onA.seq, first.seq + 1);
      assert.equal(onA.author, "admin_a");
      await allGet(cA(), "event_created", ([e]) => e?.id === onA.id, "event_created(onA)");
      // Barrier: a later company_b event, through Redis from B, seen everywhere.
      barrier = await post(EF_B, B, "barrier for company_b");
      await allGet(cB(), "event_created", ([e]) => e?.id === barrier.id, "event_created(barrier)");
      for (const c of cA()) {
        const [args] = got(c, "event_created").filter(([e]) => e?.id === onA.id);
        assert.deepEqual(args[0], onA, `${c.name}: the event object as the first argument`);
      }
      exactlyOnce(cA(), "event_created", ([e]) => e?.id === onA.id, "event_created(onA)");
      never(cB(), "event_created", ([e]) => e?.tenant_id !== "company_b", "a company_a event");
      never(cA(), "event_created", ([e]) => e?.tenant_id !== "company_a", "a company_b event");
    });

    await check("2. wire: the broadcast is published as @socket.io/redis-adapter does it", async () => {
      const frames = wire.filter(([, m]) => Array.isArray(m) && m[1]?.data?.[1]?.id === onA.id);
      assert.equal(frames.length, 1, `published once: ${JSON.stringify(frames)}`);
      const [channel, [uid, packet, opts]] = frames[0];
      assert.equal(channel, `socket.io#${NSP}#tenant:company_a#`);
      // Any uid but the emitter's and a Node server's own (Node drops messages carrying its own uid).
      assert.ok(typeof uid === "string" && uid.length > 0, `uid ${JSON.stringify(uid)}`);
      assert.notEqual(uid, "emitter");
      assert.notEqual(uid, node.nsp.adapter.uid);
      assert.equal(packet.type, 2, "EVENT");
      assert.equal(packet.nsp, NSP);
      assert.equal(packet.data[0], "event_created");
      assert.deepEqual(packet.data[1], onA);
      assert.deepEqual(opts.rooms, ["tenant:company_a"]);
      assert.ok(Array.isArray(opts.except), "opts.except is an array");
      assert.ok(opts.flags === undefined || (typeof opts.flags === "object" && !Array.isArray(opts.flags)), "opts.flags: a map if present");
      const fromB = wire.filter(([, m]) => Array.isArray(m) && m[1]?.data?.[1]?.id === barrier.id);
      assert.equal(fromB.length, 1);
      assert.equal(fromB[0][0], `socket.io#${NSP}#tenant:company_b#`);
      assert.notEqual(fromB[0][1][0], node.nsp.adapter.uid);
    });

    // ---------------------------------------------- 3. socket event on B

    await check("3. post_event on B reaches the same set; seq counts up by one, the same on every client", async () => {
      const poster = clients.find((c) => c.name === "B/admin_a/websocket");
      const answer = await poster.socket.timeout(SERVER_MS).emitWithAck("post_event", { message: "posted on B" });
      assert.ok(answer.event, JSON.stringify(answer));
      const ev = answer.event;
      assert.equal(ev.message, "posted on B");
      assert.equal(ev.author, "admin_a");
      assert.equal(ev.seq, onA.seq + 1, "seq + 1 over the shared store (the previous one was created on A)");
      await allGet(cA(), "event_created", ([e]) => e?.id === ev.id, "event_created(post_event)");
      const barrier2 = await post(EF_A, B, "barrier 2 for company_b");
      await allGet(cB(), "event_created", ([e]) => e?.id === barrier2.id, "event_created(barrier 2)");
      exactlyOnce(cA(), "event_created", ([e]) => e?.id === ev.id, "event_created(post_event)");
      never(cB(), "event_created", ([e]) => e?.id === ev.id, "the post_event event");
      const seqOf = (c) => got(c, "event_created").map(([e]) => e.seq);
      const reference = seqOf(cA()[0]);
      for (let i = 1; i < reference.length; i++) assert.equal(reference[i], reference[i - 1] + 1, `no hole: ${reference}`);
      for (const c of cA()) assert.deepEqual(seqOf(c), reference, `${c.name}: the same seqs in the same order`);
      const bRef = seqOf(cB()[0]);
      for (let i = 1; i < bRef.length; i++) assert.equal(bRef[i], bRef[i - 1] + 1, `company_b no hole: ${bRef}`);
      for (const c of cB()) assert.deepEqual(seqOf(c), bRef, `${c.name}: company_b seqs`);
    });
  }

  // ------------------------------------------------ 4. Node server emits

  await check("4. the Node server's room broadcast reaches company_a on every server, not company_b", async () => {
    node.io.of(NSP).to(room("company_a")).emit("node_says", { n: 1 });
    await allGet(cA(), "node_says", ([x]) => x?.n === 1, "node_says {n:1}");
    node.io.of(NSP).to(room("company_b")).emit("node_says", { n: 2 }); // barrier
    await allGet(cB(), "node_says", ([x]) => x?.n === 2, "node_says {n:2}");
    for (const c of cA()) assert.deepEqual(got(c, "node_says"), [[{ n: 1 }]], c.name);
    for (const c of cB()) assert.deepEqual(got(c, "node_says"), [[{ n: 2 }]], c.name);
    const frames = wire.filter(([, m]) => m?.[1]?.data?.[0] === "node_says");
    assert.deepEqual(
      frames.map(([ch]) => ch),
      [`socket.io#${NSP}#tenant:company_a#`, `socket.io#${NSP}#tenant:company_b#`],
    );
  });

  // ------------------------------------------------------ 5. emitter, binary

  await check("5. the emitter's room broadcast with binary reaches company_a on every server", async () => {
    emitter.to(room("company_a")).emit("announcement", "hello", Buffer.from([1, 2, 3]));
    await allGet(cA(), "announcement", ([x]) => x === "hello", "announcement hello");
    emitter.to(room("company_b")).emit("announcement", "bye", Buffer.from([9])); // barrier
    await allGet(cB(), "announcement", ([x]) => x === "bye", "announcement bye");
    for (const c of cA()) {
      const all = got(c, "announcement");
      assert.equal(all.length, 1, `${c.name}: ${JSON.stringify(all)}`);
      assert.equal(all[0][0], "hello");
      assert.ok(sameBytes(all[0][1], [1, 2, 3]), `${c.name}: binary [1,2,3], got ${JSON.stringify(all[0][1])}`);
    }
    for (const c of cB()) {
      const all = got(c, "announcement");
      assert.equal(all.length, 1, `${c.name}: ${JSON.stringify(all)}`);
      assert.equal(all[0][0], "bye");
      assert.ok(sameBytes(all[0][1], [9]), c.name);
    }
  });

  // ------------------------------------------- 6. emitter, namespace-wide

  await check("6. the emitter's namespace-wide broadcast reaches every client of every tenant", async () => {
    emitter.emit("to_all", 5);
    await allGet(clients, "to_all", ([x]) => x === 5, "to_all 5");
    for (const c of clients) assert.deepEqual(got(c, "to_all"), [[5]], c.name);
    const frames = wire.filter(([, m]) => m?.[1]?.data?.[0] === "to_all");
    assert.deepEqual(frames.map(([ch]) => ch), [`socket.io#${NSP}#`]);
  });

  // -------------------------------------- 7. the adapter's request channel

  const peers = servers.length; // Node + A + B (or node + node2)
  await check(`7. serverCount() is ${peers}`, async () => {
    assert.equal(await node.io.of(NSP).adapter.serverCount(), peers);
    const [, n] = await (await redis()).sendCommand(["PUBSUB", "NUMSUB", `socket.io-request#${NSP}#`]);
    assert.equal(Number(n), peers, "PUBSUB NUMSUB socket.io-request#/events#");
  });

  let remote = [];
  await check("7. fetchSockets() of tenant:company_a returns every company_a socket of every server", async () => {
    const sockets = await node.io.of(NSP).in(room("company_a")).fetchSockets();
    const ids = sockets.map((s) => s.id).sort();
    assert.deepEqual(ids, cA().map((c) => c.socket.id).sort());
    remote = sockets.filter((s) => !(s instanceof ServerSocket));
    assert.equal(remote.length, cA().filter((c) => c.server !== "node").length, "the remote ones");
    for (const s of remote) {
      assert.ok(s.rooms.has(room("company_a")), `${s.id} rooms: ${[...s.rooms]}`);
      assert.ok(!s.rooms.has(room("company_b")));
    }
    const bIds = (await node.io.of(NSP).in(room("company_b")).fetchSockets()).map((s) => s.id).sort();
    assert.deepEqual(bIds, cB().map((c) => c.socket.id).sort());
  });

  if (WITH_EF) {
    await check("7. eventfeed's fetchSockets answers never carry a token", async () => {
      assert.ok(remote.length > 0);
      const text = JSON.stringify(remote.map((s) => ({ id: s.id, handshake: s.handshake, rooms: [...s.rooms], data: s.data })));
      for (const token of Object.keys(TOKENS)) assert.ok(!text.includes(token), `${token} in ${text}`);
    });
  }

  await check("7. allRooms() holds both tenant rooms, also those only other servers have", async () => {
    // The Node server keeps no company_b socket, so tenant:company_b must come from the others.
    for (const c of clients.filter((c) => c.server === "node" && c.who === B)) {
      c.socket.close();
      clients.splice(clients.indexOf(c), 1);
    }
    await until(() => !node.nsp.adapter.rooms.has(room("company_b")), "the Node server's company_b sockets gone", SERVER_MS);
    const rooms = await node.io.of(NSP).adapter.allRooms();
    assert.ok(rooms.has(room("company_a")), [...rooms].join(","));
    assert.ok(rooms.has(room("company_b")), [...rooms].join(","));
    assert.ok(![...rooms].some((r) => String(r).startsWith("tenant:") && !/^tenant:company_[ab]$/.test(r)), [...rooms].join(","));
  });

  // ----------------------------------------------------------- 8. readers

  if (WITH_EF) {
    await check("8. GET /api/events/{id} on B of an event created on A; the lists on A and B agree", async () => {
      const one = await rest(EF_B, "GET", `/api/events/${first.id}`, R);
      assert.equal(one.status, 200, one.text);
      assert.deepEqual(one.json, first);
      const other = await rest(EF_B, "GET", `/api/events/${first.id}`, B);
      assert.equal(other.status, 404, `another tenant: ${other.text}`);
      const onA = await rest(EF_A, "GET", "/api/events?limit=10", A);
      const onB = await rest(EF_B, "GET", "/api/events?limit=10", R);
      assert.equal(onA.status, 200, onA.text);
      assert.equal(onB.status, 200, onB.text);
      assert.deepEqual(onB.json, onA.json);
      assert.ok(onA.json.events.length >= 3, onA.text);
      assert.deepEqual(onA.json.events[0], first);
      assert.ok(onA.json.events.every((e) => e.tenant_id === "company_a"));
    });
  }

  await check("no client got any event twice, and no tenant saw another's feed events", async () => {
    for (const c of clients) {
      const ids = got(c, "event_created").map(([e]) => e.id);
      assert.equal(new Set(ids).size, ids.length, `${c.name}: duplicates ${ids}`);
      for (const [e] of got(c, "event_created")) assert.equal(e.tenant_id, c.who.tenant, c.name);
      assert.deepEqual(c.socket.connected, true, `${c.name} still connected`);
    }
  });
} catch (e) {
  // A failure outside a check (setup) counts as a failure.
  await check("setup", async () => {
    throw e;
  });
} finally {
  for (const c of clients) c.socket.close();
  const closing = Promise.allSettled([
    ...nodeServers.map((s) => new Promise((res) => s.io.close(() => res()))),
  ]).then(() => Promise.allSettled(redisClients.map((c) => (c.isOpen ? c.quit() : undefined))));
  await Promise.race([closing, new Promise((res) => setTimeout(res, 3000))]);
}
finish();
