"""Cutting what the agent never uses out of the tree: kernel modules by class, and the firmware only
those modules asked for; and the settings of what the packer leaves out (ramdisk.Prune). Each cut
says what it removed, with bytes, in the log and the manifest.

Classes are directories of the kernel's module tree, so a class is cut whole and the rule reads
like the kernel's own layout. Storage, network (InfiniBand/RDMA included), RAID/HBA, NVMe,
USB/HID, virtio and platform drivers are never in a class. Graphics keeps the DRM core, the simple
framebuffers (drivers/gpu/drm/tiny) and the BMC consoles servers have (ast, mgag200), and cuts the
desktop GPUs.

Firmware follows the modules: a file goes when a removed module names it (MODULE_FIRMWARE, read
from the module's .modinfo strings as `modinfo -F firmware` does) and no kept module does. Firmware
that no module names stays: some drivers load files they never declare.
"""

from __future__ import annotations

import fnmatch
import gzip
import logging
import lzma
import os
import re
import shutil
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import zstandard

log = logging.getLogger(__name__)

GPU_DESKTOP = tuple(f"drivers/gpu/drm/{d}" for d in (
    "amd", "radeon", "nouveau", "i915", "xe", "gma500", "msm", "etnaviv", "lima", "panfrost", "vc4", "v3d",
    "imx", "rockchip", "exynos", "tegra", "mediatek", "meson", "sun4i", "nova", "arm", "hisilicon/kirin",
))  # fmt: skip
MODULE_CLASSES: dict[str, tuple[str, ...]] = {
    "sound": ("sound",),
    "gpu": GPU_DESKTOP,
    "wireless": ("drivers/net/wireless", "net/wireless", "net/mac80211"),
    "bluetooth": ("drivers/bluetooth", "net/bluetooth"),
    "media": ("drivers/media",),
    "staging": ("drivers/staging",),
    # Filesystems the agent never mounts: network and cluster ones (it writes images to disks and
    # reads config drives; iSCSI and NVMe-oF are block devices and stay).
    "netfs": ("fs/nfs", "fs/nfsd", "fs/nfs_common", "fs/lockd", "fs/smb", "fs/cifs", "fs/ceph", "fs/afs",
              "fs/9p", "fs/coda", "fs/orangefs", "fs/ocfs2", "fs/gfs2", "fs/dlm", "net/sunrpc", "net/ceph",
              "net/9p", "net/rxrpc"),
    # Networks no server NIC speaks: CAN, amateur radio, ISDN, ATM, 802.15.4, NFC, WWAN, legacy LANs.
    "legacy-net": ("net/can", "drivers/net/can", "net/ieee802154", "drivers/net/ieee802154", "net/6lowpan",
                   "net/nfc", "drivers/nfc", "drivers/net/wwan", "net/atm", "drivers/atm", "drivers/isdn",
                   "net/appletalk", "net/x25", "net/lapb", "net/ax25", "net/rose", "net/netrom",
                   "drivers/net/hamradio", "drivers/net/arcnet", "drivers/net/fddi", "drivers/net/plip"),
    # Device-side and embedded buses (USB gadget mode, industrial I/O, 1-wire, PCMCIA, parallel port)
    # and the kernel's self-test modules.
    "embedded": ("drivers/usb/gadget", "drivers/iio", "drivers/w1", "drivers/memstick", "drivers/pcmcia",
                 "drivers/parport", "lib/test_*.ko*", "lib/*/test_*.ko*"),
    # What a server runs for others, never the agent: hypervisor (KVM, vhost, VFIO), storage targets
    # (LIO with its iSCSI/SRP/iSER front ends, NVMe-oF target), DRBD, Open vSwitch, IPVS, SCTP, and
    # raw flash (MTD, UBIFS, JFFS2). The guest drivers of Xen, Hyper-V and VMware stay.
    "server-roles": ("arch/x86/kvm", "arch/arm64/kvm", "drivers/vhost", "drivers/vfio", "drivers/target",
                     "drivers/nvme/target", "drivers/block/drbd", "net/openvswitch", "net/netfilter/ipvs",
                     "net/sctp", "drivers/mtd", "fs/ubifs", "fs/jffs2"),
}
DEFAULT_CUT = tuple(MODULE_CLASSES)
# Package groups that leave the tree before packing (pkgdrop.GROUPS says what each holds).
DROP_GROUPS = ("package-manager", "perl")
MODULE_SUFFIXES = (".ko", ".ko.xz", ".ko.zst", ".ko.gz")
FIRMWARE_SUFFIXES = ("", ".xz", ".zst")
MODULE_DIRS = ("usr/lib/modules", "lib/modules")
FIRMWARE_DIRS = ("usr/lib/firmware", "lib/firmware")
_FIRMWARE = re.compile(rb"(?:^|\0)firmware=([^\0]+)")


@dataclass(frozen=True)
class PruneSettings:
    """What the packer leaves out: the seed's full list or only its minimal one, paths (globs relative
    to the root) kept although a rule matches them, and paths left out on top."""

    minimal: bool = False
    keep: tuple[str, ...] = ()
    more: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, object]:
        return {"minimal": self.minimal, "keep": list(self.keep), "more": list(self.more)}


@dataclass
class Cut:
    """What one rule removed."""

    rule: str
    files: int = 0
    bytes: int = 0

    def record(self) -> dict[str, object]:
        return {"rule": self.rule, "files": self.files, "bytes": self.bytes}


def kept(rel: str, keep: Iterable[str]) -> bool:
    """Whether a path (relative to the root) is one keep_paths names: a glob, or under a directory one."""
    return any(fnmatch.fnmatchcase(rel, k) or fnmatch.fnmatchcase(rel, k.rstrip("/") + "/*") for k in keep)


