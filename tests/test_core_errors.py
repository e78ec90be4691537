"""Responses kfwd makes itself: 400, 404, 414, 431, 501, 502, 503, 504."""

import socket
import time

import pytest

import peers
from peers import mdelta


def status_of(port, raw, timeout=10):
    """Send raw bytes on a fresh connection; return the status of the first response."""
    with peers.HttpConn(port, timeout=timeout) as c:
        try:
            c.send(raw)
        except (BrokenPipeError, ConnectionResetError):
            pass
        return c.read_response().status


@pytest.fixture
def echo_kfwd(kfwd, peer):
    echo = peer(peers.EchoUpload())
    k = kfwd(f"upstream echo {echo.addr}\nroute /echo/ echo")
    k.echo = echo
    return k


@pytest.mark.parametrize(
    "raw",
    [
        b"THIS IS NOT HTTP\r\n\r\n",
        b"GET /echo/x HTTP/1.1\r\nHost: x\r\nBad Header Line\r\n\r\n",
        b"GET /echo/x HTTP/1.1\r\nHost: x\r\nBad Name: v\r\n\r\n",
        b"GET /echo/x HTTP/1.1\r\nHost: x\r\n: no-name\r\n\r\n",
        b"POST /echo/x HTTP/1.1\r\nHost: x\r\nContent-Length: 12abc\r\n\r\n",
        b"POST /echo/x HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
    ],
    ids=["request-line", "header-no-colon", "space-in-name", "empty-name", "bad-length", "two-lengths"],
)
def test_400_malformed(echo_kfwd, raw):
    k = echo_kfwd
    m0 = k.metrics()
    assert status_of(k.port, raw) == 400
    assert not k.echo.requests, "a malformed request was forwarded"
    assert mdelta(k.metrics(), m0, 'kfwd_responses_total{class="4xx"}') >= 1


