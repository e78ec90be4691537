#!/usr/bin/python3
"""Paced stream client for `make bench` (the IPTV case).

Opens --n HTTP/1.1 downloads of a large file and reads each at --rate bytes/s
(1,000,000 B/s = 8 Mbit/s), like a player that consumes at the stream's bit
rate: every --tick seconds each stream may read what its budget allows
(rate x elapsed - already read); TCP flow control paces the sender.

Prints "READY <CLOCK_MONOTONIC seconds>" once every stream is connected and its
request sent (pacing starts at that instant), runs for --duration seconds, then
prints one JSON line: per-0.25 s samples of the total bytes read, stream errors.
Connections are reset at the end (SO_LINGER 0).  Standard library only.
"""

import argparse
import json
import resource
import socket
import struct
import time


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--path", required=True)
    ap.add_argument("--n", type=int, default=100)
    ap.add_argument("--rate", type=float, default=1e6)
    ap.add_argument("--duration", type=float, required=True)
    ap.add_argument("--tick", type=float, default=0.02)
    a = ap.parse_args()

    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    req = ("GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: kfwd-bench-stream\r\n\r\n" % a.path).encode()
    socks = []
    for _ in range(a.n):
        s = socket.create_connection((a.host, a.port), timeout=10)
        s.sendall(req)
        s.setblocking(False)
        socks.append(s)
    n = len(socks)
    got = [0] * n
    dead = [None] * n
    buf = bytearray(256 * 1024)
    mv = memoryview(buf)
    t0 = time.monotonic()
    print("READY %.6f" % t0, flush=True)
    t_end = t0 + a.duration
    samples = [(t0, 0)]
    next_sample = t0 + 0.25
    bad_status = 0
    while True:
        now = time.monotonic()
        if now >= t_end:
            break
        budget = a.rate * (now - t0)
        for i in range(n):
            if dead[i]:
                continue
            allow = int(budget - got[i])
            s = socks[i]
            while allow > 0:
                try:
                    k = s.recv_into(mv, min(allow, len(buf)))
                except BlockingIOError:
                    break
                except OSError as e:
                    dead[i] = "error:%s" % e.errno
                    break
                if k == 0:
                    dead[i] = "eof"
                    break
                if got[i] == 0 and not bytes(mv[:12]).startswith(b"HTTP/1.1 200"):
                    bad_status += 1
                    dead[i] = "status"
                got[i] += k
                allow -= k
        if now >= next_sample:
            samples.append((now, sum(got)))
            next_sample += 0.25
        delay = a.tick - (time.monotonic() - now)
        if delay > 0:
            time.sleep(delay)
    samples.append((time.monotonic(), sum(got)))
    linger0 = struct.pack("ii", 1, 0)
    for s in socks:
        try:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger0)
        except OSError:
            pass
        s.close()
    errors = {}
    for d in dead:
        if d:
            errors[d] = errors.get(d, 0) + 1
    print(json.dumps({"t0": t0, "streams": n, "bytes": sum(got), "min_stream_bytes": min(got) if got else 0,
                      "errors": errors, "bad_status": bad_status,
                      "samples": [(round(t, 4), b) for t, b in samples]}), flush=True)


if __name__ == "__main__":
    main()
