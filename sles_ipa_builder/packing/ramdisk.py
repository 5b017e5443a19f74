"""The ramdisk: prune rules, /init, fstab and device nodes, the kernel it boots, and packing a tree.

Replaces the seed's cleanup.d/99-ramdisk-create plus the driver's tar and size check. The tree is
never modified: /init, /etc/fstab and the /dev nodes are synthetic archive members, so packing
needs no mknod privilege and a tree can be packed twice with the same result.
"""

from __future__ import annotations

import fnmatch
import hashlib
import logging
import os
import re
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from .. import log, space
from ..cache.store import sha256_uncached
from ..config.arch import HOST_DEFAULT, Arch
from ..engine.paths import in_root
from ..errors import BuildError, InputError
from . import cpio
from .compress import Compression, Compressor, check_kernel_support
from .cuts import Cut, PruneSettings, size_of

logger = logging.getLogger(__name__)

# The seed's find -prune rules (paths relative to the tree, without "./"); a pruned directory
# itself stays in the archive as an empty dir, only what matches is left out.
# zypper's state of the build, never its content: a random id it sends to every repository it asks
# (it would tell one ramdisk from another, and no two builds could give one hash) and the list of
# packages it installed as dependencies (its order differs between builds; only zypper reads it).
BUILD_STATE = ("var/lib/zypp/AnonymousUniqueId", "var/lib/zypp/AutoInstalled")
MINIMAL_PRUNE = ("sys/*", "tmp/*", "boot/*", "root/.cache", *BUILD_STATE)
FULL_PRUNE = MINIMAL_PRUNE + (
    "*site-packages/babel/locale-data/*",
    "usr/include/*",
    "usr/lib/locale/*",
    "usr/src/kernels/*",
    "usr/share/doc/*",
    "usr/share/man/*",
    "usr/share/GeoIP/*",
    "usr/share/info/*",
    "usr/share/licenses/*",
    "usr/share/locale/*",
    "usr/share/misc/m*",
    "var/cache/*",
    "var/log/*",
    "usr/lib*/*.a",  # static libraries: only a linker reads them
    "usr/lib/udev/hwdb.d/*",  # the sources of hwdb.bin
    # udev's hardware database: vendor and model names, input-device quirks. The agent reads its
    # devices from sysfs, lsblk and lshw; udev's persistent names do not come from it.
    "usr/lib/udev/hwdb.bin",
    "etc/udev/hwdb.bin",
    # the wheels `python -m venv` installs pip from: the venv is built by then
    "usr/share/python-wheels/*",
    "usr/lib*/python3*/ensurepip/_bundled/*",
    # test suites that Python packages ship inside themselves
    "*site-packages/*/tests/*",
    # the IEEE registries netaddr looks MAC vendors up in (its index files, read at import, stay)
    "*site-packages/netaddr/eui/*.txt",
    # qemu-tools besides qemu-img, the only one the agent runs
    "usr/bin/qemu-io",
    "usr/bin/qemu-nbd",
    "usr/bin/qemu-storage-daemon",
    # glibc's character set converters (iconv), but for the ones KEEP names
    "usr/lib*/gconv/*",
)
# Python falls back to the source when a .pyc is missing, except for the codecs it needs to start.
KEEP_PYC = "*/encodings/*.pyc"
# iconv's module list, Latin-1 and the DOS code pages FAT labels are written in (mkfs.vfat converts
# the labels the agent gives its EFI and config-drive partitions); UTF-8/16/32 are built into glibc.
KEEP_GCONV = tuple(f"usr/lib*/gconv/{m}" for m in (
    "gconv-modules*", "ISO8859-1.so", "ISO8859-15.so", "IBM437.so", "IBM850.so"))
KEEP = (KEEP_PYC, *KEEP_GCONV)
# PEP 552 flags of a .pyc checked neither against its source's mtime nor its hash: what the agent's
# precompile hook writes (sles-ipa-install/finalise.d/50-ipa-precompile). Valid whatever the archive
# does to mtimes; timestamp .pyc files would be stale once mtimes are clamped, so they stay out.
UNCHECKED_HASH = 0b01


def unchecked_pyc(path: bytes) -> bool:
    try:
        with open(path, "rb") as f:
            head = f.read(8)
    except OSError:
        return False
    return len(head) == 8 and int.from_bytes(head[4:8], "little") & 0b11 == UNCHECKED_HASH


