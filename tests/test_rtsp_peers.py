"""Harness checks of the RTSP test peers (tests/peers_rtsp.py), without kfwd: gst-rtsp-server
serves streams ffprobe finds, and the scripted server answers, authenticates, redirects and
sends frames and server requests exactly as told. If these fail, RTSP tests through kfwd mean
nothing."""

import hashlib
import json
import subprocess
import time

import pytest

import peers
import peers_rtsp as R

FFPROBE_TIMEOUT = 40


def ffprobe_streams(url):
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-rtsp_transport", "tcp", "-show_streams", "-of", "json", url],
        capture_output=True, text=True, timeout=FFPROBE_TIMEOUT)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)["streams"]


@pytest.mark.timeout(90)
def test_harness_gst_rtsp_server_ts_and_h264_mounts():
    with R.GstRtspServer(peers.free_port(), timeout=10) as gst:
        ts = ffprobe_streams(gst.url("/ts"))
        assert sorted(s["codec_name"] for s in ts) == ["aac", "h264"]
        h264 = ffprobe_streams(gst.url("/h264"))
        assert [s["codec_name"] for s in h264] == ["h264"]
        # A raw DESCRIBE: MPEG-TS over RTP (payload type 33) on /ts, session timeout as asked.
        with R.RtspConn(gst.port) as c:
            d = c.call("DESCRIBE", gst.url("/ts"), [("Accept", "application/sdp")])
            assert d.status == 200 and b"MP2T" in d.body
            s = c.call("SETUP", d.header("Content-Base").rstrip("/") + "/stream=0",
                       [("Transport", "RTP/AVP/TCP;unicast;interleaved=0-1")])
            assert s.status == 200 and s.header("Session").endswith(";timeout=10")


@pytest.mark.timeout(60)
def test_harness_gst_rtsp_server_8mbit_rate():
    """rate="8M" gives ~8 Mbit/s of interleaved data in ~1332-byte frames (the bench's stream)."""
    with R.GstRtspServer(peers.free_port(), rate="8M") as gst, R.RtspConn(gst.port) as c:
        d = c.call("DESCRIBE", gst.url("/ts"))
        s = c.call("SETUP", d.header("Content-Base").rstrip("/") + "/stream=0",
                   [("Transport", "RTP/AVP/TCP;unicast;interleaved=0-1")])
        session = s.header("Session").split(";")[0]
        frames = []
        c.call("PLAY", gst.url("/ts"), [("Session", session)], frames=frames)
        t0, nbytes, sizes = time.monotonic(), 0, []
        while time.monotonic() - t0 < 3.0:
            item = c.next()
            if isinstance(item, tuple) and item[1] == 0:
                nbytes += len(item[2])
                sizes.append(len(item[2]))
        mbit = nbytes * 8 / (time.monotonic() - t0) / 1e6
        assert 5.0 < mbit < 12.0, mbit
        assert max(set(sizes), key=sizes.count) == 1328  # 12-byte RTP header + 7 TS packets


def test_harness_scripted_server_options_raw():
    with R.ScriptedRtspServer() as srv, R.RtspConn(srv.port) as c:
        c.send(b"OPTIONS * RTSP/1.0\r\nCSeq: 41\r\nUser-Agent: raw\r\n\r\n")
        r = c.next()
        assert r.is_response and r.status == 200 and r.cseq == "41"
        assert "GET_PARAMETER" in r.header("Public")
        assert [(q.method, q.url, q.header("User-Agent")) for q in srv.requests] == [("OPTIONS", "*", "raw")]


