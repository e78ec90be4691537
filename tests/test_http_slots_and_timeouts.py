"""Connection slots (upstream-max-conns): a request waits for a free slot, many waiters are
served in turn, no slot in time is a 503; and a route's response timeout is a 504.

Upstreams: the Python servers of tests/peers.py and tests/peers_http.py. Everything
listens on 127.0.0.1; every process a test starts is stopped by PID at teardown."""

import threading
import time

import pytest

import peers
import peers_http
from peers_http import SLACK, cfg, is_kfwd_answer, request


@pytest.mark.timeout(30)
def test_max_conns_queues_second_request(kfwd, peer):
    slow = peer(peers_http.Slow())
    k = kfwd(cfg(f"upstream s {slow.addr}", "route / s", "upstream-max-conns 1"))
    res = {}

    def first():
        res["a"] = request(k.port, "GET", "/a/delay/500")
        res["a_done"] = time.monotonic()

    t = threading.Thread(target=first, daemon=True)
    t.start()
    assert peers.wait_for(lambda: slow.inflight == 1, 5), "first request did not reach the upstream"
    tb = time.monotonic()
    rb = request(k.port, "GET", "/b/delay/0")
    b_done = time.monotonic()
    t.join(10)
    assert res["a"].status == 200 and res["a"].body == b"slow /a/delay/500\n", res["a"]
    assert rb.status == 200 and rb.body == b"slow /b/delay/0\n", (rb, rb.body)
    assert slow.max_inflight == 1, "two requests at the upstream at once with upstream-max-conns 1"
    assert slow.max_conns == 1 and slow.accepted == 1, (slow.max_conns, slow.accepted)
    arrivals = {target: (t0, t1) for target, t0, t1 in slow.log}
    assert arrivals["/b/delay/0"][0] >= arrivals["/a/delay/500"][1], "second request reached the upstream before the first was answered"
    assert b_done - tb >= 0.3, "second request was not queued"
    assert b_done >= res["a_done"] - SLACK


@pytest.mark.timeout(30)
def test_max_conns_many_waiters(kfwd, peer):
    """upstream-max-conns 2 and 7 concurrent requests of 200 ms: all succeed, never more than
    two connections or requests at the upstream at once."""
    slow = peer(peers_http.Slow(default_ms=200))
    k = kfwd(cfg(f"upstream s {slow.addr}", "route / s", "upstream-max-conns 2"))
    res = {}

    def one(i):
        try:
            res[i] = request(k.port, "GET", f"/w{i}").status
        except Exception as ex:  # noqa: BLE001
            res[i] = repr(ex)

    t0 = time.monotonic()
    threads = [threading.Thread(target=one, args=(i,), daemon=True) for i in range(7)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    elapsed = time.monotonic() - t0
    assert res == {i: 200 for i in range(7)}, res
    assert slow.max_inflight <= 2 and slow.max_conns <= 2, (slow.max_inflight, slow.max_conns)
    assert slow.accepted <= 2, f"{slow.accepted} upstream connections with upstream-max-conns 2"
    assert elapsed >= 4 * 0.2 - SLACK, f"7 requests of 200 ms over 2 slots took {elapsed:.2f} s"


@pytest.mark.timeout(30)
def test_max_conns_no_slot_in_time_503(kfwd, peer):
    slow = peer(peers_http.Slow())
    k = kfwd(cfg(f"upstream s {slow.addr}", "route / s", "upstream-max-conns 1", "connect-timeout 400ms"))
    res = {}

    def first():
        res["a"] = request(k.port, "GET", "/a/delay/1500")

    t = threading.Thread(target=first, daemon=True)
    t.start()
    assert peers.wait_for(lambda: slow.inflight == 1, 5), "first request did not reach the upstream"
    t0 = time.monotonic()
    rb = request(k.port, "GET", "/b")
    elapsed = time.monotonic() - t0
    assert is_kfwd_answer(rb, 503), (rb, rb.body)
    assert 0.4 - SLACK <= elapsed <= 0.4 + 0.5, f"503 after {elapsed * 1000:.0f} ms (connect-timeout 400 ms)"
    t.join(10)
    assert res["a"].status == 200, res["a"]
    assert [q.target for q in slow.requests] == ["/a/delay/1500"]
    # The slot is free again.
    assert request(k.port, "GET", "/c").status == 200
    assert slow.max_inflight == 1


@pytest.mark.timeout(30)
def test_route_response_timeout_504(kfwd, peer):
    slow = peer(peers_http.Slow())
    k = kfwd(cfg(f"upstream fast {slow.addr}", f"upstream slow {slow.addr}",
                 "route /slow/ slow response-timeout=300ms", "route / fast"))
    # The route without the override waits longer than 300 ms.
    t0 = time.monotonic()
    r = request(k.port, "GET", "/fast/delay/700")
    assert r.status == 200 and time.monotonic() - t0 >= 0.65, r
    t0 = time.monotonic()
    r = request(k.port, "GET", "/slow/delay/3000")
    elapsed = time.monotonic() - t0
    assert is_kfwd_answer(r, 504), (r, r.body)
    assert 0.3 - SLACK <= elapsed <= 0.3 + 0.7, f"504 after {elapsed * 1000:.0f} ms (response-timeout=300ms)"
    assert [q.target for q in slow.requests].count("/slow/delay/3000") == 1, "timed-out request was retried"
