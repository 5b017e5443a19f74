"""Boot media from the build: a UEFI ESP image holding the vendor's Secure Boot chain, and a bootable ISO.

The ESP (`<name>.esp.img`, FAT, mkfs.vfat + mtools) holds shim as the removable-media loader
(EFI/BOOT/BOOTX64.EFI), the signed grub under the name shim loads, MokManager, and a grub.cfg where
that grub reads it (its built-in prefix, else next to it). Ironic takes the ESP as `bootloader`, and
writes its own grub.cfg at `[DEFAULT]grub_config_path`: the manifest says which path that is.

The ISO (`<name>.iso`, xorriso) lays out SUSE's installer paths: /boot/<arch>/loader/linux and
initrd, the ESP as /boot/<arch>/efi (El Torito, UEFI), isolinux in /isolinux for BIOS where the media has it
(SLE 15), and the real grub.cfg at grub's prefix in the ISO tree: booted from a CD, grub's root is
the CD. The ESP's own grub.cfg finds the CD holding the kernel and reads the ISO's.

Both are reproducible: fixed volume ids and serials, every timestamp at SOURCE_DATE_EPOCH (or, with
none given, at the kernel file's mtime, which comes from its package).
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from .. import run
from ..config.arch import Arch
from ..errors import ConfigError
from .bootfiles import BootFiles

VOLUME_ID = "SLES-IPA"
ESP_SLACK = 1 << 20
ISOLINUX_DIR = "isolinux"  # a path isolinux searches for ldlinux.c32 (not the directory it was loaded from)
# grub.cfg and isolinux.cfg take kernel parameters on one line: these would end or change that line
UNSAFE = re.compile(r"[\"'\\$;&|<>{}`\n\r\t#]")


def kernel_args_problem(args: str) -> str | None:
    """The first parameter that would break a boot menu's kernel line (quotes, newlines, grub syntax)."""
    if "\n" in args or "\r" in args:
        return args.splitlines()[0] or "(a newline)"
    for word in args.split(" "):
        if UNSAFE.search(word):
            return word
    return None


def check_kernel_args(args: str, setting: str = "iso_kernel_args") -> None:
    bad = kernel_args_problem(args)
    if bad is not None:
        raise ConfigError(f"{setting}: the parameter {bad!r} would break the ISO's boot menu",
                          "kernel parameters for the ISO may not hold quotes, newlines, $, ;, \\, braces or #")


@dataclass(frozen=True)
class Layout:
    """Where things are on the ESP and the ISO, for one arch and one grub."""

    arch: Arch
    boot: BootFiles

    @property
    def loader_dir(self) -> str:
        return f"/boot/{self.arch.suse}/loader"

    @property
    def kernel(self) -> str:
        return f"{self.loader_dir}/linux"

    @property
    def initrd(self) -> str:
        return f"{self.loader_dir}/initrd"

    @property
    def esp_in_iso(self) -> str:
        return f"/boot/{self.arch.suse}/efi"

    @property
    def grub_cfg(self) -> str:
        """Where the signed grub reads grub.cfg (ESP and ISO alike): its prefix, else next to it."""
        return f"{(self.boot.grub_prefix or '/EFI/BOOT').rstrip('/')}/grub.cfg"

    @property
    def grub_config_path(self) -> str:
        """Ironic's [DEFAULT]grub_config_path for this ESP."""
        return self.grub_cfg.lstrip("/")


def grub_menu(layout: Layout, args: str) -> str:
    return (
        "# sles-ipa-builder: boot the agent from this medium\n"
        "set timeout=0\n"
        f"search --no-floppy --file --set=root {layout.kernel}\n"
        'menuentry "Ironic Python Agent" {\n'
        f"  linux {layout.kernel} {args}\n"
        f"  initrd {layout.initrd}\n"
        "}\n"
    )


