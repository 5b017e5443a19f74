"""DIB's package framework natively: package-installs.{yaml,json} and pkg-map files.

Equivalent of package-installs-squash + package-installs-v2 + pkg-map (DIB 3.31): every element's
package list is filtered (phase, uninstall, build-only, arch/not-arch, installtype, dib_python_version,
when), mapped through the element's pkg-map for DISTRO_NAME (family suse for opensuse/sles), and
installed with one zypper call per phase and direction. Unlike DIB, the order is stable (DIB goes
through a Python set) and duplicates are dropped. The legacy v1 `<phase>.d/package-installs-*` files
are not supported.
"""

from __future__ import annotations

import json
import logging
import operator
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..config.arch import HOST_DEFAULT
from ..errors import ConfigError
from .elements import Element

log = logging.getLogger(__name__)

# Where DIB's package-installs hooks sit: phase dir -> (install script, uninstall script)
HOOK_NAMES = {
    "pre-install.d": ("10-package-installs", "99-package-uninstalls"),
    "install.d": ("01-package-installs", "99-package-uninstalls"),
    "post-install.d": ("00-package-installs", "95-package-uninstalls"),
}
FAMILY = {
    "opensuse": "suse",
    "sles": "suse",
    "sle": "suse",
    "suse": "suse",
    "centos": "redhat",
    "fedora": "redhat",
    "rhel": "redhat",
    "debian": "debian",
    "ubuntu": "debian",
    "gentoo": "gentoo",
}


@dataclass
class PackageLists:
    """Mapped package names per (phase dir, uninstall?), each with the elements that asked."""

    lists: dict[tuple[str, bool], list[str]] = field(default_factory=dict)
    by: dict[tuple[str, bool], dict[str, list[str]]] = field(default_factory=dict)

    def get(self, phase_dir: str, uninstall: bool) -> list[str]:
        return self.lists.get((phase_dir, uninstall), [])

    def add(self, phase_dir: str, uninstall: bool, pkg: str, element: str) -> None:
        names = self.lists.setdefault((phase_dir, uninstall), [])
        if pkg not in names:
            names.append(pkg)
        self.by.setdefault((phase_dir, uninstall), {}).setdefault(pkg, []).append(element)


def load_files(element: Element) -> list[dict[str, Any]]:
    """The element's package-installs.json and .yaml (DIB squashes both, json first)."""
    if element.path is None:
        return []
    out = []
    for name, parse in (("package-installs.json", json.loads), ("package-installs.yaml", yaml.safe_load)):
        f = element.path / name
        if f.is_file():
            try:
                data = parse(f.read_text())
            except (yaml.YAMLError, json.JSONDecodeError) as e:
                raise ConfigError(f"{f}: {e}".splitlines()[0], "fix the syntax of the package list") from None
            if data is None:
                continue
            if not isinstance(data, dict):
                raise ConfigError(
                    f"{f}: expected a mapping of package names", "see DIB's package-installs README"
                )
            out.append(data)
    return out


def when(statements: Any, env: Mapping[str, str], where: str) -> bool:
    """`when: VAR=val` / `VAR!=val` (a list means all of them); an unset VAR is an error, as in DIB."""
    if not statements:
        return True
    for st in statements if isinstance(statements, list) else [statements]:
        text = str(st)
        op: Callable[[Any, Any], Any]
        if "!=" in text:
            key, value, op = *text.split("!=", 1), operator.ne
        elif "=" in text:
            key, value, op = *text.split("=", 1), operator.eq
        else:
            raise ConfigError(f"{where}: cannot parse when '{text}'", "use VAR=value or VAR!=value")
        key = key.strip()
        if key not in env:
            raise ConfigError(
                f"{where}: the variable '{key}' in when '{text}' is not set",
                f"set {key} (in the environment or an environment.d file)",
            )
        if not op(env[key], value.strip()):
            return False
    return True


def _arch_ok(pkg: str, params: Mapping[str, Any], arch: str, where: str) -> bool:
    want, not_want = params.get("arch"), params.get("not-arch")
    if want and not_want:
        raise ConfigError(f"{where}: package {pkg} has both arch and not-arch", "keep one of them")
    if want:
        return arch in [a.strip() for a in str(want).split(",")]
    if not_want:
        return arch not in [a.strip() for a in str(not_want).split(",")]
    return True


