#!/usr/bin/python3
"""Hold many client connections open for the memory part of `make bench`.

Modes:
  idle   connect N clients, send one keep-alive GET each, read the whole
         response, then keep the connection open and idle.
  stall  connect N clients, send one GET each for a large file, read the first
         --stall-bytes bytes, then stop reading (the download stalls midway).

When every client has reached its resting state (or failed), one JSON line is
printed on stdout ({"ready": true, "ok": ..., "fail": {...}}).  The process then
waits for a line (or EOF) on stdin, resets every connection (SO_LINGER 0, so no
TIME_WAIT is left behind) and exits.  Standard library only.
"""

import argparse
import collections
import errno
import json
import os
import resource
import selectors
import socket
import struct
import sys
import time


def parse_head(buf):
    """Return (status, content_length, header_len) or None if incomplete."""
    end = buf.find(b"\r\n\r\n")
    if end < 0:
        return None
    head = bytes(buf[:end]).decode("latin-1").split("\r\n")
    try:
        status = int(head[0].split()[1])
    except (IndexError, ValueError):
        status = 0
    clen = None
    for line in head[1:]:
        k, _, v = line.partition(":")
        if k.strip().lower() == "content-length":
            try:
                clen = int(v.strip())
            except ValueError:
                pass
    return status, clen, end + 4


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--mode", choices=("idle", "stall"), required=True)
    ap.add_argument("--n", type=int, required=True)
    ap.add_argument("--path", required=True)
    ap.add_argument("--stall-bytes", type=int, default=1 << 20)
    ap.add_argument("--concurrency", type=int, default=256)
    ap.add_argument("--timeout", type=float, default=60.0)
    a = ap.parse_args()

    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

    req = ("GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: kfwd-bench\r\n\r\n" % a.path).encode()
    linger0 = struct.pack("ii", 1, 0)
    sel = selectors.DefaultSelector()
    held = []
    fails = collections.Counter()
    started = 0
    inflight = 0
    t0 = time.monotonic()
    deadline = t0 + a.timeout

    def fail(st, why):
        nonlocal inflight
        fails[why] += 1
        try:
            sel.unregister(st["s"])
        except (KeyError, ValueError):
            pass
        st["s"].setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger0)
        st["s"].close()
        inflight -= 1

    def rest(st):
        nonlocal inflight
        sel.unregister(st["s"])
        st["buf"] = None
        held.append(st["s"])
        inflight -= 1

    while len(held) + sum(fails.values()) < a.n:
        while inflight < a.concurrency and started < a.n:
            started += 1
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setblocking(False)
            err = s.connect_ex((a.host, a.port))
            if err not in (0, errno.EINPROGRESS):
                fails["connect:" + errno.errorcode.get(err, str(err))] += 1
                s.close()
                continue
            st = {"s": s, "phase": 0, "buf": bytearray(), "got": 0, "status": None}
            sel.register(s, selectors.EVENT_WRITE, st)
            inflight += 1
        now = time.monotonic()
        if now >= deadline:
            for key in list(sel.get_map().values()):
                fail(key.data, "timeout")
            break
        for key, _ in sel.select(timeout=min(1.0, deadline - now)):
            st = key.data
            s = st["s"]
            try:
                if st["phase"] == 0:
                    err = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                    if err:
                        fail(st, "connect:" + errno.errorcode.get(err, str(err)))
                        continue
                    s.send(req)
                    st["phase"] = 1
                    sel.modify(s, selectors.EVENT_READ, st)
                    continue
                data = s.recv(262144)
                if not data:
                    fail(st, "eof")
                    continue
                st["got"] += len(data)
                if st["status"] is None:
                    st["buf"] += data
                    h = parse_head(st["buf"])
                    if h is None:
                        continue
                    st["status"], st["clen"], st["hlen"] = h
                    if st["status"] != 200:
                        fail(st, "status:%d" % st["status"])
                        continue
                if a.mode == "idle":
                    if st["clen"] is None:
                        fail(st, "no-content-length")
                    elif st["got"] >= st["hlen"] + st["clen"]:
                        rest(st)
                elif st["got"] >= a.stall_bytes:
                    rest(st)
            except OSError as e:
                fail(st, "io:" + errno.errorcode.get(e.errno or 0, str(e)))

    print(json.dumps({"ready": True, "ok": len(held), "fail": dict(fails),
                      "elapsed": round(time.monotonic() - t0, 3)}), flush=True)
    try:
        sys.stdin.readline()
    except KeyboardInterrupt:
        pass
    for s in held:
        try:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger0)
        except OSError:
            pass
        s.close()
    os._exit(0)


if __name__ == "__main__":
    main()
