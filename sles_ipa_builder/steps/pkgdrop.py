"""Packages that leave the tree before packing: the package managers with their databases, and perl
when nothing left runs it; then the shared libraries only they linked.

It runs in cleanup, on the host, after every chroot phase: no hook after it can call zypper or perl.
A package's files are the ones its database lists: rpm (SUSE), or dpkg for a Debian-shaped base
(the test media's). Before the rpm database goes, its package list is written into the tree
(inventory.LISTED), where the SBOM, `.packages` and size-report read it.

A tool the agent runs never leaves: a group that would take one stays whole, and says why.
"""

from __future__ import annotations

import fnmatch
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from ..engine.paths import in_root
from ..packing import inventory
from ..packing.cuts import DROP_GROUPS, Cut, kept, size_of
from . import agenttools, elfdeps

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Group:
    packages: tuple[str, ...]  # package names (fnmatch), rpm's or dpkg's
    state: tuple[str, ...]  # databases, caches and configuration, relative to the root
    interpreter: str = ""  # scripts with this in their #! line leave too (unless the agent runs one)


GROUPS: dict[str, Group] = {
    # GnuPG goes with them: in a ramdisk only they run it, to check repository and package signatures.
    "package-manager": Group(
        ("zypper", "zypper-*", "libzypp*", "zypp-*", "rpm", "rpm-*", "rpm2cpio", "librpm*", "libsolv-tools*",
         "apt", "apt-*", "libapt-pkg*", "dpkg", "debconf", "debconf-*",
         "gpg", "gpg2", "gpgv", "gpgv2", "gpg-agent", "gpg-wks-*", "gpgsm", "gpgconf", "gnupg", "gnupg2",
         "gnupg-*", "dirmngr", "pinentry", "pinentry-*"),
        # SLES 16 keeps zypp.conf's vendor default in /usr/etc
        ("usr/lib/sysimage/rpm", "var/lib/rpm", "var/lib/zypp", "var/cache/zypp", "etc/zypp", "usr/etc/zypp",
         "var/lib/dpkg", "var/lib/apt", "var/cache/apt", "var/cache/debconf", "etc/apt", "etc/dpkg")),
    "perl": Group(("perl", "perl-*", "libperl*"), (), interpreter="perl"),
}  # fmt: skip
assert tuple(GROUPS) == DROP_GROUPS
# Never removed as "only the dropped packages linked it": the C and C++ runtimes, and what programs
# load by name at run time (NSS and PAM modules, libudev through pyudev's ctypes).
KEEP_LIBS = ("ld-linux*", "libc.so*", "libm.so*", "libdl.so*", "libpthread*", "librt.so*", "libresolv*",
             "libnss_*", "libpam*", "libgcc_s*", "libstdc++*", "libudev*", "libsystemd*", "libcrypt*")  # fmt: skip
BIN_DIRS = agenttools.PATH_DIRS


def dpkg_files(root: Path) -> dict[str, list[str]]:
    """package -> its files (absolute paths as listed), from /var/lib/dpkg/info/*.list."""
    out: dict[str, list[str]] = {}
    for lst in sorted((root / "var/lib/dpkg/info").glob("*.list")):
        name = lst.name.removesuffix(".list").split(":", 1)[0]
        out.setdefault(name, []).extend(x for x in lst.read_text(errors="replace").splitlines() if x.startswith("/"))
    return out


def rpm_files(root: Path) -> dict[str, list[str]]:
    """package -> its files, from the tree's rpm database (empty without one)."""
    if inventory.find_rpmdb(root) is None:
        return {}
    out: dict[str, list[str]] = {}
    for name, path in inventory.rpm_pairs(root, "[%{=NAME} %{FILENAMES}\\n]"):
        if path.startswith("/"):
            out.setdefault(name, []).append(path)
    return out


def _owned(owners: dict[str, list[str]], patterns: tuple[str, ...]) -> tuple[list[str], list[str]]:
    names = sorted(n for n in owners if any(fnmatch.fnmatchcase(n, p) for p in patterns))
    return names, sorted({f for n in names for f in owners[n]})


def _scripts_of(root: Path, interpreter: str) -> list[str]:
    out = []
    for d in BIN_DIRS:
        base = root / d
        if not base.is_dir() or base.is_symlink():
            continue
        for p in sorted(base.iterdir()):
            if p.is_file() and not p.is_symlink():
                with p.open("rb") as f:
                    first = f.readline(200)
                if first.startswith(b"#!") and interpreter.encode() in first:
                    out.append(f"/{d}/{p.name}")
    return out


@dataclass
class Plan:
    """What one group removes: whole packages, their state, scripts of their interpreter."""

    group: str
    packages: list[str]
    files: list[str]  # absolute, as the databases list them (directories among them)
    state: list[str]
    kept_because: str = ""


