#!/usr/bin/env python3
"""The sizes the house keeps, checked: no source file under src/ over MAX_FILE lines (tests
included), and no function over MAX_FN lines outside tests (`#[cfg(test)]` items) and the mock
peers' rule tables (src/mock/, whose functions are tables of the rules a real peer enforces).

The ones over today are listed, with their size, in scripts/house-sizes.allow: a ratchet. The
check fails when anything not listed is over, when a listed one grows, and when a listed one is
within the limit again (so the list stays true and only shrinks).

Usage: scripts/house-sizes.py [SRC_DIR]   (exit 1, with what is wrong, when anything is)
       scripts/house-sizes.py --list      (every one over, in the allow file's form)
"""
import os
import re
import sys

MAX_FILE = 420  # "about 400": a file a little over is not worth a split that only moves lines
MAX_FN = 80

args = [a for a in sys.argv[1:] if a != "--list"]
listing = "--list" in sys.argv[1:]
here = os.path.dirname(os.path.abspath(__file__))
src = os.path.normpath(args[0] if args else os.path.join(here, "..", "src"))
allow = {}
for line in open(os.path.join(here, "house-sizes.allow"), encoding="utf-8"):
    line = line.split("#", 1)[0].strip()
    if line:
        what, size = line.rsplit(" ", 1)
        allow[what] = int(size)


def blank_out(text):
    """Comments, strings and char literals as spaces, lines kept, so braces can be counted."""
    out, i, n = [], 0, len(text)
    while i < n:
        c = text[i]
        if text.startswith("//", i):
            j = text.find("\n", i)
            j = n if j < 0 else j
            out.append(" " * (j - i))
            i = j
        elif text.startswith("/*", i):
            j = text.find("*/", i + 2)
            j = n if j < 0 else j + 2
            out.append(re.sub(r"[^\n]", " ", text[i:j]))
            i = j
        elif c == "r" and re.match(r'r#*"', text[i:i + 10]) and not (i and (text[i - 1].isalnum() or text[i - 1] == "_")):
            hashes = re.match(r"r(#*)\"", text[i:]).group(1)
            end = '"' + hashes
            j = text.find(end, i + 2 + len(hashes))
            j = n if j < 0 else j + len(end)
            out.append(re.sub(r"[^\n]", " ", text[i:j]))
            i = j
        elif c == '"':
            j = i + 1
            while j < n and text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            out.append(re.sub(r"[^\n]", " ", text[i:j + 1]))
            i = j + 1
        elif c == "'" and re.match(r"'(\\.|[^\\'])'|'\\u\{[0-9a-fA-F]+\}'|'\\x[0-9a-fA-F]{2}'", text[i:i + 12]):
            m = re.match(r"'(\\.|[^\\'])'|'\\u\{[0-9a-fA-F]+\}'|'\\x[0-9a-fA-F]{2}'", text[i:i + 12])
            out.append(" " * len(m.group(0)))
            i += len(m.group(0))
        else:
            out.append(c)
            i += 1
    return "".join(out)


def test_ranges(code):
    """Line ranges of `#[cfg(test)]` items (modules and functions)."""
    ranges = []
    for m in re.finditer(r"#\[cfg\(test\)\]", code):
        brace = code.find("{", m.end())
        semi = code.find(";", m.end())
        if brace < 0 or (0 <= semi < brace):
            continue
        end = match(code, brace)
        ranges.append((code.count("\n", 0, m.start()), code.count("\n", 0, end)))
    return ranges


def match(code, open_at):
    depth = 0
    for j in range(open_at, len(code)):
        if code[j] == "{":
            depth += 1
        elif code[j] == "}":
            depth -= 1
            if depth == 0:
                return j
    return len(code) - 1


over = []
for dirpath, _, names in os.walk(src):
    for name in sorted(names):
        if not name.endswith(".rs"):
            continue
        path = os.path.join(dirpath, name)
        rel = os.path.relpath(path, os.path.dirname(src))
        text = open(path, encoding="utf-8").read()
        code = blank_out(text)
        tests = test_ranges(code)
        lines = text.count("\n")
        if lines > MAX_FILE:
            over.append((rel, lines, MAX_FILE))
        if os.sep + "mock" + os.sep in path:
            continue
        for m in re.finditer(r"\bfn\s+(\w+)[^;{]*\{", code):
            start = code.count("\n", 0, m.start())
            if any(a <= start <= b for a, b in tests):
                continue
            end = code.count("\n", 0, match(code, m.end() - 1))
            if end - start + 1 > MAX_FN:
                over.append((f"{rel}::{m.group(1)}", end - start + 1, MAX_FN))
if listing:
    for what, size, _ in over:
        print(f"{what} {size}")
    sys.exit(0)
wrong = []
seen = set()
for what, size, limit in over:
    seen.add(what)
    if what not in allow:
        wrong.append(f"{what}: {size} lines (at most {limit})")
    elif size > allow[what]:
        wrong.append(f"{what}: {size} lines, grown from the {allow[what]} scripts/house-sizes.allow allows")
for what in sorted(set(allow) - seen):
    wrong.append(f"{what}: within the limit now; take it off scripts/house-sizes.allow")
for line in wrong:
    print(line)
if wrong:
    sys.exit(1)
print(f"files within {MAX_FILE} lines and functions within {MAX_FN}" + (f", but for {len(allow)} listed in scripts/house-sizes.allow" if allow else ""))
