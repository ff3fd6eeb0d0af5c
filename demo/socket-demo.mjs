// A tour of the event feed with the official socket.io-client.
//
// Start the server (`cargo run --release`, demo tokens), then:
//   cd demo && npm ci && node socket-demo.mjs [http://127.0.0.1:3000]
//
// It connects as two tenants, shows each one's snapshot, posts over the
// socket and over REST, replays from a cursor, and shows that tenant B never
// sees tenant A's events.
//
// With JWTs: give the server and this script the same secret,
//   export NB_BACKEND_JWT_SECRET="$(openssl rand -hex 32)"
//   cargo run --release          # in one terminal, with that variable set
//   node socket-demo.mjs         # in another, with it set too
// The same tour then runs with JWTs of the same users (the demo tokens are
// off on such a server), followed by a tour of a JWT's life: a client whose
// `auth` is a function that mints a 4-second token at every (re)connect gets
// `token_expiring`, refreshes once, lets the next token expire, reconnects
// with a fresh one and recovers every event it missed.

import { io } from "socket.io-client";
import { createHmac, randomUUID } from "node:crypto";

const base = process.argv[2] || process.env.EVENTFEED_URL || "http://127.0.0.1:3000";
const secret = (process.env.NB_BACKEND_JWT_SECRET || "").trim();
const once = (em, ev) => new Promise((res) => em.once(ev, (...a) => res(a)));
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/// What a tenant's backend does once its user is logged in (serve.mjs's
/// POST /token does the same): an HS256 JWT for `user` in `tenant`, valid
/// `ttl` seconds (a negative one is already expired).
function mint(user, tenant, role, ttl) {
  const iat = Math.floor(Date.now() / 1000);
  const part = (o) => Buffer.from(JSON.stringify(o)).toString("base64url");
  const signed = `${part({ alg: "HS256", typ: "JWT" })}.${part({ sub: user, tenant, role, iat, exp: iat + ttl, jti: randomUUID() })}`;
  return `${signed}.${createHmac("sha256", secret).update(signed).digest("base64url")}`;
}

// The server's demo tokens; with a secret, a JWT of the same user instead.
const DEMO = {
  token_admin_a: ["admin_a", "company_a", "admin"],
  token_admin_b: ["admin_b", "company_b", "admin"],
  token_reader_a: ["reader_a", "company_a", "reader"],
};
const credential = (demoToken) => (secret ? mint(...DEMO[demoToken], 600) : demoToken);
const restAuth = (token) => (secret ? { Authorization: `Bearer ${token}` } : { "X-User-Token": token });

/// Why a CONNECT was refused, with a hint when the likely cause is a secret
/// the server and this script do not share.
function refusal(tenantId, err) {
  const code = err.data?.code ? ` (${err.data.code})` : "";
  const hint = secret
    ? "does the server have the same NB_BACKEND_JWT_SECRET?"
    : "if the server checks JWTs, give this script its NB_BACKEND_JWT_SECRET";
  return new Error(`${tenantId}: ${err.message}${code} — is the server running at ${base}? ${hint}`);
}

// Every listener is attached before the socket can receive anything: the
// snapshot follows the CONNECT answer at once, whoever is awaited first.
function connect(tenantId, token) {
  const socket = io(`${base}/events`, { auth: { tenantId, token } });
  const seen = [];
  socket.on("event_created", (e) => {
    seen.push(e);
    console.log(`  [${tenantId}] event_created #${e.seq} by ${e.author}: ${JSON.stringify(e.message)}`);
  });
  const snapshot = Promise.race([
    once(socket, "snapshot").then(([events]) => events),
    once(socket, "connect_error").then(([err]) => {
      throw refusal(tenantId, err);
    }),
  ]);
  // Awaited later: keep an early failure from counting as unhandled.
  snapshot.catch(() => {});
  return { socket, seen, snapshot };
}

/// Waits (at most `ms`) until `pred()` holds.
async function until(pred, what, ms = 5000) {
  const end = Date.now() + ms;
  while (!pred()) {
    if (Date.now() > end) throw new Error(`waited ${ms} ms for ${what}`);
    await sleep(10);
  }
}

/// A promise with its resolve and reject, for a listener to settle.
function deferred() {
  const d = {};
  d.promise = new Promise((resolve, reject) => Object.assign(d, { resolve, reject }));
  d.promise.catch(() => {}); // awaited later
  return d;
}

