#!/usr/bin/python3
"""The TLS rows of `make bench`: kfwd terminating TLS against HAProxy (`bind ... ssl crt`) and
nginx (`listen ... ssl`), each proxying to the same plain origin nginx, in one run.

Workloads (client -> proxy over TLS, proxy -> origin plain HTTP/1.1):
  download    one 1 GiB download with curl (TLS 1.3): MB/s and CPU s/GiB of the proxy process
  handshakes  new TLS 1.3 connections per second, one 1 KB request each
              (`openssl s_time -new -tls1_3`, ECDHE with the P-256 certificate)
  idle        N idle keep-alive TLS clients after one 1 KB request each: proxy RSS growth per client
  stall       200 TLS clients that stop reading 1 MiB into a 1 GiB download: proxy RSS and the
              proxy's socket queues

A throwaway CA and a P-256 certificate for 127.0.0.1 are made with `openssl` in the run's temp
directory. Uses scripts/bench.py's process tracking, origin and files (build/bench/www).
Output: a table on stdout and build/bench_tls.txt, the data in build/bench_tls.json.
Knobs: BENCH_QUICK=1, BENCH_PEERS=kfwd-tls,haproxy-tls,nginx-tls, BENCH_TLS_IDLE_N=N,
BENCH_TLS_KFWD_EXTRA="directive;directive" (more lines for kfwd's configuration, e.g.
"tls-copy-buffer-size 256k" to measure another bound).
Standard library only; run with Debian's /usr/bin/python3.
"""

import json
import os
import re
import resource
import shutil
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench  # noqa: E402
from bench import GIB, KFWD, MIB, PROCS, P, log  # noqa: E402

QUICK = bench.QUICK
RUNS = 3
HANDSHAKE_SECS = 5 if not QUICK else 2
IDLE_N = bench.env_int("BENCH_TLS_IDLE_N", 1000 if not QUICK else 300)
KFWD_EXTRA = [x.strip() for x in os.environ.get("BENCH_TLS_KFWD_EXTRA", "").split(";") if x.strip()]
STALL_N = 200
STALL_BYTES = MIB
SETTLE_SECS = 3.0
CLIENT_TIMEOUT = 30.0
# The stalled clients' receive buffer: small, so the proxy's side holds the backlog.
STALL_RCVBUF = 64 * 1024


