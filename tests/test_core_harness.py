"""Checks of the harness itself (no kfwd needed): the peers, the nginx fixture, the metrics
parser, the Kfwd process wrapper, the per-test timeout and strict mode. If these fail, the
kfwd tests' verdicts mean nothing."""

import json
import os
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import peers
from conftest import Kfwd, parse_metrics
from peers import MiB

HERE = Path(__file__).resolve().parent


def test_metrics_parser():
    m = parse_metrics(
        textwrap.dedent(
            """\
            # HELP kfwd_requests_total Requests.
            # TYPE kfwd_requests_total counter
            kfwd_requests_total 12
            kfwd_responses_total{class="2xx"} 10
            kfwd_responses_total{ class = "5xx" } 2
            kfwd_bytes_spliced_total{direction="response",x="a\\"b"} 1.048576e+06 1700000000000
            kfwd_connections_active 0
            """
        )
    )
    assert m["kfwd_requests_total"] == 12
    assert m['kfwd_responses_total{class="2xx"}'] == 10
    assert m['kfwd_responses_total{class="5xx"}'] == 2
    assert m['kfwd_bytes_spliced_total{direction="response",x="a\\"b"}'] == 1048576
    assert m["kfwd_connections_active"] == 0


def test_nginx_serves_known_files(nginx):
    for f in nginx.files.values():
        for port in (nginx.port, nginx.port_small_sndbuf):
            r = peers.get(port, f.url, read_size=MiB)
            assert r.status == 200 and r.body_len == f.size and r.sha256 == f.sha256, (f, r)
    assert peers.get(nginx.port, "/204").status == 204
    r = peers.get(nginx.port, nginx.files["1k"].url)
    r2 = peers.get(nginx.port, nginx.files["1k"].url, headers={"If-None-Match": r.headers.get("ETag")})
    assert r2.status == 304 and r2.framing == "none"
    r = peers.get(nginx.port, nginx.files["256m"].url, method="HEAD")
    assert r.status == 200 and r.content_length == 256 * MiB and r.body_len == 0


def test_nginx_keepalive_and_pipelining(nginx):
    f = nginx.files["100k"]
    with peers.HttpConn(nginx.port) as c:
        c.send(b"".join(peers.HttpConn.build("GET", f.url) for _ in range(3)) + peers.HttpConn.build("HEAD", f.url))
        for _ in range(3):
            assert c.read_response().sha256 == f.sha256
        assert c.read_response("HEAD").content_length == f.size
        assert not c.wait_eof(0.2)


def test_echo_upload_peer(peer):
    e = peer(peers.EchoUpload(extra_response_headers=[("X-End", "kept")]))
    with peers.HttpConn(e.port) as c:
        c.request("POST", "/x", [("Expect", "100-continue"), ("Content-Length", "5")])
        assert c.read_head()[1] == 100
        c.send(b"hello")
        r = c.read_response(keep_body=True)
        got = json.loads(r.body)
        assert got["sha256"] == "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
        assert got["sent_100"] and r.headers.get("X-End") == "kept"
        c.request("POST", "/y", [("Transfer-Encoding", "chunked")], b"3\r\nabc\r\n0\r\nX-T: 1\r\n\r\n")
        got = json.loads(c.read_response(keep_body=True).body)
        assert got["bytes"] == 3 and got["chunked"] and got["trailers"] == [["X-T", "1"]]
    assert not e.errors


def test_failure_peers(peer):
    m = peer(peers.CloseMidBody(size=MiB))
    r = peers.get(m.port, "/")
    assert not r.complete and r.eof and r.body_len == MiB // 2
    m2 = peer(peers.CloseMidBody(size=MiB, mode="chunked"))
    r = peers.get(m2.port, "/")
    assert not r.complete and r.eof
    assert peers.run_curl(["-o", "/dev/null", f"http://127.0.0.1:{m.port}/"]).returncode == 18
    g = peer(peers.Garbage())
    try:
        peers.get(g.port, "/")
        raise AssertionError("garbage parsed as HTTP")
    except peers.ProtocolError:
        pass
    for mode in ("immediate", "partial"):
        cb = peer(peers.CloseBeforeHead(mode=mode))
        try:
            peers.get(cb.port, "/")
            raise AssertionError("close-before-head produced a response")
        except peers.Closed:
            pass
    n = peer(peers.NeverResponds())
    with peers.HttpConn(n.port, timeout=0.5) as c:
        c.request("GET", "/")
        try:
            c.read_response()
            raise AssertionError("never-responds responded")
        except TimeoutError:
            pass
    hole = peers.FullBacklog()
    assert hole.verified, "a full accept queue no longer makes connects hang on this kernel"
    hole.stop()


