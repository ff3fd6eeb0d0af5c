// Connection state recovery and resume-from-cursor, with the official
// socket.io-client (4.6+ recovers on its own: it keeps the `pid` and the last
// offset and sends them when it reconnects).
//
// Usage: node recovery.mjs URL SHORT_WINDOW_URL BUFFER_SIZE SMALL_QUEUE_URL
// Both servers accept "tok_x1"/"tok_x2" (users x1, x2, every tenant, admin)
// and "tok_y" (user y, tenant "only_y", admin). URL keeps sessions for
// several seconds; SHORT_WINDOW_URL for 300 ms; SMALL_QUEUE_URL has a 16-packet
// outgoing queue per connection. Ends with "N passed, M failed".

import { io } from "socket.io-client";
import assert from "node:assert/strict";
import { check, finish, offsetSeqs, once, sleep, until } from "./harness.mjs";


const [base, shortBase, bufferArg, smallQueueBase] = process.argv.slice(2);
const BUFFER = Number(bufferArg);
let uniq = 0;
const tenant = (name) => `${name}_${process.pid}_${uniq++}`;



async function post(url, t, token, message) {
  const res = await fetch(`${url}/api/events`, {
    method: "POST",
    headers: { "Content-Type": "application/json", "X-TENANT-ID": t, "X-User-Token": token },
    body: JSON.stringify({ message }),
  });
  assert.equal(res.status, 201, await res.clone().text());
  return res.json();
}

/// A client that records everything it receives.
function client(url, t, token, opts = {}) {
  const { auth, ...rest } = opts;
  const socket = io(`${url}/events`, {
    forceNew: true,
    reconnectionDelay: 50,
    reconnectionDelayMax: 100,
    randomizationFactor: 0,
    ...rest,
    auth: { tenantId: t, token, ...(auth || {}) },
  });
  const c = { socket, events: [], offsets: [], snapshots: [], replays: [], connects: [] };
  socket.on("event_created", (e, offset) => {
    c.events.push(e);
    c.offsets.push(offset);
  });
  socket.on("snapshot", (s) => c.snapshots.push(s));
  socket.on("replay_result", (r) => c.replays.push(r));
  socket.on("connect", () => c.connects.push({ id: socket.id, recovered: socket.recovered }));
  return c;
}

async function connected(c, n = 1) {
  await until(() => c.connects.length >= n, `connect #${n}`);
}

/// Cuts the transport (as a network failure would) and waits for the disconnect.
async function cut(c) {
  const reason = once(c.socket, "disconnect");
  c.socket.io.engine.close();
  return (await reason)[0];
}

function assertSeqs(events, from, to) {
  assert.deepEqual(
    events.map((e) => e.seq),
    Array.from({ length: to - from + 1 }, (_, i) => from + i),
  );
}

const MODES = { websocket: ["websocket"], polling: ["polling"], upgrade: ["polling", "websocket"] };

for (const [mode, transports] of Object.entries(MODES)) {
  await check(`${mode}: a cut client gets back its id and exactly the missed events, recovered === true`, async () => {
    const t = tenant("cut");
    const c = client(base, t, "tok_x1", { transports });
    await connected(c);
    assert.equal(c.connects[0].recovered, false);
    await until(() => c.snapshots.length === 1, "snapshot");
    for (let i = 1; i <= 3; i++) await post(base, t, "tok_x1", `before ${i}`);
    await until(() => c.events.length === 3, "3 live events");
    assert.deepEqual(offsetSeqs(c.offsets), ["1", "2", "3"], "each event_created carries its offset last");
    const firstId = c.socket.id;
    await cut(c);
    for (let i = 4; i <= 8; i++) await post(base, t, "tok_x1", `missed ${i}`);
    await connected(c, 2);
    assert.equal(c.connects[1].recovered, true);
    assert.equal(c.connects[1].id, firstId, "same socket id");
    await until(() => c.events.length === 8, "the 5 missed events");
    await sleep(50);
    assertSeqs(c.events, 1, 8);
    assert.equal(c.snapshots.length, 1, "no snapshot after a recovery");
    await post(base, t, "tok_x1", "after");
    await until(() => c.events.length === 9, "live again");
    c.socket.disconnect();
  });
}

