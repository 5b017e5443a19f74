"""The vendor's boot chain, taken from the media's own packages: shim, the signed grub, MokManager, isolinux.

`locate()` finds the packages in the Media1 ISO's rpm-md metadata (cheap: it runs with the input
checks, so a build that demands Secure Boot stops before any work). `extract()` reads them straight
out of the ISO, unpacks them with rpm2cpio and picks each file by its path in the package, the paths
SUSE's packages use (kiwi looks in the same places): /usr/share/efi/<arch>/shim.efi and grub.efi,
/usr/lib64/efi/ on older releases, /usr/share/syslinux/isolinux.bin.

What a file says of itself is read from it, not assumed from the vendor:
- the name shim loads the second stage by (`\\grub.efi` on SUSE, `\\grubx64.efi` on Debian), and
  MokManager's, from shim's UTF-16 strings;
- where the signed grub reads its grub.cfg: the prefix built into its image (grub's module area in
  the PE `mods` section: a PREFIX object); with none, grub reads grub.cfg next to itself.
"""

from __future__ import annotations

import io
import logging
import os
import re
import struct
import tempfile
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

from .. import run
from ..config.arch import Arch
from ..errors import ConfigError, InputError
from ..inputs.media import Media
from ..inputs.repos import decompress, primary_href

log = logging.getLogger(__name__)

RPM_NS = "{http://linux.duke.edu/metadata/common}"
# role -> candidate paths in the package, first match wins ({arch}: x86_64/aarch64, {grub}: x86_64-efi)
PATHS: dict[str, tuple[str, ...]] = {
    "shim": ("usr/share/efi/{arch}/shim.efi", "usr/lib64/efi/shim.efi"),
    "mokmanager": ("usr/share/efi/{arch}/MokManager.efi", "usr/lib64/efi/MokManager.efi"),
    "grub": ("usr/share/efi/{arch}/grub.efi", "usr/lib64/efi/grub.efi", "usr/share/grub2/{grub}/grub.efi"),
    "isolinux": ("usr/share/syslinux/isolinux.bin",),
    "ldlinux": ("usr/share/syslinux/ldlinux.c32",),
}
GRUB_OBJ_PREFIX = 3  # grub's module object types: 0 ELF, 1 memdisk, 2 config, 3 prefix
MODULE_MAGIC = 0x676D696D  # "mimg"


def packages(arch: Arch) -> dict[str, tuple[str, ...]]:
    """Package -> the roles it fills. BIOS boot (isolinux) only where the arch has a BIOS."""
    out: dict[str, tuple[str, ...]] = {"shim": ("shim", "mokmanager"), f"grub2-{arch.grub_efi}": ("grub",)}
    if not arch.boot_uefi:
        out["syslinux"] = ("isolinux", "ldlinux")
    return out


@dataclass(frozen=True)
class Located:
    name: str
    version: str  # version-release
    arch: str
    path: str  # in the ISO


@dataclass
class BootFiles:
    """The chain, unpacked. A role is missing when its package or file is not on the media."""

    files: dict[str, Path] = field(default_factory=dict)  # role -> file
    packages: list[Located] = field(default_factory=list)
    second_stage: str = ""  # the name shim loads grub by, e.g. grub.efi
    mok_name: str = ""  # the name shim loads MokManager by
    grub_prefix: str | None = None  # grub's built-in prefix ("/EFI/BOOT"), None if it has none

    @property
    def secure_boot_chain(self) -> list[str]:
        """What the Secure Boot chain lacks ([] when shim and the signed grub are both there)."""
        return [role for role in ("shim", "grub") if role not in self.files]

    @property
    def bios(self) -> bool:
        """isolinux alone boots (syslinux 4, as SLE 15 ships it); syslinux 5 and later also need ldlinux.c32."""
        return "isolinux" in self.files

    def as_dict(self) -> dict[str, object]:
        return {"packages": [{"name": p.name, "version": p.version, "arch": p.arch} for p in self.packages],
                "files": {role: f.name for role, f in sorted(self.files.items())},
                "second_stage": self.second_stage, "grub_prefix": self.grub_prefix,
                "secure_boot_chain": "complete" if not self.secure_boot_chain else
                f"incomplete: no {', '.join(self.secure_boot_chain)}"}


