#!/usr/bin/python3
"""`make bench`: kfwd against a direct transfer, HAProxy and nginx.

Runs on one machine over 127.0.0.1 only.  The origin is a private nginx
instance serving files from build/bench/www (a 1 GiB file made once and
reused, and a 1 KB file).  Peers (columns of the table):

  direct        client -> origin, no proxy
  kfwd splice   build/kfwd, data-path splice
  kfwd splice w2  the same with `workers 2` (a master and two worker processes; [1] and [2] only)
  kfwd copy     build/kfwd, data-path copy
  kfwd sockmap  build/kfwd, data-path sockmap (the download and the paced streams: their bodies go
                through the sockmap)
  haproxy       HAProxy, mode http, option splice-request + splice-response
  nginx         nginx proxy_pass, proxy_buffering on, HTTP/1.1 upstream keepalive

Workloads: one 1 GiB download (curl), 1 KB keep-alive requests (wrk), 100 paced
8 Mbit/s streams, memory with many idle / stalled clients.  Each figure is the
median of >= 3 runs (or windows, see the streams workload) with min and max.
Output: one aligned table on stdout and in build/bench.txt, the same data in
build/bench.json.  BENCH_QUICK=1: reduced version (< 2 min).

How figures are measured: CPU "whole system" = busy jiffies of /proc/stat
(user+nice+system+irq+softirq, all CPUs; softirq and kworker work is charged
to no process); "less others' processes" subtracts the CPU that processes not
started by this harness used in the same window (/proc/PID/stat, incl. reaped
children); "proxy process" = utime+stime of the proxy's processes.  Memory:
VmRSS summed over the proxy's processes, /proc/net/sockstat TCP mem pages,
`ss -tm` skmem of the proxy's / the test's sockets, pipe contents by FIONREAD
on the proxy's pipes reopened through /proc/PID/fd.  Runs of all peers are
interleaved so slow drifts in background load hit every peer alike.
Knobs: BENCH_QUICK=1, BENCH_STREAM_RUNS=N (independent 20 s stream runs),
BENCH_PROXY_WORKERS=N, BENCH_KFWD_PIPE_SIZE=1m, BENCH_KFWD_CONFIG="max-memory 0;..."
(more kfwd configuration lines), BENCH_IDLE_N=N, and for
development BENCH_PEERS=direct,haproxy BENCH_WORKLOADS=download,wrk,streams,memory
(memory = idle,stalled: rows [4] and [5], which can also be asked for alone).

Every process started is tracked and killed at the end (also on Ctrl-C or an
exception); configs and logs live in a temp dir (/tmp/kfwd-bench-*) that is
removed at the end.  Standard library only; run with Debian's /usr/bin/python3.
"""

import datetime
import fcntl
import hashlib
import http.client
import json
import os
import platform
import re
import resource
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import termios
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BUILD = ROOT / "build"
BENCH_DIR = BUILD / "bench"
WWW = BENCH_DIR / "www"
KFWD = BUILD / "kfwd"
SCRIPTS = ROOT / "scripts"
PY = "/usr/bin/python3"

GIB = 1 << 30
MIB = 1 << 20
HZ = os.sysconf("SC_CLK_TCK")
NCPU = os.cpu_count() or 1
PAGE = os.sysconf("SC_PAGE_SIZE")
F_GETPIPE_SZ = 1032
PF_KTHREAD = 0x00200000


def env_flag(name):
    return os.environ.get(name, "").strip().lower() not in ("", "0", "no", "false", "off")


def env_int(name, default):
    v = os.environ.get(name, "").strip()
    return int(v) if v else default


QUICK = env_flag("BENCH_QUICK")

# Workload parameters.  Full: < 10 min on 2 cores; quick: < 2 min.
P = {
    "dl_runs": 5 if not QUICK else 3,
    "dl_bytes": GIB if not QUICK else GIB // 2,
    "wrk_runs": 5 if not QUICK else 3,
    "wrk_secs": 5 if not QUICK else 1,
    "wrk_warm_secs": 1 if not QUICK else 0,
    "wrk_threads": 1,
    "wrk_conns": 50,
    "st_n": 100,
    "st_rate": 1_000_000,          # bytes/s per stream = 8 Mbit/s
    "st_warm": 2.0 if not QUICK else 0.7,
    "st_window": 5.0 if not QUICK else 5.0 / 3,
    "st_windows": 4 if not QUICK else 3,
    "st_runs": env_int("BENCH_STREAM_RUNS", 1),
    "mem_runs": 3,
    "idle_n": 10_000 if not QUICK else 2_000,
    "stall_n": 200,
    "stall_bytes": MIB,
    "workers": env_int("BENCH_PROXY_WORKERS", 1),
}
P["limit"] = P["idle_n"] + 2048           # proxy connection limits (all peers alike)
if env_int("BENCH_IDLE_N", 0):
    P["idle_n"] = env_int("BENCH_IDLE_N", 0)
    P["limit"] = P["idle_n"] + 2048
# For development: BENCH_PEERS=direct,haproxy  BENCH_WORKLOADS=download,wrk,streams,memory
ONLY_PEERS = [x for x in os.environ.get("BENCH_PEERS", "").replace(" ", "").split(",") if x]
WORKLOADS = [x for x in os.environ.get("BENCH_WORKLOADS", "download,wrk,streams,memory").replace(" ", "").split(",")
             if x]
# the memory cases to run: "memory" is both rows, [4] idle and [5] stalled
MEMORY_MODES = [m for m, w in (("idle", "idle"), ("stall", "stalled")) if "memory" in WORKLOADS or w in WORKLOADS]
NOFILE = 262144


def log(msg):
    print("[bench %s] %s" % (time.strftime("%H:%M:%S"), msg), file=sys.stderr, flush=True)


# --------------------------------------------------------------------------
# process tracking

