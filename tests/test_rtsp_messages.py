"""RTSP forwarding, messages (user/rtsp.c) against the scripted server of tests/peers_rtsp.py:
Request-URI and reply URLs rewritten both ways (SDP controls with Content-Length recomputed),
frames and server requests cut at byte boundaries, pipelining, 3xx and REDIRECT, 461, kfwd's
own errors with CSeq, upstream credentials (Basic, Digest), TEARDOWN for a vanished client."""

import hashlib
import socket
import subprocess
import time

import pytest

import peers
import peers_rtsp as R

TCP = ("Transport", "RTP/AVP/TCP;unicast;interleaved=0-1")


@pytest.fixture
def rtsp(kfwd, tmp_path):
    """rtsp(server, routes=None, extra="") -> (kfwd, client URL base, ctl file): kfwd with an
    RTSP listener; by default `route /cam cams strip-prefix` to the scripted server."""

    def start(srv, routes=None, extra=""):
        port = peers.free_port()
        ctl = tmp_path / "ctl-rtsp"
        routes = routes or f"upstream cams 127.0.0.1:{srv.port}\nroute /cam cams strip-prefix"
        k = kfwd(R.kfwd_rtsp_config(port, ctl, routes, extra))
        return k, f"rtsp://127.0.0.1:{port}/cam", ctl

    return start


def test_rtsp_urls_rewritten_both_ways(rtsp):
    with R.ScriptedRtspServer(tracks=2) as srv:
        k, base, ctl = rtsp(srv)
        with R.RtspConn(k.port) as c:
            d = c.call("DESCRIBE", base + "/stream", [("Accept", "application/sdp")])
            assert d.status == 200 and d.cseq == "1"
            assert d.header("Content-Base") == base + "/stream/"
            assert int(d.header("Content-Length")) == len(d.body)
            assert d.body.count(b"a=control:" + base.encode() + b"/stream/trackID=") == 2
            assert srv.url().encode() not in d.body
            assert d.header("Via") == "RTSP/1.0 kfwd"
            s = c.call("SETUP", base + "/stream/trackID=0", [TCP])
            assert s.status == 200 and s.header("Session") == "12345678"
            p = c.call("PLAY", base + "/stream", [("Session", "12345678")])
            assert p.header("RTP-Info").startswith(f"url={base}/stream/trackID=0;")
            assert c.call("TEARDOWN", base + "/stream", [("Session", "12345678")]).status == 200
        got = [(q.method, q.url, q.cseq, q.header("Session")) for q in srv.requests]
        assert got == [("DESCRIBE", srv.url("/stream"), "1", None),
                       ("SETUP", srv.url("/stream/trackID=0"), "2", None),
                       ("PLAY", srv.url("/stream"), "3", "12345678"),
                       ("TEARDOWN", srv.url("/stream"), "4", "12345678")]
        assert all(q.header("Via") == "RTSP/1.0 kfwd" for q in srv.requests)
        assert srv.requests[1].header("Transport") == TCP[1]
        assert k.metric("kfwd_rtsp_requests_total") == 4
        assert k.metric("kfwd_rtsp_responses_total") == 4


