"""A streaming, reproducible cpio "newc" writer for whole-rootfs initramfs images.

The layout is what GNU cpio writes and what the kernel's init/initramfs.c reads: a 110-byte
ASCII header, the NUL-terminated name padded so header+name is 4-aligned, the data padded to 4,
a TRAILER!!! record, and the archive padded to 512 bytes. Names are stored without a leading
"./" (the root itself is "."), as `cpio -o --reproducible` does with `find .` input.

Packing is two passes: `scan()` walks the tree once (lstat only) so hard-link groups are known
before any data is written, then `write()` streams headers and file contents into a sink (the
compressor) through one large buffer. Hard links follow the newc convention: every link carries
the group's nlink and inode, and only the last one carries the data. The kernel creates the first
name as an empty file, links the later ones to it and fills it from the last; GNU cpio -i defers
the empty ones until the data arrives.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Protocol

from ..errors import BuildError

MAGIC = b"070701"
TRAILER = b"TRAILER!!!"
BLOCK = 512
MAX_FIELD = 0xFFFFFFFF
# Files up to this size are read in one call into the output buffer; larger ones stream in chunks.
SMALL_FILE = 1 << 20
FLUSH_AT = 4 << 20
CHUNK = 4 << 20

# exclude(relative path without "./", is_dir) -> True to leave the entry (and its contents) out.
Exclude = Callable[[bytes, bool], bool]


class Sink(Protocol):
    def write(self, data: bytes | bytearray | memoryview, /) -> object: ...


@dataclass(frozen=True)
class Synthetic:
    """An entry packed without existing in the tree (no mknod, no edits to the tree needed)."""

    mode: int  # full st_mode: file type and permission bits
    data: bytes = b""  # file contents, or the symlink target
    rdev: tuple[int, int] = (0, 0)
    uid: int = 0
    gid: int = 0

    @classmethod
    def file(cls, data: bytes, perm: int = 0o644) -> Synthetic:
        return cls(stat.S_IFREG | perm, data)

    @classmethod
    def symlink(cls, target: str) -> Synthetic:
        return cls(stat.S_IFLNK | 0o777, os.fsencode(target))

    @classmethod
    def directory(cls, perm: int = 0o755) -> Synthetic:
        return cls(stat.S_IFDIR | perm)

    @classmethod
    def chardev(cls, major: int, minor: int, perm: int = 0o666) -> Synthetic:
        return cls(stat.S_IFCHR | perm, rdev=(major, minor))


class Entry:
    """One archive member. `path` is the file to read the data from (regular files only)."""

    __slots__ = ("name", "path", "mode", "uid", "gid", "nlink", "mtime", "size", "rdev", "data", "link")

    def __init__(
        self,
        name: bytes,
        mode: int,
        uid: int,
        gid: int,
        mtime: int,
        size: int = 0,
        *,
        path: bytes | None = None,
        rdev: tuple[int, int] = (0, 0),
        data: bytes | None = None,
    ) -> None:
        self.name = name
        self.path = path
        self.mode = mode
        self.uid = uid
        self.gid = gid
        self.nlink = 1
        self.mtime = mtime
        self.size = size
        self.rdev = rdev
        self.data = data
        self.link: tuple[int, int] | None = None  # (st_dev, st_ino) of a hard-link group


@dataclass
class Scan:
    entries: list[Entry]
    data_bytes: int  # file contents to be written (hard links counted once)


def _join(rel: bytes, name: bytes) -> bytes:
    return name if rel == b"." else rel + b"/" + name


def _index_synthetic(synthetic: Mapping[str, Synthetic]) -> dict[bytes, dict[bytes, tuple[Synthetic, bool]]]:
    """parent -> name -> (entry, explicit). Missing parents become implicit dirs that a real one overrides."""
    children: dict[bytes, dict[bytes, tuple[Synthetic, bool]]] = {}
    for raw, syn in synthetic.items():
        rel = os.fsencode(raw.strip("/"))
        if not rel or rel == b".":
            raise ValueError(f"synthetic entry for the root: {raw!r}")
        children.setdefault(os.path.dirname(rel) or b".", {})[os.path.basename(rel)] = (syn, True)
        parent = os.path.dirname(rel)
        while parent:
            up = os.path.dirname(parent) or b"."
            children.setdefault(up, {}).setdefault(os.path.basename(parent), (Synthetic.directory(), False))
            parent = os.path.dirname(parent)
    return children


def scan(
    root: os.PathLike[str] | str,
    *,
    exclude: Exclude | None = None,
    synthetic: Mapping[str, Synthetic] | None = None,
    source_date_epoch: int | None = None,
) -> Scan:
    """Walk `root` (not crossing filesystems) in sorted order and return the members to write.

    Children are sorted bytewise within each directory and a directory precedes its contents.
    Sockets are skipped. Synthetic entries replace a real entry of the same path or are added.
    """
    root_b = os.fsencode(os.fspath(root))
    root_st = os.lstat(root_b)
    if not stat.S_ISDIR(root_st.st_mode):
        raise BuildError(f"not a directory: {os.fsdecode(root_b)}", "pass the root of the unpacked tree")
    root_dev = root_st.st_dev
    sde = source_date_epoch
    syn_children = _index_synthetic(synthetic or {})
    entries: list[Entry] = []
    links: dict[tuple[int, int], list[Entry]] = {}
    data_bytes = 0

    def clamp(mtime: float) -> int:
        t = max(int(mtime), 0)
        return min(t, sde) if sde is not None else min(t, MAX_FIELD)

    def add_synthetic(rel: bytes, syn: Synthetic) -> Entry:
        mt = sde if sde is not None else 0
        e = Entry(rel, syn.mode, syn.uid, syn.gid, mt, len(syn.data), rdev=syn.rdev, data=syn.data)
        entries.append(e)
        return e

    def visit(rel: bytes, path: bytes | None, dir_entry: Entry) -> None:
        nonlocal data_bytes
        real: dict[bytes, os.DirEntry[bytes]] = {}
        if path is not None:
            with os.scandir(path) as it:
                real = {de.name: de for de in it}
        syn_here = syn_children.get(rel, {})
        names = sorted(real.keys() | syn_here.keys()) if syn_here else sorted(real)
        subdirs = 0
        for name in names:
            crel = _join(rel, name)
            syn = syn_here.get(name)
            de = real.get(name)
            if syn is not None and (syn[1] or de is None):
                e = add_synthetic(crel, syn[0])
                if stat.S_ISDIR(syn[0].mode):
                    subdirs += 1
                    # an implicit parent dir never hides real content; an explicit one does
                    visit(crel, None, e)
                else:
                    data_bytes += e.size
                continue
            assert de is not None
            is_dir = de.is_dir(follow_symlinks=False)
            if exclude is not None and exclude(crel, is_dir):
                continue
            st = de.stat(follow_symlinks=False)
            mode = st.st_mode
            fmt = stat.S_IFMT(mode)
            e = Entry(crel, mode, st.st_uid, st.st_gid, clamp(st.st_mtime))
            if fmt == stat.S_IFREG:
                if st.st_size > MAX_FIELD:
                    raise BuildError(
                        f"{os.fsdecode(crel)} is {st.st_size} bytes, over the 4 GiB newc limit",
                        "remove the file or prune it from the ramdisk",
                    )
                e.size = st.st_size
                e.path = de.path
                if st.st_nlink > 1:
                    key = (st.st_dev, st.st_ino)
                    e.link = key
                    links.setdefault(key, []).append(e)
                else:
                    data_bytes += e.size
                entries.append(e)
            elif fmt == stat.S_IFDIR:
                subdirs += 1
                entries.append(e)
                # like find -xdev: a mountpoint is listed, its contents are not
                descend = st.st_dev == root_dev
                visit(crel, de.path if descend else None, e)
            elif fmt == stat.S_IFLNK:
                e.data = os.readlink(de.path)
                e.size = len(e.data)
                entries.append(e)
            elif fmt in (stat.S_IFCHR, stat.S_IFBLK):
                e.rdev = (os.major(st.st_rdev), os.minor(st.st_rdev))
                entries.append(e)
            elif fmt == stat.S_IFIFO:
                entries.append(e)
            # sockets are runtime objects: never packed (GNU cpio warns and skips them too)
        dir_entry.nlink = 2 + subdirs

    top = Entry(b".", root_st.st_mode, root_st.st_uid, root_st.st_gid, clamp(root_st.st_mtime))
    entries.append(top)
    visit(b".", root_b, top)

    for group in links.values():
        size = group[-1].size
        for e in group:
            e.nlink = len(group)
            e.size = 0
        group[-1].size = size
        data_bytes += size
        if len(group) == 1:
            group[0].link = None  # its other names are outside the archive
    return Scan(entries, data_bytes)


def _header(ino: int, e: Entry, size: int, namesize: int) -> bytes:
    return b"070701%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X" % (
        ino, e.mode, e.uid, e.gid, e.nlink, e.mtime, size, 0, 0, e.rdev[0], e.rdev[1], namesize, 0,
    )  # fmt: skip


def _pad(n: int) -> bytes:
    return b"\0" * (-n & 3)


def write(entries: Iterable[Entry], sink: Sink, progress: Callable[[int], None] | None = None) -> int:
    """Write the members, the trailer and the 512-byte end padding to `sink`; return bytes written."""
    buf = bytearray()
    total = 0
    inos: dict[tuple[int, int], int] = {}
    chunk = bytearray(CHUNK)
    view = memoryview(chunk)
    rd_flags = os.O_RDONLY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
    done = 0

    for ino, e in enumerate(entries):
        if e.link is not None:
            ino = inos.setdefault(e.link, ino)
        name = e.name
        namesize = len(name) + 1
        size = e.size
        buf += _header(ino, e, size, namesize)
        buf += name
        buf += b"\0" * (1 + (-(110 + namesize) & 3))
        if size:
            if e.path is None:
                assert e.data is not None
                buf += e.data
            else:
                fd = os.open(e.path, rd_flags)
                try:
                    if size <= SMALL_FILE:
                        data = os.read(fd, size)
                        while len(data) < size:
                            more = os.read(fd, size - len(data))
                            if not more:
                                break
                            data += more
                        if len(data) != size:
                            raise _changed(e.name)
                        buf += data
                    else:
                        total += len(buf)
                        sink.write(buf)
                        buf.clear()
                        left = size
                        while left:
                            n = os.readv(fd, [view[: min(left, CHUNK)]])
                            if n == 0:
                                raise _changed(e.name)
                            sink.write(view[:n])
                            left -= n
                        total += size
                finally:
                    os.close(fd)
            buf += _pad(size)
            done += size
        if len(buf) >= FLUSH_AT:
            total += len(buf)
            sink.write(buf)
            buf.clear()
            if progress is not None:
                progress(done)

    buf += b"070701%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X" % (
        0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, len(TRAILER) + 1, 0,
    )  # fmt: skip
    buf += TRAILER + b"\0" * (1 + (-(110 + len(TRAILER) + 1) & 3))
    total += len(buf)
    buf += b"\0" * (-total % BLOCK)
    total += -total % BLOCK
    sink.write(buf)
    if progress is not None:
        progress(done)
    return total


def _changed(name: bytes) -> BuildError:
    return BuildError(
        f"{os.fsdecode(name)} changed size while it was packed",
        "nothing may write to the tree while the ramdisk is packed",
    )
