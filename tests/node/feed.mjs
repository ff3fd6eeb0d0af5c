// The feed's contract, checked with curl-like fetch calls and the official
// socket.io-client over websocket only, polling only, and the default upgrade.
//
// Usage: node feed.mjs http://127.0.0.1:PORT BUFFER_SIZE
// The server runs with the demo tokens and NB_BACKEND_EVENTS_BUFFER_SIZE =
// BUFFER_SIZE, and a REST body limit of 65536. Ends with "N passed, M failed".

import { io } from "socket.io-client";
import assert from "node:assert/strict";
import { check, finish, once, rest as restAt, until } from "./harness.mjs";

const base = process.argv[2];
const bufferSize = Number(process.argv[3] || 500);
const A = { tenant: "company_a", token: "token_admin_a", user: "admin_a" };
const B = { tenant: "company_b", token: "token_admin_b", user: "admin_b" };
const R = { tenant: "company_a", token: "token_reader_a", user: "reader_a" };
const UUID_V4 = /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;
const TS = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$/;

const rest = (method, path, who, body, extraHeaders = {}) => restAt(base, method, path, who, body, extraHeaders);

const post = (who, message) => rest("POST", "/api/events", who, { message });

function assertError(res, status, code) {
  assert.equal(res.status, status, `status of ${res.text}`);
  assert.equal(res.json?.error?.code, code, res.text);
  assert.equal(typeof res.json.error.message, "string");
}

function assertEvent(e, who, message) {
  assert.match(e.id, UUID_V4);
  assert.equal(typeof e.seq, "number");
  assert.equal(e.tenant_id, who.tenant);
  assert.equal(e.message, message);
  assert.match(e.timestamp, TS);
  assert.equal(e.author, who.user);
  assert.deepEqual(Object.keys(e), ["id", "seq", "tenant_id", "message", "timestamp", "author"]);
}


const MODES = { websocket: ["websocket"], polling: ["polling"], upgrade: ["polling", "websocket"] };

function connect(who, transports, extra = {}) {
  return io(base + "/events", {
    transports,
    forceNew: true,
    reconnection: false,
    auth: who ? { tenantId: who.tenant, token: who.token } : undefined,
    ...extra,
  });
}

// Connects and resolves with [socket, snapshot].
async function connected(who, transports) {
  const s = connect(who, transports);
  const snapshot = once(s, "snapshot");
  const outcome = await Promise.race([once(s, "connect").then(() => null), once(s, "connect_error")]);
  if (outcome) throw outcome[0];
  return [s, (await snapshot)[0]];
}

/// Collects event_created events on a socket.
function collect(s) {
  const got = [];
  s.on("event_created", (e) => got.push(e));
  return got;
}


// ---------------------------------------------------------------- REST

await check("REST: POST creates an event: 201, Location, the event", async () => {
  const res = await post(A, "User logged in");
  assert.equal(res.status, 201);
  assertEvent(res.json, A, "User logged in");
  assert.equal(res.headers.get("location"), `/api/events/${res.json.id}`);
  assert.match(res.headers.get("content-type"), /application\/json/);
  const again = await post(A, "second");
  assert.equal(again.json.seq, res.json.seq + 1, "seq counts up per tenant with no holes");
});

await check("REST: 401 without or with wrong credentials, or another tenant", async () => {
  assertError(await rest("GET", "/api/events", null), 401, "unauthorized");
  assertError(await rest("GET", "/api/events", { tenant: "company_a" }), 401, "unauthorized");
  assertError(await rest("GET", "/api/events", { tenant: "company_a", token: "nope" }), 401, "unauthorized");
  assertError(await rest("GET", "/api/events", { tenant: "company_b", token: A.token }), 401, "unauthorized");
  assertError(await post(null, "x"), 401, "unauthorized");
  const h = await fetch(base + "/api/events", { headers: { "x-tenant-id": A.tenant, "X-USER-TOKEN": A.token } });
  assert.equal(h.status, 200, "header names are case-insensitive");
});

await check("REST: a reader may read but not write (403)", async () => {
  assertError(await post(R, "nope"), 403, "forbidden");
  const res = await rest("GET", "/api/events?limit=1", R);
  assert.equal(res.status, 200);
});

