"""Hostile input: control socket abuse by a local user.

- Refused control requests from uid 65534, as fast as it can send them: kfwd's log stays
  bounded (rate limit per message class, with a "suppressed" summary) and requests are served
  as fast as before.
- The default netlink port id (kfwd's pid) squatted by nobody before kfwd starts: kfwd takes a
  kernel-assigned port id, publishes it, and kfwdctl works.
"""

import json
import signal
import statistics
import subprocess
import time
from pathlib import Path

import pytest

import peers
from conftest import KFWD_BIN, KFWDCTL_BIN, SAN_CPU
from peers import mget

TESTS = Path(__file__).resolve().parent
NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
KLOG_BURST, KLOG_RATE = 100, 20  # user/log.h

FLOOD = r"""
import sys, time
sys.path.insert(0, sys.argv[2])
import ctlproto as P
portid, seconds = int(sys.argv[1]), float(sys.argv[3])
n = 0
end = time.monotonic() + seconds
with P.Client(portid) as cl:
    while time.monotonic() < end:
        for _ in range(100):
            try:
                cl.send(P.request(P.CMD_RELOAD, seq=n))
                n += 1
            except OSError:
                pass
        cl.drain() if n % 2000 == 0 else None
print(n, flush=True)
"""

SQUATTER = r"""
import socket, sys
sys.path.insert(0, sys.argv[2])
import ctlproto as P
s = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, P.NETLINK_USERSOCK)
s.bind((int(sys.argv[1]), 0))
print("bound", flush=True)
while True:
    s.recvfrom(65536)
"""


def portid_of(file):
    return int(Path(file).read_text().split()[0].split("=")[1])


def kfwdctl_json(file, *args):
    p = subprocess.run([str(KFWDCTL_BIN), "-j", "-f", str(file), *args], capture_output=True, text=True, timeout=20)
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout)


def latency_p50(port, n):
    times = []
    for i in range(n):
        t = time.monotonic()
        with peers.HttpConn(port, timeout=10) as c:
            c.request("GET", f"/a/{i}")
            assert c.read_response().status == 200
        times.append(time.monotonic() - t)
    return statistics.median(times)


@pytest.mark.timeout(60)
def test_refused_requests_from_nobody_do_not_flood_the_log(kfwd, peer, ctl_dir):
    echo = peer(peers.EchoUpload())
    file = ctl_dir / "ctl"
    k = kfwd(f"upstream e {echo.addr}\nroute /a/ e\nctl-socket-file {file}\n")
    assert peers.wait_for(file.exists, 5)
    before = latency_p50(k.port, 30)
    log0 = len(k.stderr)
    seconds = 4.0
    flood = subprocess.Popen(NOBODY + ["/usr/bin/python3", "-c", FLOOD, str(portid_of(file)), str(TESTS), str(seconds)],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        t0 = time.monotonic()
        time.sleep(0.5)
        during = latency_p50(k.port, 30)
        out, err = flood.communicate(timeout=30)
        elapsed = time.monotonic() - t0
    finally:
        if flood.poll() is None:
            flood.kill()
            flood.wait(5)
    assert flood.returncode == 0, err
    sent = int(out)
    log = k.stderr[log0:]
    refused = [ln for ln in log.splitlines() if "ctl: reload from pid" in ln and "refused" in ln]
    st = kfwdctl_json(file, "stats")
    assert st["ctl_denied_total"] >= sent // 2, (st["ctl_denied_total"], sent)
    bound = KLOG_BURST + KLOG_RATE * elapsed + 2
    assert len(refused) <= bound, f"{len(refused)} refusal lines logged for {sent} refused requests in {elapsed:.1f} s"
    assert len(refused) >= KLOG_BURST, len(refused)
    assert "lines like the next one suppressed" in log or st["log_suppressed_total"] > 0
    assert st["log_suppressed_total"] >= st["ctl_denied_total"] - len(refused) - 1
    assert len(log) < 64 * 1024, f"{len(log)} bytes of log during the flood"
    print(f"{sent} refused requests in {elapsed:.1f} s: {len(refused)} lines, {len(log)} bytes of log; "
          f"p50 {before * 1000:.2f} ms before, {during * 1000:.2f} ms during")
    assert during < max(0.010, 3 * before) * SAN_CPU, f"p50 {before * 1000:.2f} ms before the flood, {during * 1000:.2f} ms during"
    assert mget(k.metrics(), "kfwd_log_suppressed_total") > 0


@pytest.mark.timeout(60)
def test_squatted_default_port_id_falls_back(ctl_dir, peer):
    """nobody binds kfwd's future pid as a netlink port id before kfwd starts."""
    echo = peer(peers.EchoUpload())
    port = peers.free_port()
    file = ctl_dir / "ctl"
    conf = ctl_dir / "k.conf"
    conf.write_text(f"listen 127.0.0.1:{port}\nupstream e {echo.addr}\nroute /a/ e\nctl-socket-file {file}\n")
    # The shell's pid becomes kfwd's at exec: known before kfwd runs.
    log = open(ctl_dir / "k.log", "w")
    k = subprocess.Popen(["sh", "-c", f'read go; exec "{KFWD_BIN}" -c "{conf}"'], stdin=subprocess.PIPE,
                         stdout=log, stderr=subprocess.STDOUT, text=True)
    sq = subprocess.Popen(NOBODY + ["/usr/bin/python3", "-c", SQUATTER, str(k.pid), str(TESTS)],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert sq.stdout.readline().strip() == "bound", sq.stderr.read()
        k.stdin.write("go\n")
        k.stdin.close()
        assert peers.wait_for(file.exists, 10), (ctl_dir / "k.log").read_text()
        st = kfwdctl_json(file, "status")
        assert st["pid"] == k.pid and st["ctl_port_id"] != k.pid, st
        assert portid_of(file) == st["ctl_port_id"]
        assert file.stat().st_uid == 0 and (file.stat().st_mode & 0o777) == 0o644
        text = (ctl_dir / "k.log").read_text()
        assert f"port id {k.pid} is held by pid {sq.pid}" in text and "kernel assigns" in text, text
        with peers.HttpConn(port, timeout=10) as c:
            c.request("GET", "/a/x")
            assert c.read_response().status == 200
    finally:
        sq.kill()
        sq.wait(5)
        if k.poll() is None:
            k.send_signal(signal.SIGTERM)
            assert k.wait(10) == 0
        log.close()
    assert not file.exists(), "kfwd left its control file behind"
