"""HTTP routing: host and prefix matching, the longest prefix, strip-prefix (against nginx),
404 when nothing matches, 405 with Allow for a route's methods, and query strings forwarded
byte for byte through every kind of route.

Upstreams: the Python servers of tests/peers.py and tests/peers_http.py and the session nginx. Everything
listens on 127.0.0.1; every process a test starts is stopped by PID at teardown."""

import peers
from peers_http import cfg, echo_json, is_kfwd_answer, nreq, request, seen_headers


def test_route_host_matching(kfwd, peer):
    """host=H exact (port ignored, case-insensitive), host=*.suffix (not the suffix itself, the
    dot matters), host-specific beats host-less on an equal prefix whatever the order, and a
    longer host-less prefix still beats a shorter host-specific one."""
    a, b, c, d = (peer(peers.EchoUpload()) for _ in range(4))
    who = {id(a): "a", id(b): "b", id(c): "c", id(d): "d"}
    k = kfwd(cfg(
        f"upstream a {a.addr}", f"upstream b {b.addr}", f"upstream c {c.addr}", f"upstream d {d.addr}",
        "route / a",
        "route / b host=api.example",
        "route /v1/ c host=*.example.org",   # host-specific defined first...
        "route /v1/ a",
        "route /h/ a",                       # ...and host-less defined first
        "route /h/ d host=exact.example",
        "route /h/deep/ a",
    ))
    cases = [
        ("other.test", "/x", a),
        ("api.example", "/x", b),
        ("api.example:8080", "/x", b),
        ("API.Example", "/x", b),
        ("sub.api.example", "/x", a),
        ("x.example.org", "/v1/q", c),
        ("a.b.example.org:81", "/v1/q", c),
        ("example.org", "/v1/q", a),
        ("badexample.org", "/v1/q", a),
        ("x.example.org", "/x", a),
        ("exact.example", "/h/z", d),
        ("other.test", "/h/z", a),
        ("exact.example", "/h/deep/z", a),
    ]
    wrong = []
    for host, target, expect in cases:
        before = {id(p): nreq(p) for p in (a, b, c, d)}
        r = request(k.port, "GET", target, host=host)
        got = [who[id(p)] for p in (a, b, c, d) if nreq(p) != before[id(p)]]
        if r.status != 200 or got != [who[id(expect)]]:
            wrong.append(f"Host {host!r} {target}: status {r.status}, served by {got}, expected {who[id(expect)]}")
            continue
        seen = seen_headers(r)
        if echo_json(r)["target"] != target or seen.get_all("Host") != [host]:
            wrong.append(f"Host {host!r} {target}: upstream saw target {echo_json(r)['target']!r} Host {seen.get_all('Host')}")
    assert not wrong, "\n".join(wrong)


def test_route_no_match_404(kfwd, peer):
    e = peer(peers.EchoUpload())
    k = kfwd(cfg(f"upstream e {e.addr}", "route / e host=only.example", "route /api/ e"))
    r = request(k.port, "GET", "/x", host="other.example")
    assert is_kfwd_answer(r, 404), (r, r.body)
    assert request(k.port, "GET", "/x", host="only.example").status == 200
    assert request(k.port, "GET", "/api/x", host="other.example").status == 200
    assert nreq(e) == 2


def test_route_longest_prefix_and_strip_prefix_nginx(kfwd, nginx, peer):
    e = peer(peers.EchoUpload())
    k = kfwd(cfg(
        f"upstream ng {nginx.addr}",
        f"upstream e {e.addr}",
        "route / e",
        "route /static/ ng strip-prefix",
        "route /static/nostrip/ e",
        "route /files/ ng",
    ))
    f1, f100 = nginx.files["1k"], nginx.files["100k"]
    r = request(k.port, "GET", "/static" + f1.url)  # /static/files/1k -> /files/1k
    assert r.status == 200 and r.body_len == f1.size and r.sha256 == f1.sha256, r
    r = request(k.port, "GET", f100.url)  # no strip
    assert r.status == 200 and r.body_len == f100.size and r.sha256 == f100.sha256, r
    r = request(k.port, "GET", "/static/ok?x=1")  # -> nginx /ok?x=1
    assert r.status == 200 and r.body == b"ok\n", (r, r.body)
    assert nreq(e) == 0, [q.target for q in e.requests]
    assert echo_json(request(k.port, "GET", "/static/nostrip/x?y"))["target"] == "/static/nostrip/x?y"
    assert echo_json(request(k.port, "GET", "/staticx"))["target"] == "/staticx"
    assert echo_json(request(k.port, "GET", "/static"))["target"] == "/static"
    assert nreq(e) == 3


def test_route_methods_405_with_allow(kfwd, peer):
    e = peer(peers.EchoUpload())
    k = kfwd(cfg(f"upstream e {e.addr}", "route /ro/ e methods=HEAD,GET", "route / e"))
    for method, body in (("POST", b"payload"), ("DELETE", None), ("PUT", b"x" * 1000), ("OPTIONS", None)):
        with peers.HttpConn(k.port, timeout=10) as c:
            c.request(method, "/ro/thing", body=body)
            r = c.read_response(method, keep_body=True)
            assert r.status == 405, (method, r, r.body)
            allow = {t.strip().upper() for t in r.headers.get("Allow", "").split(",") if t.strip()}
            assert allow == {"GET", "HEAD"}, f"{method}: Allow {r.headers.get_all('Allow')}"
            assert is_kfwd_answer(r, 405), (r.headers, r.body)
            assert c.wait_eof(5), "kfwd kept the connection open after its 405"
    assert nreq(e) == 0, "a disallowed method reached the upstream"
    assert echo_json(request(k.port, "GET", "/ro/thing"))["method"] == "GET"
    r = request(k.port, "HEAD", "/ro/thing")
    assert r.status == 200 and r.body_len == 0, r
    assert echo_json(request(k.port, "POST", "/other", body=b"abc"))["bytes"] == 3
    assert [q.method for q in e.requests] == ["GET", "HEAD", "POST"]


def test_query_string_intact(kfwd, peer):
    e = peer(peers.EchoUpload())
    k = kfwd(cfg(f"upstream e {e.addr}", "route /strip e strip-prefix", "route / e",
                 "route /http/ url-embedded", "allow 127.0.0.1"))
    up = f"127.0.0.1:{e.port}"
    cases = [
        ("/a/b?x=1&y=%2F%3F&z=a+b&x=2&empty=&flag", "/a/b?x=1&y=%2F%3F&z=a+b&x=2&empty=&flag"),
        ("/a?", "/a?"),
        ("/a?u=http://h/p?q=1;s=2&t='~!$*(),", "/a?u=http://h/p?q=1;s=2&t='~!$*(),"),
        ("/a%20b/c%2Fd?e=%e2%82%ac", "/a%20b/c%2Fd?e=%e2%82%ac"),
        ("/strip/a?b=/c&d=%20", "/a?b=/c&d=%20"),
        ("/strip?x=1", "/?x=1"),
        (f"/http/{up}/p?u=http://x/y?z&w=%41", "/p?u=http://x/y?z&w=%41"),
        (f"/http/{up}?x=1", "/?x=1"),
    ]
    wrong = []
    for target, expect in cases:
        got = echo_json(request(k.port, "GET", target))["target"]
        if got != expect:
            wrong.append(f"{target!r}: upstream saw {got!r}, expected {expect!r}")
    assert not wrong, "\n".join(wrong)
