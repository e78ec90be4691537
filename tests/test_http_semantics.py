"""HTTP gateway semantics (issue 4): host and prefix routing, strip-prefix, 405 + Allow,
allow/deny for url-embedded routes, Location rewriting, header rewriting in both directions,
query strings, upstream connection reuse, early responses, retries and their backoff, passive
health, connection slots (upstream-max-conns) and per-route timeouts.

Upstreams: the session nginx (real nginx-light), three private nginx processes for the
kill-one-mid-run test, and the Python servers of tests/peers.py and tests/peers_http.py.
Everything listens on 127.0.0.1; every process a test starts is stopped by PID at teardown.
"""

import hashlib
import json
import os
import re
import select
import signal
import socket
import subprocess
import threading
import time

import pytest

import peers
import peers_http
from peers import KiB, MiB, mdelta

CONNECTS = "kfwd_upstream_connects_total"
REUSES = "kfwd_upstream_reuses_total"
CONNECT_ERRORS = "kfwd_upstream_connect_errors_total"
RETRIES = "kfwd_upstream_retries_total"
IDLE = "kfwd_upstream_idle"

SLACK = 0.050  # scheduling slack for timing assertions (2 shared cores)


# --------------------------------------------------------------------------- helpers


def cfg(*lines):
    return "\n".join(lines)


def request(port, method, target, headers=None, body=None, host="kfwd.test", timeout=10.0):
    """One request on a fresh client connection; the Response keeps its body."""
    with peers.HttpConn(port, timeout=timeout) as c:
        c.request(method, target, headers, body, host=host)
        return c.read_response(method, keep_body=True)


def echo_json(r):
    assert r.status == 200, f"expected 200 from the echo upstream, got {r} body={r.body[:300]!r}"
    return json.loads(r.body)


def seen_headers(r):
    return peers.Headers(echo_json(r)["headers"])


def is_kfwd_answer(r, status):
    """kfwd's own answers carry a body '<status> <reason>\\n' and Connection: close."""
    return (
        r.status == status
        and r.body is not None
        and r.body.startswith(f"{status} ".encode())
        and "close" in r.headers.tokens("connection")
    )


def nreq(p):
    with p.lock:
        return len(p.requests)


# --------------------------------------------------------------------------- private nginx processes


class MiniNginx:
    """One nginx-light process (master_process off: the PID is the server) answering
    `location / { return 200 "<ident>\\n"; }` on its own port."""

    def __init__(self, prefix, ident):
        self.prefix = prefix
        self.ident = ident
        self.port = peers.free_port()
        self.addr = f"127.0.0.1:{self.port}"
        (prefix / "tmp").mkdir(parents=True, exist_ok=True)
        conf = f"""
daemon off;
master_process off;
worker_processes 1;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {prefix}/tmp/body;
    proxy_temp_path {prefix}/tmp/proxy;
    fastcgi_temp_path {prefix}/tmp/fastcgi;
    uwsgi_temp_path {prefix}/tmp/uwsgi;
    scgi_temp_path {prefix}/tmp/scgi;
    default_type text/plain;
    keepalive_requests 1000000;
    keepalive_timeout 300s;
    server {{
        listen 127.0.0.1:{self.port} backlog=1024;
        location / {{ return 200 "{ident}\\n"; }}
    }}
}}
"""
        (prefix / "nginx.conf").write_text(conf)
        self.log = open(prefix / "stderr.log", "wb")
        self.proc = subprocess.Popen(
            ["/usr/sbin/nginx", "-p", str(prefix), "-c", str(prefix / "nginx.conf")],
            stdin=subprocess.DEVNULL, stdout=self.log, stderr=subprocess.STDOUT,
        )
        self.pid = self.proc.pid
        deadline = time.monotonic() + 10
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"nginx exited {self.proc.returncode}: {(prefix / 'stderr.log').read_text()}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError("nginx did not start")
                time.sleep(0.02)

    def kill(self):
        """SIGKILL by PID: sockets die with the process, as in a crash."""
        if self.proc.poll() is None:
            os.kill(self.pid, signal.SIGKILL)
            self.proc.wait(10)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGQUIT)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                os.kill(self.pid, signal.SIGKILL)
                self.proc.wait(5)
        self.log.close()


@pytest.fixture
def mini_nginx(tmp_path):
    started = []

    def start(ident):
        n = MiniNginx(tmp_path / f"nginx-{ident}", ident)
        started.append(n)
        return n

    yield start
    for n in started:
        n.stop()


# =========================================================================== routes


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


# =========================================================================== allow / deny


