"""The boot chain read from its files, and the ESP and ISO written from it (no VM: tests/vm boots them)."""

from __future__ import annotations

import hashlib
import os
import shutil
import struct
import subprocess
from pathlib import Path

import pytest

from sles_ipa_builder.config import resolve as config
from sles_ipa_builder.config.arch import AARCH64, X86_64
from sles_ipa_builder.delivery import bootfiles, bootmedia
from sles_ipa_builder.errors import ConfigError

TOOLS = ("mkfs.vfat", "mcopy", "mdir", "xorriso")
needs_tools = pytest.mark.skipif(any(shutil.which(t) is None for t in TOOLS), reason="dosfstools, mtools, xorriso")


def pe_with_mods(objects: list[tuple[int, bytes]]) -> bytes:
    """A minimal PE image whose `mods` section holds grub's module area with these objects."""
    body = b"".join(struct.pack("<II", kind, 8 + len(data)) + data for kind, data in objects)
    mods = struct.pack("<IIQQ", bootfiles.MODULE_MAGIC, 0, 24, 24 + len(body)) + body
    pe_at, table_at, mods_at = 0x40, 0x40 + 24, 0x200
    head = bytearray(mods_at)
    head[:2] = b"MZ"
    struct.pack_into("<I", head, 0x3C, pe_at)
    head[pe_at:pe_at + 4] = b"PE\0\0"
    struct.pack_into("<H", head, pe_at + 6, 2)  # two sections
    struct.pack_into("<H", head, pe_at + 20, 0)  # no optional header
    struct.pack_into("<8sIIII", head, table_at, b".text", 0, 0, 0, 0)
    struct.pack_into("<8sIIII", head, table_at + 40, b"mods", len(mods), 0, len(mods), mods_at)
    return bytes(head) + mods


def test_grub_prefix_is_read_from_the_module_area() -> None:
    image = pe_with_mods([(1, b"memdisk bytes /EFI/wrong"), (2, b"normal (memdisk)/grub.cfg\n"), (3, b"/EFI/sles\0")])
    assert bootfiles.grub_prefix(image) == "/EFI/sles"
    assert bootfiles.grub_prefix(pe_with_mods([(2, b"configfile x\n")])) is None  # no prefix: next to grub
    assert bootfiles.grub_prefix(b"not a PE at all") is None
    assert bootfiles.grub_prefix(pe_with_mods([(3, b"(,gpt2)/boot/grub2\0")])) == "/boot/grub2"  # our device
    assert bootfiles.grub_prefix(image[:len(image) - 30]) is None  # truncated: no traceback


def test_shim_names_its_second_stage_and_mokmanager() -> None:
    def utf16(text: str) -> bytes:
        return text.encode("utf-16-le") + b"\0\0"

    debian = b"junk" + utf16("\\fbx64.efi") + utf16("\\mmx64.efi") + b"\x90" + utf16("\\grubx64.efi")
    suse = utf16("\\MokManager.efi") + utf16("\\grub.efi") + utf16("\\fallback.efi")
    assert bootfiles.shim_loader(debian, r"grub\w*") == "grubx64.efi"
    assert bootfiles.shim_loader(debian, r"(?:mm\w+|MokManager)") == "mmx64.efi"
    assert bootfiles.shim_loader(suse, r"grub\w*") == "grub.efi"
    assert bootfiles.shim_loader(suse, r"(?:mm\w+|MokManager)") == "MokManager.efi"
    assert bootfiles.shim_loader(b"nothing", r"grub\w*") is None


def test_boot_packages_follow_the_arch() -> None:
    assert set(bootfiles.packages(X86_64)) == {"shim", "grub2-x86_64-efi", "syslinux"}
    assert set(bootfiles.packages(AARCH64)) == {"shim", "grub2-arm64-efi"}  # no BIOS there


