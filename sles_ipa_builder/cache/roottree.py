"""The root tree's cache layer: the qcow2's tree kept unpacked and shown as the build's root
without copying it (overlayfs), else copied.

The root-tree cache keeps one directory per image hash: rootfs/<the qcow2's sha256>/. A build mounts
it as the read-only lower layer of an overlayfs at `<build>/root`; everything the build writes lands
in `<build>/.root-upper`, so the cached tree is never changed and restoring it costs one mount,
whatever its size. Cold and warm builds both go this way, so both pack the same merged view (one
hash for both). The two most recently used trees are kept (cache_generations); older ones go when a
new one is made, unless a running build uses them (a shared flock on `<entry>.use`).

overlayfs needs a kernel with it (any current one), an upper filesystem with trusted xattrs and
d_type (ext4, xfs with ftype=1, btrfs, tmpfs), and the build's private mount namespace. When a mount
is refused (the workspace itself on overlayfs, as in some containers), or the build keeps its
workspace (--keep-workspace: the tree must outlive the build's mounts), the tree is copied with
`cp -a --reflink=auto`: near free on btrfs and xfs (reflinks), seconds on ext4.

Each tree keeps a record of what it holds beside it, rootfs/<sha256>.contents.json (contents.py),
written before the tree is renamed into place. A build checks the tree against it before using it:
a tree that differs, or has no record (an earlier version made it), is discarded and extracted again.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import time
from pathlib import Path
from typing import Any

from .. import run, space
from ..config.arch import Arch
from ..config.resolve import Config
from ..engine import namespace
from ..errors import CommandError, InputError
from ..inputs import image
from . import contents
from . import store as cache

log = logging.getLogger(__name__)


def record_path(entry: Path) -> Path:
    """Where a root tree's record of contents is kept: beside it, not in the tree the build mounts."""
    return entry.with_name(f"{entry.name}{cache.RECORD_SUFFIX}")


def problem(entry: Path) -> str | None:
    """Why the cached tree `entry` cannot be used (contents.problem: read in full), else None."""
    return contents.problem(record_path(entry), entry)


def prepare_root(cfg: Config, root: Path, *, accel: str = "auto", force: bool = False,
                 stack: contextlib.ExitStack | None = None, above: list[Path] | None = None,
                 checked: bool = False) -> dict[str, Any]:
    """Fill the empty directory `root` with the base tree; return facts for the build manifest.

    The tree is cached unpacked, in rootfs/<image sha256>/; with `stack` (a build, in its namespace)
    it becomes the lower layer of an overlayfs at `root` (layers.py), else it is copied. `above` are
    later layers of the build (cache/layers.py, topmost first), mounted over the root tree; only with
    overlayfs. `checked`: this build found the cached tree whole moments ago (with the layers it
    resumes from), so it is not read again; else it is checked against its record here."""
    start = time.monotonic()
    root.mkdir(parents=True, exist_ok=True)
    if cfg.base_tree:
        base = cfg.base_tree
        with space.writing(root, "the base tree into the workspace", lambda: cache.disk_usage(base)):
            run.run(["cp", "-a", "--reflink=auto", f"{base}/.", f"{root}/"], capture=True,
                    hint="the base tree must be readable")
        return {"source": "tree", "path": str(cfg.base_tree), "cache": "none",
                "seconds": round(time.monotonic() - start, 2)}
    img = image.find_image(cfg)
    fmt = image.sniff(img)
    sha = cache.file_sha256(img)
    facts: dict[str, Any] = {"source": fmt, "image": str(img), "sha256": sha}
    entry = cache.lookup("rootfs", sha, subject=str(img.resolve()), what="image hash", force=force)
    made = False
    with cache.locked(entry.path):
        reason = entry.reason
        usable = entry.path.is_dir() and (entry.hit or not force)  # another build may have made it meanwhile
        why_not = problem(entry.path) if usable and not checked else None
        if why_not is not None:
            cache.discard(entry.path, "root tree", why_not)
            usable, reason = False, f"discarded: {why_not}"
        if usable:
            facts.update(cache="hit", cache_file=str(entry.path))
        else:
            facts.update(cache="miss", cache_reason=reason, cache_file=str(entry.path))
            facts.update(_make_entry(img, fmt, entry.path, arch=cfg.arch, accel=accel, force=force))
            made = True
        cache.remember("rootfs", str(img.resolve()), sha)
        if stack is not None:
            cache.in_use(stack, entry.path)  # before the lock goes: no prune between finding and using
    if made:
        cache.prune("rootfs", max(1, cfg.cache_generations))  # 2: e.g. before and after an image update
    facts.update(restore(stack, entry.path, root, copy=cfg.keep_workspace, above=above))
    facts.setdefault("timings", {})["restore"] = facts["restore_seconds"]
    facts["seconds"] = round(time.monotonic() - start, 2)
    log.info("root tree from %s: cache %s, %.1fs", img.name, facts["cache"], facts["seconds"])
    return facts