await check("REST: 415 for a body that is not application/json", async () => {
  assertError(await rest("POST", "/api/events", A, "message=hi", { "Content-Type": "text/plain" }), 415, "unsupported_media_type");
  assertError(await rest("POST", "/api/events", A, '{"message":"hi"}', { "Content-Type": "application/x-www-form-urlencoded" }), 415, "unsupported_media_type");
  const ok = await rest("POST", "/api/events", A, '{"message":"charset ok"}', { "Content-Type": "application/json; charset=utf-8" });
  assert.equal(ok.status, 201);
});

await check("REST: 400 for malformed JSON, wrong types, missing message", async () => {
  assertError(await rest("POST", "/api/events", A, "{not json"), 400, "bad_request");
  assertError(await rest("POST", "/api/events", A, { message: 5 }), 400, "bad_request");
  assertError(await rest("POST", "/api/events", A, { message: null }), 400, "bad_request");
  assertError(await rest("POST", "/api/events", A, {}), 400, "bad_request");
  assertError(await rest("POST", "/api/events", A, [1, 2]), 400, "bad_request");
  assertError(await rest("POST", "/api/events", A, "\"just a string\""), 400, "bad_request");
});

await check("REST: 422 for empty, blank, or control characters; tab and newline are fine", async () => {
  assertError(await post(A, ""), 422, "validation_failed");
  assertError(await post(A, "   \n\t "), 422, "validation_failed");
  assertError(await post(A, "bell\u0007"), 422, "validation_failed");
  assertError(await post(A, "cr\r"), 422, "validation_failed");
  const ok = await post(A, "tab\there\nnewline ✓ é");
  assert.equal(ok.status, 201);
  assert.equal(ok.json.message, "tab\there\nnewline ✓ é");
});

await check("REST: 413 for a message over 2048 characters or a body over the limit", async () => {
  const ok = await post(A, "é".repeat(2048));
  assert.equal(ok.status, 201, "2048 characters (4096 bytes) is fine");
  assertError(await post(A, "a".repeat(2049)), 413, "payload_too_large");
  assertError(await rest("POST", "/api/events", A, { message: "x", pad: "p".repeat(70000) }), 413, "payload_too_large");
});

await check("REST: GET lists the latest events oldest first, with limit", async () => {
  const posted = [];
  for (let i = 0; i < 5; i++) posted.push((await post(A, `list ${i}`)).json);
  const res = await rest("GET", "/api/events?limit=3", A);
  assert.equal(res.status, 200);
  assert.deepEqual(res.json.events.map((e) => e.id), posted.slice(2).map((e) => e.id));
  assert.equal(res.json.hasMore, false);
  assert.equal(res.json.gap, false);
  const all = await rest("GET", "/api/events", A);
  assert.ok(all.json.events.length <= 100);
  for (let i = 1; i < all.json.events.length; i++) assert.equal(all.json.events[i].seq, all.json.events[i - 1].seq + 1);
});

await check("REST: sinceId pages strictly after it, with hasMore", async () => {
  const first = (await post(A, "page start")).json;
  const rest5 = [];
  for (let i = 0; i < 5; i++) rest5.push((await post(A, `page ${i}`)).json);
  const p1 = await rest("GET", `/api/events?sinceId=${first.id}&limit=2`, A);
  assert.deepEqual(p1.json.events.map((e) => e.seq), [first.seq + 1, first.seq + 2]);
  assert.equal(p1.json.hasMore, true);
  assert.equal(p1.json.gap, false);
  const last = p1.json.events[1].id;
  const p2 = await rest("GET", `/api/events?sinceId=${last}&limit=10`, A);
  assert.deepEqual(p2.json.events.map((e) => e.seq), [first.seq + 3, first.seq + 4, first.seq + 5]);
  assert.equal(p2.json.hasMore, false);
  const p3 = await rest("GET", `/api/events?sinceId=${rest5[4].id}`, A);
  assert.deepEqual(p3.json, { events: [], hasMore: false, gap: false });
});

await check("REST: gap when sinceId is unknown or evicted", async () => {
  const unknown = await rest("GET", `/api/events?sinceId=00000000-0000-4000-8000-000000000000&limit=2`, A);
  assert.equal(unknown.status, 200);
  assert.equal(unknown.json.gap, true);
  const oldest = (await rest("GET", `/api/events?limit=1000`, A)).json.events[0];
  assert.deepEqual(unknown.json.events[0], oldest, "starts at the oldest retained event");
  const evictMe = (await post(A, "to be evicted")).json;
  for (let i = 0; i < bufferSize; i++) await post(A, `filler ${i}`);
  const after = await rest("GET", `/api/events?sinceId=${evictMe.id}&limit=1000`, A);
  assert.equal(after.json.gap, true);
  assert.equal(after.json.events.length, bufferSize);
  assert.equal(after.json.events[0].seq, evictMe.seq + 1, "the oldest retained is right after the evicted one");
  assertError(await rest("GET", `/api/events/${evictMe.id}`, A), 404, "not_found");
});

