"""The HTTP->RTSP gateway (`route /rtsp/ rtsp-gateway`) against the scripted RTSP server:
the exact request sequence, URL forms, SETUP URL resolution, auth, redirects, de-framing, HEAD,
errors and timeouts, TEARDOWN when the client leaves."""

import hashlib
import json
import signal
import subprocess
import time

import pytest

import peers
from conftest import ROOT
from peers_rtsp import HttpStream, ScriptedRtspServer, rtp, ts_packets

KFWDCTL = ROOT / "build" / "kfwdctl"
UA = "kfwd-test-agent/1.0 (gateway)"


def gateway_config(extra=""):
    return f"""
        route /rtsp/ rtsp-gateway
        allow 127.0.0.0/8
        rtsp-user-agent {UA}
        rtsp-handshake-timeout 2s
        rtsp-first-media-timeout 1s
        {extra}
    """


def media_script(n_frames, seed=0, **rtp_kw):
    """RTP/TS frames on channel 0 (7 TS packets each) with RTCP on channel 1 between them;
    returns (script, the TS bytes in order)."""
    script, ts = [], b""
    for i in range(n_frames):
        payload = ts_packets(7, seed * 100000 + i)
        script.append(("$", 0, rtp(i, payload, **rtp_kw)))
        if i % 10 == 0:
            script.append(("$", 1, b"\x80\xc8\x00\x06" + b"\x00" * 24))  # an RTCP sender report
        ts += payload
    return script, ts


def methods(server):
    return [m.method for m in server.requests]


def test_gateway_request_sequence_headers_and_ts_bytes(kfwd):
    script, ts = media_script(200)
    with ScriptedRtspServer(media="ts", script=script, chunks=[1000, 3, 5000], gap=0) as srv:
        k = kfwd(gateway_config())
        query = "token=a%20b&t=${(b)yyyyMMddHHmmss}&u={utc}"
        with HttpStream(k.port, f"/rtsp/127.0.0.1:{srv.port}/live/ch1?{query}") as c:
            assert c.read_head() == 200
            assert c.headers["content-type"] == "video/mp2t"
            assert "content-length" not in c.headers
            body = c.read(len(ts))
            assert hashlib.sha256(body).hexdigest() == hashlib.sha256(ts).hexdigest()
        assert peers.wait_for(lambda: "TEARDOWN" in methods(srv), 5), methods(srv)
    reqs = srv.requests
    assert methods(srv)[:4] == ["OPTIONS", "DESCRIBE", "SETUP", "PLAY"]
    url = f"rtsp://127.0.0.1:{srv.port}/live/ch1?{query}"
    assert [r.url for r in reqs[:2]] == [url, url]
    assert reqs[3].url == url  # PLAY: the original URL with its query
    assert reqs[2].url == f"rtsp://127.0.0.1:{srv.port}/live/ch1?{query}/trackID=0"
    assert [int(r.cseq) for r in reqs] == list(range(1, len(reqs) + 1))
    assert all(r.header("User-Agent") == UA for r in reqs)
    assert reqs[1].header("Accept") == "application/sdp"
    assert reqs[2].header("Transport") == ("MP2T/RTP/TCP;unicast;interleaved=0-1,"
                                           "MP2T/TCP;unicast;interleaved=0-1,"
                                           "RTP/AVP/TCP;unicast;interleaved=0-1")
    assert reqs[2].header("Session") is None
    assert len(reqs[2].header("Transport").split(",")) == 3
    assert all(r.header("Session") == "12345678" for r in reqs[3:])
    assert all(len({r.conn for r in reqs}) == 1 for _ in [0])
    m = k.metrics()
    assert m['kfwd_rtsp_gateway_handshakes_total{outcome="ok"}'] == 1
    assert m["kfwd_rtsp_gateway_frames_total"] == 200


def test_gateway_session_from_options_echoed_everywhere(kfwd):
    """Also: the pasted rtsp:// form, and a route's user-agent= over rtsp-user-agent."""
    script, ts = media_script(5)

    def handler(server, conn, req):
        if req.method == "OPTIONS":
            return (f"RTSP/1.0 200 OK\r\nCSeq: {req.cseq}\r\nSession: early77;timeout=30\r\n"
                    "Public: OPTIONS, DESCRIBE, SETUP, PLAY, TEARDOWN\r\n\r\n").encode()
        return None

    with ScriptedRtspServer(media="ts", script=script, handler=handler) as srv:
        k = kfwd(gateway_config().replace("rtsp-gateway", "rtsp-gateway user-agent=RouteAgent/2"))
        with HttpStream(k.port, f"/rtsp/rtsp://127.0.0.1:{srv.port}/x") as c:
            assert c.read_head() == 200
            assert c.read(len(ts)) == ts
    assert [r.header("Session") for r in srv.requests[1:4]] == ["early77"] * 3
    assert srv.requests[0].url == f"rtsp://127.0.0.1:{srv.port}/x"
    assert {r.header("User-Agent") for r in srv.requests} == {"RouteAgent/2"}


