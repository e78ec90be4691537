"""Hostile input, request side: framing and smuggling (RFC 9112 §6, §7.1, RFC 9110 §7.6.1).

Raw bytes go to kfwd; a RecordingOrigin reads what kfwd forwards the strict way an origin
would. For every scenario: the status kfwd answered, that it closed the connection when it
refused, what reached the origin (never a request for /admin smuggled in a body), and that kfwd
spends no CPU afterwards (a framing error that no event can finish used to spin a core).
"""

import hashlib

import pytest

import peers
import peers_hostile as H

SMUG = b"GET /admin HTTP/1.1\r\nHost: x\r\n\r\n"
HOST = b"Host: kfwd.test\r\n"
MAX_IDLE_CPU = 0.1  # CPU seconds over a 1 s quiet period; a spinning loop shows ~1.0
MAX_RSS_KB = 64 * 1024

CONFIG = """
upstream origin {addr}
route /public/ origin methods=GET,HEAD
route /up/ origin
"""


@pytest.fixture
def setup(kfwd, peer):
    origin = peer(H.RecordingOrigin())
    k = kfwd(CONFIG.format(addr=origin.addr))
    return k, origin


def post(headers, body):
    return b"POST /up/a HTTP/1.1\r\n" + HOST + headers + b"\r\n" + body


def chunked(body):
    return post(b"Transfer-Encoding: chunked\r\n", body)


