"""The ramdisk step: prune, add /init, fstab and device nodes, pack, and write the artifacts.

Replaces the seed's cleanup.d/99-ramdisk-create plus the driver's tar and size check. The tree is
never modified: /init, /etc/fstab and the /dev nodes are synthetic archive members, so packing
needs no mknod privilege and a tree can be packed twice with the same result.
"""

from __future__ import annotations

import fcntl
import fnmatch
import hashlib
import json
import logging
import os
import re
import shutil
import tarfile
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from . import cpio, log
from .compress import Compression, Compressor, check_kernel_support
from .errors import BuildError, InputError
from .hooks import in_root
from .sizereport import list_packages

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
)
# Python falls back to the source when a .pyc is missing, except for the codecs it needs to start.
KEEP_PYC = "*/encodings/*.pyc"


def prune_rule(minimal: bool = False) -> cpio.Exclude:
    """The exclusion predicate for cpio.scan: the seed's prune list plus *.pyc/*.pyo."""
    patterns = MINIMAL_PRUNE if minimal else FULL_PRUNE
    rx = re.compile(b"|".join(b"(?:%s)" % fnmatch.translate(p).encode() for p in patterns))
    keep = re.compile(fnmatch.translate(KEEP_PYC).encode())

    def exclude(rel: bytes, is_dir: bool) -> bool:
        if rel.endswith((b".pyc", b".pyo")):
            return keep.match(rel) is None
        return rx.match(rel) is not None

    return exclude


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


def find_kernel(tree: Path) -> Kernel:
    """The kernel the ramdisk boots: /boot/vmlinuz if it resolves inside the tree, else the newest."""
    boot = tree / "boot"
    path = _resolve_in_tree(tree, "boot/vmlinuz") if (boot / "vmlinuz").is_symlink() else None
    if path is None and (boot / "vmlinuz").is_file() and not (boot / "vmlinuz").is_symlink():
        path = boot / "vmlinuz"
    if path is None:
        found = [p for p in boot.glob("vmlinuz-*") if p.is_file() and not p.name.endswith(".hmac")]
        found += [p for p in (tree / "usr/lib/modules").glob("*/vmlinuz") if p.is_file()]
        if not found:
            raise InputError(
                f"no kernel in {boot} (no vmlinuz link, no vmlinuz-*)",
                "install kernel-default in the image (the sles element does) or pass a tree that has /boot",
            )
        path = max(found, key=lambda p: _version_key(_kver(p)))
    version = _kver(path)
    return Kernel(path, version, _kernel_config(tree, version))


def _kver(p: Path) -> str:
    if p.name == "vmlinuz" and p.parent.parent.name == "modules":
        return p.parent.name  # usr/lib/modules/<version>/vmlinuz
    return p.name.partition("-")[2]


def tree_kernel_config(tree: Path) -> Path | None:
    """The config of the kernel the ramdisk would boot, or of the newest kernel with a config."""
    try:
        return find_kernel(tree).config
    except InputError:
        configs = sorted((tree / "boot").glob("config-*"), key=lambda p: _version_key(p.name))
        return configs[-1] if configs else None


class _HashingWriter:
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


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(4 << 20):
            h.update(chunk)
    return h.hexdigest()


@dataclass
class PackResult:
    path: Path
    size: int
    sha256: str
    seconds: float
    entries: int
    uncompressed: int


def _atomic_output(out: Path) -> tuple[Path, IO[bytes]]:
    fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp")
    os.fchmod(fd, 0o644)
    return Path(tmp), os.fdopen(fd, "wb", buffering=1 << 20)


