"""Kernel module classes cut from the tree, and the firmware that follows them (cuts.py)."""

from __future__ import annotations

import lzma
import os
from pathlib import Path

import pytest
import zstandard

from sles_ipa_builder import run
from sles_ipa_builder.config import resolve as config
from sles_ipa_builder.errors import ConfigError
from sles_ipa_builder.packing import cuts

KVER = "6.4.0-150700.51-default"


def _module(path: Path, firmware: list[str], pad: int = 1000) -> None:
    """A module file whose .modinfo strings name `firmware`, compressed as its suffix says."""
    info = b"".join(b"firmware=%s\0" % f.encode() for f in firmware)
    _module_bytes(path, b"\x7fELF" + b"\0" * pad + b"license=GPL\0" + info + b"depends=\0")


def _module_bytes(path: Path, data: bytes) -> None:
    if path.name.endswith(".xz"):
        data = lzma.compress(data)
    elif path.name.endswith(".zst"):
        data = zstandard.ZstdCompressor().compress(data)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def _tree(base: Path) -> Path:
    k = base / f"usr/lib/modules/{KVER}/kernel"
    _module(k / "sound/pci/snd-hda-intel.ko.zst", ["intel/sof.bin", "shared.bin"])
    _module(k / "drivers/gpu/drm/amd/amdgpu/amdgpu.ko.xz", ["amdgpu/navi10_sos.bin"])
    _module(k / "drivers/gpu/drm/tiny/simpledrm.ko.xz", [])
    _module(k / "drivers/gpu/drm/ast/ast.ko.xz", [])
    _module(k / "drivers/net/wireless/intel/iwlwifi/iwlwifi.ko", ["iwlwifi-cc-a0-77.ucode"])
    _module(k / "drivers/net/ethernet/broadcom/tg3.ko.xz", ["tigon/tg3.bin", "shared.bin"])
    _module(k / "drivers/nvme/host/nvme.ko.xz", [])
    fw = base / "usr/lib/firmware"
    for name in ("intel/sof.bin.xz", "amdgpu/navi10_sos.bin.zst", "iwlwifi-cc-a0-77.ucode", "tigon/tg3.bin",
                 "shared.bin", "undeclared/loaded-by-name.bin"):
        (fw / name).parent.mkdir(parents=True, exist_ok=True)
        (fw / name).write_bytes(b"f" * 100)
    (base / "lib").symlink_to("usr/lib")  # merged /usr: one module tree, seen once
    return base


def _exists(tree: Path, rel: str) -> bool:
    return os.path.lexists(tree / rel)


def test_classes_and_the_firmware_only_they_name_are_cut(tmp_path: Path) -> None:
    tree = _tree(tmp_path)
    k = f"usr/lib/modules/{KVER}/kernel"
    size_before = {c: sum(f.stat().st_size for f in (tree / k / d).rglob("*") if f.is_file())
                   for c, d in (("sound", "sound"), ("wireless", "drivers/net/wireless"))}
    done, kernels = cuts.cut_modules(tree, ["sound", "gpu", "wireless"])
    assert kernels == [KVER]
    for gone in ("sound", "drivers/gpu/drm/amd", "drivers/net/wireless"):
        assert not _exists(tree, f"{k}/{gone}"), gone
    for kept in ("drivers/gpu/drm/tiny/simpledrm.ko.xz", "drivers/gpu/drm/ast/ast.ko.xz",
                 "drivers/net/ethernet/broadcom/tg3.ko.xz", "drivers/nvme/host/nvme.ko.xz"):
        assert _exists(tree, f"{k}/{kept}"), kept
    fw = "usr/lib/firmware"
    for gone in ("intel/sof.bin.xz", "amdgpu/navi10_sos.bin.zst", "iwlwifi-cc-a0-77.ucode"):
        assert not _exists(tree, f"{fw}/{gone}"), gone
    for kept in ("tigon/tg3.bin", "shared.bin", "undeclared/loaded-by-name.bin"):  # a kept module, or none, names it
        assert _exists(tree, f"{fw}/{kept}"), kept
    by_rule = {c.rule: c for c in done}
    assert by_rule["kernel modules: sound"].bytes == size_before["sound"]
    assert by_rule["kernel modules: wireless"].files == 1
    assert by_rule["kernel modules: wireless"].bytes == size_before["wireless"]
    firmware = by_rule["firmware only removed modules named"]
    assert (firmware.files, firmware.bytes) == (3, 300)
    assert [c.record()["rule"] for c in done] == [*(f"kernel modules: {c}" for c in ("sound", "gpu", "wireless")),
                                                  "firmware only removed modules named"]


