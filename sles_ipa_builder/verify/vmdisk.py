"""The lifecycle's disks, looked at from outside the VM.

- `old_disk()`: the machine's disk as a previous owner left it (GPT + an ext4 filesystem), so
  cleaning has something to erase and `signatures()` can tell that it did.
- `deploy_image()`: a small whole-disk image (GPT, an EFI system partition holding
  EFI/BOOT/BOOTX64.EFI so the agent's efibootmgr step has a loader to register, a data partition
  of seeded random bytes) as qcow2, so the ramdisk's qemu-img must convert it while writing.
  GPT because the agent's UEFI set-up finds the ESP by GPT partition GUID only.
- `written()`: the disk holds the image. After writing a GPT image the agent moves the backup GPT
  to the end of the disk (sgdisk -e), which rewrites the protective MBR (its partition now spans the
  disk) and the primary header (LBA 0 and 1) and nothing else of the image: every other byte of the
  image's extent is compared, LBA 0 must still be a protective MBR and LBA 1 keep the image's disk GUID.
- `check_image()`: a user's deploy image must be a disk image (raw with a partition table, or
  qcow2), refused before any VM starts.
"""

from __future__ import annotations

import hashlib
import json
import random
from dataclasses import dataclass
from pathlib import Path

from .. import run
from ..cache.store import sha256_uncached
from ..errors import CommandError, ConfigError, InputError

MiB = 2**20
SECTOR = 512
OLD_FS_OFFSET = MiB  # the ext4 of the old disk starts at its first partition (sector 2048)
EXT4_MAGIC_AT = OLD_FS_OFFSET + 1024 + 0x38  # superblock s_magic
IMAGE_MB = 24
ESP_MB = 8
SEED = 12
DISK_GUID = "5eb1ade5-0000-4000-8000-000000000001"
ESP_GUID = "5eb1ade5-0000-4000-8000-0000000000e5"
DATA_GUID = "5eb1ade5-0000-4000-8000-0000000000da"


@dataclass(frozen=True)
class DeployImage:
    path: Path  # the file served to Ironic (qcow2 or raw)
    format: str
    sha256: str  # of that file (Ironic's checksum)
    raw: Path  # the raw content: what the VM disk must hold after deploy


def old_disk(path: Path, size: int) -> None:
    """A sparse disk with a GPT and an ext4 filesystem in its first partition."""
    with path.open("wb") as f:
        f.truncate(size)
    # mke2fs zaps the first sectors of the file: the filesystem first, then the partition table.
    blocks = 256 * MiB // 4096
    run.run(["mkfs.ext4", "-q", "-F", "-b", "4096", "-E", f"offset={OLD_FS_OFFSET}", path, str(blocks)],
            capture=True)  # fmt: skip
    run.run(["sgdisk", "-n", "1:2048:+256M", "-t", "1:8300", path], capture=True)
    found = signatures(path)
    if not {"gpt", "gpt-backup", "ext4"} <= set(found):
        raise AssertionError(f"the old disk was not made as intended: {found}")


def signatures(path: Path) -> list[str]:
    """Which old-owner signatures a disk still carries: MBR, GPT (primary, backup), the old ext4."""
    found = []
    size = path.stat().st_size
    with path.open("rb") as f:
        mbr = f.read(SECTOR)
        if mbr[510:512] == b"\x55\xaa":
            found.append("mbr")
        if f.read(8) == b"EFI PART":
            found.append("gpt")
        f.seek(size - SECTOR)
        if f.read(8) == b"EFI PART":
            found.append("gpt-backup")
        f.seek(EXT4_MAGIC_AT)
        if f.read(2) == b"\x53\xef":
            found.append("ext4")
    return found


def has_partition_table(head: bytes) -> bool:
    """GPT, or an MBR whose four entries are well-formed and not all empty (a bare FAT or ext4
    filesystem also ends its first sector with 55 AA, but has boot code or zeros there)."""
    if head[512:520] == b"EFI PART":
        return True
    if len(head) < SECTOR or head[510:512] != b"\x55\xaa" or head[0x36:0x39] == b"FAT" or head[0x52:0x55] == b"FAT":
        return False
    entries = [head[446 + 16 * i : 462 + 16 * i] for i in range(4)]
    return all(e[0] in (0, 0x80) for e in entries) and any(e[4] != 0 for e in entries)


def region_sha256(path: Path, length: int, *, skip: int = 0) -> str:
    """sha256 of the first `length` bytes of `path`, the first `skip` bytes left out."""
    h = hashlib.sha256()
    with path.open("rb") as f:
        f.seek(skip)
        left = length - skip
        while left > 0:
            chunk = f.read(min(left, 4 * MiB))
            if not chunk:
                break
            h.update(chunk)
            left -= len(chunk)
    return h.hexdigest()


