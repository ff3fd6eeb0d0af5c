// Smoke test of a feed server (the baseline, or eventfeed itself), with curl-like
// fetch calls and the official socket.io-client:
//
//   node smoke.mjs http://127.0.0.1:PORT [token]
//
// The token must be an admin for every tenant (bench/tokens.json: bench_admin).
// socket.io-client comes from tests/node or demo (their node_modules, `npm ci`).
import assert from "node:assert/strict";
import { createRequire } from "node:module";
import { existsSync } from "node:fs";
import { fileURLToPath } from "node:url";

const here = fileURLToPath(new URL(".", import.meta.url));
const clientDir = [`${here}../../tests/node/`, `${here}../../demo/`].find((d) =>
  existsSync(`${d}node_modules/socket.io-client`),
);
if (!clientDir) {
  console.error("smoke: socket.io-client not found; run `npm ci` in tests/node or demo");
  process.exit(2);
}
const { io } = createRequire(clientDir)("socket.io-client");

const url = process.argv[2] || "http://127.0.0.1:3000";
const token = process.argv[3] || "bench_admin";
const run = Date.now().toString(36);
const A = `smoke_a_${run}`;
const B = `smoke_b_${run}`;

const api = (tenant, path = "", init = {}) =>
  fetch(`${url}/api/events${path}`, {
    ...init,
    headers: { "X-TENANT-ID": tenant, "X-User-Token": token, ...(init.headers || {}) },
  });
const postRest = (tenant, message, headers = { "Content-Type": "application/json" }) =>
  api(tenant, "", { method: "POST", headers, body: JSON.stringify({ message }) });
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

function connect(tenant, opts = {}) {
  const socket = io(`${url}/events`, { auth: { tenantId: tenant, token }, reconnection: false, ...opts });
  socket.got = [];
  socket.on("event_created", (e) => socket.got.push(e));
  socket.snapshot = new Promise((resolve, reject) => {
    socket.once("snapshot", resolve);
    socket.once("connect_error", reject);
  });
  return socket;
}

async function check(name, f) {
  await f();
  console.log(`ok   ${name}`);
}

