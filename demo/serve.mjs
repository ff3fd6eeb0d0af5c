// Serves the demo web page and the official socket.io-client bundle on
// http://127.0.0.1:8080, or on $PORT (0: a free port), and prints the address
// it really listens on (no other dependency than demo/node_modules).
//
//   NB_BACKEND_ALLOWED_ORIGINS=http://127.0.0.1:8080 cargo run --release   # the server
//   cd demo && npm ci && node serve.mjs                                     # this page
//
// The page talks to the event feed at http://127.0.0.1:3000 (change it in the form).
//
// It also stands in for a tenant's backend: `POST /token {user, tenant, role?, ttl?}`
// answers `{token, expiresAt}`, an HS256 JWT signed with NB_BACKEND_JWT_SECRET,
// the secret the server checks JWTs with. Give both the same one:
//
//   export NB_BACKEND_JWT_SECRET="$(openssl rand -hex 32)"
//   NB_BACKEND_ALLOWED_ORIGINS=http://127.0.0.1:8080 cargo run --release
//   cd demo && node serve.mjs
//
// Without it the page uses the server's demo tokens and /token answers 503.

import { createServer } from "node:http";
import { createHmac, randomUUID } from "node:crypto";
import { readFile } from "node:fs/promises";
import { fileURLToPath } from "node:url";
import { dirname, join } from "node:path";

const here = dirname(fileURLToPath(import.meta.url));
const port = Number(process.env.PORT || 8080);
const files = {
  "/": ["index.html", "text/html; charset=utf-8"],
  "/socket.io.min.js": ["node_modules/socket.io-client/dist/socket.io.min.js", "text/javascript"],
};

// Read as the server reads it (surrounding blanks dropped), and held to the
// same rule: a secret the server would refuse to start with is refused here.
const secret = (process.env.NB_BACKEND_JWT_SECRET || "").trim();
if (secret && Buffer.byteLength(secret) < 32) {
  console.error(`NB_BACKEND_JWT_SECRET must be at least 32 bytes (this one has ${Buffer.byteLength(secret)})`);
  process.exit(1);
}

const NO_SECRET =
  "no NB_BACKEND_JWT_SECRET: start the server and serve.mjs with the same secret, e.g. " +
  'export NB_BACKEND_JWT_SECRET="$(openssl rand -hex 32)"; ' +
  "NB_BACKEND_ALLOWED_ORIGINS=http://127.0.0.1:8080 cargo run --release; node serve.mjs " +
  "(without it, use the demo tokens such as token_admin_a)";
const TTL = { min: 5, max: 3600, default: 300 }; // seconds
const MAX_BODY = 4096;
const FIELDS = ["user", "tenant", "role", "ttl"];

/// The claims of a token request, or the reason it is refused.
function claimsOf(body) {
  if (typeof body !== "object" || body === null || Array.isArray(body)) return "expected a JSON object {user, tenant, role?, ttl?}";
  const unknown = Object.keys(body).find((k) => !FIELDS.includes(k));
  if (unknown !== undefined) return `unknown field ${JSON.stringify(unknown)} (expected ${FIELDS.join(", ")})`;
  // A tenant id or a user: 1 to 128 bytes, no control characters (the server's rule).
  const name = (v) => typeof v === "string" && v.trim() !== "" && Buffer.byteLength(v) <= 128 && !/\p{Cc}/u.test(v);
  const { user, tenant, role = "admin", ttl = TTL.default } = body;
  if (!name(user)) return "user must be a non-blank string of at most 128 bytes, without control characters";
  if (!name(tenant) || tenant === "*") return "tenant must be a tenant id (at most 128 bytes, no control characters, not \"*\")";
  if (role !== "admin" && role !== "reader") return 'role must be "admin" or "reader"';
  if (!Number.isInteger(ttl) || ttl < TTL.min || ttl > TTL.max) return `ttl must be a whole number of seconds, ${TTL.min} to ${TTL.max}`;
  const iat = Math.floor(Date.now() / 1000);
  // jti: one token can be revoked on its own ({"revoked":[{"jti":"..."}]}).
  return { sub: user, tenant, role, iat, exp: iat + ttl, jti: randomUUID() };
}

/// An HS256 JWT of `claims`, signed with the shared secret.
function sign(claims) {
  const part = (o) => Buffer.from(JSON.stringify(o)).toString("base64url");
  const signed = `${part({ alg: "HS256", typ: "JWT" })}.${part(claims)}`;
  return `${signed}.${createHmac("sha256", secret).update(signed).digest("base64url")}`;
}

function json(res, status, value, headers = {}) {
  res.writeHead(status, { "Content-Type": "application/json", "Cache-Control": "no-store", ...headers });
  res.end(JSON.stringify(value));
}

const fail = (res, status, code, message, headers) => json(res, status, { error: { code, message } }, headers);

/// POST /token. A real backend would first authenticate its user (session
/// cookie, SSO, ...) and decide the tenant and role itself; this stand-in
/// signs whatever it is asked, so it only listens on loopback and sends no
/// CORS header (another origin's page cannot read its answer).
async function token(req, res) {
  if (req.method !== "POST") return fail(res, 405, "method_not_allowed", "POST /token {user, tenant, role?, ttl?}", { Allow: "POST" });
  if (!secret) return fail(res, 503, "no_secret", NO_SECRET);
  const chunks = [];
  let size = 0;
  for await (const chunk of req) {
    size += chunk.length;
    if (size > MAX_BODY) return fail(res, 413, "payload_too_large", `at most ${MAX_BODY} bytes`, { Connection: "close" });
    chunks.push(chunk);
  }
  let body;
  try {
    body = JSON.parse(Buffer.concat(chunks).toString("utf8"));
  } catch {
    return fail(res, 400, "bad_request", "the body must be JSON {user, tenant, role?, ttl?}");
  }
  const claims = claimsOf(body);
  if (typeof claims === "string") return fail(res, 400, "validation_failed", claims);
  json(res, 200, { token: sign(claims), expiresAt: new Date(claims.exp * 1000).toISOString() });
}

const server = createServer(async (req, res) => {
  const path = new URL(req.url, "http://x").pathname;
  if (path === "/token") return token(req, res);
  // What the page needs to know: whether /token can mint (else: demo tokens).
  if (path === "/config.json") return json(res, 200, { jwt: Boolean(secret) });
  const file = files[path];
  if (!file) {
    res.writeHead(404).end("not found");
    return;
  }
  try {
    const body = await readFile(join(here, file[0]));
    res.writeHead(200, { "Content-Type": file[1] }).end(body);
  } catch {
    res.writeHead(500).end("run `npm ci` in demo/ first");
  }
});
// The port is read back from the socket: with PORT=0 the system picks it, and
// whoever started this script (tests/demos.rs) learns it from this line.
server.listen(port, "127.0.0.1", () => {
  console.log(`demo page on http://127.0.0.1:${server.address().port}`);
  console.log(secret ? "POST /token mints HS256 JWTs with NB_BACKEND_JWT_SECRET" : "POST /token is off (no NB_BACKEND_JWT_SECRET): the page uses demo tokens");
});
