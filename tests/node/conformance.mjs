// Drives the conformance fixture with the official, unmodified clients
// (socket.io-client and engine.io-client) over polling only, websocket only,
// and polling upgraded to websocket.
//
// Usage: node conformance.mjs http://127.0.0.1:PORT
// Prints one line per check and ends with "N passed, M failed"; exits 1 on
// any failure.

import { io } from "socket.io-client";
import { Socket as EioSocket } from "engine.io-client";
import assert from "node:assert/strict";
import { check, finish, once } from "./harness.mjs";

const base = process.argv[2];
if (!base) {
  console.error("usage: node conformance.mjs http://127.0.0.1:PORT");
  process.exit(2);
}

const MODES = {
  polling: { transports: ["polling"], expect: "polling" },
  websocket: { transports: ["websocket"], expect: "websocket" },
  upgrade: { transports: ["polling", "websocket"], expect: "websocket" },
};



function connect(path, mode, opts = {}) {
  const socket = io(base + path, { transports: MODES[mode].transports, reconnection: false, forceNew: true, ...opts });
  return socket;
}

async function connected(socket) {
  if (socket.connected) return;
  const outcome = await Promise.race([once(socket, "connect").then(() => null), once(socket, "connect_error")]);
  if (outcome) throw outcome[0];
}

async function upgraded(socket, mode) {
  const engine = socket.io.engine;
  if (MODES[mode].expect === "websocket" && engine.transport.name !== "websocket") {
    await once(engine, "upgrade");
  }
  assert.equal(engine.transport.name, MODES[mode].expect);
}

for (const mode of Object.keys(MODES)) {
  await check(`${mode}: connect with auth, receive it back, transport ${MODES[mode].expect}`, async () => {
    const s = connect("/", mode, { auth: { token: "abc", n: 1 } });
    const auth = once(s, "auth");
    await connected(s);
    assert.deepEqual((await auth)[0], { token: "abc", n: 1 });
    assert.ok(s.id && s.id.length > 0);
    await upgraded(s, mode);
    s.disconnect();
  });

  await check(`${mode}: several namespaces on one connection`, async () => {
    const main = connect("/", mode);
    await connected(main);
    // Same manager, so the same Engine.IO session.
    const custom2 = main.io.socket("/custom", {});
    custom2.connect();
    const auth = once(custom2, "auth");
    await connected(custom2);
    assert.deepEqual((await auth)[0], {});
    assert.notEqual(custom2.id, main.id);
    // Leaving one namespace keeps the other.
    custom2.disconnect();
    const back = once(main, "message-back");
    main.emit("message", "still here");
    assert.deepEqual(await back, ["still here"]);
    main.disconnect();
  });

  await check(`${mode}: unknown namespace gets connect_error "Invalid namespace"`, async () => {
    const s = connect("/nope", mode);
    const [err] = await once(s, "connect_error");
    assert.equal(err.message, "Invalid namespace");
    s.disconnect();
  });

  await check(`${mode}: events both ways with mixed arguments`, async () => {
    const s = connect("/", mode);
    await connected(s);
    const args = [1, "two", { three: [3, 3.5, null, true] }, "é✓\u0000\n"];
    const back = once(s, "message-back");
    s.emit("message", ...args);
    assert.deepEqual(await back, args);
    s.disconnect();
  });

  await check(`${mode}: client to server ack`, async () => {
    const s = connect("/", mode);
    await connected(s);
    const reply = await new Promise((res) => s.emit("message-with-ack", 1, "2", { three: 3 }, (...a) => res(a)));
    assert.deepEqual(reply, [1, "2", { three: 3 }]);
    s.disconnect();
  });

  await check(`${mode}: server to client ack`, async () => {
    const s = connect("/", mode);
    await connected(s);
    s.on("ack-me", (a, b, ack) => ack({ got: [a, b] }, "ok"));
    const result = once(s, "ack-result");
    s.emit("request-ack", 7, "x");
    assert.deepEqual(await result, [{ got: [7, "x"] }, "ok"]);
    s.disconnect();
  });

  await check(`${mode}: binary both ways (events and acks)`, async () => {
    const s = connect("/", mode);
    await connected(s);
    const buf1 = Buffer.from([1, 2, 3]);
    const buf2 = Buffer.from([0, 255, 128, 7]);
    const back = once(s, "message-back");
    s.emit("message", "bin", buf1, { nested: [buf2] });
    const got = await back;
    assert.equal(got[0], "bin");
    assert.deepEqual(Buffer.from(got[1]), buf1);
    assert.deepEqual(Buffer.from(got[2].nested[0]), buf2);
    const reply = await s.timeout(3000).emitWithAck("message-with-ack", buf2);
    assert.deepEqual(Buffer.from(reply), buf2);
    s.on("ack-me", (b, ack) => ack(Buffer.concat([Buffer.from(b), Buffer.from([9])])));
    const result = once(s, "ack-result");
    s.emit("request-ack", buf1);
    assert.deepEqual(Buffer.from((await result)[0]), Buffer.from([1, 2, 3, 9]));
    s.disconnect();
  });

  await check(`${mode}: server-side disconnect`, async () => {
    const s = connect("/", mode);
    await connected(s);
    const reason = once(s, "disconnect");
    s.emit("disconnect-me");
    assert.deepEqual((await reason)[0], "io server disconnect");
  });

  await check(`${mode}: reconnect after the transport is cut`, async () => {
    const s = io(base + "/", {
      transports: MODES[mode].transports,
      forceNew: true,
      reconnectionDelay: 50,
      reconnectionDelayMax: 100,
    });
    await connected(s);
    await upgraded(s, mode);
    const firstId = s.id;
    const reason = once(s, "disconnect");
    s.io.engine.close();
    assert.equal((await reason)[0], "forced close");
    await once(s, "connect");
    assert.notEqual(s.id, firstId);
    const back = once(s, "message-back");
    s.emit("message", "after reconnect");
    assert.deepEqual(await back, ["after reconnect"]);
    s.disconnect();
  });

  await check(`${mode}: raw engine.io echo, text and binary`, async () => {
    const socket = new EioSocket(base, { path: "/engine.io/", transports: MODES[mode].transports });
    await once(socket, "open");
    if (MODES[mode].expect === "websocket" && socket.transport.name !== "websocket") await once(socket, "upgrade");
    assert.equal(socket.transport.name, MODES[mode].expect);
    const text = once(socket, "message");
    socket.send("hello ✓");
    assert.equal((await text)[0], "hello ✓");
    const bin = once(socket, "message");
    socket.send(Uint8Array.from([1, 2, 3, 4]));
    assert.deepEqual(Buffer.from((await bin)[0]), Buffer.from([1, 2, 3, 4]));
    const closed = once(socket, "close");
    socket.close();
    assert.equal((await closed)[0], "forced close");
  });
}

finish();
