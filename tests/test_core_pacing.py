"""Pacing: downloads to clients that read slowly and steadily (a player at its stream's bit rate)
are served on kfwd's coarse pace timer instead of an EPOLLOUT wake-up per third of a send
buffer: every byte arrives, at the client's rate, and kfwd wakes far less often."""

import threading
import time

import peers
from peers import KiB, mdelta

STREAMS = 8
RATE = 2_000_000  # bytes/s each
READ = 16 * KiB
# The pace grid is 50 ms (user/flow_pace.c): at most 20 timer wake-ups a second, whatever the
# number of streams; EPOLLOUT every third of a 256 KiB send buffer would be ~60 a second here.
MAX_WAKEUPS_PER_S = 40


def test_steady_readers_paced_byte_exact(kfwd, nginx):
    f = nginx.files["8m"]
    # A client socket that holds little, so kfwd's send buffer is what paces the stream; its
    # full size from the first byte (max-memory grows a body's buffers with what the client
    # took, so a slow stream would spend half of this test below the pacing threshold).
    k = kfwd(f"upstream origin {nginx.addr}\nroute / origin\nclient-sndbuf 128k\nmax-memory 0\n")
    assert peers.get(k.port, nginx.files["1k"].url).status == 200  # warm-up
    m0 = k.metrics()
    results = [None] * STREAMS
    t0 = time.monotonic()

    def reader(i):
        def pace(n):
            delay = t0 + n * READ / RATE - time.monotonic()
            if delay > 0:
                time.sleep(delay)

        with peers.HttpConn(k.port, rcvbuf=64 * KiB, timeout=30) as c:
            c.request("GET", f.url)
            results[i] = c.read_response(read_size=READ, pace=pace)

    threads = [threading.Thread(target=reader, args=(i,)) for i in range(STREAMS)]
    for t in threads:
        t.start()
    # the middle of the transfer: every stream steady, none finishing
    expected = f.size / RATE
    time.sleep(expected * 0.25)
    v0, w0 = k.voluntary_switches(), time.monotonic()
    time.sleep(expected * 0.5)
    v1, w1 = k.voluntary_switches(), time.monotonic()
    for t in threads:
        t.join(timeout=expected * 3 + 30)
    took = time.monotonic() - t0
    for i, r in enumerate(results):
        assert r is not None, f"stream {i} did not finish"
        assert r.status == 200 and r.complete and r.body_len == f.size, (i, r)
        assert r.sha256 == f.sha256, f"stream {i} got corrupted bytes"
    paced = mdelta(k.metrics(), m0, "kfwd_paced_wakeups_total")
    wakeups = (v1 - v0) / (w1 - w0)
    print(f"{STREAMS} x {RATE / 1e6:.0f} MB/s: {took:.1f} s (paced by the client: {expected:.1f} s), "
          f"kfwd {wakeups:.1f} wake-ups/s, {paced} paced wake-ups")
    assert paced >= STREAMS * expected, f"only {paced} paced wake-ups for {STREAMS} steady streams"
    assert wakeups <= MAX_WAKEUPS_PER_S, f"kfwd woke {wakeups:.1f} times a second"
    # pacing must not slow the streams down: the clients read at their own rate
    assert took < expected * 1.5 + 2, f"the streams took {took:.1f} s, paced at {expected:.1f} s"