# --- finding the packages --------------------------------------------------------------------------
def locate(media: Media, arch: Arch) -> dict[str, Located]:
    """The boot packages the media's repositories hold, for this arch or noarch (the first found of
    each: a Media1 ISO carries one version of a package)."""
    wanted = packages(arch)
    found: dict[str, Located] = {}
    for repo in media.repos:
        base = f"/{repo.dir}" if repo.dir else ""
        try:
            href = primary_href(media.read(f"{base}/repodata/repomd.xml"))
            primary = decompress(media.read(f"{base}/{href}")) if href else None
        except KeyError as e:  # repomd.xml names a file the ISO lacks: no boot packages from there
            log.warning("%s: %s names %s, which is not on the ISO", media.iso.name, base or "/", e)
            continue
        if primary is None:
            continue
        for pkg in _primary(primary, set(wanted), {arch.suse, "noarch"}):
            pkg = Located(pkg.name, pkg.version, pkg.arch, f"{base}/{pkg.path}")
            found.setdefault(pkg.name, pkg)
    return found


def _primary(data: bytes, names: set[str], arches: set[str]) -> list[Located]:
    out = []
    for _, el in ET.iterparse(io.BytesIO(data)):
        if el.tag != f"{RPM_NS}package":
            continue
        name = el.findtext(f"{RPM_NS}name") or ""
        arch = el.findtext(f"{RPM_NS}arch") or ""
        ver, loc = el.find(f"{RPM_NS}version"), el.find(f"{RPM_NS}location")
        if name in names and arch in arches and ver is not None and loc is not None:
            out.append(Located(name, f"{ver.get('ver')}-{ver.get('rel')}", arch, loc.get("href", "")))
        el.clear()
    return out


@dataclass(frozen=True)
class Source:
    media: Media
    located: dict[str, Located]


def find(media: Media | None, arch: Arch, mode: str) -> Source | None:
    """The boot packages for the ESP and the ISO (None: neither is written). An incomplete Secure Boot
    chain is a warning, or with mode "secure-boot" an error before any work; both name what is missing."""
    if mode == "off":
        return None
    located = locate(media, arch) if media is not None else {}
    lacking = [name for name in packages(arch) if name not in located]
    chain = [name for name in lacking if name != "syslinux"]
    where = f"the media ({media.iso.name})" if media is not None else "the build's inputs (no Media1 ISO)"
    if chain:
        problem = f"the Secure Boot chain is incomplete: no {' or '.join(chain)} on {where}"
        if mode == "secure-boot":
            raise ConfigError(problem, "use media that carry shim and the signed grub, or set boot_media to auto")
        if not any(name in located for name in packages(arch) if name != "syslinux"):
            log.warning("%s: no <name>.esp.img or <name>.iso", problem)
            return None
        log.warning("%s: <name>.esp.img and <name>.iso are written from what is there", problem)
    if "syslinux" in lacking:
        log.warning("no syslinux on %s: <name>.iso boots UEFI only, not BIOS", where)
    assert media is not None
    return Source(media, located)


