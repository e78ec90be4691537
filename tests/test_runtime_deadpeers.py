"""Dead peers: `tcp-keepalive IDLE INTERVAL COUNT` and `tcp-user-timeout DUR`
on client and upstream sockets.

kfwd and its upstream run in one network namespace, the client in another, joined by a veth.
The client vanishes (an nftables rule in its namespace drops every packet: no FIN, no RST, like
a phone leaving the Wi-Fi). Asserted: mid-stream, kfwd closes the client connection and the
upstream one within tcp-user-timeout (and, with it off, does not within the same time); on an
idle keep-alive connection, within the keepalive bound (and not without keepalive)."""

import os
import re
import socket
import subprocess
import threading
import time

import pytest

import netns
from conftest import KFWD_BIN, Kfwd
from peers import MiB, wait_for

RTSP_FRAMES = b"".join(b"$\x00\x05\x30" + os.urandom(1328) for _ in range(48))
KFWD_PORT = 8080  # inside the test's own namespace: nothing else listens there
UP_PORT = 9000


class StreamUpstream:
    """In namespace `ns` on 127.0.0.1:UP_PORT. GET /stream: an endless body, written while the
    socket takes it; GET /small: 5 bytes, keep-alive; RTSP SETUP answered, PLAY answered then
    endless '$' frames. .closed_at: when kfwd closed or reset the connection (monotonic),
    .closed: set then."""

    def __init__(self, pair, ns):
        self.sock = pair.socket(ns, socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", UP_PORT))
        self.sock.listen(16)
        self.sock.settimeout(0.2)
        self.stopping = threading.Event()
        self.closed = threading.Event()
        self.closed_at = None
        self.conns = []
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self):
        while not self.stopping.is_set():
            try:
                c, _ = self.sock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            self.conns.append(c)
            threading.Thread(target=self._serve, args=(c,), daemon=True).start()

    def _gone(self):
        if self.closed_at is None:
            self.closed_at = time.monotonic()
        self.closed.set()

    def _serve(self, c):
        c.settimeout(0.2)
        buf = b""
        block = os.urandom(64 * 1024)
        try:
            while not self.stopping.is_set():
                try:
                    d = c.recv(65536)
                except socket.timeout:
                    continue
                if not d:
                    self._gone()
                    return
                buf += d
                while b"\r\n\r\n" in buf:
                    head, buf = buf.split(b"\r\n\r\n", 1)
                    if b" /small " in head:
                        c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nsmall")
                        continue
                    if head.endswith(b"RTSP/1.0") or b"RTSP/1.0\r\n" in head:
                        cseq = re.search(rb"(?i)cseq: *(\d+)", head).group(1)
                        c.sendall(b"RTSP/1.0 200 OK\r\nCSeq: %s\r\nSession: 1\r\n\r\n" % cseq)
                        if not head.startswith(b"PLAY "):
                            continue
                        block = RTSP_FRAMES
                    else:
                        c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % (1 << 40))
                    pos = 0  # the stream repeats block: frames stay whole across short sends
                    while not self.stopping.is_set():
                        try:
                            pos = (pos + c.send(block[pos:])) % len(block)
                        except socket.timeout:
                            continue
                    return
        except OSError:  # reset or broken pipe: kfwd let go of the connection
            self._gone()

    def stop(self):
        self.stopping.set()
        self.sock.close()
        for c in self.conns:
            c.close()
        self.thread.join(5)


@pytest.fixture
def lab(tmp_path):
    tag = f"{os.getpid() % 100000}{threading.get_ident() % 97}"
    pair = netns.NetnsPair(tag)
    state = {"pair": pair, "procs": [], "ups": [], "socks": []}
    yield state
    for s in state["socks"]:
        s.close()
    for u in state["ups"]:
        u.stop()
    for k in state["procs"]:
        status, killed = k.stop()
        print(f"---- kfwd pid {k.pid} exit {status} killed {killed} ----\n{k.stderr[-3000:]}")
    pair.close()


