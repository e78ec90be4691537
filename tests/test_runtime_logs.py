"""Logs for a router: `log-target stderr|syslog[:PATH]` and the access log
(`access-log PATH|syslog[:PATH]|off`).

Asserted: one access line per request with client, connection, method, target, status, bytes
each way, duration and data path (splice, copy, sockmap), for ordinary, error and sockmap
requests; the file is reopened on SIGUSR1 and on reload (logrotate); a reader that never reads
(a FIFO) does not slow kfwd down, its lost lines are counted; daemon and access lines reach a
syslog datagram socket in the format syslog(3) writes; bad values are rejected with FILE:LINE."""

import os
import re
import signal
import socket
import stat
import subprocess
import threading
import time

import pytest

import peers
from conftest import KFWD_BIN
from peers import MiB, wait_for
from peers_sockmap import PacedCloseDelimited, url

DROPPED = "kfwd_access_log_dropped_total"
LINE = re.compile(
    r'^(?P<time>\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z) (?P<client>\S+) conn=(?P<conn>\d+) '
    r'"(?P<method>\S+) (?P<target>\S+)" (?P<status>\d{3}|-) in=(?P<bytes_in>\d+) '
    r"out=(?P<bytes_out>\d+) ms=(?P<ms>\d+) path=(?P<path>splice|copy|sockmap)$"
)
# syslog(3) over /dev/log: <PRI>Mmm dd hh:mm:ss TAG[PID]: MSG; daemon facility (3 << 3)
SYSLOG = re.compile(r"^<(?P<pri>\d+)>[A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d (?P<tag>[\w-]+)\[(?P<pid>\d+)\]: (?P<msg>.*)$", re.S)
LOG_DAEMON = 3 << 3
LOG_INFO = 6


def parse(text):
    lines = [ln for ln in text.splitlines() if ln]
    out = []
    for ln in lines:
        m = LINE.match(ln)
        assert m, f"access log line not in the documented format: {ln!r}"
        out.append(m.groupdict())
    return out


def wait_lines(path, n, timeout=10.0):
    def count():
        try:
            return len(parse(path.read_text()))
        except FileNotFoundError:
            return 0

    assert wait_for(lambda: count() >= n, timeout), f"{path}: {count()} access lines, expected {n}"
    return parse(path.read_text())


def check_t(tmp_path, text):
    p = tmp_path / "t.conf"
    p.write_text(text)
    return subprocess.run([str(KFWD_BIN), "-t", "-c", str(p)], capture_output=True, text=True, timeout=30)


class SyslogServer:
    """A syslog daemon stand-in: an AF_UNIX datagram socket at `path`, collecting datagrams."""

    def __init__(self, path):
        self.path = str(path)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.sock.settimeout(0.2)
        self.messages = []
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while not self.stopping.is_set():
            try:
                self.messages.append(self.sock.recv(65536).decode())
            except socket.timeout:
                continue
            except OSError:
                return

    def parsed(self, tag):
        out = []
        for raw in list(self.messages):
            m = SYSLOG.match(raw)
            assert m, f"not a syslog(3) datagram: {raw!r}"
            if m["tag"] == tag:
                out.append(m.groupdict())
        return out

    def stop(self):
        self.stopping.set()
        self.thread.join(5)
        self.sock.close()


@pytest.fixture
def syslog_server(tmp_path):
    servers = []

    def start(name="log"):
        s = SyslogServer(tmp_path / name)
        servers.append(s)
        return s

    yield start
    for s in servers:
        s.stop()


@pytest.mark.timeout(60)
def test_access_log_fields_for_ok_error_and_spliced_requests(kfwd, nginx, tmp_path, files_dir):
    log = tmp_path / "access.log"
    k = kfwd(
        f"""
        upstream web {nginx.addr}
        route /files/ web
        route /ok web
        access-log {log}
        """
    )
    big = files_dir["8m"]
    with peers.HttpConn(k.port) as c:
        c.request("GET", "/ok")
        r1 = c.read_response(keep_body=True)
        c.request("GET", big.url + "?a=1&b=%20x")
        r2 = c.read_response()
        c.request("HEAD", big.url)
        r3 = c.read_response("HEAD")
    r4 = peers.get(k.port, "/nowhere")
    with socket.create_connection(("127.0.0.1", k.port)) as s:
        s.sendall(b"GET /ok HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n")
        assert s.recv(100).startswith(b"HTTP/1.1 400")
    assert (r1.status, r2.status, r3.status, r4.status) == (200, 200, 200, 404)
    assert r2.sha256 == big.sha256

    lines = wait_lines(log, 5)
    assert len(lines) == 5, lines
    ok, dl, head, missing, bad = lines
    for ln in lines:
        assert ln["client"] == "127.0.0.1", ln
    assert ok["conn"] == dl["conn"] == head["conn"] != missing["conn"], lines
    assert (ok["method"], ok["target"], ok["status"]) == ("GET", "/ok", "200")
    assert len(r1.body) < int(ok["bytes_out"]) < len(r1.body) + 512, ok  # head and body
    assert (dl["method"], dl["target"], dl["status"]) == ("GET", big.url + "?a=1&b=%20x", "200")
    assert big.size < int(dl["bytes_out"]) < big.size + 1024 and dl["path"] == "splice", dl
    assert int(dl["bytes_in"]) > len(big.url), dl  # the rewritten request head went upstream
    assert (head["method"], head["status"], head["path"]) == ("HEAD", "200", "copy"), head
    assert int(head["bytes_out"]) < 1024, head
    assert (missing["target"], missing["status"], missing["bytes_in"]) == ("/nowhere", "404", "0"), missing
    assert int(missing["bytes_out"]) > 0, missing
    # a request refused before routing: kfwd's 400, the method and target as sent
    assert (bad["method"], bad["target"], bad["status"]) == ("GET", "/ok", "400"), bad
    assert k.metric(DROPPED) == 0


