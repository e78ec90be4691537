#!/usr/bin/python3
"""Seed inputs for tests/fuzz/fuzz_rtsp_parse.c: RTSP/1.0 requests of every method (server
requests too), responses with the headers kfwd acts on, and near misses (RTSP/2.0, chunked).
MESSAGES is shared with seeds_rtsp_frame.py and seeds_rtsp_rewrite.py.

usage: seeds_rtsp_parse.py DIR
"""
import os
import sys

SDP = (b"v=0\r\no=- 1 1 IN IP4 192.168.1.20\r\ns=cam\r\na=control:rtsp://192.168.1.20/stream1/\r\n"
       b"m=video 0 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\na=control:rtsp://192.168.1.20/stream1/trackID=1\r\n"
       b"m=audio 0 RTP/AVP 97\r\na=control:trackID=2\r\n")

MESSAGES = {
    "options": b"OPTIONS * RTSP/1.0\r\nCSeq: 1\r\nUser-Agent: ffprobe\r\n\r\n",
    "describe": b"DESCRIBE rtsp://router:8554/cam1 RTSP/1.0\r\nCSeq: 2\r\nAccept: application/sdp\r\n"
                b"Authorization: Digest username=\"a\", realm=\"r\", nonce=\"n\", uri=\"rtsp://h/\", response=\"x\"\r\n\r\n",
    "setup": b"SETUP rtsp://router:8554/cam1/trackID=1 RTSP/1.0\r\nCSeq: 3\r\n"
             b"Transport: RTP/AVP;unicast;client_port=5000-5001,RTP/AVP/TCP;unicast;interleaved=0-1\r\n\r\n",
    "play": b"PLAY rtsp://router:8554/cam1 RTSP/1.0\r\nCSeq: 4\r\nSession: 12345678\r\nRange: npt=0.000-\r\n\r\n",
    "announce": b"ANNOUNCE rtsp://router:8554/cam1 RTSP/1.0\r\nCSeq: 5\r\nContent-Type: application/sdp\r\n"
                b"Content-Length: %d\r\n\r\n" % len(SDP) + SDP,
    "get_parameter": b"GET_PARAMETER rtsp://192.168.1.20/stream1 RTSP/1.0\r\nCSeq: 6\r\nSession: 12345678\r\n\r\n",
    "redirect": b"REDIRECT rtsp://192.168.1.20/stream1 RTSP/1.0\r\nCSeq: 7\r\nLocation: rtsp://192.168.1.21/stream1\r\n\r\n",
    "teardown": b"TEARDOWN rtsp://router:8554/cam1 RTSP/1.0\r\nCSeq: 8\r\nSession: 12345678\r\n\r\n",
    "resp_describe": b"RTSP/1.0 200 OK\r\nCSeq: 2\r\nContent-Base: rtsp://192.168.1.20/stream1/\r\n"
                     b"Content-Type: application/sdp\r\nContent-Length: %d\r\n\r\n" % len(SDP) + SDP,
    "resp_setup": b"RTSP/1.0 200 OK\r\nCSeq: 3\r\nSession: 12345678;timeout=60\r\n"
                  b"Transport: RTP/AVP/TCP;unicast;interleaved=0-1;ssrc=1234\r\n\r\n",
    "resp_play": b"RTSP/1.0 200 OK\r\nCSeq: 4\r\nSession: 12345678\r\nRTP-Info: url=rtsp://192.168.1.20/stream1/trackID=1;"
                 b"seq=1;rtptime=2,url=\"rtsp://192.168.1.20/stream1/trackID=2\";seq=3\r\n\r\n",
    "resp_401": b"RTSP/1.0 401 Unauthorized\r\nCSeq: 2\r\nWWW-Authenticate: Basic realm=\"cam\"\r\n"
                b"WWW-Authenticate: Digest realm=\"cam\", nonce=\"dcd98b7102dd2f0e8b11d0f600bfb0c093\", qop=\"auth,auth-int\", "
                b"algorithm=MD5-sess, opaque=\"5ccc069c\", Negotiate abc==\r\n\r\n",
    "resp_302": b"RTSP/1.0 302 Moved Temporarily\r\nCSeq: 2\r\nLocation: rtsp://192.168.1.20/stream1/alt\r\n\r\n",
    "resp_public": b"RTSP/1.0 200 OK\r\nCSeq: 1\r\nPublic: OPTIONS, DESCRIBE, SETUP, PLAY, GET_PARAMETER\r\n\r\n",
    "rtsp2": b"OPTIONS * RTSP/2.0\r\nCSeq: 1\r\n\r\n",
    "chunked": b"PLAY rtsp://h/s RTSP/1.0\r\nCSeq: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
    "proxy_require": b"SETUP rtsp://h/s RTSP/1.0\r\nCSeq: 1\r\nProxy-Require: x-foo\r\n\r\n",
}


def write(out, seeds):
    os.makedirs(out, exist_ok=True)
    for name, data in seeds.items():
        with open(os.path.join(out, "seed_" + name), "wb") as f:
            f.write(data)


def main():
    write(sys.argv[1], MESSAGES)


if __name__ == "__main__":
    main()
