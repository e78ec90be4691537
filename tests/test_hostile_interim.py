"""Hostile input: interim (1xx) responses.

An upstream that answers a request with `HTTP/1.1 100 Continue` in a loop (and never a final
response) while the client does not read: kfwd must keep its memory flat (interim responses are
capped in count and bytes, relayed under backpressure), keep serving other clients, answer the
flooded client 502 (or close it), close the flooding upstream, and exit promptly on SIGTERM.
"""

import signal
import socket
import threading
import time

import pytest

import peers
from conftest import SAN, SAN_CPU
from peers import mget

INTERIM = b"HTTP/1.1 100 Continue\r\n\r\n"
INTERIM_MAX_COUNT = 16  # user/session.c


class InterimFlood(peers.Peer):
    """Reads a request, then sends `100 Continue` as fast as the connection takes it until the
    connection fails. Records how many bytes went out and when the connection was closed."""

    name = "interim-flood"

    def __init__(self, **kw):
        super().__init__(**kw)
        self.sent = 0
        self.closed_at = None
        self.flooding = threading.Event()

    def handle(self, conn):
        if conn.read_request() is None:
            return
        block = INTERIM * 512
        conn.sock.settimeout(0.2)
        self.flooding.set()
        try:
            while not self.stopping.is_set():
                try:
                    self.sent += conn.sock.send(block)
                except socket.timeout:
                    continue
        except OSError:
            self.closed_at = time.monotonic()


def flood_config(flood, echo):
    return f"""
        upstream flood {flood.addr}
        upstream echo {echo.addr}
        route /ok/ echo
        route / flood
    """


@pytest.mark.timeout(60)
def test_interim_flood_bounded(kfwd, peer):
    flood = peer(InterimFlood())
    echo = peer(peers.EchoUpload())
    k = kfwd(flood_config(flood, echo))
    rss0 = k.rss_kb()
    # The flooded client never reads; a small receive buffer makes the backlog kfwd's problem.
    victim = socket.socket()
    victim.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    victim.connect(("127.0.0.1", k.port))
    t0 = time.monotonic()
    cpu0 = peers.cpu_seconds(k.pid)
    victim.sendall(b"GET /flood HTTP/1.1\r\nHost: x\r\n\r\n")
    assert flood.flooding.wait(5), "the flooding upstream never got the request"

    # Meanwhile another client is served, promptly, several times.
    worst = 0.0
    for i in range(10):
        t = time.monotonic()
        with peers.HttpConn(k.port, timeout=5) as c:
            c.request("GET", f"/ok/{i}")
            r = c.read_response()
        worst = max(worst, time.monotonic() - t)
        assert r.status == 200, r
        time.sleep(0.2)
    elapsed = time.monotonic() - t0
    cpu = peers.cpu_seconds(k.pid) - cpu0
    rss_growth = k.rss_kb() - rss0
    print(f"interim flood: {elapsed:.1f} s, RSS +{rss_growth} KiB, kfwd CPU {cpu:.2f} s ({100 * cpu / elapsed:.1f} %), "
          f"slowest other request {worst * 1000:.1f} ms")
    assert worst < 1.0 * SAN_CPU, f"a request took {worst:.3f} s during the flood"
    assert rss_growth < 8 * 1024 * SAN, f"RSS grew {rss_growth} KiB in {elapsed:.1f} s of interim flood"
    assert cpu < 0.3 * elapsed * SAN_CPU, f"kfwd used {cpu:.2f} s CPU in {elapsed:.1f} s of interim flood"
    # The flooding upstream was cut off: kfwd closed its connection.
    assert peers.wait_for(lambda: flood.closed_at is not None, 5), "the flooding upstream is still connected"
    m = k.metrics()
    assert mget(m, "kfwd_interim_floods_total") == 1, m

    # The flooded client finally reads: at most the cap of interim responses, then 502, then EOF.
    victim.settimeout(5)
    got = b""
    while True:
        d = victim.recv(65536)
        if not d:
            break
        got += d
    victim.close()
    n_interim = got.count(INTERIM)
    assert n_interim <= INTERIM_MAX_COUNT, n_interim
    rest = got[n_interim * len(INTERIM):]
    assert rest.startswith(b"HTTP/1.1 502 "), got[-300:]

    # SIGTERM during another flood: kfwd exits promptly and cleanly.
    victim2 = socket.socket()
    victim2.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    victim2.connect(("127.0.0.1", k.port))
    victim2.sendall(b"GET /flood2 HTTP/1.1\r\nHost: x\r\n\r\n")
    time.sleep(0.5)
    t = time.monotonic()
    k.send_signal(signal.SIGTERM)
    assert k.wait(5 * SAN_CPU) == 0, f"kfwd did not exit 0 within {5 * SAN_CPU} s of SIGTERM during a flood"
    assert time.monotonic() - t < 5 * SAN_CPU
    victim2.close()


class ManyInterims(peers.Peer):
    """Sends `count` interim responses (100 Continue and 103 Early Hints), then a 200."""

    name = "many-interims"

    def __init__(self, count, **kw):
        super().__init__(**kw)
        self.count = count

    def handle(self, conn):
        for req in self.each_request(conn):
            out = b""
            for i in range(self.count):
                out += INTERIM if i % 2 == 0 else b"HTTP/1.1 103 Early Hints\r\nLink: </s.css>; rel=preload\r\n\r\n"
            out += b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
            conn.send(out)


@pytest.mark.timeout(30)
def test_interim_cap_boundary(kfwd, peer):
    """Up to INTERIM_MAX_COUNT interim responses are relayed before the final one; one more is
    a flood (502, counted)."""
    at_cap = peer(ManyInterims(INTERIM_MAX_COUNT))
    over = peer(ManyInterims(INTERIM_MAX_COUNT + 1))
    k = kfwd(f"upstream a {at_cap.addr}\nupstream b {over.addr}\nroute /a/ a\nroute /b/ b\n")
    got = peers.exchange(k.port, b"GET /a/x HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")[0]
    assert got.count(b"HTTP/1.1 1") == INTERIM_MAX_COUNT, got[:400]
    assert b"HTTP/1.1 200 OK" in got and got.endswith(b"ok"), got[-200:]
    got = peers.exchange(k.port, b"GET /b/x HTTP/1.1\r\nHost: x\r\n\r\n")[0]
    assert got.count(b"HTTP/1.1 1") == INTERIM_MAX_COUNT, got[:400]
    assert b"HTTP/1.1 502 " in got and b"200 OK" not in got, got[-300:]
    assert mget(k.metrics(), "kfwd_interim_floods_total") == 1