# --- unpacking and reading them --------------------------------------------------------------------
def extract(source: Source, arch: Arch, dest: Path) -> BootFiles:
    """Unpack the located packages under dest and pick each role's file from them."""
    media = source.media
    boot = BootFiles(packages=sorted(source.located.values(), key=lambda p: p.name))
    roles = packages(arch)
    for pkg in boot.packages:
        root = dest / pkg.name
        root.mkdir(parents=True)
        with tempfile.NamedTemporaryFile(suffix=".rpm", dir=dest) as rpm:
            try:
                rpm.write(media.read(pkg.path))
            except KeyError:
                raise InputError(f"{media.iso}: the metadata lists {pkg.path}, which is not on the ISO",
                                 "the ISO is incomplete or damaged; download it again and check its checksum") from None
            rpm.flush()
            run.pipe(["rpm2cpio", rpm.name], ["cpio", "-idm", "--quiet", "--no-absolute-filenames"], cwd=root)
        for role in roles.get(pkg.name, ()):
            for pattern in PATHS[role]:
                candidate = _inside(root, root / pattern.format(arch=arch.suse, grub=arch.grub_efi))
                if candidate is not None:
                    boot.files[role] = candidate
                    break
    if "shim" in boot.files:
        data = boot.files["shim"].read_bytes()
        boot.second_stage = shim_loader(data, r"grub\w*") or f"grub{arch.efi}.efi"
        boot.mok_name = shim_loader(data, r"(?:mm\w+|MokManager)") or ""
    if "grub" in boot.files:
        boot.grub_prefix = grub_prefix(boot.files["grub"].read_bytes())
    return boot


def _inside(root: Path, path: Path) -> Path | None:
    """`path` in an unpacked package, following its links inside `root` (an absolute link names a
    path of the package's root, not of this host); None when it is not a file there."""
    for _ in range(8):
        if not path.is_symlink():
            return path if path.is_file() else None
        target = Path(os.readlink(path))
        path = root / target.relative_to("/") if target.is_absolute() else path.parent / target
    return None


def shim_loader(shim: bytes, stem: str) -> str | None:
    """The file name shim loads for `stem` (a regex), from the `\\name.efi` UTF-16 strings built into it."""
    for m in re.finditer(rb"\\\x00((?:[\w.-]\x00){1,40})", shim):
        name = m.group(1).decode("utf-16-le")
        if re.fullmatch(stem + r"\.efi", name, re.IGNORECASE):
            return name
    return None


def grub_prefix(image: bytes) -> str | None:
    """The prefix built into a grub EFI image (where it reads grub.cfg), None if it has none. A device
    part, "(,gpt2)/boot/grub2", is dropped: on our ESP and ISO, grub's own device is the one."""
    try:
        prefix = _prefix_object(image)
    except struct.error:  # a truncated or unusual image: as if it had no prefix
        return None
    if not prefix:
        return None
    return re.sub(r"^\([^)]*\)", "", prefix) or None


def _prefix_object(image: bytes) -> str | None:
    mods = _section(image, "mods")
    if mods is None:
        return None
    start, _ = mods
    magic, _pad, offset, total = struct.unpack_from("<IIQQ", image, start)
    if magic != MODULE_MAGIC:
        return None
    pos, end = start + offset, start + min(total, len(image) - start)
    while pos + 8 <= end:
        kind, size = struct.unpack_from("<II", image, pos)
        if size < 8:
            break
        if kind == GRUB_OBJ_PREFIX:
            return image[pos + 8:pos + size].split(b"\0", 1)[0].decode(errors="replace") or None
        pos += size
    return None


def _section(image: bytes, wanted: str) -> tuple[int, int] | None:
    """(file offset, size) of a PE section by name."""
    if image[:2] != b"MZ":
        return None
    pe = struct.unpack_from("<I", image, 0x3C)[0]
    if image[pe:pe + 4] != b"PE\0\0":
        return None
    count, opt_size = struct.unpack_from("<H", image, pe + 6)[0], struct.unpack_from("<H", image, pe + 20)[0]
    table = pe + 24 + opt_size
    for i in range(count):
        name, _vsize, _vaddr, raw_size, raw_ptr = struct.unpack_from("<8sIIII", image, table + 40 * i)
        if name.rstrip(b"\0").decode(errors="replace") == wanted:
            return raw_ptr, raw_size
    return None
