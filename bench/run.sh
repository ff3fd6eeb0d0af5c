#!/usr/bin/env bash
# The eventfeed benchmark: eventfeed against the Node socket.io baseline
# (bench/baseline), interleaved, each run on a fresh server, server pinned to
# one core and the load generator to another; prints medians and ratios.
#
#   bench/run.sh                  every case, 3 repeats
#   bench/run.sh --quick          1 repeat, short runs, small sizes (a smoke test)
#   bench/run.sh --case rest      one case (repeatable: --case a --case b)
#   bench/run.sh --repeats 5
#   bench/run.sh --big            also hold 100,000 idle clients (eventfeed only)
#   bench/run.sh --report DIR     print the table of an earlier results directory
#   bench/run.sh --compare OLD_BIN
#                                 two eventfeed builds instead: OLD_BIN and this
#                                 checkout's, interleaved; medians, new / old, every run
#
# See bench/README.md for what each case measures.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BENCH="$ROOT/bench"
TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
EVENTFEED_BIN="$TARGET_DIR/release/eventfeed"
LOADGEN_BIN="$TARGET_DIR/release/eventfeed-loadgen"
BASELINE_DIR="$BENCH/baseline"
TOKENS="$BENCH/tokens.json"
SERVER_CPU="${SERVER_CPU:-0}"   # the core the server runs on
LOADGEN_CPU="${LOADGEN_CPU:-1}" # the core the load generator runs on
NODE="${NODE:-node}"

STANDARD_CASES=(fanout_200 fanout_max connect_10k rest polling_200 sse_200 storm_recover storm_snapshot tenants)
CLUSTER_CASES=(cluster_200 cluster_max)
ALL_CASES=("${STANDARD_CASES[@]}" big "${CLUSTER_CASES[@]}")
# The frame the fan-out cases deliver, in bytes (an event_created websocket frame): the floor's.
FRAME_BYTES=193
# polling_200's floor: a poll's answer carrying one event (143 bytes of head —
# status line, content-type, cache-control, content-length, date — and the
# frame's 189-byte packet), and the long poll that follows it (the
# generator's GET with its sid, Host, Accept and Connection lines).
POLL_ANSWER_BYTES=332
POLL_REQUEST_BYTES=137

usage() {
  cat <<EOF
usage: bench/run.sh [--quick] [--case NAME]... [--repeats N] [--big] [--cluster] [--no-build]
                    [--servers eventfeed,baseline] [--out DIR]
       bench/run.sh --compare OLD_BIN [--new-bin NEW_BIN] [--labels OLD,NEW] [--servers baseline]
                    [--quick] [--case NAME]... [--repeats N] [--big] [--cluster] [--no-build] [--out DIR]
       bench/run.sh --report DIR

  --quick        1 repeat, short durations, small sizes (a smoke test of the suite)
  --case NAME    run only this case (repeatable): ${ALL_CASES[*]}
  --repeats N    repeats per case and server (default 3; 1 with --quick)
  --big          add the 'big' case: 100,000 idle clients held, eventfeed only
  --cluster      only with --case: add the two-instance cases (cluster_200, cluster_max),
                 which every full run has: receivers on instance A, publishers on instance B,
                 one redis-server; beside one instance and two Node instances on Redis
  --no-build     use the binaries and node_modules already built
  --servers S    comma-separated subset of eventfeed,baseline (default both)
  --out DIR      results directory (default bench/results/<timestamp>)
  --report DIR   only print the table of an earlier run's results (either mode)
Comparing two builds of eventfeed (the baseline is not run unless --servers baseline):
  --compare OLD_BIN  run the cases against OLD_BIN and NEW (this checkout's release build,
                 built unless --no-build), interleaved old, new, new, old, ... (each a fresh
                 server, the same environment and pinning); the cluster cases run two
                 instances of each side's own binary. Prints per figure each side's median,
                 new / old and every run's values; no targets
  --new-bin NEW_BIN  the new side is this binary instead of this checkout's build
  --labels OLD,NEW   names of the two sides in the output (default old,new)
  --servers baseline also run the Node baseline (old, new, baseline, ...) and print new
                 against it, with the targets, under each compare table
Environment: SERVER_CPU (default 0), LOADGEN_CPU (default 1), CARGO_TARGET_DIR, NODE.
EOF
}

QUICK=0
REPEATS=""
CASES=()
BIG=0
CLUSTER=0
BUILD=1
SERVERS="eventfeed,baseline"
OUT=""
REPORT=""
COMPARE_OLD="" # --compare: the old side's binary
COMPARE_NEW="" # --new-bin: the new side's binary (default: this checkout's build)
LABELS="old,new"
SERVERS_SET=0
while [[ $# -gt 0 ]]; do
  case "$1" in
    --quick) QUICK=1 ;;
    --case) CASES+=("${2:?--case needs a name}"); shift ;;
    --repeats) REPEATS="${2:?--repeats needs a number}"; shift ;;
    --big) BIG=1 ;;
    --cluster) CLUSTER=1 ;;
    --no-build) BUILD=0 ;;
    --servers) SERVERS="${2:?--servers needs a list}"; SERVERS_SET=1; shift ;;
    --compare) COMPARE_OLD="${2:?--compare needs the old eventfeed binary}"; shift ;;
    --new-bin) COMPARE_NEW="${2:?--new-bin needs an eventfeed binary}"; shift ;;
    --labels) LABELS="${2:?--labels needs OLD,NEW}"; shift ;;
    --out) OUT="${2:?--out needs a directory}"; shift ;;
    --report) REPORT="${2:?--report needs a directory}"; shift ;;
    -h|--help) usage; exit 0 ;;
    *) echo "run.sh: unknown option $1" >&2; usage >&2; exit 2 ;;
  esac
  shift
done

die() { echo "run.sh: $*" >&2; exit 1; }
log() { echo "== $*"; }

# ---------------------------------------------------------------- aggregation (python3)