# Refused at the head: 400, the connection closed, nothing forwarded.
HEAD_REJECTS = [
    ("CL.TE", post(b"Content-Length: 4\r\nTransfer-Encoding: chunked\r\n", b"0\r\n\r\n" + SMUG)),
    ("TE.CL", post(b"Transfer-Encoding: chunked\r\nContent-Length: 4\r\n", b"0\r\n\r\n" + SMUG)),
    ("TE-xchunked", post(b"Transfer-Encoding: xchunked\r\n", b"0\r\n\r\n" + SMUG)),
    ("TE-chunked-identity", post(b"Transfer-Encoding: chunked, identity\r\n", b"0\r\n\r\n" + SMUG)),
    ("TE-identity-chunked", post(b"Transfer-Encoding: identity, chunked\r\n", b"0\r\n\r\n" + SMUG)),
    ("TE-gzip-only", post(b"Transfer-Encoding: gzip\r\n", b"0\r\n\r\n" + SMUG)),
    ("TE-duplicate", post(b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n", b"0\r\n\r\n" + SMUG)),
    ("TE-empty-element", post(b"Transfer-Encoding: ,chunked\r\n", b"0\r\n\r\n" + SMUG)),
    ("TE-space-before-colon", post(b"Transfer-Encoding : chunked\r\n", b"0\r\n\r\n" + SMUG)),
    ("TE-folded-line", post(b"X-A: 1\r\n Transfer-Encoding: chunked\r\n", b"0\r\n\r\n" + SMUG)),
    ("CL-duplicate-same", post(b"Content-Length: 5\r\nContent-Length: 5\r\n", b"hello")),
    ("CL-duplicate-differ", post(b"Content-Length: 5\r\nContent-Length: 38\r\n", b"hello" + SMUG)),
    ("CL-list", post(b"Content-Length: 5, 5\r\n", b"hello")),
    ("CL-plus", post(b"Content-Length: +5\r\n", b"hello")),
    ("CL-minus", post(b"Content-Length: -1\r\n", b"hello")),
    ("CL-inner-space", post(b"Content-Length: 1 5\r\n", b"hello")),
    ("CL-leading-garbage", post(b"Content-Length: x5\r\n", b"hello")),
    ("CL-hex", post(b"Content-Length: 0x5\r\n", b"hello")),
    ("CL-2^63", post(b"Content-Length: 9223372036854775808\r\n", b"hello")),
    ("CL-2^64", post(b"Content-Length: 18446744073709551616\r\n", b"hello")),
    ("bare-CR-in-value", b"GET /public/a HTTP/1.1\r\n" + HOST + b"X-A: a\rb\r\n\r\n"),
    ("bare-LF-line-end", b"GET /public/a HTTP/1.1\r\nHost: kfwd.test\nX-A: 1\r\n\r\n"),
    ("NUL-in-name", b"GET /public/a HTTP/1.1\r\n" + HOST + b"X-\x00A: 1\r\n\r\n"),
    ("NUL-in-value", b"GET /public/a HTTP/1.1\r\n" + HOST + b"X-A: a\x00b\r\n\r\n"),
    ("NUL-in-target", b"GET /public/a\x00b HTTP/1.1\r\n" + HOST + b"\r\n"),
    ("space-before-colon", b"GET /public/a HTTP/1.1\r\n" + HOST + b"X-A : 1\r\n\r\n"),
    ("obs-fold", b"GET /public/a HTTP/1.1\r\n" + HOST + b"X-A: a\r\n b\r\n\r\n"),
    ("obs-fold-tab", b"GET /public/a HTTP/1.1\r\n" + HOST + b"X-A: a\r\n\tb\r\n\r\n"),
    ("fragment", b"GET /public/a#frag HTTP/1.1\r\n" + HOST + b"\r\n"),
    ("absolute-https", b"GET https://kfwd.test/public/a HTTP/1.1\r\n" + HOST + b"\r\n"),
    ("absolute-userinfo", b"GET http://u@kfwd.test/public/a HTTP/1.1\r\n" + HOST + b"\r\n"),
    ("asterisk-not-options", b"GET * HTTP/1.1\r\n" + HOST + b"\r\n"),
]


@pytest.mark.parametrize("raw", [r for _, r in HEAD_REJECTS], ids=[i for i, _ in HEAD_REJECTS])
def test_head_rejected(setup, raw):
    k, origin = setup
    data, closed = peers.exchange(k.port, raw)
    assert peers.status_of(data) == 400, data[:200]
    assert closed, "kfwd kept a connection whose framing it refused"
    assert data.count(b"HTTP/1.1 ") == 1, "a request after the refused one was answered"
    assert origin.accepted == 0 and not origin.all_bytes(), "a refused request reached the origin"


# The head is fine, the chunked body is not: 400 at once, both connections closed, and the
# origin never reads a complete request (so never the one smuggled after the bad byte).
BODY_REJECTS = [
    ("data-overrun", chunked(b"5\r\nhelloXX0\r\n\r\n" + SMUG)),
    ("data-no-crlf", chunked(b"5\r\nhello0\r\n\r\n" + SMUG)),
    ("size-space-size", chunked(b"5 3\r\nhello\r\n0\r\n\r\n" + SMUG)),
    ("size-garbage", chunked(b"z\r\nhello\r\n0\r\n\r\n")),
    ("size-empty", chunked(b"\r\nhello\r\n0\r\n\r\n")),
    ("size-overflow", chunked(b"1" + b"0" * 16 + b"\r\nhello\r\n0\r\n\r\n")),
    ("size-negative", chunked(b"-5\r\nhello\r\n0\r\n\r\n")),
    ("size-bare-LF", chunked(b"5\nhello\r\n0\r\n\r\n" + SMUG)),
    ("ext-NUL", chunked(b"5;a\x00b\r\nhello\r\n0\r\n\r\n")),
    ("ext-bare-LF", chunked(b"5;a\nhello\r\n0\r\n\r\n" + SMUG)),
    ("ext-huge", chunked(b"5;" + b"a" * 5000 + b"\r\nhello\r\n0\r\n\r\n")),
    ("trailer-no-colon", chunked(b"0\r\nGET /admin HTTP/1.1\r\n\r\n")),
    ("trailer-NUL", chunked(b"0\r\nX-T: a\x00b\r\n\r\n")),
    ("trailer-fold", chunked(b"0\r\nX-T: a\r\n b\r\n\r\n")),
    ("trailer-space-before-colon", chunked(b"0\r\nX-T : a\r\n\r\n")),
    ("trailer-huge", chunked(b"0\r\nX-T: " + b"a" * 70000 + b"\r\n\r\n")),
]


def check_body_rejected(k, origin, raw):
    data, closed = peers.exchange(k.port, raw)
    assert peers.status_of(data) == 400, data[:200]
    assert closed
    assert data.count(b"HTTP/1.1 ") == 1
    assert not origin.parsed, f"the origin read a complete request: {origin.parsed}"
    assert b"/admin" not in b"".join(r.target.encode() for r in origin.parsed)
    # kfwd closed its upstream connection: the origin's handler saw EOF and ended.
    assert peers_wait(lambda: not origin.conns), "the upstream connection stayed open"
    assert peers.idle_cpu(k.pid) < MAX_IDLE_CPU


def peers_wait(pred, timeout=5.0):
    import peers

    return peers.wait_for(pred, timeout)


@pytest.mark.parametrize("raw", [r for _, r in BODY_REJECTS], ids=[i for i, _ in BODY_REJECTS])
def test_chunked_body_rejected(setup, raw):
    k, origin = setup
    check_body_rejected(k, origin, raw)


@pytest.mark.parametrize("close_how", ["close", "shutdown"])
def test_chunk_error_then_client_gone_no_spin(setup, close_how):
    """A bad byte after chunk data, then the client leaves: the session ends at the bad byte
    instead of spinning a core until transfer-timeout."""
    k, origin = setup
    raw = chunked(b"5\r\nhelloXX0\r\n\r\n")
    for _ in range(5):
        peers.exchange(k.port, raw, close_early=close_how == "close", shut_wr=close_how == "shutdown")
    assert peers.idle_cpu(k.pid, 1.5) < MAX_IDLE_CPU * 1.5
    assert k.metric("kfwd_connections_active", 0) == 0 or peers_wait(
        lambda: k.metric("kfwd_connections_active", 0) == 0
    )
    assert k.rss_kb() < MAX_RSS_KB


def forwarded_one(origin, target):
    assert peers_wait(lambda: len(origin.parsed) >= 1)
    assert origin.targets() == [target], origin.parsed
    assert not origin.bad, origin.bad
    return origin.parsed[0]


def test_connection_naming_content_length_smuggling(setup):
    """`Connection: Content-Length` must not make kfwd drop Content-Length: the body (a request
    for /admin, a route kfwd does not have) would reach the origin as a request."""
    k, origin = setup
    raw = (
        b"GET /public/a HTTP/1.1\r\n" + HOST + b"Content-Length: %d\r\nConnection: Content-Length\r\n"
        b"\r\n" % len(SMUG)
    ) + SMUG
    data, _ = peers.exchange(k.port, raw + b"GET /public/b HTTP/1.1\r\n" + HOST + b"Connection: close\r\n\r\n")
    assert data.count(b"HTTP/1.1 200 ") == 2, data
    assert peers_wait(lambda: len(origin.parsed) == 2)
    assert origin.targets() == ["/public/a", "/public/b"]
    first = origin.parsed[0]
    assert first.headers.get("content-length") == str(len(SMUG))
    assert first.body == SMUG
    assert b"origin saw /admin" not in data


def test_connection_naming_transfer_encoding(setup):
    k, origin = setup
    body = b"5\r\nhello\r\n0\r\n\r\n"
    raw = post(b"Transfer-Encoding: chunked\r\nConnection: close, Transfer-Encoding\r\n", body)
    data, _ = peers.exchange(k.port, raw + SMUG)
    assert peers.status_of(data) == 200
    req = forwarded_one(origin, "/up/a")
    assert req.headers.tokens("transfer-encoding") == ["chunked"]
    assert req.body == b"hello"


def test_connection_naming_host_keeps_host(setup):
    k, origin = setup
    raw = b"GET /public/a HTTP/1.1\r\n" + HOST + b"Connection: close, Host, X-Drop\r\nX-Drop: 1\r\n\r\n"
    data, _ = peers.exchange(k.port, raw)
    assert peers.status_of(data) == 200
    req = forwarded_one(origin, "/public/a")
    assert req.headers.get("host") == "kfwd.test"
    assert "x-drop" not in req.headers  # an ordinary field named there still goes


# Accepted: forwarded with the framing kfwd read, body intact.
ACCEPTS = [
    ("CL-leading-zeros", post(b"Content-Length: 0005\r\n", b"hello"), b"hello"),
    ("TE-tab-OWS", post(b"Transfer-Encoding:\tchunked\r\n", b"5\r\nhello\r\n0\r\n\r\n"), b"hello"),
    ("TE-upper", post(b"Transfer-Encoding: CHUNKED\r\n", b"5\r\nhello\r\n0\r\n\r\n"), b"hello"),
    ("chunk-ext", chunked(b"5;name=\"v a\";x\r\nhello\r\n0\r\n\r\n"), b"hello"),
    ("chunk-size-BWS-ext", chunked(b"5 ;x=1\r\nhello\r\n0\r\n\r\n"), b"hello"),
    ("chunk-size-zeros", chunked(b"0005\r\nhello\r\n000\r\n\r\n"), b"hello"),
    ("trailers", chunked(b"5\r\nhello\r\n0\r\nX-T: 1\r\nX-U:\t2 3\r\n\r\n"), b"hello"),
]


@pytest.mark.parametrize("raw,body", [a[1:] for a in ACCEPTS], ids=[a[0] for a in ACCEPTS])
def test_accepted_framing(setup, raw, body):
    k, origin = setup
    data, _ = peers.exchange(k.port, raw[: raw.index(b"\r\n\r\n")] + b"\r\nConnection: close" + raw[raw.index(b"\r\n\r\n") :])
    assert peers.status_of(data) == 200, data[:200]
    req = forwarded_one(origin, "/up/a")
    assert hashlib.sha256(req.body).digest() == hashlib.sha256(body).digest()


def test_pipelined_request_after_wrong_body(setup):
    """Content-Length shorter than what follows: the rest is the next request to kfwd, which
    routes it itself (no /admin route: 404), never the origin."""
    k, origin = setup
    raw = post(b"Content-Length: 5\r\n", b"hello" + SMUG)
    data, closed = peers.exchange(k.port, raw)
    assert data.startswith(b"HTTP/1.1 200 "), data[:200]
    assert b"HTTP/1.1 404 " in data
    assert closed
    assert origin.targets() == ["/up/a"]
    assert origin.parsed[0].body == b"hello"


def test_absolute_form_routes_on_path_host_from_authority(setup):
    """RFC 9112 §3.2.2: a server must accept absolute-form; its authority replaces Host."""
    k, origin = setup
    raw = b"GET http://Origin.Example:81/public/a?q=1 HTTP/1.1\r\nHost: other.test\r\nConnection: close\r\n\r\n"
    data, _ = peers.exchange(k.port, raw)
    assert peers.status_of(data) == 200, data[:200]
    req = forwarded_one(origin, "/public/a?q=1")
    assert req.headers.get_all("host") == ["Origin.Example:81"]


def test_absolute_form_without_path(setup, kfwd, peer):
    origin = peer(H.RecordingOrigin())
    k = kfwd(f"upstream origin {origin.addr}\nroute / origin")
    data, _ = peers.exchange(k.port, b"GET http://a.test HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n")
    assert peers.status_of(data) == 200, data[:200]
    assert forwarded_one(origin, "/").headers.get("host") == "a.test"


def test_options_asterisk_forwarded(kfwd, peer):
    origin = peer(H.RecordingOrigin())
    k = kfwd(f"upstream origin {origin.addr}\nroute / origin")
    data, _ = peers.exchange(k.port, b"OPTIONS * HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n")
    assert peers.status_of(data) == 200, data[:200]
    req = forwarded_one(origin, "*")
    assert req.method == "OPTIONS"


def test_options_asterisk_needs_a_route_for_slash(setup):
    k, origin = setup
    data, _ = peers.exchange(k.port, b"OPTIONS * HTTP/1.1\r\n" + HOST + b"\r\n")
    assert peers.status_of(data) == 404
    assert origin.accepted == 0


def test_after_the_corpus_kfwd_is_idle_and_small(setup):
    """Every scenario above, one after another on one kfwd: still serving, no CPU, bounded RSS."""
    k, origin = setup
    for _, raw in HEAD_REJECTS + BODY_REJECTS:
        peers.exchange(k.port, raw, timeout=3)
    data, _ = peers.exchange(k.port, b"GET /public/ok HTTP/1.1\r\n" + HOST + b"Connection: close\r\n\r\n")
    assert peers.status_of(data) == 200
    assert "/admin" not in origin.targets()
    assert peers.idle_cpu(k.pid) < MAX_IDLE_CPU
    assert k.rss_kb() < MAX_RSS_KB
