"""The embedded default config (url-embedded route), Host / X-Forwarded-For, hop-by-hop header
removal in both directions, route selection (longest prefix, strip-prefix), round-robin."""

import json
import socket

import pytest

import peers

HOP_REQUEST = [
    ("Connection", "Foo"),
    ("Foo", "bar"),
    ("Keep-Alive", "timeout=5, max=7"),
    ("TE", "trailers"),
    ("Trailer", "X-Never"),
    ("Upgrade", "h2c"),
    ("Proxy-Connection", "keep-alive"),
]

HOP_RESPONSE = [
    ("Connection", "X-Hop"),
    ("X-Hop", "1"),
    ("Keep-Alive", "timeout=99"),
    ("Proxy-Connection", "keep-alive"),
    ("Upgrade", "h2c"),
    ("X-End", "kept"),
]


def echo_json(r):
    assert r.status == 200, r
    return json.loads(r.body)


def test_default_config_url_embedded_nginx(kfwd, nginx):
    k = kfwd(None)
    f = nginx.files["100k"]
    r = peers.get(k.port, f"/http/127.0.0.1:{nginx.port}{f.url}?x=1")
    assert r.status == 200 and r.body_len == f.size and r.sha256 == f.sha256


def test_default_config_url_embedded_headers(kfwd, peer):
    echo = peer(peers.EchoUpload(extra_response_headers=HOP_RESPONSE))
    k = kfwd(None)
    hdrs = HOP_REQUEST + [("X-Custom", "kept"), ("X-Forwarded-For", "192.0.2.7")]
    r = peers.get(k.port, f"/http/127.0.0.1:{echo.port}/some/path?x=1&y=2", headers=hdrs, keep_body=True)
    got = echo_json(r)
    seen = peers.Headers(got["headers"])
    assert got["target"] == "/some/path?x=1&y=2"
    assert seen.get_all("Host") == [f"127.0.0.1:{echo.port}"], seen
    assert seen.tokens("X-Forwarded-For") == ["192.0.2.7", "127.0.0.1"], seen
    assert seen.get("X-Custom") == "kept"
    for name in ("Foo", "Upgrade", "Proxy-Connection", "Trailer"):
        assert name not in seen, f"hop-by-hop {name} forwarded upstream: {seen}"
    assert "foo" not in seen.tokens("Connection"), seen
    assert "timeout=5, max=7" not in seen.get_all("Keep-Alive"), seen
    assert "trailers" not in seen.tokens("TE"), seen
    # response direction
    assert r.headers.get("X-End") == "kept"
    for name in ("X-Hop", "Proxy-Connection", "Upgrade"):
        assert name not in r.headers, f"hop-by-hop {name} forwarded to the client: {r.headers}"
    assert "x-hop" not in r.headers.tokens("Connection")
    assert "timeout=99" not in r.headers.get_all("Keep-Alive")


def test_x_forwarded_for_added(kfwd, peer):
    echo = peer(peers.EchoUpload())
    k = kfwd(f"upstream echo {echo.addr}\nroute / echo")
    got = echo_json(peers.get(k.port, "/xff", keep_body=True))
    assert peers.Headers(got["headers"]).tokens("X-Forwarded-For") == ["127.0.0.1"]


def test_default_config_ipv6_literal(kfwd, peer):
    try:
        echo = peer(peers.EchoUpload(host="::1"))
    except OSError as e:
        pytest.skip(f"no IPv6 loopback: {e}")
    k = kfwd(None)
    got = echo_json(peers.get(k.port, f"/http/[::1]:{echo.port}/v6?q", keep_body=True))
    assert got["target"] == "/v6?q"
    assert peers.Headers(got["headers"]).get_all("Host") == [f"[::1]:{echo.port}"]


def test_default_config_port_80_default(kfwd, peer):
    try:
        peer(peers.EchoUpload(port=80))
    except OSError as e:
        pytest.skip(f"127.0.0.1:80 not available: {e}")
    k = kfwd(None)
    got = echo_json(peers.get(k.port, "/http/127.0.0.1/p80", keep_body=True))
    assert got["target"] == "/p80"
    assert peers.Headers(got["headers"]).get_all("Host")[0] in ("127.0.0.1", "127.0.0.1:80")


def test_default_config_empty_path(kfwd, peer):
    echo = peer(peers.EchoUpload())
    k = kfwd(None)
    got = echo_json(peers.get(k.port, f"/http/127.0.0.1:{echo.port}", keep_body=True))
    assert got["target"] == "/"


def test_default_config_two_listen_addresses(kfwd, nginx):
    p1, p2 = peers.free_port(), peers.free_port()
    k = kfwd(None, args=["-l", f"127.0.0.1:{p1}", "-l", f"127.0.0.1:{p2}"])
    f = nginx.files["1k"]
    for p in (p1, p2):
        r = peers.get(p, f"/http/127.0.0.1:{nginx.port}{f.url}")
        assert r.status == 200 and r.sha256 == f.sha256
    assert k.alive()


def test_default_config_listens_on_8080(kfwd, nginx):
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", 8080))
        except OSError:
            pytest.skip("127.0.0.1:8080 is busy")
    kfwd(None, auto_listen=False)
    f = nginx.files["1k"]
    r = peers.get(8080, f"/http/127.0.0.1:{nginx.port}{f.url}")
    assert r.status == 200 and r.sha256 == f.sha256


def test_routes_longest_prefix_and_strip(kfwd, peer):
    a = peer(peers.EchoUpload())
    b = peer(peers.EchoUpload())
    k = kfwd(
        "\n".join([
            f"upstream a {a.addr}",
            f"upstream b {b.addr}",
            "route / a",
            "route /api b strip-prefix",
            "route /api/v2/ a",
            "route /s/ b strip-prefix",
        ])
    )
    cases = [
        ("/x?q=1", a, "/x?q=1"),
        ("/api/foo?q=1", b, "/foo?q=1"),
        ("/api", b, "/"),
        ("/api?q=2", b, "/?q=2"),
        ("/api/v2/z", a, "/api/v2/z"),
        ("/api/v2", b, "/v2"),
        ("/s/", b, "/"),
        # "/s/" removed from "/s/foo" leaves "foo"; an origin-form target needs its "/"
        ("/s/foo", b, "/foo"),
    ]
    for target, who, expect in cases:
        before = (len(a.requests), len(b.requests))
        got = echo_json(peers.get(k.port, target, keep_body=True))
        after = (len(a.requests), len(b.requests))
        assert (after[0] - before[0], after[1] - before[1]) == ((1, 0) if who is a else (0, 1)), target
        assert got["target"] == expect, (target, got["target"])


def test_round_robin_across_upstream_addresses(kfwd, peer):
    a = peer(peers.EchoUpload(close_after=True))
    b = peer(peers.EchoUpload(close_after=True))
    k = kfwd(f"upstream rr {a.addr} {b.addr}\nroute / rr")
    for i in range(10):
        assert peers.get(k.port, f"/rr{i}").status == 200
    assert len(a.requests) >= 3 and len(b.requests) >= 3, (len(a.requests), len(b.requests))
