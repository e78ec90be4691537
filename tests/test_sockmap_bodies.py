"""Response bodies through the BPF sockmap (close-delimited or long bodies): with
data-path sockmap a close-delimited response body, or a Content-Length body of at least
sockmap-body-min, is forwarded upstream -> client by the verdict program once kfwd wrote the head.
Both connections end with such a body (a socket leaves the sockmap only at connection end), so
kfwd answers it with Connection: close and never pools the upstream connection.

Asserted: byte-exact bodies (sha256), exactly Content-Length bytes even when the upstream sends
more, the kernel's share from kfwd's counters, the bound under a stalled client (upstream
progress, MemAvailable), nothing lost when the upstream closes while the client stalls, a cut
body reported as cut, and that short or keep-alive bodies stay on splice."""

import hashlib
import threading
import time

import pytest

import peers
from peers import KiB, MiB, Payload, Peer, graceful_close, mdelta
from peers_sockmap import (
    FLOWS,
    HOST_DROP_SANITY,
    MEASURE,
    SM_RESP,
    SPL_RESP,
    PacedCloseDelimited,
    least,
    log_problems,
    mem_available,
    tunnel_diagnostics,
    url,
    wait_idle,
)

RESPONSES = "kfwd_sockmap_responses_total"
ABORTED = "kfwd_aborted_transfers_total"
IDLE_UP = "kfwd_upstream_idle"
FALLBACKS = "kfwd_sockmap_start_fallbacks_total"


class LengthThenExtra(Peer):
    """Answers Content-Length `size` and writes `extra` bytes more right after the body (a broken
    upstream), then keeps the connection open until the peer closes it."""

    def __init__(self, size, extra=b"", seed=63, **kw):
        super().__init__(**kw)
        self.payload = Payload(size, seed=seed)
        self.extra = extra
        self.closed_by_kfwd = threading.Event()

    def handle(self, conn):
        req = self.next_request(conn)
        if req is None:
            return
        conn.send(f"HTTP/1.1 200 OK\r\nContent-Length: {self.payload.size}\r\n\r\n".encode())
        for p in self.payload.pieces(256 * KiB):
            conn.send(p)
        if self.extra:
            conn.send(self.extra)
        conn.sock.settimeout(60)
        try:
            while conn.sock.recv(65536):
                pass
        except OSError:
            pass
        self.closed_by_kfwd.set()


class HeadThenBlast(Peer):
    """Content-Length `size`: the head, a pause of `head_delay` s (kfwd hands the body to the
    sockmap while the upstream is quiet), then the body as fast as the socket takes it; .total
    counts the body bytes send() accepted."""

    def __init__(self, size, head_delay=0.2, cut_at=None, seed=67, **kw):
        super().__init__(**kw)
        self.payload = Payload(size, seed=seed)
        self.head_delay = head_delay
        self.cut_at = cut_at  # close after this many body bytes
        self.total = 0

    def handle(self, conn):
        req = self.next_request(conn)
        if req is None:
            return
        conn.send(f"HTTP/1.1 200 OK\r\nContent-Length: {self.payload.size}\r\n\r\n".encode())
        time.sleep(self.head_delay)
        left = self.payload.size if self.cut_at is None else self.cut_at
        for p in self.payload.pieces(256 * KiB):
            p = memoryview(p)[:left]
            left -= len(p)
            while p:
                n = conn.sock.send(p)
                p = p[n:]
                self.total += n
            if not left:
                break
        if self.cut_at is not None:
            graceful_close(conn.sock)


def start(env, extra=()):
    return env.start("sockmap", extra=list(extra))


@pytest.mark.timeout(90)
def test_close_delimited_body_in_the_kernel(env, peer):
    """A paced close-delimited stream (64 MiB) reaches the client byte-exact with Connection:
    close, carried by the sockmap: most of it redirected by the program, none spliced."""
    N = 64 * MiB
    p = peer(PacedCloseDelimited(N))
    k = start(env)
    m0 = k.metrics()
    c = peers.HttpConn(k.port, timeout=60)
    c.request("GET", url(p))
    r = c.read_response(read_size=MiB)
    m1 = k.metrics()
    assert r.status == 200 and r.framing == "close" and r.complete, r
    assert r.body_len == N and r.sha256 == p.payload.sha256, f"{r.body_len} of {N} bytes, sha ok {r.sha256 == p.payload.sha256}"
    assert "close" in r.headers.tokens("connection"), r.headers
    c.close()
    wait_idle(k)
    m2 = k.metrics()
    assert mdelta(m2, m0, RESPONSES) == 1 and mdelta(m2, m0, FLOWS) == 1, (m0, m2)
    assert mdelta(m2, m0, SPL_RESP) == 0, "the body was spliced, not handed to the sockmap"
    in_kernel = mdelta(m1, m0, SM_RESP)
    MEASURE["response_close_delimited_paced_in_kernel_fraction"] = round(in_kernel / N, 3)
    # a producer slower than the client never reaches the cap: after the first resume every
    # skb is redirected (user space writes only the head and what came with it)
    assert in_kernel >= N // 2, (
        f"only {in_kernel} of {N} bytes redirected in the kernel\n{tunnel_diagnostics(k)}"
    )
    assert not log_problems(k.stderr), k.stderr


