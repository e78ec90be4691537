"""Seamless binary upgrade: `kfwd -x SOCKET` takes the listening sockets over
from the running kfwd (fd passing over its upgrade-socket), which stops accepting, drains and
exits 0.

Asserted: clients connecting in a loop through the switch see no refusal, no reset and no
failed request; a download in flight on the old process completes byte-exact; the old one exits
0 after draining; the new one serves, publishes itself for kfwdctl (also with a fixed
ctl-port-id), and with the sockmap data path owns the BPF pins while the old one's live sockmap
body still completes. A new process that cannot start leaves the old one serving."""

import random
import re
import signal
import socket
import stat
import subprocess
import threading
import time
from pathlib import Path

import pytest

import peers
from conftest import KFWD_BIN, KFWDCTL_BIN, SAN_CPU, Kfwd
from peers import MiB, wait_for
from peers_sockmap import PIN_NAMES, SM_RESP, PacedCloseDelimited, url, wait_log

ACCEPTED = "kfwd_connections_accepted_total"


class ClientLoop:
    """`n` threads, each: connect, GET `target`, read the whole response, close; again."""

    def __init__(self, port, target, n=3):
        self.port = port
        self.target = target
        self.stop_ev = threading.Event()
        self.lock = threading.Lock()
        self.ok = 0
        self.refused = 0
        self.reset = 0
        self.other = []
        self.threads = [threading.Thread(target=self._run, daemon=True) for _ in range(n)]
        for t in self.threads:
            t.start()

    def _one(self):
        with peers.HttpConn(self.port, timeout=10) as c:
            c.request("GET", self.target, [("Connection", "close")])
            r = c.read_response(keep_body=True)
        if r.status != 200 or not r.complete:
            raise AssertionError(f"{r!r}")

    def _run(self):
        while not self.stop_ev.is_set():
            try:
                self._one()
                with self.lock:
                    self.ok += 1
            except ConnectionRefusedError:
                with self.lock:
                    self.refused += 1
            except (ConnectionResetError, BrokenPipeError, peers.Closed):
                with self.lock:
                    self.reset += 1
            except Exception as e:  # noqa: BLE001  (reported by the test)
                with self.lock:
                    self.other.append(repr(e))

    def count(self):
        with self.lock:
            return self.ok

    def stop(self):
        self.stop_ev.set()
        for t in self.threads:
            t.join(15)
        return self


def upgrade_socket(k):
    return re.search(r"upgrade socket: (\S+)", k.stderr).group(1)


def ctl_file(k):
    return re.search(r"published in (\S+)", k.stderr).group(1)


def start_new(old, tmp_path, name="new"):
    """kfwd -c <the old one's config> -x <its upgrade socket>, as a package's ExecReload would."""
    argv = [str(KFWD_BIN), "-c", str(old.config_path), "-x", upgrade_socket(old)]
    return Kfwd(argv, tmp_path / f"{name}.log", old.port, old.metrics_port, old.config_path, old.listen_ports)


def stop_own(k):
    status, killed = k.stop()
    print(f"---- kfwd pid {k.pid} exit {status} killed {killed} ----\n{k.stderr[-4000:]}")
    return status, killed


@pytest.mark.parametrize("port_id", ["pid", "fixed"])
@pytest.mark.timeout(120)
def test_upgrade_under_load(kfwd, nginx, files_dir, tmp_path, port_id):
    extra = f"ctl-port-id {random.randrange(0x40000000, 0x7fffffff)}" if port_id == "fixed" else ""
    old = kfwd(
        f"""
        upstream web {nginx.addr}
        route / web
        drain-timeout 30s
        {extra}
        """
    )
    wait_log(old, r"upgrade socket: ")
    big = files_dir["30m"]
    # a download in flight on the old process, not read until after the switch: it stalls
    dl = peers.HttpConn(old.port, timeout=60, rcvbuf=256 * 1024)
    dl.request("GET", big.url)
    assert wait_for(lambda: old.metric("kfwd_connections_active") == 1, 5)
    loop = ClientLoop(old.port, "/ok")
    assert wait_for(lambda: loop.count() >= 50, 20), "the client loop does not get answers"
    before = loop.count()
    new = start_new(old, tmp_path)
    old.stopped_by_test = True  # it is meant to exit
    try:
        wait_log(new, r"kfwd running")
        assert wait_for(lambda: "binary upgrade: no longer accepting" in old.stderr, 10), old.stderr
        # the new process answers while the old one still drains the download
        assert wait_for(lambda: loop.count() >= before + 200, 30), loop.count()
        assert old.alive(), f"the old kfwd exited before its download finished:\n{old.stderr}"
        r = dl.read_response("GET", read_size=MiB)
        assert r.status == 200 and r.complete and r.sha256 == big.sha256, r
        dl.close()
        assert old.wait(15) == 0, f"old kfwd exit {old.returncode}:\n{old.stderr}"
        n_after = loop.count()
        assert wait_for(lambda: loop.count() >= n_after + 100, 30)
        loop.stop()
        assert (loop.refused, loop.reset, loop.other) == (0, 0, []), (
            f"{loop.ok} ok, {loop.refused} refused, {loop.reset} reset, others {loop.other[:5]}"
        )
        assert new.metric(ACCEPTED) >= 100
        # kfwdctl finds the new process through the same file
        r = subprocess.run([str(KFWDCTL_BIN), "-j", "-f", ctl_file(old), "status"], capture_output=True, text=True,
                           timeout=30)
        assert r.returncode == 0 and f'"pid":{new.pid}' in r.stdout.replace(" ", ""), r.stdout + r.stderr
        # and the new one can be upgraded in turn (its own upgrade socket)
        wait_log(new, r"upgrade socket: ")
        assert "error" not in old.stderr, old.stderr
    finally:
        loop.stop()
        status, killed = stop_own(new)
    assert (status, killed) == (0, False)