def test_rtsp_frames_and_server_requests_split_at_every_boundary(rtsp):
    payloads = [bytes((i * 31 + j) & 0xFF for j in range(1328)) for i in range(60)]
    payloads[5] = b"RTSP/1.0 200 OK\r\n\r\n" + payloads[5][19:]  # a payload that looks like a head
    script = []
    for i, p in enumerate(payloads):
        script.append(("$", 0, p))
        if i == 10:
            script.append(("request", "GET_PARAMETER", "URL", [], b""))
        if i == 20:
            script.append(("request", "ANNOUNCE", "URL", [("Content-Type", "application/sdp")], b"$dollar-body"))
        if i == 30:
            script.append(("$", 1, b"\x80\xc8\x00\x06" + b"r" * 24))
        if i == 40:  # a response (to nothing kfwd sent) with a body, between frames
            script.append(R.message("RTSP/1.0 200 OK", [("CSeq", "77"), ("Content-Base", "BASE")], b"$ok"))
    with R.ScriptedRtspServer(script=script, chunks=[1, 2, 3, 5, 7, 1331, 4001], gap=0) as srv:
        # The server's own URLs in its requests: they come back under the client's prefix.
        srv.script = [(it[0], it[1], srv.url("/stream"), *it[3:]) if isinstance(it, tuple) and it[0] == "request"
                      else it.replace(b"BASE", srv.url("/stream/").encode()) if isinstance(it, bytes) else it
                      for it in script]
        k, base, ctl = rtsp(srv)
        with R.RtspConn(k.port) as c:
            c.call("SETUP", base + "/stream/trackID=0", [TCP])
            frames, sreqs, resps = [], [], []
            c.call("PLAY", base + "/stream", [("Session", "12345678")], frames=frames, server_requests=sreqs)
            while len([f for f in frames if f[1] == 0]) < len(payloads) or len(sreqs) < 2 or not resps:
                item = c.next()
                (frames if isinstance(item, tuple) else resps if item.is_response else sreqs).append(item)
            assert [(r.cseq, r.header("Content-Base"), r.body) for r in resps] == [("77", base + "/stream/", b"$ok")]
            got = b"".join(f[2] for f in frames if f[1] == 0)
            assert hashlib.sha256(got).hexdigest() == hashlib.sha256(b"".join(payloads)).hexdigest()
            assert [f[2] for f in frames if f[1] == 1] == [b"\x80\xc8\x00\x06" + b"r" * 24]
            assert [(r.method, r.url) for r in sreqs] == [("GET_PARAMETER", base + "/stream"),
                                                          ("ANNOUNCE", base + "/stream")]
            assert sreqs[1].body == b"$dollar-body"
            # The client's answer to a server request reaches the server.
            c.send(R.message("RTSP/1.0 200 OK", [("CSeq", sreqs[0].cseq)]))
            assert peers.wait_for(lambda: [r.cseq for r in srv.responses] == [sreqs[0].cseq], 5)
            d = R.conn_details(ctl)
            assert d[0]["frames_forwarded"] == len(payloads) + 1 and d[0]["rtsp_state"] == "playing"
        assert k.metric("kfwd_rtsp_frames_total") == len(payloads) + 1


def test_rtsp_big_sdp_rewritten_with_its_length(rtsp):
    with R.ScriptedRtspServer(sdp_pad=200 * 1024, tracks=3) as srv:
        k, base, _ = rtsp(srv, extra="max-header-size 8k")
        with R.RtspConn(k.port) as c:
            d = c.call("DESCRIBE", base + "/big")
            assert d.status == 200 and len(d.body) > 200 * 1024
            assert int(d.header("Content-Length")) == len(d.body)
            assert d.body.count(b"a=control:" + base.encode() + b"/big/trackID=") == 3
            # The connection goes on: the framing after the body is right.
            assert c.call("OPTIONS", "*").status == 200


def test_rtsp_pipelined_requests(rtsp):
    with R.ScriptedRtspServer() as srv:
        k, base, _ = rtsp(srv)
        with R.RtspConn(k.port) as c:
            c.send(b"".join(R.message(f"{m} {base}/s RTSP/1.0", [("CSeq", n)])
                            for n, m in enumerate(["OPTIONS", "DESCRIBE", "GET_PARAMETER"], 1)))
            got = [c.next() for _ in range(3)]
            assert [(r.status, r.cseq) for r in got] == [(200, "1"), (200, "2"), (200, "3")]
            assert got[1].header("Content-Base") == base + "/s/"


def test_rtsp_only_tcp_transports_reach_the_server(rtsp):
    with R.ScriptedRtspServer() as srv:
        k, base, _ = rtsp(srv)
        with R.RtspConn(k.port) as c:
            udp = c.call("SETUP", base + "/s/trackID=0",
                         [("Transport", "RTP/AVP;unicast;client_port=5000-5001")])
            assert (udp.status, udp.cseq) == (461, "1")
            mixed = c.call("SETUP", base + "/s/trackID=0",
                           [("Transport", "RTP/AVP;unicast;client_port=5000-5001,RTP/AVP/TCP;unicast;interleaved=0-1")])
            assert mixed.status == 200
        assert [q.header("Transport") for q in srv.requests if q.method == "SETUP"] == \
            ["RTP/AVP/TCP;unicast;interleaved=0-1"]


