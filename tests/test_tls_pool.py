"""Pooling TLS origin connections: an idle keep-alive TLS connection goes back to the pool with
its TLS state and serves later requests for the same origin settings and server name only; a
pooled TLS connection the origin closed (close_notify or not) is discarded or replaced without
losing a request."""

import pytest

import peers
from peers import mdelta
from peers_tls import NginxTls, tls_certs, tls_peer  # noqa: F401 (fixture)

REUSES = "kfwd_upstream_reuses_total"
CONNECTS = "kfwd_upstream_connects_total"
IDLE = "kfwd_upstream_idle"


@pytest.fixture
def origin(tmp_path, files_dir, tls_certs):
    """nginx ssl with a certificate for localhost, alt.test and 127.0.0.1, logging connections."""
    cert, key = tls_certs.leaf("multi", ["localhost", "alt.test", "127.0.0.1"])
    o = NginxTls(tmp_path / "o", files_dir["1k"].path.parent, cert, key)
    yield o
    o.stop()


def logged(origin, n):
    """The access log once it has @n lines (nginx writes a line as its request ends)."""
    assert peers.wait_for(lambda: len(origin.requests()) >= n, 5), origin.requests()
    return origin.requests()


def test_requests_reuse_one_tls_origin_connection(kfwd, origin, files_dir, tls_certs):
    """Ten requests, each on its own client connection, reach the TLS origin on one connection
    (nginx: one $connection, $connection_requests 1..10); kfwd counts 9 reuses."""
    N = 10
    k = kfwd(f"upstream o {origin.addr} tls sni=localhost ca={tls_certs.ca}\nroute / o\n")
    m0 = k.metrics()
    f = files_dir["1k"]
    for _ in range(N):
        r = peers.get(k.port, f.url)
        assert r.status == 200 and r.sha256 == f.sha256, r
    log = logged(origin, N)
    assert len({c for c, *_ in log}) == 1, log
    assert [n for _, n, *_ in log] == list(range(1, N + 1)), log
    assert all(name == "localhost" for _, _, name, _ in log), log
    m1 = k.metrics()
    assert mdelta(m1, m0, REUSES) == N - 1 and mdelta(m1, m0, CONNECTS) == 1
    assert m1[IDLE] == 1


def test_different_server_names_never_share_a_connection(kfwd, origin, tls_certs):
    """One address, three identities: a url-embedded tls route to it as localhost and as
    127.0.0.1 (one route's settings, two names), and an upstream with sni=alt.test (other
    settings). Requests alternate; each nginx connection only ever saw one server name."""
    p = origin.port
    k = kfwd(f"upstream a {origin.addr} tls sni=alt.test ca={tls_certs.ca}\nroute / a\n"
             f"route /https/ url-embedded tls ca={tls_certs.ca}\nallow 127.0.0.1\nallow localhost\n")
    targets = [f"/https/localhost:{p}/ok", f"/https/127.0.0.1:{p}/ok", "/ok"] * 3
    m0 = k.metrics()
    for t in targets:
        r = peers.get(k.port, t)
        assert r.status == 200, (t, r)
    log = logged(origin, len(targets))
    names = {}
    for conn, _, name, uri in log:
        names.setdefault(conn, set()).add(name)
    assert all(len(v) == 1 for v in names.values()), f"a connection served two names: {names}"
    assert sorted(n for v in names.values() for n in v) == ["-", "alt.test", "localhost"], names
    assert mdelta(k.metrics(), m0, REUSES) == len(targets) - 3


def test_pooled_tls_connection_closed_by_origin_is_discarded(kfwd, files_dir, tmp_path, tls_certs):
    """nginx closes idle connections after 1 s (close_notify, then FIN): the pooled TLS
    connection leaves the pool when it happens, and the next request opens a new one."""
    cert, key = tls_certs.pair("localhost")
    o = NginxTls(tmp_path / "o", files_dir["1k"].path.parent, cert, key, keepalive_timeout="1s")
    try:
        k = kfwd(f"upstream o {o.addr} tls ca={tls_certs.ca}\nroute / o\n")
        assert peers.get(k.port, "/ok").status == 200
        assert k.metric(IDLE) == 1
        assert peers.wait_for(lambda: k.metric(IDLE) == 0, 10), "the closed connection stayed in the pool"
        m0 = k.metrics()
        assert peers.get(k.port, "/ok").status == 200
        m1 = k.metrics()
        assert mdelta(m1, m0, REUSES) == 0 and mdelta(m1, m0, CONNECTS) == 1
        assert mdelta(m1, m0, "kfwd_upstream_errors_total") == 0
    finally:
        o.stop()


class ClosesSecondRequest(peers.EchoUpload):
    """A TLS origin that answers one request per connection, then reads the next request and
    closes instead of answering (with close_notify or without): the race of a pooled connection
    the origin closes just as kfwd sends on it."""

    def __init__(self, notify, **kw):
        super().__init__(**kw)
        self.notify = notify

    def handle(self, conn):
        req = self.next_request(conn)
        if req is None:
            return
        conn.send(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        if conn.read_request() is None:
            return
        if self.notify:
            conn.sock.unwrap()  # close_notify


@pytest.mark.parametrize("notify", [True, False], ids=["close_notify", "cut"])
def test_stale_pooled_tls_connection_request_resent(kfwd, peer, tls_certs, notify):
    """A GET sent on a pooled TLS connection that the origin closes unanswered is resent once on
    a fresh connection (the plain pool's rule): the client gets its 200."""
    cert, key = tls_certs.pair("localhost")
    o = peer(tls_peer(ClosesSecondRequest(notify), cert, key))
    k = kfwd(f"upstream o {o.addr} tls ca={tls_certs.ca}\nroute / o\n")
    m0 = k.metrics()
    for _ in range(3):
        r = peers.get(k.port, "/x", keep_body=True)
        assert r.status == 200 and r.body == b"ok", r
    m1 = k.metrics()
    assert mdelta(m1, m0, REUSES) == 2 and mdelta(m1, m0, "kfwd_upstream_retries_total") == 2
    assert mdelta(m1, m0, "kfwd_upstream_errors_total") == 0