PYC_RULE = "*.pyc, *.pyo (all but unchecked-hash)"
FULL = PruneSettings()  # the default: the full list, nothing kept or added


class Prune:
    """The exclusion predicate for cpio.scan: the seed's prune list plus *.pyc/*.pyo, except the
    precompiled unchecked-hash .pyc files when `tree` (the tree scanned) is given. It remembers what
    each rule left out, for the build report."""

    def __init__(self, settings: PruneSettings = FULL, tree: os.PathLike[str] | str | None = None) -> None:
        patterns = (*(MINIMAL_PRUNE if settings.minimal else FULL_PRUNE), *settings.more)
        self._any = _glob_rx(patterns)
        self._each = [(p, _glob_rx([p])) for p in patterns]
        self._keep = _glob_rx([*KEEP, *settings.keep])
        # a directory holding a kept path is scanned, so that the rules apply to its entries one by one
        self._keep_dirs = tuple(re.split(r"[*?\[]", k)[0].encode() for k in settings.keep)
        self._base = os.fsencode(os.fspath(tree)) if tree is not None else None
        self.left_out: dict[str, list[bytes]] = {}

    def __call__(self, rel: bytes, is_dir: bool) -> bool:
        if self._keep.match(rel) is not None:
            return False
        if is_dir and any(k.startswith(rel + b"/") for k in self._keep_dirs):
            return False
        if rel.endswith((b".pyc", b".pyo")):
            if self._base is not None and unchecked_pyc(os.path.join(self._base, rel)):
                return False
            self.left_out.setdefault(PYC_RULE, []).append(rel)
            return True
        if self._any.match(rel) is None:
            return False
        rule = next(p for p, rx in self._each if rx.match(rel))
        self.left_out.setdefault(rule, []).append(rel)
        return True

    def report(self) -> list[Cut]:
        """Per rule that left something out: files and bytes (under a pruned directory, all of it)."""
        if self._base is None:
            return []
        out = []
        for rule, rels in self.left_out.items():
            cut = Cut(f"left out {rule}")
            cut.files, cut.bytes = size_of(Path(os.fsdecode(os.path.join(self._base, rel))) for rel in rels)
            if cut.files:
                out.append(cut)
        return sorted(out, key=lambda c: -c.bytes)


def _glob_rx(patterns: list[str] | tuple[str, ...]) -> re.Pattern[bytes]:
    return re.compile(b"|".join(b"(?:%s)" % fnmatch.translate(p).encode() for p in patterns) or b"(?!)")


def synthetic_entries() -> dict[str, cpio.Synthetic]:
    """What the seed wrote into the tree before packing, as archive members instead."""
    S = cpio.Synthetic
    return {
        "init": S.symlink("./sbin/init"),  # the kernel runs /init: systemd, no switch_root
        "etc/fstab": S.file(b"#disabled\n"),
        "dev/console": S.chardev(5, 1, 0o600),
        "dev/null": S.chardev(1, 3, 0o666),
        "dev/random": S.chardev(1, 8, 0o666),
        "dev/urandom": S.chardev(1, 9, 0o666),
    }


@dataclass(frozen=True)
class Kernel:
    path: Path
    version: str
    config: Path | None


def _version_key(s: str) -> tuple[tuple[int, int | str], ...]:
    return tuple((0, int(p)) if p.isdigit() else (1, p) for p in re.split(r"(\d+)", s) if p)


def _resolve_in_tree(tree: Path, rel: str) -> Path | None:
    """Follow `rel` with the tree as root (an absolute target means tree/target); a regular file or None."""
    try:
        p = in_root(tree, rel, follow_last=True)
    except BuildError:  # a link loop
        return None
    return p if p.is_file() and not p.is_symlink() else None


def _kernel_config(tree: Path, version: str) -> Path | None:
    for cand in (tree / "boot" / f"config-{version}", tree / "usr/lib/modules" / version / "config"):
        if cand.is_file():
            return cand
    return None


