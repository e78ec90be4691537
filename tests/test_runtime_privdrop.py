"""Least privilege: `user NAME` / `group NAME`.

Asserted from /proc/PID/status: uid and gid (real, effective, saved, fs), supplementary groups,
exactly the documented capabilities in the effective, permitted and bounding sets, none
inheritable or ambient, NoNewPrivs. Then that everything kfwd does at run time still works as
that user: spliced HTTP with a pipe-size above pipe-max-size, a sockmap response body, kfwdctl
stats and reload, a reload that adds a listen port below 1024, and a clean exit that removes the
BPF pins."""

import os
import re
import signal
import socket
import subprocess
from pathlib import Path

import pytest

import peers
from conftest import KFWD_BIN, KFWDCTL_BIN
from peers import MiB, mdelta
from peers_sockmap import PIN_NAMES, SM_RESP, PacedCloseDelimited, url, wait_log

NOBODY = 65534
CAP_NET_BIND_SERVICE = 10
CAP_NET_ADMIN = 12
CAP_SYS_RESOURCE = 24
CAP_BPF = 39
FALLBACKS = "kfwd_pipe_fallbacks_total"
# Before Linux 6.5 every bpf() command, map access by fd included, needed CAP_BPF while
# kernel.unprivileged_bpf_disabled is set; kfwd probes for it instead of guessing.
BPF_BY_FD_NEEDS_CAP = tuple(int(x) for x in os.uname().release.split(".")[:2]) < (6, 5)


def caps(*bits):
    """The set kfwd keeps: of these, the ones it had at start (a container may withhold some,
    CAP_SYS_RESOURCE here; kfwd then warns)."""
    return sum(1 << b for b in bits) & int(status("self")["CapPrm"][0], 16)


def status(pid):
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        k, _, v = line.partition(":")
        out[k] = v.split()
    return out


def low_free_port():
    """A free 127.0.0.1 port below 1024 (binding it needs CAP_NET_BIND_SERVICE)."""
    for port in range(1000, 900, -1):
        s = socket.socket()
        try:
            s.bind(("127.0.0.1", port))
            return port
        except OSError:
            continue
        finally:
            s.close()
    pytest.skip("no free port below 1024 on 127.0.0.1")


def ctl(k, *args):
    ctl_file = re.search(r"published in (\S+)", k.stderr).group(1)
    return subprocess.run([str(KFWDCTL_BIN), "-f", ctl_file, *args], capture_output=True, text=True, timeout=30)


@pytest.fixture
def readable_config(tmp_path):
    """The user must be able to read the configuration file to reload it: o+x on tmp_path and its
    ancestors below /tmp for the test (restored after), o+r on the files."""
    changed = []
    d = tmp_path
    while d != Path("/tmp") and d != d.parent:
        mode = d.stat().st_mode & 0o7777
        changed.append((d, mode))
        os.chmod(d, mode | 0o001)
        d = d.parent

    def share(k):
        os.chmod(k.config_path, 0o644)

    yield share
    for d, mode in changed:
        os.chmod(d, mode)


def sockmap_caps():
    return caps(CAP_NET_BIND_SERVICE, CAP_SYS_RESOURCE, *((CAP_BPF,) if BPF_BY_FD_NEEDS_CAP else ()))


def check_identity(k, expect_caps):
    st = status(k.pid)
    assert st["Uid"] == [str(NOBODY)] * 4 and st["Gid"] == [str(NOBODY)] * 4, (st["Uid"], st["Gid"])
    assert st["Groups"] == [str(NOBODY)], st["Groups"]
    for field in ("CapEff", "CapPrm", "CapBnd"):
        assert int(st[field][0], 16) == expect_caps, f"{field} {st[field][0]}, expected {expect_caps:016x}"
    assert int(st["CapInh"][0], 16) == 0 and int(st["CapAmb"][0], 16) == 0, (st["CapInh"], st["CapAmb"])
    assert st["NoNewPrivs"] == ["1"], st["NoNewPrivs"]