@pytest.mark.parametrize("args", ['ipa-api-url="http://x"', "a=1\nb=2", "x=$y", "a;reboot", "k=v}", "x='1'"])
def test_kernel_args_that_would_break_the_boot_menu_are_refused(args: str) -> None:
    with pytest.raises(ConfigError, match="would break the ISO's boot menu"):
        config.resolve({"iso_kernel_args": args}, environ={})


def test_plain_kernel_args_pass() -> None:
    cfg = config.resolve({"iso_kernel_args": "ipa-api-url=http://192.0.2.1:6385 ipa-debug=1"}, environ={})
    assert cfg.iso_kernel_args.endswith("ipa-debug=1") and cfg.boot_media == "auto"


def fake_chain(tmp: Path, *, prefix: str | None = "/EFI/vendor", shim: bool = True, bios: bool = True,
               ldlinux: bool = True, reverse: bool = False) -> bootfiles.BootFiles:
    files = {}
    roles = [("shim", 3000), ("grub", 5000), ("mokmanager", 2000), ("isolinux", 2048), ("ldlinux", 1000)]
    for role, size in reversed(roles) if reverse else roles:
        if (role == "shim" and not shim) or (role in ("isolinux", "ldlinux") and not bios) or \
                (role == "ldlinux" and not ldlinux):
            continue
        files[role] = tmp / f"{role}.bin"
        files[role].write_bytes(role.encode() * (size // len(role)))
    return bootfiles.BootFiles(files=files, second_stage="grubx64.efi" if shim else "", mok_name="mmx64.efi",
                               grub_prefix=prefix)


def mdir(esp: Path) -> str:
    return subprocess.run(["mdir", "-/", "-b", "-i", str(esp), "::/"], capture_output=True, text=True,
                          env={"MTOOLS_SKIP_CHECK": "1", "PATH": "/usr/bin:/bin"}, check=True).stdout


def mtype(esp: Path, path: str) -> str:
    return subprocess.run(["mtype", "-i", str(esp), f"::{path}"], capture_output=True, text=True,
                          env={"MTOOLS_SKIP_CHECK": "1", "PATH": "/usr/bin:/bin"}, check=True).stdout


@needs_tools
def test_esp_holds_the_chain_under_the_names_shim_loads(tmp_path: Path) -> None:
    layout = bootmedia.Layout(X86_64, fake_chain(tmp_path))
    esp = tmp_path / "x.esp.img"
    bootmedia.write_esp(layout, esp, tmp_path, 1_700_000_000)
    listing = mdir(esp)
    for path in ("::/EFI/BOOT/BOOTX64.EFI", "::/EFI/BOOT/grubx64.efi", "::/EFI/BOOT/mmx64.efi",
                 "::/EFI/vendor/grub.cfg"):
        assert path in listing, listing
    assert "fb" not in listing.lower().replace("fbx64", "")  # no fallback loader
    assert mtype(esp, "/EFI/BOOT/BOOTX64.EFI") == "shim" * 750
    stub = mtype(esp, "/EFI/vendor/grub.cfg")
    assert "search --no-floppy --file --set=root /boot/x86_64/loader/linux" in stub
    assert "configfile ($root)/EFI/vendor/grub.cfg" in stub
    assert layout.grub_config_path == "EFI/vendor/grub.cfg"


@needs_tools
def test_without_a_prefix_grub_cfg_sits_next_to_grub_and_without_shim_grub_is_the_loader(tmp_path: Path) -> None:
    layout = bootmedia.Layout(X86_64, fake_chain(tmp_path, prefix=None, shim=False))
    esp = tmp_path / "x.esp.img"
    bootmedia.write_esp(layout, esp, tmp_path, 1)
    assert mtype(esp, "/EFI/BOOT/BOOTX64.EFI") == "grub" * 1250
    assert "::/EFI/BOOT/grub.cfg" in mdir(esp)
    assert layout.grub_config_path == "EFI/BOOT/grub.cfg"


def write_both(tmp: Path, epoch: int, *, bios: bool = True, ldlinux: bool = True,
               reverse: bool = False) -> tuple[Path, Path]:
    layout = bootmedia.Layout(X86_64, fake_chain(tmp, bios=bios, ldlinux=ldlinux, reverse=reverse))
    kernel, initrd = tmp / "k", tmp / "i"
    kernel.write_bytes(b"kernel" * 1000)
    initrd.write_bytes(b"initrd" * 5000)
    esp, iso = tmp / "x.esp.img", tmp / "x.iso"
    bootmedia.write_esp(layout, esp, tmp, epoch)
    bootmedia.write_iso(layout, iso, tmp, kernel=kernel, initramfs=initrd, esp=esp, args="console=ttyS0 a=b",
                        epoch=epoch)
    return esp, iso


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@needs_tools
def test_esp_and_iso_are_reproducible(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The same bytes from another host: another time zone, umask and order of files on disk."""
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first = write_both(tmp_path / "a", 1_700_000_000)
    monkeypatch.setenv("TZ", "Asia/Tokyo")  # FAT keeps local time
    old = os.umask(0o002)
    try:
        second = write_both(tmp_path / "b", 1_700_000_000, reverse=True)
    finally:
        os.umask(old)
    assert [digest(p) for p in first] == [digest(p) for p in second]
    # every entry, directories included, carries the epoch's date, not the clock's (FAT: local time, here UTC)
    listing = subprocess.run(["mdir", "-i", str(first[0]), "::/EFI/BOOT"], capture_output=True, text=True,
                             env={"MTOOLS_SKIP_CHECK": "1", "PATH": "/usr/bin:/bin", "TZ": "UTC"}, check=True).stdout
    dated = [line for line in listing.splitlines() if "2023-11-14" in line]
    assert len(dated) >= 5, listing  # ., .., BOOTX64.EFI, grubx64.efi, mmx64.efi
    (tmp_path / "c").mkdir()
    later = write_both(tmp_path / "c", 1_800_000_000)
    assert digest(later[1]) != digest(first[1])  # the epoch is in there: it is not ignored


def as_mkisofs(iso: Path) -> str:
    return subprocess.run(["xorriso", "-indev", str(iso), "-report_el_torito", "as_mkisofs"], capture_output=True,
                          text=True, check=True).stdout


def el_torito(iso: Path) -> str:
    return subprocess.run(["xorriso", "-indev", str(iso), "-report_el_torito", "plain"], capture_output=True,
                          text=True, check=True).stdout


@needs_tools
def test_iso_boots_uefi_and_bios_and_its_menus_carry_the_args(tmp_path: Path) -> None:
    _, iso = write_both(tmp_path, 5)
    report = el_torito(iso)
    assert "/boot/x86_64/efi" in report and "UEFI" in report
    assert "/isolinux/isolinux.bin" in report and "BIOS" in report
    assert bootmedia.menus(iso) == {"/EFI/vendor/grub.cfg": "grub", "/isolinux/isolinux.cfg": "isolinux"}
    copy = tmp_path / "copy.iso"
    bootmedia.with_kernel_args(iso, copy, tmp_path / "menus", "ipa-api-url=http://10.0.2.2:1234")
    out = tmp_path / "grub.cfg"
    subprocess.run(["xorriso", "-osirrox", "on", "-indev", str(copy), "-extract", "/EFI/vendor/grub.cfg", str(out)],
                   capture_output=True, check=True)
    assert "  linux /boot/x86_64/loader/linux console=ttyS0 a=b ipa-api-url=http://10.0.2.2:1234\n" in out.read_text()
    assert as_mkisofs(copy) == as_mkisofs(iso)  # the boot records survive the copy, boot-info-table and all


@needs_tools
def test_isolinux_without_ldlinux_still_boots_bios(tmp_path: Path) -> None:
    """SLE 15's syslinux 4: isolinux.bin is whole, there is no ldlinux.c32."""
    _, iso = write_both(tmp_path, 5, ldlinux=False)
    assert "BIOS" in el_torito(iso) and "UEFI" in el_torito(iso)


@needs_tools
def test_iso_without_isolinux_is_uefi_only(tmp_path: Path) -> None:
    _, iso = write_both(tmp_path, 5, bios=False)
    report = el_torito(iso)
    assert "UEFI" in report and "BIOS" not in report


class FakeMedia:
    """A Media1 ISO's repositories as bytes: one repository whose primary.xml lists `names`."""

    def __init__(self, names: list[str]) -> None:
        from sles_ipa_builder.inputs.media import Repo

        self.iso = Path("/images/SLE-15-SP7-Full-x86_64-GM-Media1.iso")
        self.repos = [Repo("Basesystem", "Module-Basesystem", "Basesystem", "15.7")]
        packages = "".join(
            f'<package type="rpm"><name>{n}</name><arch>x86_64</arch><version epoch="0" ver="1.0" rel="2"/>'
            f'<location href="x86_64/{n}-1.0-2.x86_64.rpm"/></package>' for n in names)
        self.files = {
            "/Module-Basesystem/repodata/repomd.xml":
                b'<repomd><data type="primary"><location href="repodata/primary.xml"/></data></repomd>',
            "/Module-Basesystem/repodata/primary.xml":
                f'<metadata xmlns="{bootfiles.RPM_NS[1:-1]}">{packages}</metadata>'.encode(),
        }

    def read(self, path: str) -> bytes:
        return self.files[path]


def test_the_boot_packages_are_found_in_the_media_metadata() -> None:
    source = bootfiles.find(FakeMedia(["bash", "shim", "grub2-x86_64-efi", "syslinux"]), X86_64, "secure-boot")  # type: ignore[arg-type]
    assert source is not None
    assert {n: (p.version, p.path) for n, p in source.located.items()} == {
        "shim": ("1.0-2", "/Module-Basesystem/x86_64/shim-1.0-2.x86_64.rpm"),
        "grub2-x86_64-efi": ("1.0-2", "/Module-Basesystem/x86_64/grub2-x86_64-efi-1.0-2.x86_64.rpm"),
        "syslinux": ("1.0-2", "/Module-Basesystem/x86_64/syslinux-1.0-2.x86_64.rpm")}
    assert bootfiles.find(FakeMedia(["shim"]), X86_64, "off") is None


def test_an_incomplete_chain_warns_or_with_secure_boot_stops(caplog: pytest.LogCaptureFixture) -> None:
    media = FakeMedia(["grub2-x86_64-efi"])
    with caplog.at_level("WARNING"):
        assert bootfiles.find(media, X86_64, "auto") is not None  # built from what is there
    assert "the Secure Boot chain is incomplete: no shim on the media (SLE-15-SP7" in caplog.text
    with pytest.raises(ConfigError, match="incomplete: no shim"):
        bootfiles.find(media, X86_64, "secure-boot")
    caplog.clear()
    with caplog.at_level("WARNING"):
        assert bootfiles.find(FakeMedia(["bash"]), X86_64, "auto") is None  # nothing to boot with
    assert "no shim or grub2-x86_64-efi" in caplog.text and "no <name>.esp.img or <name>.iso" in caplog.text
    with pytest.raises(ConfigError, match="no Media1 ISO"):
        bootfiles.find(None, X86_64, "secure-boot")


def test_a_refusal_drawn_without_a_newline_is_seen(tmp_path: Path) -> None:
    """shim draws its refusal in a box, with cursor moves and no newline: the console sees it at once."""
    from sles_ipa_builder.verify.qemu import Console

    log = tmp_path / "console.log"
    log.write_bytes(b"BdsDxe: starting Boot0001\r\n\x1b[24;39H\x1b[37m\x1b[40m ERROR \x1b[25;20H"
                    b"Verification failed: (0x1A) Security Violation\xe2\x94\x82   \x1b[26;39H OK ")
    console = Console(log)
    console.poll()
    assert console.refused.startswith("Verification failed: (0x1A) Security Violation")
    assert not console.secure_boot
    log.write_bytes(b"[    0.000000] secureboot: Secure boot enabled\n")
    fresh = Console(log)
    fresh.poll()
    assert fresh.secure_boot and not fresh.refused
