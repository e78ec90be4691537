"""A listener's protocol: `listen ADDR:PORT [PROTOCOL]` picks the operations its sessions get
(http, the default, is the only one so far); another word is a FILE:LINE error (kfwd -t and
start-up check it; a reload is refused the same way)."""
import subprocess

import pytest

import peers
from conftest import KFWD_BIN


def check(path):
    return subprocess.run([str(KFWD_BIN), "-t", "-c", str(path)], capture_output=True, text=True, timeout=10)


def test_listen_names_its_protocol(tmp_path):
    cfg = tmp_path / "kfwd.conf"
    cfg.write_text(f"listen 127.0.0.1:{peers.free_port()} http\nroute /http/ url-embedded\n")
    p = check(cfg)
    assert p.returncode == 0, p.stderr


def test_unknown_protocol_is_a_config_error(tmp_path):
    cfg = tmp_path / "kfwd.conf"
    cfg.write_text(f"route /http/ url-embedded\nlisten 127.0.0.1:{peers.free_port()} gopher\n")
    p = check(cfg)
    assert p.returncode == 1
    assert f"{cfg}:2: listen: unknown protocol 'gopher'" in p.stderr, p.stderr


def test_http_listener_forwards(kfwd, peer):
    origin = peer(peers.EchoUpload())
    port = peers.free_port()
    k = kfwd(f"listen 127.0.0.1:{port} http\nupstream a {origin.addr}\nroute /a/ a\n")
    with peers.HttpConn(k.port, timeout=10) as c:
        c.request("GET", "/a/x")
        r = c.read_response()
    assert r.status == 200
