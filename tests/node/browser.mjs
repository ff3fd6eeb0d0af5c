// The demo web page (demo/index.html, served by demo/serve.mjs with the
// official client bundle) in a real browser: Debian's Chromium, headless,
// driven over the DevTools protocol by playwright-core (no browser download).
//
//   node browser.mjs --bin PATH_TO_EVENTFEED --shots DIR
//
// Starts the eventfeed binary (demo tokens; the page's origin allowed), two
// copies of serve.mjs (one on an allowed origin, one on an origin that is
// not), and a TCP proxy for the cut. Each case saves a screenshot in DIR.
// CHROMIUM may name the browser (default /usr/bin/chromium).

import { spawn } from "node:child_process";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { check, finish, rest, until } from "./harness.mjs";
import { args, launchChromium, shotsDir } from "./kit.mjs";
import { Instance } from "../../bench/faults/servers.mjs";
import { FaultProxy } from "../../bench/faults/proxy.mjs";

const HERE = dirname(fileURLToPath(import.meta.url));
const DEMO = join(HERE, "..", "..", "demo");
const shots = shotsDir();

const A = { tenant: "company_a", token: "token_admin_a" };
const B = { tenant: "company_b", token: "token_admin_b" };

/** Starts demo/serve.mjs on a free port; resolves with its origin and process. */
function servePage() {
  return new Promise((res, rej) => {
    const child = spawn(process.execPath, ["serve.mjs"], { cwd: DEMO, env: { ...process.env, PORT: "0", NB_BACKEND_JWT_SECRET: "" }, stdio: ["ignore", "pipe", "inherit"] });
    let out = "";
    child.stdout.on("data", (d) => {
      out += d;
      const m = /demo page on (http:\/\/\S+)/.exec(out);
      if (m) res({ origin: m[1], child });
    });
    child.on("exit", (code) => rej(new Error(`serve.mjs exited (${code}): ${out}`)));
  });
}

const allowed = await servePage();
const other = await servePage();
const server = new Instance({
  kind: "eventfeed",
  bin: args.bin,
  name: "eventfeed",
  env: { NB_BACKEND_ALLOWED_ORIGINS: allowed.origin, NB_BACKEND_LOG: "info" },
});
await server.start();
const base = `http://${server.addr}`;
const proxy = new FaultProxy({ name: "page" });
await proxy.listen();
proxy.setBackends([server.addr]);

const browser = await launchChromium();

/** A page of the console in a fresh browser context (its own cookies and storage). */
async function open(who, { origin = allowed.origin, url = base } = {}) {
  const context = await browser.newContext({ viewport: { width: 1100, height: 900 } });
  const page = await context.newPage();
  const responses = [];
  page.on("response", (r) => responses.push({ url: r.url(), status: r.status() }));
  const failed = [];
  page.on("requestfailed", (r) => failed.push({ url: r.url(), error: r.failure()?.errorText }));
  // The DevTools network log at the protocol level: it has the status of a
  // cross-origin answer the page itself is not allowed to read.
  const raw = [];
  const urls = new Map();
  const cdp = await context.newCDPSession(page);
  cdp.on("Network.requestWillBeSent", (e) => urls.set(e.requestId, e.request.url));
  cdp.on("Network.responseReceivedExtraInfo", (e) => raw.push({ id: e.requestId, status: e.statusCode }));
  await cdp.send("Network.enable");
  const network = () => raw.map((r) => ({ url: urls.get(r.id) ?? "", status: r.status }));
  const q = new URLSearchParams({ url, tenant: who.tenant, token: who.token, mode: "fixed", connect: "" });
  await page.goto(`${origin}/?${q}`);
  return { page, context, responses, failed, network };
}

const state = (page) => page.evaluate(() => JSON.parse(JSON.stringify(window.feedConsole)));
const waitFor = (page, fn, arg, what, timeout = 10_000) =>
  page.waitForFunction(fn, arg, { timeout, polling: 50 }).catch((e) => {
    throw new Error(`waited for ${what}: ${e.message.split("\n")[0]}`);
  });
/** The events the page lists, newest first: [{seq, id, text}]. */
const listed = (page, list = "events") =>
  page.$$eval(`#${list} li[data-seq]`, (lis) => lis.map((li) => ({ seq: Number(li.dataset.seq), id: li.dataset.id, text: li.textContent })));
const shot = (page, name) => page.screenshot({ path: join(shots, `${name}.png`), fullPage: true });
const post = async (who, message) => {
  const r = await rest(base, "POST", "/api/events", who, { message });
  if (r.status !== 201) throw new Error(`POST answered ${r.status}: ${r.text}`);
  return r.json;
};