aggregate() {
  python3 - "$1" <<'PY'
import json, os, platform, statistics, sys

out = sys.argv[1]
runs = []
with open(os.path.join(out, "runs.tsv")) as f:
    for line in f:
        case, server, rep, rc, path = line.rstrip("\n").split("\t")
        result = None
        try:
            with open(os.path.join(out, path)) as g:
                lines = [l for l in g.read().splitlines() if l.strip()]
            if lines:
                result = json.loads(lines[-1])
        except (OSError, ValueError):
            pass
        runs.append({"case": case, "server": server, "repeat": int(rep), "rc": int(rc), "result": result})

with open(os.path.join(out, "results.jsonl"), "w") as f:
    for r in runs:
        f.write(json.dumps(r) + "\n")

def flatten(v, prefix=""):
    if isinstance(v, bool):
        return {}
    if isinstance(v, (int, float)):
        return {prefix: float(v)}
    if isinstance(v, dict):
        d = {}
        for k, x in v.items():
            d.update(flatten(x, f"{prefix}.{k}" if prefix else k))
        return d
    if isinstance(v, list):  # e.g. each process's CPU: key.0, key.1, ...
        d = {}
        for i, x in enumerate(v):
            d.update(flatten(x, f"{prefix}.{i}"))
        return d
    return {}

# Headline figures per loadgen mode: (key, label, lower_is_better).
HEAD = {
    "fanout": [
        ("deliveries_per_sec", "deliveries/s", False),
        ("server_cpu_us_per_delivery", "server CPU µs / delivery", True),
        ("server_sys_cpu_us_per_delivery", "… of it in the kernel", True),
        ("deliveries_per_write", "deliveries / server write()", False),
        ("latency_us.p50", "latency p50 µs", True),
        ("latency_us.p99", "latency p99 µs", True),
        ("latency_us.p999", "latency p99.9 µs", True),
        ("events_per_sec", "events/s published", False),
        ("publish_latency_us.p99", "publish ack p99 µs", True),
        ("server_rss_kib", "server RSS KiB", True),
        ("lost", "lost", True),
        ("duplicates", "duplicates", True),
        ("out_of_order", "out of order", True),
        ("cross_tenant", "cross-tenant", True),
        ("disconnected", "disconnected", True),
        ("publish_errors", "publish errors", True),
    ],
    "connect": [
        ("held", "clients held", False),
        ("failures", "failures", True),
        ("rss_per_connection_kib", "server RSS KiB / connection", True),
        ("server_cpu_us_per_connect", "server CPU µs / connect", True),
        ("connects_per_sec", "connects/s", False),
        ("connect_latency_us.p50", "connect p50 µs", True),
        ("connect_latency_us.p99", "connect p99 µs", True),
        ("server_rss_kib_after_connect", "server RSS KiB after connect", True),
    ],
    "storm": [
        ("clients", "clients cut and reconnecting", False),
        ("recovered", "recovered (same session)", False),
        ("caught_up", "caught up", False),
        ("server_cpu_us_per_recovery", "server CPU µs / recovery", True),
        ("server_cpu_us_per_reconnect", "server CPU µs / reconnect", True),
        ("catch_up_us.p50", "reconnect → caught up p50 µs", True),
        ("catch_up_us.p99", "reconnect → caught up p99 µs", True),
        ("reconnects_per_sec", "reconnects/s", False),
        ("server_rss_kib", "server RSS KiB", True),
        ("failures", "failures", True),
        ("lost", "lost", True),
        ("duplicates", "duplicates", True),
        ("out_of_order", "out of order", True),
        ("cross_tenant", "cross-tenant", True),
    ],
    "tenants": [
        ("events_seeded", "events stored", False),
        ("event_json_bytes", "event JSON bytes", True),
        ("rss_bytes_per_event", "server RSS bytes / stored event", True),
        ("memory_per_event_ratio", "RSS per event / JSON size", True),
        ("seed_events_per_sec", "seeding writes/s", False),
        ("server_cpu_us_per_seeded_event", "server CPU µs / write", True),
        ("connect_a.latency_us.p50", "connect+snapshot p50 µs, few tenants", True),
        ("connect_a.latency_us.p99", "connect+snapshot p99 µs, few tenants", True),
        ("connect_b.latency_us.p50", "connect+snapshot p50 µs, all tenants", True),
        ("connect_b.latency_us.p99", "connect+snapshot p99 µs, all tenants", True),
        ("connect_p99_ratio", "p99 all / few tenants", True),
        ("server_rss_kib_end", "server RSS KiB at the end", True),
        ("write_errors", "write errors", True),
        ("connect_b.failures", "failed connects", True),
        ("connect_b.wrong_snapshots", "wrong snapshots", True),
    ],
    "floor": [
        ("writer_cpu_us_per_delivery", "CPU µs / delivery", True),
        ("frames_per_write", "frames / write()", False),
        ("deliveries_per_sec", "deliveries/s", False),
    ],
    "rest": [
        ("requests_per_sec", "requests/s", False),
        ("server_cpu_us_per_request", "server CPU µs / request", True),
        ("post.latency_us.p50", "POST p50 µs", True),
        ("post.latency_us.p99", "POST p99 µs", True),
        ("get.latency_us.p50", "GET p50 µs", True),
        ("get.latency_us.p99", "GET p99 µs", True),
        ("errors", "errors", True),
        ("server_rss_kib", "server RSS KiB", True),
    ],
}
# Targets of issue 7: (case, key) -> (kind, value, text). kind "ratio": eventfeed/baseline
# must be <= value (or >= for "ratio_min"); "abs": eventfeed's own figure <= value.
TARGETS = {
    ("fanout_200", "server_cpu_us_per_delivery"): ("ratio", 0.2, "≤ 1/5"),
    ("fanout_200", "latency_us.p99"): ("abs", 2000, "≤ 2000 µs"),
    ("fanout_max", "server_cpu_us_per_delivery"): ("ratio", 0.1, "≤ 1/10"),
    ("fanout_max", "deliveries_per_sec"): ("ratio_min", 5, "≥ 5×"),
    ("fanout_max", "lost"): ("abs", 0, "0"),
    ("fanout_max", "duplicates"): ("abs", 0, "0"),
    ("fanout_max", "out_of_order"): ("abs", 0, "0"),
    ("connect_10k", "rss_per_connection_kib"): ("abs", 4, "≤ 4 KiB"),
    ("connect_10k", "server_cpu_us_per_connect"): ("ratio", 0.2, "≤ 1/5"),
    ("rest", "requests_per_sec"): ("ratio_min", 3, "≥ 3×"),
    ("rest", "server_cpu_us_per_request"): ("ratio", 0.2, "≤ 1/5"),
    ("big", "held"): ("abs_min", 100000, "100,000"),
    ("big", "failures"): ("abs", 0, "0"),
}
# Issue 21's targets. A key with a third part judges the comparison with that
# column (another server, another case's "case:server", or the floor).
TARGETS.update({
    ("fanout_200", "server_cpu_us_per_delivery", "floor"): ("ratio", 1.5, "≤ 1.5× floor"),
    ("fanout_max", "server_cpu_us_per_delivery", "floor"): ("ratio", 2.5, "≤ 2.5× floor"),
    ("polling_200", "server_cpu_us_per_delivery"): ("ratio", 0.2, "≤ 1/5"),
    ("polling_200", "latency_us.p99"): ("ratio", 1 / 3, "≤ 1/3"),
    ("sse_200", "server_cpu_us_per_delivery", "fanout_200:eventfeed"): ("ratio", 1.2, "≤ 1.2×"),
    ("cluster_200", "server_cpu_us_per_delivery", "eventfeed"): ("ratio", 1.25, "≤ 1.25×"),
    ("cluster_max", "server_cpu_us_per_delivery", "eventfeed"): ("ratio", 1.25, "≤ 1.25×"),
    ("cluster_200", "server_cpu_us_per_delivery", "baseline_cluster"): ("ratio", 0.2, "≤ 1/5"),
    ("cluster_max", "server_cpu_us_per_delivery", "baseline_cluster"): ("ratio", 0.2, "≤ 1/5"),
})
TARGETS.update({
    ("storm_recover", "server_cpu_us_per_recovery"): ("ratio", 0.2, "≤ 1/5"),
    ("storm_snapshot", "server_cpu_us_per_reconnect"): ("ratio", 0.2, "≤ 1/5"),
})
for case in ("storm_recover", "storm_snapshot"):
    for k in ("lost", "duplicates", "out_of_order", "cross_tenant", "failures"):
        TARGETS.setdefault((case, k), ("abs", 0, "0"))
TARGETS.update({
    ("tenants", "memory_per_event_ratio"): ("abs", 1.3, "≤ 1.3"),
    ("tenants", "connect_p99_ratio"): ("abs", 1.2, "≤ 1.2"),
    ("tenants", "write_errors"): ("abs", 0, "0"),
    ("tenants", "connect_b.failures"): ("abs", 0, "0"),
    ("tenants", "connect_b.wrong_snapshots"): ("abs", 0, "0"),
})
for case in ("fanout_200", "fanout_max", "polling_200", "sse_200", "cluster_200", "cluster_max"):
    for k in ("lost", "duplicates", "out_of_order", "cross_tenant"):
        TARGETS.setdefault((case, k), ("abs", 0, "0"))

def fmt(x):
    if x is None:
        return "—"
    if x == int(x) or abs(x) >= 100:
        return f"{x:,.0f}"
    return f"{x:.3g}"

# --compare runs: the sides "old" and "new" (names from compare.tsv), perhaps the baseline.
compare = any(r["server"] in ("old", "new") for r in runs)
names = {"old": "old", "new": "new"}
if compare and os.path.exists(os.path.join(out, "compare.tsv")):
    with open(os.path.join(out, "compare.tsv")) as f:
        for line in f:
            side, label = line.rstrip("\n").split("\t")[:2]
            names[side] = label

servers = ["old", "new", "baseline"] if compare else ["eventfeed", "baseline", "cluster", "baseline_cluster", "floor"]
order = []
for r in runs:
    if r["case"] not in order:
        order.append(r["case"])

summary = {}
lines = []
machine = os.path.join(out, "machine.txt")
quick = os.path.exists(machine) and "QUICK" in open(machine).read()
if os.path.exists(machine):
    lines.append("```")
    lines.extend(open(machine).read().rstrip().splitlines())
    lines.append("```")
    lines.append("")
def compute(case):
    """The case's mode and, per server, its runs' medians and values."""
    cruns = [r for r in runs if r["case"] == case and r["server"] != "floor"]
    mode = next((r["result"].get("mode") for r in cruns if r["result"]), None)
    cruns = [r for r in runs if r["case"] == case]
    per = {}
    for s in servers:
        rs = [r for r in cruns if r["server"] == s]
        if not rs:
            continue
        # A run that crashed or timed out (exit status not 0) is left out of the
        # medians; one whose checks failed (ok: false) stays in: its counts matter.
        figs = {}
        for r in rs:
            if r["rc"] != 0:
                continue
            for k, v in flatten(r["result"] or {}).items():
                figs.setdefault(k, []).append(v)
        # Every run's figures in repeat order ({} for a run that crashed or timed out).
        byrun = [flatten(r["result"] or {}) if r["rc"] == 0 else {} for r in sorted(rs, key=lambda r: r["repeat"])]
        per[s] = {
            "runs": len(rs),
            "excluded": sum(1 for r in rs if r["rc"] != 0),
            "failed": sum(1 for r in rs if r["rc"] == 0 and (not r["result"] or r["result"].get("ok") is False)),
            "median": {k: statistics.median(v) for k, v in figs.items()},
            "values": figs,
            "by_run": byrun,
        }
    return mode, per

PER = {case: compute(case) for case in order}

def verdict_of(t, ratio, ef):
    """A target's text, with ✓ or ✗ when it can be judged (not in quick runs)."""
    if not t:
        return ""
    kind, val, text = t
    met = None
    if kind == "ratio" and ratio is not None:
        met = ratio <= val
    elif kind == "ratio_min" and ratio is not None:
        met = ratio >= val
    elif kind == "abs" and ef is not None:
        met = ef <= val
    elif kind == "abs_min" and ef is not None:
        met = ef >= val
    # Quick runs are too small to judge against the targets.
    return text + ("" if met is None or quick else (" ✓" if met else " ✗"))

for case in order:
    mode, per = PER[case]
    head = HEAD.get(mode) or []
    present = set().union(*(p["median"].keys() for p in per.values())) if per else set()
    keys = [h for h in head if h[0] in present]
    if not keys:  # unknown mode or renamed figures: show every numeric figure
        keys = [(k, k, None) for k in sorted(present)]
    summary[case] = {"mode": mode, "servers": {s: {k: v for k, v in p.items() if k != "by_run"} for s, p in per.items()}}
    lines.append(f"### {case} ({mode or '?'})  " + ", ".join(
        f"{names.get(s, s)}: {p['runs']} run(s)"
        + (f", {p['excluded']} crashed or timed out (left out)" if p["excluded"] else "")
        + (f", {p['failed']} with failed checks" if p["failed"] else "")
        for s, p in per.items()))
    lines.append("")
    if compare:
        # Old and new side by side: medians, new / old, and every run (✗: the run
        # crashed or timed out, left out of the median).
        o, n = names["old"], names["new"]
        lines.append(f"| figure | better | {o} | {n} | {n} / {o} | {o} runs | {n} runs |")
        lines.append("| --- | --- | ---: | ---: | ---: | ---: | ---: |")
        ratios = {}
        for key, label, lower in keys:
            a = per.get("old", {}).get("median", {}).get(key)
            b = per.get("new", {}).get("median", {}).get(key)
            ratio = b / a if a not in (None, 0) and b is not None else None
            ratios[key] = ratio
            better = {True: "lower", False: "higher"}.get(lower, "?")
            each = lambda s: " · ".join(fmt(run.get(key)) if run else "✗" for run in per.get(s, {}).get("by_run", []))
            lines.append(f"| {label} | {better} | {fmt(a)} | {fmt(b)} | {'—' if ratio is None else f'{ratio:.3g}'} | {each('old')} | {each('new')} |")
        summary[case]["labels"] = {s: names[s] for s in ("old", "new")}
        summary[case]["ratio"] = ratios
        lines.append("")
        if "baseline" not in per:
            continue
        lines.append(f"{n} against the baseline:")
        lines.append("")
        left, right = "new", "baseline"
        heads = {"new": n, "baseline": "baseline"}
        comparisons = [(left, right, heads)]
    else:
        # The cluster cases compare two instances on one Redis (publish on B,
        # receive on A) with one instance, then with two Node instances on one
        # Redis; sse_200 the event stream with fanout_200's websockets; the
        # others eventfeed with the baseline.
        if case.startswith("cluster_"):
            comparisons = [("cluster", "eventfeed", {"cluster": "2 instances + Redis", "eventfeed": "1 instance"}),
                           ("cluster", "baseline_cluster", {"cluster": "2 instances + Redis", "baseline_cluster": "2 Node + Redis"})]
        elif case == "sse_200":
            comparisons = [("eventfeed", "fanout_200:eventfeed", {"eventfeed": "SSE streams", "fanout_200:eventfeed": "websockets (fanout_200)"})]
        else:
            comparisons = [("eventfeed", "baseline", {"eventfeed": "eventfeed", "baseline": "baseline"})]
    for left, right, heads in comparisons:
        if right not in per and ":" not in right:
            continue
        if ":" in right:  # another case's server
            other_case, other_server = right.split(":")
            right_per = PER.get(other_case, (None, {}))[1].get(other_server, {})
        else:
            right_per = per.get(right, {})
        if not right_per:
            continue
        if len(comparisons) > 1:
            lines.append(f"{heads[left]} against {heads[right]}:")
            lines.append("")
        lines.append(f"| figure | {heads[left]} | {heads[right]} | {heads[left]} / {heads[right]} | target |")
        lines.append("| --- | ---: | ---: | ---: | --- |")
        ratios = {}
        for key, label, _lower in keys:
            ef = per.get(left, {}).get("median", {}).get(key)
            bl = right_per.get("median", {}).get(key)
            ratio = ef / bl if ef is not None and bl not in (None, 0) else None
            ratios[key] = ratio
            t = TARGETS.get((case, key, right)) or (TARGETS.get((case, key)) if right in ("baseline", "eventfeed") else None)
            lines.append(f"| {label} | {fmt(ef)} | {fmt(bl)} | {'—' if ratio is None else f'{ratio:.3g}'} | {verdict_of(t, ratio, ef)} |")
        summary[case]["ratio_baseline" if compare else ("ratio" if right in ("baseline", "eventfeed") else f"ratio_{right}")] = ratios
        lines.append("")
    # Where a cluster's CPU goes: each process (A, redis-server, B: the order
    # start_server gives them to the generator), beside one instance.
    if not compare and case.startswith("cluster_"):
        for s, roles in (("cluster", ("instance A (receivers)", "Redis", "instance B (publishers)")),
                         ("baseline_cluster", ("Node A (receivers)", "Redis", "Node B (publishers)"))):
            m = per.get(s, {}).get("median", {})
            each = [m.get(f"server_cpu_us_per_delivery_each.{i}") for i in range(3)]
            if any(x is None for x in each):
                continue
            one = per.get("eventfeed", {}).get("median", {}).get("server_cpu_us_per_delivery")
            beside = f"; one eventfeed instance: {fmt(one)}" if one is not None and s == "cluster" else ""
            parts = ", ".join(f"{n} {fmt(x)}" for n, x in zip(roles, each))
            lines.append(f"{'eventfeed' if s == 'cluster' else 'Node'} cluster, CPU µs per delivery by process "
                         f"(medians): {parts}{beside}.")
            lines.append("")
    # The fan-out cases beside the machine's floor at their shape (no server).
    if not compare and "floor" in per and "eventfeed" in per:
        f = per["floor"]["median"]
        e = per["eventfeed"]["median"]
        fl = f.get("writer_cpu_us_per_delivery")
        ef = e.get("server_cpu_us_per_delivery")
        ratio = ef / fl if ef is not None and fl not in (None, 0) else None
        t = TARGETS.get((case, "server_cpu_us_per_delivery", "floor"))
        if f.get("answer_bytes"):
            lines.append("The machine's floor at this shape (no server: one pinned thread writing each of "
                         f"{fmt(f.get('sockets'))} loopback sockets a {fmt(f.get('frame_bytes'))}-byte answer per event and "
                         f"reading the {fmt(f.get('answer_bytes'))}-byte request that follows it: one write() and one "
                         f"read() per delivery, {fmt(f.get('rate'))} events/s):")
        else:
            # Deliveries per write are counted only where perf can (fanout_max).
            dpw = e.get("deliveries_per_write")
            wrote = f"; eventfeed wrote {fmt(dpw)} deliveries per write" if dpw is not None else ""
            lines.append("The machine's floor at this shape (no server: one pinned thread writing "
                         f"{fmt(f.get('frames_per_write'))} frame(s) per write() to {fmt(f.get('sockets'))} loopback sockets, "
                         f"{fmt(f.get('rate'))} events/s{wrote}):")
        lines.append("")
        lines.append("| figure | eventfeed | floor | eventfeed / floor | target |")
        lines.append("| --- | ---: | ---: | ---: | --- |")
        lines.append(f"| CPU µs / delivery | {fmt(ef)} | {fmt(fl)} | {'—' if ratio is None else f'{ratio:.3g}'} | {verdict_of(t, ratio, ef)} |")
        # The kernel's part (stime of the server; the floor thread's system time).
        es, fs = e.get("server_sys_cpu_us_per_delivery"), f.get("writer_sys_us_per_delivery")
        if es is not None and fs:
            lines.append(f"| … of it in the kernel | {fmt(es)} | {fmt(fs)} | {es / fs:.3g} |  |")
        lines.append("")
        bl = per.get("baseline", {}).get("median", {}).get("server_cpu_us_per_delivery")
        if bl and fl:
            kernel = (f" eventfeed's kernel time alone is {es / bl:.3g} of Node's CPU per delivery."
                      if es is not None else "")
            lines.append(f"Node: {fmt(bl)} µs per delivery, {bl / fl:.3g}× the floor; a fifth of Node is "
                         f"{bl / 5 / fl:.3g}× the floor.{kernel}")
            lines.append("")
        summary[case]["ratio_floor"] = {"server_cpu_us_per_delivery": ratio}
if compare:
    o, n = names["old"], names["new"]
    lines.append(f"Medians of the runs; {n} / {o} = {n}'s median / {o}'s median: below 1 is better for a figure "
                 "marked lower, above 1 for one marked higher. A ratio within the spread of the runs is no change. "
                 "Server CPU per unit of work comes from /proc/PID/stat (utime+stime) over the measured window.")
else:
    lines.append("Medians of the runs; ratio = the left column's median / the right column's median. "
                 "Server CPU per unit of work comes from /proc/PID/stat (utime+stime) over the measured window.")
text = "\n".join(lines)
with open(os.path.join(out, "summary.md"), "w") as f:
    f.write(text + "\n")
with open(os.path.join(out, "summary.json"), "w") as f:
    json.dump(summary, f, indent=1)
print(text)
PY
}