def record(manifest: dict[str, Any], done: Iterable[Cut]) -> None:
    """Add cuts to the build report's list, after those of earlier steps."""
    manifest["cuts"] = [*manifest.get("cuts", []), *(c.record() for c in done)]


def module_data(path: Path) -> bytes:
    """A module file's ELF bytes, decompressed as its suffix says (.ko, .ko.zst, .ko.xz, .ko.gz)."""
    data = path.read_bytes()
    if path.name.endswith(".xz"):
        return lzma.decompress(data)
    if path.name.endswith(".zst"):
        # every frame: a module compressed in pieces (or by a tool that writes several) is still one module
        return zstandard.ZstdDecompressor().decompressobj(read_across_frames=True).decompress(data)
    if path.name.endswith(".gz"):
        return gzip.decompress(data)
    return data


def module_firmware(path: Path) -> list[str]:
    """The firmware files a module declares (its `firmware=` .modinfo strings)."""
    return [m.decode(errors="replace") for m in _FIRMWARE.findall(module_data(path))]


def _modules(under: Path) -> list[Path]:
    """The module files under a directory, or the module file itself."""
    if under.is_file():
        return [under] if under.name.endswith(MODULE_SUFFIXES) else []
    return [Path(d, f) for d, _, files in os.walk(under) for f in files if f.endswith(MODULE_SUFFIXES)]


def size_of(paths: Iterable[Path]) -> tuple[int, int]:
    """(files, bytes) of these files and directories (links counted as themselves)."""
    files = total = 0
    for p in paths:
        for f in ([p] if not p.is_dir() or p.is_symlink() else
                  [Path(d, n) for d, _, names in os.walk(p) for n in names]):
            files += 1
            total += f.lstat().st_size
    return files, total


def distinct_dirs(tree: Path, rels: Iterable[str]) -> list[Path]:
    """The directories that exist, each once (lib/ is usr/lib/ on a merged-/usr tree)."""
    seen: dict[str, Path] = {}
    for d in (tree / r for r in rels):
        if d.is_dir():
            seen.setdefault(os.path.realpath(d), d)
    return list(seen.values())


def _module_trees(tree: Path) -> list[Path]:
    """<modules dir>/<version> of each kernel in the tree."""
    return [d / kver for d in distinct_dirs(tree, MODULE_DIRS) for kver in sorted(os.listdir(d))
            if (d / kver / "kernel").is_dir()]


def cut_modules(tree: Path, classes: Iterable[str]) -> tuple[list[Cut], list[str]]:
    """Remove the classes' module directories (and files) in every kernel of the tree, then the firmware only
    they named; return one Cut per class and one for firmware, and the kernel versions whose module
    tree changed (depmod must run for them)."""
    cuts = {c: Cut(f"kernel modules: {c}") for c in classes}
    kernels: list[str] = []
    removed_fw: set[str] = set()
    for modules in _module_trees(tree):
        gone = {c: [p for rel in MODULE_CLASSES[c] for p in sorted((modules / "kernel").glob(rel))] for c in cuts}
        for c, extra in _dependents(modules, gone).items():  # a module needing a cut one cannot load either
            gone[c] += extra
        if not any(gone.values()):
            continue
        kernels.append(modules.name)
        removed_fw.update(fw for dirs in gone.values() for d in dirs for m in _modules(d) for fw in module_firmware(m))
        for c, dirs in gone.items():
            files, size = size_of(dirs)
            cuts[c].files += files
            cuts[c].bytes += size
            for d in dirs:
                shutil.rmtree(d) if d.is_dir() and not d.is_symlink() else d.unlink()
    firmware = Cut("firmware only removed modules named")
    candidates = _firmware_files(tree, removed_fw)
    if candidates:  # reading every kept module is only worth it when there is something to remove
        kept = {fw for modules in _module_trees(tree) for m in _modules(modules) for fw in module_firmware(m)}
        unused = _firmware_files(tree, removed_fw - kept)
        firmware.files, firmware.bytes = size_of(tree / p for p in unused)
        for rel in unused:
            os.unlink(tree / rel)
    return [*cuts.values(), firmware], kernels


def _dependents(modules: Path, gone: dict[str, list[Path]]) -> dict[str, list[Path]]:
    """Modules outside `gone` that need one inside it (modules.dep, transitively), by the class they follow."""
    dep = modules / "modules.dep"
    if not dep.is_file():
        return {}
    needs = {m: deps.split() for m, _, deps in (line.partition(":") for line in dep.read_text().splitlines())}
    owner = {str(f.relative_to(modules)): c for c, paths in gone.items() for p in paths for f in _modules(p)}
    found: dict[str, str] = {}
    changed = True
    while changed:
        changed = False
        for m, deps in needs.items():
            if m not in owner and m not in found:
                hit = next((d for d in deps if d in owner or d in found), None)
                if hit is not None:
                    found[m] = owner.get(hit) or found[hit]
                    changed = True
    out: dict[str, list[Path]] = {}
    for m, c in sorted(found.items()):
        if (modules / m).is_file():
            out.setdefault(c, []).append(modules / m)
    return out


def _firmware_files(tree: Path, names: set[str]) -> list[str]:
    """The files (plain or compressed) of these firmware names in the tree."""
    out = []
    for fw_dir in distinct_dirs(tree, FIRMWARE_DIRS):
        for name in sorted(names):
            for suffix in FIRMWARE_SUFFIXES:
                p = fw_dir / (name + suffix)
                if p.is_file() or p.is_symlink():
                    out.append(str(p.relative_to(tree)))
    return out
