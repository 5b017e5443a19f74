"""Benchmark of the root phase: cold (empty cache) vs warm (cache hit) vs the seed's way, as ratios.

    .venv/bin/python bench/root.py [--image X.qcow2] [--accel auto|kvm|tcg]

Image: --image, else the fixtures' ext4 base image if the test media is built, else the small
image tests/test_image.py keeps in .pytest_cache. The seed's method is reproduced on the same image:
qemu-img convert to raw, a loop device per partition (offsets from sfdisk, so no udev or kpartx is
needed), mount ro, `tar -cz`, then the seed's warm step `tar -xzf` into a fresh directory. Its mounts
live in a private mount namespace (unshare) and its loop devices are detached on every exit.
Goals (issue 5): warm <= 15% of cold; warm faster than the seed's warm `tar -xzf`.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from sles_ipa_builder import run
from sles_ipa_builder.cache import roottree as layers
from sles_ipa_builder.config import resolve as config
from sles_ipa_builder.engine import namespace
from sles_ipa_builder.inputs import image

REPO = Path(__file__).resolve().parent.parent

ESP = image.ESP_GUID.lower()
TAR_KEEP = ["--numeric-owner", "--xattrs", "--xattrs-include=*", "--xattrs-exclude=security.selinux"]


def default_image() -> Path:
    from sles_ipa_builder.cache.store import cache_dir
    from sles_ipa_builder.cli.commands import built_testmedia

    media = built_testmedia()
    if media is not None:
        return Path(media.base_ext4)
    small = cache_dir("test-images") / "v3" / "ext4.qcow2"
    if small.exists():
        return small
    sys.exit("no image: pass --image, build the fixtures, or run tests/test_image.py once")


def make_image(trees: list[Path], out: Path) -> Path:
    """A GPT qcow2 (bios_boot, ESP, ext4 root) holding `trees` under /usr/lib/bench plus the files that
    make it a Linux root, for a realistic-size bench when the fixtures are not built."""
    import guestfs

    if out.exists():
        return out
    size = sum(du(t) for t in trees)
    g = guestfs.GuestFS(python_return_dict=True)
    tmp = out.with_suffix(".tmp")
    g.disk_create(str(tmp), "qcow2", int(size * 1.4) + (256 << 20))
    g.add_drive_opts(str(tmp), format="qcow2", readonly=0)
    g.set_memsize(1024)
    g.launch()
    g.part_init("/dev/sda", "gpt")
    g.part_add("/dev/sda", "p", 2048, 4095)
    g.part_add("/dev/sda", "p", 4096, 69631)
    g.part_add("/dev/sda", "p", 69632, -34)
    g.part_set_gpt_type("/dev/sda", 2, image.ESP_GUID)
    g.mkfs("vfat", "/dev/sda2", label="EFI")
    g.mkfs("ext4", "/dev/sda3", label="ROOT")
    g.mount("/dev/sda3", "/")
    for d in ("/etc", "/usr/bin", "/boot/efi", "/usr/lib/bench"):
        g.mkdir_p(d)
    g.write("/etc/os-release", b'NAME="SLES"\nVERSION_ID="15.4"\nID="sles"\n')
    g.write("/etc/fstab", b"LABEL=ROOT / ext4 defaults 0 1\nLABEL=EFI /boot/efi vfat defaults 0 0\n")
    g.upload("/usr/bin/ls", "/usr/bin/ls")
    g.ln_s("usr/bin", "/bin")
    for i, t in enumerate(trees):
        g.mkdir_p(f"/usr/lib/bench/{i}")
        tar = run.popen(["tar", "-C", t, "-cf", "-", "."], stdout=-1)
        assert tar.stdout is not None
        g.tar_in(f"/dev/fd/{tar.stdout.fileno()}", f"/usr/lib/bench/{i}")
        tar.stdout.close()
        tar.wait()
    g.shutdown()
    g.close()
    tmp.rename(out)
    return out


def du(path: Path) -> int:
    return int(run.output(["du", "-sb", "--apparent-size", path]).split()[0])


def ours(img: Path, work: Path, accel: str, stack: contextlib.ExitStack) -> tuple[dict[str, Any], dict[str, Any]]:
    """Both through the overlayfs a build uses (this bench runs in the build's private namespace)."""
    os.environ["XDG_CACHE_HOME"] = str(work / "xdg")  # an empty cache: the first run is cold
    cfg = config.resolve({"base_image": str(img)}, environ={})
    cold = layers.prepare_root(cfg, work / "cold", accel=accel, stack=stack)
    warm = layers.prepare_root(cfg, work / "warm", accel=accel, stack=stack)
    assert cold["cache"] == "miss" and warm["cache"] == "hit", (cold, warm)
    return cold, warm


SEED_SCRIPT = r"""
set -eu
raw=$1; mnt=$2; out=$3; root_off=$4; root_size=$5; root_fs=$6; esp_off=$7; esp_size=$8
loops=""
trap 'umount -R "$mnt" 2>/dev/null || true; for l in $loops; do losetup -d $l; done' EXIT
l=$(losetup --find --show --read-only --offset "$root_off" --sizelimit "$root_size" "$raw"); loops="$l"
opts=ro; [ "$root_fs" = xfs ] && opts=ro,nouuid
mount -o "$opts" "$l" "$mnt"
if [ "$esp_off" != 0 ] && [ -d "$mnt/boot/efi" ]; then
  e=$(losetup --find --show --read-only --offset "$esp_off" --sizelimit "$esp_size" "$raw"); loops="$loops $e"
  mount -o ro "$e" "$mnt/boot/efi" || echo "seed: ESP not mounted (no vfat here); timing without it" >&2
fi
tar -C "$mnt" --numeric-owner --xattrs --xattrs-include='*' --xattrs-exclude=security.selinux -cz . > "$out"
"""


def seed(img: Path, work: Path) -> dict[str, float]:
    """The seed's sles/root.d on the same image (convert, map, mount, tar -cz; then tar -xzf)."""
    t: dict[str, float] = {}
    raw = work / "seed.raw"
    start = time.monotonic()
    run.run(["qemu-img", "convert", "-f", "qcow2", "-O", "raw", img, raw])
    t["convert"] = time.monotonic() - start
    table = json.loads(run.output(["sfdisk", "-J", raw]))["partitiontable"]
    sector = int(table.get("sectorsize", 512))
    parts = table["partitions"]
    esp = next((p for p in parts if p.get("type", "").lower() == ESP), None)
    bios_boot = "21686148-6449-6E6F-744E-656564454649"
    rootp = [p for p in parts if p is not esp and p.get("type", "").upper() != bios_boot]
    rootp.sort(key=lambda p: p["node"], reverse=True)  # the seed's `sort -r`
    r = rootp[0]
    fstype = run.output(["blkid", "-p", "-o", "value", "-s", "TYPE", "-O", str(r["start"] * sector), raw],
                        check=False) or "ext4"
    mnt = work / "seed-mnt"
    mnt.mkdir()
    tgz = work / "seed.tgz"
    start = time.monotonic()
    run.run(["unshare", "--mount", "--propagation", "private", "sh", "-c", SEED_SCRIPT, "seed", raw, mnt, tgz,
             str(r["start"] * sector), str(r["size"] * sector), fstype,
             str(esp["start"] * sector if esp else 0), str(esp["size"] * sector if esp else 0)])
    t["map_mount_tar_cz"] = time.monotonic() - start
    raw.unlink()
    dest = work / "seed-root"
    dest.mkdir()
    start = time.monotonic()
    run.run(["tar", "-C", dest, *TAR_KEEP, "-xzf", tgz])
    t["warm_tar_xzf"] = time.monotonic() - start
    t["cold"] = t["convert"] + t["map_mount_tar_cz"] + t["warm_tar_xzf"]
    t["tgz_bytes"] = tgz.stat().st_size
    return t


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--image", type=Path)
    ap.add_argument("--accel", default="auto", choices=("auto", "kvm", "tcg"))
    ap.add_argument("--keep", action="store_true", help="keep the work directory")
    ap.add_argument("--from-tree", type=Path, action="append", default=[],
                    help="build (once, kept in /var/tmp) an image holding these host trees and bench that")
    args = ap.parse_args()
    namespace.enter()  # as a build: the overlayfs mounts stay private and go with the bench
    if args.from_tree:
        name = "sib-bench-" + "-".join(p.name for p in args.from_tree) + ".qcow2"
        args.image = make_image(args.from_tree, Path("/var/tmp") / name)
    img = (args.image or default_image()).resolve()
    work = Path(tempfile.mkdtemp(prefix="sib-bench-root-", dir="/var/tmp"))
    try:
        print(f"image: {img} ({img.stat().st_size / 1e6:.0f} MB qcow2)")
        with contextlib.ExitStack() as stack:
            cold, warm = ours(img, work, args.accel, stack)
            tree = du(work / "warm")
        s = seed(img, work)
        c, w = cold["seconds"], warm["seconds"]
        ct = cold["timings"]
        print(f"tree: {tree / 1e6:.0f} MB, cached unpacked, vs seed {s['tgz_bytes'] / 1e6:.0f} MB gzip; "
              f"libguestfs accel: {cold['accel']}")
        print(f"ours  cold  {c:7.1f}s  = launch {ct['launch']:.1f} + inspect/mount {ct['inspect_mount']:.1f}"
              f" + tar-out/extract {ct['tar_out_extract']:.1f} (+ hashing/other)")
        print(f"ours  warm  {w:7.1f}s  (restored by {warm['restore']})")
        print(f"seed  cold  {s['cold']:7.1f}s  = convert {s['convert']:.1f} + map/mount/tar -cz "
              f"{s['map_mount_tar_cz']:.1f} + tar -xzf {s['warm_tar_xzf']:.1f}")
        print(f"seed  warm  {s['warm_tar_xzf']:7.1f}s  (tar -xzf of its cached tgz)")
        print(f"warm/cold           {w / c:6.1%}   goal <= 15%            {verdict(w / c <= 0.15)}")
        print(f"warm/seed warm      {w / s['warm_tar_xzf']:6.2f}x  goal < 1.00x          "
              f"{verdict(w < s['warm_tar_xzf'])}")
        print(f"cold/seed cold      {c / s['cold']:6.2f}x  (reported; the guest's tar-out costs most)")
    finally:
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