@pytest.mark.timeout(120)
def test_runs_as_user_with_sockmap(env, nginx, peer, files_dir, tmp_path, readable_config):
    p = peer(PacedCloseDelimited(4 * MiB, interval=0.001))
    k = env.start(
        "sockmap",
        extra=[
            "user nobody",
            "group nogroup",
            f"upstream web {nginx.addr}",
            "route /files/ web",
            "sockmap-body-min 0",
        ],
    )
    wait_log(k, r"running as nobody")
    SOCKMAP_CAPS = sockmap_caps()
    check_identity(k, SOCKMAP_CAPS)
    assert oct(os.stat(k.pin).st_uid) == oct(NOBODY), "the pin dir was not handed to the user"

    # spliced HTTP
    m0 = k.metrics()
    big = files_dir["8m"]
    r = peers.get(k.port, big.url)
    assert r.status == 200 and r.sha256 == big.sha256
    # a response body through the sockmap (map updates, event ring, resume requests)
    with peers.HttpConn(k.port, timeout=60) as c:
        c.request("GET", url(p))
        r = c.read_response(read_size=MiB)
    assert r.status == 200 and r.body_len == 4 * MiB and r.sha256 == p.payload.sha256
    m1 = k.metrics()
    assert mdelta(m1, m0, FALLBACKS) == 0, "a pipe could not be had or sized as the user"
    assert mdelta(m1, m0, SM_RESP) > 0, "nothing went through the sockmap as the user"

    # kfwdctl: the answers come from uid 65534, which the root-written file announces
    published = Path(re.search(r"published in (\S+)", k.stderr).group(1)).read_text()
    assert published == f"portid={k.pid} pid={k.pid} uid={NOBODY}\n", published
    r = ctl(k, "-j", "stats")
    assert r.returncode == 0, r.stderr
    # reload with a new listen port below 1024: CAP_NET_BIND_SERVICE
    low = low_free_port()
    with open(k.config_path, "a") as f:
        f.write(f"listen 127.0.0.1:{low}\n")
    readable_config(k)
    r = ctl(k, "reload")
    assert r.returncode == 0, r.stderr + k.stderr
    r = peers.get(low, big.url)
    assert r.status == 200 and r.sha256 == big.sha256
    check_identity(k, SOCKMAP_CAPS)

    k.send_signal(signal.SIGTERM)
    assert k.wait(10) == 0, k.stderr
    left = [n for n in PIN_NAMES if (k.pin / n).exists()]
    assert not left, f"pins left after exit as the user: {left}"
    assert "error" not in k.stderr.split("kfwd stopped")[-1], k.stderr


@pytest.mark.timeout(60)
def test_runs_as_user_without_bpf(kfwd, nginx, files_dir):
    """Without the sockmap data path kfwd keeps only CAP_NET_BIND_SERVICE and CAP_SYS_RESOURCE;
    the user's primary group is used without `group`."""
    k = kfwd(
        f"""
        user nobody
        upstream web {nginx.addr}
        route / web
        """
    )
    wait_log(k, r"running as nobody")
    check_identity(k, caps(CAP_NET_BIND_SERVICE, CAP_SYS_RESOURCE))
    r = peers.get(k.port, files_dir["100k"].url)
    assert r.status == 200 and r.sha256 == files_dir["100k"].sha256
    assert ctl(k, "status").returncode == 0


def test_config_user_and_group_checked(tmp_path):
    base = "listen 127.0.0.1:1\nroute / url-embedded\n"
    for bad, why in (
        ("user no-such-user-kfwd", "unknown user"),
        ("user root", "root"),
        ("group no-such-group-kfwd", "unknown group"),
        ("user", "usage"),
    ):
        p = tmp_path / "t.conf"
        p.write_text(base + bad + "\n")
        r = subprocess.run([str(KFWD_BIN), "-t", "-c", str(p)], capture_output=True, text=True, timeout=30)
        assert r.returncode == 1 and "t.conf:3: " in r.stderr and why in r.stderr, (bad, r.stderr)