if [[ -n "$REPORT" ]]; then
  [[ -f "$REPORT/runs.tsv" ]] || die "$REPORT/runs.tsv not found"
  aggregate "$REPORT"
  exit 0
fi

# ---------------------------------------------------------------- cases

[[ -n "$REPEATS" ]] || REPEATS=$([[ $QUICK == 1 ]] && echo 1 || echo 3)
[[ "$REPEATS" =~ ^[1-9][0-9]*$ ]] || die "--repeats must be a positive integer"
if [[ ${#CASES[@]} -eq 0 ]]; then
  CASES=("${STANDARD_CASES[@]}" "${CLUSTER_CASES[@]}")
  [[ $BIG == 1 ]] && CASES+=(big)
else
  if [[ $BIG == 1 ]] && [[ " ${CASES[*]} " != *" big "* ]]; then CASES+=(big); fi
  if [[ $CLUSTER == 1 ]]; then
    for c in "${CLUSTER_CASES[@]}"; do [[ " ${CASES[*]} " == *" $c "* ]] || CASES+=("$c"); done
  fi
fi
for c in "${CASES[@]}"; do
  [[ " ${ALL_CASES[*]} " == *" $c "* ]] || die "unknown case '$c' (known: ${ALL_CASES[*]})"
done
# --compare: the two sides ("old" and "new" in file names and runs.tsv), their
# binaries and their names in the output; --servers may only add the baseline.
declare -A SIDE_BIN=() SIDE_LABEL=()
if [[ -n $COMPARE_OLD ]]; then
  [[ $SERVERS_SET == 0 ]] && SERVERS=""
  IFS=, read -r -a SERVER_LIST <<<"$SERVERS"
  for s in "${SERVER_LIST[@]}"; do
    [[ $s == baseline ]] || die "with --compare, --servers may only name baseline (both eventfeed builds always run)"
  done
  IFS=, read -r -a l <<<"$LABELS"
  [[ ${#l[@]} == 2 && -n ${l[0]} && -n ${l[1]} && ${l[0]} != "${l[1]}" ]] || die "--labels needs two different names: OLD,NEW"
  for x in "${l[@]}"; do
    [[ $x =~ ^[A-Za-z0-9._+-]+$ && $x != baseline ]] || die "label '$x': letters, digits and ._+- only, not 'baseline'"
  done
  SIDE_LABEL=([old]=${l[0]} [new]=${l[1]})
  [[ -f $COMPARE_OLD && -x $COMPARE_OLD ]] || die "--compare $COMPARE_OLD: not an executable file"
  SIDE_BIN[old]=$(realpath "$COMPARE_OLD")
  if [[ -n $COMPARE_NEW ]]; then
    [[ -f $COMPARE_NEW && -x $COMPARE_NEW ]] || die "--new-bin $COMPARE_NEW: not an executable file"
    SIDE_BIN[new]=$(realpath "$COMPARE_NEW")
  else
    SIDE_BIN[new]=$EVENTFEED_BIN # checked after the build
  fi
else
  [[ -z $COMPARE_NEW ]] || die "--new-bin needs --compare OLD_BIN"
  [[ $LABELS == old,new ]] || die "--labels needs --compare OLD_BIN"
  IFS=, read -r -a SERVER_LIST <<<"$SERVERS"
  for s in "${SERVER_LIST[@]}"; do
    [[ $s == eventfeed || $s == baseline ]] || die "unknown server '$s' (eventfeed, baseline)"
  done
fi

# case_args CASE: the loadgen subcommand and its arguments.
case_args() {
  if [[ $QUICK == 1 ]]; then
    case "$1" in
      fanout_200) echo "fanout --tenants 4 --clients 10 --rate 100 --duration 2 --publish rest --drain 1" ;;
      fanout_max) echo "fanout --tenants 4 --clients 10 --rate max --duration 2 --publish mixed --drain 1" ;;
      connect_10k) echo "connect --clients 500 --rate 500 --hold 1" ;;
      rest) echo "rest --connections 8 --duration 2 --limit 50" ;;
      polling_200) echo "fanout --tenants 4 --clients 10 --rate 100 --duration 2 --publish rest --drain 1 --transport polling" ;;
      sse_200) echo "fanout --tenants 4 --clients 10 --rate 100 --duration 2 --publish rest --drain 1 --transport sse" ;;
      storm_recover) echo "storm --tenants 10 --clients 20 --seed 100 --missed 20 --spread 1 --timeout 30" ;;
      storm_snapshot) echo "storm --tenants 10 --clients 20 --seed 100 --missed 20 --spread 1 --timeout 30 --mode snapshot" ;;
      tenants) echo "tenants --tenants 40 --small 4 --events 100 --probes 100 --connect-rate 500" ;;
      big) echo "connect --clients 2000 --rate 1000 --hold 1 --source-ips 2" ;;
      cluster_200) echo "fanout --tenants 4 --clients 10 --rate 100 --duration 2 --publish rest --drain 1" ;;
      cluster_max) echo "fanout --tenants 4 --clients 10 --rate max --duration 2 --publish mixed --drain 1" ;;
    esac
  else
    case "$1" in
      fanout_200) echo "fanout --tenants 10 --clients 50 --rate 200 --duration 10 --publish rest" ;;
      fanout_max) echo "fanout --tenants 10 --clients 50 --rate max --duration 10 --publish mixed" ;;
      connect_10k) echo "connect --clients 10000 --rate 1000 --hold 5" ;;
      rest) echo "rest --connections 64 --duration 10 --limit 50" ;;
      polling_200) echo "fanout --tenants 10 --clients 50 --rate 200 --duration 10 --publish rest --transport polling" ;;
      sse_200) echo "fanout --tenants 10 --clients 50 --rate 200 --duration 10 --publish rest --transport sse" ;;
      storm_recover) echo "storm --tenants 100 --clients 100 --seed 500 --missed 20 --spread 2 --timeout 30 --connect-rate 500" ;;
      storm_snapshot) echo "storm --tenants 100 --clients 100 --seed 500 --missed 20 --spread 2 --timeout 30 --connect-rate 500 --mode snapshot" ;;
      tenants) echo "tenants --tenants 2000 --small 10 --events 500 --probes 1000 --connect-rate 500" ;;
      big) echo "connect --clients 100000 --rate 2000 --hold 10 --source-ips 8" ;;
      cluster_200) echo "fanout --tenants 10 --clients 50 --rate 200 --duration 10 --publish rest" ;;
      cluster_max) echo "fanout --tenants 10 --clients 50 --rate max --duration 10 --publish mixed" ;;
    esac
  fi
}

