"""What differs between the SLES releases the builder knows, one row each, read by the engine and
(through the variables engine/hookenv.py exports) by the hooks.

SLE 15 SP4 to SP7 and SLES 16.0 and 16.1 are first-class. A 15 service pack newer than the table is
built like SP7 and an older one like SP4; a 16 minor release newer than the table like the newest 16.

A release is named as the seed names it: `DIB_SLES_RELEASE` is the release as the file names spell
it (`SLE-15`, whose service pack comes from `DIB_SLES_SERVICE_PACK`, or `SLES-16.0`; `16.0` and `15`
are understood too). When nothing names one, detect.py looks at the images directory.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from ..errors import ConfigError

PY310, PY311, PY313 = "python3.10", "python3.11", "python3.13"
MEDIA1 = "media1"  # SLE-15-SPx-Full-<arch>-GM-Media1.iso: media.1/products lists Module-* repositories
INSTALL = "install"  # SLES-16.x-Full-<arch>-GM.install.iso: one rpm-md repository in /install
# GM, or a quarterly refresh of the same release (QU1, QU2...): SUSE publishes both under one release
REFRESH = r"(GM|QU\d+)"


@dataclass(frozen=True)
class Release:
    major: int  # 15 or 16
    minor: int  # the service pack's number on 15 (0: GM), the minor release on 16
    layout: str  # MEDIA1 or INSTALL
    # The IPA venv's interpreter. `python_if` names a package that, when a configured repository
    # provides it, gives `python_if_found` instead (SP4's GM media has python310; its update channel
    # carries python311, which IPA 12 and later need).
    python: str
    python_if: str = ""
    python_if_found: str = ""
    platform: str = "OpenStack-Cloud"  # the Minimal-VM qcow2's platform, before -GM/-QUn
    network: str = "wicked"  # what configures the network on the installed system
    usr_etc: bool = False  # default configuration lives in /usr/etc (sshd_config, ...), /etc holds changes
    selinux: str = ""  # SELinux mode the base image boots in ("" : none; 15 uses AppArmor)
    firmware: str = "bios"  # the boot firmware the release defaults to (bios or uefi)
    qemu_cpu: str = ""  # -cpu for the boot tests ("": verify/qemu.py's own choice, host or the arch's)
    x86_64_level: int = 1  # the x86-64 micro-architecture level its packages need (2: x86-64-v2)
    # Package names that differ between releases, by a generic name the hooks use.
    packages: tuple[tuple[str, str], ...] = ()

    @property
    def name(self) -> str:
        """`15-SP7`, `15-GM`, `16.0`: as summary and error messages say it."""
        return f"{self.major}-{self.service_pack}" if self.major == 15 else f"{self.major}.{self.minor}"

    @property
    def shown(self) -> str:
        return f"SLE 15 {self.service_pack}" if self.major == 15 else f"SLES {self.name}"

    @property
    def prefix(self) -> str:
        """DIB_SLES_RELEASE: the release as the file names spell it (the seed's SLE-15; Nordix's SLES-16.0)."""
        return "SLE-15" if self.major == 15 else f"SLES-{self.name}"

    @property
    def service_pack(self) -> str:
        """DIB_SLES_SERVICE_PACK: SP7 (GM for 15's first release); 16 has none."""
        if self.major != 15:
            return ""
        return f"SP{self.minor}" if self.minor else "GM"

    @property
    def dib_release(self) -> str:
        """15 SP4 -> 15.4, 16.0 -> 16.0: the release key pkg-map's tables use."""
        return f"{self.major}.{self.minor}" if self.major != 15 or self.minor else "15"

    @property
    def may_change_python(self) -> bool:
        return bool(self.python_if)

    def python_for(self, provides: Callable[[str], bool] | None = None) -> str:
        """The interpreter, given what the repositories provide (None: not known, the GM media's)."""
        if self.python_if and provides is not None and provides(self.python_if):
            return self.python_if_found
        return self.python

    def package(self, generic: str) -> str:
        return dict(self.packages).get(generic, generic)

    def facts(self) -> dict[str, str]:
        """The row as `summary` shows it."""
        return {"release": self.shown, "media": self.layout, "python": self.python_for(),
                "network": self.network, "/usr/etc": "yes" if self.usr_etc else "no",
                "selinux": self.selinux or "none", "firmware": self.firmware,
                "qemu_cpu": self.qemu_cpu or "host (KVM), the arch's (TCG)"}

    # --- file names -----------------------------------------------------------------------------
    def _stem(self) -> str:
        return f"SLE-15-{self.service_pack}" if self.major == 15 else self.prefix

    def iso_name(self, arch: str, refresh: str = "GM") -> str:
        """The Full ISO as SUSE names it: SLE-15-SP7-Full-x86_64-GM-Media1.iso,
        SLES-16.0-Full-x86_64-GM.install.iso."""
        if self.layout == MEDIA1:
            return f"{self._stem()}-Full-{arch}-{refresh}-Media1.iso"
        return f"{self._stem()}-Full-{arch}-{refresh}.install.iso"

    def iso_pattern(self, arch: str) -> re.Pattern[str]:
        """This release's Full ISO, GM or any refresh (group 1: GM or QUn)."""
        gm = re.escape(self.iso_name(arch, "@"))
        return re.compile(gm.replace("@", REFRESH))

    def image_names(self, install_type: str, arch: str, platform: str) -> list[str]:
        """The Minimal-VM qcow2 by SUSE's download name (SLES15-SP7-..., SLES-16.0-...) and, on 15, by
        the seed's (SLE-15-SP7-...). `platform` is the whole platform part: OpenStack-Cloud-GM."""
        tail = f"{install_type}.{arch}-{platform}.qcow2"
        if self.major != 15:
            return [f"{self.prefix}-{tail}"]
        return [f"SLES15-{self.service_pack}-{tail}", f"SLE-15-{self.service_pack}-{tail}"]

    def image_pattern(self, install_type: str, arch: str) -> re.Pattern[str]:
        """This release's Minimal-VM qcow2 with its own platform, GM or any refresh (group 1)."""
        names = self.image_names(install_type, arch, "@")
        return re.compile("|".join(re.escape(n).replace("@", f"{re.escape(self.platform)}-{REFRESH}")
                                   for n in names))


# mkinitrd left the default install with SP5: its compatibility wrapper is a package of its own.
_NEWER = (("mkinitrd", "dracut-mkinitrd-deprecated"),)
# SLES 16 drops ISC dhclient: DIB's dhcp-all-interfaces maps its dhcp-client to dhcpcd there.
_SIXTEEN = (*_NEWER, ("dhcp-client", "dhcpcd"))




def _sixteen(minor: int) -> Release:
    """SLES 16: NetworkManager only, configuration defaults in /usr/etc, SELinux enforcing, UEFI first,
    x86-64-v2 at least (QEMU's qemu64 is below it; "max" is v2 and more under TCG, the host's CPU under KVM)."""
    return Release(16, minor, INSTALL, PY313, platform="Cloud", network="NetworkManager", usr_etc=True,
                   selinux="enforcing", firmware="uefi", qemu_cpu="max", x86_64_level=2,
                   packages=_SIXTEEN)

TABLE: tuple[Release, ...] = (
    Release(15, 4, MEDIA1, PY310, python_if="python311", python_if_found=PY311),
    Release(15, 5, MEDIA1, PY311, packages=_NEWER),
    Release(15, 6, MEDIA1, PY311, packages=_NEWER),
    Release(15, 7, MEDIA1, PY311, packages=_NEWER),
    _sixteen(0),
    _sixteen(1),
)
DEFAULT = next(r for r in TABLE if r.name == "15-SP7")  # the seed's, and upstream's since 2025-08
PYTHONS = tuple(dict.fromkeys(p for r in TABLE for p in (r.python, r.python_if_found) if p))
HINT = "set DIB_SLES_RELEASE (--sles-release) to SLE-15 with DIB_SLES_SERVICE_PACK SP4 to SP7, or to SLES-16.0 or 16.1"
_RELEASE = re.compile(r"(?:SLES?)?-?(15|16)(?:\.(\d+))?", re.I)


def normalise_service_pack(service_pack: str) -> str:
    """`sp5`, `SP5` -> `SP5`; GM (no service pack) stays `GM`."""
    sp = service_pack.strip().upper()
    if sp != "GM" and not (sp.startswith("SP") and sp[2:].isdigit()):
        raise ConfigError(f"'{service_pack}' is not a SLES 15 service pack", "use SP4, SP5, SP6 or SP7")
    return sp


def major_minor(release: str) -> tuple[int, int | None]:
    """`SLE-15`, `SLES15`, `15` -> (15, None); `SLES-16.0`, `16.0` -> (16, 0)."""
    m = _RELEASE.fullmatch(release.strip())
    if m is None:
        raise ConfigError(f"'{release}' is not a SLES release this builder knows", HINT)
    major, minor = int(m.group(1)), m.group(2)
    if major == 15 and minor is not None:
        raise ConfigError(f"'{release}': SLE 15 names its service pack apart",
                          "set DIB_SLES_RELEASE=SLE-15 and DIB_SLES_SERVICE_PACK=SP" + minor)
    if major == 16 and minor is None:
        raise ConfigError(f"'{release}' names no minor release", "name it in full: SLES-16.0 or SLES-16.1")
    return major, None if minor is None else int(minor)


def find(release: str, service_pack: str = DEFAULT.service_pack) -> Release:
    """The row for a release (`SLE-15` with its service pack, or `SLES-16.1`), or the one it builds like."""
    major, minor = major_minor(release)
    if major == 15:
        sp = normalise_service_pack(service_pack)
        minor = int(sp[2:]) if sp != "GM" else 0
    assert minor is not None
    rows = [r for r in TABLE if r.major == major]
    known = next((r for r in rows if r.minor == minor), None)
    if known is not None:
        return known
    base = rows[-1] if minor > rows[-1].minor else rows[0]
    return replace(base, minor=minor)


def name_patterns(arch: str, install_type: str) -> list[tuple[re.Pattern[str], int, str]]:
    """(pattern, major, iso or image) for the Full ISO and Minimal-VM qcow2 names of every release of
    each major, group 1 the release (SP7, GM or 16.0), group 2 the refresh: the rows' own names with
    the release and the refresh left open."""
    out = []
    for major in dict.fromkeys(r.major for r in TABLE):
        row = replace(next(r for r in TABLE if r.major == major), minor=999)  # 999: a placeholder
        token, group = (("SP999", r"(SP\d+|GM)") if major == 15 else (re.escape(row.name), rf"({major}\.\d+)"))
        named = [("iso", row.iso_name(arch, "@"))] + [
            ("image", n) for n in row.image_names(install_type, arch, f"{row.platform}-@")]
        for kind, name in named:
            out.append((re.compile(re.escape(name).replace(token, group, 1).replace("@", REFRESH)), major, kind))
    return out


def refreshes(directory: Path, pattern: re.Pattern[str]) -> list[str]:
    """The quarterly refreshes (QUn) in `directory` that `pattern` (iso_pattern, image_pattern)
    matches, the newest first."""
    try:
        names = [p.name for p in directory.iterdir() if p.is_file()]
    except OSError:
        return []
    found = [(m, n) for n in names if (m := pattern.fullmatch(n)) is not None]
    tags = [(int(tag[2:]), n) for m, n in found for tag in m.groups() if tag and tag.startswith("QU")]
    return [n for _, n in sorted(tags, key=lambda t: (-t[0], t[1]))]


def pythons(major: int) -> list[str]:
    """The IPA venv interpreters the releases of a major version offer."""
    return list(dict.fromkeys(p for r in TABLE if r.major == major for p in (r.python, r.python_if_found) if p))


def python_package(python_exe: str) -> str:
    """python3.11 -> python311, SUSE's package of that interpreter."""
    return python_exe.replace(".", "")


def renamed_packages(release: Release) -> dict[str, str]:
    """Generic name -> this release's package, for every package some release names differently
    (the hooks get each as DIB_SLES_PKG_<GENERIC>)."""
    generics = dict.fromkeys(generic for known in TABLE for generic, _ in known.packages)
    return {generic: release.package(generic) for generic in generics}
