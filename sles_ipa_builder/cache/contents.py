"""What a cache entry holds, recorded when it is made and checked before it is used.

A cache entry is trusted by its key only as long as nothing touched its files: a file emptied or
damaged in a kept layer (its mtime kept) would otherwise be packed into the ramdisk by a build that
says "hit". So each entry keeps a record of its tree beside it, one row per path: its type, mode and
owner, and for a regular file its size and sha256 (read now, in large chunks, on a few threads:
hashlib lets go of the GIL), for a symlink its target, for a character device (an overlayfs
whiteout) its device number, for a directory whether overlayfs marks it opaque. `problem()` walks
the tree again and names the first path that differs; the caller discards the entry and rebuilds.

Not recorded: mtimes (they say nothing of the bytes; the damage this guards against kept them),
which names are hard links of one file, and xattrs other than overlayfs' opaque mark.
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from . import store as cache

NAME = "contents.json"
VERSION = 1
THREADS = min(4, os.cpu_count() or 1)  # hashlib lets go of the GIL; most time is small files' reads
OPAQUE = ("trusted.overlay.opaque", "user.overlay.opaque")

Row = list[object]  # [relative path, type, mode, "uid:gid", size, sha256 / target / device / opaque]


def _opaque(path: str) -> bool:
    for name in OPAQUE:
        try:
            if os.getxattr(path, name, follow_symlinks=False) == b"y":
                return True
        except OSError:  # no such xattr, or trusted.* not readable here: not marked
            continue
    return False


def _walk(tree: Path) -> Iterator[tuple[str, str, os.stat_result]]:
    """(relative path, full path, lstat) of everything under `tree`, sorted, the tree itself first."""
    yield ".", str(tree), os.lstat(tree)
    for dirpath, dirnames, filenames in os.walk(tree):
        dirnames.sort()
        for name in sorted(dirnames + filenames):
            full = os.path.join(dirpath, name)
            yield os.path.relpath(full, tree), full, os.lstat(full)


def _row(rel: str, full: str, st: os.stat_result) -> Row:
    mode, owner = stat.S_IMODE(st.st_mode), f"{st.st_uid}:{st.st_gid}"
    if stat.S_ISREG(st.st_mode):
        return [rel, "f", mode, owner, st.st_size, ""]  # the hash is filled in by record()
    if stat.S_ISLNK(st.st_mode):
        return [rel, "l", mode, owner, 0, os.readlink(full)]
    if stat.S_ISDIR(st.st_mode):
        return [rel, "d", mode, owner, 0, "opaque" if _opaque(full) else ""]
    if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
        kind = "c" if stat.S_ISCHR(st.st_mode) else "b"
        return [rel, kind, mode, owner, 0, f"{os.major(st.st_rdev)}:{os.minor(st.st_rdev)}"]
    return [rel, "p" if stat.S_ISFIFO(st.st_mode) else "s", mode, owner, 0, ""]


def record(tree: Path) -> list[Row]:
    """The rows of `tree` as it is now, every regular file's bytes read and hashed."""
    rows = [_row(rel, full, st) for rel, full, st in _walk(tree)]
    files = [r for r in rows if r[1] == "f"]
    with ThreadPoolExecutor(THREADS) as pool:
        for r, digest in zip(files, pool.map(lambda r: cache.sha256_uncached(tree / str(r[0])), files),
                             strict=True):
            r[5] = digest
    return rows


def write(path: Path, tree: Path) -> None:
    """Record `tree` into `path`, atomically: a record is whole or absent."""
    rows = record(tree)
    with cache.atomic_path(path) as tmp:
        tmp.write_text(json.dumps({"version": VERSION, "rows": rows}, separators=(",", ":")))


def read(path: Path) -> list[Row] | str:
    """The rows kept in `path`, or why they cannot be used."""
    if not path.is_file():
        return "no record of its contents (made by an older version)"
    try:
        data = json.loads(path.read_text())
        rows = data["rows"] if data.get("version") == VERSION else None
    except (OSError, ValueError, AttributeError, KeyError):
        rows = None
    if not isinstance(rows, list) or not all(isinstance(r, list) and len(r) == 6 for r in rows):
        return f"its record of contents {path.name} is unreadable"
    return rows


def _differs(kept: Row, now: Row) -> str:
    rel = str(kept[0])
    if now[1] != kept[1]:
        return f"{rel} is not the kind of file that was kept"
    if kept[1] == "f" and now[4] != kept[4]:
        return f"{rel} differs from what was kept (size {kept[4]} → {now[4]})"
    return f"{rel} differs from what was kept"


def problem(path: Path, tree: Path) -> str | None:
    """None when `tree` holds exactly what `path` records; else the first difference, in words
    ("usr/bin/x differs from what was kept"). Unreadable trees count as differing."""
    kept = read(path)
    if isinstance(kept, str):
        return kept
    if not tree.is_dir():
        return "its tree is missing"
    try:
        now = {str(r[0]): r for r in record(tree)}
    except OSError as e:
        return f"{os.path.relpath(e.filename or tree, tree)} is unreadable ({e.strerror})"
    for row in kept:
        mine = now.pop(str(row[0]), None)
        if mine is None:
            return f"{row[0]} is missing"
        if mine != row:
            return _differs(row, mine)
    if now:
        return f"{min(now)} was not kept (an extra file)"
    return None