def test_414_request_line_too_long(echo_kfwd):
    k = echo_kfwd
    assert status_of(k.port, b"GET /echo/" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n") == 414
    # a 7.9k request line is within the default 8k
    assert status_of(k.port, b"GET /echo/" + b"a" * 7900 + b" HTTP/1.1\r\nHost: x\r\n\r\n") == 200


def test_431_headers_too_big(echo_kfwd):
    k = echo_kfwd
    big = "".join(f"X-Filler-{i}: {'v' * 1000}\r\n" for i in range(40)).encode()
    assert status_of(k.port, b"GET /echo/x HTTP/1.1\r\nHost: x\r\n" + big + b"\r\n") == 431
    ok = "".join(f"X-Filler-{i}: {'v' * 1000}\r\n" for i in range(20)).encode()
    assert status_of(k.port, b"GET /echo/x HTTP/1.1\r\nHost: x\r\n" + ok + b"\r\n") == 200


def test_limits_are_configurable(kfwd, peer):
    echo = peer(peers.EchoUpload())
    k = kfwd(f"upstream echo {echo.addr}\nroute / echo\nmax-request-line 1k\nmax-header-size 4k")
    assert status_of(k.port, b"GET /" + b"a" * 1100 + b" HTTP/1.1\r\nHost: x\r\n\r\n") == 414
    hdrs = "".join(f"X-F{i}: {'v' * 500}\r\n" for i in range(10)).encode()
    assert status_of(k.port, b"GET / HTTP/1.1\r\nHost: x\r\n" + hdrs + b"\r\n") == 431
    assert status_of(k.port, b"GET /ok HTTP/1.1\r\nHost: x\r\n\r\n") == 200


def test_400_transfer_encoding_not_chunked(echo_kfwd):
    # RFC 9112 §6.3: a request whose final transfer coding is not chunked has no reliable
    # length: 400 and close (it was 501).
    k = echo_kfwd
    raw = b"POST /echo/x HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n\x1f\x8b"
    assert status_of(k.port, raw) == 400
    assert not k.echo.requests


def test_404_no_route(echo_kfwd):
    k = echo_kfwd
    assert status_of(k.port, b"GET /nothing/here HTTP/1.1\r\nHost: x\r\n\r\n") == 404
    assert status_of(k.port, b"GET /echo/x HTTP/1.1\r\nHost: x\r\n\r\n") == 200


@pytest.mark.parametrize("kind", ["refused", "garbage", "close-immediately", "close-mid-head"])
def test_502_bad_upstream(kfwd, peer, kind):
    if kind == "refused":
        addr = f"127.0.0.1:{peers.free_port()}"
    elif kind == "garbage":
        addr = peer(peers.Garbage()).addr
    elif kind == "close-immediately":
        addr = peer(peers.CloseBeforeHead(mode="immediate")).addr
    else:
        addr = peer(peers.CloseBeforeHead(mode="partial")).addr
    k = kfwd(f"upstream bad {addr}\nroute / bad\nconnect-timeout 5s\nresponse-timeout 10s")
    m0 = k.metrics()
    t0 = time.monotonic()
    assert status_of(k.port, b"GET /x HTTP/1.1\r\nHost: x\r\n\r\n") == 502
    assert time.monotonic() - t0 < 4, "502 took as long as a timeout"
    assert mdelta(k.metrics(), m0, 'kfwd_responses_total{class="5xx"}') >= 1


def test_504_response_timeout(kfwd, peer):
    p = peer(peers.NeverResponds())
    k = kfwd(f"upstream never {p.addr}\nroute / never\nresponse-timeout 1s")
    t0 = time.monotonic()
    assert status_of(k.port, b"GET /x HTTP/1.1\r\nHost: x\r\n\r\n") == 504
    dt = time.monotonic() - t0
    assert 0.8 <= dt < 5, f"504 after {dt:.2f} s with response-timeout 1s"
    assert p.requests, "the request never reached the upstream"


def test_504_connect_timeout(kfwd):
    hole = peers.FullBacklog()
    try:
        if not hole.verified:
            pytest.skip("could not make a local listener whose connects hang")
        k = kfwd(f"upstream hole {hole.addr}\nroute / hole\nconnect-timeout 1s\nresponse-timeout 30s")
        t0 = time.monotonic()
        assert status_of(k.port, b"GET /x HTTP/1.1\r\nHost: x\r\n\r\n") == 504
        dt = time.monotonic() - t0
        assert 0.8 <= dt < 5, f"504 after {dt:.2f} s with connect-timeout 1s"
    finally:
        hole.stop()


def test_503_over_max_connections(kfwd, peer):
    echo = peer(peers.EchoUpload())
    k = kfwd(f"upstream echo {echo.addr}\nroute / echo\nmax-connections 2")
    # kfwd retires the start-up probe connections first
    assert peers.wait_for(lambda: k.metric("kfwd_connections_active") == 0, 5), "start-up probe connections still open"
    a = peers.HttpConn(k.port)
    b = peers.HttpConn(k.port)
    for c in (a, b):
        c.request("GET", "/held")
        assert c.read_response().status == 200
    c = peers.HttpConn(k.port, timeout=10)
    c.settimeout(1.0)
    try:
        first = c.stream.read_some(65536)  # kfwd may answer 503 right after accept
        c.stream.buf += first
    except socket.timeout:
        c.settimeout(10)
        try:
            c.request("GET", "/third")
        except (BrokenPipeError, ConnectionResetError):
            pass
    c.settimeout(10)
    r = c.read_response()
    assert r.status == 503
    assert r.eof or c.wait_eof(5), "kfwd kept the rejected connection open"
    c.close()
    # the first two still work
    for x in (a, b):
        x.request("GET", "/still")
        assert x.read_response().status == 200
    a.close()
    b.close()
    assert peers.wait_for(lambda: k.metric("kfwd_connections_active") == 0, 5), "closed connections still counted"
    assert peers.get(k.port, "/after").status == 200, "a slot did not free up after closing"
    m = k.metrics()
    assert peers.mget(m, "kfwd_connections_rejected_total") >= 1