def test_stream_peers(peer):
    cd = peer(peers.CloseDelimited(size=3 * MiB))
    r = peers.get(cd.port, "/")
    assert r.framing == "close" and r.complete and r.sha256 == cd.payload.sha256 and cd.closed.is_set()
    ch = peer(peers.ChunkedTrailers())
    r = peers.get(ch.port, "/")
    assert r.complete and r.sha256 == ch.payload_sha256 and r.chunks == ch.chunk_count
    assert r.trailers.get("X-Payload-Sha256") == ch.payload_sha256
    assert ch.chunk_count > 7000 and sum(len(c) == MiB for c in ch.chunks) == 5


def test_counting_sender_plateaus_when_reader_stalls(peer):
    cs = peer(peers.CountingSender(size=64 * MiB))
    with peers.HttpConn(cs.port, rcvbuf=64 * 1024) as c:
        c.request("GET", "/")
        time.sleep(1.0)
        a = cs.total
        time.sleep(1.0)
        assert cs.total == a < 16 * MiB
        r = c.read_response(read_size=MiB)
        assert r.sha256 == cs.payload.sha256 and cs.total == 64 * MiB
    assert peers.get(cs.port, "/bytes/1000").body_len == 1000


FAKE_DAEMON = r"""
import socket, sys, threading, signal, os
port, mport = int(sys.argv[1]), int(sys.argv[2])
def serve(p, body):
    l = socket.socket(); l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    l.bind(("127.0.0.1", p)); l.listen()
    while True:
        c, _ = l.accept(); c.recv(65536)
        c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n" % len(body) + body); c.close()
signal.signal(signal.SIGTERM, lambda *a: os._exit(0))
threading.Thread(target=serve, args=(mport, b'# TYPE x counter\nkfwd_requests_total 3\nkfwd_bytes_spliced_total{direction="response"} 7\n'), daemon=True).start()
sys.stderr.write("fake up\n"); sys.stderr.flush()
serve(port, b"hi")
"""


def test_kfwd_wrapper_with_fake_daemon(tmp_path):
    script = tmp_path / "fake.py"
    script.write_text(FAKE_DAEMON)
    port, mport = peers.free_port(), peers.free_port()
    k = Kfwd([sys.executable, str(script), str(port), str(mport)], tmp_path / "fake.log", port, mport)
    k.wait_ready()
    m = k.metrics()
    assert m["kfwd_requests_total"] == 3 and m[peers.SPLICED_RESP] == 7
    assert k.rss_kb() > 1000
    assert "fake up" in k.stderr
    assert k.stop() == (0, False)


PROBE_TESTS = """
import time, pytest

def test_passes():
    pass

def test_skips():
    pytest.skip("deliberately skipped")

@pytest.mark.timeout(1)
def test_hangs():
    time.sleep(30)
"""


def test_timeout_and_strict_mode(tmp_path):
    d = tmp_path / "probe"
    d.mkdir()
    shutil.copy(HERE / "conftest.py", d / "conftest.py")
    shutil.copy(HERE / "peers.py", d / "peers.py")
    shutil.copy(HERE / "peers_http.py", d / "peers_http.py")
    (d / "test_probe.py").write_text(PROBE_TESTS)

    def run(strict):
        env = dict(os.environ)
        env.pop("KFWD_TEST_STRICT", None)
        if strict:
            env["KFWD_TEST_STRICT"] = "1"
        t0 = time.monotonic()
        res = subprocess.run(
            ["/usr/bin/pytest", "-q", "-p", "no:cacheprovider", str(d)],
            capture_output=True, text=True, env=env, timeout=60, cwd=d,
        )
        return res, time.monotonic() - t0

    res, dt = run(strict=False)
    assert "1 failed, 1 passed, 1 skipped" in res.stdout, res.stdout
    assert "time limit of 1 s" in res.stdout, res.stdout
    assert dt < 20
    res, _ = run(strict=True)
    assert "2 failed, 1 passed" in res.stdout, res.stdout
    assert "deliberately skipped" in res.stdout
    assert res.returncode == 1
