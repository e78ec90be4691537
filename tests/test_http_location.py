"""Location rewriting: a redirect from a url-embedded origin points back through kfwd (absolute,
relative to the request's directory, query-only), plain routes keep the origin's Location, and a
rewritten redirect can be followed.

Upstreams: the Python servers of tests/peers.py and tests/peers_http.py. Everything
listens on 127.0.0.1; every process a test starts is stopped by PID at teardown."""

import peers_http
from peers_http import cfg, echo_json, nreq, request


def _redirect(k, port, status, location, target="/dir/page?x=1", prefix="/http/"):
    return request(k.port, "GET", f"{prefix}127.0.0.1:{port}{target}",
                   headers=[("X-Status", str(status)), ("X-Location", location)])


def test_location_rewriting_url_embedded(kfwd, peer):
    s = peer(peers_http.Scripted())
    P = s.port
    up = f"127.0.0.1:{P}"
    k = kfwd(cfg("route /http/ url-embedded", "route /gw url-embedded", "allow 127.0.0.1"))
    cases = [
        # (status, Location from upstream, expected Location at the client, route prefix)
        (302, "http://h.example:81/x?q=1", "/http/h.example:81/x?q=1", "/http/"),
        (301, "http://h.example/x", "/http/h.example/x", "/http/"),
        (303, "http://h.example:81", "/http/h.example:81/", "/http/"),
        (307, "http://h.example:81?q=2", "/http/h.example:81/?q=2", "/http/"),
        (308, "HTTP://H.example/Up?Case=1", "/http/H.example/Up?Case=1", "/http/"),
        (302, "/abs/path?k=v&k2=%20", f"/http/{up}/abs/path?k=v&k2=%20", "/http/"),
        (307, "y?z=1", f"/http/{up}/dir/y?z=1", "/http/"),
        (301, "y", f"/http/{up}/dir/y", "/http/"),
        (302, "//other.example:8080/p?q", "/http/other.example:8080/p?q", "/http/"),
        (302, "https://secure.example/x?q=1", "https://secure.example/x?q=1", "/http/"),
        (301, "ftp://files.example/f", "ftp://files.example/f", "/http/"),
        (200, "http://h.example/x?q=1", "http://h.example/x?q=1", "/http/"),
        (201, "http://h.example/created", "http://h.example/created", "/http/"),
        (302, "http://h.example:81/x?q=1", "/gw/h.example:81/x?q=1", "/gw/"),
        (302, "/abs", f"/gw/{up}/abs", "/gw/"),
    ]
    wrong = []
    for status, loc, expect, prefix in cases:
        r = _redirect(k, P, status, loc, prefix=prefix)
        got = r.headers.get_all("Location")
        if r.status != status or got != [expect]:
            wrong.append(f"{status} Location {loc!r} via {prefix}: client got {r.status} Location {got}, expected [{expect!r}]")
    assert not wrong, "\n".join(wrong)
    assert nreq(s) == len(cases)


def test_location_relative_to_directory_of_request_path(kfwd, peer):
    """Relative references resolve against the request path's directory (RFC 3986 5.2)."""
    s = peer(peers_http.Scripted())
    up = f"127.0.0.1:{s.port}"
    k = kfwd(cfg("route /http/ url-embedded", "allow 127.0.0.1"))
    wrong = []
    for target, loc, expect in [
        ("/a/b/c", "d", f"/http/{up}/a/b/d"),
        ("/a/b/", "d?e=f", f"/http/{up}/a/b/d?e=f"),
        ("/top?x=/y/z", "d", f"/http/{up}/d"),  # the query of the request is not part of the base path
        ("", "d", f"/http/{up}/d"),
    ]:
        r = _redirect(k, s.port, 302, loc, target=target)
        if r.headers.get_all("Location") != [expect]:
            wrong.append(f"request {target!r} Location {loc!r}: got {r.headers.get_all('Location')}, expected [{expect!r}]")
    assert not wrong, "\n".join(wrong)


def test_location_query_only_reference(kfwd, peer):
    """RFC 3986 5.2.2: a reference that is only '?query' keeps the base path, replacing its query
    (base /dir/page?x=1 + ?only=1 -> /dir/page?only=1)."""
    s = peer(peers_http.Scripted())
    k = kfwd(cfg("route /http/ url-embedded", "allow 127.0.0.1"))
    r = _redirect(k, s.port, 302, "?only=1")
    assert r.headers.get_all("Location") == [f"/http/127.0.0.1:{s.port}/dir/page?only=1"]


def test_location_not_rewritten_on_plain_routes(kfwd, peer):
    s = peer(peers_http.Scripted())
    k = kfwd(cfg(f"upstream s {s.addr}", "route / s"))
    r = request(k.port, "GET", "/x", headers=[("X-Status", "302"), ("X-Location", "http://h.example:81/x?q")])
    assert r.status == 302 and r.headers.get_all("Location") == ["http://h.example:81/x?q"]


def test_location_rewritten_redirect_can_be_followed(kfwd, peer):
    s = peer(peers_http.Scripted())
    k = kfwd(cfg("route /http/ url-embedded", "allow 127.0.0.1"))
    r = _redirect(k, s.port, 302, f"http://127.0.0.1:{s.port}/final/place?f=1&g=%2F")
    loc = r.headers.get("Location")
    assert r.status == 302 and loc == f"/http/127.0.0.1:{s.port}/final/place?f=1&g=%2F", r.headers
    r2 = request(k.port, "GET", loc)
    assert echo_json(r2)["target"] == "/final/place?f=1&g=%2F"
