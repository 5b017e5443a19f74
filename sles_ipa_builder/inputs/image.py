"""The root filesystem from the SLES qcow2, through libguestfs: no qemu-img convert, no loop device,
no kpartx, no host mount.

The image is opened read-only in the libguestfs appliance; root, /boot and the ESP are chosen as the
seed chose them (GPT type GUIDs and labels, the single-partition case), then the image's own fstab
adds its other filesystems (btrfs subvolumes such as SUSE's @/home); libguestfs inspection is the
fallback when that finds no root. btrfs root: its default subvolume (SUSE's @/.snapshots/1/snapshot),
else `root` or `@`; xfs with nouuid. The tree is streamed out once (`tar_out`, uncompressed inside
the guest) into `tar -x` on the host, into the cache: rootfs/<the qcow2's sha256>/, kept unpacked. A
build shows it as its root through overlayfs (layers.py), so a later build with the same image
restores it with one mount.
"""

from __future__ import annotations

import logging
import os
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from .. import run
from ..config.arch import Arch
from ..config.resolve import Config
from ..errors import BuildError, InputError
from .appliance import launch

log = logging.getLogger(__name__)

ESP_GUID = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B"
XBOOTLDR_GUID = "BC13C2FF-59E6-4262-A352-B275FD6F7172"
QCOW2_MAGIC = b"QFI\xfb"
PIPE = -1  # subprocess.PIPE; only run.py imports subprocess
CHUNK = 1 << 20
ZSTD_LEVEL = 3  # fast: the guest, not the compressor, is the bottleneck
# Host tar: ownership by number (the image's passwd, not the host's), xattrs without SELinux labels, ACLs.
TAR_KEEP = ["--numeric-owner", "--xattrs", "--xattrs-include=*", "--xattrs-exclude=security.selinux",
            "--acls"]
SKIP_MOUNTS = ("/.snapshots",)  # snapper's subvolume: every old snapshot would land in the tree
BINARIES = ("/usr/bin/ls", "/bin/ls", "/usr/bin/bash", "/bin/bash", "/bin/sh", "/usr/lib/systemd/systemd")


def find_image(cfg: Config) -> Path:
    """cfg.base_image, else the first existing of the names the seed and SUSE use in images_dir."""
    if cfg.base_image:
        image = Path(cfg.base_image)
        if not image.is_file():
            raise InputError(f"base image {image} not found",
                             "check --base-image, or drop it to search images_dir")
        return image
    candidates = cfg.base_image_candidates()
    for c in candidates:
        if c.is_file():
            return Path(c)
    names = ", ".join(c.name for c in candidates)
    raise InputError(f"no base image in {candidates[0].parent} (looked for {names})",
                     "download the SLES Minimal-VM OpenStack qcow2 there, or give --base-image")


def sniff(image: Path) -> str:
    """'qcow2' or 'raw' (a partitioned disk), else an InputError: decided before any appliance starts."""
    with image.open("rb") as f:
        head = f.read(1024)
    if head[:4] == QCOW2_MAGIC:
        # a partial download has the magic too; qemu-img check reads only the metadata (instant).
        # 0: clean, 3: leaked clusters (harmless); 2: corrupt, 1: could not even be checked
        res = run.run(["qemu-img", "check", "-q", "-U", "-f", "qcow2", image], check=False, capture=True)
        if res.returncode in (1, 2):
            first = (res.stderr or res.stdout).strip().splitlines()[:1]
            raise InputError(f"{image} is a damaged qcow2 ({first[0][:120] if first else 'qemu-img check failed'})",
                             "download the image again and compare its checksum with SUSE's")
        return "qcow2"
    if len(head) >= 520 and (head[510:512] == b"\x55\xaa" or head[512:520] == b"EFI PART"):
        return "raw"
    raise InputError(f"{image} is not a disk image (neither qcow2 nor a partitioned raw disk)",
                     "give the SLES Minimal-VM OpenStack .qcow2 (an .xz download must be unpacked first)")


# --- choosing and mounting the filesystems -------------------------------------------------------------


def _opts(g: Any, dev: str) -> str:
    fstype = g.vfs_type(dev)
    return "ro,nouuid" if fstype == "xfs" else "ro"


def _inspected(g: Any) -> tuple[str, list[tuple[str, str]]] | None:
    """(arch, [(mountpoint, device)]) from inspection (fstab, btrfs subvolumes), if it finds Linux."""
    for r in g.inspect_os():
        if g.inspect_get_type(r) == "linux":
            mps = g.inspect_get_mountpoints(r)
            pairs = sorted(((mp, dev) for mp, dev in mps.items() if mp not in SKIP_MOUNTS),
                           key=lambda p: (p[0].count("/") if p[0] != "/" else 0, p[0]))
            return str(g.inspect_get_arch(r)), pairs
    return None


