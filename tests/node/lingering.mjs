// Bodies over the server's limits sent by Node's own `http` client, which
// writes the whole request before it reads the answer: each must end with the
// server's 413 read in full, and no EPIPE or ECONNRESET on the way.
//
// Usage: node lingering.mjs http://127.0.0.1:PORT
// The server runs with the demo tokens, a REST body limit of 65536 and an
// Engine.IO maxPayload far below the 3 MB bodies sent here.
// Ends with "N passed, M failed".

import http from "node:http";
import assert from "node:assert/strict";
import { check, finish } from "./harness.mjs";

const base = new URL(process.argv[2]);
const A = { "X-TENANT-ID": "company_a", "X-User-Token": "token_admin_a" };
const BODY = Buffer.alloc(3 * 1024 * 1024, "x");

// Node's default agent keeps connections alive: an answer after which the
// server closes must say so (`Connection: close`), or the next request goes
// out on the closing connection and fails ("socket hang up"). The checks run
// one after the other, each on the connection the previous one left.

/// Sends one request, its body (if any) written whole before anything is read
/// (with `end(body)`: one Content-Length; with `write(body)` then `end()`:
/// chunked), and resolves with {status, text} once the request is over. Any
/// error of the request or the response (EPIPE, ECONNRESET, ...) rejects.
function send(method, path, headers, body, { chunked = false } = {}) {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: base.hostname, port: base.port, method, path, headers });
    let answer;
    req.on("error", reject);
    req.on("response", (res) => {
      const parts = [];
      res.on("data", (d) => parts.push(d));
      res.on("error", reject);
      res.on("end", () => {
        answer = { status: res.statusCode, connection: res.headers.connection, text: Buffer.concat(parts).toString() };
      });
    });
    // "close" comes after "error" if there was one: an answer read in full
    // and then a reset still counts as a failure.
    req.on("close", () => (answer ? resolve(answer) : reject(new Error("closed without a full answer"))));
    if (!body) {
      req.end();
    } else if (chunked) {
      req.write(body);
      req.end();
    } else {
      req.end(body);
    }
  });
}

function assertTooLarge(res) {
  assert.equal(res.status, 413, res.text);
  assert.equal(JSON.parse(res.text).error.code, "payload_too_large", res.text);
  assert.equal(res.connection, "close", "the last answer on its connection");
}

const json = { ...A, "Content-Type": "application/json" };

// On loopback the kernel often takes a whole 3 MB write before the server
// answers, and a reset then comes too late to hurt: each case runs a few
// times so that one reset mid-write is likely to show. (The raw clients of
// hardening_lingering.rs, with a send buffer of their own size, always are.)
const TIMES = 5;

await check("a 3 MB REST body with Content-Length: 413 payload_too_large, read in full", async () => {
  for (let i = 0; i < TIMES; i++) assertTooLarge(await send("POST", "/api/events", json, BODY));
});

await check("a 3 MB chunked REST body: 413 payload_too_large, read in full", async () => {
  for (let i = 0; i < TIMES; i++) assertTooLarge(await send("POST", "/api/events", json, BODY, { chunked: true }));
});

await check("a 3 MB REST body without credentials: 401, read in full", async () => {
  for (let i = 0; i < TIMES; i++) {
    const res = await send("POST", "/api/events", { "Content-Type": "application/json" }, BODY);
    assert.equal(res.status, 401, res.text);
    assert.equal(JSON.parse(res.text).error.code, "unauthorized", res.text);
    assert.equal(res.connection, "close", "the last answer on its connection");
  }
});

await check("a 3 MB polling body over maxPayload: 413, read in full", async () => {
  for (let i = 0; i < TIMES; i++) {
    const open = await send("GET", "/socket.io/?EIO=4&transport=polling", {}, null);
    assert.equal(open.status, 200, open.text);
    const sid = JSON.parse(open.text.slice(1)).sid;
    const headers = { "Content-Type": "text/plain;charset=UTF-8" };
    const res = await send("POST", `/socket.io/?EIO=4&transport=polling&sid=${sid}`, headers, BODY);
    assert.equal(res.status, 413, res.text);
    assert.equal(res.connection, "close", "the last answer on its connection");
  }
});

await check("the server still answers", async () => {
  const res = await send("GET", "/healthz", {}, null);
  assert.equal(res.status, 200, res.text);
});

finish();