def pack(
    tree: Path,
    out: Path,
    compression: Compression,
    *,
    minimal_prune: bool = False,
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
    scan = cpio.scan(
        tree,
        exclude=prune_rule(minimal_prune),
        synthetic=synthetic_entries(),
        source_date_epoch=source_date_epoch,
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp, f = _atomic_output(out)
    hasher = _HashingWriter(f)
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
        digest = sha256_file(tmp) if compression.external else hasher.sha.hexdigest()
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
    return PackResult(out, size, digest, secs, len(scan.entries), raw)


ARTIFACT_SUFFIXES = ("kernel", "initramfs", "tar", "sha256", "packages", "manifest.json")


@dataclass
class Artifacts:
    kernel: Path
    initramfs: Path
    tar: Path
    sha256: Path
    packages: Path
    manifest: Path
    sha256s: dict[str, str] = field(default_factory=dict)
    sizes: dict[str, int] = field(default_factory=dict)
    pack: PackResult | None = None


def _copy_hashed(src: Path, dst: Path) -> str:
    h = hashlib.sha256()
    with src.open("rb") as fi, dst.open("wb") as fo:
        while chunk := fi.read(4 << 20):
            h.update(chunk)
            fo.write(chunk)
    return h.hexdigest()


def _write_tar(tar_path: Path, members: list[Path], mtime: int) -> str:
    """metal3's contract: an uncompressed tar holding exactly these files, in this order."""
    with tar_path.open("wb") as f:
        w = _HashingWriter(f)
        with tarfile.TarFile(fileobj=w, mode="w", format=tarfile.USTAR_FORMAT, copybufsize=4 << 20) as tar:  # type: ignore[arg-type]
            for m in members:
                info = tarfile.TarInfo(m.name)
                info.size = m.stat().st_size
                info.mtime = mtime
                info.mode = 0o644
                info.uname = info.gname = "root"
                with m.open("rb") as fm:
                    tar.addfile(info, fm)
        return w.sha.hexdigest()


def write_artifacts(
    tree: Path,
    output_dir: Path,
    name: str,
    compression: Compression,
    *,
    size_limit_mb: int | None,
    minimal_prune: bool = False,
    source_date_epoch: int | None = None,
    manifest: dict[str, Any] | None = None,
    progress: bool = True,
) -> Artifacts:
    """Write <name>.{kernel,initramfs,tar,sha256,packages,manifest.json} into output_dir.

    Everything is made in a temp dir inside output_dir, then renamed into place one file at a
    time, so a failure leaves the previous set untouched. Over the size limit raises BuildError
    after the artifacts are in place (they are kept to be inspected).
    """
    kernel = find_kernel(tree)
    check_kernel_support(compression, kernel.config)
    output_dir.mkdir(parents=True, exist_ok=True)
    _sweep_stale(output_dir, name)
    work = Path(tempfile.mkdtemp(dir=output_dir, prefix=f".{name}.tmp-"))
    final = {s: output_dir / f"{name}.{s}" for s in ARTIFACT_SUFFIXES}
    busy = (work / ".busy").open("w")  # flock'ed while this build writes; a killed build's lock is gone
    fcntl.flock(busy, fcntl.LOCK_EX)
    try:
        staged = {s: work / p.name for s, p in final.items()}
        sha = {"kernel": _copy_hashed(kernel.path, staged["kernel"])}
        staged["kernel"].chmod(0o644)
        result = pack(
            tree, staged["initramfs"], compression, minimal_prune=minimal_prune,
            source_date_epoch=source_date_epoch, progress=progress, check_kernel=False,
        )  # fmt: skip
        sha["initramfs"] = result.sha256
        mtime = source_date_epoch if source_date_epoch is not None else int(kernel.path.stat().st_mtime)
        sha["tar"] = _write_tar(staged["tar"], [staged["kernel"], staged["initramfs"]], mtime)
        sums = "".join(f"{sha[s]}  {final[s].name}\n" for s in ("kernel", "initramfs", "tar"))
        staged["sha256"].write_text(sums)
        staged["packages"].write_text(list_packages(tree))
        sizes = {s: staged[s].stat().st_size for s in ("kernel", "initramfs", "tar")}
        doc = dict(manifest or {})
        doc["ramdisk"] = {
            "compression": compression.as_dict(),
            "kernel": {"version": kernel.version, "source": str(kernel.path.relative_to(tree))},
            "minimal_prune": minimal_prune,
            "source_date_epoch": source_date_epoch,
            "entries": result.entries,
            "uncompressed_bytes": result.uncompressed,
            "pack_seconds": round(result.seconds, 2),
            "artifacts": {final[s].name: {"size": sizes[s], "sha256": sha[s]} for s in sizes},
        }
        staged["manifest.json"].write_text(json.dumps(doc, indent=2, sort_keys=True, default=str) + "\n")
        # sha256 last: a set cut short by a kill between two renames fails `sha256sum -c`
        for s in sorted(final, key=lambda s: s == "sha256"):
            os.replace(staged[s], final[s])
    finally:
        shutil.rmtree(work, ignore_errors=True)
        busy.close()
    arts = Artifacts(
        final["kernel"], final["initramfs"], final["tar"], final["sha256"], final["packages"],
        final["manifest.json"], {final[s].name: sha[s] for s in sha}, sizes, result,
    )  # fmt: skip
    check_size(arts.tar, size_limit_mb, arts.initramfs)
    return arts


def _sweep_stale(output_dir: Path, name: str) -> None:
    """Remove the temp dirs of builds killed while writing artifacts (SIGKILL runs no clean-up)."""
    for d in output_dir.glob(f".{name}.tmp-*"):
        try:
            with (d / ".busy").open("r") as f:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)  # held: another build is writing there
        except BlockingIOError:
            continue
        except FileNotFoundError:  # no lock yet: a build may be just starting there
            if time.time() - d.stat().st_mtime < 600:
                continue
        logger.info("removing %s, left by an interrupted build", d)
        shutil.rmtree(d, ignore_errors=True)


def check_size(tar: Path, limit_mb: int | None, initramfs: Path | None = None) -> int:
    """Print the archive size (floor MiB, like the seed) and fail at or over the limit."""
    mib = tar.stat().st_size // 2**20
    logger.info("Size of the archive: %dMB (%s)", mib, tar)
    if limit_mb and mib >= limit_mb:
        if initramfs is not None:
            from . import sizereport

            log.console.print(sizereport.render(sizereport.analyze(initramfs)))
        raise BuildError(
            f"{tar.name} is {mib} MiB, at or over the {limit_mb} MiB limit",
            "see the size report above; prune more, use --release (zstd -19) or raise the size limit",
        )
    return mib
