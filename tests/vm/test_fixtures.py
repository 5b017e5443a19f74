"""The generated test media (fixtures/testmedia.py): ISO layout, repositories, images, sources, cache."""

from __future__ import annotations

import gzip
import os
import shlex
import sys
import time
import xml.etree.ElementTree as ET
from io import BytesIO
from pathlib import Path
from types import ModuleType
from typing import Any

import pycdlib
import pytest

from sles_ipa_builder import run
from sles_ipa_builder.fixtures import testmedia

REPO = Path(__file__).resolve().parents[2]
REQUIRED_DIRS = {
    "Module-Basesystem", "Module-Python3", "Module-Server-Applications", "Module-Development-Tools",
    "Product-SLES",
}  # fmt: skip
RPM_NS = {"c": "http://linux.duke.edu/metadata/common", "rpm": "http://linux.duke.edu/metadata/rpm",
          "r": "http://linux.duke.edu/metadata/repo"}  # fmt: skip

pytestmark = [pytest.mark.media, pytest.mark.slow]


def _load() -> ModuleType:
    return testmedia


@pytest.fixture(scope="module")
def media() -> Any:
    return _load().ensure()


@pytest.fixture(scope="module")
def iso(media: Any) -> Any:
    handle = pycdlib.PyCdlib()
    handle.open(str(media.iso))
    yield handle
    handle.close()


def _read(iso: Any, rr_path: str) -> bytes:
    buf = BytesIO()
    iso.get_file_from_iso_fp(buf, rr_path=rr_path)
    return buf.getvalue()


def _products(iso: Any) -> list[list[str]]:
    return [line.split() for line in _read(iso, "/media.1/products").decode().splitlines() if line.strip()]


def _primary(iso: Any, repo: str) -> ET.Element:
    repomd = ET.fromstring(_read(iso, f"/{repo}/repodata/repomd.xml"))
    (loc,) = [
        d.find("r:location", RPM_NS) for d in repomd.findall("r:data", RPM_NS) if d.get("type") == "primary"
    ]
    assert loc is not None
    return ET.fromstring(gzip.decompress(_read(iso, f"/{repo}/{loc.get('href')}")))


def test_cache_key_tracks_generator_files() -> None:
    key = _load().cache_key()
    assert len(key) == 16 and key == _load().cache_key()


def test_iso_lists_products_and_each_is_a_repository(iso: Any) -> None:
    rows = _products(iso)
    dirs = {row[0].lstrip("/") for row in rows}
    assert REQUIRED_DIRS <= dirs
    assert ["/Module-Basesystem", "sle-module-basesystem", "15.7-0"] in rows
    for d in dirs:
        assert b"<repomd" in _read(iso, f"/{d}/repodata/repomd.xml"), d
    assert _read(iso, "/media.1/media").splitlines()[1].endswith(b"Media1")


def test_packages_sit_in_their_modules_with_declared_requires(iso: Any) -> None:
    def packages(repo: str) -> dict[str, set[str]]:
        found = {}
        for pkg in _primary(iso, repo).findall("c:package", RPM_NS):
            name = pkg.findtext("c:name", default="", namespaces=RPM_NS)
            reqs = {e.get("name", "") for e in pkg.findall("c:format/rpm:requires/rpm:entry", RPM_NS)}
            found[name] = reqs
        return found

    base = packages("Module-Basesystem")
    assert {"curl", "lshw", "dmidecode", "openssh-server", "openssh-clients", "gptfdisk", "mkisofs"} <= set(
        base
    )
    assert {"openssh-server", "openssh-clients"} <= base["openssh"]
    python = packages("Module-Python3")
    assert "python311" in python["python311-devel"]
    assert {"gcc", "git-core"} <= set(packages("Module-Development-Tools"))
    assert {"fio", "sysbench"} <= set(packages("Module-Server-Applications"))
    # Only our own names are required: no auto-generated library requires the dpkg base cannot satisfy.
    assert not any(r.startswith("lib") and "(" in r for reqs in base.values() for r in reqs if r)


@pytest.mark.root
def test_zypper_in_a_chroot_of_the_root_tree_installs_from_the_iso(
    media: Any, iso: Any, tmp_path: Path
) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root (chroot)")
    root = tmp_path / "root"
    run.run(["cp", "-a", media.root_tree, root])
    repo = root / "mnt" / "Module-Basesystem"
    repo.mkdir(parents=True)
    for child, _dirs, files in iso.walk(rr_path="/Module-Basesystem"):
        rel = child[len("/Module-Basesystem") :].lstrip("/")
        (repo / rel).mkdir(parents=True, exist_ok=True)
        for f in files:
            iso.get_file_from_iso(str(repo / rel / f), rr_path=f"{child}/{f}")
    env = run.target_env()
    zypper = ["zypper", "--non-interactive", "--no-gpg-checks"]
    inner = " && ".join(
        shlex.join(run.chroot_argv(root, argv))
        for argv in (
            [*zypper, "addrepo", "dir:/mnt/Module-Basesystem", "dvdBase"],
            [*zypper, "install", "--no-recommends", "openssh", "dmidecode"],
            ["rpm", "-q", "openssh", "openssh-server", "openssh-clients", "dmidecode"],
            ["/usr/sbin/dmidecode", "--version"],
        )
    )
    q = shlex.quote
    script = (
        f"mount -t proc proc {q(str(root / 'proc'))} && mount --rbind /dev {q(str(root / 'dev'))} && {inner}"
    )
    out = run.output(["unshare", "--mount", "--fork", "--propagation", "private", "sh", "-c", script], env=env)
    assert "openssh-server-" in out and "dmidecode-" in out
    mounts = Path("/proc/self/mounts").read_text()
    assert str(root) not in mounts, "a mount leaked out of the namespace"
    assert (root / "usr/share/doc/packages/openssh/README.fixture").is_file()
    run.run(["rm", "-rf", "--one-file-system", root])  # half a gigabyte; pytest keeps tmp dirs