ALLOW_DENY_CASES = [
    # (id, rules, {url host: expected status})
    ("default-deny", [], {"127.0.0.1": 403, "localhost": 403}),
    ("bare-address", ["allow 127.0.0.1"], {"127.0.0.1": 200, "localhost": 200}),
    ("first-match-deny", ["deny 127.0.0.1", "allow 127.0.0.0/8"], {"127.0.0.1": 403, "localhost": 403}),
    ("first-match-allow", ["allow 127.0.0.0/8", "deny 127.0.0.1"], {"127.0.0.1": 200, "localhost": 200}),
    ("name-resolved-then-cidr", ["deny 127.0.0.0/8", "allow *"], {"127.0.0.1": 403, "localhost": 403}),
    ("star-after-nothing", ["allow *"], {"127.0.0.1": 200, "localhost": 200}),
    ("deny-star-first", ["deny *", "allow 127.0.0.1"], {"127.0.0.1": 403, "localhost": 403}),
    ("host-pattern-only", ["allow localhost"], {"127.0.0.1": 403, "localhost": 200}),
    ("host-deny-before-cidr", ["deny localhost", "allow 127.0.0.0/8"], {"127.0.0.1": 200, "localhost": 403}),
    ("wildcard-not-suffix-itself", ["allow *.localhost"], {"localhost": 403}),
    ("wildcard-needs-dot", ["deny *.host", "allow *"], {"localhost": 200}),
    ("other-nets", ["allow 10.0.0.0/8", "allow 192.168.0.0/16", "allow ::1/128"], {"127.0.0.1": 403, "localhost": 403}),
    ("cidr-31-in", ["allow 127.0.0.0/31"], {"127.0.0.1": 200}),
    ("cidr-31-out", ["allow 127.0.0.2/31"], {"127.0.0.1": 403}),
    ("cidr-9-in", ["allow 127.0.0.0/9"], {"127.0.0.1": 200, "localhost": 200}),
    ("cidr-9-out", ["allow 127.128.0.0/9"], {"127.0.0.1": 403, "localhost": 403}),
    ("cidr-0", ["deny 0.0.0.0/0", "allow *"], {"127.0.0.1": 403, "localhost": 403}),
]


@pytest.mark.parametrize("rules,expect", [c[1:] for c in ALLOW_DENY_CASES], ids=[c[0] for c in ALLOW_DENY_CASES])
def test_url_embedded_allow_deny(kfwd, peer, rules, expect):
    e = peer(peers.EchoUpload())
    k = kfwd(cfg("route /http/ url-embedded", *rules))
    m0 = k.metrics()
    wrong = []
    for host, status in expect.items():
        before = nreq(e)
        r = request(k.port, "GET", f"/http/{host}:{e.port}/p?q=1")
        reached = nreq(e) - before
        if status == 403:
            if not is_kfwd_answer(r, 403) or reached:
                wrong.append(f"{host}: expected kfwd's 403, got {r.status} {r.body[:80]!r}, upstream saw {reached}")
        else:
            if r.status != 200 or reached != 1 or echo_json(r)["target"] != "/p?q=1":
                wrong.append(f"{host}: expected 200 from the upstream, got {r.status} {r.body[:80]!r}")
    m1 = k.metrics()
    n_allowed = sum(1 for s in expect.values() if s == 200)
    assert not wrong, f"rules {rules}:\n" + "\n".join(wrong) + f"\nkfwd log:\n{k.stderr[-2000:]}"
    # A denied destination is never connected to.
    assert mdelta(m1, m0, CONNECTS) + mdelta(m1, m0, REUSES) == n_allowed


# =========================================================================== Location rewriting


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


# =========================================================================== header rewriting


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


# =========================================================================== connection reuse


@pytest.mark.timeout(60)
def test_500_keepalive_requests_few_upstream_connections(kfwd, nginx):
    k = kfwd(cfg(f"upstream ng {nginx.addr}", "route / ng"))
    m0 = k.metrics()
    with peers.HttpConn(k.port, timeout=10) as c:
        for i in range(500):
            c.request("GET", f"/ok?i={i}")
            r = c.read_response(keep_body=True)
            assert r.status == 200 and r.body == b"ok\n", f"request {i}: {r}"
            assert "close" not in r.headers.tokens("connection"), f"request {i}: kfwd closes"
    m1 = k.metrics()
    connects = mdelta(m1, m0, CONNECTS)
    assert connects <= 3, f"{connects} upstream connects for 500 keep-alive requests"
    assert mdelta(m1, m0, REUSES) >= 500 - connects
    assert mdelta(m1, m0, "kfwd_requests_total") == 500


