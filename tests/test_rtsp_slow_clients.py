"""RTSP media and slow clients (user/rtsp.c): with on-slow=pause a stalled client pauses the
server (kfwd's memory bounded, nothing lost, the client's keepalives still reach the server);
with on-slow=drop-frames a stalled viewer loses whole frames while another viewer of the same
gst-rtsp-server stream keeps its rate, and resumes at a frame boundary. A drain (SIGTERM) tears
the sessions down and ends the client's stream at a frame boundary."""

import hashlib
import signal
import time

import pytest

import peers
import peers_rtsp as R
from peers_rtsp import MediaServer, payload
from conftest import SAN

TCP = ("Transport", "RTP/AVP/TCP;unicast;interleaved=0-1")
PAUSE_FRAMES = 6000  # ~8 MB: far more than kfwd, the kernel and the client can hold
SMALL_RCVBUF = 16 << 10
RSS_GROWTH_MAX_KB = 16 * 1024 * SAN


def assert_all_frames(conn, n):
    """The next n items on conn are the frames payload(0..n-1) of channel 0, byte for byte."""
    got = hashlib.sha256()
    for _ in range(n):
        item = conn.next()
        assert isinstance(item, tuple) and item[1] == 0
        got.update(item[2])
    assert got.hexdigest() == hashlib.sha256(b"".join(payload(i) for i in range(n))).hexdigest()


def test_rtsp_stalled_client_pauses_the_server(kfwd, tmp_path):
    with MediaServer(PAUSE_FRAMES) as srv:
        port = peers.free_port()
        ctl = tmp_path / "ctl"
        k = kfwd(R.kfwd_rtsp_config(port, ctl, f"upstream m 127.0.0.1:{srv.port}\nroute /cam m strip-prefix"))
        base = f"rtsp://127.0.0.1:{port}/cam"
        c = R.RtspConn(port, rcvbuf=SMALL_RCVBUF)
        rss0 = k.rss_kb()
        c.call("SETUP", base + "/s/trackID=0", [TCP])
        c.call("PLAY", base + "/s", [("Session", "12345678")])
        # The client reads nothing more: kfwd's flow toward it pauses, the server stops.
        assert peers.wait_for(lambda: R.conns(ctl)[0]["response"]["paused"], 20)
        stalled_at = srv.sent
        assert peers.wait_for(lambda: srv.sent == stalled_at, 5, interval=0.5)
        assert srv.sent < PAUSE_FRAMES
        # Keepalives and RTCP still reach the server during the stall.
        rtcp = b"\x80\xc9\x00\x01" + b"\x00" * 4
        for _ in range(2):
            c.request("GET_PARAMETER", base + "/s", [("Session", "12345678")])
            c.send(R.frame(1, rtcp))
        assert peers.wait_for(lambda: [q.method for q in srv.requests].count("GET_PARAMETER") == 2, 5)
        assert peers.wait_for(lambda: srv.client_frames == [("$", 1, rtcp)] * 2, 5)
        assert k.rss_kb() - rss0 < RSS_GROWTH_MAX_KB
        # Reading again: every frame, in order, byte for byte.
        assert_all_frames(c, PAUSE_FRAMES)
        d = R.conns(ctl)[0]
        assert d["response"]["pauses"] >= 1 and d["details"]["frames_dropped"] == 0
        c.close()


def read_rate(conn, seconds):
    """Frames of channel 0 a connection reads in the given time."""
    n, end = 0, time.monotonic() + seconds
    while time.monotonic() < end:
        item = conn.next()
        if isinstance(item, tuple) and item[1] == 0:
            n += 1
    return n


def play(port, base):
    c = R.RtspConn(port)
    d = c.call("DESCRIBE", base + "/ts")
    s = c.call("SETUP", d.header("Content-Base").rstrip("/") + "/stream=0", [TCP])
    session = s.header("Session").split(";")[0]
    assert c.call("PLAY", base + "/ts", [("Session", session)]).status == 200
    return c