@pytest.mark.timeout(90)
def test_close_delimited_fast_body_and_tail_after_a_stall(env, peer):
    """A fast close-delimited upstream closes while the client stalls, every byte acknowledged by
    kfwd's side first (the body starts after the head is in the sockmap, so the program redirects
    it, and sockmap-cap 16m lets all of it into the client socket's queues): after the stall the
    client reads every byte, then EOF."""
    N = 6 * MiB + 777
    p = peer(PacedCloseDelimited(N, piece=256 * KiB, interval=0, head_delay=0.3, seed=65))
    k = start(env, extra=["sockmap-cap 16m"])
    m0 = k.metrics()
    c = peers.HttpConn(k.port, rcvbuf=64 * KiB, timeout=60)
    c.request("GET", url(p))
    assert p.closed.wait(30), f"the upstream could not hand its body to kfwd\n{tunnel_diagnostics(k)}"
    time.sleep(0.3)
    r = c.read_response(read_size=MiB)
    assert r.status == 200 and r.complete and r.eof, r
    assert r.body_len == N and r.sha256 == p.payload.sha256, f"client got {r.body_len} of {N} bytes after the upstream closed"
    c.close()
    wait_idle(k)
    assert mdelta(k.metrics(), m0, SM_RESP) > 0, "the program redirected nothing"
    assert not log_problems(k.stderr), k.stderr


@pytest.mark.timeout(60)
def test_length_body_exact_even_when_upstream_sends_more(env, peer):
    """A 4 MiB Content-Length body (>= sockmap-body-min) on a keep-alive request: the client gets
    Connection: close, exactly 4 MiB, then EOF; the 64 KiB the upstream wrongly sent after the
    body never reach the client, and the upstream connection is closed, not pooled."""
    N = 4 * MiB
    p = peer(LengthThenExtra(N, extra=b"X" * (64 * KiB)))
    k = start(env)
    m0 = k.metrics()
    c = peers.HttpConn(k.port, timeout=30)
    c.request("GET", url(p))
    r = c.read_response(read_size=MiB)
    assert r.status == 200 and r.framing == "length" and r.complete, r
    assert r.sha256 == p.payload.sha256
    assert "close" in r.headers.tokens("connection"), r.headers
    assert c.wait_eof(10), "kfwd kept the client connection open after a sockmap body"
    assert p.closed_by_kfwd.wait(10), "kfwd kept the upstream connection (pooled or open)"
    c.close()
    wait_idle(k)
    m1 = k.metrics()
    # a body already streaming at full speed may be handed back to splice (nothing lost either way)
    assert mdelta(m1, m0, RESPONSES) + mdelta(m1, m0, FALLBACKS) == 1, (m0, m1)
    assert k.metric(IDLE_UP) == 0
    assert not log_problems(k.stderr), k.stderr


@pytest.mark.timeout(60)
def test_short_and_keepalive_bodies_stay_on_splice(env, peer):
    """Bodies shorter than sockmap-body-min keep their keep-alive connection and splice: two
    requests on one connection, no sockmap flow."""
    p = peer(peers.CountingSender(size=256 * KiB))
    k = start(env)
    m0 = k.metrics()
    c = peers.HttpConn(k.port, timeout=30)
    for _ in range(2):
        c.request("GET", url(p))
        r = c.read_response()
        assert r.status == 200 and r.complete and r.sha256 == p.payload.sha256, r
        assert "close" not in r.headers.tokens("connection"), r.headers
    c.close()
    wait_idle(k)
    m1 = k.metrics()
    assert mdelta(m1, m0, FLOWS) == 0 and mdelta(m1, m0, RESPONSES) == 0, (m0, m1)
    assert len(p.per_conn) == 2 and mdelta(m1, m0, "kfwd_upstream_connects_total") == 1, (
        "the second request did not reuse the pooled upstream connection"
    )


