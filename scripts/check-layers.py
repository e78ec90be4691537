#!/usr/bin/python3
"""Check the declared layers of user/ (scripts/layers.txt): every #include "x.h" of a file in
user/ names a file of the same layer or of a layer below, the include graph has no cycle, and
every file of user/ is declared. Exit 0 when all holds, else 1 with one line per problem.

usage: check-layers.py [ROOT]   (ROOT: the source tree, default: this script's parent)
"""
import os
import re
import sys

INCLUDE = re.compile(r'^\s*#\s*include\s+"([^"]+)\.h"', re.M)


def read_layers(path):
    layer_of, names = {}, []
    with open(path) as f:
        for lineno, line in enumerate(f, 1):
            line = line.split("#", 1)[0].strip()
            if not line:
                continue
            name, colon, stems = line.partition(":")
            if not colon:  # a continuation line: more names of the layer above
                if not names:
                    raise SystemExit(f"{path}:{lineno}: names before the first layer")
                stems = name
            else:
                names.append(name.strip())
            for stem in stems.split():
                if stem in layer_of:
                    raise SystemExit(f"{path}:{lineno}: {stem} is declared twice")
                layer_of[stem] = len(names) - 1
    return layer_of, names


def include_graph(user):
    graph = {}
    for fn in sorted(os.listdir(user)):
        stem, ext = os.path.splitext(fn)
        if ext not in (".c", ".h"):
            continue
        with open(os.path.join(user, fn)) as f:
            text = f.read()
        deps = graph.setdefault(stem, {})
        for inc in INCLUDE.findall(text):
            # include/kfwd/*.h (protocol headers) and generated skeletons are not in user/.
            if "/" in inc or not os.path.exists(os.path.join(user, inc + ".h")):
                continue
            if inc != stem:
                deps.setdefault(inc, fn)
    return graph


def find_cycle(graph):
    """One cycle as a list of stems, or None (iterative DFS, white/grey/black)."""
    colour = {s: 0 for s in graph}
    for root in sorted(graph):
        if colour[root]:
            continue
        stack = [(root, iter(sorted(graph[root])))]
        path = [root]
        colour[root] = 1
        while stack:
            node, it = stack[-1]
            nxt = next(it, None)
            if nxt is None:
                colour[node] = 2
                stack.pop()
                path.pop()
                continue
            if colour.get(nxt, 2) == 1:
                return path[path.index(nxt):] + [nxt]
            if colour.get(nxt, 2) == 0:
                colour[nxt] = 1
                stack.append((nxt, iter(sorted(graph[nxt]))))
                path.append(nxt)
    return None


def main():
    root = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "..")
    layer_of, names = read_layers(os.path.join(root, "scripts", "layers.txt"))
    graph = include_graph(os.path.join(root, "user"))
    problems = []
    for stem in sorted(graph):
        if stem not in layer_of:
            problems.append(f"user/{stem}: not declared in scripts/layers.txt")
    for stem in sorted(set(layer_of) - set(graph)):
        problems.append(f"scripts/layers.txt: {stem} names no file in user/")
    for stem, deps in sorted(graph.items()):
        for dep, fn in sorted(deps.items()):
            if stem in layer_of and dep in layer_of and layer_of[dep] > layer_of[stem]:
                problems.append(f"user/{fn}: includes {dep}.h of layer {names[layer_of[dep]]}, "
                                f"above its own layer {names[layer_of[stem]]}")
    cycle = find_cycle(graph)
    if cycle:
        problems.append("include cycle: " + " -> ".join(cycle))
    for p in problems:
        print(p)
    if not problems:
        print(f"layers: {len(graph)} names in {len(names)} layers, no upward include, no cycle")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
