"""systemd readiness notification (user/sd_notify.c): kfwd under a fake NOTIFY_SOCKET.

The test plays systemd: an AF_UNIX datagram socket with SO_PASSCRED, so every message carries
the sender's pid as the kernel saw it. Checked: READY=1 only once listeners and the control
socket work; RELOADING=1 (with MONOTONIC_USEC=) then READY=1 around `kfwdctl reload`, SIGHUP
and a failed reload; STOPPING=1 when SIGTERM starts the drain; nothing else, in that order.
"""

import os
import signal
import socket
import struct
import subprocess
import time
from pathlib import Path

import pytest

import peers
from conftest import ROOT

KFWDCTL = Path(os.environ.get("KFWDCTL_BIN") or ROOT / "build" / "kfwdctl")
UCRED = struct.Struct("iII")  # struct ucred: pid, uid, gid
RECV_TIMEOUT = 10.0
MONOTONIC_SLACK_US = 5_000_000


class FakeSystemd:
    """The receiving end of NOTIFY_SOCKET; yields (message, sender pid)."""

    def __init__(self, address):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        self.sock.bind(address)

    def recv(self, timeout=RECV_TIMEOUT):
        self.sock.settimeout(timeout)
        data, anc, _flags, _addr = self.sock.recvmsg(4096, socket.CMSG_SPACE(UCRED.size))
        pid = None
        for level, kind, payload in anc:
            if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
                pid = UCRED.unpack(payload[: UCRED.size])[0]
        return data.decode(), pid

    def expect(self, pid, *wanted):
        """The next messages are exactly `wanted` (RELOADING's MONOTONIC_USEC checked, then
        compared as 'MONOTONIC_USEC=*'), each sent by `pid`."""
        for want in wanted:
            msg, sender = self.recv()
            assert sender == pid, f"{msg!r} came from pid {sender}, kfwd is {pid}"
            lines = msg.split("\n")
            for i, ln in enumerate(lines):
                if ln.startswith("MONOTONIC_USEC="):
                    usec = int(ln.split("=", 1)[1])
                    now = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
                    assert 0 <= now - usec < MONOTONIC_SLACK_US, f"MONOTONIC_USEC {usec}, now {now}"
                    lines[i] = "MONOTONIC_USEC=*"
            assert "\n".join(lines) == want, f"expected {want!r}, got {msg!r}"

    def expect_nothing(self, wait=0.3):
        with pytest.raises(socket.timeout):
            msg = self.recv(timeout=wait)
            pytest.fail(f"unexpected notification {msg!r}")

    def close(self):
        self.sock.close()


RELOAD = ("RELOADING=1\nMONOTONIC_USEC=*", "READY=1")


@pytest.mark.parametrize("kind", ["abstract", "path"])
def test_notify_ready_reload_stopping(kfwd, peer, tmp_path, monkeypatch, kind):
    if kind == "abstract":
        name = f"@kfwd-test-{os.getpid()}-{time.monotonic_ns()}"
        address = "\0" + name[1:]
    else:
        name = address = str(tmp_path / "notify")
    sd = FakeSystemd(address)
    monkeypatch.setenv("NOTIFY_SOCKET", name)
    origin = peer(peers.EchoUpload())
    try:
        k = kfwd(f"upstream up 127.0.0.1:{origin.port}\nroute / up\n", wait=False)
        ctl_file = k.config_path.parent / "ctl1"
        sd.expect(k.pid, "READY=1")
        # READY=1 means serving: no retry needed to connect or to use the control socket.
        socket.create_connection(("127.0.0.1", k.port), timeout=2).close()
        assert ctl_file.exists()
        sd.expect_nothing()

        original = k.config_path.read_text()
        k.config_path.write_text(original + "route /r/ up\n")
        p = subprocess.run([str(KFWDCTL), "-f", str(ctl_file), "reload"], capture_output=True, text=True, timeout=10)
        assert p.returncode == 0, p.stderr
        sd.expect(k.pid, *RELOAD)

        k.proc.send_signal(signal.SIGHUP)
        sd.expect(k.pid, *RELOAD)

        # A reload that fails still ends with READY=1: the old configuration keeps serving.
        k.config_path.write_text(original + "pipe-size 1\n")
        p = subprocess.run([str(KFWDCTL), "-f", str(ctl_file), "reload"], capture_output=True, text=True, timeout=10)
        assert p.returncode == 1 and "pipe-size" in p.stdout + p.stderr
        sd.expect(k.pid, *RELOAD)
        socket.create_connection(("127.0.0.1", k.port), timeout=2).close()
        sd.expect_nothing()

        k.send_signal(signal.SIGTERM)
        sd.expect(k.pid, "STOPPING=1")
        assert k.wait(10) == 0
        sd.expect_nothing()
    finally:
        sd.close()


def test_notify_socket_unusable_is_not_fatal(kfwd, monkeypatch):
    """A relative NOTIFY_SOCKET is refused with a warning; kfwd serves anyway."""
    monkeypatch.setenv("NOTIFY_SOCKET", "relative/name")
    k = kfwd("route /http/ url-embedded\nallow *\n")
    assert "NOTIFY_SOCKET 'relative/name'" in k.stderr


def test_without_notify_socket_nothing_is_sent(kfwd, monkeypatch, tmp_path):
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    k = kfwd("route /http/ url-embedded\nallow *\n")
    assert "NOTIFY_SOCKET" not in k.stderr
