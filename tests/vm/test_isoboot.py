"""<name>.esp.img and <name>.iso of the shared end-to-end build (conftest.py), booted in QEMU under TCG.

- The ISO as a CD under OVMF with Secure Boot enforced (Microsoft's keys enrolled): shim (signed by
  Microsoft) loads the signed grub, grub the signed kernel; the agent looks up and heartbeats.
- The same ISO with the grub's signature stripped: the firmware's shim refuses it.
- The ISO in BIOS mode (isolinux), as SLE 15 media allow, with Ironic's config drive as a second CD:
  the ramdisk takes its static network from it (issue 28's first part).
The test media's chain is Debian's signed binaries under SUSE's package names (fixtures/README.md).
"""

from __future__ import annotations

import json
import os
import struct
import sys
from pathlib import Path

import pytest
from conftest import static_network_data

from sles_ipa_builder import run
from sles_ipa_builder.delivery import bootmedia
from sles_ipa_builder.verify import boottest

pytestmark = [pytest.mark.root, pytest.mark.guestfs, pytest.mark.qemu, pytest.mark.media, pytest.mark.slow]
NAME = "ipa-e2e"
STATIC_IP = "10.0.2.77"  # in QEMU's user network, not the 10.0.2.15 its DHCP hands out
MTOOLS = {**os.environ, "MTOOLS_SKIP_CHECK": "1"}


def cli(*argv: str | Path) -> run.Result:
    env = {**os.environ, "SIB_ACCEL": os.environ.get("SIB_ACCEL", "tcg")}
    return run.run([sys.executable, "-m", "sles_ipa_builder", *map(str, argv)], env=env, check=False, capture=True)


def boot_media(built: dict) -> dict:
    return json.loads((built["out"] / f"{NAME}.manifest.json").read_text())["boot_media"]


def test_the_manifest_names_the_chain_and_ironics_grub_config_path(built):
    boot = boot_media(built)
    assert boot["secure_boot_chain"] == "complete"
    assert {p["name"] for p in boot["packages"]} == {"shim", "grub2-x86_64-efi", "syslinux"}
    # read from the signed grub itself: Debian's has the built-in prefix /EFI/debian (SUSE's differs)
    assert boot["grub_prefix"] == "/EFI/debian" and boot["grub_config_path"] == "EFI/debian/grub.cfg"
    assert boot["second_stage"] == "grubx64.efi"  # the name Debian's shim loads
    assert boot["iso_boot"] == ["uefi", "bios"]
    sums = (built["out"] / f"{NAME}.sha256").read_text()
    assert f"  {NAME}.esp.img\n" in sums and f"  {NAME}.iso\n" in sums


def test_the_iso_boots_under_secure_boot_and_the_agent_works_under_lockdown(built, tmp_path):
    console = tmp_path / "console.log"
    res = cli("boot-test", "--iso", built["out"] / f"{NAME}.iso", "--firmware", "secure-boot",
              "--keep-console", console)
    out = res.stdout + res.stderr
    assert res.returncode == 0, out[-5000:]
    assert "boot test passed" in out and "Secure Boot on, kernel locked down" in out
    text = console.read_text(errors="replace")
    assert "secureboot: Secure boot enabled" in text
    assert "Kernel is locked down from EFI Secure Boot" in text
    denied = [line for line in text.splitlines() if "Lockdown:" in line]
    assert not [line for line in denied if "module" in line], denied  # every module it needed loaded
    assert "module verification failed" not in text


def authenticode_stripped(signed: bytes) -> bytes:
    """The PE image without its signature: the certificate table's entry zeroed and the table cut off."""
    pe = struct.unpack_from("<I", signed, 0x3C)[0]
    opt = pe + 24
    assert struct.unpack_from("<H", signed, opt)[0] == 0x20B, "not a PE32+ image"
    entry = opt + 112 + 4 * 8  # data directory 4: the certificate table (a file offset and a size)
    offset, size = struct.unpack_from("<II", signed, entry)
    assert offset and size, "the grub on the media is not signed: this test could not fail"
    image = bytearray(signed[:offset])
    struct.pack_into("<II", image, entry, 0, 0)
    return bytes(image)


def test_an_unsigned_grub_in_the_esp_is_refused_under_secure_boot(built, tmp_path):
    out, boot = built["out"], boot_media(built)
    esp = tmp_path / "esp.img"
    esp.write_bytes((out / f"{NAME}.esp.img").read_bytes())
    grub_path = f"::/EFI/BOOT/{boot['second_stage']}"
    signed = tmp_path / "grub-signed.efi"
    run.run(["mcopy", "-i", esp, grub_path, signed], env=MTOOLS)
    unsigned = tmp_path / "grub-unsigned.efi"
    unsigned.write_bytes(authenticode_stripped(signed.read_bytes()))
    run.run(["mcopy", "-o", "-i", esp, unsigned, grub_path], env=MTOOLS)
    bad = tmp_path / "unsigned-grub.iso"
    bootmedia.remap(out / f"{NAME}.iso", bad, {"/boot/x86_64/efi": esp})
    res = cli("boot-test", "--iso", bad, "--firmware", "secure-boot", "--timeout", "300")
    text = res.stdout + res.stderr
    assert res.returncode == 1, text[-4000:]
    # shim's own words: the firmware accepted shim, and shim refused the grub
    assert "the firmware refused to boot: Verification failed" in text, text[-4000:]


def config_drive(tmp: Path, publisher: str) -> Path:
    """An OpenStack config drive as Ironic puts it on a virtual-media ISO: volume id config-2, the
    publisher id it also gives the kernel as ir_pub_id, the node's static network_data.json."""
    tree = tmp / "config-drive"
    (tree / "openstack/latest").mkdir(parents=True)
    (tree / "openstack/latest/network_data.json").write_text(json.dumps(static_network_data(boottest.MAC, STATIC_IP)))
    out = tmp / "config-drive.iso"
    run.run(["xorriso", "-as", "mkisofs", "-quiet", "-o", out, "-V", "config-2", "-publisher", publisher, "-J", "-R",
             tree], capture=True)
    return out


def test_the_iso_boots_in_bios_mode_without_dhcp_config_from_ironics_config_drive(built, tmp_path):
    """BIOS (isolinux), as SLE 15 media allow; and a virtual-media boot's config drive: the agent calls
    back from the static address of its network_data.json, not from the address DHCP offers."""
    publisher = "ironic-node-42"
    console = tmp_path / "console.log"
    result = boottest.boot_test(None, None, iso=built["out"] / f"{NAME}.iso", firmware="bios",
                                cdroms=[config_drive(tmp_path, publisher)], append=f"ir_pub_id={publisher}",
                                accel=os.environ.get("SIB_ACCEL", "tcg"), timeout=900, keep_console=console)
    beats = [r for r in result.requests if r.method == "POST" and "/heartbeat" in r.path]
    assert beats and STATIC_IP in str(beats[-1].body.get("callback_url", "")), beats[-1].body
    text = console.read_text(errors="replace")
    assert f"sles-ipa-addon: static network for {boottest.MAC}: {STATIC_IP}/24 via 10.0.2.2" in text
