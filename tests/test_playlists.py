"""HLS/M3U playlists through url-embedded routes: a 2xx playlist (by media type, or a .m3u/.m3u8
path with a text type) has its URI lines and URI="..." attributes rewritten through kfwd
(absolute http:// to /http/, rtsp:// to the /rtsp/ route, relative references resolved against
the playlist's URL), whatever its framing (length, chunked, close), and goes out with a new
Content-Length; a playlist over playlist-max-size goes out byte-exact as it came; everything
else is untouched. A rewritten segment URL then fetches the segment through kfwd.

Upstream: tests/peers_http.py's Files server. Everything listens on 127.0.0.1.
"""

import hashlib
import os

import pytest

import peers
import peers_http
from peers import mdelta

REWRITTEN = "kfwd_playlists_rewritten_total"
UNMODIFIED = "kfwd_playlists_unmodified_total"
FRAMINGS = ["length", "chunked", "close"]

SEGMENT = os.urandom(300 * 1024)
KEY = os.urandom(16)

MASTER = """#EXTM3U
#EXT-X-VERSION:6
#EXT-X-INDEPENDENT-SEGMENTS
#EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID="aud",NAME="English, stereo",DEFAULT=YES,URI="audio/en.m3u8"
#EXT-X-STREAM-INF:BANDWIDTH=1280000,CODECS="avc1.4d401f,mp4a.40.2",AUDIO="aud"
low/index.m3u8
#EXT-X-STREAM-INF:BANDWIDTH=2560000
http://{up}/live/hi/index.m3u8?session=1&x=%2F
#EXT-X-I-FRAME-STREAM-INF:BANDWIDTH=86000,URI="/live/iframe.m3u8"
#EXT-X-STREAM-INF:BANDWIDTH=64000
https://cdn.example/tls.m3u8
#EXT-X-STREAM-INF:BANDWIDTH=32000
rtsp://10.0.0.5:8554/live/ch1?token=x
#EXT-X-SESSION-KEY:METHOD=SAMPLE-AES,URI="skd://key-id",KEYFORMAT="com.apple.streamingkeydelivery"
"""

MASTER_REWRITTEN = """#EXTM3U
#EXT-X-VERSION:6
#EXT-X-INDEPENDENT-SEGMENTS
#EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID="aud",NAME="English, stereo",DEFAULT=YES,URI="/http/{up}/live/audio/en.m3u8"
#EXT-X-STREAM-INF:BANDWIDTH=1280000,CODECS="avc1.4d401f,mp4a.40.2",AUDIO="aud"
/http/{up}/live/low/index.m3u8
#EXT-X-STREAM-INF:BANDWIDTH=2560000
/http/{up}/live/hi/index.m3u8?session=1&x=%2F
#EXT-X-I-FRAME-STREAM-INF:BANDWIDTH=86000,URI="/http/{up}/live/iframe.m3u8"
#EXT-X-STREAM-INF:BANDWIDTH=64000
https://cdn.example/tls.m3u8
#EXT-X-STREAM-INF:BANDWIDTH=32000
/rtsp/10.0.0.5:8554/live/ch1?token=x
#EXT-X-SESSION-KEY:METHOD=SAMPLE-AES,URI="skd://key-id",KEYFORMAT="com.apple.streamingkeydelivery"
"""

# CRLF line ends, blanks around a URI, a comment that looks like an attribute, no final line end.
MEDIA = ("#EXTM3U\r\n#EXT-X-TARGETDURATION:10\r\n#EXT-X-MEDIA-SEQUENCE:7\r\n"
         '#EXT-X-KEY:METHOD=AES-128,URI="../key.bin",IV=0x0102\r\n'
         '#EXT-X-MAP:URI="init.mp4"\r\n'
         "#EXTINF:10.0,\r\nseg1.ts\r\n"
         "#EXTINF:10.0,title\r\n  ../../seg2.ts?token=a%20b \t\r\n"
         '# a comment URI="x.ts"\r\n\r\n'
         "#EXTINF:10.0,\r\n./sub/../seg3.ts\r\n"
         "#EXT-X-ENDLIST")