@pytest.mark.parametrize("base, controls, want", [
    ("", ["trackID=0"], "/a/trackID=0"),                    # DESCRIBE URL /a/b, no Content-Base
    ("rtsp://127.0.0.1:{port}/base/", ["t1"], "/base/t1"),
    ("rtsp://127.0.0.1:{port}/base/x", ["../y/t1"], "/y/t1"),
    ("rtsp://127.0.0.1:{port}/base/", ["*"], "/a/b?q=1"),
    ("rtsp://127.0.0.1:{port}/base/", [None], "/a/b?q=1"),
    ("rtsp://127.0.0.1:{port}/base/", ["rtsp://127.0.0.1:{port}/abs/track"], "/abs/track"),
    ("rtsp://127.0.0.1:{port}/base/", ["/root/t"], "/root/t"),
])
def test_gateway_setup_url_resolution(kfwd, base, controls, want):
    script, _ = media_script(3)
    srv = ScriptedRtspServer(media="ts", script=script, content_base="")
    with srv:
        srv.content_base = base.format(port=srv.port)
        srv.controls = [c.format(port=srv.port) if c else c for c in controls]
        k = kfwd(gateway_config())
        with HttpStream(k.port, f"/rtsp/127.0.0.1:{srv.port}/a/b?q=1") as c:
            assert c.read_head() == 200
    setup = [r for r in srv.requests if r.method == "SETUP"][0]
    assert setup.url == f"rtsp://127.0.0.1:{srv.port}{want}"


@pytest.mark.parametrize("auth", ["basic", "digest"])
def test_gateway_auth_from_url_credentials(kfwd, auth):
    script, ts = media_script(10)
    with ScriptedRtspServer(media="ts", script=script, auth=auth, user="us er",
                            password="p@ss") as srv:
        k = kfwd(gateway_config())
        with HttpStream(k.port, f"/rtsp/us%20er:p%40ss@127.0.0.1:{srv.port}/cam") as c:
            assert c.read_head() == 200
            assert c.read(len(ts)) == ts
        # No credentials: the server's 401 reaches the client.
        with HttpStream(k.port, f"/rtsp/127.0.0.1:{srv.port}/cam") as c:
            assert c.read_head() == 401
    # Credentials never appear in a URL sent upstream.
    assert all("p@ss" not in r.url and "us er" not in r.url for r in srv.requests)
    # One 401 per step at most: DESCRIBE was answered 401 once, then retried with credentials.
    describes = [r for r in srv.requests if r.method == "DESCRIBE"]
    assert describes[0].header("Authorization") is None
    assert describes[1].header("Authorization", "").lower().startswith(auth)


def test_gateway_wrong_password_is_401_after_one_retry(kfwd):
    with ScriptedRtspServer(media="ts", auth="digest") as srv:
        k = kfwd(gateway_config())
        with HttpStream(k.port, f"/rtsp/user:wrong@127.0.0.1:{srv.port}/cam") as c:
            assert c.read_head() == 401
        assert methods(srv).count("DESCRIBE") == 2


def test_gateway_redirect_chain_and_sixth_refused(kfwd):
    script, ts = media_script(5)
    with ScriptedRtspServer(media="ts", script=script) as srv:
        hops = {f"/r{i}": (302, srv.url(f"/r{i + 1}")) for i in range(4)}
        hops["/r4"] = (301, "../r5")  # relative: resolved against the URL that answered
        srv.redirects = hops
        k = kfwd(gateway_config())
        with HttpStream(k.port, f"/rtsp/127.0.0.1:{srv.port}/r0") as c:
            assert c.read_head() == 200
            assert c.read(len(ts)) == ts
        assert [r.url for r in srv.requests if r.method == "PLAY"] == [srv.url("/r5")]
        srv.redirects = {f"/s{i}": (302, srv.url(f"/s{i + 1}")) for i in range(6)}
        with HttpStream(k.port, f"/rtsp/127.0.0.1:{srv.port}/s0") as c:
            assert c.read_head() == 502
        assert not any(r.url.endswith("/s6") for r in srv.requests)


