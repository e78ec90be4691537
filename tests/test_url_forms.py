"""URL forms of url-embedded routes that users paste: `/http/http://HOST/...` and
`/https/https://HOST/...` (the whole URL after the prefix), under the same allow/deny as
`/http/HOST/...`; and a redirect to `rtsp://h/p` from a url-embedded upstream, which becomes
`/rtsp/h/p` when there is an `rtsp-gateway` route.

Upstreams: the Python servers of tests/peers.py and tests/peers_http.py, and an HTTPS nginx
(tests/peers_tls.py). Everything listens on 127.0.0.1.
"""

import hashlib
import json

import pytest

import peers
import peers_http
from peers_tls import NginxTls, tls_certs  # noqa: F401 (fixture)


def request(port, target, headers=None):
    with peers.HttpConn(port, timeout=10) as c:
        c.request("GET", target, headers, None, host="kfwd.test")
        return c.read_response("GET", keep_body=True)


@pytest.mark.parametrize("form", ["http://{up}", "HTTP://{up}", "http:/{up}", "{up}"])
def test_pasted_http_url_reaches_the_origin(kfwd, peer, form):
    e = peer(peers.EchoUpload())
    k = kfwd("route /http/ url-embedded\nallow 127.0.0.1\n")
    r = request(k.port, "/http/" + form.format(up=e.addr) + "/p/q?x=1&y=%2F")
    assert r.status == 200, (r.status, r.body[:200])
    seen = json.loads(r.body)
    assert seen["target"] == "/p/q?x=1&y=%2F"
    assert peers.Headers(seen["headers"]).get_all("Host") == [e.addr]


@pytest.mark.parametrize("target,status", [
    ("/http/https://{up}/p", 400),  # the other scheme is not this route's
    ("/http/http:{up}/p", 400),  # "http:" without a slash is not a pasted URL
    ("/http/http:///p", 400),  # no host
    ("/http/http://127.0.0.2:{port}/p", 403),  # allow/deny as for /http/HOST
    ("/http/http://localhost:{port}/p", 403),  # a host rule sees the name in the URL
])
def test_pasted_http_url_refused(kfwd, peer, target, status):
    e = peer(peers.EchoUpload())
    k = kfwd("route /http/ url-embedded\ndeny localhost\nallow 127.0.0.1\n")
    r = request(k.port, target.format(up=e.addr, port=e.port))
    assert r.status == status, (r.status, r.body[:200])
    assert not e.requests


def test_pasted_https_url_reaches_the_tls_origin(kfwd, tmp_path, files_dir, tls_certs):  # noqa: F811
    cert, key = tls_certs.pair("localhost")
    origin = NginxTls(tmp_path / "o", files_dir["1k"].path.parent, cert, key)
    try:
        k = kfwd(f"route /https/ url-embedded tls ca={tls_certs.ca}\nallow localhost\n")
        f = files_dir["1k"]
        for form in (f"https://localhost:{origin.port}", f"https:/localhost:{origin.port}"):
            r = request(k.port, f"/https/{form}/files/1k")
            assert r.status == 200 and hashlib.sha256(r.body).hexdigest() == f.sha256, (form, r.status)
        r = request(k.port, f"/https/http://localhost:{origin.port}/files/1k")
        assert r.status == 400
    finally:
        origin.stop()


@pytest.mark.parametrize("gateway", [True, False], ids=["rtsp-route", "no-rtsp-route"])
def test_rtsp_location_rewritten(kfwd, peer, gateway):
    s = peer(peers_http.Scripted())
    extra = "route /rtsp/ rtsp-gateway\n" if gateway else ""
    k = kfwd(f"route /http/ url-embedded\n{extra}allow 127.0.0.1\n")
    cases = [
        ("rtsp://cam.example/live/ch1?token=x", "/rtsp/cam.example/live/ch1?token=x"),
        ("RTSP://10.0.0.5:8554/a", "/rtsp/10.0.0.5:8554/a"),
        ("rtsp://user:pw@[2001:db8::1]:554/s", "/rtsp/user:pw@[2001:db8::1]:554/s"),
    ]
    for loc, expect in cases:
        r = request(k.port, f"/http/{s.addr}/d/p", headers=[("X-Status", "302"), ("X-Location", loc)])
        assert r.status == 302
        assert r.headers.get_all("Location") == [expect if gateway else loc]