# case_servers CASE: which servers run it.
case_servers() {
  local s
  if [[ -n $COMPARE_OLD ]]; then
    # Both builds (two instances each, on one Redis, in the cluster cases), then
    # the baseline if asked, in the cases it runs.
    echo old
    echo new
    if [[ $1 != big && $1 != cluster_* && " ${SERVER_LIST[*]} " == *" baseline "* ]]; then echo baseline; fi
    return
  fi
  if [[ $1 == cluster_* ]]; then
    # One instance, then two instances on one Redis, then two Node instances
    # on one Redis (@socket.io/redis-adapter): side by side.
    echo eventfeed
    echo cluster
    if [[ " ${SERVER_LIST[*]} " == *" baseline "* ]]; then echo baseline_cluster; fi
    return
  fi
  for s in "${SERVER_LIST[@]}"; do
    # The Node baseline has no event stream; 'big' is eventfeed's alone.
    if [[ ($1 == big || $1 == sse_200) && $s != eventfeed ]]; then continue; fi
    echo "$s"
  done
  # The machine's floor at the fan-out cases' shape (no server), after the servers.
  if [[ $1 == fanout_200 || $1 == fanout_max || $1 == polling_200 ]] && [[ " ${SERVER_LIST[*]} " == *" eventfeed "* ]]; then echo floor; fi
}

