"""The environment of the tunnel and sockmap suites (tests/test_tunnel_*.py,
tests/test_sockmap_bodies.py, the runtime tests that use the sockmap): Env starts kfwd with a pin
dir of its own under /sys/fs/bpf (the env fixture and the pin-dir removal are in conftest.py);
BPF inspection (bpftool, BPF_PROG_QUERY on a pinned sockhash, the kfwd_dirs entries); the
counters the suites read; waiting for kfwd's log or for its connections to end; diagnostics for
failure messages; a syscall delay injected with strace; a paced close-delimited stream origin.

MEASURE collects measured numbers (plateaus, memory, MB/s); conftest.py prints them and writes
build/tunnel_measurements.json at the end of the session."""

import contextlib
import ctypes
import json
import os
import random
import re
import struct
import subprocess
import threading
import time
from pathlib import Path

import peers
import peers_tunnel as pt
from peers import KiB, MiB, Payload, Peer, graceful_close, mdelta, outq


MB = 1000 * 1000


TUNNELS = "kfwd_tunnels_total"


FLOWS = "kfwd_sockmap_flows_total"


SM_REQ = 'kfwd_bytes_sockmap_total{direction="request"}'


SM_RESP = 'kfwd_bytes_sockmap_total{direction="response"}'


SPL_REQ = peers.SPLICED_REQ


SPL_RESP = peers.SPLICED_RESP


CP_REQ = peers.COPIED_REQ


CP_RESP = peers.COPIED_RESP


ACTIVE = "kfwd_connections_active"


PIN_NAMES = ["kfwd_ctl", "kfwd_dirs", "kfwd_events", "kfwd_socks", "kfwd_verdict"]


BPF_FS = Path("/sys/fs/bpf")


MEASURE = {}


def mem_available():
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * KiB
    raise RuntimeError("no MemAvailable")


def log_problems(text):
    """warn/error lines of a kfwd log."""
    return [ln for ln in text.splitlines() if re.search(r" kfwd (error|warn): ", ln)]


def wait_log(k, pattern, timeout=10.0):
    rx = re.compile(pattern)
    ok = peers.wait_for(lambda: rx.search(k.stderr) or not k.alive(), timeout, 0.02)
    assert ok and rx.search(k.stderr), f"kfwd never logged /{pattern}/ in {timeout} s:\n{k.stderr}"


def remove_pin_dir(path):
    p = Path(path)
    if not p.exists():
        return
    for e in p.iterdir():
        try:
            e.unlink()
        except OSError:
            pass
    try:
        p.rmdir()
    except OSError:
        pass


def bpftool(*args, check=True):
    r = subprocess.run(["bpftool", "-j", *args], capture_output=True, text=True, timeout=30)
    if check:
        assert r.returncode == 0, f"bpftool {' '.join(args)} failed: {r.stderr or r.stdout}"
    if r.returncode != 0:
        return None
    return json.loads(r.stdout) if r.stdout.strip() else None


def bpftool_exists(kind, obj_id):
    r = subprocess.run(["bpftool", "-j", kind, "show", "id", str(obj_id)], capture_output=True, text=True, timeout=30)
    return r.returncode == 0


_SYS_BPF = {"x86_64": 321, "aarch64": 280}.get(os.uname().machine)


_BPF_OBJ_GET = 7


_BPF_PROG_QUERY = 16


_BPF_SK_SKB_VERDICT = 38  # enum bpf_attach_type (vmlinux.h)


_libc = ctypes.CDLL(None, use_errno=True)


def _bpf(cmd, attr):
    buf = ctypes.create_string_buffer(bytes(attr), len(attr))
    r = _libc.syscall(_SYS_BPF, cmd, buf, len(attr))
    if r < 0:
        e = ctypes.get_errno()
        raise OSError(e, f"bpf({cmd}): {os.strerror(e)}")
    return r, buf.raw


