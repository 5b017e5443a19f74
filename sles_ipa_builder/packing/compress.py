"""Compressors for the initramfs stream, and the check that the kernel can unpack them.

Every compressor takes the cpio stream through `write()` and writes its output to a binary sink;
`finish()` ends the stream, `abort()` drops it. zstd runs multi-threaded inside zstandard (the
GIL is released while it works); gzip is zlib-ng's writer in one thread (its threaded writer once
gave different bytes for the same input on a loaded machine); xz uses lzma with CRC32 checks, the
only check besides none the kernel knows.
"""

from __future__ import annotations

import logging
import lzma
import os
import re
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Protocol

import zstandard
from zlib_ng import gzip_ng, zlib_ng

from .. import run
from ..errors import CommandError, ConfigError

log = logging.getLogger(__name__)

BUILTIN = ("zstd", "gzip", "xz", "none")
DEFAULT_LEVEL = {"zstd": 9, "gzip": 6, "xz": 6}
LEVELS = {"zstd": range(1, 20), "gzip": range(1, 10), "xz": range(0, 10)}
# The kernel's zstd decoder needs the whole window in memory: keep it at 8 MiB (level 19's own).
ZSTD_MAX_WINDOW_LOG = 23
RD_SYMBOL = {
    "gzip": "CONFIG_RD_GZIP",
    "zstd": "CONFIG_RD_ZSTD",
    "xz": "CONFIG_RD_XZ",
    "lzma": "CONFIG_RD_LZMA",
    "bzip2": "CONFIG_RD_BZIP2",
    "lz4": "CONFIG_RD_LZ4",
    "lzo": "CONFIG_RD_LZO",
}
_COMMAND_FAMILY = {
    "gzip": "gzip", "pigz": "gzip", "zstd": "zstd", "pzstd": "zstd", "xz": "xz", "pixz": "xz",
    "lzma": "lzma", "bzip2": "bzip2", "pbzip2": "bzip2", "lbzip2": "bzip2", "lz4": "lz4",
    "lzop": "lzo", "cat": "none",
}  # fmt: skip
# Each zstd-3 worker holds ~15 MB (zstd-19: ~150 MB); 8 already outrun the cpio writer feeding them,
# and keep pack's peak memory under 300 MB on big build hosts.
MAX_THREADS = 8


class Compressor(Protocol):
    def write(self, data: bytes | bytearray | memoryview, /) -> object: ...
    def finish(self) -> None: ...
    def abort(self) -> None: ...


