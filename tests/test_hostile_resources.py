"""Hostile input: resource exhaustion and upstream health.

- One slow or reset request does not take a group's only server down; other servers are
  marked down only after `upstream-max-fails` consecutive connect failures.
- At the fd limit (EMFILE) the listeners pause: no busy loop, one log line, and the backlog is
  served once descriptors are free again.
- The default max-connections follows RLIMIT_NOFILE.
"""

import json
import re
import resource
import signal
import socket
import struct
import subprocess
import time

import pytest

import peers
from conftest import KFWD_BIN, KFWDCTL_BIN, SAN, SAN_CPU
from peers import mdelta, mget

CONNECT_ERRORS = "kfwd_upstream_connect_errors_total"


def get(port, target, timeout=10):
    with peers.HttpConn(port, timeout=timeout) as c:
        c.request("GET", target)
        return c.read_response(keep_body=True)


class Misbehaving(peers.Peer):
    """Keep-alive server: /reset/... is answered with a TCP reset, /slow/... never, anything
    else 200 "ok"."""

    name = "misbehaving"

    def handle(self, conn):
        for req in self.each_request(conn):
            if req.target.startswith("/reset/"):
                conn.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                conn.sock.close()
                return
            if req.target.startswith("/slow/"):
                self.drain_until_closed(conn)
                return
            conn.send(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")


@pytest.mark.timeout(30)
def test_slow_or_reset_request_keeps_only_server_up(kfwd, peer):
    s = peer(Misbehaving())
    k = kfwd(f"upstream one {s.addr}\nroute / one\nresponse-timeout 300ms\nupstream-down-time 10s")
    for bad, status in (("/reset/1", 502), ("/slow/1", 504), ("/reset/2", 502)):
        r = get(k.port, bad)
        assert r.status == status, (bad, r)
        t = time.monotonic()
        r = get(k.port, "/fine")
        assert r.status == 200 and r.body == b"ok", f"after {bad}: {r} {r.body!r}"
        assert time.monotonic() - t < 1.0
    assert "marked down" not in k.stderr


@pytest.mark.timeout(30)
def test_only_server_never_marked_down_by_connect_failures(kfwd, peer):
    port = peers.free_port()
    k = kfwd(f"upstream one 127.0.0.1:{port}\nroute / one\nupstream-max-fails 1\nupstream-down-time 10s")
    m0 = k.metrics()
    for i in range(5):
        assert get(k.port, f"/down/{i}").status == 502
    # Every request tried the server: it was never skipped.
    assert mdelta(k.metrics(), m0, CONNECT_ERRORS) >= 5
    back = peer(peers.EchoUpload(port=port))
    r = get(k.port, "/back")
    assert r.status == 200 and json.loads(r.body)["target"] == "/back", r
    assert len(back.requests) == 1
    assert "marked down" not in k.stderr


@pytest.mark.timeout(30)
@pytest.mark.parametrize("max_fails", [None, 1, 5])
def test_marked_down_after_max_fails_consecutive(kfwd, peer, max_fails):
    dead = peers.free_port()
    good = peer(peers.EchoUpload())
    extra = f"upstream-max-fails {max_fails}\n" if max_fails else ""
    k = kfwd(f"upstream two 127.0.0.1:{dead} {good.addr}\nroute / two retries=1\n{extra}upstream-down-time 30s")
    want = max_fails or 3  # the default
    m0 = k.metrics()
    for i in range(4 * want + 4):
        r = get(k.port, f"/r{i}")
        assert r.status == 200, (i, r)  # retried on the good server
    assert mdelta(k.metrics(), m0, CONNECT_ERRORS) == want
    assert len(re.findall(rf"marked down for 30000 ms after {want} connect failures", k.stderr)) == 1, k.stderr


@pytest.mark.timeout(60)
def test_emfile_pauses_listeners(kfwd, peer):
    echo = peer(peers.EchoUpload())
    k = kfwd(f"upstream echo {echo.addr}\nroute / echo\nmax-connections 1000")
    assert get(k.port, "/warm").status == 200
    assert peers.wait_for(lambda: mget(k.metrics(), "kfwd_connections_active") == 0, 5)
    limit = k.fd_count() + 6
    soft, hard = resource.prlimit(k.pid, resource.RLIMIT_NOFILE)
    resource.prlimit(k.pid, resource.RLIMIT_NOFILE, (limit, hard))
    clients = []
    try:
        # 6 idle connections take the last descriptors; the others wait in the backlog.
        for _ in range(20):
            clients.append(socket.create_connection(("127.0.0.1", k.port), timeout=10))
        assert peers.wait_for(lambda: k.fd_count() >= limit, 5), k.fd_count()
        time.sleep(0.5)
        cpu0, t0 = peers.cpu_seconds(k.pid), time.monotonic()
        time.sleep(3)
        cpu = peers.cpu_seconds(k.pid) - cpu0
        elapsed = time.monotonic() - t0
        print(f"at the fd limit: kfwd CPU {cpu:.3f} s in {elapsed:.1f} s ({100 * cpu / elapsed:.1f} %)")
        assert cpu < 0.05 * elapsed * SAN_CPU, f"kfwd used {cpu:.2f} s CPU in {elapsed:.1f} s at the fd limit"
        lines = [ln for ln in k.stderr.splitlines() if "not accepting until a descriptor is free" in ln]
        assert len(lines) == 1, lines[:5]
        assert k.alive()
        # Descriptors come back: the connections in the backlog are accepted and served.
        for c in clients[:6]:
            c.close()
        resource.prlimit(k.pid, resource.RLIMIT_NOFILE, (soft, hard))
        for i, c in enumerate(clients[6:]):
            c.sendall(f"GET /later/{i} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        for i, c in enumerate(clients[6:]):
            data = b""
            while d := c.recv(65536):
                data += d
            assert data.startswith(b"HTTP/1.1 200 "), (i, data[:200])
    finally:
        for c in clients:
            c.close()
    assert mget(k.metrics(), "kfwd_accept_pauses_total") >= 1


def run_check_nofile(tmp_path, nofile, config):
    """max-connections of a kfwd started with RLIMIT_NOFILE = nofile (read back with kfwdctl)."""
    conf = tmp_path / "k.conf"
    ctl = tmp_path / "ctl"
    port = peers.free_port()
    conf.write_text(f"listen 127.0.0.1:{port}\nctl-socket-file {ctl}\n{config}")
    p = subprocess.Popen(["prlimit", f"--nofile={nofile}:{nofile}", str(KFWD_BIN), "-c", str(conf)],
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        assert peers.wait_for(ctl.exists, 10), "kfwd did not publish its control socket"
        out = subprocess.run([str(KFWDCTL_BIN), "-j", "-f", str(ctl), "status"], capture_output=True, text=True, timeout=10)
        assert out.returncode == 0, out.stderr
        return json.loads(out.stdout)["max_connections"]
    finally:
        p.send_signal(signal.SIGTERM)
        p.wait(10)


@pytest.mark.timeout(30)
def test_default_max_connections_follows_nofile(tmp_path):
    cfg = "upstream u 127.0.0.1:1 127.0.0.1:2\nroute / u\n"
    # FDS_RESERVED 64 + 503 slack 256 + 64 pooled pipes x 2 + 2 servers x 32 idle, 6 fds each
    assert run_check_nofile(tmp_path, 1024, cfg) == (1024 - 64 - 256 - 128 - 64) // 6
    assert run_check_nofile(tmp_path, 8192, cfg) == (8192 - 64 - 256 - 128 - 64) // 6
    assert run_check_nofile(tmp_path, 8192, cfg + "max-connections 7\n") == 7


@pytest.mark.timeout(60)
def test_connection_flood_over_max_connections(kfwd, peer):
    """400 connections at once against max-connections 50: the first 50 are served, the next
    256 get 503, the rest are closed at accept; afterwards kfwd is back to its idle fds, RSS and
    no active connection, and serves normally."""
    echo = peer(peers.EchoUpload())
    k = kfwd(f"upstream echo {echo.addr}\nroute / echo\nmax-connections 50")
    assert get(k.port, "/warm").status == 200
    assert peers.wait_for(lambda: mget(k.metrics(), "kfwd_connections_active") == 0, 5)
    fds0, rss0, cpu0 = k.fd_count(), k.rss_kb(), peers.cpu_seconds(k.pid)
    conns = []
    try:
        for _ in range(400):
            s = socket.socket()
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            s.settimeout(10)
            s.connect(("127.0.0.1", k.port))
            conns.append(s)
        assert peers.wait_for(lambda: mget(k.metrics(), "kfwd_connections_accepted_total") >= 401, 10)
        m = k.metrics()
        assert mget(m, "kfwd_connections_active") <= 50 + 256, m
        assert mget(m, "kfwd_connections_rejected_total") >= 400 - 50 - 256, m
        # The held connections still work; a rejected one got a 503.
        conns[0].sendall(b"GET /held HTTP/1.1\r\nHost: x\r\n\r\n")
        assert conns[0].recv(65536).startswith(b"HTTP/1.1 200 ")
        statuses = []
        for s in conns[50:60]:
            try:
                statuses.append(s.recv(65536)[:12])
            except OSError:
                statuses.append(b"reset")
        assert all(x in (b"HTTP/1.1 503", b"", b"reset") for x in statuses), statuses
        assert b"HTTP/1.1 503" in statuses, statuses
    finally:
        for s in conns:
            s.close()
    assert peers.wait_for(lambda: mget(k.metrics(), "kfwd_connections_active") == 0, 10)
    assert get(k.port, "/after").status == 200
    assert peers.wait_for(lambda: k.fd_count() <= fds0 + 2, 5), (k.fd_count(), fds0)
    rss_growth = k.rss_kb() - rss0
    cpu = peers.cpu_seconds(k.pid) - cpu0
    print(f"400-connection flood: RSS +{rss_growth} KiB, kfwd CPU {cpu:.2f} s")
    assert rss_growth < 16 * 1024 * SAN, f"RSS grew {rss_growth} KiB"
    assert cpu < 2.0 * SAN_CPU, f"kfwd used {cpu:.2f} s CPU for 400 connections"
