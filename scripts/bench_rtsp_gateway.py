#!/usr/bin/python3
"""The HTTP->RTSP gateway row of `make bench`: N live 8 Mbit/s MPEG-TS streams through kfwd's
`/rtsp/` route against the same streams read directly.

The origin (this file run as `origin PORT`) is a paced RTSP/1.0 server: after PLAY it sends each
connection 1,000,000 B/s of MPEG-TS in RTP in '$' frames of 1332 bytes (760 frames/s, what
gst-rtsp-server's rtpmp2tpay sends for an 8 Mbit/s stream), in bursts every --tick; the same
TS bytes without RTP are served on `GET /direct` for the direct reading. The readers are
scripts/bench_streams.py (paced HTTP clients) reading at twice the stream rate.

Measured: kfwd's CPU seconds per GiB and in % of one core, its wake-ups per second (voluntary
context switches), and the readers' CPU, direct and through kfwd. Output: a table on stdout,
build/bench_rtsp_gateway.json (kfwd's log: build/bench_rtsp_gateway.log). Knobs: BENCH_QUICK=1
(20 streams, 10 s), BENCH_GW_N=N, BENCH_GW_DEBUG=1 (print kfwd's metrics after the run).
Standard library only; run with Debian's /usr/bin/python3.
"""

import json
import os
import selectors
import socket
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
KFWD = ROOT / "build" / "kfwd"
PY = "/usr/bin/python3"
QUICK = os.environ.get("BENCH_QUICK") == "1"
N = int(os.environ.get("BENCH_GW_N", "20" if QUICK else "100"))
DURATION = 10.0 if QUICK else 20.0
RATE = 1_000_000  # bytes of TS per second per stream: 8 Mbit/s
TICK = 0.02
TS_PER_FRAME = 7
FRAME_TS = 188 * TS_PER_FRAME  # 1316
GIB = 1 << 30


def frames_for(nbytes_ts):
    """Prebuilt interleaved RTP frames carrying at least nbytes_ts of TS, and the bare TS."""
    n = (nbytes_ts + FRAME_TS - 1) // FRAME_TS
    ts = (b"\x47" + bytes(range(187))) * TS_PER_FRAME
    rtp = b"".join(b"$\x00" + struct.pack(">H", 12 + FRAME_TS) +
                   struct.pack(">BBHII", 0x80, 33, i & 0xFFFF, i * 3000, 1) + ts for i in range(n))
    return rtp, ts * n


# --------------------------------------------------------------------------- origin


class OriginConn:
    def __init__(self, sock):
        self.sock = sock
        self.buf = b""
        self.playing = False
        self.direct = False
        self.sent = 0  # frames due so far
        self.pending = b""  # the unsent tail of a partial send: frames are never cut
        self.t0 = 0.0


def answer(req):
    lines = req.decode("latin-1").split("\r\n")
    method, url = lines[0].split(" ")[:2]
    cseq = next((ln.split(":", 1)[1].strip() for ln in lines if ln.lower().startswith("cseq:")), "0")
    head = f"RTSP/1.0 200 OK\r\nCSeq: {cseq}\r\nSession: 1;timeout=60\r\n"
    if method == "DESCRIBE":
        sdp = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=b\r\nt=0 0\r\nm=video 0 RTP/AVP 33\r\n" \
              "a=rtpmap:33 MP2T/90000\r\na=control:track0\r\n"
        head += f"Content-Base: {url}/\r\nContent-Type: application/sdp\r\nContent-Length: {len(sdp)}\r\n\r\n{sdp}"
    elif method == "SETUP":
        head += "Transport: MP2T/RTP/TCP;unicast;interleaved=0-1\r\n\r\n"
    else:
        head += "\r\n"
    return method, head.encode()


def origin_main(port):
    rtp, ts = frames_for(int(RATE * TICK * 4))
    lsock = socket.socket()
    lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    lsock.bind(("127.0.0.1", port))
    lsock.listen(1024)
    lsock.setblocking(False)
    sel = selectors.DefaultSelector()
    sel.register(lsock, selectors.EVENT_READ)
    conns = {}
    print("READY", flush=True)
    per_tick_frames = RATE * TICK / FRAME_TS
    while True:
        for key, _ in sel.select(TICK / 2):
            if key.fileobj is lsock:
                try:
                    s, _ = lsock.accept()
                except BlockingIOError:
                    continue
                s.setblocking(False)
                conns[s] = OriginConn(s)
                sel.register(s, selectors.EVENT_READ)
                continue
            c = conns[key.fileobj]
            try:
                data = c.sock.recv(65536)
            except BlockingIOError:
                continue
            except ConnectionError:
                data = b""
            if not data:
                sel.unregister(c.sock)
                c.sock.close()
                del conns[c.sock]
                continue
            c.buf += data
            while b"\r\n\r\n" in c.buf:
                req, c.buf = c.buf.split(b"\r\n\r\n", 1)
                if req.startswith(b"GET /direct"):
                    c.sock.send(b"HTTP/1.1 200 OK\r\nContent-Type: video/mp2t\r\nConnection: close\r\n\r\n")
                    c.direct = c.playing = True
                    c.t0 = time.monotonic()
                    continue
                method, out = answer(req)
                c.sock.send(out)
                if method == "PLAY":
                    c.playing = True
                    c.t0 = time.monotonic()
        now = time.monotonic()
        for c in list(conns.values()):
            if not c.playing:
                continue
            due = int((now - c.t0) * RATE / FRAME_TS) - int(c.sent)
            if due <= 0:
                continue
            due = min(due, int(per_tick_frames * 4))
            c.sent += due
            # A reader that does not keep up loses whole frames (live media), never part of one.
            chunk = c.pending or (ts[:due * FRAME_TS] if c.direct else rtp[:due * (FRAME_TS + 16)])
            try:
                n = c.sock.send(chunk)
            except (BlockingIOError, ConnectionError):
                n = 0
            c.pending = chunk[n:] if c.pending or n else b""