@dataclass(frozen=True)
class Compression:
    """How the cpio stream is compressed: a built-in kind and level, or an external command."""

    kind: str  # zstd | gzip | xz | none | command
    level: int | None = None
    command: tuple[str, ...] = ()

    @classmethod
    def parse(cls, spec: str, level: int | None = None) -> Compression:
        """`zstd`, `gzip:9`, `xz`, `none`, or a command line such as `zstd -19 -T0` (DIB_IPA_COMPRESS_CMD)."""
        spec = spec.strip()
        name, _, lvl = spec.partition(":")
        if name in BUILTIN and " " not in spec:
            if lvl:
                if not lvl.isdigit():
                    raise ConfigError(f"bad compression level in {spec!r}", "use e.g. zstd:19 or gzip:9")
                level = int(lvl)
            return cls(name, cls._check_level(name, level))
        argv = tuple(shlex.split(spec))
        if not argv:
            raise ConfigError("empty compression command", "use zstd, gzip, xz, none or a command line")
        if len(argv) == 1 and run.which(argv[0]) is None:  # a misspelt name, not a command line
            raise ConfigError(f"unknown compression '{argv[0]}'",
                              f"use one of {', '.join(BUILTIN)}, or a command such as 'zstd -19 -T0'")
        if level is not None:
            raise ConfigError(f"a level cannot go with the command {spec!r}", "put the level in the command")
        made = cls("command", None, argv)
        made._check_kernel_format()
        return made

    def _check_kernel_format(self) -> None:
        """Formats the kernel's decoders refuse whatever its config: xz with a CRC64 or SHA-256 check
        (xz's default; the kernel decodes CRC32 or none), lz4's frame format (only legacy, -l)."""
        args = self.command[1:]
        joined = " ".join(args)
        if self.family == "xz" and not re.search(r"(--check[= ]|-C ?)(crc32|none)\b", joined):
            raise ConfigError(f"{shlex.join(self.command)}: the kernel's xz decoder accepts only CRC32 checks "
                              "(xz's default is CRC64)", f"add --check=crc32: '{shlex.join(self.command)} "
                              "--check=crc32', or use --compress xz")
        if self.family == "lz4" and "-l" not in args:
            raise ConfigError(f"{shlex.join(self.command)}: the kernel reads only lz4's legacy format",
                              f"add -l: '{shlex.join(self.command)} -l'")

    @classmethod
    def release(cls) -> Compression:
        return cls("zstd", 19)

    @staticmethod
    def _check_level(kind: str, level: int | None) -> int | None:
        if kind == "none":
            return None
        level = DEFAULT_LEVEL[kind] if level is None else level
        if level not in LEVELS[kind]:
            r = LEVELS[kind]
            extra = " (levels above 19 need a window the kernel cannot decode)" if kind == "zstd" else ""
            raise ConfigError(f"{kind} level {level} is out of range{extra}", f"use {r.start}..{r.stop - 1}")
        return level

    @property
    def family(self) -> str | None:
        """The decompressor the kernel needs (None: unknown external command)."""
        if self.kind != "command":
            return self.kind
        prog = os.path.basename(self.command[0])
        fam = _COMMAND_FAMILY.get(prog)
        args = " ".join(self.command[1:])
        if fam == "xz" and ("--format=lzma" in args or "-F lzma" in args or "--lzma1" in args):
            return "lzma"
        return fam

    @property
    def external(self) -> bool:
        """External commands write the file themselves (so the caller hashes it afterwards)."""
        return self.kind == "command"

    def describe(self) -> str:
        if self.kind == "command":
            return shlex.join(self.command)
        return self.kind if self.level is None else f"{self.kind}-{self.level}"

    def as_dict(self) -> dict[str, Any]:
        libzstd = ".".join(map(str, zstandard.ZSTD_VERSION))
        # gzip bytes depend on the deflate library: part of what makes a build reproducible
        engines = {"zstd": f"libzstd {libzstd}", "gzip": f"zlib-ng {zlib_ng.ZLIBNG_VERSION}", "xz": "liblzma"}
        command = list(self.command) or None
        return {"kind": self.kind, "level": self.level, "command": command, "engine": engines.get(self.kind)}

    def open(self, out: IO[bytes], threads: int | None = None) -> Compressor:
        """A compressor writing to `out` (a real file with fileno() for external commands)."""
        threads = threads or min(os.cpu_count() or 1, MAX_THREADS)
        if self.kind == "zstd":
            return _Zstd(out, self.level or 3, threads)
        if self.kind == "gzip":
            return _Gzip(out, self.level or 6, threads)
        if self.kind == "xz":
            return _Xz(out, 6 if self.level is None else self.level)
        if self.kind == "none":
            return _Plain(out)
        return _Command(self.command, out)


class _Plain:
    def __init__(self, out: IO[bytes]) -> None:
        self.write = out.write

    def finish(self) -> None:
        pass

    def abort(self) -> None:
        pass


class _Zstd:
    def __init__(self, out: IO[bytes], level: int, threads: int) -> None:
        base = zstandard.ZstdCompressionParameters.from_level(level)
        params = zstandard.ZstdCompressionParameters.from_level(
            level,
            window_log=min(base.window_log, ZSTD_MAX_WINDOW_LOG),
            # nbWorkers >= 1 always: the output is then the same whatever the number of cores
            threads=max(threads, 1),
            enable_ldm=False,
            write_checksum=True,
        )
        self._w = zstandard.ZstdCompressor(compression_params=params).stream_writer(
            out, write_size=1 << 20, closefd=False
        )
        self.write = self._w.write

    def finish(self) -> None:
        # close() ends the one frame. A flush(FLUSH_FRAME) before it would leave close() a second,
        # empty frame (window 0), which older kernel zstd decoders reject.
        self._w.close()  # type: ignore[no-untyped-call]  # zstandard's writer has no hint there

    def abort(self) -> None:
        pass


GZIP_BLOCK = 1 << 20


