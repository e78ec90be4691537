"""Header rewriting in both directions: hop-by-hop headers removed, X-Forwarded-For/-Proto/-Host
and Via added, Forwarded (RFC 7239) when the route asks for it, the Host of url-embedded
requests, and what kfwd changes in response heads.

Upstreams: the Python servers of tests/peers.py and tests/peers_http.py. Everything
listens on 127.0.0.1; every process a test starts is stopped by PID at teardown."""

import json
import re

import pytest

import peers
from peers_http import cfg, echo_json, request, seen_headers


def test_request_hop_by_hop_removed(kfwd, peer):
    e = peer(peers.EchoUpload())
    k = kfwd(cfg(f"upstream e {e.addr}", "route / e"))
    hdrs = [
        ("Connection", "foo, BAR"),
        ("Foo", "1"),
        ("bar", "2"),
        ("Keep-Alive", "timeout=5, max=7"),
        ("TE", "trailers"),
        ("Upgrade", "websocket"),
        ("Proxy-Connection", "keep-alive"),
        ("Trailer", "X-Never"),
        ("X-Keep", "yes"),
        ("Foo-Bar", "not listed, kept"),
    ]
    r = request(k.port, "GET", "/hdr?x=1", headers=hdrs, host="front.example:8080")
    seen = seen_headers(r)
    names = seen.names()
    for gone in ("foo", "bar", "keep-alive", "te", "upgrade", "proxy-connection", "trailer", "connection"):
        assert gone not in names, f"hop-by-hop {gone!r} reached the upstream: {seen}"
    assert seen.get_all("X-Keep") == ["yes"] and seen.get_all("Foo-Bar") == ["not listed, kept"], seen
    assert seen.get_all("Host") == ["front.example:8080"], seen
    assert echo_json(r)["target"] == "/hdr?x=1"


def test_request_x_forwarded_proto_host_and_via(kfwd, peer):
    """X-Forwarded-Proto / X-Forwarded-Host are kfwd's (client-supplied ones replaced), Via is
    appended after earlier hops; without client values kfwd still sets them."""
    e = peer(peers.EchoUpload())
    k = kfwd(cfg(f"upstream e {e.addr}", "route / e"))
    hdrs = [
        ("X-Forwarded-Proto", "https"),
        ("X-Forwarded-Host", "evil.example"),
        ("Via", "1.0 fred, 1.1 p.example"),
        ("X-Keep", "yes"),
    ]
    seen = seen_headers(request(k.port, "GET", "/xf", headers=hdrs, host="front.example:8080"))
    assert seen.get_all("X-Forwarded-Proto") == ["http"], seen
    assert seen.get_all("X-Forwarded-Host") == ["front.example:8080"], seen
    assert [t.strip() for v in seen.get_all("Via") for t in v.split(",")] == ["1.0 fred", "1.1 p.example", "1.1 kfwd"], seen
    assert seen.get_all("X-Forwarded-For") == ["127.0.0.1"], seen
    assert seen.get_all("X-Keep") == ["yes"], seen
    seen = seen_headers(request(k.port, "GET", "/plain"))
    assert seen.get_all("X-Forwarded-For") == ["127.0.0.1"]
    assert seen.get_all("X-Forwarded-Proto") == ["http"]
    assert seen.get_all("X-Forwarded-Host") == ["kfwd.test"]
    assert seen.get_all("Via") == ["1.1 kfwd"]
    assert "forwarded" not in seen.names(), "Forwarded added without the route option"


@pytest.mark.parametrize("xff,expect", [
    ([("X-Forwarded-For", "203.0.113.9")], "203.0.113.9, 127.0.0.1"),
    ([("X-Forwarded-For", "203.0.113.9, 198.51.100.2"), ("X-Forwarded-For", "192.0.2.44")],
     "203.0.113.9, 198.51.100.2, 192.0.2.44, 127.0.0.1"),
], ids=["one-field", "two-fields"])
def test_request_x_forwarded_for_appended(kfwd, peer, xff, expect):
    """The client address is appended to earlier X-Forwarded-For values, in one field, whatever
    headers follow the client's X-Forwarded-For."""
    e = peer(peers.EchoUpload())
    k = kfwd(cfg(f"upstream e {e.addr}", "route / e"))
    r = request(k.port, "GET", "/xff", headers=xff + [("X-After", "1"), ("Accept", "*/*")])
    assert r.status == 200, (
        f"kfwd answered {r.status} {r.body!r}; the upstream could not parse the forwarded head: "
        f"{[str(x) for x in e.errors]}\nkfwd log:\n{k.stderr[-1200:]}")
    seen = seen_headers(r)
    assert seen.get_all("X-Forwarded-For") == [expect], seen
    assert seen.get_all("X-After") == ["1"] and seen.get_all("Accept") == ["*/*"], seen


def test_request_headers_url_embedded_host(kfwd, peer):
    e = peer(peers.EchoUpload())
    k = kfwd(cfg("route /http/ url-embedded", "allow 127.0.0.1"))
    r = request(k.port, "GET", f"/http/127.0.0.1:{e.port}/x", host="front.example",
                headers=[("X-Forwarded-Host", "evil.example")])
    seen = seen_headers(r)
    assert seen.get_all("Host") == [f"127.0.0.1:{e.port}"], seen
    assert seen.get_all("X-Forwarded-Host") == ["front.example"], seen


