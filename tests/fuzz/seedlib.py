"""Shared by tests/fuzz/seeds_*.py: write a dict of named seed inputs into a corpus directory."""
import os
import sys


def write_seeds(seeds):
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    for name, data in seeds.items():
        with open(os.path.join(out, name), "wb") as f:
            f.write(data)
