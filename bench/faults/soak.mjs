// The soak: one eventfeed instance for a long run under churn — subscribers
// (the official client, recovery on) cut at random ages, others leaving for
// good and new ones joining all the time, writes at a steady rate — sampling
// the server's RSS, open file descriptors and runtime tasks every 10 s.
//
//   node soak.mjs --bin target/release/eventfeed [--minutes 30] [--clients 1000]
//                 [--rate 200] [--tenants 20] [--workers 3] [--json out.json]
//
// Prints one line per sample and, at the end, the samples at the start (after
// 5 minutes of warm-up: buffers full), at 10 minutes and at the end, the drift of each from
// the warm-up sample, and the delivery result (lost, duplicated, reordered:
// a subscriber must hold every event of its tenant after the newest one its
// first snapshot or replay gave it, up to the newest it received). Exit status
// 0 when nothing was lost, duplicated or reordered.

import { readdirSync, readFileSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { randomUUID } from "node:crypto";
import { Acks, Publisher } from "./clients.mjs";
import { SubscriberPool } from "./pool.mjs";
import { FaultProxy } from "./proxy.mjs";
import { Instance } from "./servers.mjs";

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const args = Object.fromEntries(
  process.argv.slice(2).reduce((acc, a, i, all) => (a.startsWith("--") ? [...acc, [a.slice(2), all[i + 1]]] : acc), []),
);
if (!args.bin) {
  console.error("usage: node soak.mjs --bin PATH [--minutes 30] [--clients 1000] [--rate 200] [--tenants 20] [--json out.json]");
  process.exit(2);
}
const minutes = Number(args.minutes ?? 30);
const clients = Number(args.clients ?? 1000);
const rate = Number(args.rate ?? 200);
const tenantCount = Number(args.tenants ?? 20);
const SAMPLE_MS = 10_000;
// Churn: this share of the subscribers leaves for good (and as many new ones
// join) every second, besides the cuts every connection gets at 2–8 s.
const CHURN_PER_S = Math.max(1, Math.round(clients / 100));

const token = "soak_admin";
const dir = mkdtempSync(join(tmpdir(), "soak-"));
const tokensFile = join(dir, "tokens.json");
writeFileSync(tokensFile, JSON.stringify({ tokens: [{ token, user: "soak", tenants: ["*"], role: "admin" }] }));
const tenants = Array.from({ length: tenantCount }, (_, i) => `soak_${i}`);

const inst = new Instance({
  kind: "eventfeed",
  bin: args.bin,
  name: "eventfeed",
  env: {
    NB_BACKEND_TOKENS_FILE: tokensFile,
    NB_BACKEND_EVENTS_BUFFER_SIZE: "2000",
    // Keys are remembered for a minute, so their memory reaches its steady
    // state early (with the default hour it would grow for the first hour,
    // by design: about 200 events/s × 3,600 s keys).
    NB_BACKEND_IDEMPOTENCY_WINDOW: "60000",
    NB_BACKEND_RATE_LIMIT: "off",
    NB_BACKEND_TENANT_RATE_LIMIT: "off",
  },
});
await inst.start();
const pid = inst.child.pid;
const subProxy = new FaultProxy({ name: "subscribers", cutEveryMs: [2000, 8000] });
const pubProxy = new FaultProxy({ name: "publishers" });
await subProxy.listen();
await pubProxy.listen();
subProxy.setBackends([inst.addr]);
pubProxy.setBackends([inst.addr]);

const pool = new SubscriberPool({ workers: Number(args.workers ?? 3), url: subProxy.url, namespace: "/events", token, transports: ["websocket"] });
const acks = new Acks((tenant, k) => pool.ack(tenant, k));
let next = 0;
const tenantOf = () => tenants[next++ % tenants.length];
await pool.start(Array.from({ length: clients }, tenantOf));
await pool.connected(60_000);

const runId = randomUUID().slice(0, 8);
const pubs = tenants.map((t) => new Publisher({ url: pubProxy.url, tenant: t, token, rate: rate / tenants.length, runId }));
const running = pubs.map((p) => p.run(acks));

function sample(t0) {
  const status = readFileSync(`/proc/${pid}/status`, "utf8");
  const rssKiB = Number(/VmRSS:\s+(\d+)/.exec(status)[1]);
  const fds = readdirSync(`/proc/${pid}/fd`).length;
  return { rssKiB, fds };
}
async function tasks() {
  const res = await fetch(`http://${inst.addr}/metrics`);
  const text = await res.text();
  const line = text.split("\n").find((l) => l.startsWith("eventfeed_tasks "));
  const conns = text.split("\n").find((l) => l.startsWith('eventfeed_connections{transport="websocket"}'));
  return { tasks: Number(line?.split(" ")[1]), sessions: Number(conns?.split(" ")[1]) };
}

const samples = [];
const t0 = Date.now();
const end = t0 + minutes * 60_000;
let churned = 0;
const churn = setInterval(() => {
  churned += CHURN_PER_S;
  pool.churn(CHURN_PER_S, tenantOf).catch((e) => console.error(`churn: ${e.message}`));
}, 1000);
while (Date.now() < end) {
  await sleep(Math.min(SAMPLE_MS, end - Date.now()));
  const s = { minute: (Date.now() - t0) / 60_000, ...sample(), ...(await tasks()), acknowledged: pubs.reduce((n, p) => n + p.acked.size, 0) };
  samples.push(s);
  console.log(`${s.minute.toFixed(1)} min: RSS ${(s.rssKiB / 1024).toFixed(1)} MiB, ${s.fds} fds, ${s.tasks} tasks, ${s.sessions} sessions, ${s.acknowledged} writes`);
}
clearInterval(churn);
for (const p of pubs) p.stop();
await Promise.all(running);
subProxy.calm();
await pool.settle(20_000);
await sleep(300);
const records = await pool.finish();

// Delivery: from the newest event of a subscriber's first snapshot/replay
// (what it joined at) to the newest it received, every event exactly once.
let expected = 0, lost = 0, duplicated = 0, reordered = 0;
for (const s of records) {
  reordered += s.reordered;
  const start = s.startK ?? s.highestK; // never got its first snapshot: nothing to check
  for (let k = start + 1; k <= s.highestK; k++) {
    expected++;
    const n = s.counts[k] ?? 0;
    if (n === 0) lost++;
    else if (n > 1) duplicated++;
  }
}
await inst.stop();
await subProxy.close();
await pubProxy.close();
rmSync(dir, { recursive: true, force: true });

const at = (min) => samples.reduce((best, s) => (Math.abs(s.minute - min) < Math.abs(best.minute - min) ? s : best), samples[0]);
// Warm-up: the buffers (2,000 events × 20 tenants at 200 events/s) are full
// after 3⅓ minutes, the keys of the one-minute window after one.
const WARM_UP_MIN = Math.min(5, minutes / 2);
const warm = at(WARM_UP_MIN);
const mid = at(10);
const last = samples[samples.length - 1];
const drift = (s) => ({
  rss: `${(((s.rssKiB - warm.rssKiB) / warm.rssKiB) * 100).toFixed(1)} %`,
  fds: `${(((s.fds - warm.fds) / warm.fds) * 100).toFixed(1)} %`,
  tasks: `${(((s.tasks - warm.tasks) / warm.tasks) * 100).toFixed(1)} %`,
});
const result = {
  minutes, clients, rate, tenants: tenantCount, churnPerSecond: CHURN_PER_S,
  subscribersOverall: records.length,
  cuts: subProxy.counts.cut,
  warmUp: warm, tenMinutes: mid, end: last, driftAt10: drift(mid), driftAtEnd: drift(last),
  delivery: { expected, lost, duplicated, reordered },
  samples,
};
if (args.json) writeFileSync(args.json, JSON.stringify(result, null, 2));
console.log(JSON.stringify({ ...result, samples: undefined }, null, 2));
process.exit(lost === 0 && duplicated === 0 && reordered === 0 ? 0 : 1);
