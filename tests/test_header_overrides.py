"""Request header overrides on routes: `set-header NAME VALUE` (a quoted VALUE keeps its spaces)
and `remove-header NAME`, applied after hop-by-hop handling on url-embedded and upstream routes,
shown in `kfwdctl route list`; names kfwd frames or sets itself are refused with FILE:LINE.

Upstream: tests/peers.py's EchoUpload, which records every request head it received.
"""

import json
import os
import subprocess
from pathlib import Path

import pytest

import peers
from conftest import ROOT, check_config

KFWDCTL = Path(os.environ.get("KFWDCTL_BIN") or ROOT / "build" / "kfwdctl")
UA = "Mozilla/5.0 (SMART-TV; Linux) IPTV/1.0"


def seen(e, n=-1):
    return e.requests[n].headers


def request(port, target, headers):
    with peers.HttpConn(port, timeout=10) as c:
        c.request("GET", target, headers, None, host="kfwd.test")
        return c.read_response("GET", keep_body=True)


CLIENT_HEADERS = [("User-Agent", "curl/8.0"), ("Referer", "http://portal.example/"),
                  ("x-token", "secret"), ("Accept", "*/*"), ("Connection", "x-hop")]


@pytest.mark.parametrize("kind", ["url-embedded", "upstream"])
def test_set_and_remove_header_reach_the_origin(kfwd, peer, kind):
    e = peer(peers.EchoUpload())
    opts = f'set-header User-Agent "{UA}" remove-header Referer remove-header X-Token set-header X-Hop on'
    if kind == "url-embedded":
        k = kfwd(f"route /http/ url-embedded {opts}\nallow 127.0.0.1\n")
        target = f"/http/{e.addr}/live.ts"
    else:
        k = kfwd(f"upstream o {e.addr}\nroute / o {opts}\n")
        target = "/live.ts"
    r = request(k.port, target, CLIENT_HEADERS + [("X-Hop", "from-client")])
    assert r.status == 200, (r.status, r.body[:200])
    h = seen(e)
    assert h.get_all("User-Agent") == [UA], h
    assert h.get_all("Referer") == [] and h.get_all("X-Token") == [], h
    assert h.get_all("Accept") == ["*/*"], h
    # X-Hop: the client's field is replaced by the route's value.
    assert h.get_all("X-Hop") == ["on"], h
    # The client's Connection and what it names are still dropped; kfwd's own fields stay.
    assert h.get_all("Connection") == [] and h.get_all("X-Forwarded-For") == ["127.0.0.1"], h


def test_set_header_without_client_field_and_other_routes_untouched(kfwd, peer):
    e = peer(peers.EchoUpload())
    k = kfwd(f"upstream o {e.addr}\nroute /tv/ o set-header User-Agent IPTV-Box/2\nroute / o\n")
    assert request(k.port, "/tv/a", [("Accept", "*/*")]).status == 200
    assert seen(e).get_all("User-Agent") == ["IPTV-Box/2"]
    assert request(k.port, "/other", [("User-Agent", "curl/8.0")]).status == 200
    assert seen(e).get_all("User-Agent") == ["curl/8.0"]


def test_route_list_shows_the_overrides(kfwd, peer, tmp_path):
    e = peer(peers.EchoUpload())
    k = kfwd(f"upstream o {e.addr}\nroute / o remove-header Referer set-header User-Agent \"{UA}\"\n")
    ctl_file = tmp_path / "ctl1"
    assert peers.wait_for(ctl_file.exists, 5)
    p = subprocess.run([str(KFWDCTL), "-f", str(ctl_file), "-j", "route", "list"],
                       capture_output=True, text=True, timeout=20)
    assert p.returncode == 0, p.stderr
    routes = json.loads(p.stdout)
    assert routes[0]["options"] == f'remove-header Referer set-header User-Agent "{UA}"'


BASE = "listen 127.0.0.1:18080\nupstream o 127.0.0.1:1\n"


@pytest.mark.parametrize("opts,what", [
    ("set-header Host evil.example", "'Host' is set by kfwd"),
    ("set-header content-length 5", "'content-length' is set by kfwd"),
    ("remove-header Transfer-Encoding", "'Transfer-Encoding' is set by kfwd"),
    ("set-header Connection close", "'Connection' is set by kfwd"),
    ("remove-header Upgrade", "'Upgrade' is set by kfwd"),
    ("set-header X-Forwarded-For 1.2.3.4", "'X-Forwarded-For' is set by kfwd"),
    ("set-header User-Agent", "usage: set-header NAME VALUE"),
    ("remove-header", "usage: remove-header NAME"),
    ("set-header Bad:Name x", "bad header name 'Bad:Name'"),
    ('set-header User-Agent "VLC 3', "quoted word ends without"),
    ('set-header User-Agent "VLC"3', "quoted word ends without"),
])
def test_bad_overrides_refused_with_file_line(tmp_path, opts, what):
    rc, err, conf = check_config(tmp_path, BASE + f"route / o {opts}\n")
    assert rc != 0 and err.startswith(f"{conf}:3: ") and what in err, err


def test_good_overrides_accepted(tmp_path):
    rc, err, _ = check_config(tmp_path, BASE + f'route / o set-header User-Agent "{UA}" remove-header Referer '
                                         'set-header X-Empty ""\n')
    assert rc == 0, err
