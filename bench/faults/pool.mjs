// Subscribers in worker processes, so that the clients, not the harness's
// own event loop, set the pace: a SubscriberPool forks `workers` copies of
// this file and spreads the subscribers over them. The harness tells each
// worker the newest acknowledged write per tenant as it happens (for the
// catch-up timing) and collects every subscriber's record at the end.
//
// In the parent: `new SubscriberPool({...})`; in a worker (forked with
// the "worker" argument): the message loop at the bottom.

import { fork } from "node:child_process";
import { fileURLToPath } from "node:url";
import { Acks, Subscriber } from "./clients.mjs";

const SELF = fileURLToPath(import.meta.url);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** The part of a Subscriber the harness reads back. */
const recordOf = (s) => ({
  tenant: s.tenant,
  counts: Array.from({ length: s.counts.length }, (_, k) => s.counts[k] ?? 0),
  highestK: s.highestK,
  startK: s.startK,
  reordered: s.reordered,
  connects: s.connects,
  recovered: s.recovered,
  snapshots: s.snapshots,
  replays: s.replays,
  gaps: s.gaps.map(([a, b]) => [a, b === Infinity ? null : b]),
  catchUps: s.catchUps,
  outages: s.outages,
  connectErrors: s.connectErrors,
  pending: s.pending !== null,
  connected: s.connected,
});

export class SubscriberPool {
  constructor({ workers, url, namespace, token, transports }) {
    this.config = { url, namespace, token, transports };
    this.workers = Array.from({ length: workers }, () => {
      const child = fork(SELF, ["worker"], { stdio: ["ignore", "inherit", "inherit", "ipc"] });
      const w = { child, waiting: new Map(), seq: 0 };
      child.on("message", (m) => {
        const done = w.waiting.get(m.id);
        if (done) {
          w.waiting.delete(m.id);
          done(m.result);
        }
      });
      child.on("exit", (code) => {
        for (const done of w.waiting.values()) done({ error: `worker exited (${code})` });
        w.waiting.clear();
      });
      return w;
    });
    this.next = 0;
  }

  call(w, op, arg) {
    return new Promise((res) => {
      const id = ++w.seq;
      w.waiting.set(id, res);
      w.child.send({ id, op, arg });
    }).then((r) => {
      if (r && r.error) throw new Error(r.error);
      return r;
    });
  }

  all(op, arg) {
    return Promise.all(this.workers.map((w) => this.call(w, op, arg)));
  }

  /** Starts one subscriber per tenant in `tenants`, spread over the workers. */
  async start(tenants) {
    const per = this.workers.map(() => []);
    for (const t of tenants) per[this.next++ % this.workers.length].push(t);
    await Promise.all(this.workers.map((w, i) => this.call(w, "start", { ...this.config, tenants: per[i] })));
  }

  /** Resolves once every subscriber connected once (bounded). */
  async connected(ms) {
    const end = Date.now() + ms;
    for (;;) {
      const missing = (await this.all("unconnected")).reduce((a, b) => a + b, 0);
      if (missing === 0) return;
      if (Date.now() > end) throw new Error(`${missing} subscribers never connected`);
      await sleep(50);
    }
  }

  /** Tells every worker of an acknowledged write. */
  ack(tenant, k) {
    for (const w of this.workers) if (w.child.connected) w.child.send({ op: "ack", arg: { tenant, k } });
  }

  /** Resolves when every connected subscriber holds everything acknowledged (bounded). */
  async settle(ms) {
    const end = Date.now() + ms;
    while (Date.now() < end) {
      if ((await this.all("settled")).every(Boolean)) return true;
      await sleep(50);
    }
    return false;
  }

  /** Closes `n` random subscribers for good and starts as many new ones. */
  churn(n, tenantOf) {
    const per = this.workers.map(() => []);
    for (let i = 0; i < n; i++) per[this.next++ % this.workers.length].push(tenantOf());
    return Promise.all(this.workers.map((w, i) => (per[i].length ? this.call(w, "churn", { ...this.config, tenants: per[i] }) : null)));
  }

  /** Every subscriber's record (the closed ones too), then the workers end. */
  async finish() {
    const records = (await this.all("finish")).flat();
    for (const w of this.workers) w.child.disconnect();
    return records;
  }

  kill() {
    for (const w of this.workers) w.child.kill("SIGKILL");
  }
}

// ---------------------------------------------------------------- worker

if (process.argv[2] === "worker") {
  const acks = new Acks();
  const live = [];
  const closed = [];
  const startAll = async ({ url, namespace, token, transports, tenants }) => {
    for (let i = 0; i < tenants.length; i++) {
      const s = new Subscriber({ url, namespace, tenant: tenants[i], token, transports, acks });
      live.push(s);
      s.start();
      if (i % 50 === 49) await sleep(20);
    }
  };
  const ops = {
    start: async (arg) => {
      await startAll(arg);
      return true;
    },
    unconnected: () => live.filter((s) => s.connects === 0).length,
    ack: ({ tenant, k }) => acks.note(tenant, k),
    settled: () => live.every((s) => s.connected && s.highestK >= acks.of(s.tenant)),
    churn: async (arg) => {
      for (let i = 0; i < arg.tenants.length && live.length; i++) {
        const s = live.splice(Math.floor(Math.random() * live.length), 1)[0];
        s.close();
        closed.push(s);
      }
      await startAll(arg);
      return true;
    },
    finish: () => {
      for (const s of live) s.close();
      return [...closed, ...live].map(recordOf);
    },
  };
  process.on("message", async ({ id, op, arg }) => {
    let result;
    try {
      result = await ops[op](arg);
    } catch (e) {
      result = { error: String(e && e.stack ? e.stack : e) };
    }
    if (id !== undefined) process.send({ id, result });
  });
  process.on("disconnect", () => process.exit(0));
}