def start(lab, tmp_path, extra, protocol=""):
    pair = lab["pair"]
    up = StreamUpstream(pair, pair.a)
    lab["ups"].append(up)
    conf = tmp_path / f"kfwd{len(lab['procs'])}.conf"
    conf.write_text(
        "\n".join(
            [
                f"listen {pair.ADDR_A}:{KFWD_PORT} {protocol}",
                f"upstream up 127.0.0.1:{UP_PORT}",
                "route / up",
                f"ctl-socket-file {tmp_path}/ctl{len(lab['procs'])}",
                "drain-timeout 2s",
                *extra,
            ]
        )
        + "\n"
    )
    k = Kfwd(pair.exec_argv(pair.a) + [str(KFWD_BIN), "-c", str(conf)], tmp_path / f"kfwd{len(lab['procs'])}.log",
             KFWD_PORT, config_path=conf)
    lab["procs"].append(k)
    assert wait_for(lambda: "kfwd running" in k.stderr or not k.alive(), 10), k.stderr
    assert k.alive(), k.stderr
    return k, up


def client(lab):
    pair = lab["pair"]
    s = pair.socket(pair.b, socket.AF_INET, socket.SOCK_STREAM)
    lab["socks"].append(s)
    s.settimeout(10)
    s.connect((pair.ADDR_A, KFWD_PORT))
    return s


def read_head(s):
    buf = b""
    while b"\r\n\r\n" not in buf:
        d = s.recv(65536)
        assert d, "connection closed before the response head"
        buf += d
    head, rest = buf.split(b"\r\n\r\n", 1)
    assert head.startswith(b"HTTP/1.1 200"), head
    return rest


def kfwd_conns(lab):
    return lab["pair"].established(lab["pair"].a, KFWD_PORT)


def upstream_conns(lab):
    out = netns.run(*lab["pair"].exec_argv(lab["pair"].a), "ss", "-Htn", "state", "established",
                    f"( dport = :{UP_PORT} )").stdout
    return [ln for ln in out.splitlines() if ln.strip()]


@pytest.mark.parametrize("user_timeout", ["2s", "off"])
@pytest.mark.timeout(60)
def test_client_vanishes_mid_stream(lab, tmp_path, user_timeout):
    """Bytes in flight to a client that vanished: retransmissions go unanswered; with
    tcp-user-timeout 2s the kernel fails the socket after 2 s and kfwd closes both connections;
    without it nothing happens for minutes (tcp_retries2), checked over 6 s."""
    k, up = start(lab, tmp_path, ["tcp-keepalive off", f"tcp-user-timeout {user_timeout}"])
    s = client(lab)
    s.sendall(b"GET /stream HTTP/1.1\r\nHost: x\r\n\r\n")
    got = len(read_head(s))
    while got < 2 * MiB:
        got += len(s.recv(1 << 20))
    assert len(kfwd_conns(lab)) == 1 and len(upstream_conns(lab)) == 1
    t0 = time.monotonic()
    lab["pair"].vanish(lab["pair"].b)
    if user_timeout == "off":
        time.sleep(6)
        assert len(kfwd_conns(lab)) == 1 and not up.closed.is_set(), "closed without tcp-user-timeout"
        return
    assert up.closed.wait(10), f"upstream connection still open 10 s after the client vanished:\n{k.stderr}"
    took = up.closed_at - t0
    print(f"upstream freed {took:.2f} s after the client vanished (tcp-user-timeout 2s)")
    assert 1.5 <= took <= 5.0, f"upstream freed {took:.2f} s after the client vanished (tcp-user-timeout 2s)"
    assert wait_for(lambda: not kfwd_conns(lab), 2), kfwd_conns(lab)
    assert not upstream_conns(lab)
    assert k.alive()


@pytest.mark.timeout(60)
def test_rtsp_client_vanishes_mid_stream(lab, tmp_path):
    """RTSP suspends tcp-user-timeout only while the client's window is shut (a paused player,
    tests/test_rtsp_slow_clients.py): a client that vanishes with media in flight is still
    found after tcp-user-timeout, and both connections are closed."""
    k, up = start(lab, tmp_path, ["tcp-keepalive off", "tcp-user-timeout 2s"], "rtsp")
    s = client(lab)
    url = f"rtsp://{lab['pair'].ADDR_A}:{KFWD_PORT}/s"
    s.sendall(f"SETUP {url}/trackID=0 RTSP/1.0\r\nCSeq: 1\r\nTransport: RTP/AVP/TCP;interleaved=0-1\r\n\r\n"
              f"PLAY {url} RTSP/1.0\r\nCSeq: 2\r\nSession: 1\r\n\r\n".encode())
    got = 0
    while got < 2 * MiB:
        d = s.recv(1 << 20)
        assert d, "closed before the media"
        got += len(d)
    assert len(kfwd_conns(lab)) == 1 and len(upstream_conns(lab)) == 1
    t0 = time.monotonic()
    lab["pair"].vanish(lab["pair"].b)
    assert up.closed.wait(10), f"upstream connection still open 10 s after the client vanished:\n{k.stderr}"
    took = up.closed_at - t0
    print(f"RTSP upstream freed {took:.2f} s after the client vanished (tcp-user-timeout 2s)")
    assert 1.5 <= took <= 5.0, f"upstream freed {took:.2f} s after the client vanished (tcp-user-timeout 2s)"
    assert wait_for(lambda: not kfwd_conns(lab), 2), kfwd_conns(lab)
    assert k.alive()


