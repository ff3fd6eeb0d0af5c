// The benchmark baseline: the eventfeed contract (CONTRACT.md) on Node.js
// with the npm `socket.io` 4.x server, written the way a competent Node
// developer would write it — idiomatic, no artificial slowness, with the
// tips of https://socket.io/docs/v4/performance-tuning applied (the ws
// native add-on `bufferutil` as an optional dependency; the initial HTTP
// request discarded).
//
// Environment (same names as eventfeed):
//   NB_BACKEND_HOST / NB_BACKEND_PORT       127.0.0.1 / 3000 (0 picks a free port)
//   NB_BACKEND_TOKENS_FILE                  tokens file (none: the demo tokens)
//   NB_BACKEND_EVENTS_BUFFER_SIZE           500 events per tenant
//   NB_BACKEND_SIO_NAMESPACE                /events
//   NB_BACKEND_SIO_PING_INTERVAL / _TIMEOUT 25000 / 20000 ms
//   NB_BACKEND_MAX_PAYLOAD                  1000000 bytes (maxHttpBufferSize)
//   NB_BACKEND_MAX_BODY                     65536 bytes (REST body)
//   NB_BACKEND_RECOVERY_WINDOW              0 here (off); > 0 turns on socket.io's
//                                           connectionStateRecovery for that many ms
//   NB_BACKEND_REDIS_URL                    none; set: several instances as one with the
//                                           official @socket.io/redis-adapter (broadcasts
//                                           only: each instance keeps its own store, as a
//                                           Node deployment of this contract would)
// There is no rate limiting (eventfeed is benchmarked with it off).
//
// Prints "listening on HOST:PORT" once listening.

import { createServer } from "node:http";
import { createHash, randomUUID, timingSafeEqual } from "node:crypto";
import { readFileSync } from "node:fs";
import { Server } from "socket.io";

// ---------------------------------------------------------------- config

function intEnv(name, def, min, max) {
  const raw = process.env[name];
  if (raw === undefined || raw === "") return def;
  const n = Number(raw);
  if (!Number.isInteger(n) || n < min || n > max) {
    console.error(`baseline: ${name} must be an integer from ${min} to ${max} (got ${JSON.stringify(raw)})`);
    process.exit(2);
  }
  return n;
}

const HOST = process.env.NB_BACKEND_HOST || "127.0.0.1";
const PORT = intEnv("NB_BACKEND_PORT", 3000, 0, 65535);
const BUFFER_SIZE = intEnv("NB_BACKEND_EVENTS_BUFFER_SIZE", 500, 1, 1_000_000);
const NAMESPACE = process.env.NB_BACKEND_SIO_NAMESPACE || "/events";
const PING_INTERVAL = intEnv("NB_BACKEND_SIO_PING_INTERVAL", 25000, 1, 3_600_000);
const PING_TIMEOUT = intEnv("NB_BACKEND_SIO_PING_TIMEOUT", 20000, 1, 3_600_000);
const MAX_PAYLOAD = intEnv("NB_BACKEND_MAX_PAYLOAD", 1_000_000, 1, 1_000_000_000);
const MAX_BODY = intEnv("NB_BACKEND_MAX_BODY", 65536, 1, 1_000_000_000);
const RECOVERY_WINDOW = intEnv("NB_BACKEND_RECOVERY_WINDOW", 0, 0, 86_400_000);

const MAX_MESSAGE_CHARS = 2048;
const DEFAULT_LIMIT = 100;
const MAX_LIMIT = 1000;
const SNAPSHOT_LIMIT = 100;

// ---------------------------------------------------------------- errors

class FeedError extends Error {
  constructor(status, code, message, headers) {
    super(message);
    this.status = status;
    this.code = code;
    this.headers = headers;
  }
  toJSON() {
    return { code: this.code, message: this.message };
  }
}

