"""Which shared libraries a tree's ELF files link (DT_NEEDED), resolved as the target's loader would.

Used to find the libraries that only dropped packages needed (pkgdrop.py). Reads ELF files with
pyelftools; never runs anything from the tree.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from elftools.common.exceptions import ELFError
from elftools.elf.dynamic import DynamicSection
from elftools.elf.elffile import ELFFile

from ..engine.paths import in_root
from ..errors import BuildError

# The loader's default directories (SUSE's lib64 layout; a Debian-shaped tree's multiarch
# directories, lib/<triplet>, come from its ld.so.conf.d and are globbed too).
LIB_DIRS = ("lib64", "usr/lib64", "lib", "usr/lib")
SKIP_TREES = ("usr/lib/modules", "lib/modules", "usr/lib/firmware", "lib/firmware", "proc", "sys", "dev")


def real(tree: Path, rel: str) -> str | None:
    """`rel` with every link resolved inside the tree (paths.in_root), relative again; None if it
    leads nowhere."""
    try:
        path = in_root(tree, rel, follow_last=True)
    except BuildError:  # a link loop
        return None
    return str(path.relative_to(os.path.realpath(tree))) if path.exists() else None


def _ld_conf_dirs(tree: Path) -> list[str]:
    out: list[str] = []
    confs = [tree / "etc/ld.so.conf", *sorted((tree / "etc/ld.so.conf.d").glob("*.conf"))]
    for conf in confs:
        if conf.is_file():
            for line in conf.read_text(errors="replace").splitlines():
                line = line.split("#", 1)[0].strip()
                if line.startswith("/"):
                    out.append(line.strip("/"))
    return out


def needed(path: Path) -> tuple[list[str], list[str]] | None:
    """(DT_NEEDED names, RUNPATH/RPATH dirs) of an ELF file; None if it is not a dynamic ELF."""
    try:
        with path.open("rb") as f:
            if f.read(4) != b"\x7fELF":
                return None
            f.seek(0)
            elf = ELFFile(f)
            dyn = elf.get_section_by_name(".dynamic")
            if not isinstance(dyn, DynamicSection):
                return None
            names, paths = [], []
            tag: Any  # pyelftools sets the string of a tag as an attribute named after it
            for tag in dyn.iter_tags():
                if tag.entry.d_tag == "DT_NEEDED":
                    names.append(tag.needed)
                elif tag.entry.d_tag == "DT_RUNPATH":
                    paths += tag.runpath.split(":")
                elif tag.entry.d_tag == "DT_RPATH":
                    paths += tag.rpath.split(":")
            return names, paths
    except (ELFError, OSError, ValueError, AttributeError):
        return None


class Graph:
    """Every dynamic ELF file of a tree (relative, links resolved) and the files its NEEDED names resolve to."""

    def __init__(self, tree: Path) -> None:
        self.tree = tree = Path(os.path.realpath(tree))
        multiarch = sorted(str(d.relative_to(tree)) for d in tree.glob("usr/lib/*-linux-gnu*") if d.is_dir())
        self.dirs = [*_ld_conf_dirs(tree), *multiarch, *LIB_DIRS]
        self.edges: dict[str, set[str]] = {}
        for dirpath, dirnames, files in os.walk(tree):
            rel_dir = os.path.relpath(dirpath, tree)
            dirnames[:] = [d for d in dirnames if os.path.normpath(os.path.join(rel_dir, d)) not in SKIP_TREES]
            for name in files:
                p = Path(dirpath, name)
                if p.is_symlink() or not p.is_file():
                    continue
                found = needed(p)
                if found is not None:
                    rel = str(p.relative_to(tree))
                    self.edges[rel] = {r for n in found[0] if (r := self._resolve(n, rel, found[1])) is not None}

    def _resolve(self, name: str, origin: str, runpaths: list[str]) -> str | None:
        here = os.path.dirname(origin)
        extra = [p.replace("$ORIGIN", "/" + here).replace("${ORIGIN}", "/" + here).strip("/") for p in runpaths]
        for d in [*extra, *self.dirs]:
            hit = real(self.tree, f"{d}/{name}")
            if hit is not None:
                return hit
        return None

    def is_library(self, rel: str) -> bool:
        """A shared library in one of the loader's directories: loaded when something links it."""
        return os.path.dirname(rel) in self.dirs and ".so" in os.path.basename(rel)

    def closure(self, start: Iterable[str]) -> set[str]:
        seen: set[str] = set()
        todo = [s for s in start if s in self.edges]
        while todo:
            cur = todo.pop()
            if cur in seen:
                continue
            seen.add(cur)
            todo.extend(self.edges.get(cur, set()) - seen)
        return seen
