"""The artifacts: one writer per file, all behind one interface, and the one rule of putting them in place.

Every writer writes its file into a temp dir beside the output directory (a `Staging`); `commit()`
then renames the set into place, checksum files after what they vouch for and `<name>.sha256` last
of all, so a failure or a kill leaves the previous good set untouched and never a checksum file that
vouches for a half-renamed set. A new format is a new `Output` in OUTPUTS; the plan (engine/plan.py) gives
each its own step.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import shutil
import tarfile
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from .. import log, space
from ..cache.store import sha256_uncached
from ..config.arch import HOST_DEFAULT, Arch
from ..errors import BuildError
from ..packing.compress import Compression, check_kernel_support
from ..packing.cuts import PruneSettings
from ..packing.inventory import list_packages
from ..packing.ramdisk import HashingWriter, Kernel, PackResult, find_kernel, pack
from ..packing.sizereport import analyze, render
from . import bootfiles, bootmedia, sbom, sign

logger = logging.getLogger(__name__)

LAST = "sha256"  # renamed last: see the module doc
SIG = f"{LAST}.{sign.SIG_SUFFIX}"  # its signature, when signed
TARGZ_LEVEL = 1  # the tar holds a compressed initramfs: deflating it harder saves nothing
TAR_SLACK = 16 << 10  # two headers, padding, the end blocks, rounded up to a 10 KiB record
SMALL_OUTPUTS = 4 << 20  # packages, SBOM, manifest, sums: room to spare
ESP_ROOM = 16 << 20  # shim, grub, MokManager and slack, rounded up


@dataclass
class Staging:
    """One build's artifacts while they are written, and what the writers hand each other."""

    tree: Path
    output_dir: Path
    name: str
    compression: Compression
    kernel: Kernel
    work: Path  # the temp dir inside output_dir
    busy: IO[str]  # flock'ed while this build writes there; a killed build's lock is gone with it
    manifest: dict[str, Any] = field(default_factory=dict)
    prune: PruneSettings = field(default_factory=PruneSettings)
    source_date_epoch: int | None = None
    size_limit_mb: int | None = None
    progress: bool = True
    sha256: dict[str, str] = field(default_factory=dict)  # suffix -> digest
    pack: PackResult | None = None
    sign_key: Path | None = None  # minisign secret key: <name>.sha256 gets a .minisig
    arch: Arch = HOST_DEFAULT
    boot_source: bootfiles.Source | None = None  # the media's boot packages: the ESP and the ISO (None: neither)
    iso_kernel_args: str = ""
    boot: bootfiles.BootFiles | None = None  # unpacked by the ESP's writer

    def staged(self, suffix: str) -> Path:
        return self.work / f"{self.name}.{suffix}"

    def final(self, suffix: str) -> Path:
        return self.output_dir / f"{self.name}.{suffix}"


@dataclass(frozen=True)
class Output:
    suffix: str
    writer: Callable[[Staging], None]
    what: str  # one line for summary
    also: tuple[str, ...] = ()  # other files the writer makes (a checksum file of its own)
    need: Callable[[Staging], int] | None = None  # about how many bytes it writes, for a full disk's message

    @property
    def files(self) -> tuple[str, ...]:
        return (self.suffix, *self.also)

    def write(self, st: Staging) -> None:
        """Write it into the staging dir; a full disk there is one line (space.py)."""
        need = self.need
        with space.writing(st.work, st.final(self.suffix).name, (lambda: need(st)) if need else None):
            self.writer(st)


@dataclass
class Artifacts:
    kernel: Path
    initramfs: Path
    tar: Path
    files: dict[str, Path]  # suffix -> final path, every output
    sha256s: dict[str, str] = field(default_factory=dict)  # file name -> digest (the checksummed ones)
    sizes: dict[str, int] = field(default_factory=dict)
    pack: PackResult | None = None

    @property
    def sha256(self) -> Path:
        return self.files[LAST]

    @property
    def packages(self) -> Path:
        return self.files["packages"]

    @property
    def manifest(self) -> Path:
        return self.files["manifest.json"]