const badRequest = (m) => new FeedError(400, "bad_request", m);
const unauthorized = () => new FeedError(401, "unauthorized", "invalid or missing credentials");
const forbidden = () => new FeedError(403, "forbidden", "this token may not write events");
const notFound = (m) => new FeedError(404, "not_found", m);
const methodNotAllowed = (allow) =>
  new FeedError(405, "method_not_allowed", "method not allowed", { Allow: allow });
const tooLarge = (m) => new FeedError(413, "payload_too_large", m);
const unsupportedMedia = () =>
  new FeedError(415, "unsupported_media_type", "Content-Type must be application/json");
const validationFailed = (m) => new FeedError(422, "validation_failed", m);

// ---------------------------------------------------------------- tokens

const sha256 = (s) => createHash("sha256").update(s).digest();

function loadTokens(path) {
  if (!path) {
    console.warn(
      "NO TOKENS FILE CONFIGURED: running with the public DEMO tokens (token_admin_a, token_admin_b, " +
        "token_reader_a). Set NB_BACKEND_TOKENS_FILE for real use.",
    );
    return [
      { digest: sha256("token_admin_a"), user: "admin_a", tenants: ["company_a"], role: "admin" },
      { digest: sha256("token_admin_b"), user: "admin_b", tenants: ["company_b"], role: "admin" },
      { digest: sha256("token_reader_a"), user: "reader_a", tenants: ["company_a"], role: "reader" },
    ];
  }
  let file;
  try {
    file = JSON.parse(readFileSync(path, "utf8"));
  } catch (e) {
    throw new Error(`tokens file ${path} is not valid: ${e.message}`);
  }
  if (!file || !Array.isArray(file.tokens)) throw new Error(`tokens file ${path}: "tokens" must be a list`);
  return file.tokens.map((t, i) => {
    const fail = (m) => {
      throw new Error(`tokens file ${path}: entry ${i}${t && t.user ? ` (user "${t.user}")` : ""}: ${m}`);
    };
    if (typeof t !== "object" || t === null) fail("must be an object");
    if (typeof t.user !== "string" || !t.user.trim()) fail('"user" is missing or empty');
    let digest;
    if (typeof t.token === "string" && t.token && t.token_sha256 === undefined) digest = sha256(t.token);
    else if (t.token === undefined && typeof t.token_sha256 === "string" && /^[0-9a-fA-F]{64}$/.test(t.token_sha256))
      digest = Buffer.from(t.token_sha256, "hex");
    else fail('give either "token" or "token_sha256" (64 hex characters)');
    if (!Array.isArray(t.tenants) || !t.tenants.length || !t.tenants.every((x) => typeof x === "string" && x))
      fail('"tenants" must be a non-empty list of tenant ids (or ["*"])');
    if (t.role !== "admin" && t.role !== "reader") fail('"role" must be "admin" or "reader"');
    return { digest, user: t.user, tenants: t.tenants, role: t.role };
  });
}

let TOKENS;
try {
  TOKENS = loadTokens(process.env.NB_BACKEND_TOKENS_FILE);
} catch (e) {
  console.error(`baseline: ${e.message}`);
  process.exit(2);
}

/** Authenticates `token` for `tenant`: {user, tenant, role}, or throws 401. */
function authenticate(tenant, token) {
  if (typeof tenant !== "string" || typeof token !== "string" || !tenant || !token) throw unauthorized();
  const digest = sha256(token);
  let found = null;
  for (const entry of TOKENS) {
    // Every entry is compared, in constant time.
    if (timingSafeEqual(entry.digest, digest) && !found) found = entry;
  }
  if (!found || !found.tenants.some((t) => t === "*" || t === tenant)) throw unauthorized();
  return { user: found.user, tenant, role: found.role };
}

// ---------------------------------------------------------------- store

/** One tenant's last `capacity` events: a circular buffer plus an id → seq index. */
class TenantLog {
  constructor(tenant, capacity) {
    this.tenant = tenant;
    this.capacity = capacity;
    this.buf = [];
    this.head = 0; // position of the oldest event in `buf`
    this.size = 0;
    this.nextSeq = 1;
    this.index = new Map();
  }