// ---------------------------------------------------------------- REST
let first;
await check("REST POST 201 with Location and the event", async () => {
  const res = await postRest(A, "hello from REST");
  assert.equal(res.status, 201);
  first = await res.json();
  assert.deepEqual(Object.keys(first), ["id", "seq", "tenant_id", "message", "timestamp", "author"]);
  assert.equal(res.headers.get("location"), `/api/events/${first.id}`);
  assert.equal(first.seq, 1);
  assert.equal(first.tenant_id, A);
  assert.equal(first.message, "hello from REST");
  assert.match(first.timestamp, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/);
  assert.match(first.id, /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
});
await check("REST GET list, sinceId, one event, 404 across tenants", async () => {
  const second = await (await postRest(A, "second")).json();
  assert.equal(second.seq, 2);
  let res = await api(A, "?limit=50");
  assert.equal(res.status, 200);
  assert.deepEqual(await res.json(), { events: [first, second], hasMore: false, gap: false });
  res = await api(A, `?sinceId=${first.id}&limit=1`);
  assert.deepEqual(await res.json(), { events: [second], hasMore: false, gap: false });
  res = await api(A, `?sinceId=${first.id.replace(/^.{8}/, "00000000")}&limit=1`);
  assert.deepEqual(await res.json(), { events: [first], hasMore: true, gap: true });
  res = await api(A, `/${first.id}`);
  assert.equal(res.status, 200);
  assert.deepEqual(await res.json(), first);
  res = await api(B, `/${first.id}`);
  assert.equal(res.status, 404);
  assert.equal((await res.json()).error.code, "not_found");
});
await check("REST errors: 400, 401, 405, 413, 415, 422", async () => {
  const expect = async (resP, status, code) => {
    const res = await resP;
    assert.equal(res.status, status, code);
    assert.equal((await res.json()).error.code, code);
    return res;
  };
  await expect(api(A, "?limit=0"), 400, "bad_request");
  await expect(api(A, "?sinceId=nope"), 400, "bad_request");
  await expect(api(A, "/nope"), 400, "bad_request");
  await expect(fetch(`${url}/api/events`), 401, "unauthorized");
  await expect(api(A, "", { headers: { "X-User-Token": "wrong" } }), 401, "unauthorized");
  const res = await expect(api(A, "", { method: "DELETE" }), 405, "method_not_allowed");
  assert.match(res.headers.get("allow"), /GET/);
  await expect(postRest(A, "x".repeat(2049)), 413, "payload_too_large");
  await expect(postRest(A, "x", { "Content-Type": "text/plain" }), 415, "unsupported_media_type");
  await expect(postRest(A, "   "), 422, "validation_failed");
  await expect(postRest(A, "bell\u0007"), 422, "validation_failed");
  await expect(api(A, "", { method: "POST", headers: { "Content-Type": "application/json" }, body: "{" }), 400, "bad_request");
  await expect(postRest(A, 5), 400, "bad_request");
});

// ---------------------------------------------------------------- Socket.IO
const a1 = connect(A);
const a2 = connect(A, { transports: ["websocket"] });
const b = connect(B);
await check("snapshot on connect (latest events, oldest first; empty for a new tenant)", async () => {
  const [s1, s2, sb] = await Promise.all([a1.snapshot, a2.snapshot, b.snapshot]);
  assert.deepEqual(s1.map((e) => e.seq), [1, 2]);
  assert.deepEqual(s2, s1);
  assert.deepEqual(sb, []);
});
await check("connect_error 'unauthorized' for a bad token", async () => {
  const bad = io(`${url}/events`, { auth: { tenantId: A, token: "wrong" }, reconnection: false });
  const err = await new Promise((resolve) => bad.once("connect_error", resolve));
  assert.equal(err.message, "unauthorized");
  bad.close();
});
await check("event_created from REST and from post_event reaches the tenant only", async () => {
  const viaRest = await (await postRest(A, "to the room")).json();
  const { event, error } = await a1.emitWithAck("post_event", { message: "from a socket" });
  assert.equal(error, undefined);
  assert.equal(event.seq, viaRest.seq + 1);
  assert.equal(event.author, "bench");
  const { event: forB } = await b.emitWithAck("post_event", { message: "for B" });
  assert.equal(forB.seq, 1);
  await sleep(200);
  for (const s of [a1, a2]) assert.deepEqual(s.got, [viaRest, event]);
  assert.deepEqual(b.got, [forB]);
});
await check("post_event errors answer by ack; the socket stays", async () => {
  assert.equal((await a1.emitWithAck("post_event", { message: "" })).error.code, "validation_failed");
  assert.equal((await a1.emitWithAck("post_event", { message: "x".repeat(2049) })).error.code, "payload_too_large");
  assert.equal((await a1.emitWithAck("post_event", "nope")).error.code, "bad_request");
  assert.equal((await a1.emitWithAck("post_event", { message: 1 })).error.code, "bad_request");
  const err = new Promise((resolve) => a1.once("error", resolve));
  a1.emit("post_event", {});
  assert.equal((await err).code, "bad_request");
  assert.ok(a1.connected);
});
await check("replay with ack and without", async () => {
  const page = await a2.emitWithAck("replay", { sinceId: first.id, limit: 2 });
  assert.deepEqual(page.events.map((e) => e.seq), [2, 3]);
  assert.equal(page.hasMore, true);
  assert.equal(page.gap, false);
  assert.equal((await a2.emitWithAck("replay", { limit: 0 })).error.code, "bad_request");
  const result = new Promise((resolve) => a2.once("replay_result", resolve));
  a2.emit("replay", { limit: 1 });
  assert.deepEqual((await result).events.map((e) => e.seq), [4]);
});
for (const s of [a1, a2, b]) s.close();
console.log("smoke: all checks passed");