# --- the writers -----------------------------------------------------------------------------------
def _copy_hashed(src: Path, dst: Path) -> str:
    h = hashlib.sha256()
    with src.open("rb") as fi, dst.open("wb") as fo:
        while chunk := fi.read(4 << 20):
            h.update(chunk)
            fo.write(chunk)
    return h.hexdigest()


def write_kernel(st: Staging) -> None:
    st.sha256["kernel"] = _copy_hashed(st.kernel.path, st.staged("kernel"))
    st.staged("kernel").chmod(0o644)


def write_initramfs(st: Staging) -> None:
    st.pack = pack(st.tree, st.staged("initramfs"), st.compression, prune=st.prune,
                   source_date_epoch=st.source_date_epoch, progress=st.progress, check_kernel=False)
    st.sha256["initramfs"] = st.pack.sha256


def _tar_size(st: Staging) -> int:
    """About the tar's size (and the tar.gz's: gzip gains nothing on a compressed initramfs)."""
    return sum(st.staged(s).stat().st_size for s in ("kernel", "initramfs")) + TAR_SLACK


def _iso_size(st: Staging) -> int:
    return _tar_size(st) + ESP_ROOM if st.boot_source is not None else 0


def room_for_the_rest(st: Staging) -> None:
    """Once the initramfs is packed, the rest is known: stop before writing the tar, the tar.gz and the
    ISO when the output filesystem cannot hold them, rather than fail after writing the tar."""
    staged = sum(st.staged(s).stat().st_size for s in ("kernel", "initramfs"))
    rest = 2 * _tar_size(st) + 2 * _iso_size(st) + SMALL_OUTPUTS
    space.require(st.work, f"the outputs into {st.output_dir}", staged + rest, freed=staged)


def write_tar(st: Staging) -> None:
    """metal3's contract: an uncompressed tar holding exactly <name>.kernel then <name>.initramfs."""
    room_for_the_rest(st)
    mtime = _epoch(st)
    with st.staged("tar").open("wb") as f:
        w = HashingWriter(f)
        with tarfile.TarFile(fileobj=w, mode="w", format=tarfile.USTAR_FORMAT, copybufsize=4 << 20) as tar:  # type: ignore[arg-type]
            for member in (st.staged("kernel"), st.staged("initramfs")):
                info = tarfile.TarInfo(member.name)
                info.size = member.stat().st_size
                info.mtime = mtime
                info.mode = 0o644
                info.uname = info.gname = "root"
                with member.open("rb") as fm:
                    tar.addfile(info, fm)
        st.sha256["tar"] = w.sha.hexdigest()


def write_targz(st: Staging) -> None:
    """The tar, gzipped (zlib-ng, threaded, no name or mtime in the header): the form metal3's
    ironic-ipa-downloader fetches. It strips `.tar.gz` from the file name and links
    <stem>.kernel and <stem>.initramfs, the tar's members."""
    with st.staged("tar").open("rb") as src, st.staged("tar.gz").open("wb") as out:
        w = HashingWriter(out)
        gz = Compression("gzip", TARGZ_LEVEL).open(w)  # type: ignore[arg-type]
        while chunk := src.read(4 << 20):
            gz.write(chunk)
        gz.finish()
    st.sha256["tar.gz"] = w.sha.hexdigest()
    st.staged("tar.gz.sha256").write_text(f"{st.sha256['tar.gz']}  {st.final('tar.gz').name}\n")


def _epoch(st: Staging) -> int:
    return st.source_date_epoch if st.source_date_epoch is not None else int(st.kernel.path.stat().st_mtime)


def _layout(st: Staging) -> bootmedia.Layout | None:
    """The boot packages, unpacked once (by the ESP's writer), as the ESP and the ISO lay them out."""
    if st.boot_source is None:
        return None
    if st.boot is None:
        st.boot = bootfiles.extract(st.boot_source, st.arch, st.work / "boot-packages")
        st.manifest["boot_media"] = st.boot.as_dict()
    return bootmedia.Layout(st.arch, st.boot)