  at(i) {
    return this.buf[(this.head + i) % this.capacity];
  }

  slice(start, end) {
    const out = [];
    for (let i = start; i < end; i++) out.push(this.at(i));
    return out;
  }

  append(message, author) {
    const event = {
      id: randomUUID(),
      seq: this.nextSeq++,
      tenant_id: this.tenant,
      message,
      timestamp: new Date().toISOString(),
      author,
    };
    if (this.size < this.capacity) {
      this.buf.push(event);
      this.size++;
    } else {
      this.index.delete(this.buf[this.head].id);
      this.buf[this.head] = event;
      this.head = (this.head + 1) % this.capacity;
    }
    this.index.set(event.id, event.seq);
    return event;
  }

  position(id) {
    const seq = this.index.get(id);
    return seq === undefined ? -1 : seq - this.at(0).seq;
  }

  latest(limit) {
    return { events: this.slice(Math.max(0, this.size - limit), this.size), hasMore: false, gap: false };
  }

  after(sinceId, limit) {
    const pos = this.position(sinceId);
    const start = pos < 0 ? 0 : pos + 1;
    const end = Math.min(start + limit, this.size);
    return { events: this.slice(start, end), hasMore: end < this.size, gap: pos < 0 };
  }

  get(id) {
    const pos = this.position(id);
    return pos < 0 ? undefined : this.at(pos);
  }
}

const logs = new Map();

function logOf(tenant) {
  let log = logs.get(tenant);
  if (!log) {
    log = new TenantLog(tenant, BUFFER_SIZE);
    logs.set(tenant, log);
  }
  return log;
}

function read(tenant, sinceId, limit) {
  const log = logs.get(tenant);
  if (!log) return { events: [], hasMore: false, gap: sinceId !== undefined };
  return sinceId === undefined ? log.latest(limit) : log.after(sinceId, limit);
}

// ---------------------------------------------------------------- validation

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
// Unicode Cc other than tab (U+0009) and newline (U+000A).
const CONTROL = /[\u0000-\u0008\u000B-\u001F\u007F-\u009F]/;

function parseId(s, what) {
  if (typeof s !== "string" || !UUID.test(s)) throw badRequest(`${what} must be an event id (UUID)`);
  return s.toLowerCase();
}

function parseLimit(v) {
  const n = typeof v === "string" && /^\d+$/.test(v) ? Number(v) : v;
  if (!Number.isInteger(n) || n < 1 || n > MAX_LIMIT) throw badRequest("limit must be an integer from 1 to 1000");
  return n;
}

function validateMessage(message) {
  if (!message.isWellFormed()) throw badRequest("message is not valid Unicode");
  if (!message.trim()) throw validationFailed("message must not be empty or blank");
  if (message.length > MAX_MESSAGE_CHARS) {
    // `length` counts UTF-16 units; count characters (code points).
    let chars = 0;
    for (const _ of message) chars++;
    if (chars > MAX_MESSAGE_CHARS) throw tooLarge("message is longer than 2048 characters");
  }
  if (CONTROL.test(message)) {
    throw validationFailed("message contains control characters (only tab and newline are allowed)");
  }
}

// ---------------------------------------------------------------- the feed

let events; // the namespace, set below

/** Creates an event and broadcasts it to the tenant's room. */
function post(who, message) {
  if (who.role !== "admin") throw forbidden();
  validateMessage(message);
  const event = logOf(who.tenant).append(message, who.user);
  events.to(`tenant:${who.tenant}`).emit("event_created", event);
  return event;
}

// ---------------------------------------------------------------- REST

function send(res, status, body, headers) {
  const json = JSON.stringify(body);
  res.writeHead(status, {
    "Content-Type": "application/json",
    "Content-Length": Buffer.byteLength(json),
    ...headers,
  });
  res.end(json);
}

function sendError(res, e) {
  if (!(e instanceof FeedError)) {
    console.error(e);
    e = new FeedError(500, "internal", "internal error");
  }
  send(res, e.status, { error: e }, e.headers);
}

