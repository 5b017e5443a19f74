"""The verbs of the command line, each a small function from parsed arguments to an exit code."""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import re
import shutil
from collections.abc import Callable
from itertools import groupby
from pathlib import Path
from typing import Any

from rich.table import Table

from ..config import releases
from ..config import resolve as config_mod
from ..config.arch import Arch
from ..errors import ConfigError, InputError
from . import privileges
from .results import show

log = logging.getLogger(__name__)


def resolve(args: argparse.Namespace, cli: dict[str, Any]) -> config_mod.Config:
    return config_mod.resolve(cli, config_file=getattr(args, "config", None))


# --- build -----------------------------------------------------------------------------------------
def per_arch(args: argparse.Namespace, cli: dict[str, Any]) -> list[config_mod.Config]:
    """One configuration per architecture of `--arch x86_64,aarch64` (one when a single one is named).
    Each arch keeps its own metal3 name: a name given explicitly gets the arch's suffix, as the default
    does (ironic-python-agent_aarch64), and a report file gets the arch before its extension."""
    words = [w for w in re.split(r"[,\s]+", str(cli.get("arch") or "")) if w]
    if len(words) < 2:
        return [resolve(args, cli)]
    arches = [Arch.parse(w) for w in words]
    if len({a.suse for a in arches}) < len(arches):
        raise ConfigError(f"--arch names an architecture twice: {cli['arch']}", "name each once")
    out = []
    for arch in arches:
        cfg = resolve(args, {**cli, "arch": arch.suse})
        if cfg.sources["name"] != "default" and not cfg.name.endswith(arch.metal3_suffix):
            cfg = dataclasses.replace(cfg, name=cfg.name + arch.metal3_suffix)
        if cfg.report is not None:
            cfg = dataclasses.replace(cfg, report=cfg.report.with_name(f"{cfg.report.stem}.{arch.suse}"
                                                                          f"{cfg.report.suffix}"))
        out.append(cfg)
    return out


def build(args: argparse.Namespace, cli: dict[str, Any]) -> int:
    cfgs = per_arch(args, cli)  # every bad value stops here, before any work
    if os.geteuid() != 0:
        raise ConfigError("build needs root (chroot, mounts, device nodes)", "run it as root or with sudo")
    privileges.require()  # in a container without --privileged: the missing capability, in one line
    from .. import pipeline
    from ..config import foreign
    from ..engine import namespace

    for cfg in cfgs:
        foreign.require(cfg.arch)  # an aarch64 target on an x86_64 host: qemu-user, checked before any work

    namespace.enter()
    for cfg in cfgs:  # one after the other: the caches the arches share (git, pip's downloads) are warm
        pipeline.build(cfg)
    return 0


# --- summary ---------------------------------------------------------------------------------------
def summary(args: argparse.Namespace, cli: dict[str, Any]) -> int:
    from ..engine import plan

    made = plan.make(resolve(args, cli))
    cfg, info = made.cfg, plan.describe(made)  # the settled configuration, as `build` uses it
    settings = {
        key: {"value": value, "source": cfg.sources[key]} for key, value in cfg.shown_settings().items()
    }
    if args.json:
        print(json.dumps({"settings": settings, **info}, indent=2))
        return 0
    tables: list[Table] = []
    t = Table(title="Configuration")
    for col in ("setting", "value", "source"):
        t.add_column(col)
    for key, row in settings.items():
        t.add_row(key, _text(row["value"]), row["source"])
    tables.append(t)
    r = Table(title="Release")
    for col in info["release"]:
        r.add_column(col)
    r.add_row(*info["release"].values())
    tables.append(r)
    e = Table(title="Elements")
    e.add_column("element")
    e.add_column("pulled in by")
    e.add_column("path")
    for el in info["elements"]:
        e.add_row(el["name"], el["by"], el["path"] + (" (replaces the built-in)" if el["replaces_builtin"] else ""))
    tables.append(e)
    for stage, steps in groupby(info["steps"], key=lambda s: (s["stage"], s["where"])):
        p = Table(title=f"{stage[0]} ({stage[1]})")
        for col in ("step", "element", "kind"):
            p.add_column(col)
        for step in steps:
            p.add_row(step["name"], step["element"], step["kind"])
        tables.append(p)
    if info["layers"]:
        c = Table(title="Cache layers")
        for col in ("layer", "key", "state"):
            c.add_column(col)
        for layer in info["layers"]:
            c.add_row(layer["layer"], layer["key"], layer["state"])
        tables.append(c)
    if info["replaced"]:
        r = Table(title="Replaced by your elements and scripts")
        r.add_column("replaced")
        for line in info["replaced"]:
            r.add_row(line)
        tables.append(r)
    show(*tables)
    return 0


