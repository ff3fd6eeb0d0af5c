// Redis mode failover with the official socket.io-client (driven by
// tests/cluster_failover.rs): two eventfeed instances A and B on one Redis;
// the Rust side owns the processes and kills / stops / restarts them when this
// script asks for it on stdout, answering on stdin.
//
// Usage: EF_A=http://127.0.0.1:P1 EF_B=http://127.0.0.1:P2 node failover.mjs SCENARIO
// SCENARIO: failover | recovery | restarts. Both instances run with the demo
// tokens on a fresh Redis.
//
// Control protocol: this script prints `@@ <verb> <A|B>` (verb: kill9,
// terminate, restart; or `@@ sessions -` for the kept sessions in Redis, as
// `{"sessions": {pid: PTTL ms}}`) and reads one JSON line back:
// `{"ok": true, "A": url|null, "B": url|null, "pids": {"A": pid|null, "B": pid|null}, "code": exit code|null}`
// (`A`/`B`: the current URL of each running instance, `pids` their process
// ids; `code`: the exit code of a terminated one), or `{"ok": false, "error": "..."}`.
//
// Clients reach A through a small TCP proxy (in this file) so that when A goes
// away the official client's own reconnection is what brings them back, on
// whichever instance the proxy forwards to by then. Ends with "N passed, M failed".

import { io } from "socket.io-client";
import net from "node:net";
import readline from "node:readline";
import assert from "node:assert/strict";
import { check, finish, offsetSeqs, rest, until } from "./harness.mjs";


const SCENARIO = process.argv[2];
let EF_A = process.env.EF_A;
let EF_B = process.env.EF_B;
if (!EF_A || !EF_B || !SCENARIO) {
  console.error("usage: EF_A=URL EF_B=URL node failover.mjs failover|recovery|restarts");
  process.exit(2);
}

const NSP = "/events";
const TA = { tenant: "company_a", token: "token_admin_a", user: "admin_a" };
const TB = { tenant: "company_b", token: "token_admin_b", user: "admin_b" };
const RA = { tenant: "company_a", token: "token_reader_a", user: "reader_a" };
const WAIT_MS = 15000;
/// Bound of one check (several waits, and the Rust side's process operations).
const CHECK_MS = 30000;

// ------------------------------------------------------------ control channel

const lines = [];
let lineWaiter = null;
readline.createInterface({ input: process.stdin }).on("line", (l) => {
  if (lineWaiter) {
    const w = lineWaiter;
    lineWaiter = null;
    w(l);
  } else lines.push(l);
});

/// Asks the Rust side to act on an instance; returns its JSON answer and
/// updates EF_A / EF_B (a restarted instance has a new port).
async function ask(verb, which) {
  console.log(`@@ ${verb} ${which}`);
  const line = lines.length ? lines.shift() : await new Promise((r) => (lineWaiter = r));
  const answer = JSON.parse(line);
  if (!answer.ok) throw new Error(`${verb} ${which}: ${answer.error}`);
  if (answer.A) EF_A = answer.A;
  if (answer.B) EF_B = answer.B;
  return answer;
}

// ---------------------------------------------------------------- TCP proxy

/// A TCP proxy on a free loopback port forwarding each new connection to
/// `target` (changeable with `switchTo`). When either side of a forwarded
/// connection ends, both are closed, so a dead upstream looks to the client as
/// a lost connection, and a refused upstream as a failed connection attempt.
async function proxy(target) {
  const p = { target, conns: new Set(), forwarded: {}, refused: 0 };
  const server = net.createServer((client) => {
    const target = p.target;
    const t = new URL(target);
    const up = net.connect(Number(t.port), t.hostname);
    const pair = { client, up };
    p.conns.add(pair);
    let connected = false;
    up.on("connect", () => {
      connected = true;
      p.forwarded[target] = (p.forwarded[target] || 0) + 1;
    });
    const close = () => {
      client.destroy();
      up.destroy();
      p.conns.delete(pair);
    };
    client.on("error", close);
    client.on("close", close);
    up.on("error", () => {
      if (!connected) p.refused++;
      close();
    });
    up.on("close", close);
    client.pipe(up);
    up.pipe(client);
  });
  await new Promise((res) => server.listen(0, "127.0.0.1", res));
  p.url = `http://127.0.0.1:${server.address().port}`;
  p.switchTo = (url) => (p.target = url);
  p.close = () => {
    server.close();
    for (const { client, up } of p.conns) {
      client.destroy();
      up.destroy();
    }
  };
  return p;
}