def test_rtsp_redirects_rewritten(rtsp):
    with R.ScriptedRtspServer(redirects={"/old": (302, "")}) as srv:
        srv.redirects["/old"] = (302, srv.url("/new"))
        srv.script = [("request", "REDIRECT", srv.url("/s"), [("Location", srv.url("/moved"))], b"")]
        k, base, _ = rtsp(srv)
        with R.RtspConn(k.port) as c:
            r = c.call("DESCRIBE", base + "/old")
            assert r.status == 302 and r.header("Location") == base + "/new"
            sreqs = []
            c.call("PLAY", base + "/s", [("Session", "12345678")], server_requests=sreqs)
            while not sreqs:
                sreqs.append(c.next())
            assert (sreqs[0].method, sreqs[0].url, sreqs[0].header("Location")) == \
                ("REDIRECT", base + "/s", base + "/moved")


def test_rtsp_own_answers_echo_cseq(rtsp):
    with R.ScriptedRtspServer() as srv:
        routes = (f"upstream cams 127.0.0.1:{srv.port}\nroute /cam cams strip-prefix\n"
                  f"route /ro cams methods=OPTIONS,DESCRIBE")
        k, base, _ = rtsp(srv, routes=routes)
        root = base[:-len("/cam")]
        with R.RtspConn(k.port) as c:
            r = c.call("DESCRIBE", root + "/nowhere")
            assert (r.status, r.cseq) == (404, "1")
            r = c.call("SETUP", root + "/ro/x", [TCP])
            assert (r.status, r.cseq) == (405, "2") and "SETUP" not in r.header("Public")
            assert "DESCRIBE" in r.header("Public")
            r = c.call("OPTIONS", base + "/s", [("Proxy-Require", "x-magic")])
            assert (r.status, r.cseq, r.header("Unsupported")) == (551, "3", "x-magic")
            assert c.call("OPTIONS", base + "/s").status == 200  # the connection went on
        for raw, status in [(b"ANNOUNCE %s/s RTSP/1.0\r\nCSeq: 7\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
                            (b"OPTIONS %s/s RTSP/2.0\r\nCSeq: 8\r\n\r\n", 505),
                            (b"OPTIONS %s/" + b"a" * 9000 + b" RTSP/1.0\r\nCSeq: 9\r\n\r\n", 414),
                            (b"\x01garbage\r\nCSeq: 10\r\n\r\n", 400)]:
            with R.RtspConn(k.port) as c:
                c.send(raw.replace(b"%s", base.encode()) if b"%s" in raw else raw)
                r = c.next()
                assert r.status == status, raw[:40]
                if status != 400 or b"chunked" in raw:
                    assert r.cseq == raw.split(b"CSeq: ")[1].split(b"\r")[0].decode()
                with pytest.raises((EOFError, ConnectionResetError)):
                    c.next()
    # No server: 502, with the CSeq.
    dead = peers.free_port()
    k2, base2, _ = rtsp(srv, routes=f"upstream gone 127.0.0.1:{dead}\nroute /cam gone strip-prefix")
    with R.RtspConn(k2.port) as c:
        r = c.call("OPTIONS", base2 + "/s")
        assert (r.status, r.cseq) == (502, "1")


@pytest.mark.parametrize("auth", ["basic", "digest"])
def test_rtsp_route_credentials_answer_the_server(rtsp, auth):
    with R.ScriptedRtspServer(auth=auth, user="cam", password="s3cret") as srv:
        routes = f"upstream cams 127.0.0.1:{srv.port}\nroute /cam cams strip-prefix auth=cam:s3cret"
        k, base, _ = rtsp(srv, routes=routes)
        with R.RtspConn(k.port) as c:
            seen = []
            for m, h in [("DESCRIBE", []), ("SETUP", [TCP]), ("PLAY", [("Session", "12345678")])]:
                r = c.call(m, base + ("/s/trackID=0" if m == "SETUP" else "/s"), h)
                assert r.status == 200, (m, r.raw)
                seen.append(r.raw)
            assert not any(b"s3cret" in x or b"WWW-Authenticate" in x or b"Authorization" in x for x in seen)
        # The client left with its session set up: kfwd's TEARDOWN is authorized too.
        assert peers.wait_for(lambda: srv.requests[-1].method == "TEARDOWN", 5)
        ok = [q for q in srv.requests if q.header("Authorization")]
        assert [q.method for q in ok] == ["DESCRIBE", "SETUP", "PLAY", "TEARDOWN"]
        # One challenge, answered; later requests carry the answer at once.
        assert [q.method for q in srv.requests].count("DESCRIBE") == 2


def test_rtsp_url_embedded_with_credentials_and_deny(kfwd, tmp_path):
    with R.ScriptedRtspServer(auth="digest", user="u", password="p w") as srv:
        port = peers.free_port()
        k = kfwd(R.kfwd_rtsp_config(port, tmp_path / "ctl", "route /rtsp/ url-embedded\nallow 127.0.0.1/32"))
        url = f"rtsp://127.0.0.1:{port}/rtsp/u:p%20w@127.0.0.1:{srv.port}/s"
        with R.RtspConn(k.port) as c:
            d = c.call("DESCRIBE", url)
            assert d.status == 200
            assert d.header("Content-Base") == f"rtsp://127.0.0.1:{port}/rtsp/127.0.0.1:{srv.port}/s/"
            assert b"p%20w" not in d.raw and b"u:p" not in d.raw
            # Later requests name the destination without credentials; kfwd still has them.
            assert c.call("SETUP", d.header("Content-Base") + "trackID=0", [TCP]).status == 200
        assert [q.url for q in srv.requests if q.method == "SETUP"] == [srv.url("/s/trackID=0")]
        with R.RtspConn(k.port) as c:
            r = c.call("OPTIONS", f"rtsp://127.0.0.1:{port}/rtsp/10.1.2.3:554/x")
            assert (r.status, r.cseq) == (403, "1")


def test_rtsp_vanished_client_sessions_torn_down(rtsp):
    with R.ScriptedRtspServer() as srv:
        k, base, _ = rtsp(srv)
        c = R.RtspConn(k.port)
        c.call("SETUP", base + "/s/trackID=0", [TCP])
        c.call("PLAY", base + "/s", [("Session", "12345678")])
        c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        c.close()  # a reset, as a crashed player
        assert peers.wait_for(lambda: [q.method for q in srv.requests][-1:] == ["TEARDOWN"], 5)
        t = srv.requests[-1]
        assert (t.url, t.header("Session"), t.cseq) == (srv.url("/s"), "12345678", "3")
        # A client that tore its session down itself gets no second TEARDOWN.
        with R.RtspConn(k.port) as c2:
            c2.call("SETUP", base + "/s/trackID=0", [TCP])
            c2.call("TEARDOWN", base + "/s", [("Session", "12345678")])
        assert peers.wait_for(lambda: k.metric("kfwd_connections_active") == 0, 5)
        assert [q.method for q in srv.requests][-3:] == ["TEARDOWN", "SETUP", "TEARDOWN"]


def test_rtsp_server_gone_closes_the_client(rtsp):
    def handler(server, index, msg):
        if msg.method == "PLAY":
            server.conns[index].sendall(R.message("RTSP/1.0 200 OK", [("CSeq", msg.cseq)]) + R.frame(0, b"z" * 100))
            server.conns[index].shutdown(socket.SHUT_RDWR)
            return b""
        return None

    with R.ScriptedRtspServer(handler=handler) as srv:
        k, base, _ = rtsp(srv)
        with R.RtspConn(k.port) as c:
            frames = []
            assert c.call("PLAY", base + "/s", frames=frames).status == 200
            assert c.next() == ("$", 0, b"z" * 100)
            with pytest.raises((EOFError, ConnectionResetError)):
                c.next()


@pytest.mark.parametrize("option,message", [("on-slow=later", "bad on-slow 'later'"),
                                            ("auth=nocolon", "bad auth"),
                                            ("auth=:pass", "bad auth")])
def test_rtsp_route_options_checked_at_load(tmp_path, option, message):
    from conftest import KFWD_BIN
    conf = tmp_path / "k.conf"
    conf.write_text(f"listen 127.0.0.1:{peers.free_port()} rtsp\nupstream a 127.0.0.1:1\nroute /a a {option}\n")
    p = subprocess.run([str(KFWD_BIN), "-t", "-c", str(conf)], capture_output=True, text=True, timeout=10)
    assert p.returncode != 0 and f"{conf}:3:" in p.stderr and message in p.stderr, p.stderr
    conf.write_text(f"listen 127.0.0.1:{peers.free_port()} rtsp\nupstream a 127.0.0.1:1\n"
                    "route /a a on-slow=drop-frames auth=cam:s3cret\n")
    assert subprocess.run([str(KFWD_BIN), "-t", "-c", str(conf)], capture_output=True, timeout=10).returncode == 0


def test_rtsp_route_credentials_hidden_from_route_list(rtsp):
    with R.ScriptedRtspServer() as srv:
        routes = f"upstream cams 127.0.0.1:{srv.port}\nroute /cam cams strip-prefix auth=cam:s3cret on-slow=drop-frames"
        k, _, ctl = rtsp(srv, routes=routes)
        out = subprocess.run([R.KFWDCTL, "-f", str(ctl), "-j", "route", "list"], capture_output=True, text=True,
                             timeout=10, check=True).stdout
        assert "s3cret" not in out and "auth=*** on-slow=drop-frames" in out


def test_rtsp_access_log_one_line_per_request(rtsp, tmp_path):
    log = tmp_path / "access.log"
    with R.ScriptedRtspServer() as srv:
        k, base, _ = rtsp(srv, extra=f"access-log {log}")
        with R.RtspConn(k.port) as c:
            c.call("DESCRIBE", base + "/s")
            c.call("SETUP", base + "/s/trackID=0", [("Transport", "RTP/AVP;unicast;client_port=5000-5001")])
            c.call("SETUP", base + "/s/trackID=0", [TCP])
            c.call("DESCRIBE", base[:-len("/cam")] + "/none")
        assert peers.wait_for(lambda: log.exists() and log.read_text().count("\n") >= 4, 5)
        lines = log.read_text().splitlines()
        got = [(ln.split('"')[1].split()[0], ln.split('"')[2].split()[0]) for ln in lines]
        assert got == [("DESCRIBE", "200"), ("SETUP", "461"), ("SETUP", "200"), ("DESCRIBE", "404")]
        assert f'"DESCRIBE {base}/s"' in lines[0]


def test_rtsp_server_garbage_is_502(rtsp):
    def handler(server, index, msg):
        return b"\x00\x01 this is not RTSP\r\n\r\n" if msg.method == "DESCRIBE" else None

    with R.ScriptedRtspServer(handler=handler) as srv:
        k, base, _ = rtsp(srv)
        with R.RtspConn(k.port) as c:
            assert c.call("OPTIONS", base + "/s").status == 200
            r = c.call("DESCRIBE", base + "/s")
            assert (r.status, r.cseq) == (502, "2")
            with pytest.raises((EOFError, ConnectionResetError)):
                c.next()
        assert k.metric("kfwd_upstream_errors_total") == 1


class _HttpAndRtspServer:
    """Answers HTTP/1.1 GETs (keep-alive) and RTSP requests on the same port, and records which
    protocols each accepted connection carried."""

    def __init__(self):
        import threading
        self.lsock = socket.socket()
        self.lsock.bind(("127.0.0.1", 0))
        self.lsock.listen(16)
        self.port = self.lsock.getsockname()[1]
        self.carried = []  # per connection: the set of protocols seen
        self.threads = []
        self.accepter = threading.Thread(target=self._accept, daemon=True)
        self.accepter.start()

    def _accept(self):
        import threading
        while True:
            try:
                conn, _ = self.lsock.accept()
            except OSError:
                return
            seen = set()
            self.carried.append(seen)
            t = threading.Thread(target=self._serve, args=(conn, seen), daemon=True)
            self.threads.append(t)
            t.start()

    @staticmethod
    def _serve(conn, seen):
        buf = b""
        conn.settimeout(10)
        with conn:
            while True:
                while b"\r\n\r\n" not in buf:
                    try:
                        d = conn.recv(4096)
                    except OSError:
                        return
                    if not d:
                        return
                    buf += d
                head, buf = buf.split(b"\r\n\r\n", 1)
                lines = head.decode().split("\r\n")
                if lines[0].endswith("HTTP/1.1"):
                    seen.add("http")
                    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                else:
                    seen.add("rtsp")
                    cseq = next(v for k, _, v in (ln.partition(": ") for ln in lines[1:])
                                if k.lower() == "cseq")
                    conn.sendall(f"RTSP/1.0 200 OK\r\nCSeq: {cseq}\r\nPublic: OPTIONS\r\n\r\n"
                                 .encode())

    def close(self):
        self.lsock.close()


def test_rtsp_never_takes_a_pooled_http_connection(rtsp):
    """An HTTP listener and an RTSP listener routing to the same server: the idle keep-alive
    connection the HTTP request leaves in the pool must not carry the RTSP session."""
    srv = _HttpAndRtspServer()
    try:
        http_port = peers.free_port()
        k, base, ctl = rtsp(srv, extra=f"listen 127.0.0.1:{http_port}")
        r = peers.get(http_port, "/cam/x", keep_body=True)
        assert r.status == 200 and r.body == b"ok"
        assert peers.wait_for(lambda: k.metric("kfwd_upstream_idle") == 1, 5)
        with R.RtspConn(k.port) as c:
            assert c.call("OPTIONS", base + "/x").status == 200
        assert len(srv.carried) == 2 and all(len(p) == 1 for p in srv.carried), srv.carried
    finally:
        srv.close()


def test_rtsp_unanswered_request_gets_504_and_the_stream_goes_on(rtsp):
    """response-timeout bounds a request the server never answers: kfwd answers 504 with its
    CSeq, frames of every channel keep flowing, the late answer is dropped, later requests work."""
    def handler(server, index, msg):
        return b"" if msg.method == "GET_PARAMETER" and msg.cseq == "3" else None

    with R.ScriptedRtspServer(handler=handler) as srv:
        k, base, ctl = rtsp(srv, extra="response-timeout 1s")
        with R.RtspConn(k.port) as c:
            c.call("SETUP", base + "/s/trackID=0", [TCP])
            c.call("PLAY", base + "/s", [("Session", "12345678")])
            t0 = time.monotonic()
            cseq = c.request("GET_PARAMETER", base + "/s", [("Session", "12345678")])
            assert peers.wait_for(lambda: len(srv.requests) == 3, 5)
            before = [("$", 0, b"a" * 1000), ("$", 1, b"b" * 60)]
            srv.send_script(0, before)
            frames = []
            r = c.response(frames=frames)
            assert (r.status, r.cseq) == (504, str(cseq)) and r.start_line == "RTSP/1.0 504 Gateway Time-out"
            assert 0.9 <= time.monotonic() - t0 < 5
            assert frames == before
            # The late answer never reaches the client; the media and the next request go on.
            after = [("$", 0, b"c" * 1332), ("$", 1, b"d" * 28)]
            srv.send_script(0, [R.message("RTSP/1.0 200 OK", [("CSeq", str(cseq))])] + after)
            frames = []
            r = c.call("GET_PARAMETER", base + "/s", [("Session", "12345678")], frames=frames)
            assert (r.status, r.cseq) == (200, str(cseq + 1))
            assert frames == after
            assert R.conn_details(ctl)[0]["requests_timed_out"] == 1
        assert k.metric("kfwd_timeouts_total") >= 1


def test_rtsp_over_max_connections_answers_in_rtsp(rtsp):
    with R.ScriptedRtspServer() as srv:
        k, base, ctl = rtsp(srv, extra="max-connections 1")
        assert peers.wait_for(lambda: k.metric("kfwd_connections_active") == 0, 5)
        with R.RtspConn(k.port) as held:
            assert held.call("OPTIONS", base + "/s").status == 200
            with R.RtspConn(k.port) as c:
                c.cseq = 41
                r = c.call("OPTIONS", base + "/s")
                assert (r.start_line, r.cseq) == ("RTSP/1.0 503 Service Unavailable", "42")
                with pytest.raises((EOFError, ConnectionResetError)):
                    c.next()
        assert k.metric("kfwd_connections_rejected_total") == 1
        assert [q.method for q in srv.requests] == ["OPTIONS"]