await check("REST: 400 for a bad limit or sinceId", async () => {
  for (const q of ["limit=0", "limit=1001", "limit=abc", "limit=2.5", "limit=-3", "sinceId=123", "sinceId=not-a-uuid"]) {
    assertError(await rest("GET", `/api/events?${q}`, A), 400, "bad_request");
  }
  const ok = await rest("GET", "/api/events?limit=1000", A);
  assert.equal(ok.status, 200);
});

await check("REST: GET /api/events/{id}: 200, 404 (also for another tenant's id), 400", async () => {
  const e = (await post(A, "get me")).json;
  const res = await rest("GET", `/api/events/${e.id}`, A);
  assert.equal(res.status, 200);
  assert.deepEqual(res.json, e);
  assertError(await rest("GET", `/api/events/${e.id}`, B), 404, "not_found");
  assertError(await rest("GET", `/api/events/00000000-0000-4000-8000-000000000000`, A), 404, "not_found");
  assertError(await rest("GET", `/api/events/nope`, A), 400, "bad_request");
  assertError(await rest("GET", `/api/events/${e.id}`, null), 401, "unauthorized");
});

await check("REST: 405 with Allow, 404 for unknown routes", async () => {
  const del = await rest("DELETE", "/api/events", A);
  assertError(del, 405, "method_not_allowed");
  assert.equal(del.headers.get("allow"), "GET, POST");
  const put = await rest("PUT", "/api/events/00000000-0000-4000-8000-000000000000", A, { message: "x" });
  assertError(put, 405, "method_not_allowed");
  assert.equal(put.headers.get("allow"), "GET");
  assertError(await rest("GET", "/api/nothing", A), 404, "not_found");
  assertError(await rest("GET", "/", A), 404, "not_found");
});

await check("REST: tenant B sees none of tenant A's events", async () => {
  const a = (await post(A, "A only")).json;
  const list = await rest("GET", "/api/events?limit=1000", B);
  assert.ok(list.json.events.every((e) => e.tenant_id === "company_b"));
  assert.ok(!list.json.events.some((e) => e.id === a.id));
  const since = await rest("GET", `/api/events?sinceId=${a.id}`, B);
  assert.equal(since.json.gap, true, "A's id is unknown to B");
  assert.ok(since.json.events.every((e) => e.tenant_id === "company_b"));
});

await check("health: /healthz and /readyz", async () => {
  const h = await rest("GET", "/healthz", null);
  assert.equal(h.status, 200);
  assert.deepEqual(h.json, { status: "ok" });
  assert.equal((await rest("GET", "/readyz", null)).status, 200);
});

// ---------------------------------------------------------------- Socket.IO

