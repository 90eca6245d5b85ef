#!/usr/bin/env python3
"""Checks that every #include between the project's modules points one way.

kernels/ -> engine/ (io/ -> text/, graph/ -> observe/, generate/) -> models/ -> engine/api/ ->
tools/: a file may include its own module's headers and those of the modules listed for it below,
nothing else (so there are no cycles). engine/api/ (the public library) is the top layer of the
engine: it is built on models/. Run by CTest as `layout_deps`; prints each offending include."""
import pathlib
import re
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
ENGINE = ["engine/io", "engine/text", "engine/graph", "engine/generate", "engine/observe"]
API = "engine/api"
ALLOWED = {
    "kernels": set(),
    "engine/io": {"kernels"},
    "engine/text": {"engine/io"},
    "engine/graph": {"engine/io", "kernels"},
    "engine/generate": {"engine/io", "kernels"},
    "engine/observe": {"engine/graph", "engine/io", "kernels"},
    "models": set(ENGINE) | {"kernels"},
    API: set(ENGINE) | {"kernels", "models"},
    "tools": set(ENGINE) | {"kernels", "models", API},
}
INCLUDE = re.compile(r'^\s*#\s*include\s+"([^"]+)"', re.M)


def module_of(rel):
    for m in ENGINE + [API]:
        if rel.startswith(m + "/"):
            return m
    top = rel.split("/", 1)[0]
    if top == "engine":
        return "engine (no concern folder)"
    return top


def main():
    bad, files, edges = [], 0, set()
    for top in ["kernels", "engine", "models", "tools"]:
        for p in sorted((ROOT / top).rglob("*")):
            if p.suffix not in {".h", ".hpp", ".cpp", ".cc"}:
                continue
            rel = p.relative_to(ROOT).as_posix()
            mod = module_of(rel)
            files += 1
            if mod not in ALLOWED:
                bad.append(f"{rel}: file outside any module folder ({mod})")
                continue
            for inc in INCLUDE.findall(p.read_text(encoding="utf-8")):
                if "/" not in inc:
                    continue  # a header beside the file
                dep = module_of(inc)
                if dep not in ALLOWED and not (ROOT / inc).exists():
                    continue  # a system or third-party header in quotes
                if dep != mod:
                    edges.add((mod, dep))
                    if dep not in ALLOWED[mod]:
                        bad.append(f"{rel}: includes {inc} ({mod} may not use {dep})")
    for line in bad:
        print("FAIL", line)
    print(f"{files} files, {len(edges)} module edges: " +
          ", ".join(f"{a} -> {b}" for a, b in sorted(edges)))
    if bad:
        print(f"{len(bad)} include(s) against the dependency order")
        return 1
    print("every include follows the dependency order")
    return 0


if __name__ == "__main__":
    sys.exit(main())
