#!/usr/bin/python3
"""Seed inputs for tests/fuzz/fuzz_playlist.c: a selector byte (path, scheme, framing, length),
then a playlist body, plain or in chunked framing.

usage: seeds_playlist.py DIR
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from seedlib import write_seeds  # noqa: E402

PLAYLISTS = [
    b"#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=1,CODECS=\"a,b\"\nlow/i.m3u8\nhttp://h:81/x.m3u8?q\n",
    b"#EXTM3U\r\n#EXT-X-KEY:METHOD=AES-128,URI=\"../k\",IV=0x1\r\n#EXTINF:1,\r\n  s.ts \r\n",
    b'#EXT-X-MEDIA:TYPE=AUDIO,NAME="a,URI=b",URI="https://s/a.m3u8"\nrtsp://u:p@c/l\n',
    b"\xef\xbb\xbf#EXTM3U\n#EXTINF:-1,Ch\nrtsp://10.0.0.5/ch1\n//cdn/x\n?q\n#f\n./a/../../b\n",
    b"#EXT-X-MAP:URI=\"\nskd://k\ndata:,x\n",
]


def chunked(body, step):
    out = b"".join(b"%x;e=1\r\n" % len(body[i:i + step]) + body[i:i + step] + b"\r\n"
                   for i in range(0, len(body), step))
    return out + b"0\r\nT: v\r\n\r\n"


def main():
    seeds = {}
    for i, p in enumerate(PLAYLISTS):
        for sel in (0x00, 0x05, 0x22, 0xe3):
            seeds[f"p{i}_{sel:02x}"] = bytes([sel]) + p
        seeds[f"p{i}_chunked"] = bytes([0x08]) + chunked(p, 7)
    write_seeds(seeds)


if __name__ == "__main__":
    main()
