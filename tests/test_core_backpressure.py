"""Backpressure: a slow or stalled client slows the upstream; kfwd never drops a byte and never
buffers without bound (RSS, socket memory, pipes all bounded)."""

import time

import pytest

import peers
from conftest import SAN
from peers import KiB, MiB, kfwd_socket_mem, mdelta, mget, sockstat_tcp_pages

PAUSED = "kfwd_paused_flows"


def origin(addr, *extra):
    return "\n".join([f"upstream origin {addr}", *extra, "route / origin"])


@pytest.mark.slow("30 MB at 8 KiB per 20 ms is ~75 s by design: the slow-client scenario")
@pytest.mark.timeout(200)
def test_slow_reader_30mb_byte_exact(kfwd, nginx):
    f = nginx.files["30m"]
    k = kfwd(origin(nginx.addr))
    peers.get(k.port, nginx.files["1k"].url)  # warm-up
    m0 = k.metrics()
    rss0 = k.rss_kb()
    peak = [rss0]

    def pace(i):
        time.sleep(0.020)
        if i % 250 == 0:
            peak[0] = max(peak[0], k.rss_kb())

    with peers.HttpConn(k.port, timeout=60) as c:
        c.request("GET", f.url)
        r = c.read_response(read_size=8 * KiB, pace=pace)
    assert r.status == 200
    assert r.complete and r.body_len == f.size, r
    assert r.sha256 == f.sha256
    m1 = k.metrics()
    assert mdelta(m1, m0, "kfwd_pauses_total") >= 1, "upstream never paused for a 400 KiB/s client"
    assert mdelta(m1, m0, "kfwd_resumes_total") >= 1
    assert mget(m1, PAUSED) == 0
    assert peak[0] - rss0 < 4 * 1024 * SAN, f"RSS grew by {peak[0] - rss0} kB while relaying to a slow client"


def test_stalled_client_blocks_upstream(kfwd, peer):
    """Client stalls 5 s on a fast upstream: kfwd's RSS grows < 2 MB, the upstream's progress
    stops far below the body size, then the client drains and gets every byte."""
    p = peer(peers.CountingSender(size=64 * MiB))
    k = kfwd(origin(p.addr))
    assert peers.get(k.port, "/bytes/1024").status == 200  # warm-up: allocator, pools, pipe
    rss0 = k.rss_kb()
    total0 = p.total
    with peers.HttpConn(k.port, rcvbuf=64 * KiB) as c:
        c.request("GET", "/stall")
        samples = []
        t0 = time.monotonic()
        while time.monotonic() - t0 < 5.0:
            time.sleep(0.25)
            samples.append((time.monotonic() - t0, p.total - total0, k.rss_kb()))
        m = k.metrics()
        at_2_5 = [s[1] for s in samples if s[0] <= 2.5][-1]
        at_5 = samples[-1][1]
        peak = max(s[2] for s in samples)
        assert at_5 < 16 * MiB, f"upstream wrote {at_5} of {p.payload.size} bytes to a stalled client"
        assert at_5 - at_2_5 <= 64 * KiB, f"upstream still progressing during the stall: {samples}"
        assert peak - rss0 < 2048 * SAN, f"kfwd RSS grew {peak - rss0} kB during the stall"
        assert mget(m, PAUSED) >= 1, "no paused flow reported while the client is stalled"
        r = c.read_response(read_size=MiB)
        assert r.status == 200
        assert r.complete and r.body_len == p.payload.size, r
        assert r.sha256 == p.payload.sha256
    assert peers.wait_for(lambda: k.metric(PAUSED) == 0, 5), "paused_flows stayed > 0 after the drain"


