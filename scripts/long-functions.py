#!/usr/bin/python3
"""List the functions of user/*.c longer than a limit (default 80 lines, body braces included)
that carry no note saying why: "Long:" in the comment right above the function. Exit 0 when every long function has its note, else 1 with one line per function.

usage: long-functions.py [--all] [--limit N] [ROOT]   (--all: list noted ones too)
"""
import os
import re
import sys

# A definition starts at column 0 with a type and a name followed by '(' (not a prototype:
# the body's '{' opens at column 0 on a later line, kernel style).
DEF = re.compile(r"^[A-Za-z_][^;=()]*?\b([A-Za-z_]\w*)\s*\(")
NOTE = re.compile(r"\bLong:")


def functions(path):
    """(name, first line, length in lines, has note) for each function of a C file."""
    with open(path) as f:
        lines = f.read().split("\n")
    out = []
    i = 0
    while i < len(lines):
        m = DEF.match(lines[i])
        if not m or lines[i].startswith(("static inline", "#")) and "{" in lines[i]:
            i += 1
            continue
        # the opening brace at column 0 before any ';' ends a definition
        j = i
        while j < len(lines) and lines[j] != "{" and not lines[j].rstrip().endswith(";"):
            j += 1
        if j >= len(lines) or lines[j] != "{":
            i += 1
            continue
        k = j + 1
        while k < len(lines) and lines[k] != "}":
            k += 1
        out.append((m.group(1), i + 1, k - i + 1, noted(lines, i)))
        i = k + 1
    return out


def noted(lines, start):
    """A comment block ending right above line @start says "Long:"."""
    j = start - 1
    if j < 0 or not lines[j].rstrip().endswith("*/"):
        return False
    while j >= 0:
        if NOTE.search(lines[j]):
            return True
        if lines[j].lstrip().startswith("/*"):
            return False
        j -= 1
    return False


def main(argv):
    if "-h" in argv or "--help" in argv:
        print(__doc__.strip())
        return 0
    show_all = "--all" in argv
    argv = [a for a in argv if a != "--all"]
    limit = 80
    if "--limit" in argv:
        i = argv.index("--limit")
        limit = int(argv[i + 1])
        del argv[i:i + 2]
    root = argv[0] if argv else os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
    user = os.path.join(root, "user")
    bad = 0
    for fn in sorted(os.listdir(user)):
        if not fn.endswith(".c"):
            continue
        for name, line, length, note in functions(os.path.join(user, fn)):
            if length <= limit:
                continue
            if not note:
                bad += 1
            if show_all or not note:
                print(f"user/{fn}:{line}: {name}: {length} lines{' (noted)' if note else ''}")
    if bad:
        print(f"{bad} function(s) over {limit} lines without a 'Long:' note")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
