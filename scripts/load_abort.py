#!/usr/bin/python3
"""Load-and-abort run: random-size response bodies (Content-Length and chunked) through the
splice, copy and sockmap data paths, with clients that abort at random points (FIN or RST),
for a fixed time; counts corrupted bodies and sanitizer reports in kfwd's output.

  scripts/load_abort.py [--bin build-san/kfwd] [--seconds 60] [--clients 8]

Meant for an ASan+UBSan build (make SANITIZE=1); prints one summary line and exits 1 on any
corruption or report.
"""

import argparse
import hashlib
import os
import random
import re
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
import peers  # noqa: E402

MAX_BODY = 4 << 20
REPORT = re.compile(r"ERROR: (AddressSanitizer|LeakSanitizer)|runtime error:")


def body_for(size, seed):
    return random.Random(seed).randbytes(size)


class Origin(peers.Peer):
    """GET /SIZE/SEED[/chunked] -> SIZE bytes derived from SEED; keep-alive."""

    name = "origin"

    def handle(self, conn):
        while True:
            req = conn.read_request()
            if req is None:
                return
            parts = req.target.strip("/").split("/")
            size, seed = int(parts[-3]), int(parts[-2])
            chunked = parts[-1] == "c"
            data = body_for(size, seed)
            if chunked:
                conn.send(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
                for i in range(0, len(data), 65536):
                    piece = data[i:i + 65536]
                    conn.send(b"%x\r\n" % len(piece) + piece + b"\r\n")
                conn.send(b"0\r\n\r\n")
            else:
                conn.send(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % size + data)


def client(port, stop, stats, lock, seed):
    rng = random.Random(seed)
    while not stop.is_set():
        mode = rng.choice(["splice", "copy", "sockmap"])
        size = rng.choice([0, 1, rng.randint(2, 65536), rng.randint(65537, MAX_BODY)])
        bseed = rng.randint(0, 1 << 30)
        chunked = rng.random() < 0.3
        abort_at = rng.randint(0, size) if rng.random() < 0.3 else None
        target = f"/{mode}/{size}/{bseed}/{'c' if chunked else 'l'}"
        try:
            s = socket.create_connection(("127.0.0.1", port), timeout=30)
            s.sendall(f"GET {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
            got = b""
            while True:
                if abort_at is not None and len(got) >= abort_at:
                    if rng.random() < 0.5:
                        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    break
                d = s.recv(262144)
                if not d:
                    break
                got += d
            s.close()
        except OSError as e:
            with lock:
                stats["errors"] += 1
                stats["last_error"] = repr(e)
            continue
        with lock:
            stats["requests"] += 1
            if abort_at is not None:
                stats["aborted"] += 1
                continue
        head, _, body = got.partition(b"\r\n\r\n")
        if chunked:
            out, rest = b"", body
            while True:
                line, _, rest = rest.partition(b"\r\n")
                n = int(line, 16)
                if n == 0:
                    break
                out, rest = out + rest[:n], rest[n + 2:]
            body = out
        ok = head.startswith(b"HTTP/1.1 200") and hashlib.sha256(body).digest() == hashlib.sha256(body_for(size, bseed)).digest()
        with lock:
            stats["complete"] += 1
            stats["corrupted"] += not ok


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default=str(ROOT / "build-san" / "kfwd"))
    ap.add_argument("--seconds", type=float, default=60)
    ap.add_argument("--clients", type=int, default=8)
    a = ap.parse_args()
    origin = Origin().start()
    work = Path(tempfile.mkdtemp(prefix="kfwd-load-abort-"))
    port, mport = peers.free_port(), peers.free_port()
    pin = f"/sys/fs/bpf/kfwd-load-abort-{os.getpid()}"
    (work / "k.conf").write_text(
        f"listen 127.0.0.1:{port}\nmetrics-listen 127.0.0.1:{mport}\nupstream o {origin.addr}\nroute /splice/ o mode=splice\n"
        f"route /copy/ o mode=copy\nroute /sockmap/ o mode=sockmap\nsockmap-body-min 64k\n"
        f"bpf-pin-dir {pin}\nctl-socket-file {work}/ctl\nlog-level warn\ndrain-timeout 5s\n")
    env = dict(os.environ, ASAN_OPTIONS="detect_leaks=1:halt_on_error=0:quarantine_size_mb=16",
               UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=0")
    log = open(work / "kfwd.log", "wb")
    k = subprocess.Popen([a.bin, "-c", str(work / "k.conf")], stdout=log, stderr=subprocess.STDOUT, env=env)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or k.poll() is not None:
                    raise SystemExit(f"kfwd did not start:\n{(work / 'kfwd.log').read_text()}")
                time.sleep(0.05)
        stop, lock = threading.Event(), threading.Lock()
        stats = {"requests": 0, "aborted": 0, "complete": 0, "corrupted": 0, "errors": 0, "last_error": ""}
        threads = [threading.Thread(target=client, args=(port, stop, stats, lock, i), daemon=True) for i in range(a.clients)]
        for t in threads:
            t.start()
        time.sleep(a.seconds)
        stop.set()
        for t in threads:
            t.join(60)
        with peers.HttpConn(mport, timeout=10) as c:
            c.request("GET", "/metrics")
            m = c.read_response(keep_body=True).body.decode()
        paths = {n: int(float(v)) for n, v in re.findall(r"^(kfwd_sockmap_responses_total|kfwd_bytes_spliced_total\{direction=\"response\"\}) (\S+)$", m, re.M)}
    finally:
        k.send_signal(signal.SIGTERM)
        try:
            rc = k.wait(30)
        except subprocess.TimeoutExpired:
            k.kill()
            rc = k.wait(10)
        log.close()
        origin.stop()
        subprocess.run(["rm", "-rf", pin], check=False)
    text = (work / "kfwd.log").read_text(errors="replace")
    reports = [ln for ln in text.splitlines() if REPORT.search(ln)]
    print(f"load-and-abort {a.seconds:.0f} s, {a.clients} clients: {stats['requests']} requests, "
          f"{stats['aborted']} aborted by the client, {stats['complete']} complete, "
          f"{stats['corrupted']} corrupted, {stats['errors']} client errors {stats['last_error']}; "
          f"kfwd exit {rc}, {len(reports)} sanitizer reports; {paths}; log {work / 'kfwd.log'}")
    for ln in reports[:5]:
        print("  " + ln)
    return 1 if stats["corrupted"] or reports or rc != 0 else 0


if __name__ == "__main__":
    sys.exit(main())