@pytest.mark.timeout(180)
def test_200_stalled_clients_memory_bounded(kfwd, nginx):
    """200 clients stalled at once on 8 MiB downloads (upstream: nginx with sndbuf 256k).

    Documented bound, with pipe-size 256k, client-sndbuf 256k, upstream-rcvbuf 256k, and the
    kernel doubling SO_SNDBUF/SO_RCVBUF for its bookkeeping:
      kfwd's own kernel memory (its sockets' rmem+wmem, plus its pipes)
          <= 200 x (pipe-size + 2 x client-sndbuf + 2 x upstream-rcvbuf) x 1.1 + 8 MiB
      whole-host TCP memory (sockstat `mem`, includes the clients' and nginx's sockets)
          <= 200 x 2 x (client-sndbuf + upstream-rcvbuf + client rcvbuf 64k + nginx sndbuf 256k)
             x 1.25 + 32 MiB
      kfwd RSS growth < 20 MB; 200 <= kfwd_pipes_in_use <= 400.
    A kfwd that buffers in user space or leaves client sockets to autotune (4 MiB each) fails."""
    N = 200
    pipe = sndbuf = rcvbuf = 256 * KiB
    client_rcvbuf = 64 * KiB
    nginx_sndbuf = 256 * KiB
    f = nginx.files["8m"]
    k = kfwd(origin(nginx.addr_small_sndbuf, "pipe-size 256k", "client-sndbuf 256k", "upstream-rcvbuf 256k"))
    assert peers.get(k.port, nginx.files["1k"].url).status == 200
    assert peers.wait_for(lambda: k.metric("kfwd_connections_active") == 0, 5), "the warm-up connection still open"
    rss0 = k.rss_kb()
    pages0 = sockstat_tcp_pages()
    conns = []
    for i in range(N):
        c = peers.HttpConn(k.port, rcvbuf=client_rcvbuf, timeout=60)
        c.request("GET", f.url)
        conns.append(c)
    paused = peers.wait_for(lambda: (k.metric(PAUSED) or 0) >= N, 20, 0.2)
    time.sleep(1.0)
    m = k.metrics()
    rss = k.rss_kb()
    pages = sockstat_tcp_pages()
    kmem, ksocks = kfwd_socket_mem(k.pid)
    print(
        f"{N} stalled: rss +{rss - rss0} kB, host TCP +{(pages - pages0) * 4096 / MiB:.1f} MiB, "
        f"kfwd sockets {kmem / MiB:.1f} MiB in {ksocks} sockets, metrics {m}"
    )
    assert rss - rss0 < 20 * 1024 * SAN, f"kfwd RSS grew {rss - rss0} kB with {N} stalled clients"
    assert paused, f"only {m.get(PAUSED)} of {N} flows paused while every client is stalled"
    assert mget(m, "kfwd_connections_active") >= N
    pipes = mget(m, "kfwd_pipes_in_use")
    assert N <= pipes <= 2 * N, f"kfwd_pipes_in_use = {pipes} for {N} stalled downloads"
    assert ksocks >= 2 * N, f"ss found only {ksocks} kfwd sockets"
    kfwd_bound = N * (pipe + 2 * sndbuf + 2 * rcvbuf) * 1.1 + 8 * MiB
    kfwd_kernel = kmem + pipes * pipe
    assert kfwd_kernel <= kfwd_bound, (
        f"kfwd kernel memory {kfwd_kernel / MiB:.1f} MiB (sockets {kmem / MiB:.1f} MiB + {pipes} pipes) "
        f"> bound {kfwd_bound / MiB:.1f} MiB"
    )
    host_bound = N * 2 * (sndbuf + rcvbuf + client_rcvbuf + nginx_sndbuf) * 1.25 + 32 * MiB
    host = (pages - pages0) * 4096
    assert host <= host_bound, f"TCP memory grew {host / MiB:.1f} MiB > bound {host_bound / MiB:.1f} MiB"
    # every stalled client now drains and gets every byte
    for i, c in enumerate(conns):
        r = c.read_response(read_size=MiB)
        assert r.status == 200 and r.complete and r.body_len == f.size, (i, r)
        assert r.sha256 == f.sha256, f"client {i} got corrupted bytes"
    assert peers.wait_for(lambda: k.metric(PAUSED) == 0, 5)
    for c in conns:
        c.close()
    assert peers.wait_for(lambda: k.metric("kfwd_connections_active") == 0, 10), "connections_active did not return to 0"
