// The official Socket.IO Admin UI (the static build in @socket.io/admin-ui's
// npm package, ui/dist, unmodified) in headless Chromium against eventfeed's
// /admin namespace: logged in with the configured user it shows the server
// and its sockets; read-only it offers no action; read-write, disconnecting a
// socket from the UI disconnects that client; a wrong password is refused.
// The UI's fonts and icons come from public CDNs this machine cannot reach:
// the icons are blank in the screenshots, nothing depends on them.
//
//   node admin-ui.mjs --bin PATH_TO_EVENTFEED --shots DIR

import { createServer } from "node:http";
import { readFile } from "node:fs/promises";
import { dirname, extname, join, normalize } from "node:path";
import { fileURLToPath } from "node:url";
import { io } from "socket.io-client";
import { check, finish, once, until } from "./harness.mjs";
import { ADMIN_PASSWORD, adminServer, launchChromium, shotsDir } from "./kit.mjs";

const HERE = dirname(fileURLToPath(import.meta.url));
const UI = join(HERE, "node_modules", "@socket.io", "admin-ui", "ui", "dist");
const shots = shotsDir();

// The UI's static build, served as its README says (any static server will do).
const TYPES = { ".html": "text/html", ".js": "text/javascript", ".css": "text/css", ".svg": "image/svg+xml", ".png": "image/png" };
const ui = createServer(async (req, res) => {
  const path = normalize(new URL(req.url, "http://x").pathname).replace(/^(\.\.[/\\])+/, "");
  const file = join(UI, path === "/" ? "index.html" : path);
  try {
    res.writeHead(200, { "Content-Type": TYPES[extname(file)] || "application/octet-stream" }).end(await readFile(file));
  } catch {
    res.writeHead(404).end();
  }
});
await new Promise((r) => ui.listen(0, "127.0.0.1", r));
const origin = `http://127.0.0.1:${ui.address().port}`;

// The UI is another origin: allow it, as an operator would.
const server = (readonly) => adminServer(readonly, { NB_BACKEND_ALLOWED_ORIGINS: origin });
const ro = await server(true);
const rw = await server(false);

const feedClient = async (inst, tenant, token) => {
  const c = io(`http://${inst.addr}/events`, { forceNew: true, auth: { tenantId: tenant, token } });
  await once(c, "connect");
  return c;
};

const browser = await launchChromium();

/** The UI in a fresh context, logged in (or not) to `inst` through its own connection form. */
async function login(inst, password = ADMIN_PASSWORD) {
  const context = await browser.newContext({ viewport: { width: 1280, height: 800 } });
  // No animations: screenshots show pages, not fades between them.
  await context.addInitScript(() => {
    document.addEventListener("DOMContentLoaded", () => {
      const style = document.createElement("style");
      style.textContent = "*, *::before, *::after { transition: none !important; animation: none !important; }";
      document.head.appendChild(style);
    });
  });
  const page = await context.newPage();
  await page.goto(`${origin}/`);
  await page.getByLabel("Server URL").fill(`http://${inst.addr}`);
  await page.getByLabel("Username").fill("ops");
  await page.getByLabel("Password").fill(password);
  await page.getByRole("button", { name: /connect/i }).click();
  return { page, context };
}
const connected = (page) =>
  page.waitForFunction(() => /connected/i.test(document.querySelector("header")?.textContent ?? "") && !/disconnected/i.test(document.querySelector("header")?.textContent ?? ""), null, { timeout: 10_000 });
const shot = (page, name) => page.screenshot({ path: join(shots, `${name}.png`) });

/** The UI's sockets page with /events selected. */
async function socketsPage(page) {
  await page.goto(`${origin}/#/sockets/`);
  const selector = page.getByLabel("Select namespace");
  await selector.waitFor({ state: "attached", timeout: 10_000 });
  const current = await page.locator(".v-select__selection").first().textContent().catch(() => "");
  if (!current?.includes("/events")) {
    await selector.click({ force: true });
    await page.getByRole("option", { name: "/events" }).click();
  }
}

const a1 = await feedClient(rw, "company_a", "token_admin_a");
const b1 = await feedClient(rw, "company_b", "token_admin_b");
const a2 = await feedClient(ro, "company_a", "token_admin_a");

try {
  await check(
    "logged in, the UI shows the server, its namespaces and their sockets",
    async () => {
      const { page, context } = await login(rw);
      await connected(page);
      // The dashboard's namespaces card: /events with its 2 sockets.
      await page.waitForFunction(() => {
        const rows = [...document.querySelectorAll("tr")].map((tr) => tr.textContent.replace(/\s+/g, " ").trim());
        return rows.some((r) => r.startsWith("/events") && r.endsWith("2"));
      }, null, { timeout: 10_000 });
      await shot(page, "admin-dashboard");
      await page.goto(`${origin}/#/servers/`);
      const hostname = (await readFile("/proc/sys/kernel/hostname", "utf8").catch(() => "")).trim();
      await page.waitForFunction((h) => document.querySelector("main").textContent.includes(h), hostname, { timeout: 10_000 });
      await socketsPage(page);
      for (const c of [a1, b1]) await page.getByText(c.id).waitFor({ timeout: 10_000 });
      await page.locator(".menuable__content__active").waitFor({ state: "detached", timeout: 5_000 }).catch(() => {});
      await shot(page, "admin-sockets");
      // A socket's page: who it is (its tenant and user), never its token.
      await page.locator("tr", { hasText: a1.id }).locator("td").first().click();
      await page.waitForFunction(() => /"tenant": "company_a"/.test(document.querySelector("main").textContent), null, { timeout: 10_000 });
      const shown = await page.textContent("main");
      if (shown.includes("token_admin")) throw new Error("the UI shows a token");
      await shot(page, "admin-socket");
      await context.close();
    },
    40_000,
  );

  await check(
    "read-write: disconnecting a socket from the UI disconnects that client",
    async () => {
      const { page, context } = await login(rw);
      await connected(page);
      await socketsPage(page);
      const row = page.locator("tr", { hasText: a1.id });
      await row.waitFor({ timeout: 10_000 });
      const gone = once(a1, "disconnect");
      await row.locator("button").click();
      const [reason] = await gone;
      if (reason !== "io server disconnect") throw new Error(`disconnected for ${reason}`);
      if (!b1.connected) throw new Error("the other client was disconnected too");
      await until(() => rw.tail.some((l) => l.includes('"command":"_disconnect"') && l.includes('"outcome":"ok"')), "the audit line");
      await context.close();
    },
    40_000,
  );

  await check(
    "read-only: the UI offers no action",
    async () => {
      const { page, context } = await login(ro);
      await connected(page);
      await socketsPage(page);
      const row = page.locator("tr", { hasText: a2.id });
      await row.waitFor({ timeout: 10_000 });
      const buttons = await row.locator("button").count();
      if (buttons !== 0) throw new Error(`${buttons} action button(s) on a read-only server`);
      await shot(page, "admin-readonly");
      await context.close();
    },
    40_000,
  );

  await check(
    "a wrong password is refused, and the UI says so",
    async () => {
      const { page, context } = await login(rw, "not the password");
      await page.waitForFunction(() => /invalid credentials/i.test(document.body.textContent), null, { timeout: 10_000 });
      await shot(page, "admin-refused");
      await context.close();
    },
    30_000,
  );
} finally {
  await browser.close();
  for (const c of [a1, b1, a2]) c.close();
  await ro.stop();
  await rw.stop();
  ui.close();
}
finish();