MEDIA_REWRITTEN = ("#EXTM3U\r\n#EXT-X-TARGETDURATION:10\r\n#EXT-X-MEDIA-SEQUENCE:7\r\n"
                   '#EXT-X-KEY:METHOD=AES-128,URI="/http/{up}/live/key.bin",IV=0x0102\r\n'
                   '#EXT-X-MAP:URI="/http/{up}/live/low/init.mp4"\r\n'
                   "#EXTINF:10.0,\r\n/http/{up}/live/low/seg1.ts\r\n"
                   "#EXTINF:10.0,title\r\n  /http/{up}/seg2.ts?token=a%20b \t\r\n"
                   '# a comment URI="x.ts"\r\n\r\n'
                   "#EXTINF:10.0,\r\n/http/{up}/live/low/seg3.ts\r\n"
                   "#EXT-X-ENDLIST")

# An IPTV channel list: a plain .m3u served as text/plain.
CHANNELS = """\ufeff#EXTM3U
#EXTINF:-1 tvg-id="ch1" group-title="News",Channel 1
rtsp://user:pw@10.0.0.5/ch1
#EXTINF:-1,Channel 2
http://{up}/live/low/seg1.ts
"""

CHANNELS_REWRITTEN = """\ufeff#EXTM3U
#EXTINF:-1 tvg-id="ch1" group-title="News",Channel 1
/rtsp/user:pw@10.0.0.5/ch1
#EXTINF:-1,Channel 2
/http/{up}/live/low/seg1.ts
"""

NOT_A_PLAYLIST = "seg1.ts\nhttp://elsewhere.example/x\n"


def origin_files(up):
    return {
        "/live/master.m3u8": ("application/vnd.apple.mpegurl", MASTER.format(up=up).encode()),
        "/live/low/index.m3u8": ("application/x-mpegURL; charset=UTF-8", MEDIA.encode()),
        "/live/low/seg1.ts": ("video/mp2t", SEGMENT),
        "/live/key.bin": ("application/octet-stream", KEY),
        "/tv/channels.m3u": ("text/plain; charset=utf-8", CHANNELS.format(up=up).encode()),
        "/tv/list.txt": ("text/plain", NOT_A_PLAYLIST.encode()),
        "/tv/list.m3u8.bin": ("application/octet-stream", NOT_A_PLAYLIST.encode()),
        "/tv/audio.m3u": ("audio/mpegurl", MEDIA.encode()),
    }


@pytest.fixture
def origin(peer):
    port = peers.free_port()
    return peer(peers_http.Files(origin_files(f"127.0.0.1:{port}"), port=port))


def fetch(port, target, framing="length", chunk=100, method="GET"):
    with peers.HttpConn(port, timeout=20) as c:
        c.request(method, target, [("X-Framing", framing), ("X-Chunk", str(chunk))], None, host="kfwd.test")
        return c.read_response(method, keep_body=True)


def config(extra=""):
    return f"route /http/ url-embedded\nroute /rtsp/ rtsp-gateway\nallow 127.0.0.1\n{extra}"


def check_rewritten(r, expect):
    assert r.status == 200, (r.status, r.body[:300])
    assert r.body.decode() == expect
    assert r.headers.get_all("Content-Length") == [str(len(r.body))]
    assert r.headers.get_all("Transfer-Encoding") == []


@pytest.mark.parametrize("framing", FRAMINGS)
def test_master_and_media_playlists_rewritten(kfwd, origin, framing):
    k = kfwd(config())
    up = origin.addr
    m0 = k.metrics()
    # Chunks of 7 bytes: chunk boundaries fall inside lines, URIs and line ends.
    r = fetch(k.port, f"/http/{up}/live/master.m3u8?token=abc", framing, chunk=7)
    check_rewritten(r, MASTER_REWRITTEN.format(up=up))
    r = fetch(k.port, f"/http/{up}/live/low/index.m3u8", framing, chunk=7)
    check_rewritten(r, MEDIA_REWRITTEN.format(up=up))
    r = fetch(k.port, f"/http/{up}/tv/channels.m3u", framing)
    check_rewritten(r, CHANNELS_REWRITTEN.format(up=up))
    r = fetch(k.port, f"/http/{up}/tv/audio.m3u", framing)
    check_rewritten(r, MEDIA_REWRITTEN.format(up=up).replace("/live/low/", "/tv/").replace("/live/", "/"))
    assert mdelta(k.metrics(), m0, REWRITTEN) == 4
    assert mdelta(k.metrics(), m0, UNMODIFIED) == 0


