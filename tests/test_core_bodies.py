"""Response bodies through kfwd: byte-exact big bodies on both data paths (and proof the splice
path really splices), chunked with trailers, close-delimited, upstream dying mid-body, and
bodiless responses (HEAD/204/304) leaving no stray bytes."""

import time

import pytest

import peers
from conftest import SAN
from peers import COPIED_RESP, SPLICED_REQ, SPLICED_RESP, MiB, mdelta, mget


def origin(addr, *extra):
    return "\n".join([f"upstream origin {addr}", *extra, "route / origin"])


def download(port, target, **kw):
    with peers.HttpConn(port) as c:
        c.request("GET", target)
        return c.read_response(read_size=MiB, **kw)


def test_256m_splice_byte_exact_and_spliced(kfwd, nginx):
    f = nginx.files["256m"]
    k = kfwd(origin(nginx.addr))
    m0 = k.metrics()
    r = download(k.port, f.url)
    assert r.status == 200
    assert r.complete and r.body_len == f.size, r
    assert r.sha256 == f.sha256
    m1 = k.metrics()
    spliced = mdelta(m1, m0, SPLICED_RESP)
    copied = mdelta(m1, m0, COPIED_RESP)
    assert spliced >= 0.95 * f.size, f"only {spliced} of {f.size} response bytes spliced (copied {copied})"
    assert copied < 0.05 * f.size, f"{copied} response bytes went through user space"
    assert mdelta(m1, m0, 'kfwd_responses_total{class="2xx"}') >= 1
    assert mdelta(m1, m0, "kfwd_requests_total") >= 1


def test_256m_copy_path_byte_exact_and_not_spliced(kfwd, nginx):
    f = nginx.files["256m"]
    k = kfwd(origin(nginx.addr, "data-path copy"))
    m0 = k.metrics()
    r = download(k.port, f.url)
    assert r.status == 200
    assert r.complete and r.body_len == f.size, r
    assert r.sha256 == f.sha256
    m1 = k.metrics()
    assert mdelta(m1, m0, COPIED_RESP) >= f.size
    assert mget(m1, SPLICED_RESP) == 0
    assert mget(m1, SPLICED_REQ) == 0


def test_copy_path_rss_bounded(kfwd, nginx):
    """The copy path uses one bounded buffer: a 256 MiB body must not grow RSS by its size."""
    f = nginx.files["256m"]
    k = kfwd(origin(nginx.addr, "data-path copy", "copy-buffer-size 256k"))
    download(k.port, nginx.files["1k"].url)
    rss0 = k.rss_kb()
    peak = [rss0]

    def pace(i):
        if i % 16 == 0:
            peak[0] = max(peak[0], k.rss_kb())

    r = download(k.port, f.url, pace=pace)
    assert r.complete and r.sha256 == f.sha256
    assert peak[0] - rss0 < 8 * 1024 * SAN, f"RSS grew {peak[0] - rss0} kB during a copy-path transfer"


def test_chunked_with_trailers_byte_exact(kfwd, peer):
    p = peer(peers.ChunkedTrailers())
    k = kfwd(origin(p.addr))
    with peers.HttpConn(k.port) as c:
        for attempt in range(2):  # the second proves the message end (after trailers) was found
            c.request("GET", f"/chunked/{attempt}", [("TE", "trailers")])
            r = c.read_response(read_size=MiB)
            assert r.status == 200
            assert r.framing == "chunked", f"trailers need chunked framing to the client, got {r.framing}"
            assert r.complete, r
            assert r.body_len == p.payload_len
            assert r.sha256 == p.payload_sha256
            assert r.trailers.get("X-Payload-Sha256") == p.payload_sha256, f"trailers received: {r.trailers}"
            assert r.trailers.get("X-Trailer-Test") == p.TRAILER_VALUE
    assert not p.errors


def test_chunked_big_chunks_are_spliced(kfwd, peer):
    p = peer(peers.ChunkedTrailers())
    k = kfwd(origin(p.addr))
    m0 = k.metrics()
    r = download(k.port, "/x")
    assert r.complete and r.sha256 == p.payload_sha256
    # After a run of tiny chunks kfwd is parsing in user space, so the start of the next 1 MiB
    # chunk may arrive in the same read as its size line and be copied ("leftovers"); the bulk
    # of each 1 MiB chunk must still be spliced.
    big = sum(len(c) for c in p.chunks if len(c) >= MiB)
    spliced = mdelta(k.metrics(), m0, SPLICED_RESP)
    assert spliced >= 0.5 * big, f"only {spliced} bytes spliced of {big} bytes in 1 MiB chunks"