class Procs:
    """Every child runs in its own session (pgid == pid) and is killed by id."""

    def __init__(self):
        self.procs = []
        self.sids = set()
        self.unclean = []

    def start(self, argv, name, **kw):
        kw.setdefault("stdin", subprocess.DEVNULL)
        p = subprocess.Popen(argv, start_new_session=True, **kw)
        p.bench_name = name
        self.procs.append(p)
        self.sids.add(p.pid)
        return p

    def stop(self, p, timeout=5.0, sig=signal.SIGTERM):
        if p.poll() is None:
            try:
                os.killpg(p.pid, sig)
            except ProcessLookupError:
                pass
            try:
                p.wait(timeout)
            except subprocess.TimeoutExpired:
                self.unclean.append("%s (pid %d) ignored %s for %.0fs" % (p.bench_name, p.pid, sig.name, timeout))
                try:
                    os.killpg(p.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                p.wait()
        # reap anything left in the child's process group (e.g. nginx workers)
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        for f in (p.stdout, p.stdin, p.stderr):
            if f:
                try:
                    f.close()
                except OSError:
                    pass
        if p in self.procs:
            self.procs.remove(p)

    def stop_all(self):
        for p in reversed(list(self.procs)):
            try:
                self.stop(p, timeout=3.0)
            except Exception:  # keep going: every process must go
                pass


PROCS = Procs()


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_get(port, path, timeout=3.0):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        c.request("GET", path)
        r = c.getresponse()
        return r.status, r.read()
    finally:
        c.close()


def tail(path, n=3):
    try:
        lines = [l.strip() for l in Path(path).read_text(errors="replace").splitlines() if l.strip()]
    except OSError:
        return ""
    return " | ".join(lines[-n:])


# --------------------------------------------------------------------------
# measurement: /proc

def read_cpu():
    """System-wide jiffies: (busy, total, steal).  busy excludes idle, iowait, steal."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    v += [0] * (10 - len(v))
    user, nice, system, idle, iowait, irq, softirq, steal = v[:8]
    busy = user + nice + system + irq + softirq      # guest is already inside user
    return busy, busy + idle + iowait + steal, steal


def scan_procs():
    """pid -> (sid, flags, self_ticks, children_ticks, starttime)."""
    out = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % d, "rb") as f:
                data = f.read()
        except OSError:
            continue
        f = data[data.rindex(b")") + 2:].split()
        out[int(d)] = (int(f[3]), int(f[6]), int(f[11]) + int(f[12]), int(f[13]) + int(f[14]), int(f[19]))
    return out


def snap():
    return {"t": time.monotonic(), "cpu": read_cpu(), "procs": scan_procs()}


def cpu_delta(s0, s1, sids=()):
    """CPU seconds between two snapshots: whole system, per session id, foreign."""
    wall = s1["t"] - s0["t"]
    busy = (s1["cpu"][0] - s0["cpu"][0]) / HZ
    total = (s1["cpu"][1] - s0["cpu"][1]) / HZ
    steal = (s1["cpu"][2] - s0["cpu"][2]) / HZ
    p0 = s0["procs"]
    per_sid = {sid: 0 for sid in sids}
    ours = PROCS.sids | {os.getpid()}
    # Other people's processes: self time of the live ones, plus children time
    # (what short-lived processes, e.g. compilers, leave in their parent's
    # cutime) minus, for processes that exited in the window, the time they
    # had already used at s0 (their parent's cutime gets their whole life).
    foreign = 0
    p1 = s1["procs"]
    for pid, (sid, flags, selft, childt, start) in p1.items():
        old = p0.get(pid)
        same = old is not None and old[4] == start
        dself = selft - (old[2] if same else 0)
        if sid in per_sid:
            per_sid[sid] += dself
        if flags & PF_KTHREAD or sid in ours or pid in ours:
            continue
        foreign += dself + childt - (old[3] if same else 0)
    for pid, (sid, flags, selft, childt, start) in p0.items():
        new = p1.get(pid)
        if (new is None or new[4] != start) and not (flags & PF_KTHREAD or sid in ours or pid in ours):
            foreign -= selft + childt
    return {
        "wall": wall, "busy": busy, "total": total, "steal": steal,
        "sid": {k: v / HZ for k, v in per_sid.items()},
        "foreign": max(0, foreign) / HZ,
        # share of the machine that other people's processes used in the window
        "foreign_pct": 100.0 * max(0, foreign) / HZ / (total or 1),
    }


def session_pids(sid):
    out = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % d, "rb") as f:
                data = f.read()
        except OSError:
            continue
        if int(data[data.rindex(b")") + 2:].split()[3]) == sid:
            out.append(int(d))
    return out


def proc_mem(pids):
    rss = pss = 0
    for pid in pids:
        try:
            with open("/proc/%d/status" % pid) as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        rss += int(line.split()[1]) * 1024
            with open("/proc/%d/smaps_rollup" % pid) as f:
                for line in f:
                    if line.startswith("Pss:"):
                        pss += int(line.split()[1]) * 1024
        except OSError:
            pass
    return rss, pss


def wakeups(pids):
    """Voluntary context switches of the pids: each is a sleep in epoll_wait ended by a wake-up."""
    n = 0
    for pid in pids:
        try:
            with open("/proc/%d/status" % pid) as f:
                for line in f:
                    if line.startswith("voluntary_ctxt_switches:"):
                        n += int(line.split()[1])
        except OSError:
            pass
    return n


def pipe_mem(pids):
    """Bytes buffered in (FIONREAD) and capacity of (F_GETPIPE_SZ) the pipes the pids hold."""
    seen = set()
    buffered = capacity = 0
    buf = bytearray(4)
    for pid in pids:
        fddir = "/proc/%d/fd" % pid
        try:
            fds = os.listdir(fddir)
        except OSError:
            continue
        for fd in fds:
            try:
                target = os.readlink("%s/%s" % (fddir, fd))
            except OSError:
                continue
            if not target.startswith("pipe:") or target in seen:
                continue
            seen.add(target)
            try:
                f = os.open("%s/%s" % (fddir, fd), os.O_RDONLY | os.O_NONBLOCK)
            except OSError:
                continue
            try:
                fcntl.ioctl(f, termios.FIONREAD, buf)
                buffered += int.from_bytes(buf, sys.byteorder)
                capacity += fcntl.fcntl(f, F_GETPIPE_SZ)
            except OSError:
                pass
            finally:
                os.close(f)
    return len(seen), buffered, capacity


def meminfo():
    out = {}
    with open("/proc/meminfo") as f:
        for line in f:
            k, v = line.split(":", 1)
            out[k] = int(v.split()[0]) * 1024
    return out


def tcp_pressure():
    """TCP's memory-pressure flag from /proc/net/protocols, and tcp_mem (bytes)."""
    press = None
    try:
        with open("/proc/net/protocols") as f:
            cols = f.readline().split()
            for line in f:
                w = line.split()
                if w and w[0] == "TCP":
                    press = w[cols.index("press")]
        lim = [int(x) * PAGE for x in Path("/proc/sys/net/ipv4/tcp_mem").read_text().split()]
    except (OSError, ValueError, IndexError):
        lim = []
    return press, lim


def sockstat_tcp():
    with open("/proc/net/sockstat") as f:
        for line in f:
            if line.startswith("TCP:"):
                w = line.split()
                d = dict(zip(w[1::2], (int(x) for x in w[2::2])))
                return d.get("inuse", 0), d.get("mem", 0) * PAGE
    return 0, 0


SKMEM = re.compile(r"skmem:\(([^)]*)\)")


def ss_mem(filt):
    """Socket memory from `ss -tm` for the sockets matching @filt:
    {"n": sockets, "r": rmem_alloc, "w": wmem_queued, "f": forward_alloc} (bytes, truesize)."""
    tot = {"n": 0, "r": 0, "w": 0, "f": 0}
    try:
        out = subprocess.run(["ss", "-tanmH", filt], capture_output=True, text=True, timeout=20).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None
    for m in SKMEM.finditer(out):
        tot["n"] += 1
        for item in m.group(1).split(","):
            k = item.rstrip("0123456789")
            if k in tot:
                tot[k] += int(item[len(k):] or 0)
    return tot


# --------------------------------------------------------------------------
# peers

class Instance:
    def __init__(self, peer, port, proc=None, workdir=None, metrics_port=None, logf=None):
        self.peer, self.port, self.proc, self.workdir = peer, port, proc, workdir
        self.metrics_port, self.logf = metrics_port, logf

    @property
    def sid(self):
        return self.proc.pid if self.proc else None

    def pids(self):
        return session_pids(self.sid) if self.proc else []

    def alive(self):
        return self.proc is None or self.proc.poll() is None

    def stop(self):
        if self.proc:
            PROCS.stop(self.proc)
            self.proc = None

    def metrics(self):
        if not self.metrics_port:
            return {}
        try:
            st, body = http_get(self.metrics_port, "/metrics")
        except OSError:
            return {}
        out = {}
        for line in body.decode(errors="replace").splitlines():
            if line.startswith("#") or not line.strip():
                continue
            try:
                k, v = line.rsplit(None, 1)
                out[k] = float(v)
            except ValueError:
                pass
        return out


def wait_ready(inst, timeout=10.0, get=None):
    """Until the instance answers GET /1k with the right 1 KB body; get(port, path) -> (status,
    body) asks (http_get by default). None, or what went wrong."""
    deadline = time.monotonic() + timeout
    last = "no answer"
    while time.monotonic() < deadline:
        if not inst.alive():
            return "exited with status %s: %s" % (inst.proc.returncode, tail(inst.logf))
        try:
            st, body = get(inst.port, "/1k") if get else http_get(inst.port, "/1k", timeout=2)
            if st == 200 and len(body) == 1024:
                return None
            last = "GET /1k -> %d, %d bytes" % (st, len(body))
        except (OSError, ValueError, IndexError) as e:
            last = "GET /1k: %s" % e
        time.sleep(0.05)
    return "not ready after %.0fs (%s): %s" % (timeout, last, tail(inst.logf))


class Peer:
    key = label = ""
    kind = "proxy"
    # kfwd's sockmap path carries tunnels and long response bodies (the connection then closes):
    # such a peer runs the download and the paced streams (1 GiB bodies) and sits out the
    # small-body HTTP workloads and the memory rows,
    # which would measure splice.
    tunnel_only = False
    # The workloads this peer runs; None: every one.
    workloads = None

    def __init__(self, ctx):
        self.ctx = ctx
        self.available = True
        self.reason = None
        self.version = None
        self.notes = []

    def start(self):
        raise NotImplementedError

    def launch(self, argv, workdir, port, metrics_port=None, env=None, get=None):
        """Start argv in workdir and wait until it serves port (wait_ready() with get)."""
        logf = workdir / "stderr.log"
        with open(logf, "wb") as lf:
            proc = PROCS.start(argv, self.key, stdout=lf, stderr=subprocess.STDOUT, cwd=str(workdir), env=env)
        inst = Instance(self, port, proc, workdir, metrics_port, logf)
        err = wait_ready(inst, get=get)
        if err:
            inst.stop()
            raise RuntimeError(err)
        return inst


NGINX_PROXY = """
    # proxy_buffering stays on (default); no spooling to disk, else each stalled
    # client would make nginx write up to 1 GiB into a temp file.
    proxy_max_temp_file_size 0;
    proxy_read_timeout 600s;
    proxy_send_timeout 600s;
    send_timeout 600s;
    upstream origin {{
        server 127.0.0.1:{up_port};
        keepalive 64;
        keepalive_requests 1000000;
        keepalive_timeout 600s;
    }}"""
NGINX_PROXY_LOCATION = """
        location / {
            proxy_pass http://origin;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }"""


def launch_nginx(peer, d, port, workers, worker_connections, http):
    """nginx with a master and @workers workers in @d; @http: the http block's own directives
    and servers. Returns the Instance once it serves @port."""
    (d / "nginx.conf").write_text(f"""
worker_processes {workers};
worker_rlimit_nofile {NOFILE};
daemon off;
master_process on;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections {worker_connections}; use epoll; }}
http {{
    access_log off;
    default_type application/octet-stream;
    keepalive_timeout 600s;
    keepalive_requests 1000000;
    client_body_temp_path {d}/body; proxy_temp_path {d}/proxy; fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi; scgi_temp_path {d}/scgi;
{http}
}}
""")
    return peer.launch([peer.ctx.nginx, "-p", str(d), "-c", str(d / "nginx.conf"), "-e", str(d / "error.log")],
                       d, port)


class Direct(Peer):
    key, label, kind = "direct", "direct", "direct"

    def start(self):
        return Instance(self, self.ctx.up_port)


class Origin(Peer):
    key, label = "origin", "origin nginx"

    def start(self):
        d = Path(tempfile.mkdtemp(prefix="origin-", dir=self.ctx.tmp))
        port = free_port()
        return launch_nginx(self, d, port, 1, 2 * P['limit'] + 4096, f"""
    sendfile on;
    tcp_nopush on;
    open_file_cache max=64 inactive=600s;
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        root {WWW};
        location / {{ }}
    }}""")


class Nginx(Peer):
    key, label = "nginx", "nginx"

    def start(self):
        d = Path(tempfile.mkdtemp(prefix="nginx-", dir=self.ctx.tmp))
        port = free_port()
        return launch_nginx(self, d, port, P['workers'], P['limit'], NGINX_PROXY.format(up_port=self.ctx.up_port) + f"""
    server {{
        listen 127.0.0.1:{port} backlog=4096;{NGINX_PROXY_LOCATION}
    }}""")


def launch_haproxy(peer, d, port, maxconn, *, bind="", global_extra="", defaults_extra="", server_extra=""):
    """HAProxy in @d, maxconn @maxconn, in front of the origin; the extras end their sections'
    lines (each starts with a newline, bind and server_extra with a blank)."""
    (d / "haproxy.cfg").write_text(f"""
global
    maxconn {maxconn}
    nbthread {P['workers']}
    # RLIMIT_NOFILE may be capped below 2 x maxconn here (no CAP_SYS_RESOURCE):
    # warn instead of refusing to start; idle clients need one fd each.
    no strict-limits{global_extra}
defaults
    mode http
    timeout connect 5s
    timeout client 600s
    timeout server 600s
    timeout http-request 600s
    timeout http-keep-alive 600s{defaults_extra}
    maxconn {maxconn}
frontend fe
    bind 127.0.0.1:{port}{bind}
    default_backend be
backend be
    http-reuse safe
    server origin 127.0.0.1:{peer.ctx.up_port}{server_extra}
""")
    return peer.launch([peer.ctx.haproxy, "-db", "-f", str(d / "haproxy.cfg")], d, port)


class Haproxy(Peer):
    key, label = "haproxy", "haproxy"

    def start(self):
        d = Path(tempfile.mkdtemp(prefix="haproxy-", dir=self.ctx.tmp))
        return launch_haproxy(self, d, free_port(), P['limit'],
                              defaults_extra="\n    option splice-request\n    option splice-response",
                              server_extra=" maxconn %d" % P['limit'])


def runs(peer, workload):
    """Does @peer take part in @workload (a tunnel-only peer runs only the download and the
    paced streams, whose bodies go through the sockmap)?"""
    if peer.workloads is not None and workload not in peer.workloads:
        return False
    return workload in ("download", "streams") or not peer.tunnel_only


class Kfwd(Peer):
    def __init__(self, ctx, path, workers=1):
        super().__init__(ctx)
        self.path = path
        self.workers = workers
        self.key = "kfwd-" + path + ("-w%d" % workers if workers > 1 else "")
        self.label = "kfwd " + path + (" w%d" % workers if workers > 1 else "")
        if workers > 1:
            self.workloads = ("download", "wrk")
            self.notes.append("workers %d: a master and %d worker processes (SO_REUSEPORT); runs [1] and [2] "
                              "only; the load generator shares the same cores" % (workers, workers))
        self.tunnel_only = path.startswith("sockmap")
        if self.tunnel_only:
            self.notes.append("sockmap carries tunnels and bodies of at least sockmap-body-min (1 MiB): the "
                              "download's and the streams' bodies go through it; the small-body HTTP "
                              "workloads would measure splice and are not run")

    def config(self, d, port, mport):
        cfg = d / "kfwd.conf"
        lines = [
            "listen 127.0.0.1:%d" % port,
            "upstream origin 127.0.0.1:%d" % self.ctx.up_port,
            "route / origin",
            "data-path %s" % self.path,
            "max-connections %d" % P["limit"],
            "client-timeout 600s",
            # the stalled clients keep their windows shut while the figures settle; like
            # HAProxy's and nginx's, these connections have no TCP_USER_TIMEOUT
            "tcp-user-timeout off",
            "metrics-listen 127.0.0.1:%d" % mport,
            # idle upstream connections kept, as nginx's `keepalive 64` (HAProxy keeps all):
            # the default 32 would close and reopen some under wrk's 50 connections
            "upstream-max-idle 64",
            "workers %d" % self.workers,
        ]
        if self.tunnel_only:
            lines += ["connect on", "allow 127.0.0.0/8", "bpf-pin-dir /sys/fs/bpf/kfwd-bench"]
        if os.environ.get("BENCH_KFWD_PIPE_SIZE"):
            lines.append("pipe-size %s" % os.environ["BENCH_KFWD_PIPE_SIZE"])
        # more configuration lines for an A/B run, `;`-separated (e.g. "max-memory 0")
        lines += [x.strip() for x in os.environ.get("BENCH_KFWD_CONFIG", "").split(";") if x.strip()]
        cfg.write_text("\n".join(lines) + "\n")
        return cfg

    def check_config(self, path):
        """(rc, last line of output) of `kfwd -t -c CONFIG` for data-path @path, rc None on timeout."""
        d = Path(tempfile.mkdtemp(prefix="kfwd-%s-t-" % path, dir=self.ctx.tmp))
        saved, self.path = self.path, path
        try:
            cfg = self.config(d, free_port(), free_port())
        finally:
            self.path = saved
        try:
            r = subprocess.run([str(KFWD), "-t", "-c", str(cfg)], capture_output=True, text=True, timeout=15,
                               start_new_session=True, cwd=str(d))
        except subprocess.TimeoutExpired:
            return None, "timed out"
        out = (r.stderr + r.stdout).strip().replace(str(d) + "/", "")
        return r.returncode, (out.splitlines()[-1] if out else "exit status %d" % r.returncode)

    def probe(self):
        """Sets available/reason: missing binary, config rejected by -t, or failure to serve."""
        if not os.access(KFWD, os.X_OK):
            self.available, self.reason = False, "build/kfwd missing"
            return
        # Does -t work at all?  A plain splice config must pass it.
        base_rc, base_out = self.check_config("splice")
        if base_rc == 0:
            rc, out = self.check_config(self.path) if self.path != "splice" else (0, "")
            if rc != 0:
                self.available, self.reason = False, "kfwd -t rejects data-path %s: %s" % (self.path, out)
                return
        else:
            self.notes.append("kfwd -t unusable (%s); probed by starting it" % base_out)
        try:
            inst = self.start()
        except RuntimeError as e:
            self.available, self.reason = False, "kfwd with data-path %s does not serve: %s" % (
                self.path, str(e).replace(str(self.ctx.tmp) + "/", ""))
            return
        inst.stop()

    def start(self):
        d = Path(tempfile.mkdtemp(prefix=self.key + "-", dir=self.ctx.tmp))
        port, mport = free_port(), free_port()
        cfg = self.config(d, port, mport)
        env = None
        if self.ctx.malloc_count:
            # allocations per request: counted by scripts/malloc_count.c into a shared file
            env = dict(os.environ, LD_PRELOAD=str(self.ctx.malloc_count),
                       KFWD_MALLOC_COUNT_FILE=str(d / "malloc_count"))
        return self.launch([str(KFWD), "-c", str(cfg)], d, port, metrics_port=mport, env=env)


# --------------------------------------------------------------------------
# results

class Results:
    def __init__(self):
        self.figures = {}      # fig -> {"label", "unit", "section", "ratios", "peers": {key: [values]}}
        self.order = []
        self.raw = {}          # workload -> peer -> list of run dicts
        self.errors = []

    def define(self, fig, section, label, unit, ratios=("direct", "haproxy"), higher_better=None):
        self.figures[fig] = {"section": section, "label": label, "unit": unit, "ratios": list(ratios),
                             "higher_better": higher_better, "peers": {}, "flags": {}}
        self.order.append(fig)

    def add(self, fig, peer, value, foreign_pct=None):
        f = self.figures[fig]
        f["peers"].setdefault(peer, []).append(value)
        if foreign_pct is not None:
            f["flags"].setdefault(peer, []).append(foreign_pct)

    def rawrun(self, workload, peer, d):
        self.raw.setdefault(workload, {}).setdefault(peer, []).append(d)

    def stat(self, fig, peer):
        vals = [v for v in self.figures[fig]["peers"].get(peer, []) if v is not None]
        if not vals:
            return None
        med = statistics.median(vals)
        fp = self.figures[fig]["flags"].get(peer, [])
        return {
            "median": med, "min": min(vals), "max": max(vals), "n": len(vals), "runs": vals,
            "spread_pct": (100.0 * (max(vals) - min(vals)) / abs(med)) if med else 0.0,
            "max_foreign_cpu_pct": max(fp) if fp else None,
        }


def size_name(n):
    return "%d GiB" % (n // GIB) if n % GIB == 0 else "%d MiB" % (n // MIB)


def digits(v):
    a = abs(v)
    return 0 if a >= 100 else 1 if a >= 10 else 2 if a >= 1 else 3


def fmt(v, nd=None):
    if v is None:
        return "n/a"
    return "%.*f" % (digits(v) if nd is None else nd, v)


NOISY_SPREAD = 10.0       # % (max-min)/median
BUSY_FOREIGN = 5.0        # % of the machine used by other processes during a run


def render(ctx, res, peers):
    cols = [p for p in peers if p.key != "origin"]
    head = ctx.header_lines()
    rows = []
    cur = None
    for fig in res.order:
        f = res.figures[fig]
        if not any(v is not None for vals in f["peers"].values() for v in vals):
            continue  # a workload not run (BENCH_WORKLOADS), or a figure no peer has
        if f["section"] != cur:
            cur = f["section"]
            rows.append((cur, None))
        cells = []
        stats = {}
        for p in cols:
            s = res.stat(fig, p.key) if p.available else None
            stats[p.key] = s
            if not p.available:
                cells.append("n/a")
            elif s is None:
                cells.append("-")
            else:
                mark = ""
                if s["spread_pct"] > NOISY_SPREAD:
                    mark += "~"
                if s["max_foreign_cpu_pct"] is not None and s["max_foreign_cpu_pct"] > BUSY_FOREIGN:
                    mark += "*"
                nd = digits(s["median"])
                cells.append("%s [%s-%s]%s" % (fmt(s["median"]), fmt(s["min"], nd), fmt(s["max"], nd), mark))
        rows.append(("  " + f["label"], cells))
        for ref in f["ratios"]:
            rs = stats.get(ref)
            if not rs or not rs["median"]:
                continue
            rc = []
            for p in cols:
                s = stats.get(p.key)
                rc.append("%.2f" % (s["median"] / rs["median"]) if s and p.key != ref else ("1" if s else ""))
            rows.append(("    ratio vs %s" % ref, rc))
    label_w = max([len(r[0]) for r in rows if r[1] is not None] + [33]) + 2
    col_w = [max([len(p.label)] + [len(r[1][i]) for r in rows if r[1]]) for i, p in enumerate(cols)]
    out = list(head)
    out.append("")
    line = "%-*s" % (label_w, "figure: median [min-max] of runs") + "  ".join("%-*s" % (w, p.label) for w, p in zip(col_w, cols))
    out.append(line.rstrip())
    out.append("-" * len(line.rstrip()))
    for label, cells in rows:
        if cells is None:
            out.append(label)
            continue
        out.append(("%-*s" % (label_w, label) + "  ".join("%-*s" % (w, c) for w, c in zip(col_w, cells))).rstrip())
    out.append("-" * len(line.rstrip()))
    out.append("ratio = peer median / reference median.  ~ = noisy: (max-min)/median > %.0f%%.  "
               "* = other processes used > %.0f%% of the machine during a run." % (NOISY_SPREAD, BUSY_FOREIGN))
    for p in cols:
        if not p.available:
            out.append("%s: n/a: %s" % (p.label, p.reason))
    for p in cols:
        for n in p.notes:
            out.append("%s: %s" % (p.label, n))
    for n in ctx.notes:
        out.append(n)
    for e in res.errors:
        out.append("error: " + e)
    return "\n".join(out) + "\n"


# --------------------------------------------------------------------------
# workloads

def dead(res, key, inst):
    """True (and one error recorded) when a long-lived peer has exited."""
    if inst.alive():
        return False
    msg = "%s exited during the run (status %s): %s" % (key, inst.proc.returncode, tail(inst.logf))
    if msg not in res.errors:
        res.errors.append(msg)
    return True


def run_download(ctx, res, live):
    sec = "[1] one %s download: curl -> peer -> origin, %d runs" % (size_name(P["dl_bytes"]), P["dl_runs"])
    res.define("dl.mbps", sec, "throughput, MB/s (10^6 B/s)", "MB/s")
    res.define("dl.sys_cpu", sec, "CPU s per GiB, whole system (/proc/stat)", "s/GiB")
    res.define("dl.sys_cpu_net", sec, "CPU s per GiB, system less others' processes", "s/GiB")
    res.define("dl.proxy_cpu", sec, "CPU s per GiB, proxy process (utime+stime)", "s/GiB", ratios=("haproxy",))
    url_path = "/" + size_name(P["dl_bytes"]).replace(" ", "").lower()
    before = {k: i.metrics() for k, i in live.items()}
    for run in range(P["dl_runs"]):
        for key, inst in live.items():
            if dead(res, key, inst):
                continue
            s0 = snap()
            ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
            target = ["http://127.0.0.1:%d%s" % (inst.port, url_path)]
            p = PROCS.start(["curl", "-sS", "--http1.1", "-o", "/dev/null", "-w",
                             "%{http_code} %{size_download} %{time_total}"] + target,
                            "curl", stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            try:
                out, err = p.communicate(timeout=120)
            except subprocess.TimeoutExpired:
                PROCS.stop(p)
                res.errors.append("%s download run %d: curl timed out" % (key, run + 1))
                continue
            PROCS.stop(p)
            s1 = snap()
            ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
            c = cpu_delta(s0, s1, [inst.sid] if inst.sid else [])
            try:
                code, size, secs = out.decode().split()
                code, size, secs = int(code), int(size), float(secs)
            except ValueError:
                code, size, secs = 0, 0, 0.0
            if code != 200 or size != P["dl_bytes"]:
                res.errors.append("%s download run %d: HTTP %s, %s bytes %s" % (key, run + 1, code, size,
                                                                              err.decode().strip()))
                continue
            gib = size / GIB
            proxy = c["sid"].get(inst.sid) if inst.sid else None
            client = (ru1.ru_utime + ru1.ru_stime) - (ru0.ru_utime + ru0.ru_stime)
            res.add("dl.mbps", key, size / secs / 1e6, c["foreign_pct"])
            res.add("dl.sys_cpu", key, c["busy"] / gib, c["foreign_pct"])
            res.add("dl.sys_cpu_net", key, max(0.0, c["busy"] - c["foreign"]) / gib, c["foreign_pct"])
            if proxy is not None:
                res.add("dl.proxy_cpu", key, proxy / gib, c["foreign_pct"])
            res.rawrun("download", key, {"seconds": secs, "bytes": size, "wall": c["wall"],
                                         "system_busy_s": c["busy"], "steal_s": c["steal"], "proxy_cpu_s": proxy,
                                         "curl_cpu_s": client, "foreign_cpu_s": c["foreign"],
                                         "foreign_pct": c["foreign_pct"]})
    for key, inst in live.items():
        if inst.metrics_port:
            after = inst.metrics()
            delta = {k: v - before[key].get(k, 0) for k, v in after.items()
                     if k.startswith("kfwd_bytes_") and v - before[key].get(k, 0) > 0}
            res.rawrun("download_kfwd_metrics_delta", key, delta)
            inst.peer.dl_metrics = delta


def parse_wrk(text):
    def dur(s):
        m = re.match(r"([\d.]+)(us|ms|s|m)$", s)
        if not m:
            return None
        return float(m.group(1)) * {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 6e4}[m.group(2)]
    rps = p99 = None
    m = re.search(r"Requests/sec:\s+([\d.]+)", text)
    if m:
        rps = float(m.group(1))
    m = re.search(r"^\s+99%\s+(\S+)", text, re.M)
    if m:
        p99 = dur(m.group(1))
    errs = []
    m = re.search(r"Socket errors: (.*)", text)
    if m:
        errs.append("socket errors: " + m.group(1).strip())
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    if m:
        errs.append("non-2xx: " + m.group(1))
    m = re.search(r"(\d+) requests in", text)
    reqs = int(m.group(1)) if m else None
    return rps, p99, reqs, errs


def wrk(port, secs):
    argv = ["wrk", "-t%d" % P["wrk_threads"], "-c%d" % P["wrk_conns"], "-d%ds" % secs, "--latency",
            "http://127.0.0.1:%d/1k" % port]
    p = PROCS.start(argv, "wrk", stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        out, _ = p.communicate(timeout=secs + 30)
    except subprocess.TimeoutExpired:
        PROCS.stop(p)
        return None, "wrk timed out"
    PROCS.stop(p)
    return out.decode(errors="replace"), None


def run_wrk(ctx, res, live):
    sec = "[2] 1 KB responses, keep-alive: wrk -t%d -c%d -d%ds --latency, %d runs" % (
        P["wrk_threads"], P["wrk_conns"], P["wrk_secs"], P["wrk_runs"])
    res.define("wrk.rps", sec, "requests/s", "req/s")
    res.define("wrk.p99", sec, "p99 latency, ms", "ms")
    res.define("wrk.cpu_us", sec, "proxy CPU per request, us (utime+stime)", "us", ratios=("haproxy",))
    for key, inst in live.items():
        if P["wrk_warm_secs"]:
            wrk(inst.port, P["wrk_warm_secs"])       # warm-up: keep-alive pools, caches
    for run in range(P["wrk_runs"]):
        for key, inst in live.items():
            if dead(res, key, inst):
                continue
            s0 = snap()
            out, err = wrk(inst.port, P["wrk_secs"])
            s1 = snap()
            if err:
                res.errors.append("%s wrk run %d: %s" % (key, run + 1, err))
                continue
            rps, p99, reqs, errs = parse_wrk(out)
            c = cpu_delta(s0, s1, [inst.sid] if inst.sid else [])
            if errs:
                res.errors.append("%s wrk run %d: %s" % (key, run + 1, "; ".join(errs)))
            if rps is None:
                res.errors.append("%s wrk run %d: unparsable output: %s" % (key, run + 1, out[-200:]))
                continue
            res.add("wrk.rps", key, rps, c["foreign_pct"])
            res.add("wrk.p99", key, p99, c["foreign_pct"])
            proxy = c["sid"].get(inst.sid) if inst.sid else None
            if proxy and reqs:
                res.add("wrk.cpu_us", key, proxy * 1e6 / reqs, c["foreign_pct"])
            res.rawrun("wrk", key, {"rps": rps, "p99_ms": p99, "requests": reqs, "errors": errs,
                                    "system_busy_s": c["busy"], "wall": c["wall"], "proxy_cpu_s": proxy,
                                    "proxy_cpu_us_per_req": (proxy * 1e6 / reqs) if proxy and reqs else None,
                                    "foreign_pct": c["foreign_pct"]})
    count_wrk(ctx, res, live)


def malloc_counts(inst):
    """(malloc, calloc, realloc, free) calls of a kfwd started with the counter, or None."""
    path = inst.workdir / "malloc_count" if inst.workdir else None
    try:
        return struct.unpack("<4Q", path.read_bytes()[:32]) if path else None
    except (OSError, struct.error):
        return None


def count_wrk(ctx, res, live):
    """One more wrk run per peer, not timed: syscalls per request of the proxy's processes
    (perf's raw_syscalls:sys_enter tracepoint, which slows every syscall a little, hence the
    separate run) and allocations per request of kfwd (LD_PRELOAD counter)."""
    sec = res.figures["wrk.rps"]["section"]
    res.define("wrk.syscalls", sec, "syscalls per request, proxy processes (perf, one extra run)", "",
               ratios=("haproxy",))
    res.define("wrk.allocs", sec, "allocations per request (malloc+calloc+realloc, one extra run)", "",
               ratios=())
    for key, inst in live.items():
        if inst.peer.kind == "direct" or dead(res, key, inst):
            continue
        m0 = malloc_counts(inst)
        perf = None
        if ctx.perf:
            perf = PROCS.start([ctx.perf, "stat", "-x,", "-e", "raw_syscalls:sys_enter", "-p",
                                ",".join(str(p) for p in inst.pids())], "perf",
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            time.sleep(0.3)
        out, err = wrk(inst.port, P["wrk_secs"])
        syscalls = None
        if perf:
            perf.send_signal(signal.SIGINT)
            try:
                _, perr = perf.communicate(timeout=10)
                m = re.search(r"^(\d+),[^,]*,raw_syscalls:sys_enter", perr.decode(errors="replace"), re.M)
                syscalls = int(m.group(1)) if m else None
            except subprocess.TimeoutExpired:
                pass
            PROCS.stop(perf)
        m1 = malloc_counts(inst)
        reqs = parse_wrk(out)[2] if out else None
        if err or not reqs:
            res.errors.append("%s counting run: %s" % (key, err or "no requests"))
            continue
        if syscalls is not None:
            res.add("wrk.syscalls", key, syscalls / reqs)
        if m0 and m1:
            res.add("wrk.allocs", key, sum(b - a for a, b in zip(m0[:3], m1[:3])) / reqs)
        res.rawrun("wrk_counts", key, {"requests": reqs, "syscalls": syscalls,
                                       "malloc_calls": [b - a for a, b in zip(m0, m1)] if m0 and m1 else None})


def stream_counters(inst, before):
    """Note where kfwd's stream bytes went (sockmap, splice, copy) during the row."""
    if not before:
        return
    after = inst.metrics()
    moved = {re.sub(r'kfwd_bytes_(\w+)_total\{direction="(\w+)"\}', r"\1 \2", k): v - before.get(k, 0)
             for k, v in after.items() if k.startswith("kfwd_bytes_") and v - before.get(k, 0) >= MIB}
    if moved:
        inst.peer.notes.append("kfwd_bytes_* counters during the streams: " + ", ".join(
            "%s +%.2f GiB" % (k, v / GIB) for k, v in sorted(moved.items())))


def run_streams(ctx, res, live):
    total = P["st_window"] * P["st_windows"]
    sec = "[3] %d paced streams x 8 Mbit/s (1 MB/s each) for %.0f s after %.1f s ramp-up; %s of %d windows of %.1f s" % (
        P["st_n"], total, P["st_warm"],
        "one run, figures: median" if P["st_runs"] == 1 else "%d runs, figures: median" % P["st_runs"],
        P["st_windows"] * P["st_runs"], P["st_window"])
    res.define("st.sys_pct", sec, "CPU %% of %d CPUs, whole system" % NCPU, "%")
    res.define("st.sys_pct_net", sec, "CPU %% of %d CPUs, system less others' processes" % NCPU, "%")
    res.define("st.proxy_pct", sec, "CPU % of one CPU, proxy process", "%", ratios=("haproxy",))
    res.define("st.client_pct", sec, "CPU % of one CPU, stream client", "%", ratios=())
    res.define("st.mbps", sec, "delivered MB/s (target %.0f)" % (P["st_n"] * P["st_rate"] / 1e6), "MB/s", ratios=())
    res.define("st.wakeups", sec, "proxy wake-ups/s (voluntary context switches)", "/s", ratios=("haproxy",))
    for run in range(P["st_runs"]):
        for key, inst in live.items():
            if dead(res, key, inst):
                continue
            before = inst.metrics()
            dur = P["st_warm"] + total + 0.3
            p = PROCS.start([PY, str(SCRIPTS / "bench_streams.py"), "--port", str(inst.port), "--path", "/1gib",
                             "--n", str(P["st_n"]), "--rate", str(P["st_rate"]), "--duration", "%.2f" % dur],
                            "streams", stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            line = p.stdout.readline().decode()
            if not line.startswith("READY"):
                PROCS.stop(p)
                res.errors.append("%s streams: client failed: %s %s" % (key, line.strip(), p.stderr.read().decode()[-300:]))
                continue
            t0 = float(line.split()[1])
            windows = []
            t = t0 + P["st_warm"]
            time.sleep(max(0, t - time.monotonic()))
            s_prev = snap()
            s_prev["wakeups"] = wakeups(inst.pids())
            for w in range(P["st_windows"]):
                t += P["st_window"]
                time.sleep(max(0, t - time.monotonic()))
                s = snap()
                s["wakeups"] = wakeups(inst.pids())
                windows.append((s_prev, s))
                s_prev = s
            stream_counters(inst, before)
            try:
                out, errout = p.communicate(timeout=30)
            except subprocess.TimeoutExpired:
                PROCS.stop(p)
                res.errors.append("%s streams: client did not finish" % key)
                continue
            PROCS.stop(p)
            try:
                rep = json.loads(out.decode().strip().splitlines()[-1])
            except (ValueError, IndexError):
                res.errors.append("%s streams: bad client output %s" % (key, errout.decode()[-300:]))
                continue
            samples = rep["samples"]

            def bytes_at(tq):
                prev = samples[0]
                for cur in samples:
                    if cur[0] >= tq:
                        if cur[0] == prev[0]:
                            return cur[1]
                        return prev[1] + (cur[1] - prev[1]) * (tq - prev[0]) / (cur[0] - prev[0])
                    prev = cur
                return samples[-1][1]

            if rep["errors"]:
                res.errors.append("%s streams: stream errors %s" % (key, rep["errors"]))
            for (a, b) in windows:
                c = cpu_delta(a, b, [x for x in (inst.sid, p.pid) if x])
                mbps = (bytes_at(b["t"]) - bytes_at(a["t"])) / c["wall"] / 1e6
                proxy = c["sid"].get(inst.sid) if inst.sid else None
                res.add("st.sys_pct", key, 100.0 * c["busy"] / c["total"], c["foreign_pct"])
                res.add("st.sys_pct_net", key, 100.0 * max(0.0, c["busy"] - c["foreign"]) / c["total"],
                        c["foreign_pct"])
                if proxy is not None:
                    res.add("st.proxy_pct", key, 100.0 * proxy / c["wall"], c["foreign_pct"])
                res.add("st.client_pct", key, 100.0 * c["sid"][p.pid] / c["wall"], c["foreign_pct"])
                if inst.proc:
                    res.add("st.wakeups", key, (b["wakeups"] - a["wakeups"]) / c["wall"], c["foreign_pct"])
                res.add("st.mbps", key, mbps)
                res.rawrun("streams", key, {"run": run + 1, "wall": c["wall"], "system_busy_s": c["busy"],
                                            "foreign_cpu_s": c["foreign"],
                                            "system_total_s": c["total"], "steal_s": c["steal"],
                                            "proxy_cpu_s": proxy, "client_cpu_s": c["sid"][p.pid],
                                            "delivered_MBps": mbps, "foreign_pct": c["foreign_pct"]})
            target = P["st_n"] * P["st_rate"] / 1e6
            got = statistics.median([r["delivered_MBps"] for r in res.raw["streams"][key][-len(windows):]])
            if got < 0.95 * target:
                res.errors.append("%s streams: pacing not held, delivered %.1f of %.0f MB/s" % (key, got, target))


def settle(inst, up_port, max_secs):
    """Wait until kernel TCP memory and the proxy's RSS stop moving (4 polls 0.1 s apart within 0.5%)."""
    hist = []
    t_end = time.monotonic() + max_secs
    while time.monotonic() < t_end:
        mem = sockstat_tcp()[1]
        rss = proc_mem(inst.pids())[0] if inst.proc else 0
        hist.append((mem, rss))
        if len(hist) >= 4:
            last = hist[-4:]
            if all(abs(x[0] - last[0][0]) <= 0.005 * max(last[0][0], 1) and
                   abs(x[1] - last[0][1]) <= 0.005 * max(last[0][1], 1) for x in last):
                return True
        time.sleep(0.1)
    return False


def mem_case(ctx, res, peer, mode, n, path):
    inst = peer.start()
    try:
        pids = inst.pids()
        rss0, _ = proc_mem(pids)
        inuse0, mem0 = sockstat_tcp()
        slab0 = meminfo()["Slab"]
        p = PROCS.start([PY, str(SCRIPTS / "bench_conns.py"), "--port", str(inst.port), "--mode", mode,
                         "--n", str(n), "--path", path, "--stall-bytes", str(P["stall_bytes"]),
                         "--timeout", "90"],
                        "conns", stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            line = p.stdout.readline().decode()
            try:
                rep = json.loads(line)
            except ValueError:
                raise RuntimeError("client failed: %s %s" % (line.strip(), p.stderr.read().decode()[-300:]))
            settled = settle(inst, ctx.up_port, 15 if not QUICK else 6) if mode == "stall" else \
                (time.sleep(1.0 if not QUICK else 0.3) or True)
            pids = inst.pids()
            rss, pss = proc_mem(pids)
            inuse, mem = sockstat_tcp()
            slab = meminfo()["Slab"]
            press, tcp_mem_limits = tcp_pressure()
            # the proxy's own sockets: client side (local port = its port) and upstream
            # side (remote port = origin; no client connects to the origin in proxy rows)
            own = ss_mem("( sport = :%d or dport = :%d )" % (inst.port, ctx.up_port)) if inst.proc else None
            # every socket of the test (clients, proxy, origin): unlike sockstat, not
            # polluted by other people's sockets on the machine
            allsk = ss_mem("( sport = :{0} or dport = :{0} or sport = :{1} or dport = :{1} )".format(
                inst.port, ctx.up_port))
            npipes, pbuf, pcap = pipe_mem(pids)
            km = inst.metrics()
            fds = 0
            for pid in pids:
                try:
                    fds += len(os.listdir("/proc/%d/fd" % pid))
                except OSError:
                    pass
            alive = inst.alive()
        finally:
            try:
                p.stdin.write(b"x\n")
                p.stdin.flush()
            except OSError:
                pass
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                pass
            PROCS.stop(p)
        if not alive:
            raise RuntimeError("proxy died: %s" % tail(inst.logf))
        return {"clients_ok": rep["ok"], "clients_failed": rep["fail"], "connect_s": rep["elapsed"],
                "settled": settled, "rss": rss, "pss": pss, "rss_before": rss0,
                "tcp_mem": mem - mem0, "tcp_mem_before": mem0, "tcp_mem_after": mem, "tcp_inuse": inuse - inuse0,
                "tcp_memory_pressure": press, "tcp_mem_limits": tcp_mem_limits, "slab": slab - slab0,
                "proxy_sockets": own and own["n"], "proxy_sock_queued": own and own["r"] + own["w"],
                "proxy_ss": own, "test_ss": allsk, "pipes": npipes,
                "pipe_buffered": pbuf, "pipe_capacity": pcap, "fds": fds,
                "kfwd_memory": {k[len("kfwd_memory_"):]: v for k, v in km.items() if k.startswith("kfwd_memory_")}}
    finally:
        inst.stop()


def run_memory(ctx, res, peers):
    sec_i = "[4] %d idle keep-alive clients (one 1 KB request each), %d runs" % (P["idle_n"], P["mem_runs"])
    sec_s = "[5] %d stalled clients mid-way through a 1 GiB download, %d runs" % (P["stall_n"], P["mem_runs"])
    res.define("idle.rss", sec_i, "proxy RSS, MiB (all its processes)", "MiB", ratios=("haproxy",))
    res.define("idle.per_conn", sec_i, "proxy RSS growth per client, KiB", "KiB", ratios=("haproxy",))
    res.define("idle.slab", sec_i, "kernel slab, MiB (meminfo Slab delta)", "MiB")
    res.define("stall.rss", sec_s, "proxy RSS, MiB (all its processes)", "MiB", ratios=("haproxy",))
    res.define("stall.sockq", sec_s, "proxy's socket queues, MiB (ss r+w)", "MiB", ratios=("haproxy",))
    res.define("stall.pipe", sec_s, "proxy's pipes, MiB buffered (FIONREAD)", "MiB", ratios=())
    res.define("stall.total", sec_s, "proxy total: RSS + socket queues + pipes, MiB", "MiB", ratios=("haproxy",))
    res.define("stall.held", sec_s, "kfwd max-memory accounting: bytes held, MiB", "MiB", ratios=())
    res.define("stall.budget", sec_s, "kfwd total / max-memory (goal <= 1)", "", ratios=())
    res.define("stall.tcp", sec_s, "kernel TCP memory, MiB (sockstat delta)", "MiB")
    res.define("stall.tcp_ss", sec_s, "kernel TCP memory, MiB, test's sockets (ss r+w+f)", "MiB")
    for run in range(P["mem_runs"]):
        for peer in peers:
            for mode, n, path in (("idle", P["idle_n"], "/1k"), ("stall", P["stall_n"], "/1gib")):
                if mode not in MEMORY_MODES:
                    continue
                try:
                    r = mem_case(ctx, res, peer, mode, n, path)
                except (RuntimeError, OSError) as e:
                    res.errors.append("%s %s run %d: %s" % (peer.key, mode, run + 1, e))
                    continue
                res.rawrun("memory_" + mode, peer.key, r)
                if r["clients_ok"] != n:
                    res.errors.append("%s %s run %d: only %d of %d clients got there (%s)" % (
                        peer.key, mode, run + 1, r["clients_ok"], n, r["clients_failed"]))
                    continue
                proxy = peer.kind == "proxy"
                res.add(mode + ".rss", peer.key, r["rss"] / MIB if proxy else None)
                if mode == "idle":
                    res.add("idle.per_conn", peer.key, (r["rss"] - r["rss_before"]) / n / 1024 if proxy else None)
                    res.add("idle.slab", peer.key, r["slab"] / MIB)
                else:
                    res.add("stall.tcp", peer.key, r["tcp_mem"] / MIB)
                    if r["test_ss"]:
                        res.add("stall.tcp_ss", peer.key, sum(r["test_ss"][k] for k in "rwf") / MIB)
                    if r["tcp_memory_pressure"] == "yes" or (r["tcp_mem_limits"] and
                                                             r["tcp_mem_after"] >= r["tcp_mem_limits"][1]):
                        ctx.pressure.add(peer.label)
                    res.add("stall.sockq", peer.key, r["proxy_sock_queued"] / MIB if proxy else None)
                    res.add("stall.pipe", peer.key, r["pipe_buffered"] / MIB if proxy else None)
                    total = r["rss"] + r["proxy_sock_queued"] + r["pipe_buffered"] if proxy else None
                    res.add("stall.total", peer.key, total / MIB if proxy else None)
                    km = r.get("kfwd_memory") or {}
                    if "held_bytes" in km:
                        res.add("stall.held", peer.key, km["held_bytes"] / MIB)
                        if km.get("budget_bytes"):
                            res.add("stall.budget", peer.key, total / km["budget_bytes"])
                        note = "stalled clients: max-memory %.0f MiB, fair share %.0f KiB over %d flows" % (
                            km.get("budget_bytes", 0) / MIB, km.get("fair_share_bytes", 0) / 1024, km.get("flows", 0))
                        if note not in peer.notes:
                            peer.notes.append(note)


# --------------------------------------------------------------------------
# context

def cmd_out(argv):
    try:
        r = subprocess.run(argv, capture_output=True, text=True, timeout=10)
        return (r.stdout + r.stderr).strip()
    except (OSError, subprocess.TimeoutExpired):
        return ""


def git_head():
    """The checked-out commit, read from .git files (git itself is not run)."""
    g = ROOT / ".git"
    try:
        if g.is_file():
            g = (ROOT / g.read_text().split(":", 1)[1].strip()).resolve()
        head = (g / "HEAD").read_text().strip()
        if not head.startswith("ref:"):
            return head[:12]
        ref = head.split(None, 1)[1]
        p = g / ref
        if p.exists():
            return p.read_text().strip()[:12]
        for line in (g / "packed-refs").read_text().splitlines():
            if line.endswith(" " + ref):
                return line.split()[0][:12]
    except (OSError, IndexError):
        pass
    return "unknown"


class Ctx:
    def __init__(self):
        self.notes = []
        self.nginx = shutil.which("nginx") or "/usr/sbin/nginx"
        self.haproxy = shutil.which("haproxy") or "/usr/sbin/haproxy"
        self.tmp = None
        self.pressure = set()
        self.up_port = None
        self.meta = {}
        self.perf = shutil.which("perf")
        self.malloc_count = None

    def collect_meta(self):
        model = "unknown"
        try:
            for line in open("/proc/cpuinfo"):
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
        except OSError:
            pass
        mem = 0
        for line in open("/proc/meminfo"):
            if line.startswith("MemTotal:"):
                mem = int(line.split()[1]) * 1024
        try:
            debian = Path("/etc/debian_version").read_text().strip()
        except OSError:
            debian = "?"
        kv = {}
        if os.access(KFWD, os.X_OK):
            h = hashlib.sha256(KFWD.read_bytes()).hexdigest()[:12]
            kv = {"sha256": h, "mtime": datetime.datetime.fromtimestamp(KFWD.stat().st_mtime).isoformat(timespec="seconds")}
        self.meta = {
            "host": platform.node(), "cpu_model": model, "cpus": NCPU, "mem_gib": round(mem / GIB, 1),
            "kernel": platform.release(), "debian": debian, "python": platform.python_version(),
            "nginx": cmd_out([self.nginx, "-v"]).replace("nginx version: ", ""),
            "haproxy": " ".join((cmd_out([self.haproxy, "-v"]) or "? ? ?").split()[:4:2]),
            "wrk": (cmd_out(["wrk", "-v"]).splitlines() or ["?"])[0].split(" [")[0],
            "curl": " ".join(cmd_out(["curl", "--version"]).split()[:2]),
            "kfwd": kv, "git_head": git_head(), "mode": "quick" if QUICK else "full",
            "params": dict(P), "nofile": resource.getrlimit(resource.RLIMIT_NOFILE)[1], "date": datetime.datetime.now().isoformat(timespec="seconds"),
        }

    def header_lines(self):
        m = self.meta
        kf = ("build/kfwd sha256 %s, built %s" % (m["kfwd"]["sha256"], m["kfwd"]["mtime"])) if m["kfwd"] else "build/kfwd missing"
        return [
            "kfwd bench (%s), %s, commit %s, took %s" % (m["mode"], m["date"], m["git_head"], m.get("elapsed", "?")),
            "machine: %s, %d CPUs (%s), %.0f GiB RAM; Linux %s; Debian %s" % (
                m["host"], m["cpus"], m["cpu_model"], m["mem_gib"], m["kernel"], m["debian"]),
            "peers: %s; %s; clients: %s, %s, Python %s; %s" % (
                m["nginx"], m["haproxy"], m["wrk"], m["curl"], m["python"], kf),
            "setup: all on 127.0.0.1, nothing pinned; origin = nginx (1 worker, sendfile); each proxy 1 %s; "
            "fd limit %d; load before start: %.0f%% of the machine" % (
                "worker/thread" if P["workers"] == 1 else "x %d workers/threads" % P["workers"],
                m["nofile"], m.get("background_pct", 0)),
        ]


def ensure_tools():
    missing = [t for t in ("nginx", "haproxy", "wrk", "curl", "ss") if not (shutil.which(t) or os.path.exists("/usr/sbin/" + t))]
    if missing:
        log("missing %s: running scripts/install-deps.sh" % " ".join(missing))
        subprocess.run([str(SCRIPTS / "install-deps.sh")], check=True)


def build_malloc_counter(ctx):
    """scripts/malloc_count.c as an LD_PRELOAD library for kfwd's allocations per request."""
    so = BENCH_DIR / "malloc_count.so"
    r = subprocess.run(["cc", "-O2", "-shared", "-fPIC", "-o", str(so), str(SCRIPTS / "malloc_count.c")],
                       capture_output=True, text=True)
    if r.returncode == 0:
        ctx.malloc_count = so
    else:
        ctx.notes.append("no allocation counts: building scripts/malloc_count.c failed: %s"
                         % (r.stderr.strip().splitlines() or ["?"])[-1])
    if not ctx.perf:
        ctx.notes.append("no syscall counts: perf not found")


def ensure_files():
    """1 GiB (and, for quick mode, 512 MiB) files made once and reused, plus 1 KB."""
    WWW.mkdir(parents=True, exist_ok=True)
    block = None
    for size in sorted({GIB, P["dl_bytes"]}):
        path = WWW / size_name(size).replace(" ", "").lower()
        if not path.exists() or path.stat().st_size != size:
            log("generating %s (once)" % path)
            block = block or os.urandom(MIB)
            tmp = path.with_suffix(".tmp")
            with open(tmp, "wb") as f:
                for _ in range(size // MIB):
                    f.write(block)
            os.replace(tmp, path)
        # page cache warm-up (24 GiB of RAM: it stays cached)
        buf = bytearray(8 * MIB)
        with open(path, "rb", buffering=0) as f:
            while f.readinto(buf):
                pass
    small = WWW / "1k"
    if not small.exists() or small.stat().st_size != 1024:
        small.write_bytes(os.urandom(1024))


def raise_nofile():
    want = NOFILE
    try:
        want = min(want, int(Path("/proc/sys/fs/nr_open").read_text()))
    except (OSError, ValueError):
        pass
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (max(want, soft), max(want, hard)))
    except (ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def measure_background(secs=1.0):
    s0 = snap()
    time.sleep(secs)
    s1 = snap()
    c = cpu_delta(s0, s1)
    return 100.0 * c["busy"] / (c["total"] or 1)


def main():
    t_start = time.monotonic()
    ctx = Ctx()
    res = Results()
    live = {}
    BENCH_DIR.mkdir(parents=True, exist_ok=True)
    # configs and logs: in /tmp, so that a `make clean` by someone else does not pull them away
    ctx.tmp = tempfile.mkdtemp(prefix="kfwd-bench-")

    def on_signal(signum, frame):
        log("got signal %d: stopping every process started, removing temp files" % signum)
        raise SystemExit(128 + signum)

    def on_int(signum, frame):
        raise KeyboardInterrupt
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)
    signal.signal(signal.SIGINT, on_int)     # also when started with SIGINT ignored (e.g. from `cmd &`)
    try:
        raise_nofile()
        ensure_tools()
        ensure_files()
        build_malloc_counter(ctx)
        ctx.collect_meta()
        log("mode %s; %s" % (ctx.meta["mode"], ", ".join("%s=%s" % kv for kv in P.items())))
        ctx.meta["background_pct"] = measure_background()

        origin = Origin(ctx)
        origin_inst = origin.start()
        ctx.up_port = origin_inst.port
        ctx.origin = origin_inst

        peers = [Direct(ctx), Kfwd(ctx, "splice"), Kfwd(ctx, "splice", workers=2), Kfwd(ctx, "copy"),
                 Kfwd(ctx, "sockmap"), Haproxy(ctx), Nginx(ctx)]
        if ONLY_PEERS:
            peers = [p for p in peers if p.key in ONLY_PEERS]
        for p in peers:
            if isinstance(p, Kfwd):
                p.probe()
                log("%s: %s" % (p.label, "available" if p.available else "n/a: " + p.reason))
        active = [p for p in peers if p.available]
        for p in list(active):
            try:
                live[p.key] = p.start()
            except RuntimeError as e:
                p.available, p.reason = False, "failed to start: %s" % e
                active.remove(p)
        # warm the page cache path through the origin
        subprocess.run(["curl", "-sS", "-o", "/dev/null", "http://127.0.0.1:%d/1gib" % ctx.up_port], check=False)

        for name, fn in (("download", run_download), ("wrk", run_wrk), ("streams", run_streams)):
            if name in WORKLOADS:
                t = time.monotonic()
                log("%s ..." % name)
                fn(ctx, res, {k: i for k, i in live.items() if runs(i.peer, name)})
                ctx.meta["t_" + name] = round(time.monotonic() - t, 1)
        for key, inst in live.items():
            dead(res, key, inst)
        for inst in live.values():
            inst.stop()
        live.clear()
        if MEMORY_MODES:
            t = time.monotonic()
            log("memory ...")
            run_memory(ctx, res, [p for p in active if runs(p, "memory")])
            ctx.meta["t_memory"] = round(time.monotonic() - t, 1)

        for p in peers:
            if isinstance(p, Kfwd) and p.available and getattr(p, "dl_metrics", None) is not None:
                d = p.dl_metrics
                shown = {re.sub(r'kfwd_bytes_(\w+)_total\{direction="(\w+)"\}', r"\1 \2", k): v
                         for k, v in d.items() if v >= MIB}
                if shown:
                    p.notes.append("kfwd_bytes_* counters during the downloads: " + ", ".join(
                        "%s +%.2f GiB" % (k, v / GIB) for k, v in sorted(shown.items())))
                else:
                    p.notes.append("no kfwd_bytes_* counter moved during the downloads (metrics missing?)")
        origin_inst.stop()
        if ctx.meta["kfwd"] and os.access(KFWD, os.X_OK):
            now = hashlib.sha256(KFWD.read_bytes()).hexdigest()[:12]
            if now != ctx.meta["kfwd"]["sha256"]:
                ctx.notes.append("warning: build/kfwd was rebuilt during the run (sha256 %s at start, %s at end): "
                                 "kfwd rows may mix two builds" % (ctx.meta["kfwd"]["sha256"], now))
        if ctx.pressure:
            press, lim = tcp_pressure()
            ctx.notes.append("stalled clients: the kernel was in TCP memory pressure (tcp_mem pressure threshold "
                             "%.0f MiB) with %s: their socket-memory figures are capped by the kernel, not the proxy"
                             % (lim[1] / MIB if lim else 0, ", ".join(sorted(ctx.pressure))))
        for u in PROCS.unclean:
            ctx.notes.append("unclean stop: " + u)
        elapsed = time.monotonic() - t_start
        ctx.meta["elapsed"] = "%dm%02ds" % (elapsed // 60, elapsed % 60)
        ctx.meta["elapsed_s"] = round(elapsed, 1)
        table = render(ctx, res, peers)
        sys.stdout.write(table)
        (BUILD / "bench.txt").write_text(table)
        doc = {
            "meta": ctx.meta,
            "peers": {p.key: {"label": p.label, "available": p.available, "reason": p.reason, "notes": p.notes}
                      for p in peers},
            "figures": {},
            "errors": res.errors,
            "notes": ctx.notes,
            "runs": res.raw,
        }
        for fig in res.order:
            f = res.figures[fig]
            entry = {"section": f["section"], "label": f["label"], "unit": f["unit"], "peers": {}, "ratios": {}}
            for p in peers:
                if p.key == "origin":
                    continue
                entry["peers"][p.key] = res.stat(fig, p.key) if p.available else {"n/a": p.reason}
            for ref in f["ratios"]:
                rs = res.stat(fig, ref)
                if rs and rs["median"]:
                    entry["ratios"]["vs_" + ref] = {
                        p.key: res.stat(fig, p.key)["median"] / rs["median"]
                        for p in peers if p.available and p.key != "origin" and res.stat(fig, p.key)}
            doc["figures"][fig] = entry
        (BUILD / "bench.json").write_text(json.dumps(doc, indent=1) + "\n")
        log("wrote build/bench.txt and build/bench.json (%.0f s)" % elapsed)
        return 0
    except KeyboardInterrupt:
        log("interrupted: stopping every process started, removing temp files")
        return 130
    finally:
        for inst in live.values():
            try:
                inst.stop()
            except Exception:
                pass
        PROCS.stop_all()
        shutil.rmtree(ctx.tmp, ignore_errors=True)


if __name__ == "__main__":
    try:
        sys.exit(main())
    except SystemExit:
        raise
    except BaseException:
        traceback.print_exc()
        sys.exit(2)