@pytest.mark.parametrize("framing", ["length", "chunked"])
def test_rewritten_segment_and_key_urls_fetch_through_kfwd(kfwd, origin, framing):
    k = kfwd(config())
    up = origin.addr
    r = fetch(k.port, f"/http/{up}/live/low/index.m3u8", framing)
    lines = r.body.decode().split("\r\n")
    seg = next(ln for ln in lines if ln.endswith("seg1.ts"))
    key = next(ln for ln in lines if ln.startswith("#EXT-X-KEY")).split('URI="')[1].split('"')[0]
    s = fetch(k.port, seg, framing)
    assert s.status == 200 and hashlib.sha256(s.body).digest() == hashlib.sha256(SEGMENT).digest()
    assert s.headers.get("Content-Type") == "video/mp2t"
    assert fetch(k.port, key).body == KEY
    # Both went to the origin with the paths the playlist named, resolved.
    assert [q.target for q in origin.requests[-2:]] == ["/live/low/seg1.ts", "/live/key.bin"]


@pytest.mark.parametrize("target", ["/tv/list.txt", "/tv/list.m3u8.bin"])
def test_other_bodies_untouched(kfwd, origin, target):
    k = kfwd(config())
    m0 = k.metrics()
    for framing in FRAMINGS:
        r = fetch(k.port, f"/http/{origin.addr}{target}", framing)
        assert r.status == 200 and r.body == NOT_A_PLAYLIST.encode()
    assert mdelta(k.metrics(), m0, REWRITTEN) == 0


def test_head_and_plain_routes_untouched(kfwd, origin):
    k = kfwd(config(f"upstream o {origin.addr}\nroute / o\n"))
    r = fetch(k.port, "/live/master.m3u8")
    assert r.status == 200 and r.body == MASTER.format(up=origin.addr).encode()
    r = fetch(k.port, f"/http/{origin.addr}/live/master.m3u8", method="HEAD")
    assert r.status == 200 and r.headers.get("Content-Length") == str(len(MASTER.format(up=origin.addr)))


def big_playlist(n):
    return "#EXTM3U\n" + "".join(f"#EXTINF:2.0,\nhttp://127.0.0.1:1/big/seg{i:06d}.ts\n" for i in range(n))


@pytest.mark.parametrize("framing", FRAMINGS)
def test_oversize_playlist_forwarded_unmodified(kfwd, peer, framing):
    body = big_playlist(4000).encode()  # ~170 KiB
    assert len(body) > 100 * 1024
    o = peer(peers_http.Files({"/big.m3u8": ("application/vnd.apple.mpegurl", body),
                               "/small.m3u8": ("application/vnd.apple.mpegurl", big_playlist(10).encode())}))
    k = kfwd(config("playlist-max-size 64k\n"))
    m0 = k.metrics()
    r = fetch(k.port, f"/http/{o.addr}/big.m3u8", framing, chunk=4096)
    assert r.status == 200 and len(r.body) == len(body)
    assert hashlib.sha256(r.body).hexdigest() == hashlib.sha256(body).hexdigest()
    # The connection still serves the next playlist, rewritten.
    r = fetch(k.port, f"/http/{o.addr}/small.m3u8", framing)
    assert r.status == 200 and b"/http/127.0.0.1:1/big/seg000009.ts\n" in r.body
    m1 = k.metrics()
    assert mdelta(m1, m0, UNMODIFIED) == 1 and mdelta(m1, m0, REWRITTEN) == 1


def test_playlist_rewriting_off(kfwd, origin):
    k = kfwd(config("playlist-max-size 0\n"))
    r = fetch(k.port, f"/http/{origin.addr}/live/master.m3u8")
    assert r.status == 200 and r.body == MASTER.format(up=origin.addr).encode()


@pytest.mark.parametrize("failure,status", [("truncate", 502), ("stall", 504)])
def test_upstream_failing_inside_a_playlist_gets_an_answer(kfwd, origin, failure, status):
    """Nothing of a playlist went out before it is whole: the client hears 502 for an upstream
    that closes inside it, 504 for one that stalls past the route's idle-timeout."""
    k = kfwd("route /http/ url-embedded idle-timeout=1s\nallow 127.0.0.1\n")
    r = fetch(k.port, f"/http/{origin.addr}/live/master.m3u8", failure)
    assert r.status == status, (r.status, r.body[:200])
    assert r.body == f"{status} {'Bad Gateway' if status == 502 else 'Gateway Timeout'}\n".encode()
