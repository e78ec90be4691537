"""RTSP forwarding with real players and a real server: ffprobe/ffmpeg (TCP-interleaved, and
UDP first, which must end on TCP after kfwd's 461) and gst rtspsrc, through kfwd to
gst-rtsp-server's /ts (H.264 + AAC in MPEG-TS over RTP) and /h264."""

import json
import subprocess
import pytest

import peers
import peers_rtsp as R

PLAYER_TIMEOUT = 40
DECODE_SECONDS = 3
GST_FRAMES = 100  # /h264 is ~1 Mbit/s: ~100 frames a second


@pytest.fixture(scope="module")
def gst():
    with R.GstRtspServer(peers.free_port(), timeout=10) as g:
        yield g


@pytest.fixture
def via(kfwd, tmp_path, gst):
    """kfwd in front of the gst server: returns (kfwd, URL base of the mounts, ctl file)."""
    port = peers.free_port()
    ctl = tmp_path / "ctl-rtsp"
    k = kfwd(R.kfwd_rtsp_config(port, ctl, f"upstream g 127.0.0.1:{gst.port}\nroute /cam g strip-prefix"))
    return k, f"rtsp://127.0.0.1:{port}/cam", ctl


def ffprobe(url, *opts):
    p = subprocess.run(["ffprobe", "-v", "error", *opts, "-show_streams", "-of", "json", url],
                       capture_output=True, text=True, timeout=PLAYER_TIMEOUT)
    assert p.returncode == 0, p.stderr
    return sorted(s["codec_name"] for s in json.loads(p.stdout)["streams"]), p.stderr


@pytest.mark.timeout(90)
def test_rtsp_ffprobe_tcp_finds_the_streams_and_ffmpeg_decodes(via):
    k, base, _ = via
    assert ffprobe(base + "/ts", "-rtsp_transport", "tcp")[0] == ["aac", "h264"]
    assert ffprobe(base + "/h264", "-rtsp_transport", "tcp")[0] == ["h264"]
    p = subprocess.run(["ffmpeg", "-v", "error", "-rtsp_transport", "tcp", "-i", base + "/ts",
                        "-t", str(DECODE_SECONDS), "-f", "null", "-"],
                       capture_output=True, text=True, timeout=PLAYER_TIMEOUT)
    assert p.returncode == 0 and p.stderr == "", p.stderr
    assert k.metric("kfwd_rtsp_frames_total") > 0


@pytest.mark.timeout(60)
def test_rtsp_ffprobe_udp_first_ends_on_tcp_after_461(via):
    k, base, _ = via
    codecs, err = ffprobe(base + "/ts")
    assert codecs == ["aac", "h264"]
    assert "461" in err  # ffprobe says the UDP SETUP failed, then took TCP
    assert k.metric('kfwd_responses_total{class="4xx"}') >= 1
    assert k.metric("kfwd_rtsp_frames_total") > 0


@pytest.mark.timeout(60)
def test_rtsp_gst_rtspsrc_plays_through_kfwd(via):
    k, base, ctl = via
    g = subprocess.Popen(["gst-launch-1.0", "-q", "rtspsrc", f"location={base}/h264", "!", "fakesink"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert peers.wait_for(lambda: any(d.get("rtsp_state") == "playing" for d in R.conn_details(ctl)), 20)
        before = R.conn_details(ctl)[0]["frames_forwarded"]
        assert peers.wait_for(lambda: R.conn_details(ctl)[0]["frames_forwarded"] - before > GST_FRAMES, 10)
        assert R.conn_details(ctl)[0]["frames_dropped"] == 0
    finally:
        g.terminate()
        out, err = g.communicate(timeout=10)
    assert "ERROR" not in err and "ERROR" not in out, err
