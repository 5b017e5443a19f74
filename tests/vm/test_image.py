"""image.py: the root tree out of a qcow2 through libguestfs, the rootfs cache, the error cases.

The images are tiny qcow2 files made once with libguestfs (one appliance launch for all of them) and
kept in pytest's cache directory: GPT with bios_boot + ESP + root (ext4, and btrfs with SUSE's `@`
default subvolume and an `@/home` subvolume mounted via fstab), an MBR single-partition aarch64
image and a disk with no Linux root.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
from pathlib import Path
from typing import Any

import pytest

from sles_ipa_builder import run
from sles_ipa_builder.cache import roottree as layers
from sles_ipa_builder.config import resolve as config
from sles_ipa_builder.errors import InputError
from sles_ipa_builder.inputs import appliance, image

IMAGES_VERSION = "v4"
VARIANTS = ("ext4", "btrfs", "aarch64", "noroot", "lvm")
BIOS_BOOT = "21686148-6449-6E6F-744E-656564454649"
LINUX_FS = "0FC63DAF-8483-4772-8E79-3D69D8477DE4"
FSTAB = {
    "ext4": "LABEL=ROOT / ext4 defaults 0 1\nLABEL=EFI /boot/efi vfat defaults 0 0\n",
    "btrfs": ("LABEL=ROOT / btrfs defaults 0 0\nLABEL=ROOT /home btrfs subvol=@/home 0 0\n"
              "LABEL=ROOT /.snapshots btrfs subvol=@/.snapshots 0 0\n"
              "LABEL=EFI /boot/efi vfat defaults 0 0\n"),
}


def make_tree(d: Path, fstab: str, *, arch_patch: bool = False) -> None:
    for sub in ("etc", "usr/bin", "usr/lib", "dev", "boot/efi", "home", ".snapshots", "var/tmp"):
        (d / sub).mkdir(parents=True, exist_ok=True)
    (d / "etc/os-release").write_text('NAME="SLES"\nVERSION_ID="15.4"\nID="sles"\n')
    (d / "etc/SUSE-brand").write_text("SLE\nVERSION = 15\n")
    (d / "etc/fstab").write_text(fstab)
    (d / "etc/hosts").write_text("127.0.0.1 localhost\n")
    ls = Path("/usr/bin/ls").read_bytes()
    if arch_patch:  # e_machine = EM_AARCH64
        ls = ls[:18] + (183).to_bytes(2, "little") + ls[20:]
    for name in ("ls", "bash"):
        (d / f"usr/bin/{name}").write_bytes(ls)
        (d / f"usr/bin/{name}").chmod(0o755)
    (d / "bin").symlink_to("usr/bin")
    os.link(d / "usr/bin/ls", d / "usr/bin/dir")
    (d / "usr/bin/su").write_bytes(b"#!/bin/sh\n")
    (d / "usr/bin/su").chmod(0o4755)
    (d / "etc/owned").write_text("x")
    os.chown(d / "etc/owned", 1234, 5678)
    os.setxattr(d / "etc/owned", "user.sib", b"hello")
    subprocess.run(["setfacl", "-m", "u:4321:rwx", str(d / "etc/owned")], check=True)
    os.mknod(d / "dev/null", 0o666 | stat.S_IFCHR, os.makedev(1, 3))
    (d / "home/user").mkdir()
    (d / "home/user/file").write_text("home\n")
    (d / ".snapshots/old").write_text("must not be copied\n")
    (d / "var/tmp").chmod(0o1777)


def _tar(src: Path, out: Path) -> None:
    subprocess.run(["tar", "-C", str(src), "--numeric-owner", "--xattrs", "--xattrs-include=*", "--acls",
                    "-cf", str(out), "."], check=True)


def build_images(dest: Path, work: Path) -> dict[str, Path]:
    import guestfs

    disks = {n: dest / f"{n}.qcow2" for n in VARIANTS}
    tars = {}
    for kind in ("ext4", "btrfs"):
        make_tree(work / kind, FSTAB[kind])
        _tar(work / kind, work / f"{kind}.tar")
        tars[kind] = work / f"{kind}.tar"
    make_tree(work / "arm", "/dev/sda1 / ext4 defaults 0 1\n", arch_patch=True)
    _tar(work / "arm", work / "arm.tar")
    make_tree(work / "lvm", "/dev/system/root / ext4 defaults 0 1\n")
    _tar(work / "lvm", work / "lvm.tar")
    g = guestfs.GuestFS(python_return_dict=True)
    for path in disks.values():
        g.disk_create(str(path) + ".tmp", "qcow2", 256 * 1024 * 1024)
        g.add_drive_opts(str(path) + ".tmp", format="qcow2", readonly=0)
    g.set_memsize(1024)
    g.launch()
    for dev, kind in (("/dev/sda", "ext4"), ("/dev/sdb", "btrfs")):
        g.part_init(dev, "gpt")
        g.part_add(dev, "p", 2048, 4095)
        g.part_add(dev, "p", 4096, 69631)
        g.part_add(dev, "p", 69632, -34)
        for n, guid in ((1, BIOS_BOOT), (2, image.ESP_GUID), (3, LINUX_FS)):
            g.part_set_gpt_type(dev, n, guid)
        g.mkfs("vfat", f"{dev}2", label="EFI")
        if kind == "ext4":
            g.mkfs("ext4", f"{dev}3", label="ROOT")
            g.mount(f"{dev}3", "/")
        else:
            # SUSE's layout: root is the default subvolume @/.snapshots/1/snapshot; @/home and
            # @/.snapshots are separate subvolumes mounted by fstab
            g.mkfs_btrfs([f"{dev}3"], label="ROOT")
            g.mount(f"{dev}3", "/")
            for sub in ("@", "@/home", "@/.snapshots"):
                g.btrfs_subvolume_create(f"/{sub}")
            g.mkdir("/@/.snapshots/1")
            g.btrfs_subvolume_create("/@/.snapshots/1/snapshot")
            ids = {s["btrfssubvolume_path"]: s["btrfssubvolume_id"] for s in g.btrfs_subvolume_list("/")}
            g.btrfs_subvolume_set_default(ids["@/.snapshots/1/snapshot"], "/")
            g.mkdir_p("/@/home/user")
            g.write("/@/home/user/file", b"home\n")
            g.write("/@/.snapshots/old", b"an old snapshot\n")
            g.umount("/")
            g.mount_options("subvol=@/.snapshots/1/snapshot", f"{dev}3", "/")
        g.tar_in(str(tars[kind]), "/", xattrs=True, acls=True)
        if kind == "btrfs":  # these live in their own subvolumes (written above)
            g.rm_rf("/home/user")
            g.rm_rf("/.snapshots/old")
        g.mount(f"{dev}2", "/boot/efi")
        g.mkdir_p("/boot/efi/EFI/BOOT")
        g.write("/boot/efi/EFI/BOOT/bootx64.efi", b"efi")
        g.umount_all()
    g.part_disk("/dev/sdc", "mbr")
    g.mkfs("ext4", "/dev/sdc1")
    g.mount("/dev/sdc1", "/")
    g.tar_in(str(work / "arm.tar"), "/", xattrs=True, acls=True)
    g.umount_all()
    g.part_disk("/dev/sdd", "gpt")
    g.mkfs("ext4", "/dev/sdd1")
    g.mount("/dev/sdd1", "/")
    g.write("/just-data.txt", b"no operating system here\n")
    g.umount_all()
    # root on LVM: the partition is an LVM2_member; only inspection finds the logical volume
    g.part_disk("/dev/sde", "gpt")
    g.pvcreate("/dev/sde1")
    g.vgcreate("system", ["/dev/sde1"])
    g.lvcreate("root", "system", 200)
    g.mkfs("ext4", "/dev/system/root")
    g.mount("/dev/system/root", "/")
    g.tar_in(str(work / "lvm.tar"), "/", xattrs=True, acls=True)
    g.umount_all()
    g.vg_activate(False, ["system"])
    g.shutdown()
    g.close()
    for path in disks.values():
        os.replace(str(path) + ".tmp", path)
    return disks


@pytest.fixture(scope="session")
def images(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from sles_ipa_builder.cache.store import cache_dir

    dest = cache_dir("test-images") / IMAGES_VERSION  # kept between runs; `clean -ff` drops it
    dest.mkdir(parents=True, exist_ok=True)
    disks = {n: dest / f"{n}.qcow2" for n in VARIANTS}
    if not all(p.exists() for p in disks.values()):
        build_images(dest, tmp_path_factory.mktemp("trees"))
    return disks


@pytest.fixture(autouse=True)
def own_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    # KVM guests hang on the CI hosts: TCG unless the caller chose otherwise
    monkeypatch.setenv("LIBGUESTFS_BACKEND_SETTINGS",
                       os.environ.get("LIBGUESTFS_BACKEND_SETTINGS", "force_tcg"))


def cfg(**kw: Any) -> config.Config:
    return config.resolve({"images_dir": "/nonexistent", **kw}, environ={})


def check_tree(root: Path, *, btrfs: bool) -> None:
    assert "SLES" in (root / "etc/os-release").read_text()
    assert (root / "usr/bin/ls").read_bytes() == Path("/usr/bin/ls").read_bytes()
    assert os.readlink(root / "bin") == "usr/bin"
    assert (root / "usr/bin/ls").stat().st_ino == (root / "usr/bin/dir").stat().st_ino
    assert stat.S_IMODE((root / "usr/bin/su").stat().st_mode) == 0o4755
    assert stat.S_IMODE((root / "var/tmp").stat().st_mode) == 0o1777
    st = (root / "etc/owned").stat()
    assert (st.st_uid, st.st_gid) == (1234, 5678)
    assert os.getxattr(root / "etc/owned", "user.sib") == b"hello"
    assert "user:4321:rwx" in subprocess.run(["getfacl", "-cn", str(root / "etc/owned")], capture_output=True,
                                             text=True, check=True).stdout
    dev = (root / "dev/null").lstat()
    assert stat.S_ISCHR(dev.st_mode) and os.major(dev.st_rdev) == 1 and os.minor(dev.st_rdev) == 3
    assert (root / "boot/efi/EFI/BOOT/bootx64.efi").read_bytes() == b"efi"
    assert (root / "home/user/file").read_text() == "home\n"
    if btrfs:
        assert not (root / ".snapshots/old").exists()


@pytest.mark.guestfs
@pytest.mark.slow
@pytest.mark.parametrize("kind", ["ext4", "btrfs"])
def test_root_from_qcow2_then_cache_hit(images: dict[str, Path], tmp_path: Path, kind: str,
                                        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("INFO")
    c = cfg(base_image=images[kind])
    facts = layers.prepare_root(c, tmp_path / "r1")
    assert facts["cache"] == "miss" and facts["cache_reason"] == "not cached yet"
    assert facts["arch"] == "x86_64"
    assert {"launch", "inspect_mount", "tar_out_extract"} <= set(facts["timings"])
    assert any(m["mountpoint"] == "/boot/efi" for m in facts["mounts"])
    check_tree(tmp_path / "r1", btrfs=kind == "btrfs")
    facts2 = layers.prepare_root(c, tmp_path / "r2")
    assert facts2["cache"] == "hit" and "launch" not in facts2["timings"]  # no appliance on a hit
    assert f"cache hit: rootfs {images[kind].resolve()}" in caplog.text
    check_tree(tmp_path / "r2", btrfs=kind == "btrfs")
    if kind == "ext4":
        facts3 = layers.prepare_root(c, tmp_path / "r3", force=True)
        assert facts3["cache"] == "miss" and facts3["cache_reason"] == "--force"


@pytest.mark.guestfs
@pytest.mark.slow
def test_root_on_lvm_is_found_by_inspection(images: dict[str, Path], tmp_path: Path) -> None:
    # the partition is an LVM2_member, not a filesystem: the seed's rule has no root, inspection does
    facts = layers.prepare_root(cfg(base_image=images["lvm"]), tmp_path / "r")
    assert facts["arch"] == "x86_64"
    assert "SLES" in (tmp_path / "r/etc/os-release").read_text()
    assert (tmp_path / "r/usr/bin/ls").stat().st_ino == (tmp_path / "r/usr/bin/dir").stat().st_ino


def test_base_tree_is_copied(tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "usr/bin").mkdir(parents=True)
    (src / "usr/bin/x").write_text("x")
    (src / "bin").symlink_to("usr/bin")
    os.chown(src / "usr/bin/x", 42, 43)
    facts = layers.prepare_root(cfg(base_tree=src), tmp_path / "root")
    assert facts["source"] == "tree"
    assert os.readlink(tmp_path / "root/bin") == "usr/bin"
    assert (tmp_path / "root/usr/bin/x").stat().st_uid == 42


def test_missing_image_lists_names(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"no base image in .*SLES15-SP7-Minimal-VM.*SLE-15-SP7-Minimal-VM"):
        layers.prepare_root(cfg(images_dir=str(tmp_path)), tmp_path / "root")
    with pytest.raises(InputError, match="base image .* not found"):
        layers.prepare_root(cfg(base_image=tmp_path / "nope.qcow2"), tmp_path / "root")


def test_found_by_download_name(tmp_path: Path) -> None:
    (tmp_path / "SLE-15-SP7-Minimal-VM.x86_64-OpenStack-Cloud-GM.qcow2").write_bytes(b"x")
    assert image.find_image(cfg(images_dir=str(tmp_path))).name.startswith("SLE-15-SP7")


def test_not_a_disk_image(tmp_path: Path) -> None:
    f = tmp_path / "SLES15-SP7-Minimal-VM.x86_64-OpenStack-Cloud-GM.qcow2"
    f.write_bytes(b"<html>not found</html>" * 100)
    with pytest.raises(InputError, match="is not a disk image"):
        layers.prepare_root(cfg(images_dir=str(tmp_path)), tmp_path / "root")


def test_truncated_qcow2(tmp_path: Path) -> None:
    # an interrupted download keeps the qcow2 magic; it must not reach the appliance
    whole = tmp_path / "whole.qcow2"
    run.run(["qemu-img", "create", "-q", "-f", "qcow2", whole, "64M"])
    run.run(["qemu-io", "-c", "write -P 0x5a 0 32M", whole], capture=True)
    cut = tmp_path / "SLES15-SP7-Minimal-VM.x86_64-OpenStack-Cloud-GM.qcow2"
    cut.write_bytes(whole.read_bytes()[: 16 << 20])
    assert image.sniff(whole) == "qcow2"
    with pytest.raises(InputError, match="is a damaged qcow2"):
        layers.prepare_root(cfg(images_dir=str(tmp_path)), tmp_path / "root")


@pytest.mark.guestfs
@pytest.mark.slow
def test_no_linux_root(images: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no Linux root filesystem found"):
        layers.prepare_root(cfg(base_image=images["noroot"]), tmp_path / "root")


@pytest.mark.guestfs
@pytest.mark.slow
def test_not_x86_64(images: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(InputError, match="is an aarch64 image, not x86_64"):
        layers.prepare_root(cfg(base_image=images["aarch64"]), tmp_path / "root")


def test_qemu_children_finds_nothing_unrelated() -> None:
    assert appliance._qemu_children() == []


def teardown_module() -> None:
    shutil.rmtree("/nonexistent", ignore_errors=True)


# --- the fixtures' test media (marker `media`) ----------------------------------------------------------


@pytest.mark.media
@pytest.mark.guestfs
@pytest.mark.slow
@pytest.mark.parametrize("variant", ["base_ext4", "base_btrfs"])
def test_root_from_fixture_images(fixture_media: Any, tmp_path: Path, variant: str) -> None:
    img = getattr(fixture_media, variant)
    facts = layers.prepare_root(cfg(base_image=img), tmp_path / "root")
    assert facts["cache"] == "miss" and facts["arch"] == "x86_64"
    want = fixture_media.root_tree
    for rel in ("etc/os-release", "usr/bin/zypper", "usr/bin/rpm"):
        assert (tmp_path / "root" / rel).exists() == (want / rel).exists(), rel
    assert (tmp_path / "root/etc/os-release").read_bytes() == (want / "etc/os-release").read_bytes()
    got = {p.name for p in (tmp_path / "root").iterdir()}
    expected = {p.name for p in want.iterdir()}
    assert expected <= got and got - expected <= {"lost+found", ".snapshots"}, got ^ expected


def test_default_image_search_uses_fixture_names(tmp_path: Path) -> None:
    # the fixtures put the qcow2 in images_dir under SUSE's download name; the config's candidates find it
    (tmp_path / "SLES15-SP7-Minimal-VM.x86_64-OpenStack-Cloud-GM.qcow2").write_bytes(b"QFI\xfb")
    assert image.find_image(cfg(images_dir=str(tmp_path))).name.startswith("SLES15-SP7")


@pytest.mark.guestfs
@pytest.mark.slow
def test_kvm_hang_falls_back_to_tcg(images: dict[str, Path], monkeypatch: pytest.MonkeyPatch,
                                    caplog: pytest.LogCaptureFixture) -> None:
    # No LIBGUESTFS_* of the user: auto tries KVM with a bounded wait. Where KVM guests hang (as on
    # the CI hosts) the launch is abandoned, its qemu killed, and TCG is used with a warning.
    for var in appliance.USER_GUESTFS_VARS:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(appliance, "LAUNCH_TIMEOUT", 20.0)
    caplog.set_level("WARNING")
    g, used = appliance.launch(images["ext4"], "qcow2", "auto")
    try:
        assert g.list_partitions()  # the appliance answers
        if used == "tcg":
            assert "libguestfs appliance under KVM" in caplog.text and "retrying under TCG" in caplog.text
        else:
            assert used == "kvm"
    finally:
        g.shutdown()
        g.close()
    assert appliance._qemu_children() == []


HANG_QEMU = """#!/bin/bash
case "$*" in
  *-help*|*-version*) echo "QEMU emulator version 7.2.0"; exit 0 ;;
  *qmp*) exit 1 ;;
esac
while :; do sleep 1; done
"""


@pytest.mark.guestfs
def test_hung_launch_is_abandoned(images: dict[str, Path], tmp_path: Path) -> None:
    # A qemu that never brings the appliance up (what KVM does on some hosts): the bounded launch
    # gives up after the timeout and kills it, instead of waiting for libguestfs' own 20 minutes.
    fake = tmp_path / "qemu-hang"
    fake.write_text(HANG_QEMU)
    fake.chmod(0o755)
    g = appliance._handle(images["ext4"], "qcow2", tcg=False)
    g.set_hv(str(fake))
    why, closable = appliance._launch_bounded(g, 5.0)
    assert closable  # its launch thread ended once the hung qemu was killed
    g.close()
    assert why == "did not come up within 5s"
    assert appliance._qemu_children() == []
