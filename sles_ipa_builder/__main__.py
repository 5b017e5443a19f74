"""Command line: parse, resolve the configuration, run a verb, map errors to exit codes.

This is the one place that turns exceptions into exit codes: 0 ok, 1 build failed, 2 bad
configuration or input, 130 interrupted. A traceback is shown only with --debug.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from . import __version__, log, space
from .config.settings import BY_KEY, SETTINGS, Setting
from .errors import NO_SPACE_HINT, BuildError


def _add_setting_flag(p: argparse.ArgumentParser, s: Setting) -> None:
    """The flag of a setting row: bools get --x/--no-x, rows with `many` take several words."""
    dest = f"set_{s.key}"
    if s.kind == "bool":
        p.add_argument(s.option, dest=dest, action=argparse.BooleanOptionalAction, default=None, help=s.help)
    elif s.many:
        p.add_argument(s.option, dest=dest, nargs="+", metavar=s.metavar, help=s.help)
    elif s.kind == "choice":
        p.add_argument(s.option, dest=dest, choices=s.choices, help=s.help)
    else:
        p.add_argument(s.option, dest=dest, metavar=s.metavar, help=s.help)


def _common(p: argparse.ArgumentParser, *, settings: bool) -> None:
    p.add_argument("--config", type=Path, metavar="FILE", help="TOML configuration file")
    p.add_argument("--debug", action="store_true", help="debug output and tracebacks")
    p.add_argument("-v", "--verbose", action="count", default=0, help="more output")
    p.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors")
    if settings:
        for s in SETTINGS:
            if s.flag:
                _add_setting_flag(p, s)


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(
        prog="sles-ipa-builder",
        description="Build an Ironic Python Agent ramdisk from SLES media, without diskimage-builder.",
    )
    top.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = top.add_subparsers(dest="verb", required=True, metavar="VERB")

    b = sub.add_parser("build", help="run the whole pipeline: media -> root -> hooks -> ramdisk (-> boot test)")
    _common(b, settings=True)

    s = sub.add_parser("summary", help="show the resolved configuration, elements and hook order (no side effects)")
    _common(s, settings=True)
    s.add_argument("--json", action="store_true", help="machine-readable output")

    d = sub.add_parser("doctor", help="check the host: root, tools, libguestfs, free space, inputs")
    _common(d, settings=True)

    r = sub.add_parser("repos", help="list the repositories found on a Media1 ISO")
    _common(r, settings=False)
    r.add_argument("iso", type=Path, metavar="ISO")

    pk = sub.add_parser("pack", help="pack a root tree into a compressed initramfs")
    _common(pk, settings=False)
    pk.add_argument("tree", type=Path, metavar="TREE")
    pk.add_argument("-o", "--output", type=Path, required=True, metavar="FILE")
    pk.add_argument("--compress", default="zstd", help="zstd, gzip, xz, none or a command")
    pk.add_argument("--compress-level", type=int)
    pk.add_argument("--release", action="store_true", help="zstd level 19")
    pk.add_argument("--minimal-prune", action="store_true", help="skip most pruning")
    pk.add_argument("--source-date-epoch", type=int, help="clamp mtimes to this time")

    bt = sub.add_parser("boot-test", help="boot the built kernel and initramfs in QEMU and check the agent")
    _common(bt, settings=False)
    bt.add_argument("--output", type=Path, metavar="DIR", help="directory of the artifacts")
    bt.add_argument("--name", help="artifact base name")
    bt.add_argument("--kernel", type=Path, help="kernel (default <output>/<name>.kernel)")
    bt.add_argument("--initramfs", type=Path, help="initramfs (default <output>/<name>.initramfs)")
    bt.add_argument("--timeout", type=int, help="seconds to wait for the agent")
    bt.add_argument("--memory", type=int, help="VM memory in MiB")
    bt.add_argument("--append", default="", help="extra kernel arguments")
    bt.add_argument("--keep-console", type=Path, metavar="FILE", help="save the serial console here")
    bt.add_argument("--accel", choices=("auto", "kvm", "tcg"), help="acceleration (auto: KVM, else TCG)")
    _add_setting_flag(bt, BY_KEY["qemu_cpu"])
    bt.add_argument("--addon", type=Path, metavar="FILE", help="an add-on cpio given after the initramfs")
    bt.add_argument("--iso", nargs="?", const="", metavar="FILE",
                    help="boot the ISO as a CD instead (default <output>/<name>.iso); its boot menu gets the "
                         "agent's parameters in a copy")
    bt.add_argument("--firmware", choices=("bios", "uefi", "secure-boot"),
                    help="the firmware (default: UEFI for a release that boots UEFI, SLES 16, else the arch's; "
                         "secure-boot, with --iso: OVMF with Microsoft's keys enrolled, enforcing)")
    bt.add_argument("--metal3-dev-env", nargs="?", const="", metavar="DIR",
                    help="run metal3-dev-env's make / make test with the tar instead of QEMU")
    bt.add_argument("--ironic", action="store_true",
                    help="drive the ramdisk with a real OpenStack Ironic: inspect, clean, deploy (needs root)")
    bt.add_argument("--mode", choices=("bios", "uefi", "both"), default="both", help="--ironic: boot mode(s)")
    bt.add_argument("--deploy-image", type=Path, metavar="FILE",
                    help="--ironic: whole-disk image to deploy (raw or qcow2; default: a small generated one)")
    bt.add_argument("--ironic-version", metavar="X.Y.Z", help="--ironic: Ironic release from PyPI (default: "
                    "the one matching the agent's version)")
    bt.add_argument("--offline", action="store_true", help="--ironic: use the cached Ironic venv only")
    bt.add_argument("--unprovision", action="store_true",
                    help="--ironic: after active, undeploy with cleaning (boots the agent a second time)")
    bt.add_argument("--lookup-timeout", type=int, default=300, help="--ironic: seconds for the agent's first report")
    bt.add_argument("--report", type=Path, metavar="FILE.json",
                    help="--ironic: per-stage timings and checks (default: next to the initramfs)")
    bt.add_argument("--keep", type=Path, metavar="DIR", help="--ironic: keep consoles, Ironic's log and state here")

    sr = sub.add_parser("size-report", help="what takes the space in an initramfs")
    _common(sr, settings=False)
    sr.add_argument("initramfs", type=Path, metavar="INITRAMFS")
    sr.add_argument("--diff", type=Path, metavar="OTHER", help="compare with another initramfs")
    sr.add_argument("--top", type=int, default=25, help="rows per table")

    c = sub.add_parser("clean", help="remove the workspace (-f) and the caches (-ff)")
    _common(c, settings=True)
    c.add_argument("-f", "--force", action="count", default=0, help="-f: workspace; -ff: caches too")

    pb = sub.add_parser("publish", help="push the artifacts as an OCI artifact to a registry or an OCI layout")
    _common(pb, settings=False)
    pb.add_argument("destination", metavar="DEST", help="oci://REGISTRY[:PORT]/REPO:TAG or oci-layout:DIR[:TAG]")
    pb.add_argument("--output", type=Path, metavar="DIR", help="directory of the artifacts")
    pb.add_argument("--name", nargs="+", metavar="NAME",
                    help="artifact base name; several (e.g. ironic-python-agent ironic-python-agent_aarch64): one "
                         "manifest per architecture in one index")
    pb.add_argument("--replace", action="store_true",
                    help="drop the tag's manifests of other architectures (default: keep them)")
    pb.add_argument("--insecure", action="store_true", help="plain HTTP, or skip TLS verification")
    pb.add_argument("--authfile", type=Path, metavar="FILE",
                    help="container auth file (default: skopeo's: $REGISTRY_AUTH_FILE, "
                         "${XDG_RUNTIME_DIR}/containers/auth.json, ~/.docker/config.json)")

    ad = sub.add_parser("addon", help="write an add-on cpio (CA bundle, SSH keys, network data) for a built ramdisk")
    _common(ad, settings=False)
    ad.add_argument("--ca-bundle", type=Path, metavar="FILE", help="PEM CA certificates the agent will trust")
    ad.add_argument("--ssh-key", type=Path, metavar="FILE", help="OpenSSH public key(s) for the dev user")
    ad.add_argument("--ssh-user", metavar="NAME", help="user who gets the keys (default: the build's dev user)")
    ad.add_argument("--network-data", type=Path, metavar="FILE",
                    help="OpenStack network_data.json or an NMState YAML document: static network at boot")
    ad.add_argument("-o", "--output", type=Path, required=True, metavar="FILE", help="the add-on cpio to write")
    ad.add_argument("--initramfs", type=Path, metavar="FILE",
                    help="also write FILE+ADDON: the initramfs, aligned, then the add-on (one initrd for both)")

    f = sub.add_parser("fixtures", help="build or refresh the test media (not SUSE software)")
    _common(f, settings=False)
    f.add_argument("--force", action="store_true", help="rebuild even when cached")
    f.add_argument("--print-profile", action="store_true", help="print only the path of the build profile")
    f.add_argument("--arch", default="x86_64", metavar="ARCH",
                   help="the media's architecture: x86_64 (default) or aarch64 (arm64 packages, run under qemu-user)")
    f.add_argument("--release", default="15-SP7", metavar="RELEASE",
                   help="the SLES release the media are shaped like: 15-SP7 (default, from Debian 12) or 16.0 "
                        "(from Debian 13)")
    return top


def cli_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The settings the user gave as flags (raw values; config.py converts them)."""
    given: dict[str, Any] = {}
    for s in SETTINGS:
        value = getattr(args, f"set_{s.key}", None)
        if value is None:
            continue
        if s.kind == "pathlist" and isinstance(value, list):
            value = ":".join(value)
        given[s.key] = value
    return given