// --------------------------------------------------------------------- REST


/// POSTs an event; asserts the 201 and returns the event.
async function post(base, who, message) {
  const res = await rest(base, "POST", "/api/events", who, { message });
  assert.equal(res.status, 201, `POST on ${base}: ${res.status} ${res.text}`);
  assert.equal(res.json.tenant_id, who.tenant);
  assert.equal(res.json.message, message);
  return res.json;
}

/// Every event of `who`'s tenant as GET /api/events?limit=1000 shows it.
async function history(base, who) {
  const res = await rest(base, "GET", "/api/events?limit=1000", who);
  assert.equal(res.status, 200, `GET /api/events on ${base}: ${res.text}`);
  assert.equal(res.json.hasMore, false);
  assert.equal(res.json.gap, false);
  return res.json.events;
}

const seqRange = (from, to) => Array.from({ length: Math.max(0, to - from + 1) }, (_, i) => from + i);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// ------------------------------------------------------------------ clients

const all = [];
/// An official client that records, in arrival order, every event it is
/// given (snapshot, replay_result, event_created alike), with where it came
/// from. `auth` is a function: each (re)connect sends the id of the last event
/// this client saw as `sinceId` when `cursor` is set.
function client(name, url, who, { transports, cursor = false, since = null, reconnection = true, autoConnect = true } = {}) {
  const c = { name, who, items: [], lastId: since, connects: [], disconnects: [], errors: [], snapshots: [], replays: [], offsets: [] };
  const socket = io(`${url}${NSP}`, {
    forceNew: true,
    transports,
    reconnection,
    autoConnect,
    reconnectionDelay: 50,
    reconnectionDelayMax: 250,
    randomizationFactor: 0.5,
    timeout: 5000,
    auth: (cb) => cb({ tenantId: who.tenant, token: who.token, ...(cursor && c.lastId ? { sinceId: c.lastId } : {}) }),
  });
  c.socket = socket;
  const see = (src, e) => {
    c.items.push({ src, e });
    c.lastId = e.id;
  };
  socket.on("snapshot", (s) => {
    c.snapshots.push(s);
    for (const e of s) see("snapshot", e);
  });
  socket.on("replay_result", (r) => {
    c.replays.push(r);
    for (const e of r.events) see("replay", e);
  });
  socket.on("event_created", (e, offset) => {
    c.offsets.push(offset);
    see("live", e);
  });
  socket.on("connect", () => c.connects.push({ id: socket.id, recovered: socket.recovered, pid: socket._pid }));
  socket.on("disconnect", (reason) => c.disconnects.push(reason));
  socket.on("connect_error", (e) => c.errors.push(e.message));
  all.push(c);
  return c;
}
const seqs = (c) => c.items.map(({ e }) => e.seq);
const describe = (c) =>
  `${c.name}: connected=${c.socket.connected} connects=${JSON.stringify(c.connects)} disconnects=${JSON.stringify(c.disconnects)} ` +
  `errors=${c.errors.length} snapshots=${c.snapshots.length} replays=${JSON.stringify(c.replays.map((r) => ({ n: r.events.length, seqs: r.events.map((e) => e.seq).join(","), hasMore: r.hasMore, gap: r.gap })))} ` +
  `items=${c.items.map(({ src, e }) => `${src[0]}${e.seq}`).join(" ")}`;

/// Waits until `pred(c)` holds for every client of `cs`; the failure names the others.
async function allUntil(cs, pred, what, ms = WAIT_MS) {
  try {
    await until(() => cs.every(pred), what, ms);
  } catch (e) {
    throw new Error(`${e.message}; not yet on:\n${cs.filter((c) => !pred(c)).map(describe).join("\n")}`);
  }
}

// ---------------------------------------------------------------- scenarios