class _Gzip:
    """One gzip member from zlib-ng, in one thread: the same bytes on any machine, and the header has
    no name and mtime 0, like gzip -n. (zlib-ng's threaded writer, gzip_ng_threaded, fed the same
    blocks, gave one different byte in a CI run under load; an artifact must hash the same.)"""

    def __init__(self, out: IO[bytes], level: int, threads: int) -> None:
        # zlib-ng ships no type hints for its GzipFile
        self._w: Any = gzip_ng.GzipFile(  # type: ignore[no-untyped-call]
            filename="", mode="wb", compresslevel=level, fileobj=out, mtime=0)
        self.buf = bytearray()

    def write(self, data: bytes | bytearray | memoryview) -> None:
        # whole blocks only: zlib-ng's deflate output follows the sizes it is fed, not only the bytes
        self.buf += data
        whole = len(self.buf) - len(self.buf) % GZIP_BLOCK
        for i in range(0, whole, GZIP_BLOCK):
            self._w.write(bytes(self.buf[i : i + GZIP_BLOCK]))
        del self.buf[:whole]

    def finish(self) -> None:
        self._w.write(bytes(self.buf))
        self._w.close()  # the stream passed in stays open

    def abort(self) -> None:
        try:
            self._w.close()
        except Exception:  # noqa: BLE001 - dropping a stream that failed: its error is already raised
            log.debug("gzip writer closed after an error", exc_info=True)


class _Xz:
    def __init__(self, out: IO[bytes], level: int) -> None:
        self.out = out
        self.c = lzma.LZMACompressor(format=lzma.FORMAT_XZ, check=lzma.CHECK_CRC32, preset=level)

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.out.write(self.c.compress(data))

    def finish(self) -> None:
        self.out.write(self.c.flush())

    def abort(self) -> None:
        pass


class _Command:
    """An external compressor: the stream on its stdin, its stdout straight into the output file."""

    def __init__(self, argv: tuple[str, ...], out: IO[bytes]) -> None:
        self.argv = list(argv)
        if run.which(self.argv[0]) is None:
            raise ConfigError(
                f"compression command not found: {self.argv[0]}", "install it or use zstd, gzip or xz"
            )
        out.flush()
        rfd, wfd = os.pipe()
        try:
            self.proc = run.popen(self.argv, stdin=rfd, stdout=out)
        except BaseException:
            os.close(wfd)
            raise
        finally:
            os.close(rfd)
        self.stdin = os.fdopen(wfd, "wb", buffering=1 << 20)

    def write(self, data: bytes | bytearray | memoryview) -> None:
        try:
            self.stdin.write(data)
        except BrokenPipeError:
            self._fail()

    def _fail(self) -> None:
        rc = self.proc.wait()
        raise CommandError(self.argv, rc or 1, hint="check DIB_IPA_COMPRESS_CMD / --compress")

    def finish(self) -> None:
        try:
            self.stdin.close()
        except BrokenPipeError:
            self._fail()
        if self.proc.wait() != 0:
            self._fail()

    def abort(self) -> None:
        self.proc.kill()
        self.proc.wait()
        try:
            self.stdin.close()
        except BrokenPipeError:
            pass


def read_kernel_config(path: Path) -> dict[str, str]:
    """CONFIG_X=value lines of a kernel .config ("# CONFIG_X is not set" gives no key)."""
    conf: dict[str, str] = {}
    for line in path.read_text(errors="replace").splitlines():
        if line.startswith("CONFIG_"):
            key, _, value = line.partition("=")
            conf[key] = value.strip().strip('"')
    return conf


def check_kernel_support(compression: Compression, config: Path | None) -> None:
    """Refuse a compressor the ramdisk's kernel cannot unpack; warn when that cannot be checked."""
    family = compression.family
    if family == "none":
        return
    if family is None:
        log.warning("unknown decompressor for %s: kernel support not checked", compression.describe())
        return
    if config is None:
        log.warning("no kernel config in the tree: not checking that the kernel can unpack %s", family)
        return
    symbol = RD_SYMBOL[family]
    conf = read_kernel_config(config)
    value = conf.get(symbol)
    if value != "y":
        supported = [f for f, s in RD_SYMBOL.items() if conf.get(s) == "y"]
        raise ConfigError(
            f"kernel cannot unpack a {family} initramfs: {symbol} is {value or 'not set'} in {config.name}",
            f"use --compress with one of: {', '.join(supported) or 'none'}",
        )
