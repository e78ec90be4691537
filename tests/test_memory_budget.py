"""max-memory: one budget for the bytes kfwd holds in flight, shared fairly between flows."""

import time

import pytest

import peers
from conftest import SAN
from peers import KiB, MiB, kfwd_socket_mem, pipe_bytes

N = 500
BUDGET = 32 * MiB
# What kfwd holds beyond the budget, documented in README ("max-memory"): its RSS at rest and
# per connection (records, buffers), and the kernel's granularity (a queue takes one skb past
# its limit, page-sized pipe slots).
SLACK = 16 * MiB


def attributable(k):
    """RSS + kfwd's sockets' queues (ss r + w) + its pipes' contents (FIONREAD), bytes."""
    sockets, nsocks = kfwd_socket_mem(k.pid)
    pipes, npipes = pipe_bytes(k.pid)
    return k.rss_kb() * KiB + sockets + pipes, (k.rss_kb() * KiB, sockets, nsocks, pipes, npipes)


@pytest.mark.timeout(120)
def test_500_stalled_clients_stay_within_max_memory(kfwd, nginx):
    f = nginx.files["2m"]
    k = kfwd(f"upstream origin {nginx.addr_small_sndbuf}\nroute / origin\nmax-memory 32m")
    assert peers.get(k.port, nginx.files["1k"].url).status == 200
    idle = k.ctl_json("status")
    assert idle["max_memory"] == BUDGET and idle["memory_held"] == 0 and idle["fair_share"] == BUDGET
    conns = []
    for _ in range(N):
        c = peers.HttpConn(k.port, rcvbuf=16 * KiB, timeout=60)
        c.request("GET", f.url)
        conns.append(c)
    charged = peers.wait_for(lambda: k.metric("kfwd_memory_flows") == N, 20, 0.2)
    assert charged, f"{k.metric('kfwd_memory_flows')} of {N} flows charged"
    # settled: every flow paused (its client reads nothing)
    assert peers.wait_for(lambda: k.metric("kfwd_paused_flows") == N, 20, 0.2), k.metrics()
    time.sleep(0.5)
    total, parts = attributable(k)
    st = k.ctl_json("status")
    m = k.metrics()
    print(f"{N} stalled under max-memory 32m: {total / MiB:.1f} MiB attributable "
          f"(rss, sockets, n, pipes, n = {parts}), status {st}")
    assert st["fair_share"] == BUDGET // N
    assert m["kfwd_memory_fair_share_bytes"] == BUDGET // N
    assert st["memory_held"] <= BUDGET, st
    assert total <= BUDGET + SLACK * SAN, f"{total / MiB:.1f} MiB held by kfwd for {N} stalled clients: {parts}"

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
