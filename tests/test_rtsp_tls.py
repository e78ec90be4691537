"""RTSP over TLS on the client side (`listen ADDR:PORT rtsp tls cert=... key=...`, rtsps): the
protocol module reads and writes through the session's transport, so messages and interleaved
frames pass as over TCP."""

import hashlib
import json
import ssl
import subprocess

import pytest

import peers
import peers_rtsp as R
from peers_tls import tls_certs  # noqa: F401 (fixture)

TCP = ("Transport", "RTP/AVP/TCP;unicast;interleaved=0-1")


def test_rtsps_client_side_messages_and_frames(kfwd, tmp_path, tls_certs):
    payloads = [bytes((i * 13 + j) & 0xFF for j in range(1328)) for i in range(300)]
    cert, key = tls_certs.pair("localhost")
    with R.ScriptedRtspServer(script=[("$", 0, p) for p in payloads], chunks=[3, 1500, 9000], gap=0) as srv:
        port = peers.free_port()
        routes = f"upstream cams 127.0.0.1:{srv.port}\nroute /cam cams strip-prefix"
        conf = R.kfwd_rtsp_config(port, tmp_path / "ctl", routes).replace(
            f"listen 127.0.0.1:{port} rtsp", f"listen 127.0.0.1:{port} rtsp tls cert={cert} key={key}")
        k = kfwd(conf)
        ctx = ssl.create_default_context(cafile=str(tls_certs.ca))
        with R.RtspConn(port) as c:
            c.sock = ctx.wrap_socket(c.sock, server_hostname="localhost")
            c.reader = R.Reader(c.sock)
            base = f"rtsps://127.0.0.1:{port}/cam"
            d = c.call("DESCRIBE", base + "/s")
            assert d.status == 200 and d.header("Content-Base") == base + "/s/"
            assert d.body.count(b"a=control:" + base.encode() + b"/s/trackID=0") == 1
            assert c.call("SETUP", base + "/s/trackID=0", [TCP]).status == 200
            frames = []
            p = c.call("PLAY", base + "/s", [("Session", "12345678")], frames=frames)
            assert p.header("RTP-Info").startswith(f"url={base}/s/trackID=0;")
            while len(frames) < len(payloads):
                frames.append(c.next())
            got = hashlib.sha256(b"".join(f[2] for f in frames)).hexdigest()
            assert got == hashlib.sha256(b"".join(payloads)).hexdigest()
        assert k.metric("kfwd_rtsp_frames_total") == len(payloads)
        # The server was asked rtsp:// URLs.
        assert [q.url for q in srv.requests][:3] == [srv.url("/s"), srv.url("/s/trackID=0"), srv.url("/s")]


@pytest.mark.timeout(60)
def test_rtsps_ffprobe_through_kfwd_to_gst(kfwd, tmp_path, tls_certs):
    cert, key = tls_certs.pair("localhost")
    with R.GstRtspServer(peers.free_port(), timeout=10) as gst:
        port = peers.free_port()
        k = kfwd(f"listen 127.0.0.1:{port} rtsp tls cert={cert} key={key}\n"
                 f"upstream g 127.0.0.1:{gst.port}\nroute /cam g strip-prefix\n")
        p = subprocess.run(["ffprobe", "-v", "error", "-rtsp_transport", "tcp", "-show_streams", "-of", "json",
                            f"rtsps://127.0.0.1:{port}/cam/ts"], capture_output=True, text=True, timeout=40)
        assert p.returncode == 0, p.stderr
        assert sorted(s["codec_name"] for s in json.loads(p.stdout)["streams"]) == ["aac", "h264"]
        assert k.metric("kfwd_rtsp_frames_total") > 0
