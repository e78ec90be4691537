"""Config check (-t) and shutdown: SIGTERM/SIGINT stop accepting, finish in-flight transfers up
to drain-timeout, exit 0."""

import hashlib
import re
import signal
import socket
import subprocess
import time

import pytest

import peers
from conftest import KFWD_BIN
from peers import KiB, MiB


def check(path, timeout=10):
    if not KFWD_BIN.exists():
        pytest.fail(f"{KFWD_BIN} does not exist (run `make`)")
    return subprocess.run([str(KFWD_BIN), "-t", "-c", str(path)], capture_output=True, text=True, timeout=timeout)


def test_config_check_good(tmp_path):
    port = peers.free_port()
    cfg = tmp_path / "good.conf"
    cfg.write_text(
        f"""# a full config
listen 127.0.0.1:{port}
listen 127.0.0.1:{peers.free_port()}
upstream origin 127.0.0.1:1 127.0.0.1:2

# round robin above, strip-prefix below
upstream other 127.0.0.1:3
route / origin
route /api other strip-prefix
route /http/ url-embedded
pipe-size 512k
pipe-high-water 384k
pipe-low-water 64k
data-path splice
copy-buffer-size 128k
client-sndbuf 0
upstream-rcvbuf 1m
max-connections 100
max-request-line 4k
max-header-size 16k
connect-timeout 1500
response-timeout 30s
client-timeout 2m
drain-timeout 1h
metrics-listen 127.0.0.1:{peers.free_port()}
log-level debug
"""
    )
    res = check(cfg)
    assert res.returncode == 0, f"-t rejected a valid config: {res.stderr}"
    with socket.socket() as s:  # -t must not have started listening
        s.bind(("127.0.0.1", port))


@pytest.mark.parametrize(
    "line3",
    [
        "pipe-size banana",
        "no-such-directive 1",
        "connect-timeout 5x",
        "listen 127.0.0.1",
        "data-path teleport",
        "max-connections -3",
        "log-level chatty",
        "route",
    ],
)
def test_config_check_bad_reports_file_and_line(tmp_path, line3):
    cfg = tmp_path / "bad.conf"
    cfg.write_text(f"# comment on line 1\nupstream u 127.0.0.1:9\n{line3}\nroute / u\n")
    res = check(cfg)
    assert res.returncode == 1, f"-t exit {res.returncode} for {line3!r}; stderr: {res.stderr}"
    assert re.search(r"(^|/)bad\.conf:3: \S", res.stderr, re.M), f"no 'FILE:3: message' in: {res.stderr!r}"


def test_config_check_missing_file(tmp_path):
    res = check(tmp_path / "absent.conf")
    assert res.returncode == 1 and res.stderr.strip()


@pytest.mark.timeout(60)
def test_sigterm_finishes_in_flight_transfer(kfwd, nginx):
    f = nginx.files["30m"]
    k = kfwd(f"upstream origin {nginx.addr}\nroute / origin\ndrain-timeout 30s")
    c = peers.HttpConn(k.port, rcvbuf=64 * KiB, timeout=30)
    c.request("GET", f.url)
    _, status, _, h = c.read_head()
    assert status == 200
    first = c.stream.read_exact(MiB)
    k.send_signal(signal.SIGTERM)
    time.sleep(0.5)
    assert k.alive(), f"kfwd exited {k.returncode} on SIGTERM with a transfer in flight"
    # no longer accepting: a new connection is refused or never served
    try:
        n = peers.HttpConn(k.port, timeout=1.5)
        try:
            n.request("GET", nginx.files["1k"].url)
            r = n.read_response()
            assert r.status != 200, "kfwd served a new connection after SIGTERM"
        except (socket.timeout, peers.Closed, ConnectionResetError, BrokenPipeError):
            pass
        n.close()
    except OSError:  # refused (listener closed) or otherwise not connectable
        pass
    # the in-flight transfer completes, paced (50 ms per MiB) so it outlives the signal by ~1.5 s
    sha = hashlib.sha256(first)
    got = len(first)
    mark = got + MiB
    while got < f.size:
        d = c.stream.read_some(min(MiB, f.size - got))
        assert d, f"transfer cut after {got} of {f.size} bytes by SIGTERM"
        sha.update(d)
        got += len(d)
        if got >= mark:
            mark += MiB
            time.sleep(0.05)
    assert sha.hexdigest() == f.sha256
    c.close()
    status = k.wait(10)
    assert status == 0, f"kfwd exit status {status} after draining (None = still running)"


def test_sigint_idle_exits_0_promptly(kfwd, nginx):
    k = kfwd(f"upstream origin {nginx.addr}\nroute / origin\ndrain-timeout 30s")
    c = peers.HttpConn(k.port)  # an idle keep-alive connection is not in flight
    c.request("GET", nginx.files["1k"].url)
    assert c.read_response().status == 200
    t0 = time.monotonic()
    k.send_signal(signal.SIGINT)
    status = k.wait(5)
    assert status == 0, f"exit status {status} (None = still running after 5 s)"
    assert time.monotonic() - t0 < 5


def test_drain_timeout_bounds_shutdown(kfwd, nginx):
    k = kfwd(f"upstream origin {nginx.addr}\nroute / origin\ndrain-timeout 1s")
    c = peers.HttpConn(k.port, rcvbuf=64 * KiB)
    f = nginx.files["30m"]
    c.request("GET", f.url)
    _, status, _, _ = c.read_head()
    assert status == 200  # then stall: the transfer can't finish
    t0 = time.monotonic()
    k.send_signal(signal.SIGTERM)
    status = k.wait(10)
    dt = time.monotonic() - t0
    assert status == 0, f"exit status {status} (None = still running 10 s after SIGTERM)"
    assert 0.8 <= dt < 5, f"exited {dt:.2f} s after SIGTERM with drain-timeout 1s"
    got = 0
    while True:
        d = c.stream.read_some(MiB)
        if not d:
            break
        got += len(d)
    assert got < f.size, "a stalled 30 MB transfer completed after drain-timeout"


def test_idle_metrics_connections_bounded_and_closed_at_shutdown(kfwd, nginx):
    """Scrape connections that never ask are bounded (the oldest gives way, the next scrape is
    answered) and are closed, not leaked, when kfwd stops (a sanitizer build reports a leak)."""
    k = kfwd(f"upstream origin {nginx.addr}\nroute / origin")
    idle = [socket.create_connection(("127.0.0.1", k.metrics_port), timeout=5) for _ in range(48)]
    try:
        assert "kfwd_" in k.metrics_text()
        # The cap is 32 open scrape connections: at least the 17 oldest were closed by kfwd.
        closed = 0
        for s in idle[:20]:
            s.settimeout(5)
            try:
                closed += s.recv(1) == b""
            except (ConnectionResetError, socket.timeout):
                pass
        assert closed >= 17, f"only {closed} of the 20 oldest idle metrics connections were closed"
        fds = k.settled_fd_count()
        k.send_signal(signal.SIGTERM)
        status = k.wait(10)
        assert status == 0, f"exit status {status} (None = still running 10 s after SIGTERM)"
    finally:
        for s in idle:
            s.close()
    assert fds < 60, f"kfwd held {fds} fds with 48 idle metrics connections"