try {
  await check(
    "the page connects on polling, upgrades to websocket and shows its snapshot",
    async () => {
      for (let i = 1; i <= 3; i++) await post(A, `before the page ${i}`);
      const { page, context } = await open(A);
      await waitFor(page, () => window.feedConsole.connected && window.feedConsole.transport === "websocket", null, "the websocket upgrade");
      const s = await state(page);
      if (s.transports[0] !== "polling") throw new Error(`started on ${s.transports[0]}, not polling: ${s.transports}`);
      await waitFor(page, () => document.querySelectorAll("#events li[data-seq]").length >= 3, null, "the snapshot");
      const texts = (await listed(page)).map((e) => e.text);
      for (let i = 1; i <= 3; i++) if (!texts.some((t) => t.includes(`before the page ${i}`))) throw new Error(`snapshot lacks event ${i}: ${texts}`);
      if ((await page.textContent("#transport")) !== "websocket") throw new Error("the page does not show the transport");
      await shot(page, "1-connected");
      await context.close();
    },
    20_000,
  );

  await check(
    "two tenants in isolated contexts: A's posts reach every A page and never B's",
    async () => {
      const a1 = await open(A);
      const a2 = await open(A);
      const b = await open(B);
      for (const { page } of [a1, a2, b]) await waitFor(page, () => window.feedConsole.connected, null, "connected");
      // From A's form, as a person would.
      await a1.page.fill("#message", "posted from the A page");
      await a1.page.click("#post");
      // And from curl-style REST.
      await post(A, "posted over REST to A");
      for (const { page } of [a1, a2]) {
        for (const text of ["posted from the A page", "posted over REST to A"]) {
          await waitFor(page, (t) => [...document.querySelectorAll("#events li")].some((li) => li.textContent.includes(t)), text, `"${text}" on an A page`);
        }
      }
      // B gets its own event (so its stream is known to flow) and nothing of A's.
      await post(B, "B's own event");
      await waitFor(b.page, () => [...document.querySelectorAll("#events li")].some((li) => li.textContent.includes("B's own event")), null, "B's event");
      const bTexts = (await listed(b.page)).map((e) => e.text);
      if (bTexts.some((t) => t.includes("to A") || t.includes("A page") || t.includes("before the page"))) throw new Error(`B saw A's events: ${bTexts}`);
      await shot(a2.page, "2-tenant-a");
      await shot(b.page, "2-tenant-b");
      for (const x of [a1, a2, b]) await x.context.close();
    },
    25_000,
  );

  await check(
    "replay from a chosen event shows exactly the later ones",
    async () => {
      const posted = [];
      for (let i = 1; i <= 5; i++) posted.push(await post(A, `replay me ${i}`));
      const { page, context } = await open(A);
      await waitFor(page, (n) => document.querySelectorAll("#events li[data-seq]").length >= n, 5, "the events");
      const chosen = posted[1];
      await page.click(`#events li[data-id="${chosen.id}"] button.from`);
      await waitFor(page, () => window.feedConsole.replay !== null, null, "the replay");
      const s = await state(page);
      const want = posted.slice(2).map((e) => e.seq);
      if (JSON.stringify(s.replay.seqs) !== JSON.stringify(want) || s.replay.gap) {
        throw new Error(`replay after #${chosen.seq}: ${JSON.stringify(s.replay)}, want ${want}`);
      }
      const shown = (await listed(page, "replayed")).map((e) => e.seq).reverse();
      if (JSON.stringify(shown) !== JSON.stringify(want)) throw new Error(`the page lists ${shown}, want ${want}`);
      await shot(page, "3-replay");
      await context.close();
    },
    20_000,
  );

  await check(
    "a cut connection comes back recovered, with every event once and in order",
    async () => {
      const { page, context } = await open(A, { url: proxy.url });
      await waitFor(page, () => window.feedConsole.connected && window.feedConsole.transport === "websocket", null, "the websocket");
      const before = (await listed(page)).length;
      // The network path breaks (a reset); events are posted meanwhile.
      proxy.blackout(0);
      await waitFor(page, () => !window.feedConsole.connected, null, "the disconnect");
      const missed = [];
      for (let i = 1; i <= 5; i++) missed.push(await post(A, `while cut ${i}`));
      await waitFor(page, () => window.feedConsole.recovered >= 1, null, "the recovery", 15_000);
      await waitFor(page, (n) => document.querySelectorAll("#events li[data-seq]").length >= n, before + 5, "the missed events");
      const s = await state(page);
      if (s.duplicates !== 0) throw new Error(`${s.duplicates} event(s) delivered twice`);
      if (s.markers.length) throw new Error(`not a clean recovery: ${s.markers}`);
      const seqs = (await listed(page)).map((e) => e.seq);
      for (let i = 1; i < seqs.length; i++) if (seqs[i] >= seqs[i - 1]) throw new Error(`out of order: ${seqs}`);
      for (const e of missed) if (!seqs.includes(e.seq)) throw new Error(`missing #${e.seq}: ${seqs}`);
      if ((await page.textContent("#recovered")) !== "1") throw new Error("the page does not show the recovery");
      await shot(page, "4-recovered");
      await context.close();
    },
    30_000,
  );

  await check(
    "a page from an origin that is not allowed is refused, and says so",
    async () => {
      const { page, context, failed, network } = await open(A, { origin: other.origin });
      await waitFor(page, () => window.feedConsole.errors.some((e) => e.includes("connect_error")), null, "the connect_error");
      const s = await state(page);
      if (s.connected) throw new Error("connected from a refused origin");
      // The page cannot read why (the browser hides a refused cross-origin
      // answer): the DevTools network log and the server's audit line can.
      const statuses = network().filter((r) => r.url.includes("/socket.io/")).map((r) => r.status);
      console.log(`# refused origin: DevTools network log ${JSON.stringify(statuses)}; the page saw ${JSON.stringify(failed.map((f) => f.error))}`);
      if (!statuses.length || statuses.some((x) => x !== 403)) throw new Error(`the network log shows ${statuses}, not 403`);
      await until(() => server.tail.some((l) => l.includes("origin_not_allowed") && l.includes(other.origin)), "the audit line", 5000);
      const shown = await page.textContent("#status");
      if (!shown.includes("NB_BACKEND_ALLOWED_ORIGINS")) throw new Error(`the page does not say why: ${shown}`);
      await shot(page, "5-refused-origin");
      await context.close();
    },
    20_000,
  );
} finally {
  await browser.close();
  await proxy.close();
  await server.stop();
  allowed.child.kill();
  other.child.kill();
}
finish();