_TOKEN = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")


_QUOTED = re.compile(r'^"((?:[^"\\]|\\.)*)"$')


def parse_forwarded(values):
    """Forwarded field values -> list of elements, each a dict (RFC 7239 4: pairs separated by
    ';', elements by ','; value = token / quoted-string). Fails on a malformed value."""
    out = []
    for v in values:
        for element in v.split(","):  # test values contain no quoted commas
            pairs = {}
            for pair in element.strip().split(";"):
                name, eq, value = pair.partition("=")
                assert eq and _TOKEN.match(name.strip()), f"malformed forwarded-pair {pair!r} in {v!r}"
                value = value.strip()
                m = _QUOTED.match(value)
                if m:
                    value = re.sub(r"\\(.)", r"\1", m.group(1))
                else:
                    assert _TOKEN.match(value), f"forwarded value {value!r} must be a token or quoted-string ({v!r})"
                pairs[name.strip().lower()] = value
            out.append(pairs)
    return out


def test_forwarded_option_and_host_rewrite(kfwd, peer):
    e = peer(peers.EchoUpload())
    k = kfwd(cfg(
        f"upstream e {e.addr}",
        "route /fw/ e forwarded",
        "route /hr/ e host-rewrite=backend.internal:8081",
        "route /both/ e forwarded host-rewrite=backend.internal",
        "route / e",
    ))
    seen = seen_headers(request(k.port, "GET", "/fw/x", host="kfwd.test:8080"))
    assert parse_forwarded(seen.get_all("Forwarded")) == [
        {"for": "127.0.0.1", "host": "kfwd.test:8080", "proto": "http"}
    ], seen
    assert seen.get_all("Host") == ["kfwd.test:8080"]

    # An earlier hop's Forwarded element is kept, ours comes after it.
    seen = seen_headers(request(k.port, "GET", "/fw/x", headers=[("Forwarded", 'for=192.0.2.60;proto=https;by="[2001:db8::1]"')]))
    assert parse_forwarded(seen.get_all("Forwarded")) == [
        {"for": "192.0.2.60", "proto": "https", "by": "[2001:db8::1]"},
        {"for": "127.0.0.1", "host": "kfwd.test", "proto": "http"},
    ], seen

    seen = seen_headers(request(k.port, "GET", "/hr/x"))
    assert seen.get_all("Host") == ["backend.internal:8081"], seen
    assert seen.get_all("X-Forwarded-Host") == ["kfwd.test"], seen
    assert "forwarded" not in seen.names()

    seen = seen_headers(request(k.port, "GET", "/both/x", host="public.example"))
    assert seen.get_all("Host") == ["backend.internal"], seen
    assert seen.get_all("X-Forwarded-Host") == ["public.example"], seen
    assert parse_forwarded(seen.get_all("Forwarded")) == [
        {"for": "127.0.0.1", "host": "public.example", "proto": "http"}
    ], seen

    seen = seen_headers(request(k.port, "GET", "/none"))
    assert seen.get_all("Host") == ["kfwd.test"] and "forwarded" not in seen.names(), seen


def test_response_header_rewriting(kfwd, peer, nginx):
    e = peer(peers.EchoUpload(extra_response_headers=[
        ("Connection", "X-Hop, x-other"),
        ("X-Hop", "1"),
        ("X-Other", "2"),
        ("Keep-Alive", "timeout=99"),
        ("Proxy-Connection", "keep-alive"),
        ("Upgrade", "h2c"),
        ("TE", "trailers"),
        ("Trailer", "X-T"),
        ("Via", "1.1 origin-cache"),
        ("X-End", "kept"),
    ]))
    k = kfwd(cfg(f"upstream e {e.addr}", f"upstream ng {nginx.addr}", "route /ng/ ng strip-prefix", "route / e"))
    with peers.HttpConn(k.port, timeout=10) as c:
        for i in range(2):  # the client connection stays usable
            c.request("GET", f"/resp{i}")
            r = c.read_response(keep_body=True)
            assert r.status == 200, r
            names = r.headers.names()
            for gone in ("x-hop", "x-other", "keep-alive", "proxy-connection", "upgrade", "te", "trailer", "connection"):
                assert gone not in names, f"hop-by-hop {gone!r} reached the client: {r.headers}"
            assert [t.strip() for v in r.headers.get_all("Via") for t in v.split(",")] == ["1.1 origin-cache", "1.1 kfwd"], r.headers
            assert r.headers.get_all("X-End") == ["kept"]
            assert json.loads(r.body)["target"] == f"/resp{i}"
        # nginx answers with its own Connection: keep-alive, which is hop-by-hop too.
        c.request("GET", "/ng/ok")
        r = c.read_response(keep_body=True)
        assert r.status == 200 and r.body == b"ok\n", r
        assert r.headers.get_all("Connection") == [], r.headers
        assert r.headers.get_all("Via") == ["1.1 kfwd"], r.headers
        assert r.headers.get("Server", "").startswith("nginx"), r.headers
