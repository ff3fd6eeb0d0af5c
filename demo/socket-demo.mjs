// A tour of the event feed with the official socket.io-client.
//
// Start the server (`cargo run --release`, demo tokens), then:
//   cd demo && npm ci && node socket-demo.mjs [http://127.0.0.1:3000]
//
// It connects as two tenants, shows each one's snapshot, posts over the
// socket and over REST, replays from a cursor, and shows that tenant B never
// sees tenant A's events.

import { io } from "socket.io-client";

const base = process.argv[2] || process.env.EVENTFEED_URL || "http://127.0.0.1:3000";
const once = (em, ev) => new Promise((res) => em.once(ev, (...a) => res(a)));
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

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
      throw new Error(`${tenantId}: ${err.message} (is the server running at ${base}?)`);
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

async function ready(name, client) {
  const snapshot = await client.snapshot;
  console.log(`${name}: connected (socket ${client.socket.id}), snapshot of ${snapshot.length} events`);
  for (const e of snapshot.slice(-3)) console.log(`  #${e.seq} ${JSON.stringify(e.message)}`);
  return snapshot;
}

const a = connect("company_a", "token_admin_a");
const b = connect("company_b", "token_admin_b");
await ready("tenant A", a);
await ready("tenant B", b);

console.log("\nA posts over the socket (post_event with ack):");
const viaSocket = await a.socket.emitWithAck("post_event", { message: `Hello from a socket at ${new Date().toISOString()}` });
if (viaSocket.error) throw new Error(JSON.stringify(viaSocket.error));
console.log(`  ack: event ${viaSocket.event.id} (seq ${viaSocket.event.seq})`);

console.log("\nA posts over REST (POST /api/events):");
const res = await fetch(`${base}/api/events`, {
  method: "POST",
  headers: { "Content-Type": "application/json", "X-TENANT-ID": "company_a", "X-User-Token": "token_admin_a" },
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
const reader = connect("company_a", "token_reader_a");
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
if (process.exitCode !== 1) console.log("\ndemo finished");
