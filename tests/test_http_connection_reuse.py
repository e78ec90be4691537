"""Upstream connection reuse: many keep-alive requests over few upstream connections, an early
response's connection never pooled, and stale pooled connections (closed or reset by the server,
or closing as kfwd picks them) replaced without the client noticing.

Upstreams: the Python servers of tests/peers.py and tests/peers_http.py and the session nginx. Everything
listens on 127.0.0.1; every process a test starts is stopped by PID at teardown."""

import select
import threading

import pytest

import peers
import peers_http
from peers import KiB, MiB, mdelta
from peers_http import CONNECTS, CONNECT_ERRORS, IDLE, REUSES, cfg, echo_json, request


@pytest.mark.timeout(60)
def test_500_keepalive_requests_few_upstream_connections(kfwd, nginx):
    k = kfwd(cfg(f"upstream ng {nginx.addr}", "route / ng"))
    m0 = k.metrics()
    with peers.HttpConn(k.port, timeout=10) as c:
        for i in range(500):
            c.request("GET", f"/ok?i={i}")
            r = c.read_response(keep_body=True)
            assert r.status == 200 and r.body == b"ok\n", f"request {i}: {r}"
            assert "close" not in r.headers.tokens("connection"), f"request {i}: kfwd closes"
    m1 = k.metrics()
    connects = mdelta(m1, m0, CONNECTS)
    assert connects <= 3, f"{connects} upstream connects for 500 keep-alive requests"
    assert mdelta(m1, m0, REUSES) >= 500 - connects
    assert mdelta(m1, m0, "kfwd_requests_total") == 500


@pytest.mark.timeout(60)
def test_early_response_connection_not_reused(kfwd, peer):
    """The upstream answers 413 to a 50 MB upload from the head alone and keeps the connection
    open without reading: that connection must not be pooled (the next request opens a new
    one), the client gets the whole 413, and the following requests work."""
    up = peer(peers_http.EarlyResponder())
    k = kfwd(cfg(f"upstream u {up.addr}", "route / u", "response-timeout 3s"))
    m0 = k.metrics()
    size = 50 * MiB
    with peers.HttpConn(k.port, timeout=10) as c:
        c.send(c.build("POST", "/upload", [("Content-Length", str(size)), ("Content-Type", "application/octet-stream")]))
        stop = threading.Event()
        sent = [0]

        def sender():
            chunk = b"u" * (256 * KiB)
            while sent[0] < size and not stop.is_set():
                try:
                    _, w, _ = select.select([], [c.sock], [], 0.1)
                    if w:
                        sent[0] += c.sock.send(chunk[: size - sent[0]])
                except OSError:
                    return

        t = threading.Thread(target=sender, daemon=True)
        t.start()
        try:
            r = c.read_response("POST", keep_body=True)
        finally:
            stop.set()
            t.join(5)
        assert r.status == 413 and r.body == b"too large, go away\n" and r.complete, (r, r.body)
        assert "close" in r.headers.tokens("connection"), f"kfwd keeps the client connection after an early response: {r.headers}"
        assert sent[0] < size, "the upload completed: the upstream was expected to answer early"
    assert up.early_conns == 1
    m1 = k.metrics()
    assert mdelta(m1, m0, CONNECTS) == 1
    assert peers.mget(m1, IDLE) == 0, "the early-response connection went to the idle pool"
    # The next request on the same route must not get the poisoned connection.
    r = request(k.port, "GET", "/next")
    assert echo_json(r)["target"] == "/next", r
    m2 = k.metrics()
    assert mdelta(m2, m1, CONNECTS) == 1, "the early-response connection was reused"
    assert mdelta(m2, m1, REUSES) == 0, "the early-response connection was reused"
    assert up.accepted == 2
    # And a following request works (and may reuse the healthy connection).
    assert echo_json(request(k.port, "GET", "/after"))["target"] == "/after"
    m3 = k.metrics()
    assert mdelta(m3, m2, CONNECTS) + mdelta(m3, m2, REUSES) == 1
    assert mdelta(m3, m2, REUSES) == 1, "a healthy keep-alive connection was not pooled"


@pytest.mark.timeout(30)
@pytest.mark.parametrize("mode", ["fin-on-second", "rst-on-second"])
def test_stale_pooled_connection_replaced(kfwd, peer, mode):
    """The server closes a keep-alive connection as the next request arrives on it (what an
    idle timer firing at that moment looks like). kfwd must resend on a fresh connection
    without a client error, also on a route with retries=0 (the replacement is no retry), and
    must not mark the server down for it."""
    s = peer(peers_http.StaleKeepAlive(mode=mode))
    k = kfwd(cfg(f"upstream s {s.addr}", "route /r0/ s retries=0", "route / s"))
    m0 = k.metrics()
    n = 6
    for i in range(n):
        target = f"/r0/{i}" if i % 2 else f"/{i}"
        r = request(k.port, "GET", target)
        assert r.status == 200 and r.body == f"served {target}\n".encode(), f"request {i} {target}: {r} {r.body!r}\n{k.stderr[-1500:]}"
    m1 = k.metrics()
    assert s.served == n and s.dropped == n - 1, (s.served, s.dropped)
    # Every request after the first went out on the pooled connection, then on a fresh one.
    assert mdelta(m1, m0, REUSES) == n - 1
    assert mdelta(m1, m0, CONNECTS) == n
    assert mdelta(m1, m0, CONNECT_ERRORS) == 0
    assert "marked down" not in k.stderr


@pytest.mark.timeout(30)
def test_stale_pooled_connection_close_race(kfwd, peer):
    """The server closes each keep-alive connection 1 ms after its response, while the client's
    next request races toward kfwd: whether kfwd sees the close first or reuses the dying
    connection, every request must succeed, each on its own upstream connection."""
    s = peer(peers_http.StaleKeepAlive(mode="close-after", delay=0.001))
    k = kfwd(cfg(f"upstream s {s.addr}", "route / s retries=0"))
    m0 = k.metrics()
    n = 30
    with peers.HttpConn(k.port, timeout=10) as c:
        for i in range(n):
            c.request("GET", f"/race{i}")
            r = c.read_response(keep_body=True)
            assert r.status == 200 and r.body == f"served /race{i}\n".encode(), f"request {i}: {r} {r.body!r}\n{k.stderr[-1500:]}"
    m1 = k.metrics()
    assert s.served == n
    assert mdelta(m1, m0, CONNECTS) == n, "a connection the server had closed served a second request?"