# --------------------------------------------------------------------------- the run


def cpu_s(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wakeups(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("voluntary_ctxt_switches"):
                return int(line.split()[1])
    return 0


def read_streams(port, path):
    """Run the paced readers; returns (their JSON result, their CPU seconds, the window)."""
    p = subprocess.Popen([PY, str(ROOT / "scripts" / "bench_streams.py"), "--port", str(port), "--path", path,
                          "--n", str(N), "--rate", str(2 * RATE), "--duration", str(DURATION)],
                         stdout=subprocess.PIPE, text=True)
    ready = p.stdout.readline()
    assert ready.startswith("READY"), ready
    t0 = time.monotonic()
    out = p.stdout.readline()
    _, status, ru = os.wait4(p.pid, 0)
    p.returncode = status
    return json.loads(out), ru.ru_utime + ru.ru_stime, time.monotonic() - t0


def main():
    sys.path.insert(0, str(ROOT / "tests"))
    import peers  # noqa: E402

    oport, kport = peers.free_port(), peers.free_port()
    procs = []
    tmp = tempfile.mkdtemp(prefix="kfwd-bench-gw-")
    try:
        origin = subprocess.Popen([PY, __file__, "origin", str(oport)], stdout=subprocess.PIPE, text=True)
        procs.append(origin)
        assert origin.stdout.readline().startswith("READY")
        conf = Path(tmp) / "kfwd.conf"
        mport = peers.free_port()
        conf.write_text(f"listen 127.0.0.1:{kport}\nmetrics-listen 127.0.0.1:{mport}\nroute /rtsp/ rtsp-gateway\nallow 127.0.0.0/8\n"
                        f"ctl-port-id off\nmax-connections {4 * N + 64}\n")
        k = subprocess.Popen([str(KFWD), "-c", str(conf)], stderr=open(ROOT / "build" / "bench_rtsp_gateway.log", "w"))
        procs.append(k)
        peers.wait_for(lambda: _connects(kport), 10)

        direct, direct_cpu, _ = read_streams(oport, "/direct")
        c0, w0 = cpu_s(k.pid), wakeups(k.pid)
        via, via_cpu, secs = read_streams(kport, f"/rtsp/127.0.0.1:{oport}/live")
        kcpu, kwake = cpu_s(k.pid) - c0, wakeups(k.pid) - w0
        if os.environ.get("BENCH_GW_DEBUG"):
            import urllib.request
            print(urllib.request.urlopen(f"http://127.0.0.1:{mport}/metrics").read().decode())
        gib = via["bytes"] / GIB
        result = {
            "streams": N, "seconds": round(secs, 1), "rate_bytes_per_stream": RATE,
            "direct": {"bytes": direct["bytes"], "errors": direct["errors"], "reader_cpu_s": round(direct_cpu, 2)},
            "kfwd": {"bytes": via["bytes"], "errors": via["errors"], "reader_cpu_s": round(via_cpu, 2),
                     "kfwd_cpu_s": round(kcpu, 2), "kfwd_cpu_s_per_gib": round(kcpu / gib, 2) if gib else None,
                     "kfwd_core_pct": round(100 * kcpu / secs, 1),
                     "kfwd_wakeups_per_s": round(kwake / secs),
                     "kfwd_wakeups_per_stream_s": round(kwake / secs / N, 1)},
        }
        (ROOT / "build").mkdir(exist_ok=True)
        (ROOT / "build" / "bench_rtsp_gateway.json").write_text(json.dumps(result, indent=2) + "\n")
        print(f"rtsp-gateway: {N} x 8 Mbit/s MPEG-TS streams, {secs:.0f} s")
        print(f"  direct       {direct['bytes'] / secs / 1e6:7.1f} MB/s  reader CPU {direct_cpu:5.2f} s")
        print(f"  via kfwd     {via['bytes'] / secs / 1e6:7.1f} MB/s  reader CPU {via_cpu:5.2f} s  "
              f"kfwd CPU {kcpu:5.2f} s = {result['kfwd']['kfwd_cpu_s_per_gib']} s/GiB, "
              f"{result['kfwd']['kfwd_core_pct']} % of a core, "
              f"{result['kfwd']['kfwd_wakeups_per_stream_s']} wake-ups/s per stream")
    finally:
        for p in procs:
            p.terminate()
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()


def _connects(port):
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
        return True
    except OSError:
        return False


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "origin":
        origin_main(int(sys.argv[2]))
    else:
        main()
