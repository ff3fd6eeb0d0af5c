#!/usr/bin/env python3
"""What this machine's loopback costs, without any server: the floor under the
fan-out figures of bench/run.sh.

Two measurements, each with the "server" pinned to SERVER_CPU (default 0) and
the "client" to LOADGEN_CPU (default 1), as bench/run.sh pins them:

1. Round trip: a 1-byte TCP ping-pong at a given gap between pings (5 ms =
   the spacing of 200 events/s). Both sides sleep between pings, as the
   server and the generator do at that rate, so this is the wake-up latency
   of two idle cores — a lower bound for any end-to-end latency here.

2. Fan-out sends: the "server" sends one 193-byte message (the size of an
   `event_created` websocket frame) to each of 50 sockets of a group every
   1/rate seconds, cycling over 10 groups (10 tenants x 50 clients at
   200 events/s); a reader process drains all 500 sockets. Reported: the
   sender's kernel (system) CPU per send — what one delivery costs in the
   kernel at that rate, whatever the server does in user space.

3. With --loadgen PATH (an eventfeed-loadgen binary): the floor bench/run.sh
   holds the server's CPU per delivery against (`eventfeed-loadgen floor`):
   the same fan-out shape written by one compiled thread pinned to the
   server's core, one write() per socket per event, the readers (another
   thread, on the generator's core) asleep in epoll_wait between events; its
   user + system CPU (getrusage(RUSAGE_THREAD)) per delivery. Measurement 2 is
   the system part of it as seen from Python, which adds an interpreter's
   user time of its own (printed beside it, not counted): 3 is the figure to
   compare a server with, 2 says how much of it is the kernel's.

    python3 bench/floor.py [--rate 200] [--seconds 5] [--loadgen target/release/eventfeed-loadgen]
"""

import argparse
import os
import resource
import selectors
import socket
import subprocess
import time

SERVER_CPU = int(os.environ.get("SERVER_CPU", "0"))
LOADGEN_CPU = int(os.environ.get("LOADGEN_CPU", "1"))


def pin(cpu):
    try:
        os.sched_setaffinity(0, {cpu})
    except OSError as e:
        raise SystemExit(f"floor.py: cannot pin to core {cpu}: {e}")


def listener():
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("127.0.0.1", 0))
    s.listen(1024)
    return s


def nodelay(s):
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def pct(values, p):
    values = sorted(values)
    return values[min(len(values) - 1, int(len(values) * p / 100))]


def round_trip(gap, count):
    lst = listener()
    port = lst.getsockname()[1]
    pid = os.fork()
    if pid == 0:  # the echo side, on the server core
        pin(SERVER_CPU)
        c = nodelay(lst.accept()[0])
        while True:
            d = c.recv(64)
            if not d:
                os._exit(0)
            c.sendall(d)
    pin(LOADGEN_CPU)
    c = nodelay(socket.create_connection(("127.0.0.1", port)))
    rtts = []
    for _ in range(count):
        if gap:
            time.sleep(gap)
        t = time.perf_counter()
        c.send(b"x")
        c.recv(64)
        rtts.append((time.perf_counter() - t) * 1e6)
    c.close()
    os.waitpid(pid, 0)
    lst.close()
    return rtts


def fan_out(rate, seconds, tenants=10, clients=50, size=193):
    lst = listener()
    port = lst.getsockname()[1]
    n = tenants * clients
    pid = os.fork()
    if pid == 0:  # the readers, on the generator core
        pin(LOADGEN_CPU)
        sel = selectors.DefaultSelector()
        socks = [socket.create_connection(("127.0.0.1", port)) for _ in range(n)]
        for s in socks:
            s.setblocking(False)
            sel.register(s, selectors.EVENT_READ)
        open_socks = n
        while open_socks:
            for key, _ in sel.select():
                try:
                    d = key.fileobj.recv(65536)
                except BlockingIOError:
                    continue
                if not d:
                    sel.unregister(key.fileobj)
                    open_socks -= 1
        os._exit(0)
    pin(SERVER_CPU)
    conns = [nodelay(lst.accept()[0]) for _ in range(n)]
    frame = b"\x81\x7e" + (size - 4).to_bytes(2, "big") + b"x" * (size - 4)
    period = 1.0 / rate
    start = time.perf_counter()
    before = resource.getrusage(resource.RUSAGE_SELF)
    sends = 0
    k = 0
    while True:
        due = start + k * period
        now = time.perf_counter()
        if due - start >= seconds:
            break
        if due > now:
            time.sleep(due - now)
        group = k % tenants
        for s in conns[group * clients:(group + 1) * clients]:
            s.send(frame)
            sends += 1
        k += 1
    after = resource.getrusage(resource.RUSAGE_SELF)
    for s in conns:
        s.close()
    os.waitpid(pid, 0)
    lst.close()
    sys_us = (after.ru_stime - before.ru_stime) * 1e6 / sends
    user_us = (after.ru_utime - before.ru_utime) * 1e6 / sends
    return sends, sys_us, user_us


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rate", type=float, default=200.0, help="events per second in all (default 200)")
    ap.add_argument("--seconds", type=float, default=5.0, help="length of the fan-out run (default 5)")
    ap.add_argument("--loadgen", help="an eventfeed-loadgen binary: also measure run.sh's floor with it")
    args = ap.parse_args()
    print(f"server core {SERVER_CPU}, client core {LOADGEN_CPU}")
    for gap in (0.0, 1.0 / args.rate):
        rtts = round_trip(gap, 2000)
        label = "back to back" if gap == 0 else f"one every {gap * 1e3:g} ms"
        print(
            f"TCP round trip, {label}: p50 {pct(rtts, 50):.0f} µs, p90 {pct(rtts, 90):.0f} µs, "
            f"p99 {pct(rtts, 99):.0f} µs"
        )
    sends, sys_us, user_us = fan_out(args.rate, args.seconds)
    print(
        f"fan-out sends (10 groups x 50 sockets, {args.rate:g} messages/s, 193 bytes): {sends} sends, "
        f"kernel CPU {sys_us:.1f} µs per send (Python's own user time {user_us:.1f} µs)"
    )
    if args.loadgen:
        out = subprocess.run(
            [args.loadgen, "floor", "--rate", f"{args.rate:g}", "--seconds", f"{args.seconds:g}",
             "--writer-cpu", str(SERVER_CPU), "--reader-cpu", str(LOADGEN_CPU)],
            check=True, capture_output=True, text=True,
        ).stdout.strip().splitlines()
        print("run.sh's floor (compiled writer): " + out[-1].strip())


if __name__ == "__main__":
    main()