def test_gateway_rtp_headers_stripped_and_mp2t_tcp(kfwd):
    payloads = [ts_packets(7, i) for i in range(4)]
    script = [("$", 0, rtp(0, payloads[0], csrcs=3)),
              ("$", 0, rtp(1, payloads[1], ext=b"\x01\x02\x03\x04" * 2)),
              ("$", 0, rtp(2, payloads[2], pad=5)),
              ("$", 1, b"\x80\xc9\x00\x01" + b"\0" * 4),
              ("$", 2, b"other channel"),
              ("$", 0, rtp(3, payloads[3], csrcs=1, ext=b"\0" * 4, pad=3))]
    with ScriptedRtspServer(media="ts", script=script) as srv:
        k = kfwd(gateway_config())
        with HttpStream(k.port, f"/rtsp/127.0.0.1:{srv.port}/x") as c:
            assert c.read_head() == 200
            assert c.read(7 * 188 * 4) == b"".join(payloads)

    def bare(server, conn, req):
        if req.method == "SETUP":
            return (f"RTSP/1.0 200 OK\r\nCSeq: {req.cseq}\r\nSession: 9\r\n"
                    "Transport: MP2T/TCP;unicast;interleaved=4-5\r\n\r\n").encode()
        return None

    bare_ts = ts_packets(20, 9)
    with ScriptedRtspServer(media="ts", handler=bare, script=[("$", 5, b"rtcp"), ("$", 4, bare_ts)]) as srv:
        with HttpStream(k.port, f"/rtsp/127.0.0.1:{srv.port}/x") as c:
            assert c.read_head() == 200
            assert c.read(len(bare_ts)) == bare_ts


def test_gateway_http10_client_close_delimited(kfwd):
    script, ts = media_script(20)
    with ScriptedRtspServer(media="ts", script=script) as srv:
        k = kfwd(gateway_config())
        with HttpStream(k.port, f"/rtsp/127.0.0.1:{srv.port}/x", version="1.0") as c:
            assert c.read_head() == 200
            assert "transfer-encoding" not in c.headers and "content-length" not in c.headers
            assert c.read(len(ts)) == ts
        srv.stop()  # the server goes away: the body ends
        assert peers.wait_for(lambda: True, 0.1)


def test_gateway_head_does_options_describe_only(kfwd):
    with ScriptedRtspServer(media="ts") as srv:
        k = kfwd(gateway_config())
        with HttpStream(k.port, f"/rtsp/127.0.0.1:{srv.port}/x", method="HEAD") as c:
            assert c.read_head() == 200
            assert c.headers["content-type"] == "video/mp2t"
            assert c.read_to_eof() == b""
    assert methods(srv) == ["OPTIONS", "DESCRIBE"]


def test_gateway_not_ts(kfwd):
    # DESCRIBE says H.264: 502 before any SETUP.
    with ScriptedRtspServer(media="h264") as srv:
        k = kfwd(gateway_config())
        with HttpStream(k.port, f"/rtsp/127.0.0.1:{srv.port}/x") as c:
            assert c.read_head() == 502
            assert "MPEG-TS" in c.headers.get("x-kfwd-error", "")
        assert "SETUP" not in methods(srv)
    # The SDP says TS but the first payload byte is not 0x47: 502 and TEARDOWN.
    with ScriptedRtspServer(media="ts", script=[("$", 0, rtp(0, b"\x00" * 188))]) as srv:
        with HttpStream(k.port, f"/rtsp/127.0.0.1:{srv.port}/x") as c:
            assert c.read_head() == 502
        assert peers.wait_for(lambda: "TEARDOWN" in methods(srv), 5), methods(srv)
    m = k.metrics()
    assert m['kfwd_rtsp_gateway_handshakes_total{outcome="not_ts"}'] == 2


@pytest.mark.parametrize("status", [403, 404, 454])
def test_gateway_rtsp_errors(kfwd, status):
    def handler(server, conn, req):
        if req.method == "DESCRIBE":
            return f"RTSP/1.0 {status} No\r\nCSeq: {req.cseq}\r\n\r\n".encode()
        return None

    with ScriptedRtspServer(media="ts", handler=handler) as srv:
        k = kfwd(gateway_config())
        with HttpStream(k.port, f"/rtsp/127.0.0.1:{srv.port}/x") as c:
            assert c.read_head() == (status if status != 454 else 502)


