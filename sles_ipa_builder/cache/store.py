"""Content-addressed caches under ${XDG_CACHE_HOME:-~/.cache}/sles-ipa-builder/<kind>/.

Entries are named by the hash of what they were made from (the qcow2's sha256, a git URL), written
atomically (temp file + rename) and guarded by file locks, so two builds can share one cache. When an
entry is not reused the log says why: `--force`, a new key for the same subject (a new image hash),
or simply missing. Each kind keeps a small `subjects.json` (subject -> last key) for that message.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout

from ..errors import BuildError

log = logging.getLogger(__name__)

CHUNK = 1 << 20
LOCK_TIMEOUT = 1800.0  # a cold root extraction under TCG can hold a lock for minutes
RECORD_SUFFIX = ".contents.json"  # a root tree's record of its contents, beside it (contents.py)


def cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "sles-ipa-builder"


def cache_dir(kind: str) -> Path:
    """The directory of one cache kind (rootfs, git, zypper, hashes...), created on first use."""
    d = cache_root() / kind
    d.mkdir(parents=True, exist_ok=True)
    return d


@contextmanager
def locked(path: Path | str, timeout: float = LOCK_TIMEOUT) -> Iterator[None]:
    """Hold `<path>.lock` exclusively. Other builds wait (bounded), then fail with a hint."""
    lock_path = f"{os.fspath(path)}.lock"
    Path(lock_path).parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(lock_path)
    try:
        lock.acquire(timeout=timeout)
    except Timeout:
        raise BuildError(f"cache entry {path} is locked by another build for more than {timeout:.0f}s",
                         f"wait for the other build, or remove {lock_path} if no build is running") from None
    try:
        yield
    finally:
        lock.release()


@contextmanager
def atomic_path(final: Path) -> Iterator[Path]:
    """Yield a temp path next to `final`; rename it into place only if the block succeeds.

    Every caller holds the lock of `final`, so a temp of it already there was left by a process that
    was killed while writing it: it is removed first, with one line that says so."""
    final.parent.mkdir(parents=True, exist_ok=True)
    for stale in final.parent.glob(f".{final.name}.tmp.*"):
        log.info("cache: removed %s, left by an interrupted build", stale.name)
        remove(stale)
    tmp = final.with_name(f".{final.name}.tmp.{os.getpid()}")
    try:
        yield tmp
        os.replace(tmp, final)
    finally:
        remove(tmp)


def remove(path: Path) -> None:
    """Remove a file or a directory tree, if there."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def _write_json(path: Path, data: dict[str, Any]) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=1, sort_keys=True))


def sha256_uncached(path: Path) -> str:
    """sha256 of the file's bytes, read now in large chunks; nothing remembered. For files just
    written (artifacts, temp files) and for checks that must read what is there (publish)."""
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


def file_sha256(path: Path) -> str:
    """sha256 of a file, remembered by (path, size, mtime_ns, inode) in the cache's hash index, so a
    1 GB qcow2 is hashed once. For inputs that stay where they are; see sha256_uncached."""
    st = path.stat()
    real = os.path.realpath(path)
    stamp = [st.st_size, st.st_mtime_ns, st.st_ino, st.st_dev]
    index_path = cache_dir("hashes") / "index.json"
    known = _read_json(index_path).get(real)
    if isinstance(known, dict) and known.get("stamp") == stamp:
        return str(known["sha256"])
    digest = sha256_uncached(path)
    with locked(index_path):
        index = _read_json(index_path)
        index[real] = {"stamp": stamp, "sha256": digest}
        _write_json(index_path, index)
    log.debug("sha256 %s = %s", path, digest)
    return digest


def known_sha256(path: Path) -> str | None:
    """The sha256 file_sha256 remembered for this file as it is now, else None; reads, never hashes."""
    st = path.stat()
    known = _read_json(cache_root() / "hashes" / "index.json").get(os.path.realpath(path))
    if isinstance(known, dict) and known.get("stamp") == [st.st_size, st.st_mtime_ns, st.st_ino, st.st_dev]:
        return str(known["sha256"])
    return None


def url_key(url: str) -> str:
    """A short stable directory name for something identified by a URL."""
    return hashlib.sha256(url.encode()).hexdigest()[:20]


@dataclass(frozen=True)
class Lookup:
    """Result of looking an entry up: where it is (or will be), whether to reuse it, and why (not)."""

    path: Path
    hit: bool
    reason: str