def _classified(g: Any, image: Path) -> list[tuple[str, str]]:
    """The seed's rule: ESP by GPT type, /boot by XBOOTLDR type or label `boot`, root = first remaining
    (devices in reverse order, as its `sort -r`), a single partition is root."""
    devices = list(g.list_partitions()) or list(g.list_devices())
    esp = boot = rootdev = None
    for dev in sorted(devices, reverse=True):
        try:
            fstype = g.vfs_type(dev)
        except RuntimeError:
            continue
        if not fstype or fstype in NOT_A_FILESYSTEM:  # LVM/RAID/LUKS roots: found by inspection
            continue
        try:
            guid = g.part_get_gpt_type(g.part_to_dev(dev), g.part_to_partnum(dev)).upper()
        except RuntimeError:
            guid = ""
        label = g.vfs_label(dev)
        if guid == ESP_GUID and esp is None:
            esp = dev
        elif (guid == XBOOTLDR_GUID or label == "boot") and boot is None:
            boot = dev
        elif rootdev is None:
            rootdev = dev
    if rootdev is None:
        raise InputError(f"no Linux root filesystem found in {image}",
                         "give the SLES Minimal-VM OpenStack qcow2 (its root partition could not be found)")
    pairs = [("/", rootdev)]
    pairs += [(mp, d) for mp, d in (("/boot", boot), ("/boot/efi", esp)) if d]
    return pairs


def _mount_root(g: Any, dev: str) -> None:
    """Mount root read-only; btrfs: its default subvolume, else `root` (the seed's) or SUSE's `@`."""
    g.mount_options(_opts(g, dev), dev, "/")
    if g.vfs_type(dev) != "btrfs" or g.is_dir("/etc"):
        return
    names = {s["btrfssubvolume_path"] for s in g.btrfs_subvolume_list("/")}
    for sub in ("root", "@/.snapshots/1/snapshot", "@"):
        if sub in names:
            g.umount("/")
            g.mount_options(f"ro,subvol={sub}", dev, "/")
            if g.is_dir("/etc"):
                return


def _is_root(g: Any) -> bool:
    return bool(g.is_dir("/etc") and (g.is_dir("/usr") or g.is_dir("/bin")))


NOT_A_FILESYSTEM = {"swap", "LVM2_member", "linux_raid_member", "crypto_LUKS", "zfs_member"}
NOT_MOUNTED = {"swap", "proc", "sysfs", "tmpfs", "devpts", "devtmpfs", "nfs", "nfs4", "cifs", "none"}


def _resolve_spec(g: Any, spec: str) -> str | None:
    """An fstab device spec (UUID=, LABEL=, PARTUUID=, /dev/disk/by-*, /dev/x) as an appliance device."""
    for prefix, kind in (("UUID=", "uuid"), ("/dev/disk/by-uuid/", "uuid"), ("LABEL=", "label"),
                         ("/dev/disk/by-label/", "label"), ("PARTUUID=", "partuuid"),
                         ("/dev/disk/by-partuuid/", "partuuid")):
        if spec.startswith(prefix):
            value = spec[len(prefix):].strip('"')
            try:
                if kind == "uuid":
                    return str(g.findfs_uuid(value))
                if kind == "label":
                    return str(g.findfs_label(value))
                for part in g.list_partitions():
                    guid = g.part_get_gpt_guid(g.part_to_dev(part), g.part_to_partnum(part))
                    if guid.upper() == value.upper():
                        return str(part)
            except RuntimeError:
                return None
            return None
    if spec.startswith("/dev/"):
        try:
            dev = str(g.canonical_device_name(spec))
        except RuntimeError:
            return None
        return dev if dev in g.list_partitions() or dev in g.list_devices() else None
    return None


def _fstab_mounts(g: Any) -> list[tuple[str, str, str]]:
    """(mountpoint, device, options) for the filesystems the image's own fstab mounts below /."""
    if not g.is_file("/etc/fstab"):
        return []
    found = []
    for line in g.cat("/etc/fstab").splitlines():
        fields = line.split("#", 1)[0].split()
        if len(fields) < 3:
            continue
        spec, mp, fstype = fields[:3]
        opts = fields[3].split(",") if len(fields) > 3 else []
        if (not mp.startswith("/") or mp == "/" or mp in SKIP_MOUNTS or fstype in NOT_MOUNTED
                or "bind" in opts or "noauto" in opts):
            continue
        dev = _resolve_spec(g, spec)
        if dev is None:
            log.warning("fstab entry %s on %s: device not found in the image; skipped", spec, mp)
            continue
        extra = [o for o in opts if o.startswith("subvol=")]
        found.append((os.path.normpath(mp), dev, ",".join([_opts(g, dev), *extra[:1]])))
    return found


