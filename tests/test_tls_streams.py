"""Bodies over TLS, end to end: 256 MiB byte-exact each way (TLS on both legs), a stalled TLS
client pausing the origin with kfwd's memory bounded, a TLS origin cut mid-body, and a
WebSocket tunnel on a TLS listener."""

import hashlib
import json
import ssl
import subprocess
import time

import pytest

import peers
import peers_tunnel as pt
from conftest import SAN
from peers import KiB, MiB, Payload
from peers_tls import NginxTls, TlsHttpConn, tls_certs, tls_listen, tls_peer  # noqa: F401 (fixture)

PAUSED = "kfwd_paused_flows"
TLS_COPY_BUFFER = 64 * KiB  # tls-copy-buffer-size's default


def unchanged_for(value, seconds):
    """True when value() is the same before and after @seconds."""
    before = value()
    time.sleep(seconds)
    return value() == before


def curl_sha256(args, timeout=90):
    """Run curl with the body on stdout; (exit status, sha256 hex, bytes, stderr)."""
    p = subprocess.Popen(["curl", "-sS", "--http1.1", "--noproxy", "*", *args], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE)
    h, n = hashlib.sha256(), 0
    while True:
        d = p.stdout.read(MiB)
        if not d:
            break
        h.update(d)
        n += len(d)
    err = p.stderr.read()
    return p.wait(timeout), h.hexdigest(), n, err


@pytest.mark.timeout(120)
def test_256mib_download_over_tls_both_legs(kfwd, tmp_path, files_dir, tls_certs):
    """curl --cacert → kfwd (TLS listener) → nginx ssl origin (verified): 256 MiB byte-exact."""
    cert, key = tls_certs.pair("localhost")
    origin = NginxTls(tmp_path / "o", files_dir["256m"].path.parent, cert, key)
    try:
        port = peers.free_port()
        k = kfwd(f"{tls_listen(tls_certs, port)}\nupstream o {origin.addr} tls ca={tls_certs.ca}\nroute / o\n")
        f = files_dir["256m"]
        rc, sha, n, err = curl_sha256(["--cacert", str(tls_certs.ca), f"https://localhost:{port}{f.url}",
                                       "--resolve", f"localhost:{port}:127.0.0.1"])
        assert rc == 0, err
        assert n == f.size and sha == f.sha256
        m = k.metrics()
        assert m['kfwd_bytes_copied_total{direction="response"}'] >= f.size  # no kTLS here: copied
    finally:
        origin.stop()


@pytest.mark.timeout(120)
def test_256mib_upload_over_tls_both_legs(kfwd, peer, files_dir, tls_certs):
    """curl -T over TLS → kfwd → a TLS origin that hashes what it receives: 256 MiB byte-exact."""
    cert, key = tls_certs.pair("localhost")
    echo = peer(tls_peer(peers.EchoUpload(), cert, key))
    port = peers.free_port()
    kfwd(f"{tls_listen(tls_certs, port)}\nupstream e {echo.addr} tls ca={tls_certs.ca}\nroute / e\n")
    f = files_dir["256m"]
    r = subprocess.run(["curl", "-sS", "--http1.1", "--noproxy", "*", "--cacert", str(tls_certs.ca),
                        "-T", str(f.path), "-H", "Expect:", f"https://127.0.0.1:{port}/up"],
                       capture_output=True, timeout=100)
    assert r.returncode == 0, r.stderr
    got = json.loads(r.stdout)
    assert got["bytes"] == f.size and got["sha256"] == f.sha256, got
    assert not echo.errors, echo.errors


@pytest.mark.timeout(60)
def test_stalled_tls_client_pauses_origin_memory_bounded(kfwd, peer, tls_certs):
    """A TLS client that stops reading: the origin's progress stops far below the body size,
    the flow is paused holding at most tls-copy-buffer-size, kfwd's RSS stays bounded; then
    the client drains every byte."""
    p = peer(peers.CountingSender(size=64 * MiB))
    port = peers.free_port()
    k = kfwd(f"{tls_listen(tls_certs, port)}\nupstream o {p.addr}\nroute / o\n")
    with TlsHttpConn(tls_certs, port) as warm:  # warm-up: allocator, OpenSSL's tables
        warm.request("GET", "/bytes/1024")
        assert warm.read_response().status == 200
    rss0 = k.rss_kb()
    total0 = p.total
    with TlsHttpConn(tls_certs, port, rcvbuf=64 * KiB, timeout=30) as c:
        c.request("GET", "/stall")
        assert peers.wait_for(lambda: (k.metric(PAUSED) or 0) >= 1, 10), "the flow never paused"
        # paused: the origin only fills the socket buffers it still had room in, then stops
        assert peers.wait_for(lambda: unchanged_for(lambda: p.total, 0.5), 10), "the origin never stopped"
        at_pause = p.total - total0
        time.sleep(1.0)  # the stall itself: nothing may move in it
        assert p.total - total0 == at_pause, f"origin progressed during the stall: {at_pause} -> {p.total - total0}"
        assert at_pause < 16 * MiB, f"origin wrote {at_pause} of {p.payload.size} bytes to a stalled client"
        grown = k.rss_kb() - rss0
        print(f"stalled TLS client: origin wrote {at_pause} bytes, kfwd RSS +{grown} kB")
        assert grown < 512 * SAN, f"kfwd RSS grew {grown} kB for one stalled TLS client"
        # the flow's bound is tls-copy-buffer-size (a few records), not the pipe's megabyte
        resp = [x for x in k.ctl_json("conn", "list") if x["client"].endswith(f":{c.sock.getsockname()[1]}")][0]
        assert resp["response"]["high_water"] == TLS_COPY_BUFFER, resp
        assert resp["response"]["queued"] <= TLS_COPY_BUFFER, resp
        r = c.read_response(read_size=MiB)
        assert r.status == 200 and r.complete and r.body_len == p.payload.size, r
        assert r.sha256 == p.payload.sha256
    assert peers.wait_for(lambda: k.metric(PAUSED) == 0, 5), "paused_flows stayed > 0 after the drain"