def verdict_progs_attached(pinned_map):
    """IDs of the programs attached as BPF_SK_SKB_VERDICT to the pinned sockhash."""
    assert _SYS_BPF, "unknown bpf syscall number for this architecture"
    path = ctypes.create_string_buffer(str(pinned_map).encode())
    attr = struct.pack("=QIIi", ctypes.addressof(path), 0, 0, 0).ljust(64, b"\0")
    fd, _ = _bpf(_BPF_OBJ_GET, attr)
    try:
        ids = (ctypes.c_uint32 * 64)()
        attr = struct.pack("=IIIIQI", fd, _BPF_SK_SKB_VERDICT, 0, 0, ctypes.addressof(ids), 64).ljust(64, b"\0")
        _, out = _bpf(_BPF_PROG_QUERY, attr)
        cnt = struct.unpack_from("=I", out, 24)[0]
        return sorted(ids[i] for i in range(cnt))
    finally:
        os.close(fd)


def pinned_ids(pin):
    maps = {n: bpftool("map", "show", "pinned", f"{pin}/{n}")["id"] for n in PIN_NAMES if n != "kfwd_verdict"}
    prog = bpftool("prog", "show", "pinned", f"{pin}/kfwd_verdict")
    return maps, prog["id"]


def dirs_dump(pin):
    """Formatted kfwd_dirs entries {src_cookie: value dict} (bpftool prints them by BTF)."""
    out = bpftool("map", "dump", "pinned", f"{pin}/kfwd_dirs") or []
    res = {}
    for e in out:
        assert "formatted" in e, f"bpftool printed kfwd_dirs without BTF formatting: {e}"
        res[e["formatted"]["key"]] = e["formatted"]["value"]
    return res


class Env:
    """Starts kfwd for tunnel tests (unique pin dir each), tracks raw sockets and helpers."""

    def __init__(self, kfwd, tmp_path):
        self._kfwd = kfwd
        self.tmp_path = tmp_path
        self.pins = []
        self.socks = []
        self.procs = []
        self.own = []  # Kfwd instances started without the fixture (setpriv)

    def pin_dir(self):
        p = BPF_FS / f"kfwd-test-{os.getpid()}-{len(self.pins) + 1}-{random.randrange(1 << 30):x}"
        self.pins.append(p)
        return p

    def config(self, mode, pin, extra=()):
        lines = [
            "connect on",
            "allow 127.0.0.0/8",
            "route /http/ url-embedded",
            f"data-path {mode}",
            f"bpf-pin-dir {pin}",
            *extra,
        ]
        return "\n".join(lines)

    def start(self, mode, extra=(), pin=None):
        pin = pin or self.pin_dir()
        k = self._kfwd(self.config(mode, pin, extra))
        k.pin = pin
        k.mode = mode
        wait_log(k, r"kfwd running")
        if mode.startswith("sockmap"):
            assert "sockmap data path ready" in k.stderr, (
                f"data-path {mode}: the BPF sockmap did not load (we are root with BPF):\n{k.stderr}"
            )
        return k

    def track(self, s):
        self.socks.append(s)
        return s

    def tunnel(self, k, dport, **kw):
        s, rest = pt.open_tunnel(k.port, dport, **kw)
        self.track(s)
        return s, rest

    def close(self):
        for s in self.socks:
            try:
                s.close()
            except OSError:
                pass
        for p in self.procs:
            p.stop()
        peers.close_all_clients()
        for k in self.own:
            status, killed = k.stop()
            print(f"---- own kfwd pid {k.pid} exit {status} killed {killed} ----\n{k.stderr[-4000:]}")


def tunnel_diagnostics(k):
    """kfwd's sockets (ss) and, with a pin dir, the kfwd_dirs entries: for failure messages."""
    out = subprocess.run(["ss", "-tanmpi"], capture_output=True, text=True).stdout.splitlines()
    mine = []
    for i, line in enumerate(out):
        if f"pid={k.pid}," in line and "LISTEN" not in line:
            mine += out[i:i + 3]
    text = "kfwd sockets:\n" + "\n".join(mine)
    pin = getattr(k, "pin", None)
    if pin and Path(pin, "kfwd_dirs").exists():
        try:
            text += f"\nkfwd_dirs: {json.dumps(dirs_dump(pin))}"
        except AssertionError as e:
            text += f"\nkfwd_dirs: {e}"
    try:
        text += f"\nkfwd CPU over 1 s while stuck: {peers.idle_cpu(k.pid):.2f} s"
    except (OSError, ValueError, IndexError):
        pass
    return text + f"\nkfwd log tail:\n{k.stderr[-2000:]}"


