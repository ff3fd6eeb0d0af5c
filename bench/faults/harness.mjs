// The delivery fault harness: one scenario against eventfeed or the Node
// baseline, through fault-injecting proxies, then the scorecard of that run.
//
//   node harness.mjs --server eventfeed --bin target/release/eventfeed --scenario jitter
//   node harness.mjs --server node --scenario deploy --json out.json
//
// Options (defaults per scenario below):
//   --server eventfeed|node   what runs (node: bench/baseline/server.mjs, recovery on;
//                             with @socket.io/redis-adapter where there are instances)
//   --bin PATH                the eventfeed binary (for --server eventfeed)
//   --scenario NAME           jitter | polling | deploy | crash | redis | pubcuts | beyond
//   --clients N --tenants N --rate N (events/s, all tenants) --duration S --instances N
//   --workers N               processes the subscribers run in (default 2)
//   --json PATH               also write the scorecard there
//   --quiet                   only the result line
//
// Every subscriber connects before the first write, so it must receive every
// event of its tenant. The run ends with the faults calmed and a bounded wait
// for every subscriber to hold every event, then reads the store back.
//
// Exit status: 0 when every guarantee held (for eventfeed: exactly once, no
// loss, no duplicate, no reorder, no acknowledged write missing, no duplicate
// write — or, in "beyond", every loss announced), 1 otherwise, 2 on a harness
// error. For the Node baseline the scorecard is the point, not the status.

import { Acks, indexOf, Publisher } from "./clients.mjs";
import { SubscriberPool } from "./pool.mjs";
import { FaultProxy } from "./proxy.mjs";
import { Instance, Redis } from "./servers.mjs";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { randomUUID } from "node:crypto";

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

const SCENARIOS = {
  // 1. Every subscriber connection cut at a random age of 2–8 s.
  jitter: { clients: 500, tenants: 3, rate: 100, duration: 60, instances: 1, transports: ["websocket"], cutEveryMs: [2000, 8000] },
  // 2. The same cuts on long-polling subscribers, one instance. Each poll is a
  //    short TCP connection of its own (the Node client does not keep them
  //    alive), so the cuts are spread over whatever is open: one per client
  //    every 5 s on average.
  polling: { clients: 100, tenants: 3, rate: 100, duration: 60, instances: 1, transports: ["polling"], cutPerSecondPerClient: 0.2 },
  // 3. Redis mode; each instance in turn is stopped (SIGTERM) and started again.
  deploy: { clients: 300, tenants: 3, rate: 100, duration: 60, instances: 3, transports: ["websocket"], redis: true, fault: "deploy" },
  // 4. Redis mode; one instance SIGKILLed, started again 5 s later.
  crash: { clients: 300, tenants: 3, rate: 100, duration: 60, instances: 3, transports: ["websocket"], redis: true, fault: "crash" },
  // 5. Redis mode; Redis itself killed and started again from its append-only file.
  redis: { clients: 300, tenants: 3, rate: 100, duration: 60, instances: 2, transports: ["websocket"], redis: true, fault: "redis" },
  // 6. The publishers' connections cut mid-request and after the answer.
  pubcuts: { clients: 100, tenants: 3, rate: 100, duration: 60, instances: 1, transports: ["websocket"], publisherFaults: true },
  // 7. Beyond the guarantee: the subscribers are cut off for longer than the
  //    recovery window (5 s here) and than the buffer holds (100 events/s over
  //    3 tenants for 8 s, a 100-event buffer): they lose events, and every
  //    loss must be announced (gap: true or a snapshot).
  beyond: { clients: 60, tenants: 3, rate: 100, duration: 30, instances: 1, transports: ["websocket"], buffer: 100, recoveryWindow: 5000, fault: "blackout" },
};

function parseArgs(argv) {
  const o = {};
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (!a.startsWith("--")) throw new Error(`unexpected argument ${a}`);
    const name = a.slice(2);
    if (name === "quiet") o.quiet = true;
    else o[name] = argv[++i];
  }
  return o;
}

const pct = (xs, p) => {
  if (!xs.length) return null;
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))];
};