def _text(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, list):
        return " ".join(str(v) for v in value) or "-"
    return str(value)


# --- small verbs -----------------------------------------------------------------------------------
def doctor(args: argparse.Namespace, cli: dict[str, Any]) -> int:
    from . import doctor as doctor_mod

    return doctor_mod.run(resolve(args, cli))


def repos(args: argparse.Namespace, cli: dict[str, Any]) -> int:
    from ..inputs import media

    t = Table(title=str(args.iso))
    rows = media.repo_rows(args.iso)
    for col in rows[0].keys() if rows else ("alias",):
        t.add_column(col)
    for row in rows:
        t.add_row(*(str(v) for v in row.values()))
    show(t)
    return 0


def pack(args: argparse.Namespace, cli: dict[str, Any]) -> int:
    from ..packing import compress, ramdisk
    from ..packing.cuts import PruneSettings

    if not args.tree.is_dir():
        raise InputError(f"{args.tree} is not a directory", "give the root tree to pack")
    level = args.compress_level if args.compress_level is not None else (19 if args.release else None)
    comp = compress.Compression.parse(args.compress, level)
    result = ramdisk.pack(
        args.tree, args.output, comp, prune=PruneSettings(args.minimal_prune), source_date_epoch=args.source_date_epoch
    )
    show(f"{args.output}: {result.size / 2**20:.1f} MiB, sha256 {result.sha256}, "
                  f"{result.entries} entries, {result.seconds:.1f}s")
    return 0


def boot_test(args: argparse.Namespace, cli: dict[str, Any]) -> int:
    from ..engine import namespace
    from ..verify import boottest

    namespace.install_signal_handlers()  # SIGTERM unwinds too, so the finally that stops qemu runs
    cfg = resolve(args, cli)  # the one setting flag boot-test has: --qemu-cpu
    out = args.output or cfg.output_dir
    name = args.name or cfg.name
    cfg = built_release(cfg, Path(out) / f"{name}.manifest.json")
    if args.metal3_dev_env is not None:
        from ..verify import metal3

        metal3.run_from_config(cfg, Path(out) / cfg.tar_name, location=args.metal3_dev_env or None)
        return 0
    if args.iso is not None:
        if args.ironic:
            raise ConfigError("boot-test --ironic boots the kernel and initramfs, not --iso", "drop one of them")
        iso = Path(args.iso) if args.iso else Path(out) / f"{name}.iso"
        result = boottest.boot_test(
            None, None, iso=iso, firmware=args.firmware or "", timeout=args.timeout or cfg.boot_timeout,
            memory_mb=args.memory or cfg.boot_memory, append=args.append, keep_console=args.keep_console,
            accel=args.accel or cfg.accel, arch=cfg.arch, cpu=cfg.qemu_cpu, release=cfg.sles)
        show(result.summary())
        return 0
    if args.firmware == "secure-boot":
        raise ConfigError("--firmware secure-boot goes with --iso (the signed chain boots from it)",
                          "add --iso, or use --firmware uefi")
    kernel = args.kernel or Path(out) / f"{name}.kernel"
    initramfs = args.initramfs or Path(out) / f"{name}.initramfs"
    for p in (kernel, initramfs):
        if not p.is_file():
            raise InputError(f"{p} not found", "build first, or give --output/--name or --kernel/--initramfs")
    if args.ironic:
        return _lifecycle(args, cfg, kernel, initramfs, Path(out) / f"{name}.packages",
                          args.report or initramfs.parent / "lifecycle-report.json")
    result = boottest.boot_test(
        kernel, initramfs,
        timeout=args.timeout or cfg.boot_timeout, memory_mb=args.memory or cfg.boot_memory,
        append=args.append, keep_console=args.keep_console, accel=args.accel or cfg.accel, addon=args.addon,
        arch=cfg.arch, cpu=cfg.qemu_cpu, release=cfg.sles,
        firmware=args.firmware or boottest.release_firmware(cfg.sles),
    )
    show(result.summary())
    return 0


