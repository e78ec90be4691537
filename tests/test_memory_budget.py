"""max-memory: one budget for the bytes kfwd holds in flight, shared fairly between flows."""

import hashlib
import time

import pytest

import peers
from conftest import SAN
from peers import KiB, MiB, kfwd_socket_mem, pipe_bytes

BUDGET = 32 * MiB
# What kfwd holds beyond the budget, documented in README ("One memory budget"):
# - the kernel's granularity on top of what is charged: a socket queue takes one skb past its
#   SO_SNDBUF, and TCP sizes an skb at most half the peer's largest window (tcp_bound_to_half_wnd,
#   6.18), so kernel_slack() allows half a client's receive buffer per stalled client;
# - RSS_SLACK: kfwd's own RSS (about 4.5 MiB at rest, and its records and buffers for the
#   connections here), which the budget does not count; SAN times that under the sanitizers.
RSS_SLACK = 8 * MiB


def kernel_slack(n, client_rcvbuf):
    return n * client_rcvbuf // 2


def attributable(k):
    """(RSS, kfwd's sockets' queues (ss r + w) + its pipes' contents (FIONREAD), details), bytes."""
    sockets, nsocks = kfwd_socket_mem(k.pid)
    pipes, npipes = pipe_bytes(k.pid)
    rss = k.rss_kb() * KiB
    return rss, sockets + pipes, (rss, sockets, nsocks, pipes, npipes)


def check_within_budget(k, n, client_rcvbuf, what):
    """Once the n stalled flows are paused and settled: charged <= the budget, the kernel holds
    no more than charged (+ its granularity), and RSS + kernel <= budget + the documented slack."""
    assert peers.wait_for(lambda: k.metric("kfwd_paused_flows") == n, 30, 0.2), k.metrics()
    time.sleep(0.5)
    rss, kernel, parts = attributable(k)
    st = k.ctl_json("status")
    print(f"{n} {what} under max-memory 32m: {(rss + kernel) / MiB:.1f} MiB attributable, "
          f"{st['memory_held'] / MiB:.1f} MiB charged (rss, sockets, n, pipes, n = {parts}), status {st}")
    assert st["memory_held"] <= BUDGET, st
    slack = kernel_slack(n, client_rcvbuf)
    assert kernel <= st["memory_held"] + slack, f"the kernel holds more than charged: {parts}, {st}"
    assert rss + kernel <= BUDGET + slack + RSS_SLACK * SAN, \
        f"{(rss + kernel) / MiB:.1f} MiB held by kfwd for {n} {what}: {parts}"
    return st


def read_part(c, n, h):
    """Read n body bytes from c into hash h."""
    while n:
        d = c.stream.read_some(min(n, MiB))
        assert d, "the connection ended mid-body"
        h.update(d)
        n -= len(d)


@pytest.mark.timeout(120)
def test_500_stalled_clients_stay_within_max_memory(kfwd, nginx):
    N = 500
    RCVBUF = 16 * KiB
    f = nginx.files["2m"]
    k = kfwd(f"upstream origin {nginx.addr_small_sndbuf}\nroute / origin\nmax-memory 32m")
    assert peers.get(k.port, nginx.files["1k"].url).status == 200
    idle = k.ctl_json("status")
    assert idle["max_memory"] == BUDGET and idle["memory_held"] == 0 and idle["fair_share"] == BUDGET
    conns = []
    for _ in range(N):
        c = peers.HttpConn(k.port, rcvbuf=RCVBUF, timeout=60)
        c.request("GET", f.url)
        conns.append(c)
    charged = peers.wait_for(lambda: k.metric("kfwd_memory_flows") == N, 20, 0.2)
    assert charged, f"{k.metric('kfwd_memory_flows')} of {N} flows charged"
    st = check_within_budget(k, N, RCVBUF, "stalled clients")
    assert st["fair_share"] == BUDGET // N
    assert k.metric("kfwd_memory_fair_share_bytes") == BUDGET // N

    # Every client now reads its body, byte-exact; the fair share grows back as flows end.
    half = N // 2
    for i, c in enumerate(conns[:half]):
        r = c.read_response(read_size=MiB)
        assert r.status == 200 and r.complete and r.body_len == f.size, (i, r)
        assert r.sha256 == f.sha256, f"client {i} got corrupted bytes"
        c.close()
    grown = peers.wait_for(lambda: k.ctl_json("status")["fair_share"] >= BUDGET // (N - half), 10, 0.2)
    assert grown, k.ctl_json("status")
    for i, c in enumerate(conns[half:], half):
        r = c.read_response(read_size=MiB)
        assert r.status == 200 and r.complete and r.body_len == f.size, (i, r)
        assert r.sha256 == f.sha256, f"client {i} got corrupted bytes"
        c.close()
    assert peers.wait_for(lambda: k.metric("kfwd_memory_flows") == 0, 10), k.metrics()
    assert k.metric("kfwd_memory_held_bytes") == 0
    assert k.ctl_json("status")["fair_share"] == BUDGET


@pytest.mark.timeout(180)
def test_clients_stalled_after_reading_stay_within_max_memory(kfwd, nginx):
    """Bench row [5]'s shape: 200 clients each read 1 MiB of an 8 MiB body, one after the other
    (their flows grow as they read, while the others wait at the floor), then stall. The grants
    leave the sum within the budget, and every client then reads the rest byte-exact."""
    N = 200
    RCVBUF = 64 * KiB
    READ = MiB
    f = nginx.files["8m"]
    k = kfwd(f"upstream origin {nginx.addr}\nroute / origin\nmax-memory 32m")
    conns = []
    for _ in range(N):
        c = peers.HttpConn(k.port, rcvbuf=RCVBUF, timeout=60)
        c.request("GET", f.url)
        conns.append(c)
    assert peers.wait_for(lambda: k.metric("kfwd_memory_flows") == N, 20, 0.2), k.metrics()
    hashes = []
    for c in conns:
        _, status, _, headers = c.read_head()
        assert status == 200 and int(headers.get("content-length")) == f.size
        h = hashlib.sha256()
        read_part(c, READ, h)
        hashes.append(h)
    st = check_within_budget(k, N, RCVBUF, "clients stalled after 1 MiB")
    # The first readers' flows grew while the budget had room.
    assert st["memory_held"] > N * 64 * KiB + 4 * MiB, st

    for i, (c, h) in enumerate(zip(conns, hashes)):
        read_part(c, f.size - READ, h)
        assert h.hexdigest() == f.sha256, f"client {i} got corrupted bytes"
        c.close()
    assert peers.wait_for(lambda: k.metric("kfwd_memory_flows") == 0, 10), k.metrics()
    assert k.metric("kfwd_memory_held_bytes") == 0