function principal(req) {
  return authenticate(req.headers["x-tenant-id"], req.headers["x-user-token"]);
}

function readBody(req) {
  return new Promise((resolve, reject) => {
    const chunks = [];
    let size = 0;
    req.on("data", (chunk) => {
      size += chunk.length;
      if (size > MAX_BODY) {
        reject(tooLarge("request body is larger than the limit"));
        req.destroy();
        return;
      }
      chunks.push(chunk);
    });
    req.on("end", () => resolve(Buffer.concat(chunks, size)));
    req.on("error", reject);
  });
}

async function create(req, res) {
  const who = principal(req);
  if (who.role !== "admin") throw forbidden();
  const type = (req.headers["content-type"] || "").split(";")[0].trim().toLowerCase();
  if (type !== "application/json") throw unsupportedMedia();
  if (Number(req.headers["content-length"]) > MAX_BODY) throw tooLarge("request body is larger than the limit");
  const body = await readBody(req);
  let value;
  try {
    value = JSON.parse(body.toString("utf8"));
  } catch {
    throw badRequest("the body is not valid JSON");
  }
  if (value === null || typeof value !== "object" || value.message === undefined) {
    throw badRequest("message is required");
  }
  if (typeof value.message !== "string") throw badRequest("message must be a string");
  const event = post(who, value.message);
  send(res, 201, event, { Location: `/api/events/${event.id}` });
}

function list(req, res, query) {
  const who = principal(req);
  const params = new URLSearchParams(query);
  const since = params.get("sinceId") ? parseId(params.get("sinceId"), "sinceId") : undefined;
  const limit = params.has("limit") ? parseLimit(params.get("limit")) : DEFAULT_LIMIT;
  send(res, 200, read(who.tenant, since, limit));
}

function getOne(req, res, rawId) {
  const who = principal(req);
  const id = parseId(rawId, "the event id");
  const event = logs.get(who.tenant)?.get(id);
  if (!event) throw notFound("no such event in this tenant's buffer");
  send(res, 200, event);
}

async function route(req, res) {
  const q = req.url.indexOf("?");
  const path = q < 0 ? req.url : req.url.slice(0, q);
  const query = q < 0 ? "" : req.url.slice(q + 1);
  const method = req.method;
  if (path === "/api/events" || path === "/api/events/") {
    if (method === "GET") return list(req, res, query);
    if (method === "POST") return create(req, res);
    throw methodNotAllowed("GET, POST");
  }
  if (path.startsWith("/api/events/") && !path.slice(12).includes("/")) {
    if (method === "GET") return getOne(req, res, path.slice(12));
    throw methodNotAllowed("GET");
  }
  if (path === "/healthz" || path === "/readyz") {
    if (method === "GET" || method === "HEAD") return send(res, 200, { status: path === "/healthz" ? "ok" : "ready" });
    throw methodNotAllowed("GET");
  }
  throw notFound("no such route");
}

const httpServer = createServer((req, res) => {
  route(req, res).catch((e) => sendError(res, e));
});

// ---------------------------------------------------------------- Socket.IO

const io = new Server(httpServer, {
  pingInterval: PING_INTERVAL,
  pingTimeout: PING_TIMEOUT,
  maxHttpBufferSize: MAX_PAYLOAD,
  ...(RECOVERY_WINDOW > 0 ? { connectionStateRecovery: { maxDisconnectionDuration: RECOVERY_WINDOW } } : {}),
});

// Performance tuning (socket.io docs): the initial HTTP request is not needed
// after the handshake; dropping it saves memory per connection.
io.engine.on("connection", (rawSocket) => {
  rawSocket.request = null;
});