await check("five cuts in a row, every event once, in order", async () => {
  const t = tenant("five");
  const c = client(base, t, "tok_x1", { transports: ["websocket"] });
  await connected(c);
  let seq = 0;
  for (let round = 1; round <= 5; round++) {
    await post(base, t, "tok_x1", `live ${round}`);
    seq++;
    await until(() => c.events.length === seq, `live event of round ${round}`);
    await cut(c);
    for (let i = 0; i < round; i++) {
      await post(base, t, "tok_x1", `missed ${round}.${i}`);
      seq++;
    }
    await connected(c, round + 1);
    assert.equal(c.connects[round].recovered, true, `round ${round}`);
    await until(() => c.events.length === seq, `missed events of round ${round}`);
  }
  await sleep(50);
  assertSeqs(c.events, 1, seq);
  assert.equal(new Set(c.connects.map((x) => x.id)).size, 1, "one socket id throughout");
  c.socket.disconnect();
});

await check("a client that received no event before the cut recovers too", async () => {
  for (const transports of Object.values(MODES)) {
    const t = tenant("quiet");
    const c = client(base, t, "tok_x1", { transports });
    await connected(c);
    await until(() => c.snapshots.length === 1, "snapshot");
    await cut(c);
    for (let i = 1; i <= 3; i++) await post(base, t, "tok_x1", `missed ${i}`);
    await connected(c, 2);
    assert.equal(c.connects[1].recovered, true);
    await until(() => c.events.length === 3, "3 missed events");
    assertSeqs(c.events, 1, 3);
    c.socket.disconnect();
  }
});

await check("evicted: a fresh session and a snapshot, never a silent hole", async () => {
  const t = tenant("evicted");
  const c = client(base, t, "tok_x1", { transports: ["websocket"], reconnection: false });
  await connected(c);
  await post(base, t, "tok_x1", "seen");
  await until(() => c.events.length === 1, "first event");
  await cut(c);
  for (let i = 0; i < BUFFER + 10; i++) await post(base, t, "tok_x1", `flood ${i}`);
  c.socket.connect();
  await connected(c, 2);
  assert.equal(c.connects[1].recovered, false);
  assert.notEqual(c.connects[1].id, c.connects[0].id);
  await until(() => c.snapshots.length === 2, "a fresh snapshot");
  const snap = c.snapshots[1];
  assert.equal(snap.at(-1).seq, BUFFER + 11, "the snapshot reaches the newest event");
  assert.equal(c.events.length, 1, "no partial replay");
  c.socket.disconnect();
});

await check("more missed events than a socket's queue takes: a fresh session, not a drop", async () => {
  const t = tenant("queue");
  const c = client(smallQueueBase, t, "tok_x1", { transports: ["websocket"], reconnection: false });
  await connected(c);
  await cut(c);
  for (let i = 0; i < 30; i++) await post(smallQueueBase, t, "tok_x1", `missed ${i}`);
  c.socket.connect();
  await connected(c, 2);
  assert.equal(c.connects[1].recovered, false);
  await until(() => c.snapshots.length === 2, "a fresh snapshot");
  assertSeqs(c.snapshots[1], 1, 30);
  await sleep(100);
  assert.ok(c.socket.connected, "still connected: not dropped as a slow consumer");
  c.socket.disconnect();
});

await check("window expired: a fresh session and a snapshot", async () => {
  const t = tenant("expired");
  const c = client(shortBase, t, "tok_x1", { transports: ["websocket"], reconnection: false });
  await connected(c);
  await post(shortBase, t, "tok_x1", "seen");
  await until(() => c.events.length === 1, "first event");
  await cut(c);
  await post(shortBase, t, "tok_x1", "missed");
  await sleep(700); // the short window is 300 ms
  c.socket.connect();
  await connected(c, 2);
  assert.equal(c.connects[1].recovered, false);
  await until(() => c.snapshots.length === 2, "a fresh snapshot");
  assertSeqs(c.snapshots[1], 1, 2);
  c.socket.disconnect();
});

