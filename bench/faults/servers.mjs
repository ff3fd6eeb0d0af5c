// The processes a scenario runs: a throw-away redis-server (append-only file,
// `appendfsync always`) and server instances — the eventfeed binary or the
// Node baseline (bench/baseline/server.mjs) — each on a free loopback port,
// started, stopped (SIGTERM), killed (SIGKILL) and started again.

import { spawn } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import net from "node:net";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const HERE = dirname(fileURLToPath(import.meta.url));
export const BASELINE = join(HERE, "..", "baseline", "server.mjs");

const START_MS = 20_000;
const EXIT_MS = 15_000;

/** A free loopback port (bound and released). */
export function freePort() {
  return new Promise((res, rej) => {
    const s = net.createServer();
    s.on("error", rej);
    s.listen(0, "127.0.0.1", () => {
      const { port } = s.address();
      s.close(() => res(port));
    });
  });
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Resolves when `child` exits (at once if it has). */
function exited(child) {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((res) => child.once("exit", () => res()));
}

async function stopChild(child, signal, what) {
  if (!child) return;
  child.kill(signal);
  const timer = setTimeout(() => child.kill("SIGKILL"), EXIT_MS);
  await exited(child);
  clearTimeout(timer);
  if (signal === "SIGTERM" && child.signalCode === "SIGKILL") console.error(`${what} needed SIGKILL after ${EXIT_MS} ms`);
}

export class Redis {
  constructor() {
    this.dir = mkdtempSync(join(tmpdir(), "faults-redis-"));
    this.child = null;
    this.port = 0;
  }

  get url() {
    return `redis://127.0.0.1:${this.port}`;
  }

  async start() {
    if (!this.port) this.port = await freePort();
    const child = spawn(
      "redis-server",
      ["--port", String(this.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "yes",
        "--appendfsync", "always", "--dir", this.dir, "--protected-mode", "no"],
      { stdio: ["ignore", "pipe", "pipe"] },
    );
    child.on("error", (e) => console.error(`redis-server: ${e.message} (install it: apt-get install redis-server)`));
    child.stdout.resume();
    child.stderr.resume();
    this.child = child;
    const end = Date.now() + START_MS;
    while (Date.now() < end) {
      if (child.exitCode !== null) throw new Error(`redis-server exited (${child.exitCode})`);
      if (await ping(this.port)) return;
      await sleep(20);
    }
    throw new Error("redis-server did not answer PING");
  }

  /** Kills Redis (SIGKILL: what it acknowledged is in its append-only file). */
  kill() {
    return stopChild(this.child, "SIGKILL", "redis-server");
  }

  async stop() {
    await stopChild(this.child, "SIGTERM", "redis-server");
    rmSync(this.dir, { recursive: true, force: true });
  }
}

/** True when a Redis answers PING on `port`. */
function ping(port) {
  return new Promise((res) => {
    const s = net.connect({ host: "127.0.0.1", port });
    const done = (ok) => {
      s.destroy();
      res(ok);
    };
    s.on("error", () => done(false));
    s.setTimeout(500, () => done(false));
    s.on("connect", () => s.write("PING\r\n"));
    s.on("data", (d) => done(d.toString().startsWith("+PONG")));
  });
}

/**
 * One server instance. `kind`: "eventfeed" (the binary at `bin`) or "node"
 * (the baseline). `env` is added to the NB_BACKEND_* variables given here.
 */
export class Instance {
  constructor({ kind, bin, env, name }) {
    this.kind = kind;
    this.bin = bin;
    this.env = env;
    this.name = name;
    this.child = null;
    this.addr = null;
    this.tail = [];
  }

  async start() {
    const env = { PATH: process.env.PATH, HOME: process.env.HOME || "/tmp", ...this.env, NB_BACKEND_PORT: "0" };
    let cmd, args;
    if (this.kind === "eventfeed") {
      cmd = this.bin;
      args = [];
      env.NB_BACKEND_LOG_FORMAT = "json";
      env.NB_BACKEND_LOG = env.NB_BACKEND_LOG || "warn,eventfeed=info";
    } else {
      cmd = process.execPath;
      args = [BASELINE];
    }
    const child = spawn(cmd, args, { env, stdio: ["ignore", "pipe", "pipe"] });
    this.child = child;
    this.addr = null;
    const keep = (line) => {
      this.tail.push(line);
      if (this.tail.length > 50) this.tail.shift();
    };
    const addr = new Promise((res, rej) => {
      const timer = setTimeout(() => rej(new Error(`${this.name} did not listen within ${START_MS} ms:\n${this.tail.join("\n")}`)), START_MS);
      child.once("exit", (code, sig) => {
        clearTimeout(timer);
        rej(new Error(`${this.name} exited (${code ?? sig}) before listening:\n${this.tail.join("\n")}`));
      });
      child.on("error", (e) => rej(e));
      lines(child.stdout, (line) => {
        keep(line);
        if (this.addr) return;
        let found = null;
        if (this.kind === "eventfeed") {
          try {
            const v = JSON.parse(line);
            if (v.message === "eventfeed listening") found = v.addr;
          } catch {}
        } else {
          const m = /^listening on (\S+)$/.exec(line);
          if (m) found = m[1];
        }
        if (found) {
          clearTimeout(timer);
          res(found);
        }
      });
      lines(child.stderr, (line) => keep(`stderr: ${line}`));
    });
    this.addr = await addr;
    return this.addr;
  }

  /** SIGTERM: a graceful stop (a deploy). */
  stop() {
    return stopChild(this.child, "SIGTERM", this.name);
  }

  /** SIGKILL: a crash. */
  kill() {
    return stopChild(this.child, "SIGKILL", this.name);
  }
}

function lines(stream, onLine) {
  let buf = "";
  stream.setEncoding("utf8");
  stream.on("data", (d) => {
    buf += d;
    let i;
    while ((i = buf.indexOf("\n")) >= 0) {
      onLine(buf.slice(0, i));
      buf = buf.slice(i + 1);
    }
  });
}