# case_env CASE SERVER: extra environment of the server for this case.
case_env() {
  case "$1:$2" in
    # Node's connection state recovery is off unless asked (eventfeed's is on by default).
    storm_recover:baseline) echo "NB_BACKEND_RECOVERY_WINDOW=120000" ;;
    # A million stored events need more than Node's default heap.
    tenants:baseline) echo "NODE_OPTIONS=--max-old-space-size=8192" ;;
  esac
}

# floor_args CASE REP: the floor's arguments at the case's shape. At the maximum
# rate: the events/s and the frames per write() eventfeed achieved in this repeat.
floor_args() {
  local a=(--writer-cpu "$SERVER_CPU" --reader-cpu "$LOADGEN_CPU" --frame-bytes "$FRAME_BYTES")
  local q=$([[ $QUICK == 1 ]] && echo "--sockets 40 --groups 4 --seconds 2" || echo "--sockets 500 --groups 10 --seconds 5")
  if [[ $1 == fanout_200 ]]; then
    echo "floor $q --rate $([[ $QUICK == 1 ]] && echo 100 || echo 200) ${a[*]}"
    return
  fi
  if [[ $1 == polling_200 ]]; then
    # Each socket's answer, then the long poll that follows it read back.
    a=(--writer-cpu "$SERVER_CPU" --reader-cpu "$LOADGEN_CPU" --frame-bytes "$POLL_ANSWER_BYTES" --answer-bytes "$POLL_REQUEST_BYTES")
    echo "floor $q --rate $([[ $QUICK == 1 ]] && echo 100 || echo 200) ${a[*]}"
    return
  fi
  local shape
  shape=$(python3 - "$OUT/$1.eventfeed.$2.out" <<'PY' || true
import json, sys
try:
    r = json.loads(open(sys.argv[1]).read().splitlines()[-1])
    fpw = r.get("deliveries_per_write") or 1
    print(f"--rate {max(1.0, r['events_per_sec']):.0f} --frames-per-write {max(1.0, fpw):.2f}")
except Exception:
    pass
PY
)
  [[ -n $shape ]] || return 1
  echo "floor $q $shape ${a[*]}"
}

