#!/usr/bin/python3
"""Seed inputs for tests/fuzz/fuzz_response.c: a flags/cut byte, then a response head.

usage: seeds_response.py DIR
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from seedlib import write_seeds  # noqa: E402

HEADS = {
    "ok_cl": b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello",
    "chunked": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-T\r\n\r\n",
    "close": b"HTTP/1.0 200 OK\r\nServer: x\r\n\r\n",
    "redirect": b"HTTP/1.1 302 Found\r\nLocation: http://o.example/a/b?c\r\nContent-Length: 0\r\n\r\n",
    "redirect_rel": b"HTTP/1.1 301 Moved\r\nLocation: ../x#f\r\nContent-Length: 0\r\n\r\n",
    "conn_cl": b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: Content-Length\r\n\r\n",
    "conn_te": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: Transfer-Encoding\r\n\r\n",
    "obs_fold": b"HTTP/1.1 200 OK\r\nX-A: a\r\n\tb\r\n c\r\nContent-Length: 0\r\n\r\n",
    "te_not_final": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
    "interim": b"HTTP/1.1 100 Continue\r\n\r\n",
    "switch": b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
    "no_content": b"HTTP/1.1 204 No Content\r\nKeep-Alive: timeout=5\r\n\r\n",
}


def main():
    seeds = {}
    for name, head in HEADS.items():
        seeds[name] = bytes([255]) + head
        seeds[name + "_cut"] = bytes([len(head) & 0xFE]) + head
    write_seeds(seeds)


if __name__ == "__main__":
    main()