@pytest.mark.parametrize("suffix", ["", ".zst", ".xz"])
def test_modules_needing_a_cut_one_follow_it_and_self_tests_go_by_name(tmp_path: Path, suffix: str) -> None:
    """modules.dep names each module with its compression suffix (SLES: .ko.zst); the cut reads it so."""
    tree = _tree(tmp_path)
    mods = tree / f"usr/lib/modules/{KVER}"
    ko = f".ko{suffix}"
    for rel in ("net/ceph/libceph", "drivers/block/rbd", "drivers/block/nbd", "lib/test_bpf", "lib/crc32",
                "fs/nfs/nfs"):
        _module(mods / "kernel" / f"{rel}{ko}", [], pad=100)
    (mods / "modules.dep").write_text(
        f"kernel/net/ceph/libceph{ko}: kernel/lib/crc32{ko}\n"
        f"kernel/drivers/block/rbd{ko}: kernel/net/ceph/libceph{ko} kernel/lib/crc32{ko}\n"
        f"kernel/drivers/block/nbd{ko}:\nkernel/lib/test_bpf{ko}:\nkernel/lib/crc32{ko}:\nkernel/fs/nfs/nfs{ko}:\n")
    done, _ = cuts.cut_modules(tree, ["netfs", "embedded"])
    for gone in ("net/ceph", "fs/nfs", f"drivers/block/rbd{ko}", f"lib/test_bpf{ko}"):
        assert not _exists(mods, f"kernel/{gone}"), gone
    for kept in (f"drivers/block/nbd{ko}", f"lib/crc32{ko}"):  # a dependency of a cut module stays
        assert _exists(mods, f"kernel/{kept}"), kept
    by_rule = {c.rule: c for c in done}
    assert by_rule["kernel modules: netfs"].files == 3  # libceph, nfs and rbd, which needs libceph
    assert by_rule["kernel modules: embedded"].files == 1


def test_firmware_of_a_module_compressed_in_several_zstd_frames(tmp_path: Path) -> None:
    ko = tmp_path / "m.ko.zst"
    c = zstandard.ZstdCompressor()
    ko.write_bytes(c.compress(b"\x7fELF" + b"\0" * 500) + c.compress(b"firmware=a/b.bin\0firmware=c.fw\0"))
    assert cuts.module_firmware(ko) == ["a/b.bin", "c.fw"]


def test_nothing_to_cut_leaves_the_tree_and_needs_no_depmod(tmp_path: Path) -> None:
    tree = _tree(tmp_path)
    done, kernels = cuts.cut_modules(tree, ["staging", "bluetooth"])
    assert kernels == [] and all(c.files == 0 for c in done)
    assert _exists(tree, "usr/lib/firmware/intel/sof.bin.xz")


@pytest.mark.parametrize("suffix", ["", ".zst", ".xz"])
def test_firmware_names_as_modinfo_reads_them(tmp_path: Path, suffix: str) -> None:
    """Our reading of a real module of this host against `modinfo -F firmware`, plain and compressed
    as SLES (.ko.zst) and older kernels (.ko.xz) ship it."""
    found = sorted(Path("/usr/lib/modules").glob("*/kernel/drivers/net/ethernet/broadcom/tg3.ko*"))
    if not found or run.which("modinfo") is None:
        pytest.skip("no tg3 module or modinfo on this host")
    plain = cuts.module_data(found[0])
    module = tmp_path / f"tg3.ko{suffix}"
    _module_bytes(module, plain)
    theirs = run.output(["modinfo", "-F", "firmware", module]).split()
    assert theirs and sorted(cuts.module_firmware(module)) == sorted(theirs)


def test_unknown_class_is_a_configuration_error() -> None:
    with pytest.raises(ConfigError, match="'nic' is not one of sound"):
        config.resolve(cli={"cut_modules": "sound nic"}, environ={})
    assert config.resolve(cli={}, environ={"DIB_IPA_CUT_MODULES": ""}).cut_modules == []
