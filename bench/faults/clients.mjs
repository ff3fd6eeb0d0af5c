// The harness's clients.
//
// A Subscriber is the official socket.io-client, unmodified, with connection
// state recovery (the server's) and the contract's resume cursor: every
// (re)connection sends `auth.sinceId` = the id of the newest event it holds,
// so a connection that is not recovered gets `replay_result` with what it
// missed instead of a snapshot. It records every event as it arrives — how
// many times, in what order — and each reconnection: recovered or not, and how
// long until it held everything acknowledged to the publishers before it.
//
// A Publisher writes one tenant's events over REST at a steady rate, one at a
// time, each with an `Idempotency-Key`, retrying on any failure or cut with the
// same key and message until it gets 201.

import { io } from "socket.io-client";

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** The message of event `k` of a run; `indexOf` reads `k` back. */
export const messageOf = (k) => `m${k}`;
export const indexOf = (message) => {
  const k = typeof message === "string" && message[0] === "m" ? Number(message.slice(1)) : NaN;
  return Number.isInteger(k) ? k : -1;
};

/** Per tenant: the highest `k` acknowledged so far (shared by the run). */
export class Acks {
  /** `onNote(tenant, k)`, when given, hears of every new highest `k`. */
  constructor(onNote = null) {
    this.highest = new Map();
    this.onNote = onNote;
  }
  note(tenant, k) {
    if (k > (this.highest.get(tenant) ?? 0)) {
      this.highest.set(tenant, k);
      if (this.onNote) this.onNote(tenant, k);
    }
  }
  of(tenant) {
    return this.highest.get(tenant) ?? 0;
  }
}

export class Subscriber {
  constructor({ url, namespace, tenant, token, transports, acks }) {
    this.url = url;
    this.namespace = namespace;
    this.tenant = tenant;
    this.token = token;
    this.transports = transports;
    this.acks = acks;
    this.counts = []; // counts[k]: deliveries of event k
    this.highestK = 0; // the highest k received
    this.lastId = null; // id of that event: the resume cursor
    this.reordered = 0;
    this.connects = 0;
    this.recovered = 0;
    this.snapshots = 0; // snapshots after the first connection
    this.replays = 0;
    this.gaps = []; // [after k, first k delivered] announced by gap: true / a snapshot
    this.catchUps = []; // ms from a reconnection to holding everything acknowledged before it
    this.outages = []; // ms from a disconnection to holding everything acknowledged at the reconnection
    this.pending = null; // {since, cutAt, target} of the reconnection being timed
    this.cutAt = null;
    this.connectErrors = 0;
    this.errors = 0;
    this.connected = false;
    this.startK = undefined; // the newest event of the first snapshot
  }

  start() {
    const socket = io(this.url + this.namespace, {
      transports: this.transports,
      auth: (cb) =>
        cb(this.lastId ? { tenantId: this.tenant, token: this.token, sinceId: this.lastId } : { tenantId: this.tenant, token: this.token }),
    });
    this.socket = socket;
    socket.on("connect", () => {
      this.connected = true;
      this.connects++;
      if (this.connects > 1) {
        if (socket.recovered) this.recovered++;
        this.pending = { since: performance.now(), cutAt: this.cutAt, target: this.acks.of(this.tenant) };
        this.checkCaughtUp();
      }
    });
    socket.on("disconnect", () => {
      this.connected = false;
      this.cutAt = performance.now();
    });
    socket.on("connect_error", () => {
      this.connectErrors++;
    });
    socket.on("error", () => {
      this.errors++;
    });
    socket.on("snapshot", (events) => {
      // Where a subscriber that joins mid-run starts: after its first snapshot.
      if (this.startK === undefined) this.startK = events.reduce((m, e) => Math.max(m, indexOf(e.message)), 0);
      if (this.connects > 1) this.snapshots++;
      const fresh = events.filter((e) => indexOf(e.message) > this.highestK);
      // A snapshot is a state, not a stream: what it repeats is not a duplicate,
      // and what lies between the newest event held and its first is announced.
      if (fresh.length && this.highestK > 0 && indexOf(fresh[0].message) > this.highestK + 1) {
        this.gaps.push([this.highestK, indexOf(fresh[0].message)]);
      }
      for (const e of fresh) this.deliver(e);
    });
    socket.on("replay_result", (page) => {
      this.replays++;
      if (page.gap) this.gaps.push([this.highestK, page.events.length ? indexOf(page.events[0].message) : Infinity]);
      for (const e of page.events) this.deliver(e);
    });
    socket.on("event_created", (event) => this.deliver(event));
  }

