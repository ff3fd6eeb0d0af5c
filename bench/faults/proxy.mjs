// A fault-injecting TCP proxy: clients connect to it, it connects each one to
// a live backend (round robin over the addresses it is given, skipping those
// that refuse) and copies bytes both ways. On its schedule it cuts established
// connections (a TCP reset to the client, the backend side closed), stalls
// them (stops copying for a while) or delays every chunk, and for HTTP
// publishers it can cut a connection mid-request (the request half sent) or
// after the server answered (the answer lost). A blackout refuses every new
// connection and cuts the open ones for a while.
//
// The proxy knows nothing of the protocols it carries: what it does to a
// connection is what a flaky network or a load balancer does.

import net from "node:net";

const rand = (lo, hi) => lo + Math.random() * (hi - lo);

export class FaultProxy {
  /**
   * @param {object} o
   * @param {string} o.name               for the counters
   * @param {number} [o.cutEveryMs]       [lo, hi]: each connection is cut at a random age in this range
   * @param {number} [o.cutPerSecond]     besides: this many random open connections cut per second
   *                                      (for clients whose connections are short, as long-polling's)
   * @param {number} [o.cutRequestP]      probability that a client→server chunk is cut half-way
   * @param {number} [o.cutResponseP]     probability that a server→client chunk is dropped and the connection cut
   * @param {number} [o.delayMs]          every chunk waits this long (both ways)
   */
  constructor({ name, cutEveryMs = null, cutPerSecond = 0, cutRequestP = 0, cutResponseP = 0, delayMs = 0 }) {
    this.name = name;
    this.cutEveryMs = cutEveryMs;
    this.cutTicker = null;
    if (cutPerSecond > 0) {
      let owed = 0;
      this.cutTicker = setInterval(() => {
        if (!this.faults) return;
        owed += cutPerSecond / 20;
        const open = [...this.conns];
        for (; owed >= 1 && open.length; owed--) this.cut(open.splice(Math.floor(Math.random() * open.length), 1)[0]);
      }, 50);
    }
    this.cutRequestP = cutRequestP;
    this.cutResponseP = cutResponseP;
    this.delayMs = delayMs;
    this.backends = []; // "host:port" strings of live instances
    this.next = 0;
    this.conns = new Set();
    this.faults = true;
    this.blackoutUntil = 0;
    this.counts = { accepted: 0, refused: 0, cut: 0, cutRequests: 0, cutResponses: 0, stalled: 0 };
    this.server = net.createServer((c) => this.accept(c));
    this.server.on("error", () => {});
  }

  /** Listens on a free loopback port; resolves with it. */
  listen() {
    return new Promise((res) => this.server.listen(0, "127.0.0.1", () => res(this.server.address().port)));
  }

  get url() {
    return `http://127.0.0.1:${this.server.address().port}`;
  }

  setBackends(list) {
    this.backends = [...list];
  }

  addBackend(addr) {
    if (!this.backends.includes(addr)) this.backends.push(addr);
  }

  removeBackend(addr) {
    this.backends = this.backends.filter((b) => b !== addr);
  }

  /** Stops every scheduled fault (the end of a run: let the clients settle). */
  calm() {
    this.faults = false;
    clearInterval(this.cutTicker);
    for (const c of this.conns) clearTimeout(c.timer);
  }

  /** Cuts every open connection and refuses new ones for `ms`. */
  blackout(ms) {
    this.blackoutUntil = Date.now() + ms;
    for (const c of [...this.conns]) this.cut(c);
  }

  /** Cuts every open connection to `addr` (its instance went away). */
  cutBackend(addr) {
    for (const c of [...this.conns]) if (c.backend === addr) this.cut(c);
  }

  /** Stops copying on one connection for `ms`: a stall, not a cut. */
  stall(conn, ms) {
    this.counts.stalled++;
    conn.client.pause();
    conn.upstream.pause();
    setTimeout(() => {
      if (!conn.closed) {
        conn.client.resume();
        conn.upstream.resume();
      }
    }, ms);
  }

  cut(conn) {
    if (conn.closed) return;
    conn.closed = true;
    clearTimeout(conn.timer);
    this.conns.delete(conn);
    this.counts.cut++;
    // A reset, as a dropped network path or a killed middlebox looks to the
    // client; the backend sees its side closed.
    if (typeof conn.client.resetAndDestroy === "function" && conn.client.readyState === "open") {
      conn.client.resetAndDestroy();
    } else {
      conn.client.destroy();
    }
    conn.upstream.destroy();
  }

  accept(client) {
    client.on("error", () => {});
    if (Date.now() < this.blackoutUntil || this.backends.length === 0) {
      this.counts.refused++;
      client.destroy();
      return;
    }
    this.counts.accepted++;
    client.pause();
    this.connect(client, 0);
  }

  /** Connects `client` to the next backend, trying each live one once. */
  connect(client, tried) {
    if (tried >= this.backends.length || client.destroyed) {
      this.counts.refused++;
      client.destroy();
      return;
    }
    const backend = this.backends[this.next++ % this.backends.length];
    const [host, port] = [backend.slice(0, backend.lastIndexOf(":")), Number(backend.slice(backend.lastIndexOf(":") + 1))];
    const upstream = net.connect({ host, port });
    let connected = false;
    upstream.on("error", () => {
      if (!connected) this.connect(client, tried + 1);
    });
    upstream.once("connect", () => {
      connected = true;
      upstream.setNoDelay(true);
      client.setNoDelay(true);
      this.pipe(client, upstream, backend);
    });
  }

  pipe(client, upstream, backend) {
    const conn = { client, upstream, backend, closed: false, timer: null };
    this.conns.add(conn);
    const close = () => {
      if (conn.closed) return;
      conn.closed = true;
      clearTimeout(conn.timer);
      this.conns.delete(conn);
      client.destroy();
      upstream.destroy();
    };
    if (this.faults && this.cutEveryMs) {
      conn.timer = setTimeout(() => this.cut(conn), rand(this.cutEveryMs[0], this.cutEveryMs[1]));
    }
    const forward = (from, to, toServer) => {
      from.on("data", (chunk) => {
        if (conn.closed) return;
        if (this.faults && toServer && this.cutRequestP > 0 && Math.random() < this.cutRequestP) {
          // Half the request reaches the server, then the path breaks.
          this.counts.cutRequests++;
          to.write(chunk.subarray(0, chunk.length >> 1), () => this.cut(conn));
          return;
        }
        if (this.faults && !toServer && this.cutResponseP > 0 && Math.random() < this.cutResponseP) {
          // The server did the work; its answer never arrives.
          this.counts.cutResponses++;
          this.cut(conn);
          return;
        }
        if (this.delayMs > 0) {
          from.pause();
          setTimeout(() => {
            if (conn.closed) return;
            to.write(chunk);
            from.resume();
          }, this.delayMs);
        } else if (!to.write(chunk)) {
          from.pause();
          to.once("drain", () => from.resume());
        }
      });
      from.on("end", () => to.end());
      from.on("close", close);
    };
    forward(client, upstream, true);
    forward(upstream, client, false);
    client.resume();
  }

  close() {
    this.calm();
    for (const c of [...this.conns]) {
      c.client.destroy();
      c.upstream.destroy();
    }
    return new Promise((res) => this.server.close(() => res()));
  }
}