def _lifecycle(args: argparse.Namespace, cfg: config_mod.Config, kernel: Path, initramfs: Path,
               packages: Path, report: Path) -> int:  # fmt: skip
    from ..engine import namespace
    from ..verify import boottest, ironic, lifecycle

    if os.geteuid() != 0:
        raise ConfigError("boot-test --ironic needs root (a private network namespace)", "run it as root")
    modes = lifecycle.MODES if args.mode == "both" else (args.mode,)
    if cfg.arch.boot_uefi and args.mode == "both":
        modes = ("uefi",)  # an aarch64 VM (virt) has no BIOS
    plan = lifecycle.prepare(
        kernel, initramfs, modes=modes, deploy_image=args.deploy_image, ironic_version=args.ironic_version,
        ipa_version=_ipa_version(packages), offline=args.offline,
        accels=tuple(boottest.accel_plan(args.accel or cfg.accel, cfg.arch)), memory_mb=args.memory or cfg.boot_memory,
        append=args.append, lookup_timeout=args.lookup_timeout, keep_dir=args.keep, unprovision=args.unprovision,
        arch=cfg.arch, cpu=cfg.qemu_cpu, release=cfg.sles,
    )  # fmt: skip
    namespace.enter(net=True)  # from here on, every process dies with us and every port is private
    namespace.private_loopback(ironic.GUEST_HOST)
    for result in lifecycle.run(plan, report=report):
        show(f"lifecycle passed with Ironic {plan.ironic_version}: {result.line()}")
    show(f"timings and checks in {report}")
    return 0


def _ipa_version(packages: Path) -> str | None:
    """The agent's version from <name>.packages (the build lists the IPA venv's Python packages)."""
    if not packages.is_file():
        return None
    for line in packages.read_text(errors="replace").splitlines():
        low = line.strip().lower().replace("_", "-")
        if low.startswith("ironic-python-agent"):
            rest = low.removeprefix("ironic-python-agent").lstrip("=@ \t")
            return rest.split()[0] if rest else None
    return None


def size_report(args: argparse.Namespace, cli: dict[str, Any]) -> int:
    from ..packing import sizereport

    for p in (args.initramfs, args.diff):
        if p is not None and not p.is_file():
            raise InputError(f"{p} not found", "give the path of an initramfs")
    show(*sizereport.report_tables(args.initramfs, diff=args.diff, top=args.top))
    return 0


def clean(args: argparse.Namespace, cli: dict[str, Any]) -> int:
    from ..cache import store as cache

    cfg = resolve(args, cli)
    if args.force < 1:
        show(f"would remove {cfg.build_dir} (-f) and the build caches in {cache.cache_root()} (-ff); "
             "nothing removed")
        return 0
    removed = []
    if cfg.build_dir.exists():
        shutil.rmtree(cfg.build_dir)
        removed.append(cfg.build_dir)
    if args.force >= 2:
        removed += cache.clean(keep=("fixtures",))  # the test media is not a build cache: `fixtures --force`
    show(*(f"removed {path}" for path in removed) if removed else ["nothing to remove"])
    return 0


def publish(args: argparse.Namespace, cli: dict[str, Any]) -> int:
    from ..delivery import publish as publish_mod

    cfg = resolve(args, {})
    out = Path(args.output or cfg.output_dir)
    sets = [publish_mod.Platform(out, name, _built_arch(out / f"{name}.manifest.json", cfg.arch))
            for name in args.name or [cfg.name]]
    done = publish_mod.publish(sets, args.destination, insecure=args.insecure or cfg.publish_insecure,
                               authfile=args.authfile, replace=args.replace or cfg.publish_replace)
    show(publish_mod.result_line(done))
    return 0