def write_esp(st: Staging) -> None:
    """A UEFI ESP with the media's Secure Boot chain: Ironic's `bootloader` (bootmedia.py)."""
    layout = _layout(st)
    if layout is None:
        return
    bootmedia.write_esp(layout, st.staged("esp.img"), st.work, _epoch(st))
    st.manifest["boot_media"]["grub_config_path"] = layout.grub_config_path
    _hash_staged(st, "esp.img")


def write_iso(st: Staging) -> None:
    """A bootable ISO of the kernel, the initramfs and the ESP: Ironic's `deploy_iso` (bootmedia.py)."""
    layout = _layout(st)
    if layout is None:
        return
    args = " ".join(a for a in (f"console=tty0 console={st.arch.console},115200", st.iso_kernel_args) if a)
    bootmedia.write_iso(layout, st.staged("iso"), st.work, kernel=st.staged("kernel"),
                        initramfs=st.staged("initramfs"), esp=st.staged("esp.img"), args=args, epoch=_epoch(st))
    boots = ["uefi", *(["bios"] if layout.boot.bios else [])]
    st.manifest["boot_media"].update(iso_kernel_args=args, iso_boot=boots)
    _hash_staged(st, "iso")
    logger.info("%s boots %s; Secure Boot chain %s (%s); Ironic's grub_config_path: %s", st.final("iso").name,
                " and ".join(b.upper() for b in boots), st.manifest["boot_media"]["secure_boot_chain"],
                ", ".join(f"{p.name} {p.version}" for p in layout.boot.packages), layout.grub_config_path)


def _hash_staged(st: Staging, suffix: str) -> None:
    st.sha256[suffix] = sha256_uncached(st.staged(suffix))


def write_packages(st: Staging) -> None:
    st.staged("packages").write_text(list_packages(st.tree, sources=st.manifest.get("package_repositories")))
    _hash_staged(st, "packages")


def write_sbom(st: Staging) -> None:
    """CycloneDX SBOM of the tree (sbom.py): RPMs, the IPA venv, sources, kernel, inputs."""
    bom = sbom.make_bom(st.tree, name=st.name, kernel_version=st.kernel.version, kernel_sha256=st.sha256["kernel"],
                        manifest=st.manifest, artifacts={st.final(s).name: d for s, d in st.sha256.items()},
                        source_date_epoch=st.source_date_epoch)  # fmt: skip
    st.staged(sbom.SUFFIX).write_text(sbom.to_json(bom))
    _hash_staged(st, sbom.SUFFIX)


def write_manifest(st: Staging) -> None:
    assert st.pack is not None, "the initramfs is written before the manifest"
    sizes = {s: st.staged(s).stat().st_size for s in st.sha256}
    doc = dict(st.manifest)
    doc["ramdisk"] = {
        "arch": st.arch.suse,
        "compression": st.compression.as_dict(),
        "kernel": {"version": st.kernel.version, "source": str(st.kernel.path.relative_to(st.tree))},
        "prune": st.prune.as_dict(),
        "source_date_epoch": st.source_date_epoch,
        "entries": st.pack.entries,
        "uncompressed_bytes": st.pack.uncompressed,
        "pack_seconds": round(st.pack.seconds, 2),
        "pruned": [c.record() for c in st.pack.pruned],
        "artifacts": {st.final(s).name: {"size": sizes[s], "sha256": d} for s, d in st.sha256.items()},
    }
    st.staged("manifest.json").write_text(json.dumps(doc, indent=2, sort_keys=True, default=str) + "\n")
    _hash_staged(st, "manifest.json")


def write_sums(st: Staging) -> None:
    """One checksum file for every artifact; signed (minisign) when a key is given."""
    st.staged(LAST).write_text("".join(f"{d}  {st.final(s).name}\n" for s, d in st.sha256.items()))
    if st.sign_key is not None:
        sign.sign(st.staged(LAST), st.sign_key, st.staged(SIG), comment=f"file:{st.final(LAST).name}")