@pytest.mark.timeout(60)
def test_access_log_unparsed_head_and_upstream_failure(kfwd, tmp_path, free_port):
    """A head that never parsed is logged with '-' for method and target; an upstream that
    refuses gives 502, with nothing forwarded."""
    log = tmp_path / "access.log"
    dead = free_port()
    k = kfwd(
        f"""
        upstream dead 127.0.0.1:{dead}
        route / dead
        access-log {log}
        """
    )
    with socket.create_connection(("127.0.0.1", k.port)) as s:
        s.sendall(b"NOT HTTP AT ALL\r\n\r\n")
        assert s.recv(100).startswith(b"HTTP/1.1 400")
    assert peers.get(k.port, "/x").status == 502
    bad, refused = wait_lines(log, 2)
    assert (bad["method"], bad["target"], bad["status"]) == ("-", "-", "400"), bad
    assert (refused["method"], refused["target"], refused["status"], refused["bytes_in"]) == ("GET", "/x", "502", "0")


@pytest.mark.timeout(90)
def test_access_log_sockmap_body(env, peer, tmp_path):
    """A close-delimited body carried by the sockmap is logged with path=sockmap and the bytes
    the program redirected."""
    log = tmp_path / "access.log"
    N = 4 * MiB
    p = peer(PacedCloseDelimited(N, interval=0.001))
    k = env.start("sockmap", extra=[f"access-log {log}"])
    with peers.HttpConn(k.port, timeout=60) as c:
        c.request("GET", url(p, "/live?ch=1"))
        r = c.read_response(read_size=MiB)
    assert r.status == 200 and r.body_len == N and r.sha256 == p.payload.sha256
    (ln,) = wait_lines(log, 1)
    assert (ln["method"], ln["status"], ln["path"]) == ("GET", "200", "sockmap"), ln
    assert ln["target"] == url(p, "/live?ch=1"), ln
    assert N < int(ln["bytes_out"]) < N + 1024, ln


@pytest.mark.timeout(60)
def test_access_log_reopened_on_sigusr1_and_reload(kfwd, nginx, tmp_path):
    log = tmp_path / "access.log"
    k = kfwd(
        f"""
        upstream web {nginx.addr}
        route / web
        access-log {log}
        """
    )
    assert peers.get(k.port, "/ok?n=1").status == 200
    wait_lines(log, 1)
    os.rename(log, tmp_path / "access.log.1")  # what logrotate does
    assert peers.get(k.port, "/ok?n=2").status == 200
    k.proc.send_signal(signal.SIGUSR1)
    assert wait_for(lambda: log.exists(), 5), f"SIGUSR1 did not reopen {log}:\n{k.stderr}"
    assert peers.get(k.port, "/ok?n=3").status == 200
    os.rename(log, tmp_path / "access.log.2")
    k.proc.send_signal(signal.SIGHUP)
    assert wait_for(lambda: log.exists(), 5), f"reload did not reopen {log}:\n{k.stderr}"
    assert peers.get(k.port, "/ok?n=4").status == 200
    assert [ln["target"] for ln in wait_lines(tmp_path / "access.log.1", 2)] == ["/ok?n=1", "/ok?n=2"]
    assert [ln["target"] for ln in wait_lines(tmp_path / "access.log.2", 1)] == ["/ok?n=3"]
    assert [ln["target"] for ln in wait_lines(log, 1)] == ["/ok?n=4"]
    assert oct(stat.S_IMODE(log.stat().st_mode)) == oct(0o640)


