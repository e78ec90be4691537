#!/usr/bin/python3
"""The RTSP rows of `make bench`: kfwd's cost of relaying RTSP (`listen ... rtsp`).

Workloads:
  streams     N x 8 Mbit/s streams (gst-rtsp-server's /ts with rate 8M: ~760 interleaved
              frames/s of 1332 bytes, one shared media) read by N TCP-interleaved clients,
              directly and through kfwd: bytes delivered, kfwd CPU (% of a core, s/GiB), and
              the reading client's CPU either way
  full-speed  one stream of 1332-byte frames sent as fast as a scripted server can: kfwd CPU
              s/GiB and MB/s

Output: a table on stdout and build/bench_rtsp.txt, the data in build/bench_rtsp.json.
Knobs: BENCH_QUICK=1 (N=20, 8 s, 512 MiB), BENCH_RTSP_N=N, BENCH_RTSP_SECS=S.
Standard library (and tests/peers_rtsp.py's servers) only; run with Debian's /usr/bin/python3.
"""

import json
import os
import resource
import selectors
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
import peers_rtsp as R  # noqa: E402

QUICK = os.environ.get("BENCH_QUICK") == "1"
N = int(os.environ.get("BENCH_RTSP_N", "20" if QUICK else "100"))
SECS = float(os.environ.get("BENCH_RTSP_SECS", "8" if QUICK else "20"))
FULL_BYTES = (512 if QUICK else 2048) << 20
FRAME = 1328
WARMUP = 2.0
BUILD = ROOT / "build"
KFWD = BUILD / "kfwd"
CLK = os.sysconf("SC_CLK_TCK")
GIB = 1 << 30
TCP = ("Transport", "RTP/AVP/TCP;unicast;interleaved=0-1")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_s(pid):
    """utime + stime of a process, in seconds."""
    f = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) / CLK


