// JWTs with the official socket.io-client: an `auth` function that fetches a
// fresh token on every (re)connect, recovery across the token's expiry, a
// refresh on `token_expiring`, the codes of a refused CONNECT, and what a
// user revoked by SIGHUP sees.
//
// Usage: node identity.mjs URL SERVER_PID REVOCATIONS_FILE SECRET
// The server accepts HS256 JWTs signed with SECRET (no leeway), reads its
// revocations from REVOCATIONS_FILE on SIGHUP, and keeps sessions for
// recovery. Ends with "N passed, M failed".

import { io } from "socket.io-client";
import assert from "node:assert/strict";
import { createHmac } from "node:crypto";
import { writeFileSync, renameSync } from "node:fs";
import { check, finish, once, sleep, until } from "./harness.mjs";

const [base, serverPid, revocationsFile, secret] = process.argv.slice(2);
const TENANT = `acme_${process.pid}`;

/// What the tenant's backend does: an HS256 JWT for `sub`, valid `ttl` s.
function mint(sub, ttl, extra = {}) {
  const now = Math.floor(Date.now() / 1000);
  const part = (o) => Buffer.from(JSON.stringify(o)).toString("base64url");
  const head = part({ alg: "HS256", typ: "JWT" });
  const body = part({ sub, tenant: TENANT, role: "admin", iat: now, exp: now + ttl, ...extra });
  const sig = createHmac("sha256", secret).update(`${head}.${body}`).digest("base64url");
  return `${head}.${body}.${sig}`;
}

async function post(message) {
  const res = await fetch(`${base}/api/events`, {
    method: "POST",
    headers: { "Content-Type": "application/json", "X-TENANT-ID": TENANT, Authorization: `Bearer ${mint("writer", 600)}` },
    body: JSON.stringify({ message }),
  });
  assert.equal(res.status, 201, await res.clone().text());
  return res.json();
}

/// A client whose auth is a function: every connect asks for a fresh token.
function client(sub, ttl, opts = {}) {
  let minted = 0;
  const socket = io(`${base}/events`, {
    forceNew: true,
    reconnectionDelay: 1000,
    reconnectionDelayMax: 1000,
    randomizationFactor: 0,
    auth: (cb) => {
      minted += 1;
      cb({ tenantId: TENANT, token: mint(sub, ttl) });
    },
    ...opts,
  });
  const c = { socket, events: [], errors: [], expiring: [], connects: [], disconnects: [], minted: () => minted };
  socket.on("event_created", (e) => c.events.push(e));
  socket.on("error", (e) => c.errors.push(e));
  socket.on("token_expiring", (e) => c.expiring.push(e));
  socket.on("connect", () => c.connects.push({ id: socket.id, recovered: socket.recovered }));
  socket.on("disconnect", (reason) => c.disconnects.push(reason));
  return c;
}

await check("an auth function brings a fresh token after expiry; the client recovers every missed event", async () => {
  const c = client("alice", 3);
  await until(() => c.connects.length === 1, "connected");
  const before = [];
  for (let i = 0; i < 3; i++) before.push((await post(`before ${i}`)).id);
  await until(() => c.events.length === 3, "the first events");
  await until(() => c.expiring.length === 1, "token_expiring");
  assert.match(c.expiring[0].expiresAt, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.000Z$/);
  await until(() => c.disconnects.length === 1, "the expiry");
  assert.equal(c.disconnects[0], "transport close", "a transport close: the client reconnects by itself");
  assert.deepEqual(c.errors.map((e) => e.code), ["token_expired"]);
  // While it waits to reconnect, events go on.
  const missed = [];
  for (let i = 0; i < 4; i++) missed.push((await post(`missed ${i}`)).id);
  await until(() => c.connects.length === 2, "the reconnect", 6000);
  assert.equal(c.connects[1].recovered, true, "recovered with the fresh token");
  assert.equal(c.connects[1].id, c.connects[0].id, "the same socket id");
  assert.equal(c.minted(), 2, "a fresh token for the reconnect");
  await until(() => c.events.length === 7, "the missed events");
  const after = (await post("after")).id;
  await until(() => c.events.length === 8, "the live event");
  assert.deepEqual(c.events.map((e) => e.id), [...before, ...missed, after], "every event once, in order");
  c.socket.disconnect();
}, 20000);

await check("a client that refreshes on token_expiring stays connected past its first token", async () => {
  const c = client("bob", 3);
  const refreshed = [];
  c.socket.on("token_expiring", () => {
    c.socket.emit("refresh_token", { token: mint("bob", 600) }, (answer) => refreshed.push(answer));
  });
  await until(() => refreshed.length === 1, "the refresh's answer");
  assert.ok(refreshed[0].expiresAt, JSON.stringify(refreshed[0]));
  await sleep(3500);
  assert.deepEqual(c.disconnects, [], "never expired");
  const id = (await post("still here")).id;
  await until(() => c.events.some((e) => e.id === id), "a live event");
  // Another user's token is refused; the socket stays.
  const answer = await c.socket.timeout(5000).emitWithAck("refresh_token", { token: mint("mallory", 600) });
  assert.equal(answer.error.code, "forbidden");
  assert.equal(c.socket.connected, true);
  c.socket.disconnect();
}, 20000);

await check("a refused CONNECT says whether a new token would help", async () => {
  const codes = [];
  for (const token of [mint("carol", -60), "not.a.jwt", mint("carol", 600, { tenant: "globex" })]) {
    const socket = io(`${base}/events`, { forceNew: true, reconnection: false, auth: { tenantId: TENANT, token } });
    const [err] = await once(socket, "connect_error");
    assert.equal(err.message, "unauthorized");
    codes.push(err.data.code);
    socket.close();
  }
  assert.deepEqual(codes, ["token_expired", "invalid_token", "wrong_tenant"]);
});

await check("a user revoked by SIGHUP gets error unauthorized and a DISCONNECT, and stays away", async () => {
  const gone = client("dave", 600);
  const stays = client("erin", 600);
  await until(() => gone.connects.length === 1 && stays.connects.length === 1, "both connected");
  const future = new Date(Date.now() + 3600_000).toISOString();
  const tmp = `${revocationsFile}.tmp`;
  writeFileSync(tmp, JSON.stringify({ revoked: [{ sub: "dave", tenant: TENANT, issuedBefore: future }] }));
  renameSync(tmp, revocationsFile);
  process.kill(Number(serverPid), "SIGHUP");
  await until(() => gone.disconnects.length === 1, "dave's disconnect", 5000);
  assert.equal(gone.disconnects[0], "io server disconnect", "a namespace DISCONNECT");
  assert.deepEqual(gone.errors.map((e) => e.code), ["unauthorized"]);
  await sleep(1500);
  assert.equal(gone.connects.length, 1, "the official client does not come back by itself");
  assert.equal(gone.socket.active, false);
  // erin is untouched.
  const id = (await post("after the revocation")).id;
  await until(() => stays.events.some((e) => e.id === id), "erin still gets events");
  assert.deepEqual(stays.disconnects, []);
  stays.socket.disconnect();
}, 20000);

finish();
