"""DIB's generic elements, done natively: install-bin, install-static, pkg-map, source-repositories
and manifests. (package-installs is engine/packages.py.) Each function is a step of the plan (engine/plan.py)."""

from __future__ import annotations

import fnmatch
import logging
import os
import re
import shlex
from pathlib import Path

from .. import run
from ..cache import layers as checkpoints
from ..engine.packages import pkg_map_files
from ..engine.paths import in_root
from ..engine.state import NativeFn, Plan, Runtime
from ..engine.target import chroot_env, run_zypper
from ..inputs import sources, zypper

log = logging.getLogger(__name__)

CVS_EXCLUDE = (
    "RCS",
    "SCCS",
    "CVS",
    "CVS.adm",
    "RCSLOG",
    "cvslog.*",
    "tags",
    "TAGS",
    ".make.state",
    ".nse_depinfo",
    "*~",
    "#*",
    ".#*",
    ",*",
    "_$*",
    "*$",
    "*.old",
    "*.bak",
    "*.BAK",
    "*.orig",
    "*.rej",
    ".del-*",
    "*.a",
    "*.olb",
    "*.o",
    "*.obj",
    "*.so",
    "*.exe",
    "*.Z",
    "*.elc",
    "*.ln",
    "core",
    ".svn",
    ".git",
    ".hg",
    ".bzr",
)


def _replace(dst: Path) -> None:
    if dst.is_symlink() or (dst.exists() and not dst.is_dir()):
        dst.unlink()


def install_bin(plan: Plan, rt: Runtime) -> None:
    """install-bin: `install -m 0755 -o root -g root <hooks>/bin/* /usr/local/bin`."""
    dest = in_root(plan.root, "usr/local/bin/x").parent
    dest.mkdir(parents=True, exist_ok=True)
    for rel, (element, src) in sorted(plan.tree.subtree("bin").items()):
        if "/" in rel or not src.is_file():
            continue
        out = dest / rel
        _replace(out)
        out.write_bytes(src.read_bytes())
        os.chown(out, 0, 0)
        os.chmod(out, 0o755)
        log.debug("install-bin: %s (%s)", out, element)


def _cvs_excluded(name: str) -> bool:
    return any(fnmatch.fnmatchcase(name, pat) for pat in CVS_EXCLUDE)


def install_static(plan: Plan, rt: Runtime) -> None:
    """install-static: `rsync -lCr <hooks>/static/ /`: symlinks kept, files root-owned, modes kept."""
    entries = plan.tree.subtree("static")
    for rel in sorted(entries, key=lambda r: (r.count("/"), r)):
        if any(_cvs_excluded(part) for part in rel.split("/")):
            continue
        element, src = entries[rel]
        dst = in_root(plan.root, rel)
        for parent in reversed(Path(rel).parents[:-1]):
            d = in_root(plan.root, str(parent), follow_last=True)
            if not d.is_dir():
                _replace(d)
                d.mkdir(mode=0o755)
        _replace(dst)
        if src.is_symlink():
            os.symlink(os.readlink(src), dst)
            os.lchown(dst, 0, 0)
        else:
            dst.write_bytes(src.read_bytes())
            os.chown(dst, 0, 0)
            os.chmod(dst, src.stat().st_mode & 0o7755)
        log.debug("install-static: /%s (%s)", rel, element)


def pkg_map_dir(plan: Plan, rt: Runtime) -> None:
    """pkg-map's extra-data: each element's pkg-map into /usr/share/pkg-map/<element>."""
    dest = in_root(plan.root, "usr/share/pkg-map/x").parent
    dest.mkdir(parents=True, exist_ok=True)
    for element, f in pkg_map_files(plan.elements).items():
        (dest / element).write_bytes(f.read_bytes())


def source_repositories(plan: Plan, rt: Runtime) -> None:
    """source-repositories: every git source into the target, its commit into the manifest."""
    rt.manifest["sources"] = sources.fetch_sources(plan.source_repos, plan.root, offline=plan.cfg.offline,
                                                    image_name=plan.cfg.name,
                                                    resolved=checkpoints.of(rt).commits)


def copy_manifests(plan: Plan, rt: Runtime) -> None:
    """manifests' cleanup.d/01-copy-manifests-dir: arguments and environment, never a secret, root-only."""
    d = plan.root / "etc/dib-manifests"
    d.mkdir(parents=True, exist_ok=True)
    secret = set(plan.cfg.secrets())
    # Not the builder's own locations (its python, its cache): they differ between two installs of the
    # builder (a host and its container image) and would make the same inputs give different ramdisks.
    env = {k: v for k, v in sorted(rt.env.items()) if k.startswith("DIB_") and v not in secret
           and "PASSWORD" not in k and k not in BUILDER_PLACES}
    (d / "dib_environment").write_text("".join(f"export {k}={shlex.quote(v)}\n" for k, v in env.items()))
    (d / "dib_arguments").write_text(" ".join(plan.cfg.element_list) + "\n")
    for f in d.iterdir():
        os.chown(f, 0, 0)
        f.chmod(0o600)


BUILDER_PLACES = ("DIB_PYTHON_EXEC", "DIB_IMAGE_CACHE")


# --- package-installs ---------------------------------------------------------------------------
def installed(plan: Plan, rt: Runtime, names: list[str]) -> set[str]:
    """Which of `names` the target's rpm database has (by name or by what a package provides)."""
    res = run.run(run.chroot_argv(plan.root, ["rpm", "-q", "--whatprovides", "--qf", "", *names]),
                  env=chroot_env(plan, rt.env), check=False, capture=True)
    missing = set(re.findall(r"no package provides (\S+)", res.stdout + res.stderr))
    return set(names) - missing


def package_step(phase_dir: str, uninstall: bool) -> NativeFn:
    """The native step that replaces <phase>.d/NN-package-(un)installs: one zypper call."""

    def run_packages(plan: Plan, rt: Runtime) -> None:
        names = plan.packages.get(phase_dir, uninstall)
        if uninstall:  # zypper fails on a name that is not installed: removing it is already done
            absent = set(names) - installed(plan, rt, names)
            if absent:
                log.info("not installed, nothing to remove: %s", " ".join(sorted(absent)))
            names = [n for n in names if n not in absent]
            if not names:
                return
        log.info(
            "%s %d package(s): %s", "removing" if uninstall else "installing", len(names), " ".join(names)
        )
        run_zypper(plan, rt, zypper.install_argv(names, uninstall=uninstall))
        rt.manifest.setdefault("packages", {})[f"{phase_dir}:{'uninstall' if uninstall else 'install'}"] = (
            names
        )

    return run_packages