OUTPUTS: tuple[Output, ...] = (
    Output("kernel", write_kernel, "the kernel the ramdisk boots, from the tree's /boot",
           need=lambda st: st.kernel.path.stat().st_size),
    Output("initramfs", write_initramfs, "the pruned tree as a compressed newc cpio"),  # pack() tells its need
    Output("tar", write_tar, "kernel + initramfs, uncompressed (metal3-dev-env's IPA_IMAGE_TAR)", need=_tar_size),
    Output("tar.gz", write_targz, "the tar gzipped, with its .tar.gz.sha256 (metal3's ironic-ipa-downloader)",
           also=("tar.gz.sha256",), need=_tar_size),
    Output("esp.img", write_esp, "a UEFI ESP: the media's shim, signed grub and MokManager (Ironic's bootloader)",
           need=lambda st: ESP_ROOM),
    Output("iso", write_iso, "a bootable ISO: kernel, initramfs, the ESP; BIOS too where the media has isolinux "
           "(Ironic's deploy_iso)", need=_iso_size),
    Output("packages", write_packages, "rpm -qa of the tree and the IPA venv's pip freeze"),
    Output(sbom.SUFFIX, write_sbom, "CycloneDX SBOM: RPMs, Python packages, sources, kernel, inputs"),
    Output("manifest.json", write_manifest, "inputs, commits, elements, settings, sizes, timings"),
    Output(LAST, write_sums, "sha256sum lines of every artifact, signed with --sign-key", also=(SIG,)),
)


# --- staging and commit ----------------------------------------------------------------------------
def open_staging(tree: Path, output_dir: Path, name: str, compression: Compression, *, arch: Arch = HOST_DEFAULT,
                 **options: Any) -> Staging:
    """Find the kernel, check it can unpack the chosen compression, and make the temp dir."""
    kernel = find_kernel(tree, arch)
    check_kernel_support(compression, kernel.config)
    with space.writing(output_dir, f"the staging directory in {output_dir}"):
        output_dir.mkdir(parents=True, exist_ok=True)
        _sweep_stale(output_dir, name)
        work = Path(tempfile.mkdtemp(dir=output_dir, prefix=f".{name}.tmp-"))
        try:
            busy = (work / ".busy").open("w")
        except OSError:
            work.rmdir()
            raise
    fcntl.flock(busy, fcntl.LOCK_EX)
    return Staging(tree, output_dir, name, compression, kernel, work, busy, arch=arch, **options)


def close(st: Staging) -> None:
    """Drop whatever was not committed (all of it after a failure)."""
    shutil.rmtree(st.work, ignore_errors=True)
    st.busy.close()


def commit(st: Staging) -> Artifacts:
    """Rename every written file into place: checksum files after what they vouch for, <name>.sha256
    last of all. Then the size check (the artifacts stay)."""
    written = [f for o in OUTPUTS for f in o.files if st.staged(f).exists()]
    sizes = {s: st.staged(s).stat().st_size for s in st.sha256}
    with space.writing(st.output_dir, f"the outputs into {st.output_dir}"):
        for suffix in sorted(written, key=lambda s: (s.endswith("sha256"), s == LAST)):
            os.replace(st.staged(suffix), st.final(suffix))
    for suffix in (f for o in OUTPUTS for f in o.files if f not in written):
        st.final(suffix).unlink(missing_ok=True)  # an earlier build's signature would not match these sums
    arts = Artifacts(st.final("kernel"), st.final("initramfs"), st.final("tar"),
                     {s: st.final(s) for s in written}, {st.final(s).name: d for s, d in st.sha256.items()},
                     sizes, st.pack)
    check_size(arts.tar, st.size_limit_mb, arts.initramfs)
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
            log.console.print(render(analyze(initramfs)))
        raise BuildError(
            f"{tar.name} is {mib} MiB, at or over the {limit_mb} MiB limit",
            "see the size report above; prune more, use --release (zstd -19) or raise the size limit",
        )
    return mib
