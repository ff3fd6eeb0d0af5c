// Randomized tenant isolation: T tenants × C clients (random transports),
// P events per tenant posted concurrently over REST and over post_event.
// Every client must receive exactly its own tenant's events, each once, in
// seq order (1..P), and nothing else.
//
// Usage: node isolation.mjs URL TENANTS CLIENTS POSTS SEED
// Tenant i is "t<i>" with the admin token "tok_t<i>".

import { io } from "socket.io-client";
import assert from "node:assert/strict";

const [base, T, C, P, SEED] = [process.argv[2], ...process.argv.slice(3).map(Number)];
let state = SEED >>> 0 || 1;
const rand = () => ((state = (Math.imul(state, 1664525) + 1013904223) >>> 0) / 2 ** 32);
const pick = (xs) => xs[Math.floor(rand() * xs.length)];
const MODES = [["websocket"], ["polling"], ["polling", "websocket"]];
const once = (em, ev) => new Promise((res) => em.once(ev, (...a) => res(a)));

const clients = [];
for (let t = 0; t < T; t++) {
  for (let c = 0; c < C; c++) {
    const tenant = `t${t}`;
    const socket = io(base + "/events", {
      transports: pick(MODES),
      forceNew: true,
      reconnection: false,
      auth: { tenantId: tenant, token: `tok_${tenant}` },
    });
    const client = { tenant, socket, got: [] };
    socket.on("event_created", (e) => client.got.push(e));
    clients.push(client);
  }
}
await Promise.all(
  clients.map(async ({ socket }) => {
    const [snapshot] = await once(socket, "snapshot");
    assert.deepEqual(snapshot, [], "fresh tenants start empty");
  }),
);
console.log(`connected ${clients.length} clients`);

// Post P events per tenant, interleaved across tenants, half REST half socket.
const posted = new Map(); // tenant -> Set(id)
const jobs = [];
for (let i = 0; i < P; i++) {
  for (let t = 0; t < T; t++) {
    const tenant = `t${t}`;
    const message = `${tenant} #${i} ${rand().toString(36).slice(2)}`;
    jobs.push(async () => {
      let event;
      if (rand() < 0.5) {
        const res = await fetch(base + "/api/events", {
          method: "POST",
          headers: { "Content-Type": "application/json", "X-TENANT-ID": tenant, "X-User-Token": `tok_${tenant}` },
          body: JSON.stringify({ message }),
        });
        assert.equal(res.status, 201);
        event = await res.json();
      } else {
        const mine = clients.filter((c) => c.tenant === tenant);
        const r = await pick(mine).socket.timeout(10000).emitWithAck("post_event", { message });
        assert.ok(r.event, JSON.stringify(r));
        event = r.event;
      }
      assert.equal(event.tenant_id, tenant);
      if (!posted.has(tenant)) posted.set(tenant, new Set());
      posted.get(tenant).add(event.id);
    });
  }
}
// Run with bounded concurrency, in random order.
for (let i = jobs.length - 1; i > 0; i--) {
  const j = Math.floor(rand() * (i + 1));
  [jobs[i], jobs[j]] = [jobs[j], jobs[i]];
}
const queue = jobs.slice();
await Promise.all(Array.from({ length: 32 }, async () => {
  while (queue.length) await queue.pop()();
}));
console.log(`posted ${jobs.length} events`);

const deadline = Date.now() + 20000;
while (clients.some((c) => c.got.length < P) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
// Give any stray (wrong) delivery a chance to arrive before judging.
await new Promise((r) => setTimeout(r, 200));

let failures = 0;
for (const c of clients) {
  try {
    assert.equal(c.got.length, P, `client of ${c.tenant} got ${c.got.length} events, want ${P}`);
    for (const e of c.got) assert.equal(e.tenant_id, c.tenant, "cross-tenant delivery");
    assert.deepEqual(c.got.map((e) => e.seq), Array.from({ length: P }, (_, i) => i + 1), "seq order, no gaps, no duplicates");
    assert.deepEqual(new Set(c.got.map((e) => e.id)), posted.get(c.tenant), "exactly the posted events");
  } catch (e) {
    failures++;
    console.log(`not ok - ${e.message}`);
  }
  c.socket.disconnect();
}
const passed = clients.length - failures;
console.log(`${passed} passed, ${failures} failed`);
process.exit(failures === 0 ? 0 : 1);
