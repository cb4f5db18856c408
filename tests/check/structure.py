#!/usr/bin/env python3
"""Draw the module layers inside each service and fail on an import circle.

A "unit" is one directory of C modules: every services/<svc>/ holding .c files, plus
common/ (libnf). Inside a unit, each .c file is a module (headers are not); there is an
edge a.c -> b.c when a.c uses a non-static symbol that b.c defines. Definitions and uses
come from the object files of a build tree (`nm`: defined = upper-case types other than
U, used = U/w/v); a module without an object falls back to a crude scan of its source.

Layers are Lakos levels of the graph with each circle folded into one node: level 1 holds
the modules that use nothing else in the unit, level n+1 those whose deepest dependency
sits on level n. The drawing lists the highest level first, each module with its edges.

Exit status: 0 no circle, 1 some unit has a strongly connected component of more than one
file (each circle is listed as file -> file via symbols), 2 bad usage.

    python3 tests/check/structure.py --build build --services
    python3 tests/check/structure.py --build build --services --doc docs/structure.md
    python3 tests/check/structure.py --build build --only common

--services selects every services/<svc>/ (what `ctest -L check` runs): common/ is one
library, and its nf_http module is split over four files that call each other by design.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
WIDTH = 100

# nm symbol types: undefined (U, weak undefined w/v) and defined global (upper case).
USED_TYPES = set("Uwv")
SKIP_PREFIXES = ("__odr_asan", "__asan", "__ubsan", "__sancov", "__tsan")


@dataclass
class Module:
    name: str  # file name inside the unit, e.g. "service.c"
    source: Path
    defined: set[str] = field(default_factory=set)
    used: set[str] = field(default_factory=set)
    how: str = "nm"  # "nm" or "scan"


@dataclass
class Unit:
    label: str  # "services/gateway", "common"
    modules: dict[str, Module]
    edges: dict[tuple[str, str], list[str]]  # (from, to) -> symbols
    sccs: list[list[str]] = field(default_factory=list)  # sinks first
    level: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def out(self, name: str) -> list[str]:
        return sorted(b for (a, b) in self.edges if a == name)

    def circles(self) -> list[list[str]]:
        return [sorted(c) for c in self.sccs if len(c) > 1]


# ---------------------------------------------------------------------------------------
# Finding the units and their objects

def find_units(source: Path) -> list[tuple[str, Path]]:
    """Every services/<svc>/ with .c files, then common/."""
    units = []
    services = source / "services"
    if services.is_dir():
        for d in sorted(services.iterdir()):
            if d.is_dir() and any(d.glob("*.c")):
                units.append((f"services/{d.name}", d))
    if (source / "common").is_dir() and any((source / "common").glob("*.c")):
        units.append(("common", source / "common"))
    return units


def find_object(build: Path, source: Path, src: Path) -> Path | None:
    """The object CMake built from src: <build>/<dir>/CMakeFiles/<target>.dir/<rel>.o,
    <dir> being any directory above src that holds a CMakeLists.txt. Several targets may
    compile one file; the newest object wins."""
    found = []
    d = src.parent
    while True:
        if (d / "CMakeLists.txt").is_file():
            rel = src.relative_to(d).as_posix()
            bdir = build / d.relative_to(source) / "CMakeFiles"
            if bdir.is_dir():
                for suffix in (".o", ".obj"):
                    found += bdir.glob(f"*.dir/{rel}{suffix}")
        if d == source or d.parent == d:
            break
        d = d.parent
    if not found:
        return None
    return max(found, key=lambda p: p.stat().st_mtime)


def nm_symbols(nm: str, obj: Path) -> tuple[set[str], set[str]]:
    """(defined, used) global symbols of one object file."""
    out = subprocess.run([nm, "-P", str(obj)], check=True, capture_output=True, text=True)
    defined, used = set(), set()
    for line in out.stdout.splitlines():
        parts = line.split()
        if len(parts) < 2 or parts[0].startswith(SKIP_PREFIXES):
            continue
        name, kind = parts[0], parts[1]
        if kind in USED_TYPES:
            used.add(name)
        elif kind.isupper() and kind not in "UN":
            defined.add(name)
    return defined, used


# ---------------------------------------------------------------------------------------
# Crude source scan, for a module without an object

C_KEYWORDS = set(
    """auto break case char const continue default do double else enum extern float for
    goto if inline int long register restrict return short signed sizeof static struct
    switch typedef union unsigned void volatile while _Bool _Static_assert _Noreturn
    _Alignas _Alignof _Atomic _Generic _Thread_local bool""".split()
)
IDENT = re.compile(r"[A-Za-z_]\w*")


def strip_c(text: str) -> str:
    """Text with comments, string and char literals, attributes and #include lines
    blanked."""
    text = re.sub(
        r"/\*.*?\*/|//[^\n]*|\"(?:\\.|[^\"\\\n])*\"|'(?:\\.|[^'\\\n])*'",
        lambda m: " " if m.group(0)[0] == "/" else '""',
        text,
        flags=re.S,
    )
    text = re.sub(r"__attribute__\s*\(\((?:[^()]|\([^()]*\))*\)\)", " ", text)
    return re.sub(r"(?m)^\s*#\s*include[^\n]*", "", text)


MACRO_DEF = re.compile(r"(?m)^\s*#\s*define\s+(\w+)(\([^)]*\))?((?:[^\n]*\\\n)*[^\n]*)")
# A macro called at file scope, e.g. GW_ROUTE_AUTHED(gw_jobs_get, get_authed): it
# defines its first argument.
TOP_MACRO = re.compile(r"(?m)^([A-Z][A-Z0-9_]*)\(\s*([A-Za-z_]\w*)[^)\n]*\)\s*;?[ \t]*$")


def macro_bodies(headers: list[Path]) -> dict[str, set[str]]:
    """Identifiers each macro of the unit's headers and the file expands to, less its
    parameters, so a use of the macro counts as a use of what it calls."""
    bodies: dict[str, set[str]] = {}
    for header in headers:
        text = strip_c(header.read_text(encoding="utf-8", errors="replace"))
        for m in MACRO_DEF.finditer(text):
            params = set(IDENT.findall(m.group(2) or ""))
            bodies[m.group(1)] = set(IDENT.findall(m.group(3))) - params - C_KEYWORDS
    return bodies


def top_level_chunks(text: str) -> list[str]:
    """Declarations and definitions at file scope: split at ';' at depth 0 and after a
    function body (a brace opened at depth 0 right after a ')')."""
    chunks, start, depth, is_body = [], 0, 0, False
    body = re.sub(r"(?m)^\s*#[^\n]*(\\\n[^\n]*)*", "", text)  # drop directives
    for i, ch in enumerate(body):
        if ch == "{":
            if depth == 0:
                is_body = body[start:i].rstrip().endswith(")")
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth == 0 and is_body:
                chunks.append(body[start : i + 1])
                start = i + 1
        elif ch == ";" and depth == 0:
            chunks.append(body[start : i + 1])
            start = i + 1
    return [c.strip() for c in chunks if c.strip() not in ("", ";")]


def scan_defined(text: str) -> set[str]:
    """Names of the non-static functions and variables a file defines."""
    defined = {m.group(2) for m in TOP_MACRO.finditer(text)}
    text = TOP_MACRO.sub("", text)
    for chunk in top_level_chunks(text):
        head = re.split(r"[=\[;{]", chunk, maxsplit=1)[0]  # declaration before any value
        words = IDENT.findall(head.split("(")[0])
        if not words or {"static", "extern", "typedef"} & set(words):
            continue
        if "(" in head:  # a function: defined when a body follows, declared otherwise
            name = IDENT.findall(head[: head.index("(")])
            if chunk.endswith("}") and name and name[-1] not in C_KEYWORDS:
                defined.add(name[-1])
            continue
        names = [w for w in IDENT.findall(head) if w not in C_KEYWORDS]
        tagged = words[0] in ("struct", "union", "enum") or "struct" in words[:2]
        if len(names) >= (2 if tagged else 1) and not (tagged and "{" in chunk.split("=")[0]):
            defined.add(names[-1])
    return defined


def scan_source(src: Path, macros: dict[str, set[str]]) -> tuple[set[str], set[str]]:
    text = strip_c(src.read_text(encoding="utf-8", errors="replace"))
    defined = scan_defined(text)
    words = {w for w in IDENT.findall(text) if w not in C_KEYWORDS}
    local = macro_bodies([src])
    used = set(words)
    queue = list(words)
    while queue:  # a macro used counts as what it expands to, transitively
        name = queue.pop()
        for w in local.get(name, macros.get(name, set())):
            if w not in used:
                used.add(w)
                queue.append(w)
    return defined, used - defined


# ---------------------------------------------------------------------------------------
# The graph

def load_unit(label: str, path: Path, build: Path | None, source: Path, args) -> Unit:
    modules: dict[str, Module] = {}
    notes = []
    macros = None
    for src in sorted(path.glob("*.c")):
        mod = Module(src.name, src)
        obj = None if (args.scan or build is None) else find_object(build, source, src)
        if obj is not None:
            mod.defined, mod.used = nm_symbols(args.nm, obj)
            if obj.stat().st_mtime < src.stat().st_mtime:
                notes.append(f"{src.name}: object older than source (rebuild first)")
        else:
            if macros is None:
                macros = macro_bodies(sorted(path.glob("*.h")))
            mod.defined, mod.used = scan_source(src, macros)
            mod.how = "scan"
        modules[src.name] = mod
    scanned = [m.name for m in modules.values() if m.how == "scan"]
    if scanned and not args.scan and build is not None:
        if len(scanned) == len(modules):
            notes.append("no objects in the build tree: sources scanned (crude)")
        else:
            notes.append("no object, source scanned (crude): " + " ".join(scanned))

    definer: dict[str, list[str]] = {}
    for mod in modules.values():
        for sym in mod.defined:
            definer.setdefault(sym, []).append(mod.name)
    edges: dict[tuple[str, str], list[str]] = {}
    for mod in modules.values():
        for sym in mod.used:
            for other in definer.get(sym, []):
                if other != mod.name:
                    edges.setdefault((mod.name, other), []).append(sym)
    for key in edges:
        edges[key].sort()
    unit = Unit(label, modules, edges, notes=notes)
    unit.sccs = tarjan(sorted(modules), unit.out)
    levels(unit)
    return unit


def tarjan(nodes: list[str], out) -> list[list[str]]:
    """Strongly connected components, each emitted after every component it reaches
    (sinks first)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    result: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in out(v):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            result.append(sorted(comp))

    sys.setrecursionlimit(max(1000, 4 * len(nodes) + 100))
    for v in nodes:
        if v not in index:
            visit(v)
    return result