const REDIS_URL = process.env.NB_BACKEND_REDIS_URL || "";
if (REDIS_URL) {
  const { createClient } = await import("redis");
  const { createAdapter } = await import("@socket.io/redis-adapter");
  const pub = createClient({ url: REDIS_URL });
  const sub = pub.duplicate();
  // A Redis that goes away is retried by the client; log, never crash.
  for (const c of [pub, sub]) c.on("error", (e) => console.error(`baseline: redis: ${e.message}`));
  await Promise.all([pub.connect(), sub.connect()]);
  io.adapter(createAdapter(pub, sub));
}

events = io.of(NAMESPACE);

events.use((socket, next) => {
  const auth = socket.handshake.auth || {};
  try {
    socket.data.who = authenticate(auth.tenantId, auth.token);
  } catch (e) {
    const err = new Error("unauthorized");
    err.data = e.toJSON();
    return next(err);
  }
  if (auth.sinceId !== undefined && auth.sinceId !== null) {
    if (typeof auth.sinceId !== "string" || !UUID.test(auth.sinceId)) {
      const err = new Error("sinceId must be an event id (UUID)");
      err.data = { code: "bad_request", message: err.message };
      return next(err);
    }
    socket.data.sinceId = auth.sinceId.toLowerCase();
  }
  next();
});

/** Splits socket.io handler arguments into (first argument, ack or null). */
function splitArgs(args) {
  const ack = typeof args[args.length - 1] === "function" ? args.pop() : null;
  return [args[0], ack];
}

events.on("connection", (socket) => {
  const who = socket.data.who;
  // Single-threaded: no event can be created between the join and the snapshot.
  socket.join(`tenant:${who.tenant}`);
  if (!socket.recovered) {
    if (socket.data.sinceId !== undefined) {
      const page = read(who.tenant, socket.data.sinceId, Number.MAX_SAFE_INTEGER);
      socket.emit("replay_result", { events: page.events, hasMore: false, gap: page.gap });
    } else {
      socket.emit("snapshot", read(who.tenant, undefined, SNAPSHOT_LIMIT).events);
    }
  }

  socket.on("post_event", (...args) => {
    const [arg, ack] = splitArgs(args);
    try {
      if (arg === null || typeof arg !== "object" || Array.isArray(arg)) {
        throw badRequest("post_event expects an object {message}");
      }
      if (arg.message === undefined) throw badRequest("message is required");
      if (typeof arg.message !== "string") throw badRequest("message must be a string");
      const event = post(who, arg.message);
      if (ack) ack({ event });
    } catch (e) {
      if (!(e instanceof FeedError)) throw e;
      if (ack) ack({ error: e.toJSON() });
      else socket.emit("error", e.toJSON());
    }
  });

  socket.on("replay", (...args) => {
    const [arg, ack] = splitArgs(args);
    try {
      let since;
      let limit = DEFAULT_LIMIT;
      if (arg !== undefined && arg !== null) {
        if (typeof arg !== "object" || Array.isArray(arg)) {
          throw badRequest("replay expects an object {sinceId?, limit?}");
        }
        if (arg.sinceId !== undefined && arg.sinceId !== null) {
          if (typeof arg.sinceId !== "string") throw badRequest("sinceId must be a string");
          since = parseId(arg.sinceId, "sinceId");
        }
        if (arg.limit !== undefined && arg.limit !== null) {
          if (typeof arg.limit !== "number") throw badRequest("limit must be an integer from 1 to 1000");
          limit = parseLimit(arg.limit);
        }
      }
      const page = read(who.tenant, since, limit);
      if (ack) ack(page);
      else socket.emit("replay_result", page);
    } catch (e) {
      if (!(e instanceof FeedError)) throw e;
      if (ack) ack({ error: e.toJSON() });
      else socket.emit("error", e.toJSON());
    }
  });
});

// ---------------------------------------------------------------- start / stop

httpServer.listen(PORT, HOST, () => {
  const { address, port } = httpServer.address();
  console.log(`listening on ${address}:${port}`);
});

function shutdown() {
  io.close(() => process.exit(0));
  setTimeout(() => process.exit(0), 10_000).unref();
}
process.on("SIGINT", shutdown);
process.on("SIGTERM", shutdown);