def installtype(element: str, env: Mapping[str, str]) -> str:
    default = env.get("DIB_DEFAULT_INSTALLTYPE", "source")
    return env.get("DIB_INSTALLTYPE_" + element.replace("-", "_"), default)


def entries(element: Element, env: Mapping[str, str]) -> list[tuple[str, str, bool]]:
    """(package, phase dir, uninstall?) of one element, after the squash filters."""
    out: list[tuple[str, str, bool]] = []
    where = f"package-installs of element {element.name}"
    for pkg, raw in [item for data in load_files(element) for item in data.items()]:
        params: Mapping[str, Any] = raw or {}
        if not isinstance(params, Mapping):
            raise ConfigError(
                f"{where}: the value of {pkg} must be a mapping", "e.g. `gcc: {build-only: true}`"
            )
        phase = str(params.get("phase", "install.d"))
        if "build-only" in params:  # wins over uninstall, as in DIB's squash
            directions = [False, True]
        elif "uninstall" in params:
            directions = [True]
        else:
            directions = [False]
        want_type = params.get("installtype")
        if want_type is not None and want_type != installtype(element.name, env):
            continue
        py = str(params.get("dib_python_version", ""))
        if py and py != env.get("DIB_PYTHON_VERSION", ""):
            continue
        if not _arch_ok(str(pkg), params, env.get("ARCH", HOST_DEFAULT.dib), where):
            continue
        if not when(params.get("when"), env, where):
            continue
        out.extend((str(pkg), phase, d) for d in directions)
    return out


def load_pkg_map(element: Element) -> dict[str, Any] | None:
    if element.path is None or not (element.path / "pkg-map").is_file():
        return None
    f = element.path / "pkg-map"
    try:
        data = json.loads(f.read_text())
    except json.JSONDecodeError as e:
        raise ConfigError(f"{f}: {e}", "pkg-map files are JSON") from None
    return data if isinstance(data, dict) else None


def map_names(pkgmap: Mapping[str, Any] | None, names: Iterable[str], distro: str, release: str) -> list[str]:
    """pkg-map --missing-ok: default < family < distro < release; '' drops it; no map: passthrough."""
    names = list(names)
    if pkgmap is None:
        return names
    table: dict[str, str] = {}
    table.update(pkgmap.get("default", {}) or {})
    family = FAMILY.get(distro)
    if family:
        table.update((pkgmap.get("family", {}) or {}).get(family, {}) or {})
    table.update((pkgmap.get("distro", {}) or {}).get(distro, {}) or {})
    table.update(((pkgmap.get("release", {}) or {}).get(distro, {}) or {}).get(release, {}) or {})
    out: list[str] = []
    for n in names:
        mapped = table.get(n, n)
        out.extend(str(mapped).split())
    return out


def collect(elements: Iterable[Element], env: Mapping[str, str]) -> PackageLists:
    """All package lists of the build, mapped for DISTRO_NAME/DIB_RELEASE."""
    result = PackageLists()
    distro, release = env.get("DISTRO_NAME", "opensuse"), env.get("DIB_RELEASE", "")
    for el in elements:
        found = entries(el, env)
        if not found:
            continue
        pkgmap = load_pkg_map(el)
        for pkg, phase, uninstall in found:
            if phase not in HOOK_NAMES:
                log.warning(
                    "element %s: package %s is for phase %s, where DIB installs no packages; ignored",
                    el.name,
                    pkg,
                    phase,
                )
                continue
            for name in map_names(pkgmap, [pkg], distro, release):
                result.add(phase, uninstall, name, el.name)
    return result


def pkg_map_files(elements: Iterable[Element]) -> dict[str, Path]:
    """element -> pkg-map file, for /usr/share/pkg-map/<element> in the target (pkg-map's extra-data)."""
    return {
        el.name: el.path / "pkg-map"
        for el in elements
        if el.path is not None and (el.path / "pkg-map").is_file()
    }
