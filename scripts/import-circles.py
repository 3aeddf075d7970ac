#!/usr/bin/env python3
"""Finds import circles between portvakt's modules and fails when there is one.

A module is a file under src/ (a folder's mod.rs is the folder). Module A imports module B when
A's code names a path into B: a `use` (braces expanded) or a path written in the code, starting
with `crate::`, `super::` or `self::`; each path lands in the deepest module it names. Tests
(`#[cfg(test)] mod ... { }` blocks) are left out: they may reach anywhere.

Circles are looked for among the files, and again at each level of folders (all of `keys/` as one
module, and so on), so that two folders whose files import each other are a circle even when no
two files are. A folder's mod.rs naming its own children, and a child naming its parent's items,
are the one kind of pair that is allowed: the parent is the folder's front door.

Usage: scripts/import-circles.py [SRC_DIR]   (exit 1, with each circle's imports, when there are any)
"""
import os
import re
import sys

src = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "..", "src")
src = os.path.normpath(src)
ROOTS = {"lib.rs", "main.rs"}


def module_of(path):
    rel = os.path.relpath(path, src)[:-3].split(os.sep)
    if rel[-1] == "mod":
        rel = rel[:-1]
    if rel == ["lib"] or rel == ["main"]:
        return ()
    return tuple(rel)


files = {}
for dirpath, _, names in os.walk(src):
    for name in names:
        if name.endswith(".rs"):
            path = os.path.join(dirpath, name)
            if os.path.relpath(path, src) == "main.rs":
                continue  # the binary: a crate of its own, on top of the library
            files[module_of(path)] = path
modules = set(files)


def strip(text):
    """The code without comments, strings and test modules."""
    text = re.sub(r"//[^\n]*", "", text)
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
    text = re.sub(r'r#+"(?:.|\n)*?"#+', '""', text)
    text = re.sub(r'"(?:\\.|[^"\\])*"', '""', text)
    out, i = [], 0
    for m in re.finditer(r"#\[cfg\(test\)\]\s*mod\s+\w+\s*\{", text):
        if m.start() < i:
            continue
        out.append(text[i:m.start()])
        depth, j = 1, m.end()
        while j < len(text) and depth:
            depth += {"{": 1, "}": -1}.get(text[j], 0)
            j += 1
        i = j
    out.append(text[i:])
    return "".join(out)


def expand(tree):
    """`a::{b, c::{d, e}}` as the paths it names."""
    tree = tree.replace(" ", "").replace("\n", "")
    depth, parts, cur = 0, [], ""
    brace = tree.find("{")
    if brace < 0:
        return [re.sub(r"as\w+$", "", tree)] if tree else []
    head, inner = tree[:brace], tree[brace + 1:tree.rfind("}")]
    for ch in inner:
        if ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
            continue
        depth += {"{": 1, "}": -1}.get(ch, 0)
        cur += ch
    parts.append(cur)
    paths = []
    for p in parts:
        for sub in expand(p):
            paths.append(head + sub if sub != "self" else head.rstrip(":"))
    return paths


def resolve(here, path):
    """The module a path written in module `here` lands in, or None outside the crate."""
    segs = [s for s in path.split("::") if s]
    if not segs:
        return None
    if segs[0] == "crate":
        base, segs = (), segs[1:]
    elif segs[0] in ("super", "self"):
        # In a file, `self` is its module and `super` its parent, mod.rs or not.
        base = here
        while segs and segs[0] in ("super", "self"):
            base = base[:-1] if segs[0] == "super" else base
            segs = segs[1:]
    else:
        return None
    target = base
    for s in segs:
        if target + (s,) in modules:
            target = target + (s,)
        else:
            break
    return target


edges = {m: set() for m in modules}
for here, path in files.items():
    text = strip(open(path, encoding="utf-8").read())
    named = []
    for m in re.finditer(r"\buse\s+((?:crate|super|self)::[^;]*);", text):
        named += expand(m.group(1))
    for m in re.finditer(r"\b((?:crate|super)(?:::\w+)+)", text):
        named.append(m.group(1))
    for p in named:
        t = resolve(here, p)
        if t is not None and t != here and t != ():
            edges[here].add(t)


# Tarjan's strongly connected components.
index, low, stack, on, out, n = {}, {}, [], set(), [], [0]


def visit(v):
    index[v] = low[v] = n[0]
    n[0] += 1
    stack.append(v)
    on.add(v)
    for w in sorted(edges[v]):
        if w not in index:
            visit(w)
            low[v] = min(low[v], low[w])
        elif w in on:
            low[v] = min(low[v], index[w])
    if low[v] == index[v]:
        comp = []
        while True:
            w = stack.pop()
            on.discard(w)
            comp.append(w)
            if w == v:
                break
        if len(comp) > 1:
            out.append(sorted(comp))


sys.setrecursionlimit(10000)
name = lambda m: "::".join(m) or "crate"
# Each level of the tree as well as the files: two folders that import each other are a circle
# even when no two of their files are.
deepest = max(len(m) for m in modules)
by_file = edges
for depth in list(range(1, deepest)) + [None]:
    cut = (lambda m: m[:depth]) if depth else (lambda m: m)
    edges = {}
    for m, ts in by_file.items():
        edges.setdefault(cut(m), set())
        for t in ts:
            if cut(t) != cut(m) and not (cut(t) == cut(m)[:len(cut(t))] or cut(m) == cut(t)[:len(cut(m))]):
                edges[cut(m)].add(cut(t))
    index, low, stack, on, n = {}, {}, [], set(), [0]
    for v in sorted(edges):
        if v not in index:
            visit(v)
seen = set()
for comp in [c for c in out if not (tuple(c) in seen or seen.add(tuple(c)))]:
    members = set(comp)
    print("circle: " + ", ".join(name(m) for m in comp))
    for m in comp:
        for t in sorted(by_file):
            if t[:len(m)] == m:
                for u in sorted(by_file[t]):
                    if any(u[:len(o)] == o for o in members if o != m):
                        print(f"  {name(t)} -> {name(u)}")
if out:
    sys.exit(1)
print(f"no import circles among {len(modules)} modules")
