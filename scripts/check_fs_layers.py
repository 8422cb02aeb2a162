#!/usr/bin/env python3
"""Checks the shape of the filesystem core (src/fs/), as docs/ARCHITECTURE.md
describes it:

1. Every module calls only modules in lower layers (LAYERS below, lowest
   first): no import cycles, and a reader knows from a module's layer what
   it may touch. A dependency is a `super::X` / `crate::fs::X` path, a
   `self.ns.` call (the namespace), or a `self.method(` call of a method
   defined in exactly one other file. mod.rs, the composition root, may name
   the types of any module for its fields, but calls none of their methods.
2. Only the namespace locks the inode table.

Exits 1 with one line per violation.
"""
import os
import re
import sys

LAYERS = [
    ["activity.rs", "attr.rs", "byte_names.rs", "journal.rs"],
    ["staged.rs"],
    ["namespace/mod.rs", "namespace/table.rs", "namespace/listing.rs", "namespace/staging.rs",
     "namespace/dir_names.rs"],
    ["mod.rs"],
    ["upload.rs"],
    ["metadata.rs", "lookup.rs", "listing.rs", "recover.rs", "spool.rs"],
    ["file.rs"],
    ["share.rs", "setattr.rs"],
    ["entries.rs", "xattr.rs"],
    ["rename.rs"],
]

root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src", "fs")
layer = {f: n for n, fs in enumerate(LAYERS) for f in fs}
src, defs = {}, {}
for d, _, files in os.walk(root):
    for name in files:
        rel = os.path.relpath(os.path.join(d, name), root)
        if not name.endswith(".rs") or "tests" in name:
            continue
        text = open(os.path.join(d, name)).read()
        cut = text.find("#[cfg(test)]\nmod tests {")
        text = text if cut < 0 else text[:cut]
        # Comments name modules without depending on them.
        src[rel] = re.sub(r"//[^\n]*", "", text)
        for m in re.finditer(r"\bfn\s+([a-z_0-9]+)", src[rel]):
            defs.setdefault(m.group(1), set()).add(rel)

problems = [f"{f}: not in a layer of scripts/check_fs_layers.py" for f in src if f not in layer]


def module_file(name, base):
    for cand in (f"{base}{name}.rs", f"{base}{name}/mod.rs"):
        if cand in src:
            return cand
    return None


for f, text in src.items():
    if f not in layer:
        continue
    base = os.path.dirname(f) + "/" if "/" in f else ""
    deps = set()
    for m in re.finditer(r"self\.([a-z_0-9]+)\(", text):
        owners = defs.get(m.group(1), set())
        if len(owners) == 1:
            deps |= owners
    if f != "mod.rs":
        if "self.ns." in text:
            deps.add("namespace/mod.rs")
        for m in re.finditer(r"crate::fs::([a-z_0-9]+)", text):
            deps.add(module_file(m.group(1), ""))
        # `super` is fs/ for fs/*.rs and namespace/mod.rs, and the
        # namespace for the other files under namespace/.
        in_submodule = bool(base) and not f.endswith("/mod.rs")
        for m in re.finditer(r"super::(?:\{([^}]*)\}|([a-z_0-9]+))", text):
            items = m.group(1).split(",") if m.group(1) else [m.group(2)]
            for item in items:
                head = item.strip().split("::")[0]
                if in_submodule:
                    deps.add(module_file(head, base) or f"{base}mod.rs")
                else:
                    deps.add(module_file(head, "") or "mod.rs")
    for d in deps - {None, f}:
        if d in layer and layer[d] >= layer[f] and not (
            d.startswith("namespace/") and f.startswith("namespace/")
        ):
            problems.append(f"{f} (layer {layer[f]}) depends on {d} (layer {layer[d]})")
    if "table.lock()" in text and not f.startswith("namespace/"):
        problems.append(f"{f} locks the inode table; only the namespace may")

for p in sorted(problems):
    print(f"check_fs_layers: {p}", file=sys.stderr)
sys.exit(1 if problems else 0)