def plan_group(root: Path, name: str, owners: dict[str, list[str]], agent_tools: set[str]) -> Plan:
    g = GROUPS[name]
    packages, files = _owned(owners, g.packages)
    scripts = _scripts_of(root, g.interpreter) if g.interpreter else []
    plan = Plan(name, packages, sorted(set(files) | set(scripts)), [s for s in g.state if (root / s).exists()])
    listed = set(plan.files)
    for tool in sorted(agent_tools):
        for d in BIN_DIRS:
            rel = elfdeps.real(root, f"{d}/{tool}")
            if rel is not None and ("/" + rel in listed or f"/{d}/{tool}" in listed):
                plan.kept_because = f"the agent runs {tool} (/{rel})"
                return plan
    return plan


def _remove(root: Path, paths: list[str], keep: tuple[str, ...]) -> tuple[int, int]:
    """Remove files and links (then directories left empty) of `paths`; (files, bytes)."""
    files = size = 0
    dirs = []
    for p in paths:
        rel = p.strip("/")
        full = in_root(root, rel)
        if not rel or kept(rel, keep) or not (full.exists() or full.is_symlink()):
            continue
        if full.is_dir():  # a directory, or a link to one (/lib -> usr/lib): shared, never unlinked
            if not full.is_symlink():
                dirs.append(full)
            continue
        if full.is_file() and not full.is_symlink():
            size += full.stat().st_size
        full.unlink()
        files += 1
    for d in sorted(dirs, key=lambda x: len(x.parts), reverse=True):
        if d.is_dir() and not any(d.iterdir()):
            d.rmdir()
    return files, size


def _remove_state(root: Path, paths: list[str], keep: tuple[str, ...]) -> tuple[int, int]:
    files = size = 0
    for rel in paths:
        if kept(rel, keep):
            continue
        full = in_root(root, rel)
        if not (full.exists() or full.is_symlink()):  # a package's own directory, gone with it
            continue
        n, b = size_of([full])
        files, size = files + n, size + b
        shutil.rmtree(full) if full.is_dir() and not full.is_symlink() else full.unlink()
    return files, size


def orphans(graph: elfdeps.Graph, gone: set[str]) -> list[str]:
    """Libraries the removed files linked that nothing left links, outside KEEP_LIBS (relative paths)."""
    kept = graph.closure(e for e in graph.edges if e not in gone and not graph.is_library(e))
    linked = graph.closure(gone) - gone
    return sorted(lib for lib in linked - kept
                  if not any(fnmatch.fnmatchcase(os.path.basename(lib), k) for k in KEEP_LIBS))


def drop(root: Path, groups: tuple[str, ...], keep: tuple[str, ...] = ()) -> list[Cut]:
    """Remove the groups from the tree; one Cut per group and one for the libraries left unlinked."""
    listed = inventory.save_list(root)  # the rpm list, before its database can go
    owners = {**dpkg_files(root), **rpm_files(root)} if listed else dpkg_files(root)
    package = agenttools.agent_package(root)
    tools = set(agenttools.CORE) | set(agenttools.called_tools(package) if package else ())
    plans = [plan_group(root, g, owners, tools) for g in groups]
    for p in plans:
        if p.group == "package-manager" and not listed:
            p.kept_because = "its rpm database could not be read, and the package list would be lost"
    for p in plans:
        p.files = [f for f in p.files if not kept(f.strip("/"), keep)]
    graph = elfdeps.Graph(root)
    gone: set[str] = set()
    for p in plans:
        if not p.kept_because:
            gone |= {rel for f in p.files if (rel := elfdeps.real(root, f.strip("/"))) is not None}
    libs = orphans(graph, gone)
    cuts = []
    for p in plans:
        if p.kept_because:
            log.info("%s stays: %s", p.group, p.kept_because)
            cuts.append(Cut(f"packages: {p.group} (kept: {p.kept_because})"))
            continue
        files, size = _remove(root, p.files, keep)
        n, b = _remove_state(root, p.state, keep)
        cuts.append(Cut(f"packages: {p.group} ({', '.join(p.packages) or 'no package'})", files + n, size + b))
    cuts.append(Cut("shared libraries only the dropped packages linked", *_remove(root, ["/" + x for x in libs], keep)))
    _dangling_links(root, graph.dirs)
    _dangling_units(root, {os.path.basename(f) for p in plans if not p.kept_because for f in p.files
                           if "/systemd/" in f})
    return cuts


def _dangling_units(root: Path, units: set[str]) -> None:
    """The enablement links in /etc/systemd (*.wants, *.requires, aliases) of unit files that left:
    systemctl made them, no package database lists them."""
    base = root / "etc/systemd"
    if not units or not base.is_dir():
        return
    for d, _, names in os.walk(base):
        for n in names:
            p = Path(d, n)
            if n in units and p.is_symlink() and not in_root(root, str(p.relative_to(root)), follow_last=True).exists():
                p.unlink()
        if Path(d) != base and Path(d).suffix in (".wants", ".requires") and not any(Path(d).iterdir()):
            Path(d).rmdir()


def _dangling_links(root: Path, lib_dirs: list[str]) -> None:
    """Library links in the loader's directories whose target left (libfoo.so.1 -> libfoo.so.1.2.3)."""
    for d in set(lib_dirs):
        base = root / d
        if base.is_dir() and not base.is_symlink():
            for p in base.iterdir():
                if p.is_symlink() and ".so" in p.name and elfdeps.real(root, str(p.relative_to(root))) is None:
                    p.unlink()