@pytest.mark.timeout(90)
def test_access_log_reader_that_never_reads_does_not_block(kfwd, nginx, tmp_path):
    """access-log on a FIFO whose reader is stuck: kfwd keeps answering at full speed, lines
    beyond the pipe and kfwd's bounded buffer are dropped and counted."""
    fifo = tmp_path / "access.fifo"
    os.mkfifo(fifo)
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)  # never read
    try:
        k = kfwd(
            f"""
            upstream web {nginx.addr}
            route / web
            access-log {fifo}
            """
        )
        target = "/ok?" + "p" * 900  # ~1 KB lines: 64 KiB pipe + 64 KiB buffer hold ~130
        n = 400
        t0 = time.monotonic()
        with peers.HttpConn(k.port) as c:
            for _ in range(n):
                c.request("GET", target)
                assert c.read_response().status == 200
        took = time.monotonic() - t0
        dropped = k.metric(DROPPED)
        assert 0 < dropped < n, f"{dropped} of {n} lines dropped"
        assert took < 20, f"{n} requests took {took:.1f} s behind a stuck access-log reader"
        # what the pipe took are whole lines, in order
        first = os.read(reader, 1 << 20).decode()
        assert first.count("\n") >= 32 and parse(first[: first.rindex("\n")]), first[:300]
    finally:
        os.close(reader)


@pytest.mark.timeout(60)
def test_syslog_targets(kfwd, nginx, syslog_server, tmp_path):
    srv = syslog_server()
    k = kfwd(
        f"""
        upstream web {nginx.addr}
        route / web
        log-target syslog:{srv.path}
        access-log syslog:{srv.path}
        """
    )
    assert peers.get(k.port, "/ok").status == 200
    assert peers.get(k.port, "/204").status == 204
    assert wait_for(lambda: len(srv.parsed("kfwd-access")) >= 2, 10), srv.messages
    daemon = srv.parsed("kfwd")
    assert any("kfwd running" in m["msg"] for m in daemon), daemon
    for m in daemon + srv.parsed("kfwd-access"):
        assert int(m["pid"]) == k.pid and not m["msg"].endswith("\n"), m
    assert all(int(m["pri"]) & ~7 == LOG_DAEMON for m in daemon), daemon
    access = srv.parsed("kfwd-access")
    assert all(int(m["pri"]) == LOG_DAEMON | LOG_INFO for m in access), access
    lines = [LINE.match(m["msg"]) for m in access]
    assert all(lines), access
    assert [(m["target"], m["status"]) for m in lines] == [("/ok", "200"), ("/204", "204")]
    # stderr keeps only what came before the syslog socket was in use
    assert "kfwd running" not in k.stderr
    # the syslog daemon restarts: kfwd reconnects (at most once a second) and goes on
    srv.stop()
    os.unlink(srv.path)
    srv2 = syslog_server()
    assert srv2.path == srv.path
    time.sleep(1.1)
    assert peers.get(k.port, "/ok?again").status == 200
    assert wait_for(lambda: srv2.parsed("kfwd-access"), 10), f"nothing after the restart:\n{k.stderr}"


@pytest.mark.timeout(60)
def test_syslog_daemon_that_starts_after_kfwd(kfwd, nginx, syslog_server, tmp_path):
    """Boot order on a router: kfwd starts before the syslog daemon. It starts anyway (daemon
    lines on stderr, access lines dropped and counted) and uses the socket once it answers."""
    path = tmp_path / "late"
    k = kfwd(
        f"""
        upstream web {nginx.addr}
        route / web
        log-target syslog:{path}
        access-log syslog:{path}
        """
    )
    assert "kfwd running" in k.stderr and "until it answers" in k.stderr, k.stderr
    assert peers.get(k.port, "/ok?early").status == 200
    assert k.metric(DROPPED) == 1
    srv = syslog_server("late")
    time.sleep(1.1)  # reconnects are tried at most once a second
    assert peers.get(k.port, "/ok?late").status == 200
    assert wait_for(lambda: srv.parsed("kfwd-access"), 10), f"{srv.messages}\n{k.stderr}"
    assert [LINE.match(m["msg"])["target"] for m in srv.parsed("kfwd-access")] == ["/ok?late"]


def test_config_rejects_bad_log_values(tmp_path):
    base = "listen 127.0.0.1:1\nroute / url-embedded\n"
    for bad in (
        "log-target file",
        "log-target syslog:relative/path",
        "access-log relative.log",
        "access-log",
        "access-log syslog:",
    ):
        r = check_t(tmp_path, base + bad + "\n")
        assert r.returncode == 1 and re.search(r"t\.conf:3: ", r.stderr), (bad, r.stderr)
    for good in ("log-target stderr", "log-target syslog", "access-log off", f"access-log {tmp_path}/a.log",
                 "access-log syslog:/dev/log"):
        r = check_t(tmp_path, base + good + "\n")
        assert r.returncode == 0, (good, r.stderr)
