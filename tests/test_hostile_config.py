"""Hostile (or mistyped) configuration: `kfwd -t` rejects it with FILE:LINE, and a listen
address that cannot be bound at start names its line."""

import socket
import subprocess

import pytest

import peers
from conftest import KFWD_BIN, check_config


def check(tmp_path, text):
    return check_config(tmp_path, text)


BASE = "listen 127.0.0.1:18080\nroute /a/ url-embedded\n"


@pytest.mark.parametrize(
    "text, line, what",
    [
        (BASE + "listen 127.0.0.1:18080\n", 3, "duplicate listen 127.0.0.1:18080 (already at line 1)"),
        (BASE + "metrics-listen 127.0.0.1:18080\n", 3, "metrics-listen 127.0.0.1:18080 is also a listen address"),
        (BASE + "route /a/ url-embedded\n", 3, "duplicate route /a/ (already at line 2)"),
        (BASE + "route /b/ url-embedded host=x\nroute /b/ url-embedded host=X\n", 4, "duplicate route /b/ host=X"),
        (BASE + "allow 10.1.2.3/8\n", 3, "'10.1.2.3/8' has bits set past its /8 prefix"),
        (BASE + "deny 192.168.1.1/24\n", 3, "'192.168.1.1/24' has bits set past its /24 prefix"),
        (BASE + "allow fd00::1/64\n", 3, "'fd00::1/64' has bits set past its /64 prefix"),
        (BASE + "connect-timeout 31d\n", 3, "usage: connect-timeout DURATION"),
        (BASE + "transfer-timeout 300000000s\n", 3, "at most 30 days"),
        (BASE + "route /c/ url-embedded idle-timeout=99999999999h\n", 3, ""),
        (BASE + "upstream-max-fails 1001\n", 3, "usage: upstream-max-fails N"),
        (BASE + "upstream-max-fails -1\n", 3, "usage: upstream-max-fails N"),
        (BASE + "pipe-size 64g\n", 3, "pipe-size must be between"),
        (BASE + "max-memory 512k\n", 3, "max-memory must be 0 (off) or at least 1048576"),
    ],
    ids=["dup-listen", "listen-is-metrics", "dup-route", "dup-route-host", "cidr-v4", "cidr-deny",
         "cidr-v6", "duration-unit", "duration-huge", "route-duration", "max-fails-big", "max-fails-neg", "size",
         "max-memory-small"],
)
def test_rejected(tmp_path, text, line, what):
    rc, err, path = check(tmp_path, text)
    assert rc == 1, err
    assert err.startswith(f"{path}:{line}: "), err
    assert what in err, err


@pytest.mark.parametrize(
    "extra",
    [
        "allow 10.0.0.0/8\nallow 192.168.1.1/32\nallow 192.168.1.1\nallow fd00::/64\nallow ::1\n",
        "route /a/ url-embedded host=x\nroute /b/ url-embedded\n",
        "metrics-listen 127.0.0.1:18081\ntunnel-timeout 720h\nupstream-max-fails 0\nmax-memory 0\n",
        "listen [::1]:18080\n",
    ],
    ids=["cidrs", "routes", "limits", "v6-same-port"],
)
def test_accepted(tmp_path, extra):
    rc, err, _ = check(tmp_path, BASE + extra)
    assert rc == 0, err


@pytest.mark.timeout(30)
def test_bind_failure_names_the_listen_line(tmp_path):
    held = socket.socket()
    held.bind(("127.0.0.1", 0))
    held.listen()
    port = held.getsockname()[1]
    free = peers.free_port()
    conf = tmp_path / "k.conf"
    conf.write_text(f"listen 127.0.0.1:{free}\n# a comment\nlisten 127.0.0.1:{port}\nroute / url-embedded\n"
                    f"ctl-socket-file {tmp_path}/ctl\n")
    try:
        p = subprocess.run([str(KFWD_BIN), "-c", str(conf)], capture_output=True, text=True, timeout=20)
    finally:
        held.close()
    assert p.returncode == 1, p.stderr
    assert f"{conf}:3: cannot listen on 127.0.0.1:{port}" in p.stderr, p.stderr
    assert "Address already in use" in p.stderr, p.stderr
