// What the browser and Admin UI scripts share: their command-line arguments
// (--bin, --shots), the screenshots folder, Debian's Chromium launched
// headless (or a one-line hint when it is missing), and an eventfeed with the
// Admin UI on.

import { execFileSync } from "node:child_process";
import { existsSync, mkdirSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";
import { Instance } from "../../bench/faults/servers.mjs";

const HERE = dirname(fileURLToPath(import.meta.url));

/** `--name value` pairs of the command line. */
export const args = Object.fromEntries(
  process.argv.slice(2).reduce((acc, a, i, all) => (a.startsWith("--") ? [...acc, [a.slice(2), all[i + 1]]] : acc), []),
);

/** Where screenshots go (`--shots`), created. */
export function shotsDir() {
  const dir = args.shots || join(HERE, "shots");
  mkdirSync(dir, { recursive: true });
  return dir;
}

/** Debian's Chromium, headless; CHROMIUM may name another binary. */
export async function launchChromium() {
  const path = process.env.CHROMIUM || "/usr/bin/chromium";
  if (!existsSync(path)) {
    console.log(`not ok - chromium not found at ${path}: install it (apt-get install chromium), or run ./test.sh, which does`);
    process.exit(1);
  }
  return chromium.launch({
    executablePath: path,
    headless: true,
    // As root Chromium needs --no-sandbox; the rest keeps it off the network
    // (this machine has none) and quiet.
    args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync"],
  });
}

/** The Admin UI's password in these tests, and its bcrypt hash (made by the binary). */
export const ADMIN_PASSWORD = "correct horse battery staple";
let hash;

/** An eventfeed (`--bin`) with the Admin UI on for user "ops", started. */
export async function adminServer(readonly, env = {}) {
  hash ??= execFileSync(args.bin, ["--hash-password"], { input: ADMIN_PASSWORD }).toString().trim();
  const inst = new Instance({
    kind: "eventfeed",
    bin: args.bin,
    name: `eventfeed (admin ${readonly ? "read-only" : "read-write"})`,
    env: {
      NB_BACKEND_ADMIN_UI: "on",
      NB_BACKEND_ADMIN_USERNAME: "ops",
      NB_BACKEND_ADMIN_PASSWORD_HASH: hash,
      NB_BACKEND_ADMIN_READONLY: String(readonly),
      NB_BACKEND_LOG: "info",
      ...env,
    },
  });
  await inst.start();
  return inst;
}
