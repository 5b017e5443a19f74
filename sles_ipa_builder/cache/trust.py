"""Whether a build may use the cache entries it found: each is read again and compared with the
record kept when it was made (contents.py), before any of it is mounted.

A key says what an entry was made from, not that its files are still what was kept: a file emptied
in a kept layer (its mtime kept) would be packed by a build that says "hit". So before a build
resumes from a layer, every kept layer of its keys must be whole (meta.json, tree, record: cheap),
and the layer it resumes from, the layers it is mounted with and the root tree under them are read
in full. The first entry that is not what was kept is discarded with the layers above it (their keys
hold its key; the root tree is under them all), with one warning naming it and its first bad path,
and the build resumes from the next lower whole layer, or from nothing.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path

from . import contents, roottree
from . import store as cache
from .entries import Layer

log = logging.getLogger(__name__)

Chain = Callable[[Layer], list[Path]]  # layers.chain: a layer's tree and those it is mounted with, topmost first


def broken(entry: Path) -> str | None:
    """Why a kept layer is not whole (its meta.json, its tree, its record), without reading its files."""
    try:
        ok = isinstance(json.loads((entry / "meta.json").read_text()), dict)
    except (OSError, ValueError):
        ok = False
    if not ok:
        return "its meta.json is missing or unreadable"
    if not (entry / "tree").is_dir():
        return "its tree is missing"
    kept = contents.read(entry / contents.NAME)
    return kept if isinstance(kept, str) else None


def problem(entry: Path) -> str | None:
    """Why a kept layer cannot be used: broken(), or its tree against its record."""
    return broken(entry) or contents.problem(entry / contents.NAME, entry / "tree")


def _first_bad(best: Layer, root_entry: Path, chain: Chain) -> tuple[Path, str] | None:
    """The lowest entry under `best` (the root tree, the layers it is mounted with, itself) that is
    not what was kept, and why; None when all are."""
    why_not = roottree.problem(root_entry) if root_entry.is_dir() else None  # gone: the root step makes it
    if why_not is not None:
        return root_entry, why_not
    for tree in reversed(chain(best)):
        why_not = problem(tree.parent)
        if why_not is not None:
            return tree.parent, why_not
    return None


def _discard(found: list[Layer], entry: Path, why_not: str) -> None:
    """Discard `entry` and the found layers above it (their keys hold its key; the root tree is under
    them all), with one warning naming it and its first bad path."""
    at = next((i for i, x in enumerate(found) if x.path == entry), 0)
    above = [x for x in found[at:] if x.path != entry and x.path.exists()]  # hit or not: none is made over it
    also = f" with the layers above it ({', '.join(x.name for x in above)})" if above else ""
    what = "root tree" if entry.parent.name == "rootfs" else f"layer {entry.parent.name}"
    with cache.locked(entry):
        cache.discard(entry, what, why_not, also)
    for x in found:
        if x.path == entry:
            x.state = f"miss: discarded ({why_not})"
    for x in above:
        with cache.locked(x.path):
            cache.remove_damaged(x.path)
        x.state = "miss: discarded (an entry under it was damaged)"


def trusted(found: list[Layer], root_entry: Path, chain: Chain) -> Layer | None:
    """The deepest cached layer that, with everything it is mounted with, holds what was kept.

    Every kept layer of this build's keys must be whole (broken: cheap); the one the build resumes
    from, the layers under it that it is mounted with and the root tree are read in full (_first_bad).
    A damaged entry goes with the layers above it, and the next lower hit is checked, down to none."""
    for x in found:
        why_not = broken(x.path) if x.path.is_dir() else None
        if why_not is not None:
            _discard(found, x.path, why_not)
            break  # the layers above it went with it
    best = next((x for x in reversed(found) if x.state == "hit"), None)
    while best is not None:
        bad = _first_bad(best, root_entry, chain)
        if bad is None:
            return best
        _discard(found, *bad)
        best = next((x for x in reversed(found) if x.state == "hit"), None)
    return None