@pytest.mark.parametrize("keepalive", ["1s 1s 2", "off"])
@pytest.mark.timeout(60)
def test_idle_client_vanishes(lab, tmp_path, keepalive):
    """An idle keep-alive connection whose client vanished: nothing is in flight, so only
    keepalive probes find out; with 1s 1s 2 kfwd closes it after about 3 s (client-timeout is
    60 s), without keepalive it stays."""
    k, up = start(lab, tmp_path, [f"tcp-keepalive {keepalive}", "tcp-user-timeout off"])
    s = client(lab)
    s.sendall(b"GET /small HTTP/1.1\r\nHost: x\r\n\r\n")
    rest = read_head(s)
    while len(rest) < 5:
        rest += s.recv(100)
    assert rest == b"small"
    assert len(kfwd_conns(lab)) == 1
    t0 = time.monotonic()
    lab["pair"].vanish(lab["pair"].b)
    if keepalive == "off":
        time.sleep(6)
        assert len(kfwd_conns(lab)) == 1, "closed without keepalive"
        return
    assert wait_for(lambda: not kfwd_conns(lab), 10, 0.1), f"still open 10 s later:\n{k.stderr}"
    took = time.monotonic() - t0
    print(f"idle connection closed {took:.2f} s after the client vanished (keepalive 1s 1s 2)")
    assert 1.5 <= took <= 6.0, f"closed {took:.2f} s after the client vanished (keepalive 1s 1s 2)"
    assert k.alive()


@pytest.mark.timeout(60)
def test_live_client_that_keeps_its_window_shut(lab, tmp_path):
    """The documented price of tcp-user-timeout (Linux >= 5.11): a client that is there but reads
    nothing (a paused player) answers the zero-window probes, yet is dropped once its window
    stayed shut for tcp-user-timeout; keepalive never fires on it (bytes are in flight)."""
    k, up = start(lab, tmp_path, ["tcp-keepalive off", "tcp-user-timeout 2s"])
    s = client(lab)
    s.sendall(b"GET /stream HTTP/1.1\r\nHost: x\r\n\r\n")
    read_head(s)
    t0 = time.monotonic()
    time.sleep(1.0)
    assert len(kfwd_conns(lab)) == 1, "dropped before tcp-user-timeout"
    assert up.closed.wait(10), f"a client with its window shut for 10 s is still served:\n{k.stderr}"
    assert 1.5 <= up.closed_at - t0 <= 6.0, up.closed_at - t0
    assert wait_for(lambda: not kfwd_conns(lab), 2), kfwd_conns(lab)


def test_config_dead_peer_and_upgrade_values(tmp_path):
    """tcp-keepalive / tcp-user-timeout / upgrade-socket: bad values are FILE:LINE errors."""
    base = "listen 127.0.0.1:1\nroute / url-embedded\n"
    p = tmp_path / "t.conf"

    def check(line):
        p.write_text(base + line + "\n")
        return subprocess.run([str(KFWD_BIN), "-t", "-c", str(p)], capture_output=True, text=True, timeout=30)

    for bad in ("tcp-keepalive 30s 5s", "tcp-keepalive 30s 5s 0", "tcp-keepalive 30s 5s 128",
                "tcp-keepalive 1500ms 5s 3", "tcp-keepalive 40000s 5s 3", "tcp-keepalive 1 1 1", "tcp-keepalive on",
                "tcp-user-timeout 0", "tcp-user-timeout soon", "upgrade-socket relative",
                "upgrade-socket /" + "x" * 120):
        r = check(bad)
        assert r.returncode == 1 and "t.conf:3: " in r.stderr, (bad, r.stderr)
    for good in ("tcp-keepalive 30s 5s 3", "tcp-keepalive 1s 1s 1", "tcp-keepalive 2m 1000ms 9", "tcp-keepalive off", "tcp-user-timeout 10s",
                 "tcp-user-timeout off", "upgrade-socket off", "upgrade-socket /run/kfwd/up"):
        r = check(good)
        assert r.returncode == 0, (good, r.stderr)
