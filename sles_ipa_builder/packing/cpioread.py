"""Reading an initramfs: newc archives, plain or gzip/zstd/xz/lzma compressed, one after the other
(a plain segment such as early microcode may precede the compressed one). size-report and the tests
read ramdisks through it; the writer is cpio.py."""

from __future__ import annotations

import gzip
import lzma
import stat
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import zstandard

from ..errors import InputError

CHUNK = 1 << 20


def detect(head: bytes) -> str:
    if head.startswith((b"070701", b"070702")):
        return "plain"
    if head.startswith(b"\x1f\x8b"):
        return "gzip"
    if head.startswith(b"\x28\xb5\x2f\xfd"):
        return "zstd"
    if head.startswith(b"\xfd7zXZ\x00"):
        return "xz"
    if head.startswith(b"\x5d\x00\x00"):
        return "lzma"
    raise InputError(f"not a cpio initramfs (unknown magic {head[:6]!r})", "pass a .initramfs file")


def decompressor(kind: str, raw: IO[bytes]) -> IO[bytes]:
    if kind == "gzip":
        return gzip.GzipFile(fileobj=raw)  # type: ignore[return-value]  # reads concatenated members
    if kind == "zstd":
        return zstandard.ZstdDecompressor().stream_reader(raw, read_across_frames=True)
    if kind in ("xz", "lzma"):
        return lzma.LZMAFile(raw)
    return raw


TRUNCATED_HINT = "the initramfs is damaged or incomplete: rebuild it, or copy it again"


class Reader:
    """Exact reads from a stream, counting the offset (cpio padding is relative to it)."""

    def __init__(self, f: IO[bytes]) -> None:
        self.f = f
        self.pos = 0

    def read(self, n: int) -> bytes:
        data = self.f.read(n)
        while len(data) < n:
            more = self.f.read(n - len(data))
            if not more:
                break
            data += more
        self.pos += len(data)
        return data

    def skip(self, n: int, sink: IO[bytes] | None = None) -> None:
        while n > 0:
            data = self.read(min(n, CHUNK))
            if not data:
                raise InputError("truncated cpio archive", TRUNCATED_HINT)
            if sink is not None:
                sink.write(data)
            n -= len(data)

    def align(self) -> None:
        self.read(-self.pos & 3)


@dataclass
class Member:
    name: str
    mode: int
    size: int
    nlink: int


def members(
    r: Reader, keep: Callable[[str], Path | None] | None = None, *, one: bool = False
) -> Iterator[Member]:
    """Members of the newc archives on `r` (only the first one if `one`), up to the end of the stream.

    Regular files for which `keep(name)` gives a path are extracted there. A stream that ends before
    an archive's TRAILER!!!, or that its decompressor finds corrupt, is an InputError.
    """
    try:
        yield from _members(r, keep, one)
    except (EOFError, lzma.LZMAError, zstandard.ZstdError, gzip.BadGzipFile, zlib.error) as e:
        raise InputError(f"the initramfs is truncated or corrupt ({e or type(e).__name__})",
                         "rebuild it, or copy it again") from None


def _members(r: Reader, keep: Callable[[str], Path | None] | None, one: bool) -> Iterator[Member]:
    trailer = False  # an archive (or the stream) must end with TRAILER!!!, else it was cut short
    while True:
        head = r.read(4)
        if not head:
            if not trailer:
                raise InputError("truncated cpio archive: no TRAILER!!! at the end", TRUNCATED_HINT)
            return
        if head == b"\0\0\0\0":
            continue  # padding between concatenated archives (records are 4-aligned)
        head += r.read(2)
        if len(head) < 6:
            raise InputError("truncated cpio archive: the stream ends inside a header", TRUNCATED_HINT)
        if head not in (b"070701", b"070702"):
            raise InputError(f"bad cpio header magic {head!r} at offset {r.pos - 6}", "not a newc archive")
        hdr = r.read(104)
        try:
            fields = [int(hdr[i : i + 8], 16) for i in range(0, 104, 8)]
        except ValueError:
            fields = []
        if len(hdr) < 104 or len(fields) != 13:
            raise InputError(f"truncated or damaged cpio header at offset {r.pos - len(hdr) - 6}", TRUNCATED_HINT)
        mode, nlink, size, namesize = fields[1], fields[4], fields[6], fields[11]
        name = r.read(namesize)[:-1].decode(errors="surrogateescape")
        r.align()
        trailer = name == "TRAILER!!!"
        if trailer:
            if one:
                return
            continue
        name = name.removeprefix("./").lstrip("/") or "."
        target = keep(name) if keep is not None and stat.S_ISREG(mode) else None
        if target is not None:
            target.parent.mkdir(parents=True, exist_ok=True)
            with target.open("wb") as out:
                r.skip(size, out)
        else:
            r.skip(size)
        r.align()
        yield Member(name, mode, size, nlink)


def skip_zeros(raw: IO[bytes]) -> None:
    while True:
        b = raw.read(4)
        if b.strip(b"\0") or not b:
            raw.seek(-len(b), 1)
            return