/// `promise`, or a failure naming `what` after `ms`: the demo never hangs.
function within(promise, what, ms = 15000) {
  let timer;
  const late = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`waited ${ms} ms for ${what}`)), ms);
  });
  return Promise.race([promise, late]).finally(() => clearTimeout(timer));
}

async function ready(name, client) {
  const snapshot = await client.snapshot;
  console.log(`${name}: connected (socket ${client.socket.id}), snapshot of ${snapshot.length} events`);
  for (const e of snapshot.slice(-3)) console.log(`  #${e.seq} ${JSON.stringify(e.message)}`);
  return snapshot;
}

if (secret) console.log("NB_BACKEND_JWT_SECRET is set: every credential below is a JWT signed with it\n");
const a = connect("company_a", credential("token_admin_a"));
const b = connect("company_b", credential("token_admin_b"));
await ready("tenant A", a);
await ready("tenant B", b);

console.log("\nA posts over the socket (post_event with ack):");
const viaSocket = await a.socket.emitWithAck("post_event", { message: `Hello from a socket at ${new Date().toISOString()}` });
if (viaSocket.error) throw new Error(JSON.stringify(viaSocket.error));
console.log(`  ack: event ${viaSocket.event.id} (seq ${viaSocket.event.seq})`);

console.log("\nA posts over REST (POST /api/events):");
const res = await fetch(`${base}/api/events`, {
  method: "POST",
  headers: { "Content-Type": "application/json", "X-TENANT-ID": "company_a", ...restAuth(credential("token_admin_a")) },
  body: JSON.stringify({ message: "Hello from curl's cousin" }),
});
const created = await res.json();
console.log(`  ${res.status} ${res.headers.get("location")}`);

console.log("\nB posts one of its own:");
await b.socket.emitWithAck("post_event", { message: "B's private note" });

await until(() => a.seen.some((e) => e.id === created.id), "A to receive its REST event");

console.log("\nA replays everything after its socket post (replay with ack):");
const replay = await a.socket.emitWithAck("replay", { sinceId: viaSocket.event.id, limit: 10 });
for (const e of replay.events) console.log(`  #${e.seq} ${JSON.stringify(e.message)}`);
console.log(`  hasMore=${replay.hasMore} gap=${replay.gap}`);

console.log("\nA reader may read but not write:");
const reader = connect("company_a", credential("token_reader_a"));
await ready("reader of A", reader);
const refused = await reader.socket.emitWithAck("post_event", { message: "let me in" });
console.log(`  post_event -> ${JSON.stringify(refused)}`);

console.log("\nIsolation check:");
const leaked = b.seen.filter((e) => e.tenant_id !== "company_b");
const aGotCreated = a.seen.some((e) => e.id === created.id);
console.log(`  A saw its REST event live: ${aGotCreated}`);
console.log(`  B received ${b.seen.length} live events, ${leaked.length} of them from another tenant`);
if (leaked.length > 0 || !aGotCreated) {
  console.error("unexpected: isolation or delivery failed");
  process.exitCode = 1;
}

for (const c of [a, b, reader]) c.socket.disconnect();
if (secret) await jwtTour();
if (process.exitCode !== 1) console.log("\ndemo finished");