def _full_disk(e: OSError) -> BuildError:
    """A full disk (ENOSPC, EDQUOT) that no writer mapped (space.writing) is still one line."""
    path = e.filename or e.filename2
    if path is None:
        return BuildError(f"no space left on a filesystem the error does not name: {e.strerror}",
                          f"run with --debug to see where; {NO_SPACE_HINT}")
    return space.no_space(os.fsdecode(path), Path(os.fsdecode(path)).name, quota=bool(space.full(e)))


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    log.setup(verbosity=-1 if args.quiet else args.verbose, debug=args.debug)
    from .cli import commands

    try:
        try:
            return int(commands.dispatch(args, cli_settings(args)) or 0)
        except OSError as e:
            if space.full(e) is None:
                raise
            raise _full_disk(e) from e
    except BuildError as e:
        if args.debug:
            logging.getLogger(__name__).exception("failed")
        for line in e.tail:
            log.console.print(f"  | {line}", markup=False, highlight=False)
        # soft_wrap: one line each, however long its paths (a pipe's console would break it at 160 columns)
        log.console.print(f"error: {e.message}", markup=False, style="bold red", soft_wrap=True)
        if e.hint:
            log.console.print(f"hint: {e.hint}", markup=False, soft_wrap=True)
        return e.exit_code
    except KeyboardInterrupt:
        log.console.print("error: interrupted", style="bold red")
        return 130


if __name__ == "__main__":
    sys.exit(main())
