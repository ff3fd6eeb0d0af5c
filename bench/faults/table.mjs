// Prints the scorecard table of a bench/faults.sh results directory
// (one <scenario>-<server>.json per run) as Markdown.
//
//   node table.mjs bench/results/faults-YYYYMMDD-HHMMSS            one table per scenario
//   node table.mjs bench/results/faults-YYYYMMDD-HHMMSS --compact  one table, a row per scenario

import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";

const dir = process.argv[2];
const compact = process.argv.includes("--compact");
if (!dir) {
  console.error("usage: node table.mjs RESULTS_DIR");
  process.exit(2);
}
const ORDER = ["jitter", "polling", "deploy", "crash", "redis", "pubcuts", "beyond"];
const cards = new Map();
for (const f of readdirSync(dir).filter((f) => f.endsWith(".json"))) {
  const c = JSON.parse(readFileSync(join(dir, f), "utf8"));
  cards.set(`${c.scenario}/${c.server}`, c);
}
const scenarios = ORDER.filter((s) => [...cards.keys()].some((k) => k.startsWith(`${s}/`)));
const servers = ["eventfeed", "node"].filter((s) => [...cards.keys()].some((k) => k.endsWith(`/${s}`)));
const label = { eventfeed: "eventfeed", node: "Node" };

const what = (c) => {
  const t = c.transports.join("/");
  const faults = {
    jitter: "every connection cut at 2–8 s",
    polling: "connections cut at random, one per client every 5 s",
    deploy: "each instance SIGTERM + restart",
    crash: "1 instance SIGKILL, back after 5 s",
    redis: "Redis SIGKILL, back after 2 s",
    pubcuts: "publisher requests/answers cut",
    beyond: "subscribers cut off 8 s; buffer 100, recovery window 5 s",
  }[c.scenario];
  return `${c.clients} ${t} subs, ${c.instances} inst., ${c.rate} ev/s × ${c.duration} s; ${faults}`;
};
const ms = (x) => (x === null || x === undefined ? "–" : `${x}`);
const rows = [
  ["delivered exactly once", (c) => `${(c.subscribers.exactlyOnce * 100).toFixed(2)} %`],
  ["lost (of which not announced)", (c) => `${c.subscribers.lost} (${c.subscribers.silentlyLost})`],
  ["duplicated", (c) => `${c.subscribers.duplicated}`],
  ["reordered", (c) => `${c.subscribers.reordered}`],
  ["reconnects: recovered / replayed / snapshots", (c) => `${c.subscribers.reconnects}: ${c.subscribers.recovered} / ${c.subscribers.replays} / ${c.subscribers.snapshots}`],
  ["reconnect → caught up p50 / p99, ms", (c) => `${ms(c.subscribers.catchUpMs.p50)} / ${ms(c.subscribers.catchUpMs.p99)}`],
  ["cut → caught up p50 / p99, ms", (c) => `${ms(c.subscribers.cutToCaughtUpMs?.p50)} / ${ms(c.subscribers.cutToCaughtUpMs?.p99)}`],
  ["writes acknowledged / stored", (c) => `${c.publishers.acknowledged} / ${c.publishers.stored}`],
  ["acknowledged writes missing", (c) => `${c.publishers.ackedMissingFromStore}`],
  ["duplicate writes", (c) => `${c.publishers.duplicateWrites}`],
  ["guarantees held", (c) => (c.held ? "**yes**" : "no")],
];

if (compact) {
  // Both servers in each cell: "eventfeed · Node".
  const both = (s, f) => servers.map((x) => (cards.has(`${s}/${x}`) ? f(cards.get(`${s}/${x}`)) : "–")).join(" · ");
  const subs = (c) => `${(c.subscribers.exactlyOnce * 100).toFixed(c.subscribers.exactlyOnce === 1 ? 0 : 1)} %`;
  console.log(`Each cell: ${servers.map((x) => label[x]).join(" · ")}.\n`);
  console.log(`| scenario | delivered exactly once | lost (not announced) | duplicated | reordered | acknowledged writes lost | writes created twice | cut → caught up p50/p99, ms |`);
  console.log(`| --- | --- | --- | --- | --- | --- | --- | --- |`);
  for (const s of scenarios) {
    const any = cards.get(`${s}/${servers[0]}`) ?? cards.get(`${s}/${servers[1]}`);
    console.log(
      `| **${s}**: ${what(any)} | ${both(s, subs)} | ${both(s, (c) => `${c.subscribers.lost} (${c.subscribers.silentlyLost})`)} | ${both(s, (c) => c.subscribers.duplicated)} | ${both(s, (c) => c.subscribers.reordered)} | ${both(s, (c) => (s === "beyond" ? "(evicted)" : c.publishers.ackedMissingFromStore))} | ${both(s, (c) => c.publishers.duplicateWrites)} | ${both(s, (c) => (c.subscribers.cutToCaughtUpMs?.p50 == null ? "–" : `${c.subscribers.cutToCaughtUpMs.p50}/${c.subscribers.cutToCaughtUpMs.p99}`))} |`,
    );
  }
  process.exit(0);
}

for (const s of scenarios) {
  const any = cards.get(`${s}/${servers[0]}`) ?? cards.get(`${s}/${servers[1]}`);
  console.log(`\n**${s}** — ${what(any)}\n`);
  console.log(`| | ${servers.map((x) => label[x]).join(" | ")} |`);
  console.log(`| --- | ${servers.map(() => "---").join(" | ")} |`);
  for (const [name, f] of rows) {
    console.log(`| ${name} | ${servers.map((x) => (cards.has(`${s}/${x}`) ? f(cards.get(`${s}/${x}`)) : "–")).join(" | ")} |`);
  }
}