def describe(cfg: Config) -> dict[str, str]:
    """The root layer a build would use and whether it is cached, for `summary`: no hashing, no
    writes (a qcow2 not hashed yet says so)."""
    if cfg.base_tree:
        return {"layer": "root", "key": f"--base-tree {cfg.base_tree}", "state": "copied, not cached"}
    try:
        img = image.find_image(cfg)
    except InputError as e:
        return {"layer": "root", "key": "-", "state": str(e)}
    sha = cache.known_sha256(img)
    if sha is None:
        return {"layer": "root", "key": f"sha256 of {img.name}", "state": "not hashed yet: the build hashes it"}
    entry = cache.cache_root() / "rootfs" / sha
    state = ("cached" if entry.is_dir() else
             "cached as .tar.zst by an earlier version (unpacked once)" if entry.with_name(f"{sha}.tar.zst").is_file()
             else "not cached: the build reads the qcow2")
    return {"layer": "root", "key": f"rootfs/{sha}", "state": state}


def _make_entry(img: Path, fmt: str, entry: Path, *, arch: Arch, accel: str, force: bool) -> dict[str, Any]:
    """The unpacked tree in `entry`, made atomically: from the qcow2 (libguestfs), or from the
    .tar.zst an earlier version of the builder cached for the same image (then removed)."""
    if entry.exists():  # --force: the old tree goes (if killed meanwhile, with the next temp: atomic_path)
        aside = entry.with_name(f".{entry.name}.tmp.old-{os.getpid()}")
        os.replace(entry, aside)
        shutil.rmtree(aside)
    archive = entry.with_name(f"{entry.name}.tar.zst")
    with (space.writing(entry.parent, f"the root tree of {img.name} into the cache"),
          cache.atomic_path(entry) as tmp):  # a half-extracted tree is gone before the error is told
        tmp.mkdir()
        if archive.is_file() and not force:
            facts: dict[str, Any] = {"from": archive.name, "timings": {"unpack": unpack(archive, tmp)}}
        else:
            facts = image.extract(img, fmt, tmp, arch=arch, accel=accel)
        contents.write(record_path(entry), tmp)  # before the rename: a tree in place has its record
    archive.unlink(missing_ok=True)
    cache.touch_use(entry)
    return facts


def unpack(archive: Path, root: Path) -> float:
    """A tree cached as .tar.zst by earlier versions: zstd -d | tar -x (two processes, two cores)."""
    start = time.monotonic()
    run.run(["tar", "--zstd", "-x", "-f", archive, "-C", root, *image.TAR_KEEP],
            hint=f"the cached root archive may be damaged: remove {archive} and build again")
    return round(time.monotonic() - start, 2)


def restore(stack: contextlib.ExitStack | None, layer: Path, root: Path, *, copy: bool = False,
            above: list[Path] | None = None) -> dict[str, object]:
    """Make the empty directory `root` show the tree `layer` (and `above` over it, when mounted).
    Returns how (for the build manifest): a copy never has `above`."""
    start = time.monotonic()
    how = "copy"
    if stack is not None and not copy and namespace.inside():
        try:
            _mount(stack, [*(above or []), layer], root)
            how = "overlay"
        except (CommandError, OSError) as e:
            log.info("overlayfs refused (%s): copying the cached tree instead", str(e).splitlines()[0][:200])
    if how == "copy":
        with space.writing(root, "the root tree into the workspace", lambda: cache.disk_usage(layer)):
            run.run(["cp", "-a", "--reflink=auto", f"{layer}/.", f"{root}/"], capture=True,
                    hint=f"check free space in {root.parent}")
    seconds = round(time.monotonic() - start, 2)
    log.info("root tree restored from the cache by %s in %.1fs", how, seconds)
    return {"restore": how, "restore_seconds": seconds}


def upper_dir(root: Path) -> Path:
    """Where a mounted root's writes land: the difference from its lower layers (checkpoints copy it)."""
    return root.with_name(f".{root.name}-upper")


def _mount(stack: contextlib.ExitStack, lowers: list[Path], root: Path) -> None:
    upper, work = upper_dir(root), root.with_name(f".{root.name}-work")
    layer = lowers[-1]
    for d in (upper, work):
        if d.exists():
            shutil.rmtree(d)
        d.mkdir(parents=True)
    st = os.lstat(layer)  # the merged root directory takes the upper one's owner and mode: the image's
    os.chown(upper, st.st_uid, st.st_gid)
    os.chmod(upper, st.st_mode & 0o7777)
    os.utime(upper, ns=(st.st_atime_ns, st.st_mtime_ns))
    root.mkdir(parents=True, exist_ok=True)
    try:
        namespace.overlay(stack, lowers, upper, work, root)
    except CommandError:
        shutil.rmtree(upper, ignore_errors=True)
        shutil.rmtree(work, ignore_errors=True)
        raise