@pytest.mark.timeout(60)
def test_early_response_connection_not_reused(kfwd, peer):
    """The upstream answers 413 to a 50 MB upload from the head alone and keeps the connection
    open without reading: that connection must not be pooled (the next request opens a new
    one), the client gets the whole 413, and the following requests work."""
    up = peer(peers_http.EarlyResponder())
    k = kfwd(cfg(f"upstream u {up.addr}", "route / u", "response-timeout 3s"))
    m0 = k.metrics()
    size = 50 * MiB
    with peers.HttpConn(k.port, timeout=10) as c:
        c.send(c.build("POST", "/upload", [("Content-Length", str(size)), ("Content-Type", "application/octet-stream")]))
        stop = threading.Event()
        sent = [0]

        def sender():
            chunk = b"u" * (256 * KiB)
            while sent[0] < size and not stop.is_set():
                try:
                    _, w, _ = select.select([], [c.sock], [], 0.1)
                    if w:
                        sent[0] += c.sock.send(chunk[: size - sent[0]])
                except OSError:
                    return

        t = threading.Thread(target=sender, daemon=True)
        t.start()
        try:
            r = c.read_response("POST", keep_body=True)
        finally:
            stop.set()
            t.join(5)
        assert r.status == 413 and r.body == b"too large, go away\n" and r.complete, (r, r.body)
        assert "close" in r.headers.tokens("connection"), f"kfwd keeps the client connection after an early response: {r.headers}"
        assert sent[0] < size, "the upload completed: the upstream was expected to answer early"
    assert up.early_conns == 1
    m1 = k.metrics()
    assert mdelta(m1, m0, CONNECTS) == 1
    assert peers.mget(m1, IDLE) == 0, "the early-response connection went to the idle pool"
    # The next request on the same route must not get the poisoned connection.
    r = request(k.port, "GET", "/next")
    assert echo_json(r)["target"] == "/next", r
    m2 = k.metrics()
    assert mdelta(m2, m1, CONNECTS) == 1, "the early-response connection was reused"
    assert mdelta(m2, m1, REUSES) == 0, "the early-response connection was reused"
    assert up.accepted == 2
    # And a following request works (and may reuse the healthy connection).
    assert echo_json(request(k.port, "GET", "/after"))["target"] == "/after"
    m3 = k.metrics()
    assert mdelta(m3, m2, CONNECTS) + mdelta(m3, m2, REUSES) == 1
    assert mdelta(m3, m2, REUSES) == 1, "a healthy keep-alive connection was not pooled"


# =========================================================================== retries and health


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
@pytest.mark.parametrize("mode", ["fin-on-second", "rst-on-second"])
def test_stale_pooled_connection_replaced(kfwd, peer, mode):
    """The server closes a keep-alive connection as the next request arrives on it (what an
    idle timer firing at that moment looks like). kfwd must resend on a fresh connection
    without a client error, also on a route with retries=0 (the replacement is no retry), and
    must not mark the server down for it."""
    s = peer(peers_http.StaleKeepAlive(mode=mode))
    k = kfwd(cfg(f"upstream s {s.addr}", "route /r0/ s retries=0", "route / s"))
    m0 = k.metrics()
    n = 6
    for i in range(n):
        target = f"/r0/{i}" if i % 2 else f"/{i}"
        r = request(k.port, "GET", target)
        assert r.status == 200 and r.body == f"served {target}\n".encode(), f"request {i} {target}: {r} {r.body!r}\n{k.stderr[-1500:]}"
    m1 = k.metrics()
    assert s.served == n and s.dropped == n - 1, (s.served, s.dropped)
    # Every request after the first went out on the pooled connection, then on a fresh one.
    assert mdelta(m1, m0, REUSES) == n - 1
    assert mdelta(m1, m0, CONNECTS) == n
    assert mdelta(m1, m0, CONNECT_ERRORS) == 0
    assert "marked down" not in k.stderr


@pytest.mark.timeout(30)
def test_stale_pooled_connection_close_race(kfwd, peer):
    """The server closes each keep-alive connection 1 ms after its response, while the client's
    next request races toward kfwd: whether kfwd sees the close first or reuses the dying
    connection, every request must succeed, each on its own upstream connection."""
    s = peer(peers_http.StaleKeepAlive(mode="close-after", delay=0.001))
    k = kfwd(cfg(f"upstream s {s.addr}", "route / s retries=0"))
    m0 = k.metrics()
    n = 30
    with peers.HttpConn(k.port, timeout=10) as c:
        for i in range(n):
            c.request("GET", f"/race{i}")
            r = c.read_response(keep_body=True)
            assert r.status == 200 and r.body == f"served /race{i}\n".encode(), f"request {i}: {r} {r.body!r}\n{k.stderr[-1500:]}"
    m1 = k.metrics()
    assert s.served == n
    assert mdelta(m1, m0, CONNECTS) == n, "a connection the server had closed served a second request?"


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


# =========================================================================== connection slots and timeouts


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