def own_cpu():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def start_kfwd(tmp, routes):
    port = free_port()
    conf = tmp / f"kfwd-{port}.conf"
    conf.write_text(R.kfwd_rtsp_config(port, tmp / f"ctl-{port}", routes, "log-level warn"))
    p = subprocess.Popen([str(KFWD), "-c", str(conf)], stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return p, port
        except OSError:
            time.sleep(0.05)
    p.kill()
    raise RuntimeError("kfwd did not start")


def open_players(port, path, n):
    socks = []
    for _ in range(n):
        c = R.RtspConn(port, timeout=20)
        url = f"rtsp://127.0.0.1:{port}{path}"
        d = c.call("DESCRIBE", url)
        s = c.call("SETUP", d.header("Content-Base").rstrip("/") + "/stream=0", [TCP])
        c.call("PLAY", url, [("Session", s.header("Session").split(";")[0])])
        c.sock.setblocking(False)
        socks.append(c.sock)
    return socks


def read_all(socks, secs, watch_pid=None):
    """Read every socket for @secs; (bytes, reader CPU s, watched process CPU s)."""
    sel = selectors.DefaultSelector()
    for s in socks:
        sel.register(s, selectors.EVENT_READ)
    buf = bytearray(1 << 18)
    total, end = 0, time.monotonic() + secs
    c0, w0 = own_cpu(), cpu_s(watch_pid) if watch_pid else 0.0
    while time.monotonic() < end:
        for key, _ in sel.select(timeout=0.2):
            try:
                total += key.fileobj.recv_into(buf)
            except BlockingIOError:
                pass
    c1, w1 = own_cpu(), cpu_s(watch_pid) if watch_pid else 0.0
    sel.close()
    return total, c1 - c0, w1 - w0


def bench_streams(tmp):
    out = {}
    with R.GstRtspServer(free_port(), rate="8M") as gst:
        socks = open_players(gst.port, "/ts", N)
        read_all(socks, WARMUP)
        b, reader, gst_cpu = read_all(socks, SECS, gst.proc.pid)
        out["direct"] = {"bytes": b, "reader_cpu_s": reader, "gst_cpu_s": gst_cpu}
        for s in socks:
            s.close()
        k, port = start_kfwd(tmp, f"upstream g 127.0.0.1:{gst.port}\nroute /cam g strip-prefix")
        try:
            socks = open_players(port, "/cam/ts", N)
            read_all(socks, WARMUP)
            k0 = cpu_s(k.pid)
            b, reader, gst_cpu = read_all(socks, SECS, gst.proc.pid)
            kcpu = cpu_s(k.pid) - k0
            out["kfwd"] = {"bytes": b, "reader_cpu_s": reader, "gst_cpu_s": gst_cpu, "kfwd_cpu_s": kcpu}
            for s in socks:
                s.close()
        finally:
            k.terminate()
            k.wait(timeout=10)
    return out


class FullSpeedServer(R.ScriptedRtspServer):
    """PLAY starts FULL_BYTES of 1332-byte frames, sent in 4 MiB writes."""

    def __init__(self):
        super().__init__(handler=self._handle)

    def _handle(self, server, index, msg):
        if msg.method != "PLAY":
            return None
        sock = self.conns[index]
        sock.sendall(R.message("RTSP/1.0 200 OK", [("CSeq", msg.cseq), ("Session", "12345678")]))
        block = R.frame(0, b"\x80" + bytes(FRAME - 1)) * ((4 << 20) // (FRAME + 4))

        def send():
            sent = 0
            try:
                while sent < FULL_BYTES:
                    sock.sendall(block)
                    sent += len(block)
            except OSError:
                pass
        threading.Thread(target=send, daemon=True).start()
        return b""


def bench_full_speed(tmp):
    with FullSpeedServer() as srv:
        k, port = start_kfwd(tmp, f"upstream s 127.0.0.1:{srv.port}\nroute /cam s strip-prefix")
        try:
            c = R.RtspConn(port, timeout=20)
            c.call("SETUP", f"rtsp://127.0.0.1:{port}/cam/s/trackID=0", [TCP])
            c.call("PLAY", f"rtsp://127.0.0.1:{port}/cam/s", [("Session", "12345678")])
            k0, t0, got = cpu_s(k.pid), time.monotonic(), len(c.reader.buf)
            buf = bytearray(1 << 20)
            while got < FULL_BYTES * 0.99:
                n = c.sock.recv_into(buf)
                if not n:
                    break
                got += n
            secs, kcpu = time.monotonic() - t0, cpu_s(k.pid) - k0
            c.close()
        finally:
            k.terminate()
            k.wait(timeout=10)
    return {"bytes": got, "secs": secs, "kfwd_cpu_s": kcpu}


def render(streams, full):
    d, v = streams["direct"], streams["kfwd"]
    lines = [f"RTSP: {N} x 8 Mbit/s streams (gst-rtsp-server /ts, TCP-interleaved), {SECS:g} s",
             f"  {'':28} {'Mbit/s':>10} {'reader CPU':>11} {'kfwd CPU':>10} {'kfwd s/GiB':>11}"]
    for name, r in (("direct", d), ("through kfwd", v)):
        mbit = r["bytes"] * 8 / SECS / 1e6
        kc = r.get("kfwd_cpu_s")
        lines.append(f"  {name:28} {mbit:10.1f} {100 * r['reader_cpu_s'] / SECS:10.1f}% "
                     f"{'' if kc is None else '%9.1f%%' % (100 * kc / SECS):>10} "
                     f"{'' if kc is None else '%11.2f' % (kc / (r['bytes'] / GIB)):>11}")
    lines.append(f"RTSP full speed: one stream of {FRAME + 4}-byte frames: "
                 f"{full['bytes'] / full['secs'] / 1e6:.0f} MB/s, kfwd {full['kfwd_cpu_s'] / (full['bytes'] / GIB):.2f} s/GiB")
    return "\n".join(lines)


def main():
    if not KFWD.exists():
        sys.exit(f"{KFWD} missing: run make")
    with tempfile.TemporaryDirectory() as t:
        tmp = Path(t)
        streams = bench_streams(tmp)
        full = bench_full_speed(tmp)
    text = render(streams, full)
    print(text)
    BUILD.mkdir(exist_ok=True)
    (BUILD / "bench_rtsp.txt").write_text(text + "\n")
    (BUILD / "bench_rtsp.json").write_text(json.dumps({"n": N, "secs": SECS, "quick": QUICK,
                                                       "streams": streams, "full_speed": full}, indent=1))


if __name__ == "__main__":
    main()