/// 1. Clients on A (through the proxy) with a sinceId cursor; a publisher on
/// B; A SIGKILLed midway and restarted; the clients come back on B by their
/// own reconnection and resume from their cursor: every acknowledged event
/// exactly once, in seq order, no company_b event to company_a.
async function failover() {
  const PRE = 5; // company_a events before the clients connect (their snapshot)
  const TOTAL = 150; // company_a events posted on B while the clients run
  const KILL_AT = 50; // A is SIGKILLed after this many of them
  const B_EVERY = 3; // a company_b event every B_EVERY-th tick
  const N = 20;
  const px = await proxy(EF_A);
  const acked = new Map(); // company_a: seq -> event (the 201 answers)
  const ackedB = new Map();
  let cs, csB;

  await check("failover: 20 official clients (websocket-only, default and polling-only transports) connect to A through the proxy", async () => {
    for (let i = 1; i <= PRE; i++) {
      const e = await post(EF_B, TA, `pre ${i}`);
      acked.set(e.seq, e);
    }
    assert.deepEqual([...acked.keys()], seqRange(1, PRE), "a fresh store starts at seq 1");
    const e = await post(EF_B, TB, "pre b");
    ackedB.set(e.seq, e);
    const kinds = [
      ["ws", ["websocket"]],
      ["default", ["polling", "websocket"]],
      ["ws", ["websocket"]],
      ["default", ["polling", "websocket"]],
      ["polling", ["polling"]],
    ];
    cs = Array.from({ length: N }, (_, i) => {
      const [kind, transports] = kinds[i % kinds.length];
      return client(`a${i}/${kind}`, px.url, TA, { transports, cursor: true });
    });
    csB = Array.from({ length: 4 }, (_, i) => {
      const transports = i % 2 ? ["websocket"] : ["polling", "websocket"];
      return client(`b${i}/${transports.length === 1 ? "ws" : "default"}`, px.url, TB, { transports, cursor: true });
    });
    await allUntil([...cs, ...csB], (c) => c.connects.length === 1 && c.snapshots.length === 1, "connect + snapshot on A");
    assert.equal(px.forwarded[EF_A] >= N + 4, true, `connections forwarded to A: ${JSON.stringify(px.forwarded)}`);
    for (const c of cs) assert.deepEqual(c.snapshots[0], [...acked.values()], `${c.name}: snapshot = the ${PRE} events`);
    for (const c of csB) assert.deepEqual(c.snapshots[0], [...ackedB.values()], `${c.name}: company_b snapshot`);
  }, CHECK_MS);

  await check("failover: A SIGKILLed midway while B publishes; every client resumes on B from its cursor, every event exactly once, in seq order", async () => {
    const failures = [];
    let killed;
    const killedA = new Promise((r) => (killed = r));
    let restartedA;
    // company_b publisher on B, interleaved.
    const publishB = (async () => {
      for (let i = 1; i <= TOTAL / B_EVERY; i++) {
        try {
          const e = await post(EF_B, TB, `b ${i}`);
          ackedB.set(e.seq, e);
        } catch (err) {
          failures.push(err.message);
        }
        await sleep(20 * B_EVERY);
      }
    })();
    for (let i = 1; i <= TOTAL; i++) {
      try {
        const e = await post(EF_B, TA, `live ${i}`);
        acked.set(e.seq, e);
      } catch (err) {
        failures.push(err.message);
      }
      if (i === KILL_AT) {
        // Ask for the kill, and keep publishing while it happens.
        ask("kill9", "A").then(async (answer) => {
          assert.equal(answer.A, null, "A is down");
          px.switchTo(EF_B);
          killed();
          // A comes back (new port) while the clients are reconnecting to B.
          restartedA = await ask("restart", "A");
        }).catch((err) => failures.push(`kill/restart: ${err.message}`));
      }
      await sleep(20);
    }
    await publishB;
    await killedA;
    assert.deepEqual(failures, [], "every POST answered 201");
    assert.deepEqual([...acked.keys()], seqRange(1, PRE + TOTAL), "the 201 answers carry seq 1..N with no hole");
    const last = PRE + TOTAL;
    const lastB = Math.max(...ackedB.keys());
    await allUntil(cs, (c) => c.items.some(({ e }) => e.seq === last), `every company_a client has seq ${last}`, 20000);
    await allUntil(csB, (c) => c.items.some(({ e }) => e.seq === lastB), `every company_b client has seq ${lastB}`, 20000);
    await until(() => restartedA, "A restarted", 20000);
    assert.equal(restartedA.A, EF_A, "A is up again");
    for (const c of cs) {
      // No dedupe: the raw sequence of everything this client was given.
      assert.deepEqual(seqs(c), seqRange(1, last), `${c.name}: each event exactly once, in seq order\n${describe(c)}`);
      for (const { e } of c.items) {
        assert.equal(e.tenant_id, "company_a", `${c.name}: a ${e.tenant_id} event reached company_a`);
        assert.deepEqual(e, acked.get(e.seq), `${c.name}: event ${e.seq} as acknowledged`);
      }
      assert.equal(c.connects.length, 2, `${c.name}: connected to A, then once to B\n${describe(c)}`);
      assert.ok(c.disconnects.length >= 1, `${c.name}: saw A go away`);
      assert.equal(c.snapshots.length, 1, `${c.name}: one snapshot (the first connect)`);
      assert.equal(c.replays.length, 1, `${c.name}: one replay_result (the reconnect with sinceId)`);
      assert.equal(c.replays[0].gap, false, `${c.name}: no gap`);
      assert.equal(c.replays[0].hasMore, false, `${c.name}: hasMore`);
      assert.ok(c.items.filter(({ src }) => src === "live").length > 0, `${c.name}: live events after the replay`);
      // Every event before the kill arrived live on A, so the replay starts after the client's last one.
      const firstReplayed = c.items.findIndex(({ src }) => src === "replay");
      if (firstReplayed >= 0) assert.ok(c.items[firstReplayed].e.seq > PRE, `${c.name}: the replay resumes after the snapshot`);
    }
    for (const c of csB) {
      assert.deepEqual(seqs(c), seqRange(1, lastB), `${c.name}: company_b events exactly once, in order\n${describe(c)}`);
      for (const { e } of c.items) assert.deepEqual(e, ackedB.get(e.seq), `${c.name}: company_b event ${e.seq}`);
      assert.equal(c.connects.length, 2, `${c.name}: connected twice\n${describe(c)}`);
    }
    assert.ok(px.forwarded[EF_B] >= N + 4, `reconnections forwarded to B: ${JSON.stringify(px.forwarded)}`);
    console.log(`# proxy: forwarded ${JSON.stringify(px.forwarded)}, refused ${px.refused}`);
    console.log(`# replayed per client: ${cs.map((c) => c.replays[0].events.length).join(" ")}`);
  }, CHECK_MS + 10000);

  await check("failover: the restarted A serves the same history as B (GET /api/events?limit=1000)", async () => {
    const last = PRE + TOTAL;
    const [onA, onB] = [await history(EF_A, TA), await history(EF_B, TA)];
    assert.equal(onA.length, last);
    assert.deepEqual(onA, onB);
    assert.deepEqual(onA, [...acked.values()]);
    const [bOnA, bOnB] = [await history(EF_A, TB), await history(EF_B, TB)];
    assert.deepEqual(bOnA, bOnB);
    assert.deepEqual(bOnA, [...ackedB.values()]);
    // And it takes writes again: the next seq on A follows B's.
    const next = await post(EF_A, TA, "after the restart");
    assert.equal(next.seq, last + 1);
    await allUntil(cs, (c) => c.items.at(-1)?.e.id === next.id, "the event posted on the restarted A, live on B's clients");
  }, CHECK_MS);

  for (const c of all) c.socket.disconnect();
  px.close();
}