def written(disk: Path, raw_image: Path) -> tuple[bool, str]:
    """Does the disk hold the image? (verdict, one line saying what was compared)."""
    length = raw_image.stat().st_size
    with raw_image.open("rb") as f:
        f.seek(SECTOR)
        header = f.read(SECTOR)
    gpt = header[:8] == b"EFI PART"
    skip = 2 * SECTOR if gpt else 0  # LBA 0 and 1: the headers the agent rewrites (see below)
    want = region_sha256(raw_image, length, skip=skip)
    got = region_sha256(disk, length, skip=skip)
    what = f"disk[0:{length}]" + (" except LBA 0-1 (the GPT headers the agent rewrites)" if gpt else "")
    if got != want:
        return False, f"{what} has sha256 {got[:16]}..., the image {want[:16]}..."
    if gpt:
        with disk.open("rb") as f:
            pmbr, on_disk = f.read(SECTOR), f.read(SECTOR)
        if pmbr[510:512] != b"\x55\xaa" or pmbr[446 + 4] != 0xEE:
            return False, f"{what} matches, but LBA 0 is no longer a protective MBR"
        if on_disk[:8] != b"EFI PART" or on_disk[56:72] != header[56:72]:
            return False, f"{what} matches, but LBA 1 is not a GPT header with the image's disk GUID"
    return True, f"{what}: sha256 {got} = the image's"


def deploy_image(workdir: Path) -> DeployImage:
    """The default deploy image: made in a second, deterministic content, qcow2."""
    for tool, pkg in (("sgdisk", "gdisk"), ("mkfs.vfat", "dosfstools"), ("mcopy", "mtools"),
                      ("qemu-img", "qemu-utils")):  # fmt: skip
        if run.which(tool) is None:
            raise ConfigError(f"{tool} not found (needed to make the deploy image)", f"apt-get install {pkg}")
    raw = workdir / "deploy.raw"
    esp = workdir / "esp.img"
    rng = random.Random(SEED)
    with raw.open("wb") as f:
        f.truncate(IMAGE_MB * MiB)
        f.seek((1 + ESP_MB) * MiB)
        f.write(rng.randbytes((IMAGE_MB - ESP_MB - 2) * MiB))
    run.run(["sgdisk", "-U", DISK_GUID, "-n", f"1:2048:+{ESP_MB}M", "-t", "1:ef00", "-u", f"1:{ESP_GUID}",
             "-n", "2:0:0", "-t", "2:8300", "-u", f"2:{DATA_GUID}", raw], capture=True)  # fmt: skip
    with esp.open("wb") as f:
        f.truncate(ESP_MB * MiB)
    run.run(["mkfs.vfat", "-i", "5eb1ade5", esp], capture=True)
    loader = workdir / "BOOTX64.EFI"
    loader.write_bytes(b"MZ" + rng.randbytes(4094))  # not bootable: the VM never boots the instance
    env = {"MTOOLS_SKIP_CHECK": "1", "SOURCE_DATE_EPOCH": "0", "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}
    run.run(["mmd", "-i", esp, "::/EFI", "::/EFI/BOOT"], env=env, capture=True)
    run.run(["mcopy", "-m", "-i", esp, loader, "::/EFI/BOOT/BOOTX64.EFI"], env=env, capture=True)
    with raw.open("r+b") as f, esp.open("rb") as e:
        f.seek(MiB)
        f.write(e.read())
    qcow2 = workdir / "deploy.qcow2"
    run.run(["qemu-img", "convert", "-q", "-f", "raw", "-O", "qcow2", raw, qcow2], capture=True)
    return DeployImage(qcow2, "qcow2", sha256_uncached(qcow2), raw)


def check_image(path: Path, workdir: Path, disk_size: int) -> DeployImage:
    """A user's deploy image, checked and measured; InputError when it is not a whole-disk image."""
    if not path.is_file():
        raise InputError(f"deploy image {path} not found", "give a raw or qcow2 whole-disk image")
    try:
        info = json.loads(run.output(["qemu-img", "info", "--output=json", path]))
    except (CommandError, ValueError) as e:
        raise InputError(f"deploy image {path}: qemu-img cannot read it ({e})", "give a raw or qcow2 disk image") \
            from None
    fmt, size = info.get("format", ""), int(info.get("virtual-size", 0))
    if fmt not in ("raw", "qcow2"):
        raise InputError(f"deploy image {path} is {fmt or 'of unknown format'}, not a disk image",
                         "give a raw or qcow2 whole-disk image (Ironic permits raw, gpt, qcow2)")
    raw = workdir / "deploy.raw"
    run.run(["qemu-img", "convert", "-q", "-f", fmt, "-O", "raw", path, raw], capture=True)
    with raw.open("rb") as f:
        head = f.read(2 * SECTOR)
    if not has_partition_table(head):
        raise InputError(f"deploy image {path} has no partition table (no MBR or protective MBR): not a disk image",
                         "give a whole-disk image (a partition table, a bootloader and filesystems)")
    if size > disk_size:
        raise InputError(f"deploy image {path} ({size / MiB:.0f} MiB) is larger than the VM's disk",
                         "use a smaller image")
    return DeployImage(path, fmt, sha256_uncached(path), raw)
