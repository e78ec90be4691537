"""Cross build for arm64 (make ARCH=arm64, Debian's aarch64-linux-gnu toolchain and multiarch
-dev:arm64 libraries), run under qemu-user.

The build runs once per session (a no-op when build-arm64/ is up to date). Checked: the
binaries are AArch64 ELF; the arm64 kfwd -t accepts a good configuration and refuses a bad
one with FILE:LINE; it serves a request under qemu; the BPF object is byte-identical to the
x86-64 build's (the program is arch-neutral); both architectures' stripped binaries stay
under the size target.
"""

import hashlib
import json
import os
import shutil
import socket
import subprocess

import pytest

import peers
from conftest import ROOT

BUILD = ROOT / "build-arm64"
QEMU = ["qemu-aarch64", "-L", "/usr/aarch64-linux-gnu"]
EM_AARCH64 = 183
ELF_MACHINE_OFFSET = 18
SIZE_TARGET = 400 * 1000  # bytes, stripped, excluding shared libraries
BODY = 1 << 20

pytestmark = pytest.mark.skipif(
    not (shutil.which("aarch64-linux-gnu-gcc") and shutil.which("qemu-aarch64")),
    reason="no aarch64 cross compiler or qemu-user (scripts/install-deps.sh installs them)",
)


@pytest.fixture(scope="module")
def arm64_build():
    p = subprocess.run(["make", "-s", "--no-print-directory", "-C", str(ROOT), "-j2", "ARCH=arm64"],
                       capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stdout + p.stderr
    return BUILD


def qemu(*args, timeout=60):
    return subprocess.run([*QEMU, *map(str, args)], capture_output=True, text=True, timeout=timeout)


@pytest.mark.timeout(600)
def test_binaries_are_aarch64(arm64_build):
    for name in ("kfwd", "kfwdctl"):
        head = (arm64_build / name).read_bytes()[:20]
        assert head[:4] == b"\x7fELF"
        assert int.from_bytes(head[ELF_MACHINE_OFFSET:20], "little") == EM_AARCH64, name
    p = qemu(arm64_build / "kfwdctl", "-V")
    assert p.returncode == 0 and p.stdout.startswith("kfwdctl "), p.stderr


def test_arm64_kfwd_checks_configurations(arm64_build, tmp_path):
    good = tmp_path / "good.conf"
    good.write_text("listen 127.0.0.1:8080\nupstream a 127.0.0.1:81\nroute / a strip-prefix\npipe-size 64k\n")
    p = qemu(arm64_build / "kfwd", "-t", "-c", good)
    assert p.returncode == 0, p.stderr
    assert "configuration ok" in p.stderr
    bad = tmp_path / "bad.conf"
    bad.write_text("listen 127.0.0.1:8080\nroute / url-embedded\npipe-size 1\n")
    p = qemu(arm64_build / "kfwd", "-t", "-c", bad)
    assert p.returncode == 1
    assert f"{bad}:3: pipe-size must be between" in p.stderr
    assert qemu(arm64_build / "kfwd", "-t").returncode == 0  # the embedded default


def test_arm64_kfwd_serves_under_qemu(arm64_build, tmp_path, peer):
    """qemu-user has no NETLINK_USERSOCK, hence ctl-port-id off; the rest runs as on a router."""
    origin = peer(peers.EchoUpload())
    port = peers.free_port()
    conf = tmp_path / "q.conf"
    conf.write_text(f"listen 127.0.0.1:{port}\nctl-port-id off\nupstream up 127.0.0.1:{origin.port}\n"
                    "route / up\ndrain-timeout 2s\n")
    log = open(tmp_path / "q.log", "wb")
    proc = subprocess.Popen([*QEMU, str(arm64_build / "kfwd"), "-c", str(conf)], stdout=log, stderr=subprocess.STDOUT)
    try:
        def up():
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                return True
            except OSError:
                assert proc.poll() is None, (tmp_path / "q.log").read_text()
                return False

        assert peers.wait_for(up, 30), (tmp_path / "q.log").read_text()
        body = os.urandom(BODY)
        with peers.HttpConn(port, timeout=30) as c:
            c.request("POST", "/up", [("Content-Length", str(BODY))], body)
            r = c.read_response("POST", keep_body=True)
        assert r.status == 200
        echo = json.loads(r.body)
        assert echo["bytes"] == BODY and echo["sha256"] == hashlib.sha256(body).hexdigest()
    finally:
        proc.terminate()
        try:
            assert proc.wait(15) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(5)
            log.close()


def test_bpf_object_is_arch_neutral(arm64_build):
    """Built with -D__TARGET_ARCH_arm64 and -D__TARGET_ARCH_x86 from the same vmlinux.h."""
    x86 = ROOT / "build" / "kfwd.bpf.o"
    if not x86.exists():
        pytest.fail(f"{x86} does not exist (run `make`)")
    assert (arm64_build / "kfwd.bpf.o").read_bytes() == x86.read_bytes()


@pytest.mark.parametrize("arch, build, strip", [("x86_64", "build", "strip"),
                                                ("arm64", "build-arm64", "aarch64-linux-gnu-strip")])
def test_stripped_sizes(arm64_build, tmp_path, arch, build, strip):
    sizes = {}
    for name in ("kfwd", "kfwdctl"):
        out = tmp_path / name
        subprocess.run([strip, "-o", str(out), str(ROOT / build / name)], check=True, timeout=60)
        sizes[name] = out.stat().st_size
    print(f"stripped sizes {arch}: {sizes}")
    assert all(s < SIZE_TARGET for s in sizes.values()), sizes