def test_gateway_silent_server_and_no_media_are_504_in_time(kfwd):
    def silent(server, conn, req):
        return b""  # never answers

    with ScriptedRtspServer(media="ts", handler=silent) as srv:
        k = kfwd(gateway_config())
        t0 = time.monotonic()
        with HttpStream(k.port, f"/rtsp/127.0.0.1:{srv.port}/x") as c:
            assert c.read_head() == 504
        assert 1.8 < time.monotonic() - t0 < 4
    with ScriptedRtspServer(media="ts") as srv:  # PLAY answered, no frame ever
        t0 = time.monotonic()
        with HttpStream(k.port, f"/rtsp/127.0.0.1:{srv.port}/x") as c:
            assert c.read_head() == 504
        assert 0.8 < time.monotonic() - t0 < 3
        assert peers.wait_for(lambda: "TEARDOWN" in methods(srv), 5), methods(srv)
    m = k.metrics()
    assert m['kfwd_rtsp_gateway_handshakes_total{outcome="timeout"}'] == 2


def test_gateway_unreachable_denied_and_bad_urls(kfwd, free_port):
    k = kfwd(gateway_config())
    with HttpStream(k.port, f"/rtsp/127.0.0.1:{free_port()}/x") as c:
        assert c.read_head() == 502
    with HttpStream(k.port, "/rtsp/10.255.255.1/x") as c:  # not allowed
        assert c.read_head() == 403
    with HttpStream(k.port, "/rtsp/[2001:db8::1]:8554/x") as c:  # an IPv6 literal, not allowed
        assert c.read_head() == 403
    with HttpStream(k.port, "/rtsp/[2001:db8::1/x") as c:
        assert c.read_head() == 400
    with HttpStream(k.port, "/rtsp/") as c:
        assert c.read_head() == 400
    with HttpStream(k.port, "/rtsp/127.0.0.1/x", method="POST") as c:
        assert c.read_head() == 405


def test_gateway_describe_in_conn_list_and_teardown_on_disconnect(kfwd, tmp_path):
    script, ts = media_script(30)
    with ScriptedRtspServer(media="ts", script=script, session_timeout=2) as srv:
        k = kfwd(gateway_config())
        c = HttpStream(k.port, f"/rtsp/user:secret@127.0.0.1:{srv.port}/live?x=1")
        assert c.read_head() == 200
        c.read(len(ts))
        # Keepalives every timeout/2 = 1 s, answered.
        assert peers.wait_for(lambda: methods(srv).count("GET_PARAMETER") >= 2, 5)
        out = subprocess.run([str(KFWDCTL), "-f", str(tmp_path / "ctl1"), "-j", "conn", "list"],
                             capture_output=True, text=True, timeout=10)
        assert out.returncode == 0, out.stderr
        conns = [x for x in json.loads(out.stdout) if x.get("details", {}).get("rtsp_url")]
        assert len(conns) == 1, out.stdout
        d = conns[0]["details"]
        assert d["rtsp_url"] == f"rtsp://127.0.0.1:{srv.port}/live?x=1"
        assert "secret" not in out.stdout
        assert d["rtsp_session"] == 12345678
        assert d["state"] == "streaming"
        assert d["frames_forwarded"] == 30
        assert d["frames_dropped"] == 0
        assert d["keepalives_sent"] >= 1 and d["keepalives_answered"] >= 1
        c.close()
        assert peers.wait_for(lambda: "TEARDOWN" in methods(srv), 5), methods(srv)
        teardown = [r for r in srv.requests if r.method == "TEARDOWN"][0]
        assert teardown.header("Session") == "12345678"
        assert peers.wait_for(lambda: k.metric("kfwd_connections_active") == 0, 5)


@pytest.mark.parametrize("line, error", [
    ("route /rtsp/ rtsp-gateway on-slow=sometimes", "bad on-slow"),
    ("route /rtsp/ rtsp-gateway user-agent=", "user-agent needs a value"),
    ("route /a/ up user-agent=x", "unknown route option"),
    ("rtsp-handshake-timeout soon", "usage: rtsp-handshake-timeout"),
    ("rtsp-first-media-timeout", "usage: rtsp-first-media-timeout"),
    ("rtsp-user-agent", "usage: rtsp-user-agent"),
])
def test_gateway_config_errors_name_file_and_line(tmp_path, line, error):
    conf = tmp_path / "k.conf"
    conf.write_text(f"listen 127.0.0.1:1\nupstream up 127.0.0.1:2\n{line}\n")
    p = subprocess.run([str(ROOT / "build" / "kfwd"), "-t", "-c", str(conf)], capture_output=True,
                       text=True, timeout=10)
    assert p.returncode != 0
    assert f"{conf}:3:" in p.stderr and error in p.stderr, p.stderr