/** Every event of `tenant` held by the server at `base`, oldest first. */
async function readStore(base, tenant, token) {
  const events = [];
  // An unknown sinceId answers from the oldest retained event (gap: true).
  let since = randomUUID();
  for (let page = 0; page < 10_000; page++) {
    const res = await fetch(`${base}/api/events?limit=1000&sinceId=${since}`, {
      headers: { "X-TENANT-ID": tenant, "X-User-Token": token },
      signal: AbortSignal.timeout(10_000),
    });
    if (res.status !== 200) throw new Error(`reading the store: ${res.status} ${await res.text()}`);
    const body = await res.json();
    events.push(...body.events);
    if (!body.hasMore || !body.events.length) break;
    since = body.events[body.events.length - 1].id;
  }
  return events;
}

async function main() {
  const args = parseArgs(process.argv.slice(2));
  const name = args.scenario || "jitter";
  const base = SCENARIOS[name];
  if (!base) throw new Error(`unknown scenario ${name} (${Object.keys(SCENARIOS).join(", ")})`);
  const sc = { ...base };
  for (const k of ["clients", "tenants", "rate", "duration", "instances"]) if (args[k] !== undefined) sc[k] = Number(args[k]);
  const server = args.server || "eventfeed";
  if (server === "eventfeed" && !args.bin) throw new Error("--bin PATH of the eventfeed binary is needed");
  const log = args.quiet ? () => {} : (m) => console.error(`[${((performance.now() - started) / 1000).toFixed(1)}s] ${m}`);
  const started = performance.now();

  const token = "faults_admin";
  const dir = mkdtempSync(join(tmpdir(), "faults-"));
  const tokensFile = join(dir, "tokens.json");
  writeFileSync(tokensFile, JSON.stringify({ tokens: [{ token, user: "faults", tenants: ["*"], role: "admin" }] }));
  const tenants = Array.from({ length: sc.tenants }, (_, i) => `tenant_${i}`);
  const expectedEvents = Math.ceil(sc.rate * sc.duration) + 100;

  let redis = null;
  let pool = null;
  const instances = [];
  const subProxy = new FaultProxy({
    name: "subscribers",
    cutEveryMs: sc.cutEveryMs ?? null,
    cutPerSecond: (sc.cutPerSecondPerClient ?? 0) * sc.clients,
  });
  const pubProxy = new FaultProxy({
    name: "publishers",
    cutRequestP: sc.publisherFaults ? 0.05 : 0,
    cutResponseP: sc.publisherFaults ? 0.1 : 0,
  });
  const cleanup = async () => {
    if (pool) pool.kill();
    await subProxy.close().catch(() => {});
    await pubProxy.close().catch(() => {});
    await Promise.all(instances.map((i) => i.kill().catch(() => {})));
    if (redis) await redis.stop().catch(() => {});
    rmSync(dir, { recursive: true, force: true });
  };

  try {
    if (sc.redis) {
      redis = new Redis();
      await redis.start();
    }
    const env = {
      NB_BACKEND_TOKENS_FILE: tokensFile,
      // Large enough to hold the whole run, so the store itself can be checked.
      NB_BACKEND_EVENTS_BUFFER_SIZE: String(sc.buffer ?? Math.max(500, expectedEvents)),
      NB_BACKEND_RATE_LIMIT: "off",
      NB_BACKEND_TENANT_RATE_LIMIT: "off",
      NB_BACKEND_RECOVERY_WINDOW: String(sc.recoveryWindow ?? 120_000),
      ...(redis ? { NB_BACKEND_REDIS_URL: redis.url } : {}),
    };
    for (let i = 0; i < sc.instances; i++) {
      instances.push(new Instance({ kind: server, bin: args.bin, env, name: `${server}#${i}` }));
    }
    await Promise.all(instances.map((i) => i.start()));
    const addrs = () => instances.filter((i) => i.addr).map((i) => i.addr);
    await subProxy.listen();
    await pubProxy.listen();
    subProxy.setBackends(addrs());
    pubProxy.setBackends(addrs());
    log(`${server}: ${sc.instances} instance(s) ${addrs().join(", ")}${redis ? `, ${redis.url}` : ""}`);

    // Subscribers first, all connected before the first write. They run in
    // worker processes, so the harness's own loop (proxies, publishers) does
    // not set their pace.
    pool = new SubscriberPool({ workers: Number(args.workers ?? 2), url: subProxy.url, namespace: "/events", token, transports: sc.transports });
    const acks = new Acks((tenant, k) => pool.ack(tenant, k));
    await pool.start(Array.from({ length: sc.clients }, (_, i) => tenants[i % tenants.length]));
    await pool.connected(30_000);
    log(`${sc.clients} subscribers connected (${sc.transports.join("/")})`);

    const runId = randomUUID().slice(0, 8);
    const pubs = tenants.map((t) => new Publisher({ url: pubProxy.url, tenant: t, token, rate: sc.rate / tenants.length, runId }));
    const running = pubs.map((p) => p.run(acks));

    // The scenario's fault, while the load runs.
    const ms = sc.duration * 1000;
    const faults = [];
    const fault = async () => {
      if (sc.fault === "deploy") {
        // Each instance in turn, evenly spread over the run: out of the
        // balancer, SIGTERM, started again (a new port), back in.
        const step = ms / (instances.length + 1);
        for (const inst of instances) {
          await sleep(step * 0.5);
          const old = inst.addr;
          subProxy.removeBackend(old);
          pubProxy.removeBackend(old);
          log(`deploy: SIGTERM ${inst.name} (${old})`);
          await inst.stop();
          await inst.start();
          subProxy.addBackend(inst.addr);
          pubProxy.addBackend(inst.addr);
          faults.push(`${inst.name} restarted`);
          log(`deploy: ${inst.name} back on ${inst.addr}`);
          await sleep(step * 0.5);
        }
      } else if (sc.fault === "crash") {
        await sleep(ms / 3);
        const inst = instances[0];
        const old = inst.addr;
        log(`crash: SIGKILL ${inst.name} (${old})`);
        await inst.kill();
        subProxy.removeBackend(old);
        pubProxy.removeBackend(old);
        subProxy.cutBackend(old);
        pubProxy.cutBackend(old);
        await sleep(5000);
        await inst.start();
        subProxy.addBackend(inst.addr);
        pubProxy.addBackend(inst.addr);
        faults.push(`${inst.name} killed and restarted`);
        log(`crash: ${inst.name} back on ${inst.addr}`);
      } else if (sc.fault === "redis") {
        await sleep(ms / 3);
        log("redis: SIGKILL");
        await redis.kill();
        await sleep(2000);
        await redis.start();
        faults.push("redis killed and restarted");
        log("redis: back");
      } else if (sc.fault === "blackout") {
        await sleep(ms / 3);
        log("blackout: every subscriber cut off for 8 s");
        subProxy.blackout(8000);
        faults.push("subscribers cut off 8 s");
      }
    };
    const faulting = fault();
    await sleep(ms);
    for (const p of pubs) p.stop();
    await Promise.all(running);
    await faulting;
    subProxy.calm();
    pubProxy.calm();
    log(`load done: ${pubs.reduce((n, p) => n + p.acked.size, 0)} writes acknowledged; settling`);

    // Settle: every connected subscriber holds everything acknowledged (bounded).
    await pool.settle(20_000);
    await sleep(300); // late duplicates, if any, arrive now

    // Read the store back: every live instance (Node instances each hold their own).
    const stored = new Map(tenants.map((t) => [t, new Map()])); // k -> count
    const storedIds = new Map(tenants.map((t) => [t, new Set()]));
    for (const inst of instances) {
      if (!inst.addr) continue;
      for (const t of tenants) {
        for (const e of await readStore(`http://${inst.addr}`, t, token)) {
          if (storedIds.get(t).has(e.id)) continue; // the same store read through another instance
          storedIds.get(t).add(e.id);
          const k = indexOf(e.message);
          stored.get(t).set(k, (stored.get(t).get(k) ?? 0) + 1);
        }
      }
    }
    const subs = await pool.finish();
    pool = null;

    // The scorecard.
    const card = {
      scenario: name, server, clients: sc.clients, tenants: sc.tenants, rate: sc.rate, duration: sc.duration,
      instances: sc.instances, transports: sc.transports, buffer: Number(env.NB_BACKEND_EVENTS_BUFFER_SIZE),
      recoveryWindow: Number(env.NB_BACKEND_RECOVERY_WINDOW), faults,
    };
    let acked = 0, ackedMissing = 0, duplicateWrites = 0, storedEvents = 0;
    for (const p of pubs) {
      acked += p.acked.size;
      const st = stored.get(p.tenant);
      for (const k of p.acked.keys()) if (!st.has(k)) ackedMissing++;
    }
    for (const st of stored.values()) {
      for (const n of st.values()) {
        storedEvents += n;
        if (n > 1) duplicateWrites += n - 1;
      }
    }
    card.publishers = {
      acknowledged: acked,
      stored: storedEvents,
      ackedMissingFromStore: ackedMissing,
      duplicateWrites,
      attempts: pubs.reduce((n, p) => n + p.attempts, 0),
      retries: pubs.reduce((n, p) => n + p.retries, 0),
      replayedByKey: pubs.reduce((n, p) => n + p.replayed, 0),
      notRetried: pubs.flatMap((p) => p.failed).length,
    };
    // What each subscriber had to receive: every event of its tenant that was
    // acknowledged or stored.
    const expectedOf = new Map();
    for (const p of pubs) {
      const ks = new Set(p.acked.keys());
      for (const k of stored.get(p.tenant).keys()) ks.add(k);
      expectedOf.set(p.tenant, [...ks].filter((k) => k > 0));
    }
    let expected = 0, once = 0, lost = 0, dupEvents = 0, extra = 0, silent = 0;
    for (const s of subs) {
      for (const k of expectedOf.get(s.tenant)) {
        expected++;
        const n = s.counts[k] ?? 0;
        if (n === 1) once++;
        else if (n === 0) {
          lost++;
          if (!s.gaps.some(([after, first]) => k > after && (first === null || k < first))) silent++;
        } else {
          dupEvents++;
          extra += n - 1;
        }
      }
    }
    const catchUps = subs.flatMap((s) => s.catchUps);
    const outages = subs.flatMap((s) => s.outages);
    card.subscribers = {
      expected,
      exactlyOnce: expected ? once / expected : 1,
      lost,
      silentlyLost: silent,
      duplicated: dupEvents,
      extraDeliveries: extra,
      reordered: subs.reduce((n, s) => n + s.reordered, 0),
      reconnects: subs.reduce((n, s) => n + Math.max(0, s.connects - 1), 0),
      recovered: subs.reduce((n, s) => n + s.recovered, 0),
      replays: subs.reduce((n, s) => n + s.replays, 0),
      snapshots: subs.reduce((n, s) => n + s.snapshots, 0),
      gapsAnnounced: subs.reduce((n, s) => n + s.gaps.length, 0),
      connectErrors: subs.reduce((n, s) => n + s.connectErrors, 0),
      catchUpMs: { p50: round(pct(catchUps, 50)), p99: round(pct(catchUps, 99)), n: catchUps.length },
      cutToCaughtUpMs: { p50: round(pct(outages, 50)), p99: round(pct(outages, 99)) },
      neverCaughtUp: subs.filter((s) => s.pending).length,
      workers: Number(args.workers ?? 2),
    };
    card.proxies = { subscribers: subProxy.counts, publishers: pubProxy.counts };
    const sub = card.subscribers, pub = card.publishers;
    const beyond = name === "beyond";
    card.held = beyond
      ? // The buffer evicts by design here: the store cannot hold every write.
        sub.silentlyLost === 0 && sub.duplicated === 0 && sub.reordered === 0 && pub.duplicateWrites === 0
      : sub.lost === 0 && sub.duplicated === 0 && sub.reordered === 0 && pub.ackedMissingFromStore === 0 && pub.duplicateWrites === 0 && pub.notRetried === 0;
    if (beyond && sub.lost === 0) {
      // The scenario did not reach beyond the buffer: it proved nothing.
      card.held = false;
      card.note = "no event was lost: the blackout did not outlast the buffer";
    }
    if (args.json) writeFileSync(args.json, JSON.stringify(card, null, 2));
    if (!args.quiet) console.log(JSON.stringify(card, null, 2));
    console.log(
      `${name} ${server}: ${card.held ? "held" : "NOT held"} — exactly once ${(sub.exactlyOnce * 100).toFixed(2)} %, lost ${sub.lost} (silent ${sub.silentlyLost}), duplicated ${sub.duplicated}, reordered ${sub.reordered}, acked writes missing ${pub.ackedMissingFromStore}, duplicate writes ${pub.duplicateWrites}`,
    );
    if (pubs.some((p) => p.failed.length)) console.error("writes not retried:", JSON.stringify(pubs.flatMap((p) => p.failed).slice(0, 5)));
    await cleanup();
    return card.held ? 0 : 1;
  } catch (e) {
    await cleanup();
    throw e;
  }
}

const round = (x) => (x === null ? null : Math.round(x));

main().then(
  (code) => process.exit(code),
  (e) => {
    console.error(`harness: ${e && e.stack ? e.stack : e}`);
    process.exit(2);
  },
);
