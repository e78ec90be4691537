#!/usr/bin/python3
"""Seed corpus for fuzz_rtsp_client: base paths and SDP controls (RFC 3986 §5.4 cases, the
gateway's), and RTP packets with CSRCs, extensions and padding."""

import os
import struct
import sys

BASES = ["/b/c/d;p", "/live/ch1/", "", "/a/b/"]
REFS = ["g", "./g", "../g", "../../../g", "/./g", "g/../h", "?y", "g?y/./x", "trackID=0", "*",
        "rtsp://other/x", "//g", ".", "..", "g;x=1/../y", "",
        "#s", "g#s/../x", "g?y#s"]


def main():
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    n = 0
    for b in BASES:
        for r in REFS:
            with open(os.path.join(out, f"seed-{n}"), "wb") as f:
                f.write(f"{b}\n{r}".encode())
            n += 1
    for b0, extra in [(0x80, b""), (0x82, b"\0" * 8), (0x90, b"\xbe\xde\x00\x01abcd"), (0xa0, b"")]:
        pkt = struct.pack(">BBHII", b0, 33, 1, 2, 3) + extra + b"\x47" * 188
        if b0 & 0x20:
            pkt += b"\0\0\3"
        with open(os.path.join(out, f"seed-{n}"), "wb") as f:
            f.write(pkt)
        n += 1


if __name__ == "__main__":
    main()