/// 2. Connection state recovery across instances: A stopped gracefully, the
/// clients' own reconnection lands on B and recovers (same id, exactly the
/// missed events); another tenant's (or user's) token with the pid does not.
async function recovery() {
  const px = await proxy(EF_A);
  const posted = [];
  let owners;
  let before;

  await check("recovery: clients on A (through the proxy) receive events with offsets", async () => {
    for (let i = 1; i <= 2; i++) posted.push(await post(EF_B, TA, `pre ${i}`));
    owners = [
      client("owner/ws", px.url, TA, { transports: ["websocket"] }),
      client("owner/default", px.url, TA, { transports: ["polling", "websocket"] }),
      client("owner/polling", px.url, TA, { transports: ["polling"] }),
      // Sends sinceId too (as the failover clients do): recovery wins, no replay_result on top.
      client("owner/ws+sinceId", px.url, TA, { transports: ["websocket"], cursor: true }),
    ];
    await allUntil(owners, (c) => c.connects.length === 1 && c.snapshots.length === 1, "connect + snapshot");
    for (const c of owners) {
      assert.equal(c.connects[0].recovered, false);
      assert.deepEqual(c.snapshots[0], posted);
      assert.ok(typeof c.connects[0].pid === "string" && c.connects[0].pid.length > 0, `${c.name}: a pid`);
    }
    // Let the default client finish its upgrade first (so the cut is of a websocket).
    await until(() => owners[1].socket.io.engine?.transport?.name === "websocket", "upgrade", WAIT_MS);
    for (let i = 3; i <= 5; i++) posted.push(await post(EF_B, TA, `seen ${i}`));
    await allUntil(owners, (c) => c.items.length === 5, "3 live events");
    for (const c of owners) {
      assert.deepEqual(seqs(c), [1, 2, 3, 4, 5]);
      assert.deepEqual(offsetSeqs(c.offsets), ["3", "4", "5"], `${c.name}: each event_created carries its offset last`);
    }
    // One more that connects now: it has the snapshot (up to seq 5) but no event_created, so no offset.
    const quiet = client("owner/quiet", px.url, TA, { transports: ["websocket"] });
    await until(() => quiet.snapshots.length === 1, "quiet: snapshot");
    assert.deepEqual(quiet.snapshots[0], posted);
    assert.equal(quiet.socket._lastOffset, undefined, "quiet: no offset");
    owners.push(quiet);
    before = owners.map((c) => ({ id: c.socket.id, pid: c.socket._pid }));
  }, CHECK_MS);

  await check("recovery: A stopped with SIGTERM exits 0; its clients are disconnected (recoverably)", async () => {
    const answer = await ask("terminate", "A");
    assert.equal(answer.code, 0, "exit code");
    assert.equal(answer.A, null);
    await allUntil(owners, (c) => c.disconnects.length === 1, "disconnect");
    for (const c of owners) assert.ok(["transport close", "transport error"].includes(c.disconnects[0]), `${c.name}: ${c.disconnects[0]}`);
    // The sessions A had were kept in Redis (expiring within the window) before it exited.
    const { sessions } = await ask("sessions", "-");
    for (const b of before) {
      assert.ok(b.pid in sessions, `session ${b.pid} kept in Redis: ${JSON.stringify(sessions)}`);
      assert.ok(sessions[b.pid] > 0 && sessions[b.pid] <= 60000, `its TTL: ${sessions[b.pid]}`);
    }
    // While the proxy still points at the dead A, the reconnection attempts fail.
    await allUntil(owners, (c) => c.errors.length >= 1, "a refused reconnection attempt");
    for (let i = 6; i <= 9; i++) posted.push(await post(EF_B, TA, `missed ${i}`));
  }, CHECK_MS);

  await check("recovery: a pid presented to B with another tenant's or user's token does not recover", async () => {
    const bEvent = await post(EF_B, TB, "b only");
    const [victim] = owners;
    for (const [who, snapshot] of [
      [TB, [bEvent]],
      [RA, posted],
    ]) {
      const thief = client(`thief/${who.user}`, EF_B, who, { transports: ["websocket"], reconnection: false, autoConnect: false });
      thief.socket._pid = before[0].pid;
      thief.socket._lastOffset = victim.offsets.at(-1);
      thief.socket.connect();
      await until(() => thief.connects.length === 1 || thief.errors.length > 0, `${who.user} connects`);
      assert.deepEqual(thief.errors, []);
      assert.equal(thief.connects[0].recovered, false, `${who.user} must not recover`);
      assert.notEqual(thief.connects[0].id, before[0].id, "not the owner's socket id");
      assert.notEqual(thief.connects[0].pid, before[0].pid, "a new pid");
      await until(() => thief.snapshots.length === 1, `${who.user}: a plain snapshot`);
      assert.deepEqual(thief.snapshots[0], snapshot, `${who.user}: its own tenant's snapshot`);
      assert.deepEqual(thief.offsets, [], `${who.user}: no recovered event`);
      thief.socket.disconnect();
    }
  }, CHECK_MS);

  await check("recovery: the clients' own reconnection lands on B: recovered, same id, exactly the missed events as event_created", async () => {
    px.switchTo(EF_B);
    await allUntil(owners, (c) => c.connects.length === 2, "reconnect on B");
    owners.forEach((c, i) => {
      assert.equal(c.connects[1].recovered, true, `${c.name}: socket.recovered\n${describe(c)}`);
      assert.equal(c.connects[1].id, before[i].id, `${c.name}: same socket id`);
      assert.equal(c.connects[1].pid, before[i].pid, `${c.name}: same pid`);
    });
    await allUntil(owners, (c) => c.items.length >= 9, "the 4 missed events");
    const live = await post(EF_B, TA, "live on B");
    await allUntil(owners, (c) => c.items.at(-1)?.e.id === live.id, "a live event on B");
    for (const c of owners) {
      const quiet = c.name === "owner/quiet";
      assert.deepEqual(seqs(c), seqRange(1, 10), `${c.name}\n${describe(c)}`);
      assert.deepEqual(c.items.slice(5).map(({ src }) => src), ["live", "live", "live", "live", "live"], `${c.name}: event_created, no snapshot`);
      assert.deepEqual(c.items.slice(5, 9).map(({ e }) => e), posted.slice(5, 9));
      assert.deepEqual(offsetSeqs(c.offsets), quiet ? ["6", "7", "8", "9", "10"] : ["3", "4", "5", "6", "7", "8", "9", "10"], c.name);
      assert.equal(c.snapshots.length, 1, `${c.name}: no snapshot after the recovery`);
      assert.equal(c.replays.length, 0);
    }
    assert.ok(px.forwarded[EF_B] >= owners.length, `forwarded: ${JSON.stringify(px.forwarded)}`);
    const { sessions } = await ask("sessions", "-");
    // Taken by its owner, then kept again for the live socket on B (renewed
    // while it lives), so B crashing would not lose it either.
    for (const b of before) {
      assert.ok(b.pid in sessions, `session ${b.pid} kept again for the live socket: ${JSON.stringify(sessions)}`);
      assert.ok(sessions[b.pid] > 0 && sessions[b.pid] <= 60000, `session ${b.pid} expires with the window`);
    }
  }, CHECK_MS);

  for (const c of all) c.socket.disconnect();
  px.close();
}