def make_certs(d):
    """CA and a leaf for 127.0.0.1 (P-256) in @d; returns (ca, cert, key, combined-pem)."""
    def run(args):
        subprocess.run(["openssl", *args], cwd=d, check=True, capture_output=True, timeout=60)
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"]
    run(["req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", "/CN=bench-ca"])
    (d / "leaf.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    run(["req", *ec, "-keyout", "leaf.key", "-out", "leaf.csr", "-subj", "/CN=127.0.0.1"])
    run(["x509", "-req", "-in", "leaf.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial", "-days", "2",
         "-extfile", "leaf.ext", "-out", "leaf.pem"])
    os.chmod(d / "leaf.key", 0o600)
    both = d / "leaf+key.pem"  # HAProxy's crt: certificate and key in one file
    both.write_bytes((d / "leaf.pem").read_bytes() + (d / "leaf.key").read_bytes())
    os.chmod(both, 0o600)
    return d / "ca.pem", d / "leaf.pem", d / "leaf.key", both


def tls_get(port, path, ca, timeout=3.0):
    ctx = ssl.create_default_context(cafile=str(ca))
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as raw:
        with ctx.wrap_socket(raw, server_hostname="127.0.0.1") as s:
            s.sendall(b"GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n" % path.encode())
            data = b""
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


class TlsPeer(bench.Peer):
    def __init__(self, ctx, certs):
        super().__init__(ctx)
        self.ca, self.cert, self.keyfile, self.both = certs

    def launch(self, argv, workdir, port, metrics_port=None, env=None, get=None):
        return super().launch(argv, workdir, port, metrics_port, env,
                              get=lambda port, path: tls_get(port, path, self.ca))


class KfwdTls(TlsPeer):
    key = "kfwd-tls"
    label = "kfwd tls"

    def start(self):
        d = Path(tempfile.mkdtemp(prefix="kfwd-tls-", dir=self.ctx.tmp))
        port = bench.free_port()
        cfg = d / "kfwd.conf"
        cfg.write_text("\n".join([
            "listen 127.0.0.1:%d tls cert=%s key=%s" % (port, self.cert, self.keyfile),
            "upstream origin 127.0.0.1:%d" % self.ctx.up_port,
            "route / origin",
            "max-connections %d" % (IDLE_N + 2048),
            "client-timeout 600s",
            *KFWD_EXTRA,
        ]) + "\n")
        return self.launch([str(KFWD), "-c", str(cfg)], d, port)


class HaproxyTls(TlsPeer):
    key = "haproxy-tls"
    label = "haproxy ssl"

    def start(self):
        d = Path(tempfile.mkdtemp(prefix="haproxy-tls-", dir=self.ctx.tmp))
        return bench.launch_haproxy(self, d, bench.free_port(), IDLE_N + 2048,
                                    bind=" ssl crt %s alpn http/1.1" % self.both,
                                    global_extra="\n    tune.ssl.default-dh-param 2048")


class NginxTls(TlsPeer):
    key = "nginx-tls"
    label = "nginx ssl"

    def start(self):
        d = Path(tempfile.mkdtemp(prefix="nginx-tls-", dir=self.ctx.tmp))
        port = bench.free_port()
        return bench.launch_nginx(self, d, port, P['workers'], IDLE_N + 2048,
                                  bench.NGINX_PROXY.format(up_port=self.ctx.up_port) + f"""
    server {{
        listen 127.0.0.1:{port} ssl backlog=4096;
        ssl_certificate {self.cert};
        ssl_certificate_key {self.keyfile};
        # nginx 1.22's default leaves TLS 1.3 out.
        ssl_protocols TLSv1.2 TLSv1.3;{bench.NGINX_PROXY_LOCATION}
    }}""")


def run_download(ctx, inst, ca, out):
    size = P["dl_bytes"]
    path = "/" + bench.size_name(size).replace(" ", "").lower()
    for run in range(RUNS):
        s0 = bench.snap()
        p = PROCS.start(["curl", "-sS", "--http1.1", "--tlsv1.3", "--cacert", str(ca), "-o", "/dev/null",
                         "-w", "%{http_code} %{size_download} %{time_total}",
                         "https://127.0.0.1:%d%s" % (inst.port, path)],
                        "curl", stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            o, e = p.communicate(timeout=180)
        except subprocess.TimeoutExpired:
            PROCS.stop(p)
            out["errors"].append("download run %d: curl timed out" % (run + 1))
            continue
        PROCS.stop(p)
        s1 = bench.snap()
        c = bench.cpu_delta(s0, s1, [inst.sid])
        try:
            code, got, secs = o.decode().split()
            code, got, secs = int(code), int(got), float(secs)
        except ValueError:
            code, got, secs = 0, 0, 0.0
        if code != 200 or got != size:
            out["errors"].append("download run %d: HTTP %s, %s bytes %s" % (run + 1, code, got, e.decode().strip()))
            continue
        out["dl_mbps"].append(got / secs / 1e6)
        out["dl_cpu"].append(c["sid"][inst.sid] / (got / GIB))


def run_handshakes(ctx, inst, ca, out):
    for run in range(RUNS):
        r = subprocess.run(["openssl", "s_time", "-connect", "127.0.0.1:%d" % inst.port, "-new", "-tls1_3",
                            "-CAfile", str(ca), "-www", "/1k", "-time", str(HANDSHAKE_SECS)],
                           capture_output=True, text=True, timeout=HANDSHAKE_SECS + 30)
        m = re.search(r"(\d+) connections in (\d+) real seconds", r.stdout)
        if not m or int(m.group(1)) == 0:
            out["errors"].append("handshakes run %d: %s" % (run + 1, (r.stdout + r.stderr).strip()[-200:]))
            continue
        out["hs_per_s"].append(int(m.group(1)) / max(1, int(m.group(2))))


def open_clients(port, ca, n, path, stall):
    """@n TLS clients after one request each (idle: the whole 1 KB read; stall: 1 MiB read)."""
    ctx = ssl.create_default_context(cafile=str(ca))
    socks, failed = [], 0
    for _ in range(n):
        try:
            raw = socket.socket()
            if stall:
                raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, STALL_RCVBUF)
            raw.settimeout(CLIENT_TIMEOUT)
            raw.connect(("127.0.0.1", port))
            s = ctx.wrap_socket(raw, server_hostname="127.0.0.1")
            s.sendall(b"GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n" % path.encode())
            want = STALL_BYTES if stall else 1024
            data = b""
            while b"\r\n\r\n" not in data:
                data += s.recv(16384)
            body = len(data.partition(b"\r\n\r\n")[2])
            while body < want:
                chunk = s.recv(min(65536, want - body) if stall else 65536)
                if not chunk:
                    raise OSError("closed")
                body += len(chunk)
            socks.append(s)
        except (OSError, ValueError):
            failed += 1
    return socks, failed


def close_clients(socks):
    for s in socks:
        try:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
            s.close()
        except OSError:
            pass


def run_memory(ctx, peer, ca, out):
    for mode, n, path in (("idle", IDLE_N, "/1k"), ("stall", STALL_N, "/1gib")):
        for run in range(RUNS):
            inst = peer.start()
            try:
                rss0, _ = bench.proc_mem(inst.pids())
                socks, failed = open_clients(inst.port, ca, n, path, mode == "stall")
                time.sleep(SETTLE_SECS if mode == "stall" else 1.0)
                rss, _ = bench.proc_mem(inst.pids())
                own = bench.ss_mem("( sport = :%d or dport = :%d )" % (inst.port, ctx.up_port))
                close_clients(socks)
                if failed:
                    out["errors"].append("%s run %d: %d of %d clients failed" % (mode, run + 1, failed, n))
                if mode == "idle":
                    out["idle_per_client_kib"].append((rss - rss0) / max(1, len(socks)) / 1024)
                else:
                    out["stall_rss_mib"].append(rss / MIB)
                    if own:
                        out["stall_sockq_mib"].append((own["r"] + own["w"]) / MIB)
            finally:
                inst.stop()


FIGURES = [
    ("dl_mbps", "1 GiB download over TLS, MB/s (10^6 B/s)"),
    ("dl_cpu", "1 GiB download over TLS, CPU s per GiB, proxy process"),
    ("hs_per_s", "new TLS 1.3 connections per second, one 1 KB request each"),
    ("idle_per_client_kib", "idle keep-alive TLS clients (%d): proxy RSS per client, KiB" % IDLE_N),
    ("stall_rss_mib", "%d stalled TLS clients: proxy RSS, MiB" % STALL_N),
    ("stall_sockq_mib", "%d stalled TLS clients: proxy socket queues, MiB (ss r+w)" % STALL_N),
]


def render(peers, results):
    lines = ["TLS: client -> proxy over TLS 1.3 (P-256 certificate), proxy -> origin plain; "
             "median (min-max) of %d runs" % RUNS, ""]
    w = 62
    lines.append("%-*s" % (w, "") + "".join("%-24s" % p.label for p in peers))
    for key, label in FIGURES:
        row = "%-*s" % (w, label)
        for p in peers:
            vals = results.get(p.key, {}).get(key) or []
            if not p.available:
                cell = "n/a"
            elif not vals:
                cell = "-"
            else:
                cell = "%.1f (%.1f-%.1f)" % (statistics.median(vals), min(vals), max(vals))
            row += "%-24s" % cell
        lines.append(row)
    for p in peers:
        if not p.available:
            lines.append("%s: n/a: %s" % (p.label, p.reason))
        for e in results.get(p.key, {}).get("errors", []):
            lines.append("%s: %s" % (p.label, e))
    return "\n".join(lines) + "\n"


def main():
    ctx = bench.Ctx()
    ctx.tmp = tempfile.mkdtemp(prefix="kfwd-bench-tls-")
    signal.signal(signal.SIGTERM, lambda s, f: (_ for _ in ()).throw(SystemExit(128 + s)))
    results, peers = {}, []
    try:
        bench.raise_nofile()
        bench.ensure_tools()
        bench.ensure_files()
        certs = make_certs(Path(ctx.tmp))
        origin = bench.Origin(ctx).start()
        ctx.up_port = origin.port
        peers = [KfwdTls(ctx, certs), HaproxyTls(ctx, certs), NginxTls(ctx, certs)]
        only = bench.ONLY_PEERS
        if only:
            peers = [p for p in peers if p.key in only]
        for p in peers:
            try:
                p.start().stop()
            except RuntimeError as e:
                p.available, p.reason = False, str(e).replace(str(ctx.tmp) + "/", "")
            log("%s: %s" % (p.label, "available" if p.available else "n/a: " + p.reason))
        for p in peers:
            if not p.available:
                continue
            out = {k: [] for k, _ in FIGURES}
            out["errors"] = []
            results[p.key] = out
            inst = p.start()
            try:
                log("%s: download" % p.label)
                run_download(ctx, inst, certs[0], out)
                log("%s: handshakes" % p.label)
                run_handshakes(ctx, inst, certs[0], out)
            finally:
                inst.stop()
            log("%s: memory" % p.label)
            run_memory(ctx, p, certs[0], out)
        table = render(peers, results)
        sys.stdout.write(table)
        (bench.BUILD / "bench_tls.txt").write_text(table)
        (bench.BUILD / "bench_tls.json").write_text(json.dumps(
            {"runs": RUNS, "idle_n": IDLE_N, "stall_n": STALL_N, "results": results,
             "peers": {p.key: {"label": p.label, "available": p.available, "reason": p.reason} for p in peers}},
            indent=1) + "\n")
        return 0
    finally:
        PROCS.stop_all()
        shutil.rmtree(ctx.tmp, ignore_errors=True)


if __name__ == "__main__":
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    try:
        sys.exit(main())
    except SystemExit:
        raise
    except BaseException:
        traceback.print_exc()
        sys.exit(2)