def wait_idle(k, timeout=10.0):
    """Every connection of kfwd ended. On failure the message holds kfwd's sockets, the flow's
    kfwd_dirs entries and kfwd's CPU use while stuck (a spin or a missed wake-up) and its log."""
    ok = peers.wait_for(lambda: k.metric(ACTIVE) == 0, timeout, 0.05)
    assert ok, f"kfwd_connections_active did not return to 0 after the tunnel closed:\n{tunnel_diagnostics(k)}"


def assert_sockmap_flow_metrics(k, m0, m1, *, flows=1, req_min=1, resp_min=1):
    assert mdelta(m1, m0, FLOWS) == flows, f"{FLOWS} grew by {mdelta(m1, m0, FLOWS)}, expected {flows}"
    if flows:
        assert mdelta(m1, m0, SM_REQ) >= req_min, f"{SM_REQ} grew by {mdelta(m1, m0, SM_REQ)} (< {req_min})"
        assert mdelta(m1, m0, SM_RESP) >= resp_min, f"{SM_RESP} grew by {mdelta(m1, m0, SM_RESP)} (< {resp_min})"


MODES = ["splice", "sockmap"]


@contextlib.contextmanager
def syscall_delayed(k, syscall, usec):
    """strace delays the entry of each of kfwd's `syscall` calls by `usec` (a slow kfwd: sanitized,
    preempted) until the block ends, then detaches (SIGTERM, by PID)."""
    st = subprocess.Popen(
        ["strace", "-q", "-f", "-o", "/dev/null", "-p", str(k.pid), "-e", f"trace={syscall}",
         "-e", f"inject={syscall}:delay_enter={usec}"],
        stderr=subprocess.PIPE, text=True)
    try:
        # strace says nothing once attached: wait until kfwd is traced
        attached = peers.wait_for(lambda: re.search(r"^TracerPid:\s*[1-9]", Path(f"/proc/{k.pid}/status").read_text(), re.M), 5.0, 0.02)
        assert attached, f"strace did not attach to kfwd: {st.stderr.read() if st.poll() is not None else ''}"
        yield
    finally:
        st.terminate()
        st.wait(timeout=10)


def settled(samples, i):
    """Median of field i over the second half of the stall: what stays allocated, robust to a
    transient allocation by another process on this shared machine."""
    vals = sorted(s[i] for s in samples[len(samples) // 2:])
    return vals[len(vals) // 2]


def least(samples, i):
    """Least of field i over the second half of the stall: a host-wide figure (MemAvailable) that
    another job on the machine raises only by holding its memory for that whole half. A coarse
    sanity bound only: what kfwd holds is measured exactly by the upstream's plateau (sockmap's
    queues are not in ss's skmem)."""
    return min(s[i] for s in samples[len(samples) // 2:])


# Host-wide MemAvailable may move by hundreds of MiB with other jobs on the machine: the coarse
# bound on its drop during a stall is the 256 MiB body itself (held whole, it would pass it).
HOST_DROP_SANITY = 256 * MiB


# --------------------------------------------------------------------------- origins


class PacedCloseDelimited(Peer):
    """A live stream: 200 without a length, then (after `head_delay` s) `piece` bytes every
    `interval` s up to `size`, then close once kfwd acknowledged every byte (.closed is set).
    With a small interval, the IPTV case: the producer sets the pace."""

    def __init__(self, size, piece=64 * KiB, interval=0.002, head_delay=0.0, seed=61, **kw):
        super().__init__(**kw)
        self.payload = Payload(size, seed=seed)
        self.piece = piece
        self.interval = interval
        self.head_delay = head_delay
        self.closed = threading.Event()

    def handle(self, conn):
        req = self.next_request(conn)
        if req is None:
            return
        conn.send(b"HTTP/1.1 200 OK\r\nContent-Type: video/mp2t\r\n\r\n")
        time.sleep(self.head_delay)
        for p in self.payload.pieces(self.piece):
            conn.send(p)
            if self.interval:
                time.sleep(self.interval)
        deadline = time.monotonic() + 60
        while outq(conn.sock) and time.monotonic() < deadline and not self.stopping.is_set():
            time.sleep(0.005)
        self.closed.set()
        graceful_close(conn.sock, linger=30)


def url(peer, path="/x"):
    return f"/http/127.0.0.1:{peer.port}{path}"