def levels(unit: Unit) -> None:
    """Level 1: uses nothing else in the unit; a circle gets one level for all its files."""
    for comp in unit.sccs:  # sinks first, so every successor already has its level
        members = set(comp)
        below = [unit.level[w] for v in comp for w in unit.out(v) if w not in members]
        for v in comp:
            unit.level[v] = 1 + max(below, default=0)


def shortest_cycle(unit: Unit, comp: list[str]) -> list[str]:
    """A shortest closed path through the component, as a list of files (first == last)."""
    members = set(comp)
    best: list[str] = []
    for start in comp:
        prev = {start: ""}
        queue = deque([start])
        found = None
        while queue and found is None:
            v = queue.popleft()
            for w in unit.out(v):
                if w not in members:
                    continue
                if w == start:
                    found = v
                    break
                if w not in prev:
                    prev[w] = v
                    queue.append(w)
        if found is None:
            continue
        path = [start]
        v = found
        while v != start:
            path.append(v)
            v = prev[v]
        path.append(start)
        path.reverse()
        if not best or len(path) < len(best):
            best = path
    return best


# ---------------------------------------------------------------------------------------
# Output

def wrap(prefix: str, words: list[str], indent: int) -> list[str]:
    lines, line = [], prefix
    for w in words:
        if len(line) + 1 + len(w) > WIDTH and line.strip():
            lines.append(line)
            line = " " * indent + w
        else:
            line = f"{line} {w}" if line.strip() else line + w
    lines.append(line)
    return lines


