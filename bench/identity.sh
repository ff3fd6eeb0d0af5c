#!/usr/bin/env bash
# What identity costs a deployment: 10,000 idle sockets connected with a
# tokens-file token, then with JWTs (HS256, EdDSA, RS256, ES256), each
# expiring in an hour: server CPU per connect (the verification included),
# RSS per connection, and server CPU while the sockets are held (heartbeats,
# plus each JWT socket's expiry timer). Runs alternate by round so drift hits
# every kind alike.
#
# Usage: bench/identity.sh [--clients N] [--hold SECS] [--rounds R] [--kinds "token hs256 ..."]
# Needs: cargo, node (to mint the tokens with the test keys of tests/fixtures/jwt).
set -euo pipefail
cd "$(dirname "$0")/.."

CLIENTS=10000
HOLD=30
ROUNDS=3
KINDS="token hs256 eddsa rs256 es256"
while [[ $# -gt 0 ]]; do
  case "$1" in
    --clients) CLIENTS=$2; shift 2 ;;
    --hold) HOLD=$2; shift 2 ;;
    --rounds) ROUNDS=$2; shift 2 ;;
    --kinds) KINDS=$2; shift 2 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done

cargo build --release -q --bin eventfeed
cargo build --release -q -p eventfeed-loadgen
BIN=target/release/eventfeed
LOADGEN=target/release/eventfeed-loadgen
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"; [[ -n "${PID:-}" ]] && kill "$PID" 2>/dev/null || true' EXIT
SECRET="the bench's HS256 secret, 32+ bytes long"

# The JWKS of the test keys and one token per kind (10 tenants t0..t9, admin, 1 h).
node --input-type=module - "$WORK" "$SECRET" <<'EOF'
import { createHmac, createPrivateKey, createPublicKey, sign } from "node:crypto";
import { readFileSync, writeFileSync } from "node:fs";
const [dir, secret] = process.argv.slice(2);
const b64 = (x) => Buffer.from(typeof x === "string" ? x : JSON.stringify(x)).toString("base64url");
const now = Math.floor(Date.now() / 1000);
const claims = b64({ sub: "bench", tenants: [...Array(10).keys()].map((i) => `t${i}`), role: "admin", iat: now, exp: now + 3600 });
const keys = { rsa: ["rsa-1", "RS256"], ec: ["ec-1", "ES256"], ed: ["ed-1", "EdDSA"] };
const jwks = [];
const tokens = {};
for (const [kind, [kid, alg]] of Object.entries(keys)) {
  const pem = readFileSync(new URL(`../tests/fixtures/jwt/${kid}.pem`, `file://${process.cwd()}/bench/`));
  const key = createPrivateKey(pem);
  jwks.push({ ...createPublicKey(key).export({ format: "jwk" }), kid, alg });
  const input = `${b64({ alg, typ: "JWT", kid })}.${claims}`;
  const digest = alg === "EdDSA" ? null : "sha256";
  const sig = sign(digest, Buffer.from(input), alg === "ES256" ? { key, dsaEncoding: "ieee-p1363" } : key);
  tokens[{ rsa: "rs256", ec: "es256", ed: "eddsa" }[kind]] = `${input}.${sig.toString("base64url")}`;
}
const hsInput = `${b64({ alg: "HS256", typ: "JWT" })}.${claims}`;
tokens.hs256 = `${hsInput}.${createHmac("sha256", secret).update(hsInput).digest("base64url")}`;
tokens.token = "bench_admin";
writeFileSync(`${dir}/jwks.json`, JSON.stringify({ keys: jwks }));
for (const [k, v] of Object.entries(tokens)) writeFileSync(`${dir}/${k}.token`, v);
EOF

echo "kind,round,cpu_us_per_connect,rss_kib_per_connection,hold_cpu_secs,connect_p50_us,held"
for round in $(seq 1 "$ROUNDS"); do
  for kind in $KINDS; do
    NB_BACKEND_PORT=0 NB_BACKEND_LOG_FORMAT=json \
      NB_BACKEND_TOKENS_FILE=bench/tokens.json NB_BACKEND_JWT_SECRET="$SECRET" \
      NB_BACKEND_JWT_JWKS="$WORK/jwks.json" NB_BACKEND_RATE_LIMIT=off NB_BACKEND_TENANT_RATE_LIMIT=off \
      NB_BACKEND_LOG=info "$BIN" >"$WORK/server.log" 2>&1 &
    PID=$!
    for _ in $(seq 100); do
      ADDR=$(grep -o '"addr":"[^"]*"' "$WORK/server.log" | head -1 | cut -d'"' -f4 || true)
      [[ -n "$ADDR" ]] && break
      sleep 0.1
    done
    OUT=$("$LOADGEN" connect --url "http://$ADDR" --server-pid "$PID" --clients "$CLIENTS" --rate 1000 \
      --hold "$HOLD" --token "$(cat "$WORK/$kind.token")" --json --strict | tail -1)
    kill "$PID"; wait "$PID" 2>/dev/null || true; PID=
    python3 -c '
import json, sys
r = json.loads(sys.argv[3])
print(",".join(str(x) for x in [sys.argv[1], sys.argv[2], r["server_cpu_us_per_connect"], r["rss_per_connection_kib"],
      r["server_cpu_secs_during_hold"], r["connect_latency_us"]["p50"], r["held"]]))' "$kind" "$round" "$OUT"
  done
done