def find_kernel(tree: Path, arch: Arch = HOST_DEFAULT) -> Kernel:
    """The kernel the ramdisk boots: /boot/<image name> (vmlinuz, Image...) if that link resolves inside
    the tree, else the newest /boot/<image name>-<version> or usr/lib/modules/<version>/<image name>."""
    boot = tree / "boot"
    path = None
    for name in arch.kernel_names:
        if (boot / name).is_symlink():
            path = _resolve_in_tree(tree, f"boot/{name}")
        elif (boot / name).is_file():
            path = boot / name
        if path is not None:
            break
    if path is None:
        found = [p for n in arch.kernel_names for p in boot.glob(f"{n}-*")
                 if p.is_file() and not p.name.endswith(".hmac")]
        found += [p for n in arch.kernel_names for p in (tree / "usr/lib/modules").glob(f"*/{n}") if p.is_file()]
        if not found:
            names = ", ".join(arch.kernel_names)
            raise InputError(
                f"no kernel in {boot} for {arch} (no {names} link, no {names}-<version>)",
                "install kernel-default in the image (the sles element does) or pass a tree that has /boot",
            )
        path = max(found, key=lambda p: _version_key(_kver(p, arch)))
    version = _kver(path, arch)
    return Kernel(path, version, _kernel_config(tree, version))


def _kver(p: Path, arch: Arch) -> str:
    if p.name in arch.kernel_names and p.parent.parent.name == "modules":
        return p.parent.name  # usr/lib/modules/<version>/vmlinuz
    return p.name.partition("-")[2]


def tree_kernel_config(tree: Path) -> Path | None:
    """The config of the kernel the ramdisk would boot, or of the newest kernel with a config."""
    try:
        return find_kernel(tree).config
    except InputError:
        configs = sorted((tree / "boot").glob("config-*"), key=lambda p: _version_key(p.name))
        return configs[-1] if configs else None


class HashingWriter:
    """A file wrapper that hashes and counts what goes through it."""

    def __init__(self, f: IO[bytes]) -> None:
        self.f = f
        self.sha = hashlib.sha256()
        self.n = 0

    def write(self, data: bytes | bytearray | memoryview) -> int:
        self.sha.update(data)
        self.n += len(data)
        self.f.write(data)
        return len(data)

    def tell(self) -> int:
        return self.n

    def flush(self) -> None:
        self.f.flush()


@dataclass
class PackResult:
    path: Path
    size: int
    sha256: str
    seconds: float
    entries: int
    uncompressed: int
    pruned: list[Cut] = field(default_factory=list)  # what each prune rule left out


def _atomic_output(out: Path) -> tuple[Path, IO[bytes]]:
    fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp")
    os.fchmod(fd, 0o644)
    return Path(tmp), os.fdopen(fd, "wb", buffering=1 << 20)


def pack(
    tree: Path,
    out: Path,
    compression: Compression,
    *,
    prune: PruneSettings = FULL,
    source_date_epoch: int | None = None,
    progress: bool = True,
    check_kernel: bool = True,
) -> PackResult:
    """Pack `tree` into the initramfs `out` (replaced atomically; nothing is left on failure)."""
    start = time.monotonic()
    if not tree.is_dir():
        raise InputError(f"not a directory: {tree}", "pass the root of an unpacked image tree")
    if check_kernel:
        check_kernel_support(compression, tree_kernel_config(tree))
    rule = Prune(prune, tree)
    scan = cpio.scan(
        tree,
        exclude=rule,
        synthetic=synthetic_entries(),
        source_date_epoch=source_date_epoch,
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    with space.writing(out.parent, out.name):  # its size is known only once written
        tmp, f = _atomic_output(out)
        hasher = HashingWriter(f)
        comp: Compressor | None = None
        try:
            with f, log.progress(transfer=True) as bar:
                task = bar.add_task(f"packing {compression.describe()}", total=scan.data_bytes, visible=progress)
                update: Callable[[int], None] | None = None
                if progress:
                    update = lambda n: bar.update(task, completed=n)  # noqa: E731
                comp = compression.open(f if compression.external else hasher)  # type: ignore[arg-type]
                raw = cpio.write(scan.entries, comp, update)
                comp.finish()
                comp = None
            digest = sha256_uncached(tmp) if compression.external else hasher.sha.hexdigest()
            os.replace(tmp, out)
        except BaseException:
            if comp is not None:
                comp.abort()
            tmp.unlink(missing_ok=True)
            raise
    size = out.stat().st_size
    secs = time.monotonic() - start
    logger.info(
        "packed %d entries, %.1f MiB -> %.1f MiB %s in %.1fs",
        len(scan.entries), raw / 2**20, size / 2**20, compression.describe(), secs,
    )  # fmt: skip
    pruned = rule.report()
    for c in pruned:
        logger.info("%s: %d files, %.1f MiB", c.rule, c.files, c.bytes / 2**20)
    return PackResult(out, size, digest, secs, len(scan.entries), raw, pruned)