def drawing(unit: Unit) -> list[str]:
    circles = unit.circles()
    tag = {v: f"(circle {i})" for i, c in enumerate(circles, 1) for v in c}
    top = max(unit.level.values(), default=0)
    how = sorted({m.how for m in unit.modules.values()})
    state = f"{len(circles)} import circle(s)" if circles else "no import circle"
    lines = [
        f"{unit.label}: {len(unit.modules)} modules, {len(unit.edges)} edges, "
        f"{top} levels, {state} [{'+'.join(how)}]"
    ]
    width = max((len(n) + len(tag.get(n, "")) + 1 for n in unit.modules), default=0)
    for lvl in range(top, 0, -1):
        names = sorted(n for n in unit.modules if unit.level[n] == lvl)
        for i, name in enumerate(names):
            head = f"  L{lvl:<2} " if i == 0 else " " * 6
            label = f"{name} {tag.get(name, '')}".rstrip()
            outs = unit.out(name)
            if not outs:
                lines.append(head + label)
                continue
            lines += wrap(f"{head}{label:<{width}} ->", outs, len(head) + width + 4)
        if lvl > 1:
            lines.append("       |")
    for note in unit.notes:
        lines.append(f"  note: {note}")
    return lines


def circle_report(unit: Unit) -> list[str]:
    lines = []
    for i, comp in enumerate(unit.circles(), 1):
        cycle = shortest_cycle(unit, comp)
        lines.append(f"{unit.label}: circle {i} of {len(comp)} files: {' '.join(comp)}")
        lines.append(f"  shortest: {' -> '.join(cycle)}")
        members = set(comp)
        for (a, b), syms in sorted(unit.edges.items()):
            if a in members and b in members:
                lines += wrap(f"  {a} -> {b} via", syms, 6)
    return lines


