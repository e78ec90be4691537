#!/usr/bin/python3
"""Seed inputs for tests/fuzz/fuzz_url.c: a route selector byte, then a request-target.

usage: seeds_url.py DIR
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from seedlib import write_seeds  # noqa: E402

TARGETS = [
    b"/http/example.com:8080/a/b?c=d",
    b"/http/[::1]/x",
    b"/http/127.0.0.1",
    b"/http/h:99999/x",
    b"/httpexample.com/x",
    b"/api/q?x=1",
    b"/",
    b"http://a.example:81/p?q",
    b"HTTP://a/",
    b"http://user@a/",
    b"/a#frag",
    b"example.com:443",
    b"[2001:db8::1]:8443",
    b"//other.example/p",
    b"?only=query",
]


def main():
    seeds = {}
    for i, t in enumerate(TARGETS):
        for route in range(4):
            seeds[f"t{i}_r{route}"] = bytes([route]) + t
    write_seeds(seeds)


if __name__ == "__main__":
    main()
