#!/usr/bin/python3
"""Seed inputs for tests/fuzz/fuzz_rtsp_rewrite.c: the heads kfwd rewrites (each followed by
its SDP body where it has one), with URLs under the target's client and upstream prefixes.

usage: seeds_rtsp_rewrite.py DIR
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from seeds_rtsp_parse import MESSAGES, write  # noqa: E402


def main():
    write(sys.argv[1], MESSAGES)


if __name__ == "__main__":
    main()
