#!/usr/bin/env bash
# Instruction counts of eventfeed builds under callgrind: user-space
# instructions per connect, per delivery and per REST request, the figures
# that do not move with the machine's load (see bench/README.md,
# "Instruction counts").
#
#   bench/callgrind.sh                         the release build of this checkout
#   bench/callgrind.sh OLD_BIN NEW_BIN ...     several builds, side by side
#
# For each binary, three runs of a fresh server under callgrind (pinned to
# one core, so it runs the single-threaded scheduler, as bench/run.sh does):
#   idle     start and stop, nothing else
#   connect  CONNECTS idle websocket clients (default 1000) opened and closed
#   fanout   10 tenants x 50 receivers, publishers at the maximum rate for
#            DURATION seconds (default 10), REST and post_event mixed
#   short    the same receivers and publishers, publishing for 2 s
#   rest     8 keep-alive connections looping POST then GET ?limit=50, for
#            DURATION seconds, and for 2 s
# per connect  = (connect - idle) / CONNECTS
# per delivery = (fanout - short) / (deliveries of fanout - deliveries of short):
#                the connects, the start and the stop cancel out
# per request  = (rest - short rest) / (their difference in requests)
#
# Needs valgrind and a release build of eventfeed-loadgen (built if missing).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
LOADGEN="${LOADGEN:-$TARGET_DIR/release/eventfeed-loadgen}"
CONNECTS="${CONNECTS:-1000}"
DURATION="${DURATION:-10}"
SERVER_CPU="${SERVER_CPU:-0}"
LOADGEN_CPU="${LOADGEN_CPU:-1}"
OUT="${OUT:-$(mktemp -d /tmp/eventfeed-callgrind.XXXXXX)}"
mkdir -p "$OUT"

command -v valgrind >/dev/null || { echo "callgrind.sh: valgrind not found (apt-get install valgrind)" >&2; exit 1; }
BINS=("$@")
if [[ ${#BINS[@]} -eq 0 ]]; then
  (cd "$ROOT" && cargo build --release -p eventfeed -p eventfeed-loadgen)
  BINS=("$TARGET_DIR/release/eventfeed")
fi
[[ -x "$LOADGEN" ]] || (cd "$ROOT" && cargo build --release -p eventfeed-loadgen)

# Starts BIN under callgrind on a free port; sets PID and URL.
start() {
  local bin=$1 tag=$2
  local log="$OUT/$tag.log"
  NB_BACKEND_PORT=0 NB_BACKEND_TOKENS_FILE="$ROOT/bench/tokens.json" \
    NB_BACKEND_RATE_LIMIT=off NB_BACKEND_TENANT_RATE_LIMIT=off NB_BACKEND_MAX_QUEUE=4096 \
    NB_BACKEND_MAX_CONNECTIONS=1000000 NB_BACKEND_MAX_TENANT_CONNECTIONS=1000000 \
    NB_BACKEND_LOG=warn,eventfeed=info \
    taskset -c "$SERVER_CPU" valgrind --tool=callgrind --callgrind-out-file="$OUT/$tag.cg" \
    "$bin" >"$log" 2>&1 &
  PID=$!
  local port=""
  for _ in $(seq 1 600); do
    port=$(grep -o 'addr=127.0.0.1:[0-9]*' "$log" 2>/dev/null | head -1 | cut -d: -f2 || true)
    [[ -n "$port" ]] && break
    kill -0 "$PID" 2>/dev/null || { cat "$log" >&2; echo "callgrind.sh: server died" >&2; exit 1; }
    sleep 0.1
  done
  [[ -n "$port" ]] || { echo "callgrind.sh: no listening line in $log" >&2; exit 1; }
  URL="http://127.0.0.1:$port"
}

stop() {
  kill -TERM "$PID"
  wait "$PID" || true
}

# Total instructions of a callgrind output file.
total() {
  awk '/^(summary|totals):/ {print $2; exit}' "$1"
}

# A count reported by the generator's JSON (last line of its output).
count() {
  tail -n 1 "$2" | python3 -c "import json,sys; print(json.load(sys.stdin).get('$1', 0))"
}

loadgen() {
  taskset -c "$LOADGEN_CPU" "$LOADGEN" "$@" --timeout 60 --json
}

printf '%-40s %14s %14s %14s\n' binary "Ir/connect" "Ir/delivery" "Ir/request"
for bin in "${BINS[@]}"; do
  name=$(basename "$bin")
  start "$bin" "$name.idle"; stop
  start "$bin" "$name.connect"
  loadgen connect --url "$URL" --clients "$CONNECTS" --rate 200 --hold 1 >"$OUT/$name.connect.out"
  stop
  fanout=(fanout --tenants 10 --clients 50 --rate max --publish mixed --connect-rate 200 --drain 5)
  start "$bin" "$name.short"
  loadgen "${fanout[@]}" --url "$URL" --duration 2 >"$OUT/$name.short.out"
  stop
  start "$bin" "$name.fanout"
  loadgen "${fanout[@]}" --url "$URL" --duration "$DURATION" >"$OUT/$name.fanout.out"
  stop
  rest=(rest --connections 8 --limit 50)
  start "$bin" "$name.rest-short"
  loadgen "${rest[@]}" --url "$URL" --duration 2 >"$OUT/$name.rest-short.out"
  stop
  start "$bin" "$name.rest"
  loadgen "${rest[@]}" --url "$URL" --duration "$DURATION" >"$OUT/$name.rest.out"
  stop
  idle=$(total "$OUT/$name.idle.cg")
  connect=$(total "$OUT/$name.connect.cg")
  short=$(total "$OUT/$name.short.cg")
  fan=$(total "$OUT/$name.fanout.cg")
  d_short=$(count deliveries "$OUT/$name.short.out")
  d_fan=$(count deliveries "$OUT/$name.fanout.out")
  rest_short=$(total "$OUT/$name.rest-short.cg")
  rest_long=$(total "$OUT/$name.rest.cg")
  r_short=$(count requests "$OUT/$name.rest-short.out")
  r_long=$(count requests "$OUT/$name.rest.out")
  python3 - "$bin" "$idle" "$connect" "$CONNECTS" "$short" "$fan" "$d_short" "$d_fan" \
    "$rest_short" "$rest_long" "$r_short" "$r_long" <<'EOF'
import sys
bin, idle, connect, n, short, fan, d_short, d_fan, rest_short, rest_long, r_short, r_long = sys.argv[1:]
per_connect = (int(connect) - int(idle)) / int(n)
per_delivery = (int(fan) - int(short)) / max(1, int(d_fan) - int(d_short))
per_request = (int(rest_long) - int(rest_short)) / max(1, int(r_long) - int(r_short))
print(f"{bin:<40} {per_connect:14,.0f} {per_delivery:14,.1f} {per_request:14,.0f}"
      f"   ({int(d_fan):,} deliveries, {int(r_long):,} requests)")
EOF
done
echo "callgrind outputs in $OUT"