def addon(args: argparse.Namespace, cli: dict[str, Any]) -> int:
    from ..delivery import addon as addon_mod

    if args.initramfs is not None and not args.initramfs.is_file():
        raise InputError(f"{args.initramfs} not found", "give the built <name>.initramfs")
    files = addon_mod.make_addon(args.output, ca_bundle=args.ca_bundle, ssh_key=args.ssh_key,
                                 network_data=args.network_data, ssh_user=args.ssh_user)
    show(f"{args.output}: {args.output.stat().st_size} bytes, " + ", ".join(f"{n} ({s} B)" for n, s in files.items()))
    if args.initramfs is not None:
        combined = args.output.with_name(f"{args.initramfs.name}+{args.output.name}")
        addon_mod.combine(args.initramfs, args.output, combined)
        show(f"{combined}: {args.initramfs.name} and the add-on, for a boot loader that takes one initrd")
    return 0


def built_release(cfg: config_mod.Config, manifest: Path) -> config_mod.Config:
    """With no release named (or found in images_dir), the release the artifacts were built from, as
    their manifest says: a SLES 16 ramdisk boots with 16's firmware and CPU, and a CPU below what it
    needs is refused."""
    if not cfg.release_defaulted:
        return cfg  # named, or found in images_dir
    try:
        settings = json.loads(manifest.read_text())["settings"]
        built = releases.find(str(settings["sles_release"]), str(settings.get("service_pack") or "SP7"))
    except (OSError, ValueError, KeyError, TypeError, ConfigError):
        return cfg
    if built == cfg.sles:
        return cfg
    cpu = built.qemu_cpu if cfg.sources.get("qemu_cpu", "default").startswith("default") else cfg.qemu_cpu
    sources = {**cfg.sources, "sles_release": f"{manifest.name}"}
    return dataclasses.replace(cfg, sles_release=built.prefix, service_pack=built.service_pack or cfg.service_pack,
                               qemu_cpu=cpu, sources=sources)


def _built_arch(manifest: Path, default: Arch) -> Arch:
    """The architecture the artifacts were built for (their manifest says), else the configured one."""
    try:
        doc = json.loads(manifest.read_text())
        return Arch.parse(str(doc.get("ramdisk", {}).get("arch") or doc["settings"]["arch"]))
    except (OSError, ValueError, KeyError, TypeError, AttributeError, ConfigError):
        return default


def built_testmedia() -> Any:
    """The test media if it is already built (benches use it but never build it), else None."""
    from ..fixtures import testmedia as tm

    return tm.ensure(log_progress=False) if (tm.cache_base() / tm.cache_key() / tm.DONE).is_file() else None


def fixtures(args: argparse.Namespace, cli: dict[str, Any]) -> int:
    from ..config import foreign

    arch = Arch.parse(args.arch)
    foreign.require(arch)  # another arch's media: debootstrap's second stage and dpkg run under qemu-user
    from ..fixtures import flavour, testmedia

    media = testmedia.ensure(force=args.force, arch=arch, flavour=flavour.parse(args.release))
    if args.print_profile:
        print(media.profile)
        return 0
    t = Table(title=f"Test media shaped like SLES {media.release} (built from Debian packages; not SUSE software)")
    t.add_column("what")
    t.add_column("path")
    for key in ("base_ext4", "base_btrfs", "iso", "images_dir", "root_tree", "profile"):
        if getattr(media, key).exists():
            t.add_row(key, str(getattr(media, key)))
    for name, url in media.repos.items():
        t.add_row(f"git {name}", url)
    show(t)
    return 0


VERBS: dict[str, Callable[[argparse.Namespace, dict[str, Any]], int]] = {
    "build": build,
    "summary": summary,
    "doctor": doctor,
    "repos": repos,
    "pack": pack,
    "boot-test": boot_test,
    "size-report": size_report,
    "clean": clean,
    "fixtures": fixtures,
    "publish": publish,
    "addon": addon,
}


def dispatch(args: argparse.Namespace, cli: dict[str, Any]) -> int:
    return VERBS[args.verb](args, cli)
