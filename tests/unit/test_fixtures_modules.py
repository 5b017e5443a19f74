"""The test media's kernel modules, compressed as SLES ships them (fixtures/rootfs.py), on a small tree;
the media's directories and package map per release."""

from __future__ import annotations

import hashlib
import lzma
import os
from pathlib import Path

import pytest
import zstandard

from sles_ipa_builder.config.arch import AARCH64, X86_64
from sles_ipa_builder.errors import ConfigError
from sles_ipa_builder.fixtures import rootfs, rpms, testmedia
from sles_ipa_builder.fixtures.flavour import FLAVOURS, SIXTEEN, SP7
from sles_ipa_builder.fixtures.flavour import parse as flavour_parse

KVER = "6.1.0-99-amd64"


def test_modules_become_ko_zst_and_dpkg_follows(tmp_path: Path) -> None:
    root = tmp_path / "root"
    kernel = root / "usr/lib/modules" / KVER / "kernel"
    plain = {"drivers/net/virtio_net.ko": os.urandom(3000), "fs/ext4/ext4.ko": b"\x7fELF" + b"\0" * 5000}
    for rel, data in plain.items():
        (kernel / rel).parent.mkdir(parents=True, exist_ok=True)
        (kernel / rel).write_bytes(data)
        os.chmod(kernel / rel, 0o644)
        os.utime(kernel / rel, (1_600_000_000, 1_600_000_000))
    (kernel / "fs/ext4/already.ko.zst").write_bytes(zstandard.ZstdCompressor().compress(b"z"))
    info = root / "var/lib/dpkg/info"
    info.mkdir(parents=True)
    # dpkg names them /lib/modules/...: on the merged-/usr root that is usr/lib/modules
    listed = [f"/lib/modules/{KVER}/kernel/{rel}" for rel in plain]
    (info / f"linux-image-{KVER}.list").write_text("/.\n/lib/modules\n" + "\n".join(listed) + "\n")
    (info / f"linux-image-{KVER}.md5sums").write_text(
        "".join(f"{hashlib.md5(d).hexdigest()}  lib/modules/{KVER}/kernel/{r}\n" for r, d in plain.items())
        + "0123  boot/vmlinuz\n")
    (info / "other.list").write_text("/usr/bin/other\n")

    assert rootfs.compress_modules(root, kernel) == 2

    for rel, data in plain.items():
        zst = kernel / f"{rel}.zst"
        assert not (kernel / rel).exists()
        assert zstandard.ZstdDecompressor().decompress(zst.read_bytes()) == data
        assert (zst.stat().st_mode & 0o777, int(zst.stat().st_mtime)) == (0o644, 1_600_000_000)
    assert (info / f"linux-image-{KVER}.list").read_text().splitlines()[2:] == [f"{p}.zst" for p in listed]
    sums = (info / f"linux-image-{KVER}.md5sums").read_text().splitlines()
    for rel in plain:
        digest = hashlib.md5((kernel / f"{rel}.zst").read_bytes()).hexdigest()
        assert f"{digest}  lib/modules/{KVER}/kernel/{rel}.zst" in sums
    assert "0123  boot/vmlinuz" in sums
    assert (info / "other.list").read_text() == "/usr/bin/other\n"


def test_xz_modules_of_debian_13_become_ko_zst(tmp_path: Path) -> None:
    """Debian 13 ships .ko.xz (under /usr/lib/modules in dpkg's lists); SLES 16 ships .ko.zst."""
    root = tmp_path / "root"
    kernel = root / "usr/lib/modules" / KVER / "kernel"
    data = os.urandom(2000)
    xz = kernel / "drivers/block/virtio_blk.ko.xz"
    xz.parent.mkdir(parents=True)
    xz.write_bytes(lzma.compress(data))
    info = root / "var/lib/dpkg/info"
    info.mkdir(parents=True)
    (info / "linux-image.list").write_text(f"/usr/lib/modules/{KVER}/kernel/drivers/block/virtio_blk.ko.xz\n")

    assert rootfs.compress_modules(root, kernel) == 1

    zst = kernel / "drivers/block/virtio_blk.ko.zst"
    assert not xz.exists() and zstandard.ZstdDecompressor().decompress(zst.read_bytes()) == data
    listed = (info / "linux-image.list").read_text()
    assert listed == f"/usr/lib/modules/{KVER}/kernel/drivers/block/virtio_blk.ko.zst\n"


def test_media_directories_name_their_release_and_arch() -> None:
    base = testmedia.cache_key()
    for arch in (X86_64, AARCH64):
        for flavour in FLAVOURS:
            d = testmedia.media_dir(arch, flavour)
            assert testmedia._kind_of(d) == (arch, flavour)
    assert testmedia.media_dir().name == base  # SP7 x86_64 keeps the bare key
    assert testmedia.media_dir(X86_64, SIXTEEN).name == f"{base}-16.0"
    assert testmedia.iso_name(X86_64, SIXTEEN) == "SLES-16.0-Full-x86_64-GM.install.iso"
    assert testmedia.base_name(AARCH64) == "SLES15-SP7-Minimal-VM.aarch64-OpenStack-Cloud-GM.qcow2"
    assert flavour_parse("16") is SIXTEEN and flavour_parse("SLE-15") is SP7 and flavour_parse("15-sp7") is SP7
    with pytest.raises(ConfigError, match="no test media shaped like '16.1'"):
        flavour_parse("16.1")


def test_package_map_per_release() -> None:
    """One package map serves both: SLES 16's names, python and gcc, all in the install.iso's one repository."""
    path = testmedia.HERE / "packages.toml"
    sp7 = rpms.load(path, X86_64, SP7.release, SP7.names())
    sixteen = rpms.load(path, X86_64, SIXTEEN.release, SIXTEEN.names())
    assert "python311-devel" in sp7 and "dhcp-client" in sp7 and "dhcpcd" not in sp7
    devel = sixteen["python313-devel"]
    assert devel.debs == ["python3.13-dev"] and devel.requires == ["python313"]
    assert "dhcp-client" not in sixteen and sixteen["dhcpcd"].debs == ["dhcpcd-base"]
    assert {p.module for p in sixteen.values()} == {"install"}
    assert sixteen["sles-release"].version == "16.0" and "gcc-14" in sixteen["gcc"].debs
    assert "util-linux-extra" in sixteen["util-linux"].debs and "util-linux-extra" not in sp7["util-linux"].debs