def test_gateway_keepalive_falls_back_to_options(kfwd):
    script, ts = media_script(3)

    def no_get_parameter(server, conn, req):
        if req.method == "OPTIONS" and req.cseq == "1":
            return (f"RTSP/1.0 200 OK\r\nCSeq: {req.cseq}\r\n"
                    "Public: OPTIONS, DESCRIBE, SETUP, PLAY, TEARDOWN\r\n\r\n").encode()
        return None

    with ScriptedRtspServer(media="ts", script=script, session_timeout=1,
                            handler=no_get_parameter) as srv:
        k = kfwd(gateway_config())
        with HttpStream(k.port, f"/rtsp/127.0.0.1:{srv.port}/x") as c:
            assert c.read_head() == 200
            assert c.read(len(ts)) == ts
            assert peers.wait_for(lambda: methods(srv).count("OPTIONS") >= 3, 5), methods(srv)
    assert "GET_PARAMETER" not in methods(srv)
    keepalives = [r for r in srv.requests if r.method == "OPTIONS"][1:]
    assert all(r.header("Session") == "12345678" for r in keepalives)

    # GET_PARAMETER answered 501: OPTIONS from then on.
    def refuse_get_parameter(server, conn, req):
        if req.method == "GET_PARAMETER":
            return f"RTSP/1.0 501 Not Implemented\r\nCSeq: {req.cseq}\r\n\r\n".encode()
        return None

    with ScriptedRtspServer(media="ts", script=script, session_timeout=1,
                            handler=refuse_get_parameter) as srv:
        with HttpStream(k.port, f"/rtsp/127.0.0.1:{srv.port}/x") as c:
            assert c.read_head() == 200
            assert peers.wait_for(lambda: methods(srv).count("OPTIONS") >= 2, 5), methods(srv)
    assert methods(srv).count("GET_PARAMETER") == 1


def test_gateway_drain_sends_teardown(kfwd):
    script, ts = media_script(10)
    with ScriptedRtspServer(media="ts", script=script) as srv:
        k = kfwd(gateway_config())
        c = HttpStream(k.port, f"/rtsp/127.0.0.1:{srv.port}/x")
        assert c.read_head() == 200
        c.read(len(ts))
        k.send_signal(signal.SIGTERM)
        assert peers.wait_for(lambda: "TEARDOWN" in methods(srv), 5), methods(srv)
        assert k.wait(10) == 0
        c.close()


def test_gateway_trickle_below_the_wakeup_threshold_is_delivered(kfwd):
    """A stream slower than SO_RCVLOWAT's 16 KiB per wake-up still flows (the flush tick)."""
    script, ts = media_script(10)
    frame_len = 4 + len(script[0][2])
    with ScriptedRtspServer(media="ts", script=script, chunks=[frame_len], gap=0.1) as srv:
        k = kfwd(gateway_config())
        with HttpStream(k.port, f"/rtsp/127.0.0.1:{srv.port}/x") as c:
            assert c.read_head() == 200
            t0 = time.monotonic()
            assert c.read(len(ts)) == ts
            assert time.monotonic() - t0 < 11 * 0.1 + 0.8


@pytest.mark.timeout(60)
def test_gateway_paused_player_outlives_tcp_user_timeout(kfwd):
    """A player that stops reading keeps its window shut and answers the kernel's probes: it
    is not cut by tcp-user-timeout (2 s here), and gets every TS byte once it reads again."""
    script, ts = media_script(1000)
    with ScriptedRtspServer(media="ts", script=script) as srv:
        k = kfwd(gateway_config("tcp-user-timeout 2s"))
        with HttpStream(k.port, f"/rtsp/127.0.0.1:{srv.port}/live", timeout=30, rcvbuf=16 << 10) as c:
            assert c.read_head() == 200
            assert not peers.wait_for(lambda: "TEARDOWN" in methods(srv), 6, interval=0.2), \
                f"a paused player was cut by tcp-user-timeout:\n{k.stderr[-2000:]}"
            body = c.read(len(ts))
            assert hashlib.sha256(body).hexdigest() == hashlib.sha256(ts).hexdigest()
