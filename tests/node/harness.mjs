// The small test runner shared by the Node scripts: named checks with a
// timeout, a few waiting helpers, and the closing "N passed, M failed" line.

import assert from "node:assert/strict";

const results = [];

/// Runs one named check; a failure is recorded and printed, never thrown.
export async function check(name, fn, timeoutMs = 8000) {
  let timer;
  try {
    await Promise.race([
      fn(),
      new Promise((_, rej) => (timer = setTimeout(() => rej(new Error(`timed out after ${timeoutMs} ms`)), timeoutMs))),
    ]);
    results.push(true);
    console.log(`ok - ${name}`);
  } catch (e) {
    results.push(false);
    console.log(`not ok - ${name}: ${e && e.stack ? e.stack : e}`);
  } finally {
    clearTimeout(timer);
  }
}

/// Resolves with the arguments of the next `event` on `emitter`.
export const once = (emitter, event) => new Promise((res) => emitter.once(event, (...args) => res(args)));

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/// Waits (bounded) until `pred()` holds.
export async function until(pred, what, ms = 8000) {
  const end = Date.now() + ms;
  while (!pred()) {
    if (Date.now() > end) throw new Error(`waited ${ms} ms for ${what}`);
    await sleep(5);
  }
}

/// One REST call to the feed at `base` as `who` ({tenant, token}; none: no
/// credentials), with a JSON body when `body` is given (a string is sent as
/// is). Resolves with {status, headers, json (undefined if not JSON), text}.
export async function rest(base, method, path, who, body, extraHeaders = {}) {
  const headers = { ...extraHeaders };
  if (who) {
    headers["X-TENANT-ID"] = who.tenant;
    headers["X-User-Token"] = who.token;
  }
  const init = { method, headers };
  if (body !== undefined) {
    init.body = typeof body === "string" ? body : JSON.stringify(body);
    if (!("Content-Type" in extraHeaders)) headers["Content-Type"] = "application/json";
  }
  const res = await fetch(base + path, init);
  const text = await res.text();
  let json;
  try {
    json = JSON.parse(text);
  } catch {
    json = undefined;
  }
  return { status: res.status, headers: res.headers, json, text };
}

/// Prints the closing line and exits non-zero if any check failed.
export function finish() {
  const passed = results.filter(Boolean).length;
  const failed = results.length - passed;
  console.log(`${passed} passed, ${failed} failed`);
  process.exit(failed === 0 ? 0 : 1);
}

/// The `seq`s of recovery offsets (`{epoch}:{seq}:{id fingerprint}`, opaque
/// to the client), checking their shape and that they are of one history.
export function offsetSeqs(offsets) {
  const epochs = new Set();
  const seqs = offsets.map((o) => {
    assert.match(o, /^[0-9a-f]{8}:\d+:[0-9a-f]{8}$/, `an offset: ${o}`);
    const [epoch, seq] = o.split(":");
    epochs.add(epoch);
    return seq;
  });
  assert.ok(epochs.size <= 1, `offsets of one epoch: ${offsets}`);
  return seqs;
}