def lookup(kind: str, key: str, *, subject: str, what: str = "hash", suffix: str = "",
           force: bool = False) -> Lookup:
    """Find the entry `<kind>/<key><suffix>` made for `subject` and log whether it is reused and why.

    `what` names the key in the message ("image hash", "ref"): "new image hash for base.qcow2 (ab12… →
    cd34…)" tells the user a rebuild was caused by a changed input, not by a lost cache.
    """
    path = cache_dir(kind) / f"{key}{suffix}"
    previous = last_key(kind, subject)
    if force:
        reason = "--force"
    elif path.exists():
        log.info("cache hit: %s %s (%s %s)", kind, subject, what, key[:12])
        return Lookup(path, True, "hit")
    elif previous and previous != key:
        reason = f"new {what} ({str(previous)[:12]} → {key[:12]})"
    elif previous:
        reason = "entry missing (removed from the cache)"
    else:
        reason = "not cached yet"
    log.info("cache miss: %s %s: %s", kind, subject, reason)
    return Lookup(path, False, reason)


def last_key(kind: str, subject: str) -> str | None:
    """The key `subject` was last built with, if any."""
    value = _read_json(cache_dir(kind) / "subjects.json").get(subject)
    return str(value) if value else None


def remember(kind: str, subject: str, key: str) -> None:
    """Record that `subject` was last built with `key` (for the next miss message)."""
    index_path = cache_dir(kind) / "subjects.json"
    with locked(index_path):
        index = _read_json(index_path)
        index[subject] = key
        _write_json(index_path, index)


def in_use(stack: contextlib.ExitStack, entry: Path) -> None:
    """Mark `entry` as used by this build until `stack` closes (a shared flock on `<entry>.use`):
    prune() leaves it alone, as a running build's overlay reads it."""
    fd = os.open(f"{entry}.use", os.O_RDWR | os.O_CREAT, 0o644)
    fcntl.flock(fd, fcntl.LOCK_SH)
    stack.callback(os.close, fd)
    touch_use(entry)


def touch_use(entry: Path) -> None:
    """Record a use of `entry` (the mtime of `<entry>.use`): prune() removes the least recently used."""
    Path(f"{entry}.use").touch()


def last_use(entry: Path) -> float:
    try:
        return os.stat(f"{entry}.use").st_mtime
    except FileNotFoundError:
        return entry.stat().st_mtime


def _busy(entry: Path) -> bool:
    fd = os.open(f"{entry}.use", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # closing drops the lock
    return False


def prune(kind: str, keep: int) -> list[Path]:
    """Keep the `keep` most recently used directory entries of `kind`; remove the older ones that no
    running build uses. Returns what went."""
    entries = sorted((p for p in cache_dir(kind).iterdir() if p.is_dir() and not p.name.startswith(".")),
                     key=last_use, reverse=True)
    removed = []
    for old in entries[keep:]:
        with locked(old):
            if _busy(old):
                log.info("cache %s: %s is in use by a running build; kept", kind, old.name[:12])
                continue
            shutil.rmtree(old)
            Path(f"{old}{RECORD_SUFFIX}").unlink(missing_ok=True)
        removed.append(old)
        log.info("cache %s: removed %s (only the %d most recently used are kept)", kind, old.name[:12], keep)
    return removed


def discard(entry: Path, what: str, why_not: str, also: str = "") -> None:
    """Remove an entry found damaged, with the one warning that says so: "cache layer tree 1a2b3c…:
    discarded, <path> differs from what was kept; rebuilding". `also`: what goes with it."""
    log.warning("cache %s %s…: discarded%s, %s; rebuilding", what, entry.name[:12], also, why_not)
    remove_damaged(entry)


def remove_damaged(entry: Path) -> None:
    """Remove an entry and its record. It is renamed aside first, so no build finds it half removed;
    a running build that still uses it keeps the aside copy (until `clean`)."""
    if not entry.exists():
        return
    aside = entry.with_name(f".{entry.name}.discarded.{os.getpid()}")
    busy = _busy(entry)
    os.replace(entry, aside)
    Path(f"{entry}{RECORD_SUFFIX}").unlink(missing_ok=True)
    if not busy:
        shutil.rmtree(aside, ignore_errors=True)


def disk_usage(path: Path) -> int:
    """Bytes allocated under path (hard links counted once, not crossing filesystems)."""
    seen: set[tuple[int, int]] = set()
    total = 0
    top = os.lstat(path)
    for dirpath, dirnames, filenames in os.walk(path):
        for name in (*dirnames, *filenames):
            with contextlib.suppress(OSError):
                st = os.lstat(os.path.join(dirpath, name))
                if st.st_dev != top.st_dev or (st.st_ino, st.st_dev) in seen:
                    continue
                seen.add((st.st_ino, st.st_dev))
                total += st.st_blocks * 512
    return total


def clean(keep: tuple[str, ...] = ()) -> list[Path]:
    """Remove every cache kind but those in `keep` (`clean -ff` keeps the test media). Returns what went.

    Lock files (`<kind>.lock` beside a kind) stay: they are empty, and removing one that a running
    build holds would let the next build take a second lock on a new file.
    """
    root = cache_root()
    if not root.is_dir():
        return []
    removed = []
    for entry in sorted(root.iterdir()):
        if entry.name in keep or entry.name.endswith(".lock"):
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()
        removed.append(entry)
    return removed