@pytest.mark.timeout(60)
def test_cut_length_body_is_reported_cut(env, peer):
    """The upstream closes after half of a 4 MiB Content-Length body: the client gets the 2 MiB
    that came, byte-exact, then EOF (short of the Content-Length: not a complete response), and
    kfwd counts an aborted transfer."""
    p = peer(HeadThenBlast(4 * MiB, cut_at=2 * MiB))
    k = start(env)
    m0 = k.metrics()
    c = peers.HttpConn(k.port, timeout=30)
    c.request("GET", url(p))
    r = c.read_response(read_size=MiB)
    assert r.status == 200 and not r.complete, f"a cut body looked complete: {r}"
    # what the upstream sent arrives, then a FIN (a reset would have thrown bytes away)
    assert r.eof and r.body_len == p.total == 2 * MiB, f"{r}, upstream sent {p.total}"
    assert r.sha256 == hashlib.sha256(p.payload.bytes()[: p.total]).hexdigest()
    c.close()
    wait_idle(k)
    m1 = k.metrics()
    assert mdelta(m1, m0, RESPONSES) == 1 and mdelta(m1, m0, ABORTED) == 1, (m0, m1)


@pytest.mark.timeout(120)
def test_stalled_client_bounded_on_a_sockmap_body(env, peer):
    """A client stalls 4 s on a fast 256 MiB Content-Length body carried by the sockmap: the
    upstream's progress plateaus near cap + socket buffers (what is held, exactly) and
    MemAvailable stays within a coarse bound other jobs on the machine cannot trip; then the
    client reads every byte."""
    SIZE = 256 * MiB
    p = peer(HeadThenBlast(SIZE))
    k = start(env)
    m0 = k.metrics()
    mem0 = mem_available()
    c = peers.HttpConn(k.port, rcvbuf=64 * KiB, timeout=60)
    c.request("GET", url(p))
    samples = []
    t0 = time.monotonic()
    while time.monotonic() - t0 < 4.0:
        time.sleep(0.25)
        samples.append((round(time.monotonic() - t0, 2), p.total, mem0 - mem_available()))
    at_2 = [s[1] for s in samples if s[0] <= 2.0][-1]
    at_4 = samples[-1][1]
    mem_drop = least(samples, 2)
    MEASURE["response_stall_upstream_plateau_MiB"] = round(at_4 / MiB, 2)
    MEASURE["response_stall_memavailable_drop_MiB"] = round(mem_drop / MiB, 1)
    assert mdelta(k.metrics(), m0, RESPONSES) == 1, "the body did not go to the sockmap"
    assert at_4 < 32 * MiB, f"upstream wrote {at_4} bytes to a client stalled 4 s: {samples}"
    assert at_4 - at_2 <= MiB, f"upstream still progressing during the stall: {samples}"
    assert mem_drop < HOST_DROP_SANITY, f"MemAvailable dropped {mem_drop / MiB:.1f} MiB: {samples}"
    r = c.read_response(read_size=MiB)
    assert r.status == 200 and r.complete and r.body_len == SIZE and r.sha256 == p.payload.sha256, r
    c.close()
    wait_idle(k)
    assert not log_problems(k.stderr), k.stderr


@pytest.mark.timeout(60)
def test_client_abort_mid_sockmap_body(env, peer):
    """The client reads 1 MiB of a 256 MiB sockmap body and closes: kfwd ends both connections
    (the upstream sees its connection go), counts an aborted transfer and holds nothing."""
    p = peer(HeadThenBlast(256 * MiB))
    k = start(env)
    m0 = k.metrics()
    fds0 = k.settled_fd_count()
    c = peers.HttpConn(k.port, timeout=30)
    c.request("GET", url(p))
    c.read_head()
    got = 0
    while got < MiB:
        got += len(c.stream.read_some(MiB - got))
    c.close()
    wait_idle(k)
    m1 = k.metrics()
    assert mdelta(m1, m0, RESPONSES) == 1 and mdelta(m1, m0, ABORTED) == 1, (m0, m1)
    assert p.total < 256 * MiB, "the upstream could write its whole body to a client that left"
    assert peers.wait_for(lambda: k.fd_count() == fds0, 5), f"kfwd holds {k.fd_count() - fds0} fds more"
    assert not log_problems(k.stderr), k.stderr