DOC_INTRO = """\
# Module structure inside each service

Generated by `tests/check/structure.py`; do not edit by hand. Regenerate after a build:

    python3 tests/check/structure.py --build build --services --doc docs/structure.md

Each `services/<svc>/` directory of C modules is drawn on its own. A module is one `.c`
file; headers are not modules. There is an edge `a.c -> b.c` when `a.c` uses a non-static
symbol defined in `b.c`, read with `nm` from the objects of the build tree (defined:
`T`/`D`/`B`/`R`..., used: `U`); `main.c` counts like any other file. A file with no object
is scanned from source instead, more crudely: the first line of each drawing ends in `[nm]`,
`[scan]` or `[nm+scan]` to say which.

Layers are levels: `L1` holds the modules that use nothing else in their directory (the
context, shared helpers), level n+1 the modules whose deepest dependency is on level n;
the highest level is drawn first (`main.c`, then `service.c` with the route table). Each
line lists a module and the modules it uses.

Files that use each other, directly or round a longer loop, form an import circle: they
share one level and are marked `(circle n)`, and the tool lists each circle edge with the
symbols that make it. `ctest -L check` runs this tool with `--services` as `check_structure`
(so does `./forge test`'s check stage) and fails while any circle exists.

`common/` is not checked and not drawn here: it is one library, `libnf`, not a service with
layers, and its HTTP server is one module, `nf_http`, split over four files (`nf_http.c`,
`nf_http_req.c`, `nf_http_reply.c`, `nf_http_route.c`, sharing `nf_http_internal.h`) that
call each other by design. Draw it with `--only common`.
"""


def write_doc(path: Path, units: list[Unit]) -> None:
    text = [DOC_INTRO]
    for unit in units:
        text.append(f"\n## {unit.label}\n\n```\n" + "\n".join(drawing(unit)) + "\n```\n")
        report = circle_report(unit)
        if report:
            text.append("\nImport circles to break:\n\n```\n" + "\n".join(report) + "\n```\n")
    path.write_text("".join(text), encoding="utf-8")


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(
        description="Draw module layers per service; exit 1 on an import circle.")
    ap.add_argument("build_pos", nargs="?", metavar="BUILD", help="build tree (objects)")
    ap.add_argument("--build", help="build tree (objects); same as the positional BUILD")
    ap.add_argument("--source", default=str(ROOT), help="source tree (default: this repo)")
    ap.add_argument("--nm", default="nm", help="nm program (default: nm)")
    ap.add_argument("--scan", action="store_true", help="scan sources, ignore objects")
    ap.add_argument("--doc", help="also write the drawing as markdown to this file")
    ap.add_argument("--only", action="append", default=[],
                    help="only this unit (e.g. services/gateway, common); repeatable")
    ap.add_argument("--services", action="store_true",
                    help="only the units under services/ (with --only: those as well)")
    args = ap.parse_args(argv)

    source = Path(args.source).resolve()
    build_arg = args.build or args.build_pos
    build = Path(build_arg).resolve() if build_arg else None
    if build is not None and not build.is_dir():
        print(f"structure: build tree {build} does not exist", file=sys.stderr)
        return 2
    found = find_units(source)
    if args.only or args.services:
        found = [(label, p) for label, p in found
                 if label in args.only or (args.services and label.startswith("services/"))]
    if not found:
        print(f"structure: no C modules under {source}", file=sys.stderr)
        return 2

    try:
        units = [load_unit(label, path, build, source, args) for label, path in found]
    except (OSError, subprocess.CalledProcessError) as err:
        print(f"structure: {err}", file=sys.stderr)
        return 2
    for unit in units:
        print("\n".join(drawing(unit)))
        print()
    if args.doc:
        write_doc(Path(args.doc), units)

    bad = [u for u in units if u.circles()]
    if not bad:
        print(f"structure: {len(units)} units, no import circle")
        return 0
    print("IMPORT CIRCLES (each must be broken):")
    for unit in bad:
        print("\n".join(circle_report(unit)))
    print(f"structure: import circle(s) in {', '.join(u.label for u in bad)}")
    return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