def _mount_layout(g: Any, image: Path) -> tuple[str, list[tuple[str, str, str]]]:
    """(arch, mounts below /) with root already mounted.

    Fast path first (the seed's partition rule, then the image's fstab): a few appliance calls.
    libguestfs inspection (~13 s more under TCG, it loads augeas) only when that finds no root.
    """
    try:
        pairs = _classified(g, image)
        _mount_root(g, pairs[0][1])
        if _is_root(g):
            mounts = _fstab_mounts(g)
            have = {mp for mp, _, _ in mounts}
            # the seed mounted /boot and the ESP by partition type even without fstab lines
            mounts += [(mp, dev, _opts(g, dev)) for mp, dev in pairs[1:] if mp not in have]
            return "", mounts
    except (InputError, RuntimeError) as e:  # no plain root partition, or it would not mount
        log.debug("%s: the partition rule found no root (%s); inspecting", image.name, str(e).splitlines()[0])
    g.umount_all()
    found = _inspected(g)
    if not found:
        raise InputError(f"no Linux root filesystem found in {image}",
                         "give the SLES Minimal-VM OpenStack qcow2 (no partition holds /etc and /usr)")
    arch, inspected = found
    root = dict(inspected)["/"]
    g.mount_options(_opts(g, root), root, "/")
    return arch, [(mp, dev, _opts(g, dev)) for mp, dev in inspected if mp != "/"]


def mount_tree(g: Any, image: Path, expected: Arch) -> dict[str, Any]:
    arch, mounts = _mount_layout(g, image)
    by_mountpoint = {mp: dev for dev, mp in g.mountpoints().items()}
    mounted = [{"mountpoint": "/", "device": str(by_mountpoint.get("/", ""))}]
    for mp, dev, opts in sorted(mounts, key=lambda m: (m[0].count("/"), m[0])):
        if not g.is_dir(mp):
            log.warning("%s: no directory %s for %s in the root filesystem; skipped", image.name, mp, dev)
            continue
        try:
            g.mount_options(opts, dev, mp)
        except RuntimeError as e:
            log.warning("%s: could not mount %s on %s (%s); skipped", image.name, dev, mp, str(e)[:120])
            continue
        mounted.append({"mountpoint": mp, "device": dev})
    if not _is_root(g):
        raise InputError(f"no Linux root filesystem found in {image}",
                         "give the SLES Minimal-VM OpenStack qcow2 (no partition holds /etc and /usr)")
    arch = arch if arch and arch != "unknown" else _arch(g)
    if arch and arch != expected.elf:
        raise InputError(f"{image} is an {arch} image, not {expected}", f"use the {expected} SLES Minimal-VM qcow2")
    if not arch:
        log.warning("%s: could not tell the architecture; assuming %s", image.name, expected)
    return {"arch": arch or "unknown", "mounts": mounted}


def _arch(g: Any) -> str:
    for p in BINARIES:
        try:
            if g.is_file(p, followsymlinks=True):
                return str(g.file_architecture(g.realpath(p)))
        except RuntimeError:
            continue
    return ""


# --- streaming the tree out ----------------------------------------------------------------------------


def extract(image: Path, fmt: str, root: Path, *, arch: Arch, accel: str = "auto") -> dict[str, Any]:
    """Cold path: one tar stream out of the appliance into `tar -x` on the host."""
    timings: dict[str, float] = {}
    t = time.monotonic()
    g, used = launch(image, fmt, accel)
    timings["launch"] = round(time.monotonic() - t, 2)
    try:
        t = time.monotonic()
        layout = mount_tree(g, image, arch)
        timings["inspect_mount"] = round(time.monotonic() - t, 2)
        t = time.monotonic()
        size = _stream(g, root)
        timings["tar_out_extract"] = round(time.monotonic() - t, 2)
    except RuntimeError as e:  # what the guestfs bindings raise
        raise BuildError(f"reading {image.name} with libguestfs failed: {str(e).splitlines()[0][:200]}",
                         "run with --debug; LIBGUESTFS_DEBUG=1 shows the appliance's side") from None
    finally:
        g.shutdown()
        g.close()
    return {"accel": used, "timings": timings, "stream_bytes": size, **layout}


def _stream(g: Any, root: Path) -> int:
    rfd, wfd = os.pipe()
    errfile = tempfile.TemporaryFile()  # not a pipe: tar's warnings must never block its stdin
    tar = run.popen(["tar", "-x", "-f", "-", "-C", root, *TAR_KEEP], stdin=PIPE, stderr=errfile)
    assert tar.stdin is not None
    total = 0
    tar_broken = False

    def feed() -> None:
        nonlocal total, tar_broken
        try:
            while chunk := os.read(rfd, CHUNK):
                total += len(chunk)
                if not tar_broken:
                    try:
                        tar.stdin.write(chunk)  # type: ignore[union-attr]
                    except BrokenPipeError:
                        tar_broken = True  # keep draining: the guest would block on a full pipe
        finally:
            os.close(rfd)
            try:
                tar.stdin.close()  # type: ignore[union-attr]
            except BrokenPipeError:
                pass

    reader = threading.Thread(target=feed, name="rootfs-feed", daemon=True)
    reader.start()
    try:
        g.tar_out("/", f"/dev/fd/{wfd}", numericowner=True, xattrs=True, selinux=False, acls=True)
    finally:
        os.close(wfd)
        reader.join()
        tar.wait()
        errfile.seek(0)
        tail = errfile.read().decode(errors="replace").strip().splitlines()[-3:]
        errfile.close()
    if tar.returncode != 0 or tar_broken:
        raise BuildError(f"extracting the root tree into {root} failed: {' / '.join(tail)[:300]}",
                         "check free space in the cache directory")
    return total