@pytest.mark.parametrize("mode", ["length", "chunked"])
def test_upstream_close_mid_body_curl_sees_truncation(kfwd, peer, mode):
    p = peer(peers.CloseMidBody(size=4 * MiB, mode=mode))
    k = kfwd(origin(p.addr))
    res = peers.run_curl(["-o", "/dev/null", f"http://127.0.0.1:{k.port}/big"], timeout=30)
    assert res.returncode == 18, f"curl exit {res.returncode}: {res.stderr.decode()}"


@pytest.mark.parametrize("mode", ["length", "chunked"])
def test_upstream_close_mid_body_client_connection_closed(kfwd, peer, mode):
    p = peer(peers.CloseMidBody(size=4 * MiB, mode=mode))
    echo = peer(peers.EchoUpload())
    k = kfwd(origin(p.addr, f"upstream echo {echo.addr}", "route /echo/ echo"))
    with peers.HttpConn(k.port, timeout=20) as c:
        c.request("GET", "/big")
        t0 = time.monotonic()
        r = c.read_response(read_size=MiB)
        assert r.status == 200
        assert not r.complete, f"a truncated upstream body was completed towards the client: {r}"
        assert r.eof, "kfwd did not close the client connection"
        assert time.monotonic() - t0 < 10
        if mode == "length":
            assert r.content_length == p.payload.size
            assert r.body_len <= p.sent_bytes < p.payload.size
    assert peers.get(k.port, "/echo/after").status == 200, "kfwd stopped serving"


def test_close_delimited_upstream_closes_while_client_stalled(kfwd, peer):
    """Upstream writes the whole body and closes (kfwd has ACKed every byte) while the client
    has not read anything yet: the client must still get every byte, then EOF."""
    p = peer(peers.CloseDelimited(size=MiB))
    # kfwd must hold the whole body for a client that never read: under max-memory a flow
    # whose client takes nothing stays at the floor allowance.
    k = kfwd(origin(p.addr, "max-memory 0"))
    with peers.HttpConn(k.port, rcvbuf=64 * 1024) as c:
        c.request("GET", "/stream")
        assert p.closed.wait(20), "upstream never got its body acknowledged by kfwd"
        time.sleep(0.5)  # let kfwd see the FIN while the client is still stalled
        r = c.read_response(read_size=64 * 1024)
        assert r.status == 200
        assert r.framing == "close", f"expected a close-delimited response, got {r.framing}"
        assert r.body_len == p.payload.size, r
        assert r.sha256 == p.payload.sha256
        assert r.eof


def test_close_delimited_big_slow_client(kfwd, peer):
    """A close-delimited body much bigger than kfwd's buffers, read after a stall."""
    p = peer(peers.CloseDelimited(size=24 * MiB, seed=4))
    k = kfwd(origin(p.addr))
    with peers.HttpConn(k.port, rcvbuf=64 * 1024) as c:
        c.request("GET", "/stream")
        time.sleep(1.0)
        assert not p.closed.is_set(), "upstream finished 24 MiB while the client was stalled: not backpressured"
        r = c.read_response(read_size=MiB)
        assert r.body_len == p.payload.size and r.sha256 == p.payload.sha256, r
        assert r.eof


def test_head_204_304_have_no_body_pipelined(kfwd, nginx):
    f8, f1 = nginx.files["8m"], nginx.files["1k"]
    k = kfwd(origin(nginx.addr))
    with peers.HttpConn(k.port) as c:
        c.request("GET", f1.url)
        r = c.read_response()
        assert r.status == 200 and r.sha256 == f1.sha256
        etag = r.headers.get("ETag")
        assert etag, "nginx sent no ETag through kfwd"
        b = peers.HttpConn.build
        c.send(
            b("HEAD", f8.url)
            + b("GET", "/204")
            + b("GET", f1.url, [("If-None-Match", etag)])
            + b("GET", "/304")
            + b("GET", f1.url)
        )
        r = c.read_response("HEAD")
        assert r.status == 200 and r.content_length == f8.size
        r = c.read_response()
        assert r.status == 204
        r = c.read_response()
        assert r.status == 304
        r = c.read_response()
        assert r.status == 304
        r = c.read_response()
        assert r.status == 200 and r.body_len == f1.size and r.sha256 == f1.sha256
        assert not c.wait_eof(0.5), "kfwd closed a keep-alive connection"  # raises on stray bytes