/// A JWT's life on a socket: warned, refreshed, expired, back with a fresh
/// token, recovered.
async function jwtTour() {
  const TTL = 4; // seconds: short, to watch it happen
  const tenantId = "company_a";
  console.log(`\nA JWT's life: alice's client mints a ${TTL} s token at every (re)connect (auth is a function):`);

  // The reconnect after the expiry waits for this: the demo posts its
  // "missed" events first, so they are certainly posted while alice is away.
  let away = Promise.resolve();
  let back;
  const socket = io(`${base}/events`, {
    forceNew: true,
    auth: (cb) => away.then(() => cb({ tenantId, token: mint("alice", tenantId, "admin", TTL) })),
  });
  const got = [];
  socket.on("event_created", (e) => got.push(e));
  // Each warning is answered as it comes, whatever the demo awaits then: the
  // first with a refresh, the second not at all (the reconnect that follows
  // its expiry waits for the "missed" posts), a later one quietly.
  const refreshed = deferred();
  const warnedAgain = deferred();
  let warnings = 0;
  socket.on("token_expiring", (warning) => {
    warnings += 1;
    if (warnings === 1) {
      socket.timeout(10000).emit("refresh_token", { token: mint("alice", tenantId, "admin", TTL) }, (err, answer) => {
        if (err || !answer.expiresAt) refreshed.reject(new Error(`refresh_token: ${err ?? JSON.stringify(answer)}`));
        else refreshed.resolve([warning, answer]);
      });
    } else if (warnings === 2) {
      away = new Promise((resolve) => {
        back = resolve;
      });
      warnedAgain.resolve(warning);
    } else {
      socket.emit("refresh_token", { token: mint("alice", tenantId, "admin", 600) });
    }
  });
  // Attached now: each comes while the demo awaits something else.
  const errored = once(socket, "error");
  const dropped = once(socket, "disconnect");
  const post = async (message) => {
    const res = await fetch(`${base}/api/events`, {
      method: "POST",
      headers: { "Content-Type": "application/json", "X-TENANT-ID": tenantId, ...restAuth(mint("bob", tenantId, "admin", 60)) },
      body: JSON.stringify({ message }),
    });
    if (res.status !== 201) throw new Error(`POST /api/events: ${res.status} ${await res.text()}`);
    return (await res.json()).id;
  };
  const write = async (message) => {
    const answer = await socket.timeout(10000).emitWithAck("post_event", { message });
    if (answer.error) throw new Error(JSON.stringify(answer.error));
    return answer.event.id;
  };

  await within(
    Promise.race([
      once(socket, "connect"),
      once(socket, "connect_error").then(([err]) => {
        throw refusal(tenantId, err);
      }),
    ]),
    "alice's connect",
  );
  const sid = socket.id;
  console.log(`  connected (socket ${sid}), recovered: ${socket.recovered}`);
  const before = [await write("alice: hello"), await post("bob: hello alice")];

  const [first, answer] = await within(refreshed.promise, "token_expiring and the refresh");
  console.log(`  token_expiring: expires at ${first.expiresAt}; refreshing it (refresh_token)`);
  console.log(`  refreshed: now expires at ${answer.expiresAt}`);
  const second = await within(warnedAgain.promise, "the second token_expiring");
  console.log(`  token_expiring again (${second.expiresAt}): not refreshing this time`);
  // The server ends the socket at exp plus its NB_BACKEND_JWT_LEEWAY.
  const patience = setTimeout(() => {
    console.log("  (waiting for the expiry: the server allows NB_BACKEND_JWT_LEEWAY past exp, 30 s by default; 0 shows it at once)");
  }, 5000);
  const [error] = await within(errored, "the expiry", 660_000).finally(() => clearTimeout(patience));
  console.log(`  error ${error.code}: ${error.message}`);
  const [reason] = await within(dropped, "the disconnect");
  console.log(`  disconnected (${reason}); the client will reconnect by itself: ${socket.active}`);

  const missed = [await post("bob: 1 while alice is away"), await post("bob: 2 while alice is away"), await post("bob: 3 while alice is away")];
  console.log(`  ${missed.length} events posted while alice is away`);
  const reconnected = once(socket, "connect");
  back();
  await within(reconnected, "the reconnect");
  console.log(`  reconnected with a fresh token: recovered: ${socket.recovered}, same socket id: ${socket.id === sid}`);
  const after = [await write("alice: back")];

  const expected = [...before, ...missed, ...after];
  await until(() => expected.every((id) => got.some((e) => e.id === id)), "every event", 15000);
  const ids = got.map((e) => e.id);
  const lost = expected.filter((id) => !ids.includes(id)).length;
  const twice = ids.length - new Set(ids).size;
  const inOrder = ids.join() === expected.join();
  console.log(`  alice received ${ids.length} events: ${before.length} before the expiry, ${missed.length} missed while away (delivered by the recovery), ${after.length} after`);
  console.log(`  lost: ${lost}, twice: ${twice}, in order: ${inOrder}`);
  socket.disconnect();
  if (!socket.recovered || lost || twice || !inOrder) {
    console.error("unexpected: the recovery after the expiry failed");
    process.exitCode = 1;
  }

  console.log("\nRefused CONNECTs: connect_error \"unauthorized\", err.data.code says why:");
  const tries = [
    ["an expired token", tenantId, mint("alice", tenantId, "admin", -60)],
    ["company_b's token presented to company_a", tenantId, mint("alice", "company_b", "admin", 60)],
    ["not a JWT", tenantId, "not.a.jwt"],
  ];
  for (const [what, tenant, token] of tries) {
    const s = io(`${base}/events`, { forceNew: true, reconnection: false, auth: { tenantId: tenant, token } });
    const outcome = await within(
      Promise.race([once(s, "connect_error").then(([err]) => `${err.message} (${err.data?.code})`), once(s, "connect").then(() => "connected?!")]),
      what,
    );
    s.close();
    console.log(`  ${what}: ${outcome}`);
  }
}
