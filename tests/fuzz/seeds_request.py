#!/usr/bin/python3
"""Seed inputs for tests/fuzz/fuzz_request.c: a cut byte, then a request head (the request
framing and smuggling corpus of tests/test_hostile_request_framing.py, and ordinary requests).

usage: seeds_request.py DIR
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from seedlib import write_seeds  # noqa: E402

H = b"Host: a\r\n"
HEADS = {
    "get": b"GET /x?y=1 HTTP/1.1\r\n" + H + b"\r\n",
    "http10": b"GET / HTTP/1.0\r\n\r\n",
    "post_cl": b"POST /api/up HTTP/1.1\r\n" + H + b"Content-Length: 5\r\n\r\nhello",
    "post_te": b"POST /up HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    "conn_cl": b"GET /public/a HTTP/1.1\r\n" + H + b"Content-Length: 32\r\nConnection: Content-Length\r\n\r\n",
    "conn_te": b"POST /a HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\nConnection: keep-alive, Transfer-Encoding\r\n\r\n",
    "conn_host": b"GET /a HTTP/1.1\r\n" + H + b"Connection: Host, X-Drop\r\nX-Drop: 1\r\n\r\n",
    "obs_fold": b"GET /a HTTP/1.1\r\n" + H + b"X-A: a\r\n b\r\n\r\n",
    "te_identity": b"POST /a HTTP/1.1\r\n" + H + b"Transfer-Encoding: identity, chunked\r\n\r\n",
    "te_list": b"POST /a HTTP/1.1\r\n" + H + b"Transfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n",
    "cl_big": b"POST /a HTTP/1.1\r\n" + H + b"Content-Length: 9223372036854775808\r\n\r\n",
    "fragment": b"GET /a#f HTTP/1.1\r\n" + H + b"\r\n",
    "absolute": b"GET http://b.example:81/http/1.2.3.4/p?q HTTP/1.1\r\n" + H + b"\r\n",
    "asterisk": b"OPTIONS * HTTP/1.1\r\n" + H + b"\r\n",
    "embedded": b"GET /http/[::1]:8080/a/b HTTP/1.1\r\n" + H + b"X-Forwarded-For: 1.1.1.1\r\n\r\n",
    "upgrade": b"GET /ws HTTP/1.1\r\n" + H + b"Connection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
    "strip_host": b"GET /api/v HTTP/1.1\r\nHost: w.example.com:80\r\n\r\n",
}


def main():
    seeds = {}
    for name, head in HEADS.items():
        seeds[name] = bytes([255]) + head
        seeds[name + "_cut"] = bytes([len(head) // 2]) + head
    write_seeds(seeds)


if __name__ == "__main__":
    main()