@pytest.mark.parametrize("mode", ["length", "chunked"])
def test_tls_origin_cut_mid_body_is_a_failure(kfwd, peer, tls_certs, mode):
    """The TLS origin's connection dies mid-body (no close_notify): the client sees a failed
    response (short of its Content-Length / no last chunk, then the connection closes), never a
    short well-formed one; kfwd lives on and serves the next request."""
    cert, key = tls_certs.pair("localhost")
    cut = peer(tls_peer(peers.CloseMidBody(size=4 * MiB, mode=mode), cert, key))
    ok = peer(tls_peer(peers.EchoUpload(), cert, key))
    k = kfwd(f"upstream c {cut.addr} tls ca={tls_certs.ca}\nupstream e {ok.addr} tls ca={tls_certs.ca}\n"
             f"route /cut c\nroute / e\n")
    with peers.HttpConn(k.port, timeout=20) as c:
        c.request("GET", "/cut")
        r = c.read_response(read_size=MiB)
        assert r.status == 200
        assert not r.complete, r
        assert r.body_len <= cut.payload.size // 2 + 100, r  # the half, and a cut chunk's start
        assert r.eof
    assert cut.closed.is_set()
    r = peers.get(k.port, "/after")
    assert r.status == 200 and r.complete


@pytest.mark.timeout(60)
def test_tls_origin_cut_close_delimited_is_not_a_clean_end(kfwd, peer, tls_certs):
    """A close-delimited body from a TLS origin that ends without close_notify may have been
    truncated by anyone on the path: kfwd must not end the client's body with a clean close
    (it resets the client connection instead)."""

    class CloseDelimitedCut(peers.CloseDelimited):
        def handle(self, conn):
            req = conn.read_request()
            if req is None:
                return
            conn.send(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n")
            for piece in self.payload.pieces(64 * KiB):
                conn.send(piece)
            conn.sock.shutdown(2)  # TCP FIN without close_notify

    cert, key = tls_certs.pair("localhost")
    origin = peer(tls_peer(CloseDelimitedCut(size=MiB), cert, key))
    k = kfwd(f"upstream c {origin.addr} tls ca={tls_certs.ca}\nroute / c\n")
    with peers.HttpConn(k.port, timeout=20) as c:
        c.request("GET", "/x")
        r = c.read_response(read_size=MiB)
    assert r.status == 200 and r.framing == "close"
    assert not r.complete, f"a truncatable TLS body ended cleanly: {r}"


@pytest.mark.timeout(90)
def test_websocket_over_tls_listener(kfwd, tls_certs):
    """python3-websockets with ssl (wss://) through a TLS listener to a plain WebSocket origin:
    16 MiB each way at once, byte-exact, clean close."""
    N = 16 * MiB
    ws = pt.WsServerProcess(N, seed=41)
    try:
        port = peers.free_port()
        k = kfwd(f"{tls_listen(tls_certs, port)}\nroute /http/ url-embedded\nallow 127.0.0.1\n")
        m0 = k.metrics()
        ctx = ssl.create_default_context(cafile=str(tls_certs.ca))
        r = pt.ws_client(f"wss://localhost:{port}/http/127.0.0.1:{ws.port}/ws", Payload(N, seed=42), N, 60,
                         ssl_context=ctx)
        srv = ws.result(30)
        assert r["sent"] == N and r["received"] == N, r
        assert r["sha256"] == Payload(N, seed=41).sha256, "server->client bytes corrupted"
        assert r["close_code"] == 1000, r
        assert srv and srv["error"] is None, (srv, k.stderr[-2000:])
        assert srv["received"] == N and srv["sha256"] == Payload(N, seed=42).sha256, srv
        assert peers.mdelta(k.metrics(), m0, "kfwd_tunnels_total") == 1
    finally:
        ws.stop()