await check("a pid presented with other credentials never restores that session", async () => {
  const t = tenant("stolen");
  const owner = client(base, t, "tok_x1", { transports: ["websocket"], reconnection: false });
  await connected(owner);
  await post(base, t, "tok_x1", "one");
  await until(() => owner.events.length === 1, "first event");
  const pid = owner.socket._pid;
  assert.ok(typeof pid === "string" && pid.length > 0, "the CONNECT answer carried a pid");
  await cut(owner);
  await post(base, t, "tok_x1", "two");
  // Another user of the same tenant, then a user of another tenant, each with the stolen pid.
  for (const [tok, ten] of [["tok_x2", t], ["tok_y", "only_y"]]) {
    const thief = client(base, ten, tok, { transports: ["websocket"], reconnection: false, autoConnect: false });
    thief.socket._pid = pid;
    thief.socket._lastOffset = "0";
    thief.socket.connect();
    await connected(thief);
    assert.equal(thief.connects[0].recovered, false, `${tok} must not recover`);
    assert.notEqual(thief.connects[0].id, owner.connects[0].id);
    assert.notEqual(thief.socket._pid, pid, "a new pid");
    await until(() => thief.snapshots.length === 1, "the thief gets a plain snapshot");
    assert.equal(thief.events.length, 0);
    thief.socket.disconnect();
  }
  // The owner still recovers.
  owner.socket.connect();
  await connected(owner, 2);
  assert.equal(owner.connects[1].recovered, true);
  await until(() => owner.events.length === 2, "the missed event");
  owner.socket.disconnect();
});

await check("a normal disconnect keeps nothing: reconnecting is a fresh session", async () => {
  const t = tenant("normal");
  const c = client(base, t, "tok_x1", { transports: ["websocket"] });
  await connected(c);
  c.socket.disconnect();
  await post(base, t, "tok_x1", "while away");
  c.socket.connect();
  await connected(c, 2);
  assert.equal(c.connects[1].recovered, false);
  await until(() => c.snapshots.length === 2, "a snapshot");
  c.socket.disconnect();
});

await check("auth.sinceId: replay_result after the cursor instead of the snapshot (gap too)", async () => {
  const t = tenant("since");
  const posted = [];
  for (let i = 1; i <= 6; i++) posted.push(await post(base, t, "tok_x1", `e${i}`));
  const c = client(base, t, "tok_x1", { transports: ["websocket"], auth: { sinceId: posted[2].id } });
  await connected(c);
  await until(() => c.replays.length === 1, "replay_result");
  assert.deepEqual(c.replays[0], { events: posted.slice(3), hasMore: false, gap: false });
  await sleep(50);
  assert.equal(c.snapshots.length, 0, "no snapshot with sinceId");
  await post(base, t, "tok_x1", "live");
  await until(() => c.events.length === 1 && c.events[0].seq === 7, "live events continue");
  c.socket.disconnect();
  const g = client(base, t, "tok_x1", { transports: ["polling"], auth: { sinceId: "00000000-0000-4000-8000-000000000000" } });
  await connected(g);
  await until(() => g.replays.length === 1, "replay_result");
  assert.equal(g.replays[0].gap, true);
  assertSeqs(g.replays[0].events, 1, 7);
  g.socket.disconnect();
  const bad = client(base, t, "tok_x1", { transports: ["websocket"], reconnection: false, auth: { sinceId: "nope" } });
  const [err] = await once(bad.socket, "connect_error");
  assert.equal(err.message, "sinceId must be an event id (UUID)");
  assert.equal(err.data.code, "bad_request");
  bad.socket.close();
});

await check("1,000 clients cut at once all recover with every event accounted for", async () => {
  const TENANTS = 10;
  const PER = 100;
  const tenants = Array.from({ length: TENANTS }, () => tenant("many"));
  const clients = [];
  for (const t of tenants) for (let i = 0; i < PER; i++) clients.push({ t, c: client(base, t, "tok_x1", { transports: ["websocket"] }) });
  await until(() => clients.every(({ c }) => c.connects.length === 1), "1000 connects", 30000);
  for (const t of tenants) await post(base, t, "tok_x1", "before");
  await until(() => clients.every(({ c }) => c.events.length === 1), "first events", 30000);
  const reasons = clients.map(({ c }) => once(c.socket, "disconnect"));
  for (const { c } of clients) c.socket.io.engine.close();
  await Promise.all(reasons);
  const MISSED = 20;
  await Promise.all(tenants.map(async (t) => {
    for (let i = 0; i < MISSED; i++) await post(base, t, "tok_x1", `missed ${i}`);
  }));
  await until(() => clients.every(({ c }) => c.connects.length === 2), "1000 reconnects", 30000);
  await until(() => clients.every(({ c }) => c.events.length === MISSED + 1), "every missed event", 30000);
  await sleep(100);
  for (const { c } of clients) {
    assert.equal(c.connects[1].recovered, true);
    assert.equal(c.connects[1].id, c.connects[0].id);
    assertSeqs(c.events, 1, MISSED + 1);
    c.socket.disconnect();
  }
}, 90000);

finish();
