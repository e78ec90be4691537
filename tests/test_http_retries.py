"""Retries and passive health: a server killed mid-run costs no client error, which requests are
retried (idempotent ones, a POST only before it left), the backoff between attempts within its
bounds, and every server down answered fast with 502 until upstream-down-time has passed.

Upstreams: the Python servers of tests/peers.py and tests/peers_http.py,
and private nginx processes (the mini_nginx fixture). Everything
listens on 127.0.0.1; every process a test starts is stopped by PID at teardown."""

import hashlib
import re
import threading
import time

import pytest

import peers
import peers_http
from peers import MiB, mdelta
from peers_http import CONNECTS, CONNECT_ERRORS, RETRIES, SLACK, cfg, echo_json, is_kfwd_answer, nreq, request


@pytest.mark.timeout(60)
def test_server_killed_mid_run_no_client_errors(kfwd, mini_nginx):
    """500 GETs from 4 keep-alive clients spread over three nginx processes; one is SIGKILLed
    (by PID) half-way. Retries on connect failure / empty close plus passive health: no client
    sees an error, and the dead server is tried only a few times."""
    servers = [mini_nginx(f"srv{i}") for i in range(3)]
    victim = servers[1]
    k = kfwd(cfg(f"upstream three {' '.join(s.addr for s in servers)}", "route / three"))
    m0 = k.metrics()
    total, nthreads = 500, 4
    done = [0]
    lock = threading.Lock()
    errors = []
    served = {s.ident: 0 for s in servers}
    killed_at = [None]

    def client(n, per):
        c = peers.HttpConn(k.port, timeout=10)
        try:
            for i in range(per):
                try:
                    c.request("GET", f"/t{n}/{i}")
                    r = c.read_response(keep_body=True)
                    ok = r.status == 200 and r.complete and r.body.strip().decode() in served
                    if not ok:
                        errors.append(f"client {n} request {i}: {r} {r.body[:80]!r}")
                    else:
                        with lock:
                            served[r.body.strip().decode()] += 1
                    if r.eof or "close" in r.headers.tokens("connection"):
                        c.close()
                        c = peers.HttpConn(k.port, timeout=10)
                except Exception as ex:  # noqa: BLE001 - every failure is a client error
                    errors.append(f"client {n} request {i}: {type(ex).__name__}: {ex}")
                    c.close()
                    c = peers.HttpConn(k.port, timeout=10)
                with lock:
                    done[0] += 1
                    kill_now = done[0] == total // 2
                if kill_now:  # mid-way, while the other clients have requests in flight
                    killed_at[0] = done[0]
                    victim.kill()
        finally:
            c.close()

    threads = [threading.Thread(target=client, args=(n, total // nthreads), daemon=True) for n in range(nthreads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(40)
    assert not any(t.is_alive() for t in threads), "client threads still running"
    assert killed_at[0] == total // 2 and victim.proc.poll() is not None
    m1 = k.metrics()
    assert not errors, f"{len(errors)} client errors after killing {victim.ident} at {killed_at[0]} done:\n" + "\n".join(errors[:20])
    assert done[0] == total and sum(served.values()) == total, (done, served)
    assert served[victim.ident] >= 50, f"the victim served only {served[victim.ident]} before the kill: {served}"
    connect_errors = mdelta(m1, m0, CONNECT_ERRORS)
    assert connect_errors <= nthreads + 2, f"{connect_errors} connect errors: the dead server was not skipped (passive health)"
    assert "marked down" in k.stderr


@pytest.mark.timeout(30)
def test_non_idempotent_not_retried_on_5xx(kfwd, peer):
    s = peer(peers_http.StatusSequence(statuses=[503]))
    k = kfwd(cfg(f"upstream s {s.addr}", "route / s retries=2 retry-on=5xx"))
    m0 = k.metrics()
    for method, body in (("POST", b"form=1"), ("POST", None), ("PATCH", b"p")):
        before = nreq(s)
        r = request(k.port, method, "/act", body=body, headers=[("X-Req-Id", method)])
        assert r.status == 503 and r.body.startswith(b"attempt "), f"{method}: {r} {r.body!r}"
        assert nreq(s) - before == 1, f"{method} (body={body!r}) reached the upstream {nreq(s) - before} times"
    # An idempotent request whose body was forwarded is not retried either (no body buffering).
    before = nreq(s)
    r = request(k.port, "PUT", "/put", body=b"x" * 100)
    assert r.status == 503 and nreq(s) - before == 1, (r, nreq(s) - before)
    assert mdelta(k.metrics(), m0, RETRIES) == 0


@pytest.mark.timeout(30)
def test_empty_close_retries_idempotent_only(kfwd, peer):
    """A connection closed before any response byte is retried for GET (on the next server) but
    not for POST, which may have been acted on: the client gets kfwd's 502."""
    closer = peer(peers.CloseBeforeHead())
    e = peer(peers.EchoUpload())
    # Two groups over the same servers: separate round-robin and health state, closer first.
    k = kfwd(cfg(f"upstream g1 {closer.addr} {e.addr}", f"upstream g2 {closer.addr} {e.addr}",
                 "route /get/ g1", "route /post/ g2"))
    r = request(k.port, "GET", "/get/x")
    assert echo_json(r)["target"] == "/get/x"
    assert [q.target for q in closer.requests] == ["/get/x"] and nreq(e) == 1
    r = request(k.port, "POST", "/post/x", body=b"data")
    assert is_kfwd_answer(r, 502), (r, r.body)
    assert [q.target for q in closer.requests] == ["/get/x", "/post/x"]
    assert nreq(e) == 1, "the POST was retried on the next server"


@pytest.mark.timeout(30)
def test_post_with_body_retried_after_connect_refused(kfwd, peer):
    """Connection refused: the request never left, so even a POST with a body is retried on the
    next server, and the body arrives intact (including the bytes that came with the head)."""
    dead = peers.free_port()
    e = peer(peers.EchoUpload())
    k = kfwd(cfg(f"upstream g 127.0.0.1:{dead} {e.addr}", "route / g"))
    body = peers.Payload(1 * MiB + 123, seed=9).bytes()
    r = request(k.port, "POST", "/upload", body=body, timeout=15)
    got = echo_json(r)
    assert got["bytes"] == len(body) and got["sha256"] == hashlib.sha256(body).hexdigest(), got
    assert nreq(e) == 1


@pytest.mark.timeout(30)
def test_idempotent_retried_on_5xx(kfwd, peer):
    always = peer(peers_http.StatusSequence(statuses=[503]))
    third = peer(peers_http.StatusSequence(statuses=[503, 502, 200]))
    k = kfwd(cfg(
        f"upstream always {always.addr}", f"upstream third {third.addr}",
        "route /always/ always retries=2 retry-on=5xx retry-backoff=5ms",
        "route /third/ third retries=2 retry-on=5xx retry-backoff=5ms",
        "route /rni/ always retries=2 retry-on=5xx retry-backoff=5ms retry-non-idempotent",
    ))
    m0 = k.metrics()
    r = request(k.port, "GET", "/always/x")
    assert r.status == 503 and r.body == b"attempt 2 status 503\n", (r, r.body)
    assert nreq(always) == 3
    assert mdelta(k.metrics(), m0, RETRIES) == 2
    r = request(k.port, "GET", "/third/x")
    assert r.status == 200 and r.body == b"attempt 2 status 200\n", (r, r.body)
    assert nreq(third) == 3
    # retry-non-idempotent: a POST without a body may be retried.
    r = request(k.port, "POST", "/rni/x")
    assert r.status == 503 and nreq(always) == 6, (r, nreq(always))


@pytest.mark.timeout(30)
def test_retry_backoff_within_bounds(kfwd, peer):
    """retries=3 retry-on=5xx retry-backoff=100ms retry-backoff-max=400ms against an upstream
    that always answers 503: gap n (n=1..3) between attempts is in [0, min(400, 100*2^(n-1))] ms
    (+ slack) and the total is at most 700 ms (+ slack); the backoff is really applied."""
    s = peer(peers_http.StatusSequence(statuses=[503]))
    k = kfwd(cfg(f"upstream s {s.addr}", "route / s retries=3 retry-on=5xx retry-backoff=100ms retry-backoff-max=400ms"))
    m0 = k.metrics()
    nclients = 6
    results = {}

    def one(i):
        t0 = time.monotonic()
        r = request(k.port, "GET", f"/b{i}", headers=[("X-Req-Id", str(i))])
        results[i] = (r, time.monotonic() - t0)

    threads = [threading.Thread(target=one, args=(i,), daemon=True) for i in range(nclients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(15)
    assert len(results) == nclients, "some clients got no answer"
    problems = []
    all_gaps = {1: [], 2: [], 3: []}
    for i in range(nclients):
        r, elapsed = results[i]
        if r.status != 503 or not re.fullmatch(rb"attempt \d+ status 503\n", r.body or b""):
            problems.append(f"client {i}: {r} {r.body!r}")
        times = sorted(t for t, rid, _ in s.arrivals if rid == str(i))
        if len(times) != 4:
            problems.append(f"client {i}: {len(times)} attempts reached the upstream (expected 4)")
            continue
        gaps = [b - a for a, b in zip(times, times[1:])]
        for n, g in enumerate(gaps, 1):
            all_gaps[n].append(g)
            bound = min(0.400, 0.100 * 2 ** (n - 1)) + SLACK
            if not 0 <= g <= bound:
                problems.append(f"client {i}: retry {n} came {g * 1000:.0f} ms after attempt {n}, bound {bound * 1000:.0f} ms")
        if times[-1] - times[0] > 0.700 + SLACK:
            problems.append(f"client {i}: attempts spread over {(times[-1] - times[0]) * 1000:.0f} ms > 700 + slack")
    assert not problems, "\n".join(problems) + f"\ngaps ms: { {n: [round(g * 1000) for g in v] for n, v in all_gaps.items()} }"
    # Full jitter is not "no backoff": expected total ~350 ms per request.
    total_wait = sum(sum(v) for v in all_gaps.values())
    assert total_wait > 0.3, f"gaps add up to {total_wait * 1000:.0f} ms over {nclients} requests: no backoff?"
    # And the ceiling grows (retries 2 and 3 may wait longer than the base).
    assert max(all_gaps[2] + all_gaps[3]) > 0.110, f"retry 2/3 gaps never above 110 ms: {all_gaps}"
    assert mdelta(k.metrics(), m0, RETRIES) == 3 * nclients
    # kfwd's own account of the delays it chose: exactly within the bounds, no slack needed.
    logged = re.findall(r"retry (\d+) of GET /b\d+ in (\d+) ms", k.stderr)
    assert len(logged) == 3 * nclients, logged
    for n, ms in logged:
        assert int(ms) <= min(400, 100 * 2 ** (int(n) - 1)), f"retry {n} scheduled in {ms} ms"


@pytest.mark.timeout(30)
def test_all_servers_down_fast_502_then_recovery(kfwd, peer):
    p1, p2 = peers.free_port(), peers.free_port()
    k = kfwd(cfg(f"upstream dead 127.0.0.1:{p1} 127.0.0.1:{p2}", "route / dead", "upstream-down-time 1500ms",
                 "upstream-max-fails 1"))
    m0 = k.metrics()
    t_first = time.monotonic()
    r = request(k.port, "GET", "/1")
    assert is_kfwd_answer(r, 502), (r, r.body)
    m1 = k.metrics()
    assert mdelta(m1, m0, CONNECT_ERRORS) == 2, "both servers were expected to be tried (1 retry)"
    t0 = time.monotonic()
    r = request(k.port, "GET", "/2")
    elapsed = time.monotonic() - t0
    m2 = k.metrics()
    assert is_kfwd_answer(r, 502), (r, r.body)
    assert elapsed < 0.100, f"502 took {elapsed * 1000:.0f} ms with every server down"
    assert mdelta(m2, m1, CONNECT_ERRORS) == 0 and mdelta(m2, m1, CONNECTS) == 0, "kfwd tried to connect to a down server"
    # After upstream-down-time a server that came back is used again.
    back = peer(peers.EchoUpload(port=p1))
    time.sleep(max(0.0, t_first + 1.6 - time.monotonic()))
    assert echo_json(request(k.port, "GET", "/3"))["target"] == "/3"
    assert nreq(back) == 1