def test_harness_scripted_server_frames_split_and_server_requests():
    payloads = [bytes((i * 31 + k) & 0xFF for k in range(1328)) for i in range(50)]
    script = []
    for i, p in enumerate(payloads):
        script.append(("$", 0, p))
        if i == 10:
            script.append(("request", "GET_PARAMETER", "rtsp://x/stream", [("Session", "12345678")], b""))
        if i == 20:
            script.append(("request", "ANNOUNCE", "rtsp://x/stream", [("Content-Type", "application/sdp")],
                           R.sdp("rtsp://x/stream")))
        if i == 30:
            script.append(("$", 1, b"\x80\xc8\x00\x06" + b"r" * 24))
    script.append(("request", "REDIRECT", "rtsp://x/stream", [("Location", "rtsp://y/stream")], b""))
    # Cut at 1, 2, 3 and 7 bytes then big pieces: every kind of item straddles a cut somewhere.
    with R.ScriptedRtspServer(script=script, chunks=[1, 2, 3, 7, 1500, 4001], gap=0) as srv, \
            R.RtspConn(srv.port) as c:
        d = c.call("DESCRIBE", srv.url("/stream"))
        assert d.status == 200 and b"a=control:" + srv.url("/stream").encode() + b"/trackID=0" in d.body
        s = c.call("SETUP", srv.url("/stream/trackID=0"), [("Transport", "RTP/AVP/TCP;unicast;interleaved=0-1")])
        assert s.status == 200 and s.header("Session") == "12345678"
        frames, server_reqs = [], []
        p = c.call("PLAY", srv.url("/stream"), [("Session", "12345678")])
        assert p.header("RTP-Info").startswith("url=" + srv.url("/stream"))
        while len(server_reqs) < 3:
            item = c.next()
            (frames if isinstance(item, tuple) else server_reqs).append(item)
        got = b"".join(f[2] for f in frames if f[1] == 0)
        assert hashlib.sha256(got).digest() == hashlib.sha256(b"".join(payloads)).digest()
        assert [f[2][:4] for f in frames if f[1] == 1] == [b"\x80\xc8\x00\x06"]
        assert [r.method for r in server_reqs] == ["GET_PARAMETER", "ANNOUNCE", "REDIRECT"]
        assert server_reqs[1].body.startswith(b"v=0")
        # The client answers a server request; the server logs the answer.
        c.send(R.message("RTSP/1.0 200 OK", [("CSeq", server_reqs[0].cseq)]))
        c.call("TEARDOWN", srv.url("/stream"), [("Session", "12345678")])
        assert [r.cseq for r in srv.responses] == [server_reqs[0].cseq]
        assert [q.method for q in srv.requests] == ["DESCRIBE", "SETUP", "PLAY", "TEARDOWN"]


@pytest.mark.parametrize("algorithm,qop", [("MD5", "auth"), ("MD5", None), ("MD5-sess", "auth")])
def test_harness_scripted_server_digest_auth(algorithm, qop):
    with R.ScriptedRtspServer(auth="digest", user="cam", password="s3cret", algorithm=algorithm,
                              qop=qop) as srv, R.RtspConn(srv.port) as c:
        url = srv.url("/stream")
        r = c.call("DESCRIBE", url)
        assert r.status == 401
        scheme, ch = R.parse_auth_params(r.header("WWW-Authenticate"))
        assert scheme == "digest" and ch["nonce"] == R.DEFAULT_NONCE
        resp = R.digest_response("cam", "wrong", ch["realm"], ch["nonce"], "DESCRIBE", url, qop, "00000001",
                                 "abc", algorithm)
        auth = (f'Digest username="cam", realm="{ch["realm"]}", nonce="{ch["nonce"]}", uri="{url}", '
                f'response="{resp}"' + (f', qop={qop}, nc=00000001, cnonce="abc"' if qop else ""))
        assert c.call("DESCRIBE", url, [("Authorization", auth)]).status == 401
        resp = R.digest_response("cam", "s3cret", ch["realm"], ch["nonce"], "DESCRIBE", url, qop, "00000001",
                                 "abc", algorithm)
        auth = (f'Digest username="cam", realm="{ch["realm"]}", nonce="{ch["nonce"]}", uri="{url}", '
                f'response="{resp}"' + (f', qop={qop}, nc=00000001, cnonce="abc"' if qop else ""))
        assert c.call("DESCRIBE", url, [("Authorization", auth)]).status == 200


def test_harness_scripted_server_basic_redirect_461_big_sdp():
    with R.ScriptedRtspServer(auth="basic", user="Aladdin", password="open sesame") as srv, \
            R.RtspConn(srv.port) as c:
        assert c.call("DESCRIBE", srv.url("/s")).status == 401
        ok = c.call("DESCRIBE", srv.url("/s"), [("Authorization", "Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ==")])
        assert ok.status == 200
    with R.ScriptedRtspServer(redirects={"/old": (302, "rtsp://127.0.0.1:1/new")}, sdp_pad=200 * 1024,
                              tracks=3) as srv, R.RtspConn(srv.port) as c:
        r = c.call("DESCRIBE", srv.url("/old/x"))
        assert r.status == 302 and r.header("Location") == "rtsp://127.0.0.1:1/new"
        big = c.call("DESCRIBE", srv.url("/cam"))
        assert len(big.body) >= 200 * 1024 and int(big.header("Content-Length")) == len(big.body)
        assert big.body.count(b"a=control:" + srv.url("/cam").encode() + b"/trackID=") == 3
        udp = c.call("SETUP", srv.url("/cam/trackID=0"), [("Transport", "RTP/AVP;unicast;client_port=5000-5001")])
        assert udp.status == 461