@pytest.mark.guestfs
def test_images_have_suse_like_partitions_and_a_root_with_boot_vmlinuz(media: Any) -> None:
    import guestfs

    if not any(k.startswith("LIBGUESTFS_") for k in os.environ):
        os.environ["LIBGUESTFS_BACKEND_SETTINGS"] = "force_tcg"
    g = guestfs.GuestFS(python_return_dict=True)
    try:
        for path in (media.base_ext4, media.base_btrfs):
            g.add_drive_opts(str(path), format="qcow2", readonly=True)
        g.launch()
        expected = {"/dev/sda": "ext4", "/dev/sdb": "btrfs"}
        roots = sorted(g.inspect_os())
        assert len(roots) == 2, roots
        for dev, fstype in expected.items():
            assert g.part_get_gpt_type(dev, 1) == "21686148-6449-6E6F-744E-656564454649"
            assert g.part_get_gpt_type(dev, 2) == "C12A7328-F81F-11D2-BA4B-00A0C93EC93B"
            assert g.vfs_type(f"{dev}2") == "vfat" and g.vfs_label(f"{dev}2") == "EFI"
            assert g.vfs_type(f"{dev}3") == fstype and g.vfs_label(f"{dev}3") == "ROOT"
            (root,) = [r for r in roots if dev in r]
            g.mount_ro(root, "/")
            target = g.realpath("/boot/vmlinuz")
            assert target.startswith("/boot/vmlinuz-") and g.is_file(target)
            assert g.is_symlink("/boot/initrd") and g.is_file(g.realpath("/boot/initrd"))
            g.mount_ro(f"{dev}2", "/boot/efi")
            assert g.ls("/boot/efi/EFI/BOOT")
            g.umount_all()
        # btrfs: the top level holds only the subvolume @, which is the default (SUSE's layout)
        g.mount_options("ro,subvolid=5", "/dev/sdb3", "/")
        assert g.ls("/") == ["@"]
        (at,) = [s for s in g.btrfs_subvolume_list("/") if s["btrfssubvolume_path"].strip("/") == "@"]
        assert g.btrfs_subvolume_get_default("/") == at["btrfssubvolume_id"]
        g.umount_all()
    finally:
        g.close()


def test_kernel_modules_are_ko_zst_as_sles_ships_them(media: Any) -> None:
    """One zstd file a module, named so by modules.dep; kmod's modinfo reads one."""
    (modules,) = (Path(media.root_tree) / "usr/lib/modules").iterdir()
    names = [f for _, _, files in os.walk(modules / "kernel") for f in files]
    assert names and all(n.endswith(".ko.zst") for n in names), [n for n in names if not n.endswith(".ko.zst")][:5]
    dep = (modules / "modules.dep").read_text().splitlines()
    assert len(dep) == len(names) and all(line.split(":")[0].endswith(".ko.zst") for line in dep)
    found = run.output(["modinfo", "-b", media.root_tree, "-k", modules.name, "-F", "filename", "virtio_net"])
    assert found.endswith("/virtio_net.ko.zst")


def test_source_repositories_are_tagged_and_have_a_test_branch(media: Any, tmp_path: Path) -> None:
    for name, url in media.repos.items():
        assert url.startswith("file://")
        refs = run.output(["git", "ls-remote", url])
        assert "refs/heads/master" in refs and "refs/heads/test-branch" in refs, name
        assert "refs/tags/" in refs, name
    clone = tmp_path / "req"
    run.run(["git", "clone", "-q", media.repos["requirements"], clone])
    uc = (clone / "upper-constraints.txt").read_text()
    assert "ironic-lib==" in uc and "ironic-python-agent" not in uc
    assert not (clone / "TEST-BRANCH.txt").exists()
    run.run(["git", "-C", clone, "checkout", "-q", "test-branch"])
    assert (clone / "TEST-BRANCH.txt").exists()


def test_ipa_checkout_builds_with_its_tag_version(media: Any, tmp_path: Path) -> None:
    """pbr computes the version from the git tag (no PKG-INFO left in the tree)."""
    clone = tmp_path / "ipa"
    run.run(["git", "clone", "-q", media.repos["ironic-python-agent"], clone])
    assert not (clone / "PKG-INFO").exists()
    tag = run.output(["git", "-C", clone, "describe", "--tags", "--exact-match"])
    run.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", tmp_path / "w", clone])
    wheels = [p.name for p in (tmp_path / "w").iterdir()]
    assert wheels == [f"ironic_python_agent-{tag}-py3-none-any.whl"]


def test_profile_points_at_the_media(media: Any) -> None:
    import tomllib

    profile = tomllib.loads(media.profile.read_text())
    assert Path(profile["base_image"]) == media.base_ext4 and Path(profile["iso"]) == media.iso
    assert "DIB_SLES_SERVICE_PACK" not in profile["env"]  # the default (SP7) names the files
    assert profile["env"]["DIB_REPOLOCATION_ironic_python_agent"] == media.repos["ironic-python-agent"]
    assert "not_suse" in profile["fixture"]
    assert (media.images_dir / "SLES15-SP7-Minimal-VM.x86_64-OpenStack-Cloud-GM.qcow2").is_file()
    assert (media.images_dir / "SLE-15-SP7-Full-x86_64-GM-Media1.iso").is_file()


def test_second_ensure_is_a_fast_cache_hit(media: Any) -> None:
    start = time.monotonic()
    again = _load().ensure()
    assert time.monotonic() - start < 5
    assert again == media
