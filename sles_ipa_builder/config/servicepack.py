"""What differs between SLES 15 service packs, in one table read by the engine and (through the
variables engine/hookenv.py exports) by the hooks.

SP4 to SP7 are first-class. A service pack newer than the table is built like the newest one it
knows; an older one like SP4.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from ..errors import ConfigError

PY310, PY311 = "python3.10", "python3.11"


@dataclass(frozen=True)
class ServicePack:
    name: str
    # The IPA venv's interpreter. `python_if` names a package that, when a configured repository
    # provides it, gives `python_if_found` instead (SP4's GM media has python310; its update channel
    # carries python311, which IPA 12 and later need).
    python: str
    python_if: str = ""
    python_if_found: str = ""
    # Package names that differ between service packs, by a generic name the hooks use.
    packages: tuple[tuple[str, str], ...] = ()

    def python_for(self, provides: Callable[[str], bool] | None = None) -> str:
        """The interpreter, given what the repositories provide (None: not known, the GM media's)."""
        if self.python_if and provides is not None and provides(self.python_if):
            return self.python_if_found
        return self.python

    def package(self, generic: str) -> str:
        return dict(self.packages).get(generic, generic)

    @property
    def may_change_python(self) -> bool:
        return bool(self.python_if)


# mkinitrd left the default install with SP5: its compatibility wrapper is a package of its own.
_NEWER = (("mkinitrd", "dracut-mkinitrd-deprecated"),)
TABLE: dict[str, ServicePack] = {
    "SP4": ServicePack("SP4", PY310, python_if="python311", python_if_found=PY311),
    "SP5": ServicePack("SP5", PY311, packages=_NEWER),
    "SP6": ServicePack("SP6", PY311, packages=_NEWER),
    "SP7": ServicePack("SP7", PY311, packages=_NEWER),
}
DEFAULT = "SP7"
FIRST_CLASS = tuple(TABLE)


def normalise(service_pack: str) -> str:
    """`sp5`, `SP5` -> `SP5`; GM (no service pack) stays `GM`."""
    sp = service_pack.strip().upper()
    if sp != "GM" and not (sp.startswith("SP") and sp[2:].isdigit()):
        raise ConfigError(f"'{service_pack}' is not a SLES 15 service pack", "use SP4, SP5, SP6 or SP7")
    return sp


def facts(service_pack: str) -> ServicePack:
    sp = normalise(service_pack)
    if sp in TABLE:
        return TABLE[sp]
    number = int(sp[2:]) if sp != "GM" else 0
    newest = max(TABLE, key=lambda k: int(k[2:]))
    base = TABLE[newest] if number > int(newest[2:]) else TABLE["SP4"]
    return ServicePack(sp, base.python, base.python_if, base.python_if_found, base.packages)


def python(service_pack: str, provides: Callable[[str], bool] | None = None) -> str:
    return facts(service_pack).python_for(provides)


def python_package(python_exe: str) -> str:
    """python3.11 -> python311, SUSE's package of that interpreter."""
    return python_exe.replace(".", "")


def iso_name(release: str, service_pack: str, arch: str) -> str:
    """The Full Media1 ISO as SUSE names it: SLE-15-SP7-Full-x86_64-GM-Media1.iso."""
    return f"{release}-{service_pack}-Full-{arch}-GM-Media1.iso"


def base_image_names(release: str, service_pack: str, install_type: str, arch: str, platform: str) -> list[str]:
    """The Minimal-VM qcow2 by SUSE's download name (SLES15-SP7-...) and by the seed's (SLE-15-SP7-...)."""
    tail = f"{install_type}.{arch}-{platform}.qcow2"
    return list(dict.fromkeys([f"{release.replace('SLE-', 'SLES')}-{service_pack}-{tail}",
                               f"{release}-{service_pack}-{tail}"]))


def dib_release(sles_release: str, service_pack: str) -> str:
    """SLE-15 + SP4 -> 15.4, the release key pkg-map's tables use."""
    major = sles_release.rsplit("-", 1)[-1]
    sp = normalise(service_pack).removeprefix("SP")
    return f"{major}.{sp}" if sp.isdigit() else major


def renamed_packages(service_pack: str) -> dict[str, str]:
    """Generic name -> this service pack's package, for every package some service pack names differently
    (the hooks get each as DIB_SLES_PKG_<GENERIC>)."""
    sp = facts(service_pack)
    generics = dict.fromkeys(generic for known in TABLE.values() for generic, _ in known.packages)
    return {generic: sp.package(generic) for generic in generics}
