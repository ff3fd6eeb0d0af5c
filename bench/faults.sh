#!/usr/bin/env bash
# The delivery scorecard: every fault scenario of bench/faults/harness.mjs
# against eventfeed and against the Node baseline (socket.io 4.8 with
# connectionStateRecovery; @socket.io/redis-adapter where there are several
# instances), one after the other, then the table of both.
#
#   bench/faults.sh                          every scenario, both servers (~20 minutes)
#   bench/faults.sh --scenario deploy        one scenario (repeatable)
#   bench/faults.sh --servers eventfeed      one server
#   bench/faults.sh --duration 20            shorter runs (seconds per scenario)
#   bench/faults.sh --report DIR             print the table of an earlier run
#
# Prerequisites: a Rust toolchain, Node.js 20 with npm, redis-server. The
# script builds the release binary and runs `npm ci` where needed itself.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
FAULTS="$ROOT/bench/faults"
BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release/eventfeed"

scenarios=() servers=(eventfeed node) duration="" report=""
while (($#)); do
  case "$1" in
    --scenario) scenarios+=("$2"); shift 2 ;;
    --servers) IFS=, read -r -a servers <<<"$2"; shift 2 ;;
    --duration) duration="$2"; shift 2 ;;
    --report) report="$2"; shift 2 ;;
    *) echo "usage: bench/faults.sh [--scenario NAME]... [--servers eventfeed,node] [--duration S] [--report DIR]" >&2; exit 2 ;;
  esac
done
((${#scenarios[@]})) || scenarios=(jitter polling deploy crash redis pubcuts beyond)

if [[ -n "$report" ]]; then
  exec node "$FAULTS/table.mjs" "$report"
fi

command -v redis-server >/dev/null || { echo "faults.sh: redis-server is needed (apt-get install redis-server)" >&2; exit 1; }
(cd "$ROOT" && cargo build --release -q -p eventfeed)
for dir in "$FAULTS" "$ROOT/bench/baseline"; do
  [[ -d "$dir/node_modules" ]] || (cd "$dir" && npm ci --no-audit --no-fund >/dev/null)
done

out="$ROOT/bench/results/faults-$(date +%Y%m%d-%H%M%S)"
mkdir -p "$out"
echo "faults.sh: results in $out" >&2
for scenario in "${scenarios[@]}"; do
  for server in "${servers[@]}"; do
    args=(--server "$server" --scenario "$scenario" --json "$out/$scenario-$server.json" --quiet)
    [[ "$server" == eventfeed ]] && args+=(--bin "$BIN")
    [[ -n "$duration" ]] && args+=(--duration "$duration")
    # A scenario that does not hold exits 1: that is a result, not an error.
    (cd "$FAULTS" && node harness.mjs "${args[@]}") || [[ $? == 1 ]]
  done
done
node "$FAULTS/table.mjs" "$out"