/// 3. Every instance restarted: sinceId, GET by id and recovery still work,
/// on either instance, and seq goes on.
async function restarts() {
  const px = await proxy(EF_A);
  const posted = [];
  let old;
  let r;
  let rBefore;

  await check("restarts: events on A and B; a recovering client on A", async () => {
    for (let i = 1; i <= 10; i++) posted.push(await post(i % 2 ? EF_A : EF_B, TA, `before ${i}`));
    assert.deepEqual(posted.map((e) => e.seq), seqRange(1, 10));
    await post(EF_A, TB, "company_b");
    old = posted[3];
    r = client("recovering/ws", px.url, TA, { transports: ["websocket"] });
    await until(() => r.snapshots.length === 1, "snapshot");
    posted.push(await post(EF_B, TA, "seen live"));
    await until(() => r.items.length === 11, "live event 11");
    assert.deepEqual(offsetSeqs(r.offsets), ["11"]);
    rBefore = { id: r.socket.id, pid: r.socket._pid };
  }, CHECK_MS);

  await check("restarts: A stopped (SIGTERM), B SIGKILLed and restarted, A restarted, then SIGKILLed and restarted", async () => {
    const terminated = await ask("terminate", "A");
    assert.equal(terminated.code, 0, "A's exit code");
    assert.equal(terminated.pids.A, null, "A is down");
    await until(() => r.disconnects.length === 1, "the client saw A go");
    const killed = await ask("kill9", "B");
    assert.deepEqual(killed.pids, { A: null, B: null }, "no instance runs");
    const b1 = await ask("restart", "B");
    const a1 = await ask("restart", "A");
    const a2 = await ask("restart", "A"); // SIGKILL + start
    assert.ok(b1.pids.B > 0 && a1.pids.A > 0 && a2.pids.A > 0);
    assert.notEqual(a2.pids.A, a1.pids.A, "a new A process");
  }, CHECK_MS);

  await check("restarts: the session kept at SIGTERM recovers on the restarted A, its first company_a socket (same id, exactly the missed events)", async () => {
    for (let i = 12; i <= 14; i++) posted.push(await post(EF_B, TA, `after restarts ${i}`));
    px.switchTo(EF_A);
    await until(() => r.connects.length === 2, "reconnect");
    assert.equal(r.connects[1].recovered, true, describe(r));
    assert.equal(r.connects[1].id, rBefore.id);
    await until(() => r.items.length >= 14, "missed events");
    assert.deepEqual(seqs(r), seqRange(1, 14), describe(r));
    assert.deepEqual(r.items.slice(11).map(({ e }) => e), posted.slice(11));
    assert.deepEqual(offsetSeqs(r.offsets), ["11", "12", "13", "14"]);
    assert.equal(r.snapshots.length, 1, "no snapshot after the recovery");
  }, CHECK_MS);

  await check("restarts: auth.sinceId of an old event gets exactly the later events (replay_result, gap false) on both", async () => {
    for (const [name, url, transports] of [
      ["sinceId/A/ws", EF_A, ["websocket"]],
      ["sinceId/B/polling", EF_B, ["polling"]],
      ["sinceId/B/default", EF_B, ["polling", "websocket"]],
    ]) {
      const c = client(name, url, TA, { transports, reconnection: false, cursor: true, since: old.id });
      await until(() => c.replays.length === 1, `${name}: replay_result`);
      assert.deepEqual(c.replays[0], { events: posted.slice(4), hasMore: false, gap: false }, name);
      assert.equal(c.snapshots.length, 0, `${name}: no snapshot`);
      assert.equal(c.connects[0].recovered, false);
    }
  }, CHECK_MS);

  await check("restarts: GET /api/events/{id} of an old event is 200 on both; the histories are equal", async () => {
    for (const base of [EF_A, EF_B]) {
      const res = await rest(base, "GET", `/api/events/${old.id}`, TA);
      assert.equal(res.status, 200, `${base}: ${res.text}`);
      assert.deepEqual(res.json, old);
      const other = await rest(base, "GET", `/api/events/${old.id}`, TB);
      assert.equal(other.status, 404, "not another tenant's");
    }
    assert.deepEqual(await history(EF_A, TA), posted);
    assert.deepEqual(await history(EF_B, TA), posted);
  }, CHECK_MS);

  await check("restarts: seq goes on (last + 1), live to every client on both instances", async () => {
    const next = await post(EF_A, TA, "next");
    assert.equal(next.seq, 15);
    const next2 = await post(EF_B, TA, "next on B");
    assert.equal(next2.seq, 16);
    const live = all.filter((c) => c.who === TA);
    assert.equal(live.length, 4);
    await allUntil(live, (c) => c.items.at(-1)?.e.id === next2.id, "the new events");
    for (const c of live) {
      assert.deepEqual(c.items.slice(-2).map(({ src, e }) => [src, e]), [["live", next], ["live", next2]], c.name);
      assert.deepEqual(seqs(c), c.name.startsWith("sinceId") ? seqRange(5, 16) : seqRange(1, 16), describe(c));
    }
  }, CHECK_MS);

  for (const c of all) c.socket.disconnect();
  px.close();
}

const scenarios = { failover, recovery, restarts };
if (!scenarios[SCENARIO]) {
  console.error(`unknown scenario ${SCENARIO}`);
  process.exit(2);
}
console.log(`# failover.mjs ${SCENARIO}: A=${EF_A} B=${EF_B}`);
await scenarios[SCENARIO]();
finish();