  deliver(event) {
    const k = indexOf(event.message);
    if (k < 0) return;
    const n = (this.counts[k] ?? 0) + 1;
    this.counts[k] = n;
    if (n === 1 && k < this.highestK) this.reordered++;
    if (k > this.highestK) {
      this.highestK = k;
      this.lastId = event.id;
    }
    if (this.pending) this.checkCaughtUp();
  }

  checkCaughtUp() {
    if (this.pending && this.highestK >= this.pending.target) {
      const now = performance.now();
      this.catchUps.push(now - this.pending.since);
      if (this.pending.cutAt !== null) this.outages.push(now - this.pending.cutAt);
      this.pending = null;
    }
  }

  close() {
    this.socket?.close();
  }
}

export class Publisher {
  /**
   * Writes events 1, 2, … of `tenant` at `rate` per second through `url`
   * (a proxy) until `stop()`.
   */
  constructor({ url, tenant, token, rate, runId }) {
    this.url = url;
    this.tenant = tenant;
    this.token = token;
    this.rate = rate;
    this.runId = runId;
    this.acked = new Map(); // k -> {id, seq, replayed}
    this.attempts = 0;
    this.retries = 0;
    this.replayed = 0;
    this.refused = new Map(); // status -> count (answers that are retried: 409, 429, 5xx)
    this.failed = []; // answers that are not retried (a bug in the harness or the server)
    this.stopped = false;
    this.k = 0;
  }

  async run(acks) {
    const t0 = performance.now();
    while (!this.stopped) {
      const k = ++this.k;
      const due = t0 + (k * 1000) / this.rate;
      const wait = due - performance.now();
      if (wait > 0) await sleep(wait);
      if (this.stopped) {
        this.k--;
        break;
      }
      await this.write(k, acks);
    }
  }

  async write(k, acks) {
    const key = `${this.runId}-${this.tenant}-${k}`;
    for (let attempt = 0; ; attempt++) {
      this.attempts++;
      if (attempt > 0) this.retries++;
      try {
        const res = await fetch(`${this.url}/api/events`, {
          method: "POST",
          headers: {
            "Content-Type": "application/json",
            "X-TENANT-ID": this.tenant,
            "X-User-Token": this.token,
            "Idempotency-Key": key,
          },
          body: JSON.stringify({ message: messageOf(k) }),
          signal: AbortSignal.timeout(5000),
        });
        const text = await res.text();
        if (res.status === 201) {
          const event = JSON.parse(text);
          const replayed = res.headers.get("idempotent-replayed") === "true";
          if (replayed) this.replayed++;
          this.acked.set(k, { id: event.id, seq: event.seq, replayed });
          acks.note(this.tenant, k);
          return;
        }
        this.refused.set(res.status, (this.refused.get(res.status) ?? 0) + 1);
        if (res.status !== 409 && res.status !== 429 && res.status < 500) {
          this.failed.push({ k, status: res.status, body: text.slice(0, 200) });
          return;
        }
      } catch {
        // A cut, a reset, a timeout: the answer is unknown, so try again.
      }
      await sleep(Math.min(50 * 2 ** Math.min(attempt, 4), 500));
    }
  }

  stop() {
    this.stopped = true;
  }
}
