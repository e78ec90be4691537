"""The HTTP->RTSP gateway against gst-rtsp-server: a valid MPEG-TS through curl and ffprobe,
an H.264-only mount refused, the session kept alive across a long client stall, whole frames
dropped for a slow client with on-slow=drop-frames."""

import json
import shutil
import subprocess
import time

import pytest

import peers
from conftest import ROOT, SAN
from peers_rtsp import GstRtspServer, HttpStream

KFWDCTL = ROOT / "build" / "kfwdctl"
TS_PACKET = 188
MiB = 1 << 20

pytestmark = pytest.mark.skipif(not shutil.which("ffprobe"), reason="ffprobe not installed")


def gateway_config(extra=""):
    return f"""
        route /rtsp/ rtsp-gateway
        allow 127.0.0.0/8
        rtsp-first-media-timeout 5s
        {extra}
    """


def gateway_conn(ctl_path):
    out = subprocess.run([str(KFWDCTL), "-f", str(ctl_path), "-j", "conn", "list"],
                         capture_output=True, text=True, timeout=10)
    assert out.returncode == 0, out.stderr
    conns = [c for c in json.loads(out.stdout) if "rtsp_url" in c.get("details", {})]
    assert conns, out.stdout
    return conns[0]["details"]


@pytest.fixture
def gst(free_port):
    started = []

    def start(**kw):
        g = GstRtspServer(free_port(), **kw)
        started.append(g)
        return g

    yield start
    for g in started:
        g.stop()


def test_gateway_gst_ts_is_valid_mpegts(kfwd, gst, tmp_path):
    g = gst()
    k = kfwd(gateway_config())
    out = tmp_path / "out.ts"
    r = subprocess.run(["curl", "-sS", "--max-time", "4", "-o", str(out), "-D", "-",
                        f"http://127.0.0.1:{k.port}/rtsp/127.0.0.1:{g.port}/ts"],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 28, r.stderr  # the body is endless: curl's --max-time ends it
    assert "200 OK" in r.stdout and "video/mp2t" in r.stdout
    data = out.read_bytes()
    assert len(data) > 50_000 and data[0] == 0x47
    assert all(data[i] == 0x47 for i in range(0, len(data) - TS_PACKET, TS_PACKET))
    probe = subprocess.run(["ffprobe", "-v", "error", "-show_entries", "stream=codec_name",
                            "-of", "json", str(out)], capture_output=True, text=True, timeout=30)
    codecs = sorted(s["codec_name"] for s in json.loads(probe.stdout)["streams"])
    assert codecs == ["aac", "h264"], probe.stdout + probe.stderr
    # Whole packets in order: no continuity counter jumps (ffmpeg reports them as errors).
    whole = data[:len(data) // TS_PACKET * TS_PACKET]
    (tmp_path / "whole.ts").write_bytes(whole)
    check = subprocess.run(["ffmpeg", "-v", "error", "-i", str(tmp_path / "whole.ts"), "-map", "0",
                            "-c", "copy", "-f", "null", "-"], capture_output=True, text=True, timeout=60)
    assert "continuity" not in check.stderr.lower(), check.stderr


def test_gateway_gst_h264_mount_is_502(kfwd, gst):
    g = gst()
    k = kfwd(gateway_config())
    with HttpStream(k.port, f"/rtsp/127.0.0.1:{g.port}/h264") as c:
        assert c.read_head() == 502


@pytest.mark.timeout(90)
def test_gateway_keepalive_survives_a_30s_client_stall(kfwd, gst, tmp_path):
    g = gst(rate="8M", timeout=10)
    # A client whose window stays shut is cut after tcp-user-timeout (30 s by default).
    k = kfwd(gateway_config("tcp-user-timeout 2m"))
    ctl = tmp_path / "ctl1"
    c = HttpStream(k.port, f"/rtsp/127.0.0.1:{g.port}/ts", rcvbuf=16 << 10, timeout=30)
    assert c.read_head() == 200
    c.read(200_000)
    before = gateway_conn(ctl)
    rss0 = k.rss_kb()
    # The client stops reading: kfwd pauses the server, keepalives still go out every 5 s.
    assert peers.wait_for(lambda: gateway_conn(ctl).get("paused") == 1, 20), gateway_conn(ctl)
    time.sleep(30)
    during = gateway_conn(ctl)
    assert during["paused"] == 1
    assert during["keepalives_sent"] - before["keepalives_sent"] >= 4, (before, during)
    assert k.rss_kb() - rss0 < 8 * 1024 * SAN
    # Reading again: the same session goes on; the keepalive answers queued behind the media
    # are read then.
    got = 0
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        got += len(c.read(64 << 10))
        if got >= 2 * MiB and gateway_conn(ctl)["keepalives_answered"] >= during["keepalives_sent"]:
            break
    after = gateway_conn(ctl)
    assert got >= 2 * MiB
    assert after["rtsp_session"] == before["rtsp_session"]
    assert after["state"] == "streaming"
    assert after["keepalives_answered"] >= during["keepalives_sent"], (during, after)
    c.close()


def test_gateway_drop_frames_for_a_slow_client(kfwd, gst, tmp_path):
    g = gst(rate="8M")
    k = kfwd(gateway_config().replace("rtsp-gateway", "rtsp-gateway on-slow=drop-frames"))
    ctl = tmp_path / "ctl1"
    c = HttpStream(k.port, f"/rtsp/127.0.0.1:{g.port}/ts", rcvbuf=16 << 10, timeout=30)
    assert c.read_head() == 200
    c.read(100_000)
    rss0 = k.rss_kb()
    assert peers.wait_for(lambda: gateway_conn(ctl)["frames_dropped"] > 100, 20), gateway_conn(ctl)
    d = gateway_conn(ctl)
    assert "paused" not in d
    assert k.rss_kb() - rss0 < 8 * 1024 * SAN
    # Reading resumes at a frame boundary: TS packets stay aligned.
    c.read(300_000)
    data = c.read(TS_PACKET * 500)
    sync = [i for i in range(TS_PACKET) if all(data[i + j * TS_PACKET] == 0x47 for j in range(499))]
    assert sync, "TS packets not aligned after drops"
    c.close()
