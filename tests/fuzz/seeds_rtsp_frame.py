#!/usr/bin/python3
"""Seed inputs for tests/fuzz/fuzz_rtsp_frame.c: server and client streams mixing '$' frames
with responses, server requests and a body that starts with '$'.

usage: seeds_rtsp_frame.py DIR
"""
import os
import struct
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from seeds_rtsp_parse import MESSAGES, write  # noqa: E402


def frame(channel, payload):
    return struct.pack(">cBH", b"$", channel, len(payload)) + payload


def main():
    m = MESSAGES
    dollar_body = b"RTSP/1.0 200 OK\r\nCSeq: 9\r\nContent-Length: 8\r\n\r\n$\x00\x00\x04abcd"
    seeds = {
        "server": frame(0, bytes(range(200))) + m["resp_play"] + frame(1, b"\x80\xc8" * 20)
        + m["get_parameter"] + frame(0, b"") + m["announce"] + dollar_body + frame(0, b"G" * 1328),
        "client": m["options"] + m["describe"] + m["setup"] + m["play"] + frame(1, b"\x81\xc9" * 16)
        + m["get_parameter"].replace(b"GET", b"SET") + m["teardown"],
        "frames": b"".join(frame(i % 4, bytes([i]) * (i * 13 % 300)) for i in range(40)),
    }
    write(sys.argv[1], seeds)


if __name__ == "__main__":
    main()