for (const [mode, transports] of Object.entries(MODES)) {
  await check(`${mode}: connect gets a snapshot of the latest events, oldest first`, async () => {
    for (let i = 0; i < 3; i++) await post(A, `snap ${mode} ${i}`);
    const [s, snapshot] = await connected(A, transports);
    const latest = (await rest("GET", "/api/events?limit=100", A)).json.events;
    assert.ok(snapshot.length <= 100);
    assert.deepEqual(snapshot, latest);
    s.disconnect();
  });

  await check(`${mode}: connect_error "unauthorized" for bad or missing auth`, async () => {
    for (const who of [null, { tenant: "company_a", token: "bad" }, { tenant: "company_b", token: A.token }, { tenant: "", token: "" }]) {
      const s = connect(who, transports);
      const [err] = await once(s, "connect_error");
      assert.equal(err.message, "unauthorized");
      s.close();
    }
  });

  await check(`${mode}: event_created for REST and socket posts, in seq order`, async () => {
    const [s] = await connected(A, transports);
    const got = collect(s);
    const [poster] = await connected(A, transports);
    const sent = [];
    for (let i = 0; i < 5; i++) {
      if (i % 2 === 0) sent.push((await post(A, `live ${mode} ${i}`)).json);
      else sent.push((await poster.emitWithAck("post_event", { message: `live ${mode} ${i}` })).event);
    }
    await until(() => got.length >= 5, "5 events");
    assert.deepEqual(got.map((e) => e.id), sent.map((e) => e.id));
    for (let i = 1; i < got.length; i++) assert.equal(got[i].seq, got[i - 1].seq + 1);
    s.disconnect();
    poster.disconnect();
  });

  await check(`${mode}: post_event acks {event} or {error}`, async () => {
    const [s] = await connected(A, transports);
    const ok = await s.emitWithAck("post_event", { message: "via socket" });
    assertEvent(ok.event, A, "via socket");
    assert.equal((await s.emitWithAck("post_event", { message: "" })).error.code, "validation_failed");
    assert.equal((await s.emitWithAck("post_event", { message: "x".repeat(2049) })).error.code, "payload_too_large");
    assert.equal((await s.emitWithAck("post_event", { message: 5 })).error.code, "bad_request");
    assert.equal((await s.emitWithAck("post_event", "not an object")).error.code, "bad_request");
    assert.equal((await s.emitWithAck("post_event")).error.code, "bad_request");
    assert.ok(s.connected, "the socket stays connected after bad arguments");
    s.disconnect();
    const [r] = await connected(R, transports);
    const refused = await r.emitWithAck("post_event", { message: "reader" });
    assert.equal(refused.error.code, "forbidden");
    assert.equal(typeof refused.error.message, "string");
    r.disconnect();
  });

  await check(`${mode}: post_event without ack: errors come as the error event`, async () => {
    const [s] = await connected(A, transports);
    const err = once(s, "error");
    s.emit("post_event", { message: "\u0001" });
    assert.equal((await err)[0].code, "validation_failed");
    const err2 = once(s, "error");
    s.emit("post_event", 42);
    assert.equal((await err2)[0].code, "bad_request");
    const got = collect(s);
    s.emit("post_event", { message: "no ack, ok" });
    await until(() => got.some((e) => e.message === "no ack, ok"), "the broadcast");
    s.disconnect();
  });

  await check(`${mode}: replay with ack, replay_result without`, async () => {
    const [s] = await connected(A, transports);
    const first = (await post(A, `replay ${mode} 0`)).json;
    const second = (await post(A, `replay ${mode} 1`)).json;
    const third = (await post(A, `replay ${mode} 2`)).json;
    const r = await s.emitWithAck("replay", { sinceId: first.id, limit: 1 });
    assert.deepEqual(r, { events: [second], hasMore: true, gap: false });
    const latest = await s.emitWithAck("replay", {});
    assert.deepEqual(latest.events.at(-1), third);
    const res = once(s, "replay_result");
    s.emit("replay", { sinceId: second.id });
    assert.deepEqual((await res)[0], { events: [third], hasMore: false, gap: false });
    const gap = await s.emitWithAck("replay", { sinceId: "00000000-0000-4000-8000-000000000000", limit: 1 });
    assert.equal(gap.gap, true);
    assert.equal((await s.emitWithAck("replay", { limit: 0 })).error.code, "bad_request");
    assert.equal((await s.emitWithAck("replay", { sinceId: "x" })).error.code, "bad_request");
    const err = once(s, "error");
    s.emit("replay", "nope");
    assert.equal((await err)[0].code, "bad_request");
    assert.ok(s.connected);
    s.disconnect();
  });

  await check(`${mode}: tenant B never receives tenant A's events`, async () => {
    const [b] = await connected(B, transports);
    const [a] = await connected(A, transports);
    const gotB = collect(b);
    const gotA = collect(a);
    await post(A, "secret of A");
    await a.emitWithAck("post_event", { message: "another secret of A" });
    const mineB = (await post(B, "B's own")).json;
    await until(() => gotB.length >= 1 && gotA.length >= 2, "deliveries");
    // B's own event arrived after A's were posted; anything of A would be there by now.
    assert.deepEqual(gotB.map((e) => e.id), [mineB.id]);
    assert.ok(gotA.every((e) => e.tenant_id === "company_a"));
    const replayB = await b.emitWithAck("replay", { limit: 1000 });
    assert.ok(replayB.events.every((e) => e.tenant_id === "company_b"));
    a.disconnect();
    b.disconnect();
  });
}

finish();
