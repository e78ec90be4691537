#!/usr/bin/python3
"""Seed inputs for tests/fuzz/fuzz_config_edit.c: a line to delete, a set/append selector, then
a configuration text (with and without the runtime marker).

usage: seeds_config_edit.py DIR
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from seedlib import write_seeds  # noqa: E402

MARKER = b"# ---- kfwdctl: runtime changes below, dropped on reload ----"
TEXTS = {
    "file": b"listen 127.0.0.1:80\nupstream u 127.0.0.1:81\nroute / u\n",
    "no-final-newline": b"listen 127.0.0.1:80\nroute /a u retries=2 # note",
    "runtime": b"listen 127.0.0.1:80\nroute / u\n" + MARKER + b"\nroute /b u\nlog-level debug\n",
    "marker-first": MARKER + b"\nlog-level info\n",
    "marker-last-no-newline": b"route / u\n" + MARKER,
    "blank-and-comments": b"\n\n# c\n  route  /x   u  a=1\t b=2\r\n",
}

seeds = {}
for name, text in TEXTS.items():
    seeds[f"{name}-del2"] = bytes([2, 0x00]) + text
    seeds[f"{name}-set"] = bytes([0, 0x11]) + text
    seeds[f"{name}-add"] = bytes([0, 0x20]) + text
write_seeds(seeds)