# ---------------------------------------------------------------- environment

# As many open files as allowed (10,000 clients need 10,000+ sockets on each side).
HARD=$(ulimit -Hn)
if [[ $HARD != unlimited ]]; then
  NR_OPEN=$(cat /proc/sys/fs/nr_open 2>/dev/null || echo "$HARD")
  ulimit -Hn "$NR_OPEN" 2>/dev/null || true
  HARD=$(ulimit -Hn)
fi
ulimit -n "$HARD" 2>/dev/null || true
FD_LIMIT=$(ulimit -n)
need_fds() { # need_fds N CASE
  if [[ $FD_LIMIT != unlimited ]] && (( FD_LIMIT < $1 )); then
    die "case $2 needs about $1 open files per process; the limit here is $FD_LIMIT (hard $(ulimit -Hn)). Raise it (root, or /etc/security/limits.conf) and retry."
  fi
}
for c in "${CASES[@]}"; do
  read -r -a a <<<"$(case_args "$c")"
  if [[ ${a[0]} == connect ]]; then
    for ((i = 0; i < ${#a[@]}; i++)); do
      [[ ${a[$i]} == --clients ]] && need_fds $((a[i + 1] + 1000)) "$c"
    done
  fi
done

NCPU=$(nproc)
(( NCPU >= 2 )) || echo "warning: $NCPU CPU(s): the server and the generator will share a core" >&2
taskset -c "$SERVER_CPU" true 2>/dev/null || die "cannot pin to core $SERVER_CPU (set SERVER_CPU)"
taskset -c "$LOADGEN_CPU" true 2>/dev/null || die "cannot pin to core $LOADGEN_CPU (set LOADGEN_CPU)"
command -v python3 >/dev/null || die "python3 is needed to aggregate the results"
if [[ " ${CASES[*]} " == *" cluster_"* ]]; then
  command -v redis-server >/dev/null || die "the cluster cases need redis-server: apt-get install redis-server"
fi

# ---------------------------------------------------------------- build

if [[ $BUILD == 1 ]]; then
  # Both packages in every mode (also with --new-bin): built alone, the generator
  # gets other dependency features, so a binary other than a normal run's.
  log "building eventfeed and eventfeed-loadgen (release)"
  (cd "$ROOT" && cargo build --release -p eventfeed -p eventfeed-loadgen)
  if [[ " ${SERVER_LIST[*]} " == *" baseline "* ]]; then
    log "installing the baseline (npm ci)"
    (cd "$BASELINE_DIR" && npm ci --no-audit --no-fund --loglevel=error)
  fi
fi
if [[ -n $COMPARE_OLD ]]; then
  [[ -x ${SIDE_BIN[new]} ]] || die "${SIDE_BIN[new]} not built"
else
  [[ -x $EVENTFEED_BIN ]] || die "$EVENTFEED_BIN not built"
fi
[[ -x $LOADGEN_BIN ]] || die "$LOADGEN_BIN not built"
if [[ " ${SERVER_LIST[*]} " == *" baseline "* ]]; then
  [[ -d $BASELINE_DIR/node_modules/socket.io ]] || die "bench/baseline/node_modules missing (run without --no-build)"
fi

OUT="${OUT:-$BENCH/results/$(date -u +%Y%m%dT%H%M%SZ)}"
mkdir -p "$OUT"
: >"$OUT/runs.tsv"
{
  echo "date:      $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "commit:    $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')$(git -C "$ROOT" diff --quiet HEAD 2>/dev/null || echo ' (with uncommitted changes)')"
  echo "cpu:       $(lscpu 2>/dev/null | sed -n 's/^Model name: *//p' | head -1), $NCPU core(s); server on core $SERVER_CPU, generator on core $LOADGEN_CPU"
  echo "kernel:    $(uname -sr)"
  if [[ -n $COMPARE_OLD ]]; then
    # Each side's binary: its path, the start of its sha256 and its modification time.
    for side in old new; do
      printf '%-10s %s (sha256 %s, modified %s)\n' "${SIDE_LABEL[$side]}:" "${SIDE_BIN[$side]}" \
        "$(sha256sum "${SIDE_BIN[$side]}" | cut -c1-12)" "$(date -u -r "${SIDE_BIN[$side]}" +%Y-%m-%dT%H:%M:%SZ)"
    done
    cmp -s "${SIDE_BIN[old]}" "${SIDE_BIN[new]}" && echo "           (the two binaries are identical)"
  fi
  [[ -n $COMPARE_OLD && " ${SERVER_LIST[*]} " != *" baseline "* ]] ||
  echo "node:      $($NODE --version), socket.io $($NODE -p 'require("'"$BASELINE_DIR"'/node_modules/socket.io/package.json").version' 2>/dev/null || echo '?'), bufferutil $(cd "$BASELINE_DIR" && $NODE -e 'require("bufferutil");console.log("native")' 2>/dev/null || echo 'absent')"
  echo "open files: $FD_LIMIT"
  echo "mode:      $([[ $QUICK == 1 ]] && echo 'QUICK (small sizes: not comparable to the standard figures)' || echo standard), $REPEATS repeat(s)"
} >"$OUT/machine.txt"
# The two sides of --compare, for the aggregation (and --report): side, label, binary.
if [[ -n $COMPARE_OLD ]]; then
  for side in old new; do
    printf '%s\t%s\t%s\n' "$side" "${SIDE_LABEL[$side]}" "${SIDE_BIN[$side]}"
  done >"$OUT/compare.tsv"
fi
# A quiet machine first: the build leaves dirty pages the kernel writes back
# over the next seconds (and a finished job may still wind down), which cost
# the first case CPU and latency. Flush them, then wait (at most 60 s) for a
# second in which neither core is more than 3 % busy.
log "waiting for a quiet machine (sync, then both cores idle for a second)"
sync
SERVER_CPU=$SERVER_CPU LOADGEN_CPU=$LOADGEN_CPU python3 - >>"$OUT/machine.txt" <<'PY'
import os, time
cpus = ["cpu" + os.environ["SERVER_CPU"], "cpu" + os.environ["LOADGEN_CPU"]]
def sample():
    d = {}
    for line in open("/proc/stat"):
        f = line.split()
        if f[0] in cpus:
            v = [int(x) for x in f[1:9]]  # user nice system idle iowait irq softirq steal
            d[f[0]] = (v[3] + v[4], sum(v))
    return d
start = time.monotonic()
while True:
    a = sample()
    time.sleep(1)
    b = sample()
    busy = max(1 - (b[c][0] - a[c][0]) / max(1, b[c][1] - a[c][1]) for c in cpus)
    waited = time.monotonic() - start
    if busy <= 0.03 or waited >= 60:
        state = "quiet" if busy <= 0.03 else "NOT quiet"
        print(f"settle:    {state} after {waited:.0f} s (busiest core {busy * 100:.0f} % busy in the last second)")
        break
PY
# steal_ms CPU: the time the hypervisor gave that core to something else, in ms.
steal_ms() {
  awk -v c="cpu$1" -v hz="$(getconf CLK_TCK)" '$1 == c { print int($9 * 1000 / hz) }' /proc/stat
}
# The machine's own loopback floor (no server): the wake-up latency of two idle
# cores and the kernel CPU of one small send at the fan-out rate (bench/floor.py).
if [[ " ${CASES[*]} " == *" fanout_200 "* ]]; then
  log "measuring the loopback floor (bench/floor.py)"
  SERVER_CPU=$SERVER_CPU LOADGEN_CPU=$LOADGEN_CPU python3 "$BENCH/floor.py" --seconds "$([[ $QUICK == 1 ]] && echo 1 || echo 4)" --loadgen "$LOADGEN_BIN" \
    | sed 's/^/floor:     /' >>"$OUT/machine.txt" || echo "floor:     (bench/floor.py failed)" >>"$OUT/machine.txt"
fi

# ---------------------------------------------------------------- servers

SERVER_PID=""
SERVER_PIDS=""  # SERVER_PID and EXTRA_PIDS, comma-separated: the processes whose CPU counts
SERVER_BIN=$EVENTFEED_BIN # the eventfeed binary start_eventfeed runs (per side with --compare)
LOADGEN_PID=""
EXTRA_PIDS=()   # the cluster case's instance B and redis-server
PUBLISH_ARGS=() # the cluster case's --publish-url

cleanup() {
  if [[ -n $LOADGEN_PID ]]; then
    kill -TERM "$LOADGEN_PID" 2>/dev/null || true # timeout(1) passes it on to the generator
    wait "$LOADGEN_PID" 2>/dev/null || true
  fi
  if [[ -n $SERVER_PID || ${#EXTRA_PIDS[@]} -gt 0 ]]; then stop_server; fi
}
trap cleanup EXIT
trap 'echo "run.sh: interrupted" >&2; exit 130' INT TERM

# start_eventfeed LOGFILE [ENV...]: an eventfeed instance on a free port, pinned; sets SERVER_PID.
start_eventfeed() {
  local logf=$1
  shift
  env NB_BACKEND_HOST=127.0.0.1 NB_BACKEND_PORT=0 NB_BACKEND_TOKENS_FILE="$TOKENS" \
    NB_BACKEND_RATE_LIMIT=off NB_BACKEND_TENANT_RATE_LIMIT=off NB_BACKEND_MAX_QUEUE=4096 \
    NB_BACKEND_MAX_CONNECTIONS=1000000 NB_BACKEND_MAX_TENANT_CONNECTIONS=1000000 \
    NB_BACKEND_LOG="warn,eventfeed=info" NO_COLOR=1 "$@" \
    taskset -c "$SERVER_CPU" "$SERVER_BIN" >"$logf" 2>&1 &
  SERVER_PID=$!
}

# start_node LOGFILE [ENV...]: a Node baseline instance on a free port, pinned; sets SERVER_PID.
start_node() {
  local logf=$1
  shift
  env NB_BACKEND_HOST=127.0.0.1 NB_BACKEND_PORT=0 NB_BACKEND_TOKENS_FILE="$TOKENS" "$@" \
    taskset -c "$SERVER_CPU" "$NODE" "$BASELINE_DIR/server.mjs" >"$logf" 2>&1 &
  SERVER_PID=$!
}

# start_server KIND LOGFILE [ENV...]: starts it fresh on a free port, pinned, with
# the extra environment; sets SERVER_PID, PORT and SERVER_PIDS (every process whose
# CPU counts). For "cluster" (eventfeed) and "baseline_cluster" (Node with
# @socket.io/redis-adapter): redis-server, instance B for the publishers, then
# instance A for the receivers, all on the server core; SERVER_PID and PORT are A's.
start_server() {
  local kind=$1 logf=$2
  shift 2
  PUBLISH_ARGS=()
  if [[ $kind == cluster || $kind == baseline_cluster ]]; then
    local rport
    rport=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
    # In memory (no AOF): the figures are the servers', not the disk's.
    taskset -c "$SERVER_CPU" redis-server --port "$rport" --bind 127.0.0.1 --save "" --appendonly no \
      --protected-mode no >"$logf.redis" 2>&1 &
    EXTRA_PIDS+=($!)
    local deadline=$((SECONDS + 10))
    until redis-cli -p "$rport" ping >/dev/null 2>&1 || python3 -c "import socket; socket.create_connection(('127.0.0.1',$rport),0.2)" 2>/dev/null; do
      (( SECONDS < deadline )) || die "redis-server did not start (log: $logf.redis)"
      sleep 0.05
    done
    local start=start_eventfeed
    [[ $kind == baseline_cluster ]] && start=start_node
    $start "$logf.b" NB_BACKEND_REDIS_URL="redis://127.0.0.1:$rport" "$@"
    wait_listening "$logf.b" "$kind instance B"
    EXTRA_PIDS+=("$SERVER_PID")
    PUBLISH_ARGS=(--publish-url "http://127.0.0.1:$PORT")
    $start "$logf" NB_BACKEND_REDIS_URL="redis://127.0.0.1:$rport" "$@"
    wait_listening "$logf" "$kind instance A"
  elif [[ $kind == eventfeed ]]; then
    start_eventfeed "$logf" "$@"
    wait_listening "$logf" "$kind"
  else
    start_node "$logf" "$@"
    wait_listening "$logf" "$kind"
  fi
  SERVER_PIDS=$(IFS=,; echo "$SERVER_PID${EXTRA_PIDS[*]:+,${EXTRA_PIDS[*]}}")
}

# wait_listening LOGFILE KIND: waits (bounded) for SERVER_PID's listening line; sets PORT.
wait_listening() {
  local logf=$1 kind=$2
  PORT=""
  local deadline=$((SECONDS + 30)) line
  while [[ -z $PORT ]]; do
    if ! kill -0 "$SERVER_PID" 2>/dev/null; then
      wait "$SERVER_PID" 2>/dev/null || true
      SERVER_PID=""
      tail -n 20 "$logf" >&2
      die "$kind exited before listening (log: $logf)"
    fi
    (( SECONDS < deadline )) || die "$kind did not print its listening line within 30 s (log: $logf)"
    line=$(sed 's/\x1b\[[0-9;]*m//g' "$logf" 2>/dev/null | grep -m1 'listening' || true)
    if [[ -n $line ]]; then
      PORT=$(sed -nE 's/.*listening.*[^0-9]([0-9]{1,3}(\.[0-9]{1,3}){3}):([0-9]+).*/\3/p' <<<"$line")
      [[ -n $PORT ]] || die "$kind: no port in its listening line: $line"
    else
      sleep 0.05
    fi
  done
}

# stop_server: SIGTERM, up to 15 s to exit, then SIGKILL (the cluster's other processes too).
stop_server() {
  local pid=$SERVER_PID extra
  SERVER_PID=""
  for extra in "${EXTRA_PIDS[@]}"; do
    kill -TERM "$extra" 2>/dev/null || true
  done
  for extra in "${EXTRA_PIDS[@]}"; do
    wait "$extra" 2>/dev/null || true
  done
  EXTRA_PIDS=()
  [[ -n $pid ]] || return 0
  kill -TERM "$pid" 2>/dev/null || true
  local deadline=$((SECONDS + 15))
  while kill -0 "$pid" 2>/dev/null && (( SECONDS < deadline )); do sleep 0.1; done
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}

# ---------------------------------------------------------------- runs

# perf, to count the server's write calls at the maximum rate (optional: without
# it the floor of fanout_max takes one frame per write).
WRITE_EVENTS="syscalls:sys_enter_write,syscalls:sys_enter_writev,syscalls:sys_enter_sendto,syscalls:sys_enter_sendmsg"
PERF=$(command -v perf || true)
if [[ -n $PERF ]] && ! "$PERF" stat -e "$WRITE_EVENTS" true >/dev/null 2>&1; then
  echo "   note: perf cannot count system calls here: fanout_max's floor assumes one frame per write" >&2
  PERF=""
fi

# add_write_counts RESULT PERF_CSV: adds the server's write calls and deliveries per
# write to the result's JSON line.
add_write_counts() {
  python3 - "$1" "$2" <<'PY' || true
import json, sys
out, csv = sys.argv[1], sys.argv[2]
lines = open(out).read().splitlines()
r = json.loads(lines[-1])
calls = 0
for line in open(csv):
    f = line.split(",")
    if len(f) > 2 and f[2].startswith("syscalls:") and f[0].strip().isdigit():
        calls += int(f[0])
if calls and r.get("deliveries"):
    r["server_write_calls"] = calls
    r["deliveries_per_write"] = round(r["deliveries"] / calls, 2)
lines[-1] = json.dumps(r)
open(out, "w").write("\n".join(lines) + "\n")
PY
}

log "results in $OUT"
sed 's/^/   /' "$OUT/machine.txt"
STEAL0=("$(steal_ms "$SERVER_CPU")" "$(steal_ms "$LOADGEN_CPU")")
for c in "${CASES[@]}"; do
  read -r -a ARGS <<<"$(case_args "$c")"
  mapfile -t SERVERS_FOR_CASE < <(case_servers "$c")
  [[ ${#SERVERS_FOR_CASE[@]} -gt 0 ]] || continue
  [[ $c == big || $c == tenants ]] && BOUND=1800 || BOUND=600
  for ((rep = 1; rep <= REPEATS; rep++)); do
    ORDER=("${SERVERS_FOR_CASE[@]}")
    if [[ -n $COMPARE_OLD && $((rep % 2)) == 0 && ${ORDER[0]} == old && ${ORDER[1]:-} == new ]]; then
      # --compare: every other repeat runs new before old, so whatever the
      # first run of a pair gains or loses (a cooler cache, a quieter host)
      # falls on each side alike.
      ORDER=(new old "${ORDER[@]:2}")
    fi
    for s in "${ORDER[@]}"; do
      base="$c.$s.$rep"
      kind=$s
      name=${SIDE_LABEL[$s]:-$s}
      if [[ $s == floor ]]; then
        # No server: the floor pins its own threads (writer on the server's core,
        # readers on the generator's).
        rc=0
        if FLOOR_ARGS=$(floor_args "$c" "$rep"); then
          read -r -a FARGS <<<"$FLOOR_ARGS"
          log "$c [floor, run $rep/$REPEATS]: eventfeed-loadgen ${FARGS[*]}"
          timeout --kill-after=10 120 "$LOADGEN_BIN" "${FARGS[@]}" --json >"$OUT/$base.out" 2>"$OUT/$base.err" &
          LOADGEN_PID=$!
          wait "$LOADGEN_PID" || rc=$?
          LOADGEN_PID=""
        else
          echo "   warning: no eventfeed result of $c run $rep to take the floor's shape from" >&2
          : >"$OUT/$base.out"
          rc=98
        fi
        sed '$d' "$OUT/$base.out" | sed 's/^/   /'
        printf '%s\t%s\t%s\t%s\t%s\n' "$c" "$s" "$rep" "$rc" "$base.out" >>"$OUT/runs.tsv"
        continue
      fi
      if [[ $s == old || $s == new ]]; then
        # A side of --compare: its own binary, as one instance or as the cluster.
        SERVER_BIN=${SIDE_BIN[$s]}
        [[ $c == cluster_* ]] && kind=cluster || kind=eventfeed
      else
        SERVER_BIN=$EVENTFEED_BIN
      fi
      read -r -a CENV <<<"$(case_env "$c" "$kind")"
      start_server "$kind" "$OUT/$base.server.log" "${CENV[@]}"
      log "$c [$name, run $rep/$REPEATS] pids $SERVER_PIDS port $PORT: eventfeed-loadgen ${ARGS[*]}"
      rc=0
      # At the maximum rate, how many deliveries each write of the server carries
      # (the floor's shape): its write-family system calls, counted by perf on the
      # syscall tracepoints (a small cost to the server: one counter per call).
      PERF_PID=""
      if [[ $c == fanout_max && -n $PERF ]]; then
        "$PERF" stat -x, -o "$OUT/$base.writes" -e "$WRITE_EVENTS" -p "$SERVER_PID" >/dev/null 2>&1 &
        PERF_PID=$!
      fi
      # In the background and waited for, so an interrupt is handled at once.
      taskset -c "$LOADGEN_CPU" timeout --kill-after=10 "$BOUND" \
        "$LOADGEN_BIN" "${ARGS[@]}" "${PUBLISH_ARGS[@]}" --url "http://127.0.0.1:$PORT" --server-pid "$SERVER_PIDS" --json \
        >"$OUT/$base.out" 2>"$OUT/$base.err" &
      LOADGEN_PID=$!
      wait "$LOADGEN_PID" || rc=$?
      LOADGEN_PID=""
      if [[ -n $PERF_PID ]]; then
        kill -INT "$PERF_PID" 2>/dev/null || true
        wait "$PERF_PID" 2>/dev/null || true
        add_write_counts "$OUT/$base.out" "$OUT/$base.writes"
      fi
      for p in ${SERVER_PIDS//,/ }; do
        if ! kill -0 "$p" 2>/dev/null; then
          echo "   warning: a $name server process ($p) died during the run (log: $OUT/$base.server.log*)" >&2
          if [[ $rc == 0 ]]; then rc=99; fi
        fi
      done
      stop_server
      # Everything but the JSON line, indented.
      sed '$d' "$OUT/$base.out" | sed 's/^/   /'
      if [[ $rc != 0 ]]; then
        echo "   warning: loadgen exit status $rc; stderr:" >&2
        tail -n 5 "$OUT/$base.err" | sed 's/^/     /' >&2
      fi
      printf '%s\t%s\t%s\t%s\t%s\n' "$c" "$s" "$rep" "$rc" "$base.out" >>"$OUT/runs.tsv"
    done
  done
done

echo "steal:     $(($(steal_ms "$SERVER_CPU") - STEAL0[0])) ms on the server core, $(($(steal_ms "$LOADGEN_CPU") - STEAL0[1])) ms on the generator core during the runs (CPU time the hypervisor gave to others)" >>"$OUT/machine.txt"
echo
log "summary ($OUT/summary.md)"
aggregate "$OUT"
