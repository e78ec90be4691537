#!/usr/bin/python3
"""Seed inputs for tests/fuzz/fuzz_chunked.c: chunked bodies, valid and broken.

usage: seeds_chunked.py DIR
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from seedlib import write_seeds  # noqa: E402

SEEDS = {
    "simple": b"5\r\nhello\r\n0\r\n\r\n",
    "two": b"4\r\nWiki\r\n5;ext=1\r\npedia\r\n0\r\n\r\n",
    "ext_quoted": b"3;a=\"b c\";d\r\nabc\r\n0\r\n\r\n",
    "ext_bws": b"3 ;a=b\r\nabc\r\n0\r\n\r\n",
    "trailers": b"1\r\nx\r\n0\r\nX-A: 1\r\nX-B:\t2 3\r\n\r\n",
    "size_space": b"5 3\r\nhello\r\n0\r\n\r\n",
    "trailer_no_colon": b"0\r\nGET /SMUGGLED HTTP/1.1\r\n\r\n",
    "trailer_nul": b"0\r\nX-A: a\x00b\r\n\r\n",
    "trailer_fold": b"0\r\nX-A: a\r\n b\r\n\r\n",
    "bad_data_end": b"5\r\nhelloXX0\r\n\r\n",
    "upper_hex": b"A\r\n0123456789\r\n0\r\n\r\n",
    "leading_zeros": b"0005\r\nhello\r\n000\r\n\r\n",
    "next_message": b"1\r\na\r\n0\r\n\r\nGET / HTTP/1.1\r\n\r\n",
}


if __name__ == "__main__":
    write_seeds(SEEDS)
