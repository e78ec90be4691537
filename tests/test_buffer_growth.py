"""Buffers that grow under max-memory (user/flow_budget.c): an RTSP stream, an HTTP->RTSP
gateway stream and a body with a TLS endpoint are charged like any long body, so when the client
keeps up their sockets grow from the budget floor's sizes to `upstream-rcvbuf` (the server's TCP
window with it) and `client-sndbuf`. Held at the floor's buffers for its whole life, one RTSP
stream ran at a tenth of the speed for twelve times the CPU, a TLS download at a fifth for five
times the CPU (a ~16 KiB receive buffer toward the server)."""

import hashlib

import pytest

import peers
import peers_rtsp as R
from peers_rtsp import HttpStream, MediaServer, ScriptedRtspServer, payload, rtp, ts_packets
from peers_tls import TlsHttpConn, tls_certs, tls_listen  # noqa: F401 (fixture)

from peers import KiB, MiB
RCVBUF = 256 * KiB
SNDBUF = 256 * KiB
BUFFERS = f"max-memory 64m\nupstream-rcvbuf {RCVBUF // KiB}k\nclient-sndbuf {SNDBUF // KiB}k"
TCP = ("Transport", "RTP/AVP/TCP;unicast;interleaved=0-1")
FRAMES = 20000  # ~27 MB: many times what doubling from the floor needs to reach the full sizes


def assert_grown(k, server_port, client_port):
    """kfwd's socket toward the server has the full receive buffer and its socket toward the
    client the full send buffer (the kernel doubles both, socket(7))."""
    up = peers.socket_buffers(k.pid, server_port)
    down = peers.socket_buffers(k.pid, client_port)
    assert up and down, f"kfwd's sockets not found: {up} {down}"
    assert up[0] >= 2 * RCVBUF, f"receive buffer toward the server stayed at {up[0]} bytes"
    assert down[1] >= 2 * SNDBUF, f"send buffer toward the player stayed at {down[1]} bytes"


@pytest.mark.timeout(60)
def test_rtsp_stream_that_keeps_up_grows_its_socket_buffers(kfwd, tmp_path):
    with MediaServer(FRAMES) as srv:
        port = peers.free_port()
        k = kfwd(R.kfwd_rtsp_config(port, tmp_path / "ctl",
                                    f"upstream m 127.0.0.1:{srv.port}\nroute /cam m strip-prefix",
                                    BUFFERS))
        base = f"rtsp://127.0.0.1:{port}/cam"
        c = R.RtspConn(port, timeout=20)
        c.call("SETUP", base + "/s/trackID=0", [TCP])
        c.call("PLAY", base + "/s", [("Session", "12345678")])
        want = hashlib.sha256(b"".join(payload(i) for i in range(FRAMES - 100))).hexdigest()
        got = hashlib.sha256()
        for _ in range(FRAMES - 100):
            item = c.next()
            assert isinstance(item, tuple) and item[1] == 0
            got.update(item[2])
        assert got.hexdigest() == want
        assert_grown(k, srv.port, c.sock.getsockname()[1])
        c.close()


@pytest.mark.timeout(60)
def test_gateway_stream_that_keeps_up_grows_its_socket_buffers(kfwd):
    frames, ts = [], []
    for i in range(FRAMES):
        packets = ts_packets(7, i)
        frames.append(R.frame(0, rtp(i, packets)))
        ts.append(packets)
    ts = b"".join(ts)
    with ScriptedRtspServer(media="ts", script=[b"".join(frames)]) as srv:
        k = kfwd(f"route /rtsp/ rtsp-gateway\nallow 127.0.0.0/8\n{BUFFERS}")
        with HttpStream(k.port, f"/rtsp/127.0.0.1:{srv.port}/live", timeout=20) as c:
            assert c.read_head() == 200
            head = len(ts) - 100 * 7 * 188
            assert hashlib.sha256(c.read(head)).digest() == hashlib.sha256(ts[:head]).digest()
            assert_grown(k, srv.port, c.sock.getsockname()[1])


@pytest.mark.timeout(60)
def test_tls_download_that_keeps_up_grows_its_socket_buffers(kfwd, peer, tls_certs):
    p = peer(peers.CountingSender(size=64 * MiB))
    port = peers.free_port()
    k = kfwd(f"{tls_listen(tls_certs, port)}\nupstream o {p.addr}\nroute / o\n{BUFFERS}")
    with TlsHttpConn(tls_certs, port, timeout=30) as c:
        c.request("GET", "/body")
        got = 0
        while got < 32 * MiB:
            data = c.sock.recv(MiB)
            assert data, f"the body ended after {got} bytes"
            got += len(data)
        assert_grown(k, p.port, c.sock.getsockname()[1])