def esp_stub(layout: Layout) -> str:
    """The ESP's grub.cfg: find the medium that holds the kernel, read its grub.cfg (Ironic writes its own)."""
    return (
        "# sles-ipa-builder: Ironic replaces this file; on our ISO it hands over to the ISO's grub.cfg\n"
        f"search --no-floppy --file --set=root {layout.kernel}\n"
        f"configfile ($root){layout.grub_cfg}\n"
    )


def isolinux_menu(layout: Layout, args: str) -> str:
    return (
        f"serial 0 115200\ndefault agent\nprompt 0\ntimeout 0\n"
        f"label agent\n  kernel {layout.kernel}\n  append initrd={layout.initrd} {args}\n"
    )


def _clamp(tree: Path, epoch: int) -> None:
    for path in [tree, *tree.rglob("*")]:
        os.utime(path, (epoch, epoch), follow_symlinks=False)


def _copy(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dst)


def _serial(name: str) -> str:
    return hashlib.sha256(name.encode()).hexdigest()[:8]


def write_esp(layout: Layout, out: Path, work: Path, epoch: int) -> None:
    """The FAT ESP: shim as BOOT<EFI>.EFI, grub under the name shim loads, MokManager, the grub.cfg stub.
    Without shim (media lacking it), grub itself is the removable-media loader: it boots with Secure Boot off."""
    boot, efi = layout.boot, layout.arch.efi.upper()
    tree = work / "esp"
    loader = tree / "EFI/BOOT" / f"BOOT{efi}.EFI"
    if "shim" in boot.files:
        _copy(boot.files["shim"], loader)
        if "grub" in boot.files:
            _copy(boot.files["grub"], tree / "EFI/BOOT" / boot.second_stage)
        if "mokmanager" in boot.files and boot.mok_name:
            _copy(boot.files["mokmanager"], tree / "EFI/BOOT" / boot.mok_name)
    elif "grub" in boot.files:
        _copy(boot.files["grub"], loader)
    cfg = tree / layout.grub_cfg.lstrip("/")
    cfg.parent.mkdir(parents=True, exist_ok=True)
    cfg.write_text(esp_stub(layout))
    _clamp(tree, epoch)
    size = sum(f.stat().st_size for f in tree.rglob("*") if f.is_file()) + ESP_SLACK
    size = -(-size // (1 << 20)) * (1 << 20)
    out.unlink(missing_ok=True)
    with out.open("wb") as f:
        f.truncate(size)
    run.run(["mkfs.vfat", "--invariant", "-i", _serial(out.name), "-n", "ESP", out], capture=True,
            hint="mkfs.vfat (dosfstools) failed making the ESP")
    # FAT keeps local time, mmd stamps directories with the clock unless SOURCE_DATE_EPOCH says otherwise,
    # and mcopy -s follows readdir order: UTC, the epoch, and one file at a time in sorted order
    env = {**os.environ, "MTOOLS_SKIP_CHECK": "1", "TZ": "UTC", "SOURCE_DATE_EPOCH": str(epoch)}
    entries = sorted(tree.rglob("*"))
    for d in (e for e in entries if e.is_dir()):
        run.run(["mmd", "-i", out, f"::/{d.relative_to(tree).as_posix()}"], env=env, capture=True,
                hint="mmd (mtools) failed filling the ESP")
    for file in (e for e in entries if e.is_file()):
        run.run(["mcopy", "-p", "-m", "-Q", "-i", out, file, f"::/{file.relative_to(tree).as_posix()}"], env=env,
                capture=True, hint="mcopy (mtools) failed filling the ESP")
    shutil.rmtree(tree)


def write_iso(layout: Layout, out: Path, work: Path, *, kernel: Path, initramfs: Path, esp: Path, args: str,
              epoch: int) -> None:
    """The bootable ISO: kernel, initrd, the ESP (El Torito UEFI), isolinux (El Torito BIOS) when present."""
    tree = work / "iso"
    _copy(kernel, tree / layout.kernel.lstrip("/"))
    _copy(initramfs, tree / layout.initrd.lstrip("/"))
    _copy(esp, tree / layout.esp_in_iso.lstrip("/"))
    cfg = tree / layout.grub_cfg.lstrip("/")
    cfg.parent.mkdir(parents=True, exist_ok=True)
    cfg.write_text(grub_menu(layout, args))
    catalog = ["-c", f"boot/{layout.arch.suse}/boot.catalog"]
    bios: list[str] = []
    if layout.boot.bios:
        loader = tree / ISOLINUX_DIR
        _copy(layout.boot.files["isolinux"], loader / "isolinux.bin")
        if "ldlinux" in layout.boot.files:  # syslinux 5 and later; SLE 15's isolinux 4 is whole
            _copy(layout.boot.files["ldlinux"], loader / "ldlinux.c32")
        (loader / "isolinux.cfg").write_text(isolinux_menu(layout, args))
        bios = ["-b", f"{ISOLINUX_DIR}/isolinux.bin", "-no-emul-boot", "-boot-load-size", "4", "-boot-info-table",
                "-eltorito-alt-boot"]
    _clamp(tree, epoch)
    out.unlink(missing_ok=True)
    argv: list[str | Path] = ["xorriso", "-as", "mkisofs", "-quiet", "-o", out, "-V", VOLUME_ID, "-r", "-J",
                              "-joliet-long", *catalog, *bios, "-e", layout.esp_in_iso.lstrip("/"), "-no-emul-boot",
                              tree]
    run.run(argv, env={**os.environ, "SOURCE_DATE_EPOCH": str(epoch)}, capture=True,
            hint="xorriso failed writing the ISO (apt-get install xorriso)")
    shutil.rmtree(tree)


def menus(iso: Path) -> dict[str, str]:
    """The boot menus in an ISO: path -> "grub" or "isolinux"."""
    found: dict[str, str] = {}
    for name, kind in (("grub.cfg", "grub"), ("isolinux.cfg", "isolinux")):
        out = run.run(["xorriso", "-indev", iso, "-find", "/", "-type", "f", "-name", name], capture=True,
                      hint=f"xorriso could not read {iso}").stdout
        for line in out.splitlines():
            if line.startswith("'") and line.endswith("'"):
                found[line[1:-1]] = kind
    return found


def with_kernel_args(iso: Path, out: Path, work: Path, extra: str) -> None:
    """A copy of `iso` whose boot menus add `extra` to the kernel line, every other file kept: the boot
    test points the agent at its fake API this way, as Ironic writes its own grub.cfg into our ESP."""
    check_kernel_args(extra, "the boot test's kernel parameters")
    maps: dict[str, Path] = {}
    work.mkdir(parents=True, exist_ok=True)
    for i, (path, kind) in enumerate(sorted(menus(iso).items())):
        local = work / f"menu{i}.cfg"
        run.run(["xorriso", "-osirrox", "on", "-indev", iso, "-extract", path, local], capture=True,
                hint=f"reading {path} from {iso} failed")
        text = local.read_text()
        key = "  linux " if kind == "grub" else "  append "
        text = "".join(f"{line} {extra}\n" if line.startswith(key) else line + "\n" for line in text.splitlines())
        local.chmod(0o644)
        local.write_text(text)
        maps[path] = local
    remap(iso, out, maps)


def remap(iso: Path, out: Path, files: dict[str, Path]) -> None:
    """A copy of `iso` with these files (path in the ISO -> local file) replaced; its El Torito boot
    records are replayed, so it boots as the original does."""
    out.unlink(missing_ok=True)
    maps = [arg for path, local in sorted(files.items()) for arg in ("-map", str(local), path)]
    run.run(["xorriso", "-indev", iso, "-outdev", out, "-boot_image", "any", "replay", *maps, "-commit"],
            capture=True, hint=f"xorriso could not copy {iso} (replaying boot records needs xorriso 1.4.6 or later)")
