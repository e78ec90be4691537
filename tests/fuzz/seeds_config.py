#!/usr/bin/python3
"""Seed inputs for tests/fuzz/fuzz_config.c: configuration texts using every directive kind.

usage: seeds_config.py DIR
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from seedlib import write_seeds  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main():
    seeds = {
        "minimal": b"listen 127.0.0.1:8080\nroute /http/ url-embedded\nallow *\n",
        "upstreams": b"listen 127.0.0.1:1\nupstream a 127.0.0.1:10 127.0.0.1:11 weight=2\n"
                     b"route / a\nroute /api/ a strip-prefix methods=GET,HEAD host=*.example.com\n",
        "sizes": b"listen [::1]:1\npipe-size 64k\npipe-high-water 256k\nmax-header-size 32k\n"
                 b"client-timeout 5s\ntransfer-timeout 300s\nroute /http/ url-embedded\n"
                 b"deny 10.0.0.0/8\nallow 127.0.0.1/32\n",
        "bad": b"listen 127.0.0.1:99999\nbogus 1\n",
    }
    # The embedded default and any example configurations the repository ships.
    for d in ("", "examples", "scripts"):
        base = os.path.join(ROOT, d)
        if not os.path.isdir(base):
            continue
        for name in sorted(os.listdir(base)):
            if name.endswith(".conf"):
                with open(os.path.join(base, name), "rb") as f:
                    seeds["file_" + name] = f.read()
    write_seeds(seeds)


if __name__ == "__main__":
    main()