@pytest.mark.timeout(90)
def test_rtsp_drop_frames_keeps_the_other_viewer_at_full_rate(kfwd, tmp_path):
    rate_window = 3.0
    with R.GstRtspServer(peers.free_port(), timeout=30) as gst:
        port = peers.free_port()
        ctl = tmp_path / "ctl"
        k = kfwd(R.kfwd_rtsp_config(
            port, ctl, f"upstream g 127.0.0.1:{gst.port}\nroute /cam g strip-prefix on-slow=drop-frames",
            "copy-buffer-size 64k\nclient-sndbuf 64k"))
        base = f"rtsp://127.0.0.1:{port}/cam"
        slow = R.RtspConn(port, rcvbuf=SMALL_RCVBUF)
        d = slow.call("DESCRIBE", base + "/ts")
        s = slow.call("SETUP", d.header("Content-Base").rstrip("/") + "/stream=0", [TCP])
        slow.call("PLAY", base + "/ts", [("Session", s.header("Session").split(";")[0])])
        fast = play(port, base)
        baseline = read_rate(fast, rate_window)
        # The slow viewer has read nothing since PLAY: its frames are being dropped.
        assert peers.wait_for(lambda: any(x["frames_dropped"] > 0 for x in R.conn_details(ctl)), 20)
        during = read_rate(fast, rate_window)
        assert during >= 0.8 * baseline, (baseline, during)
        details = [x for x in R.conn_details(ctl) if x["frames_dropped"] > 0]
        assert len(details) == 1 and details[0]["bytes_dropped"] > 0
        assert k.metric("kfwd_rtsp_frames_dropped_total") >= details[0]["frames_dropped"]
        # The stalled viewer reads again: whole frames only, then live frames again.
        frames = 0
        while frames < 200:
            item = slow.next()  # a frame cut anywhere would derail the reader
            if isinstance(item, tuple):
                assert item[1] in (0, 1) and item[2][0] & 0xC0 == 0x80  # RTP/RTCP version 2
                frames += 1
        fast.close()
        slow.close()


def test_rtsp_drain_tears_down_and_ends_at_a_frame_boundary(kfwd, tmp_path):
    with MediaServer(1 << 20) as srv:
        port = peers.free_port()
        ctl = tmp_path / "ctl"
        k = kfwd(R.kfwd_rtsp_config(port, ctl, f"upstream m 127.0.0.1:{srv.port}\nroute /cam m strip-prefix",
                                    "drain-timeout 30s"))
        base = f"rtsp://127.0.0.1:{port}/cam"
        c = R.RtspConn(port)
        c.call("SETUP", base + "/s/trackID=0", [TCP])
        c.call("PLAY", base + "/s", [("Session", "12345678")])
        n = 0
        for n in range(100):
            assert c.next() == ("$", 0, payload(n))
        t0 = time.monotonic()
        k.send_signal(signal.SIGTERM)
        # Every byte up to the end parses: whole frames in order, then EOF between two frames.
        with pytest.raises(EOFError):
            while True:
                n += 1
                assert c.next() == ("$", 0, payload(n))
        assert c.reader.buf == b"", "the stream ended inside a frame"
        assert time.monotonic() - t0 < 5 * SAN
        assert k.wait(10) == 0
        t = [q for q in srv.requests if q.method == "TEARDOWN"]
        assert [(q.url, q.header("Session"), q.cseq) for q in t] == [(srv.url("/s"), "12345678", "3")]
        assert srv.stop_media.is_set()
        c.close()


@pytest.mark.timeout(60)
def test_rtsp_paused_player_outlives_tcp_user_timeout(kfwd, tmp_path):
    """A player that stops reading keeps its window shut and answers the zero-window probes:
    since Linux 5.11 TCP_USER_TIMEOUT alone would end it after 2 s. kfwd suspends the option
    while the window is shut: after 3 timeouts the client is still served, byte for byte."""
    user_timeout = 2
    with MediaServer(PAUSE_FRAMES) as srv:
        port = peers.free_port()
        ctl = tmp_path / "ctl"
        k = kfwd(R.kfwd_rtsp_config(port, ctl, f"upstream m 127.0.0.1:{srv.port}\nroute /cam m strip-prefix",
                                    f"tcp-user-timeout {user_timeout}s"))
        base = f"rtsp://127.0.0.1:{port}/cam"
        c = R.RtspConn(port, timeout=30, rcvbuf=SMALL_RCVBUF)
        c.call("SETUP", base + "/s/trackID=0", [TCP])
        c.call("PLAY", base + "/s", [("Session", "12345678")])
        assert peers.wait_for(lambda: R.conns(ctl)[0]["response"]["paused"], 20)
        assert not peers.wait_for(lambda: not R.conns(ctl), 3 * user_timeout, interval=0.2), \
            f"a paused player was cut by tcp-user-timeout:\n{k.stderr[-2000:]}"
        assert_all_frames(c, PAUSE_FRAMES)
        c.close()