@pytest.mark.parametrize("user", ["root", "nobody"])
@pytest.mark.timeout(120)
def test_upgrade_with_sockmap(env, peer, tmp_path, user):
    """The old process's live sockmap body completes in the kernel through its own program and
    maps; the new one owns the pin directory and carries sockmap bodies of its own. Also when
    both run as `user nobody`: the old one, unprivileged, hands over to the new one (root at
    start), and gives up its pins through its pin directory fd."""
    slow = peer(PacedCloseDelimited(16 * MiB, interval=0.01))  # 64 KiB every 10 ms: ~2.5 s
    old = env.start("sockmap", extra=["user nobody"] if user == "nobody" else [])
    c_old = peers.HttpConn(old.port, timeout=60)
    c_old.request("GET", url(slow, "/old"))
    assert wait_for(lambda: slow.requests, 5)
    time.sleep(0.3)
    new = start_new(old, tmp_path)
    old.stopped_by_test = True
    try:
        wait_log(new, r"kfwd running")
        assert "sockmap data path ready" in new.stderr, new.stderr
        if user == "nobody":
            assert "running as nobody" in old.stderr and "running as nobody" in new.stderr
        r = c_old.read_response("GET", read_size=MiB)
        assert r.status == 200 and r.body_len == 16 * MiB and r.sha256 == slow.payload.sha256, r
        c_old.close()
        assert old.wait(15) == 0, old.stderr
        # 64 KiB a millisecond; slower by SAN_CPU under the sanitizers: a producer faster than
        # kfwd writes keeps a paused body in user space (README: "The price"), and this asks only
        # whether the new kfwd's program redirects at all
        fast = peer(PacedCloseDelimited(4 * MiB, interval=0.001 * SAN_CPU, seed=71))
        m0 = new.metrics()
        with peers.HttpConn(new.port, timeout=60) as c:
            c.request("GET", url(fast, "/new"))
            r = c.read_response(read_size=MiB)
        assert r.status == 200 and r.sha256 == fast.payload.sha256
        assert new.metrics()[SM_RESP] > m0.get(SM_RESP, 0), "the new kfwd did not use the sockmap"
        pins = [n for n in PIN_NAMES if (Path(old.pin) / n).exists()]
        assert pins == PIN_NAMES, f"after the old kfwd exited the pins are {pins}"
    finally:
        status, killed = stop_own(new)
    assert (status, killed) == (0, False)
    assert not [n for n in PIN_NAMES if (Path(old.pin) / n).exists()]


@pytest.mark.timeout(60)
def test_failed_new_process_leaves_the_old_one_serving(kfwd, nginx, tmp_path):
    old = kfwd(
        f"""
        upstream web {nginx.addr}
        route / web
        """
    )
    wait_log(old, r"upgrade socket: ")
    # the new configuration also listens on a port another process holds: it cannot start
    blocker = socket.socket()
    blocker.bind(("127.0.0.1", 0))
    blocker.listen(1)
    conf = tmp_path / "new.conf"
    conf.write_text(Path(old.config_path).read_text() + f"listen 127.0.0.1:{blocker.getsockname()[1]}\n")
    try:
        p = subprocess.run([str(KFWD_BIN), "-c", str(conf), "-x", upgrade_socket(old)], capture_output=True,
                           text=True, timeout=30)
        assert p.returncode == 1, p.stderr
        assert "took 2 listening sockets" in p.stderr, p.stderr
    finally:
        blocker.close()
    assert wait_for(lambda: "went away before it was ready" in old.stderr, 5), old.stderr
    assert old.alive()
    for _ in range(20):
        assert peers.get(old.port, "/ok").status == 200
    # and a later upgrade still works
    new = start_new(old, tmp_path)
    old.stopped_by_test = True
    try:
        wait_log(new, r"kfwd running")
        assert old.wait(10) == 0
        assert peers.get(new.port, "/ok").status == 200
    finally:
        stop_own(new)


def test_takeover_without_a_running_kfwd(tmp_path):
    conf = tmp_path / "k.conf"
    conf.write_text("listen 127.0.0.1:1\nroute / url-embedded\n")
    p = subprocess.run([str(KFWD_BIN), "-c", str(conf), "-x", str(tmp_path / "nothing")], capture_output=True,
                       text=True, timeout=30)
    assert p.returncode == 1 and "no running kfwd to take over from" in p.stderr, p.stderr


@pytest.mark.timeout(60)
def test_upgrade_socket_file(kfwd, tmp_path):
    """Next to the control file, per instance, root's with mode 0600; removed at exit."""
    k = kfwd("route / url-embedded\nallow 127.0.0.0/8\n")
    wait_log(k, r"upgrade socket: ")
    path = Path(upgrade_socket(k))
    assert str(path) == ctl_file(k) + ".upgrade"
    st = path.stat()
    assert stat.S_ISSOCK(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o600 and st.st_uid == 0, oct(st.st_mode)
    k.send_signal(signal.SIGTERM)
    assert k.wait(10) == 0
    assert not path.exists()
