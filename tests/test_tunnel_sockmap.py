"""Tunnels carried by the BPF sockmap (bpf/kfwd.bpf.c, user/sockmap.c): the answer to the first
request goes through the kernel even when kfwd is slow to hand over, 200 keep-alive requests in
one tunnel, the tail of a stream flushed to a client that stalled while the upstream closed, and
a slow client fed 10 MB byte-exact.

Every test starts kfwd through the env fixture (conftest.py, peers_sockmap.Env): a pin dir of its
own under /sys/fs/bpf for the sockmap data path, removed at teardown; peers from
tests/peers_tunnel.py on 127.0.0.1. Measured numbers go to build/tunnel_measurements.json."""

import hashlib
import time

import pytest

import peers
import peers_tunnel as pt
from conftest import SAN
from peers import KiB, MiB, mdelta
from peers_sockmap import MB, MEASURE, SM_RESP, assert_sockmap_flow_metrics, log_problems, syscall_delayed, tunnel_diagnostics, wait_idle


# kfwd's bpf() entry delayed this long by strace: a slow (sanitized, preempted) kfwd between the
# first pump's write of the request and the resume request of the answer's direction
BPF_DELAY_US = 5000


@pytest.mark.timeout(60)
def test_sockmap_answer_to_the_first_request_goes_through_the_kernel(env, peer):
    """A slow client and a fast producer keep a paused direction in user space (every skb arrives
    while kfwd still writes the ones before), so the bytes that go through the kernel are those
    after the flow was added, before the first pause. The answer's direction must therefore be
    ready to redirect before kfwd forwards the request that makes the producer answer: with the
    resume request written only by the first pump, after it wrote the request, an answer faster
    than kfwd (here: strace delays kfwd's bpf() calls, as ASan made it slow enough for
    test_sockmap_slow_client_10mb) passed, and the whole body crossed user space."""
    N = 2 * MiB
    p = peer(peers.CountingSender(size=N))
    k = env.start("sockmap")
    m0 = k.metrics()
    with syscall_delayed(k, "bpf", BPF_DELAY_US):
        c = pt.TunnelHttpConn(k.port, p.port, timeout=30)
        c.request("GET", "/slow")
        r = c.read_response(read_size=16 * KiB, pace=lambda i: time.sleep(0.01))
        assert r.status == 200 and r.complete and r.body_len == N and r.sha256 == p.payload.sha256, r
        c.close()
    wait_idle(k)
    m1 = k.metrics()
    # the first cap (1 MiB) is the floor: what the kernel takes before the client's queue is full
    assert mdelta(m1, m0, SM_RESP) >= MiB, f"only {mdelta(m1, m0, SM_RESP)} response bytes went through the sockmap"
    assert not log_problems(k.stderr), k.stderr


@pytest.mark.timeout(120)
def test_sockmap_keepalive_200_requests_in_one_tunnel(env, nginx):
    """200 keep-alive GETs of the 8 MiB file inside one CONNECT tunnel to nginx, every third
    with a stall in the middle of its body; all byte-exact."""
    f = nginx.files["8m"]
    k = env.start("sockmap")
    m0 = k.metrics()
    c = pt.TunnelHttpConn(k.port, nginx.port, timeout=30)

    def stall(i):
        if i == 2:
            time.sleep(0.03)

    for n in range(200):
        c.request("GET", f.url)
        r = c.read_response(read_size=MiB, pace=stall if n % 3 == 2 else None)
        assert r.status == 200 and r.complete and r.body_len == f.size, (n, r)
        assert r.sha256 == f.sha256, f"response {n} corrupted"
        assert not r.eof, f"tunnel closed after response {n}"
    c.close()
    wait_idle(k)
    m1 = k.metrics()
    assert_sockmap_flow_metrics(k, m0, m1)
    MEASURE["keepalive_sockmap_fraction_in_kernel"] = round(mdelta(m1, m0, SM_RESP) / (200 * f.size), 3)
    assert not log_problems(k.stderr), k.stderr


@pytest.mark.timeout(60)
def test_sockmap_tail_flush(env, peer):
    """The upstream sends a body and closes while the client is stalled (every byte already
    acknowledged by kfwd's side, so it sits in kfwd's sockets and the sockmap queues): the
    client then reads every byte and EOF."""
    N = 14 * MiB + 4321
    p = peer(pt.SendAndClose(N, wait_acked=10, trigger=True))
    # sockmap-cap 16m: the 14 MiB tail fits in kfwd's side (cap + socket buffers) while the
    # client reads nothing, so the upstream's FIN arrives with the whole body still in flight
    k = env.start("sockmap", extra=["sockmap-cap 16m"])
    s, rest = env.tunnel(k, p.port)
    # the upstream starts only now, with the flow already in the sockmap (the 200 came from it)
    s.sendall(b"!")
    assert p.closed.wait(15), (
        f"setup: the upstream never got to close: it could write only {p.sent} of {N} bytes while the "
        f"client stalled\n{k.stderr[-2000:]}"
    )
    assert p.acked, (
        f"setup: the upstream could not hand every byte to kfwd while the client stalled "
        f"({p.unacked} of {N} bytes unacknowledged after 10 s)\n{k.stderr[-2000:]}"
    )
    time.sleep(0.3)
    s.settimeout(30)
    total, sha, end = pt.read_to_eof(s, hasher=hashlib.sha256(rest))
    total += len(rest)
    assert end == "eof", f"{end} instead of EOF after the tail ({total} of {N} bytes)\n" + tunnel_diagnostics(k)
    assert total == N, f"client got {total} of {N} bytes after the upstream closed"
    assert sha == p.payload.sha256
    s.close()
    wait_idle(k)
    assert not log_problems(k.stderr), k.stderr


@pytest.mark.slow("10 MB at 8 KiB per 20 ms is ~25 s by design")
@pytest.mark.timeout(90)
def test_sockmap_slow_client_10mb(env, peer):
    N = 10 * MB
    p = peer(peers.CountingSender(size=N))
    k = env.start("sockmap")
    m0 = k.metrics()
    rss0 = k.rss_kb()
    peak = [rss0]

    def pace(i):
        time.sleep(0.020)
        if i % 100 == 0:
            peak[0] = max(peak[0], k.rss_kb())

    c = pt.TunnelHttpConn(k.port, p.port, timeout=60)
    c.request("GET", "/slow")
    r = c.read_response(read_size=8 * KiB, pace=pace)
    assert r.status == 200 and r.complete and r.body_len == N, r
    assert r.sha256 == p.payload.sha256
    c.close()
    wait_idle(k)
    m1 = k.metrics()
    assert_sockmap_flow_metrics(k, m0, m1)
    assert peak[0] - rss0 < 8 * 1024 * SAN, f"kfwd RSS grew {peak[0] - rss0} kB relaying to a slow client"
    assert not log_problems(k.stderr), k.stderr
