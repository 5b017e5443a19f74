"""`doctor`: can this host build? Root, tools, libguestfs, free space, inputs."""

from __future__ import annotations

import importlib
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from rich.table import Table

from ..cache.store import cache_root, disk_usage
from ..config import foreign
from ..config.resolve import Config
from ..inputs.appliance import check_launch
from ..log import console
from . import privileges
from .results import show

TOOLS = {
    "unshare": "util-linux: private mount and PID namespace for the build",
    "chroot": "coreutils: runs hooks inside the target",
    "mount": "util-linux: proc/sys/dev inside the namespace",
    "tar": "GNU tar: streams the root tree out of the qcow2",
    "zstd": "reads root trees an earlier version cached as .tar.zst",
    "git": "GitPython drives git for the sources",
    "openssl": "sles-ipa-tls generates certificates",
    "gpgv": "gpgv: checks each repository's signature against the pinned keys",
}
MODULES = {"guestfs": "python3-guestfs (venv needs --system-site-packages)", "pycdlib": "pip", "git": "GitPython",
           "zstandard": "pip"}
MIN_FREE_GIB = 8


@dataclass
class Check:
    name: str
    ok: bool
    detail: str
    fatal: bool = True


def free_gib(path: Path) -> float:
    p = path
    while not p.exists():
        p = p.parent
    return shutil.disk_usage(p).free / 2**30


def checks(cfg: Config, *, launch: bool = True) -> list[Check]:
    out = [Check("root", os.geteuid() == 0, "running as root" if os.geteuid() == 0 else "build needs root")]
    if os.geteuid() == 0:
        p = privileges.problem()
        out.append(Check("privileges", p is None, "namespaces and mounts allowed" if p is None else
                         f"{p}; {privileges.HINT}"))
    kvm = os.access("/dev/kvm", os.R_OK | os.W_OK)
    out.append(Check("/dev/kvm", kvm, "KVM for libguestfs and the boot test" if kvm else
                     "absent: libguestfs and the boot test run under TCG (slower)", fatal=False))
    tools = {**TOOLS, cfg.arch.qemu_binary: f"boot test (Debian package {cfg.arch.qemu_package})"}
    for tool, why in tools.items():
        path = shutil.which(tool)
        out.append(Check(f"tool {tool}", path is not None, path or f"missing: {why}", fatal=tool != "openssl"))
    for mod, why in MODULES.items():
        try:
            importlib.import_module(mod)
            out.append(Check(f"python {mod}", True, "importable"))
        except ImportError:
            out.append(Check(f"python {mod}", False, f"missing: {why}"))
    places: list[tuple[str, Path]] = [("workspace", Path(cfg.workspace)), ("cache", cache_root())]
    for label, place in places:
        gib = free_gib(place)
        out.append(Check(f"free space {label}", gib >= MIN_FREE_GIB, f"{gib:.0f} GiB free at {place}",
                         fatal=False))
    out.append(cache_size())
    r = foreign.runner(cfg.arch)
    out.append(Check(f"run {cfg.arch} programs", r.ok,
                     r.detail if r.ok else f"{r.detail}; {foreign.HINT.format(handler=cfg.arch.binfmt)}"))
    out.extend(input_checks(cfg))
    if launch:
        out.append(launch_check(cfg))
    return out


def cache_size() -> Check:
    """What the caches hold, in all and per kind (bounded by the cache_generations setting)."""
    root = cache_root()
    if not root.is_dir():
        return Check("cache size", True, f"empty ({root})", fatal=False)
    kinds = {p.name: disk_usage(p) for p in sorted(root.iterdir()) if p.is_dir() and not p.is_symlink()}
    trees = sum(1 for p in (root / "rootfs").glob("*") if p.is_dir()) if (root / "rootfs").is_dir() else 0
    parts = ", ".join(f"{k} {v / 2**30:.1f}" for k, v in kinds.items() if v >= 2**26)
    detail = f"{sum(kinds.values()) / 2**30:.1f} GiB in {root} ({parts or 'all small'}; {trees} root tree(s))"
    return Check("cache size", True, detail, fatal=False)


def input_checks(cfg: Config) -> list[Check]:
    out = []
    if cfg.base_tree is not None:
        out.append(Check("base tree", Path(cfg.base_tree).is_dir(), str(cfg.base_tree)))
    else:
        candidates = [Path(cfg.base_image)] if cfg.base_image else cfg.base_image_candidates()
        found = next((p for p in candidates if p.is_file() and os.access(p, os.R_OK)), None)
        out.append(Check("base image", found is not None,
                         str(found) if found else "none of: " + ", ".join(str(p) for p in candidates)))
    iso = cfg.iso_path
    readable = iso.is_file() and os.access(iso, os.R_OK)
    # with --repo URLs and no ISO given, the repositories alone may provide the packages
    optional = cfg.iso_optional
    out.append(Check("Media1 ISO", readable, str(iso) if readable or not optional else f"{iso} (optional with --repo)",
                     fatal=not optional))
    return out


def launch_check(cfg: Config) -> Check:
    try:
        return Check("libguestfs launch", True, check_launch(accel=cfg.accel))
    except Exception as e:  # doctor reports every failure instead of stopping at the first
        return Check("libguestfs launch", False, str(e).splitlines()[0] if str(e) else type(e).__name__)


def run(cfg: Config) -> int:
    results = checks(cfg)
    t = Table(title="sles-ipa-builder doctor")
    t.add_column("check")
    t.add_column("")
    t.add_column("detail")
    for c in results:
        mark = "[green]ok[/]" if c.ok else ("[red]FAIL[/]" if c.fatal else "[yellow]warn[/]")
        t.add_row(c.name, mark, c.detail)
    show(t)
    failed = [c for c in results if c.fatal and not c.ok]
    if failed:
        console.print(f"error: {len(failed)} check(s) failed: " + ", ".join(c.name for c in failed))
        return 1
    return 0
