"""The test media's kernel modules, compressed as SLES ships them (fixtures/rootfs.py), on a small tree."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import zstandard

from sles_ipa_builder.fixtures import rootfs

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
