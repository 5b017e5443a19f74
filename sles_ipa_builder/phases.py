"""The phases of a build, where each runs, and the one plan both `build` and `summary` use.

Order and place follow DIB (seed-build-spec §2.4): root, extra-data, post-root, pre-finalise and
cleanup run on the host; pre-install, install, post-install and finalise run in the target. The
native steps that replace DIB's generic elements sit exactly where DIB's hooks sat
(01-install-bin, 10/01/00-package-installs, 10-install-static-files, 99/95-package-uninstalls...).
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import elements, hooks, namespace, packages, run
from .cache import cache_root
from .config import Config
from .context import BuildContext, make_context
from .elements import SourceRepo, sort_key, source_repos
from .errors import BuildError, CommandError, ConfigError
from .log import step
from .phase import Phase

log = logging.getLogger(__name__)


NativeFn = Callable[[BuildContext], None]


@dataclass(frozen=True)
class Step:
    phase: Phase
    name: str
    element: str
    native: NativeFn | None = None  # None: a hook script of the merged tree


# --- the plan ------------------------------------------------------------------------------------
def phase_env(ctx: BuildContext) -> dict[str, str]:
    """The hook environment after sourcing environment.d (what DIB's host hooks see), computed once.

    package-installs' `when`/installtype and source-repository lines are evaluated against it, as
    DIB evaluates them in extra-data.d scripts after environment.d.
    """
    if ctx.phase_env_cache is not None:
        return ctx.phase_env_cache
    with tempfile.TemporaryDirectory(prefix="sib-env-") as tmp:
        files = []
        for rel, _ in ctx.tree.env_files():
            if rel in ctx.tree.generated:
                f = Path(tmp) / rel.replace("/", "_")
                f.write_text(ctx.tree.generated[rel])
                files.append(str(f))
            else:
                files.append(str(ctx.tree.files[rel][1]))
        script = 'set -eu -o pipefail; for f in "$@"; do . "$f"; done; env -0'
        try:
            out = run.run(
                ["bash", "-c", script, "sib-env", *files], env=hooks.host_env(ctx), capture=True
            ).stdout
        except CommandError as e:
            raise ConfigError(
                "sourcing the elements' environment.d files failed",
                "fix the environment.d file named in the output above",
                tail=list(e.tail),
            ) from e
    env = dict(item.split("=", 1) for item in out.split("\0") if "=" in item)
    ctx.phase_env_cache = env
    return env


def repos(ctx: BuildContext) -> list[SourceRepo]:
    """The source-repository-* entries of the build (the sources step fetches them)."""
    if "source_repos" not in ctx.state:
        ctx.state["source_repos"] = source_repos(ctx.elements, phase_env(ctx))
    result: list[SourceRepo] = ctx.state["source_repos"]
    return result


def package_lists(ctx: BuildContext) -> packages.PackageLists:
    if "packages" not in ctx.state:
        ctx.state["packages"] = packages.collect(ctx.elements, phase_env(ctx))
    result: packages.PackageLists = ctx.state["packages"]
    return result


def _natives(ctx: BuildContext, phase: Phase) -> list[Step]:
    out: list[Step] = []
    if phase is Phase.EXTRA_DATA:
        if packages.pkg_map_files(ctx.elements):
            out.append(Step(phase, "10-create-pkg-map-dir", "pkg-map", hooks.pkg_map_dir))
        if repos(ctx):
            out.append(
                Step(phase, "98-source-repositories", "source-repositories", hooks.source_repositories)
            )
    if phase is Phase.PRE_INSTALL and any("/" not in r for r in ctx.tree.subtree("bin")):
        out.append(Step(phase, "01-install-bin", "install-bin", hooks.install_bin))
    if phase is Phase.INSTALL and ctx.tree.subtree("static"):
        out.append(Step(phase, "10-install-static-files", "install-static", hooks.install_static))
    if phase.dir in packages.HOOK_NAMES:
        lists = package_lists(ctx)
        for name, uninstall in zip(packages.HOOK_NAMES[phase.dir], (False, True), strict=True):
            if lists.get(phase.dir, uninstall):
                out.append(Step(phase, name, "package-installs", packages.package_step(phase.dir, uninstall)))
    for ph, name, element, fn in ctx.state.get("extra_steps", []):
        if ph == phase.value:
            out.append(Step(phase, name, element, fn))
    return out


def add_step(ctx: BuildContext, phase: str, name: str, element: str, fn: NativeFn) -> None:
    """Put a native step into a phase at the place its name sorts to (e.g. root, 10-sles-image)."""
    Phase(phase)
    ctx.state.setdefault("extra_steps", []).append((phase, name, element, fn))
    ctx.state.pop("plan", None)


def plan(ctx: BuildContext) -> dict[Phase, list[Step]]:
    """Per phase, the ordered steps (scripts and native steps): what runs, and what summary prints."""
    if "plan" in ctx.state:
        cached: dict[Phase, list[Step]] = ctx.state["plan"]
        return cached
    elements.apply_install_types(ctx.tree, phase_env(ctx))
    result: dict[Phase, list[Step]] = {}
    for phase in Phase:
        items = {s.name: Step(phase, s.name, s.element) for s in ctx.tree.scripts(phase.dir)}
        for n in _natives(ctx, phase):
            if n.name in items:
                raise ConfigError(
                    f"There is a duplicated hook in your elements: {phase.dir}/{n.name} is in both "
                    f"{items[n.name].element} and {n.element} (native)",
                    f"rename the script of {items[n.name].element}",
                )
            items[n.name] = n
        result[phase] = sorted(items.values(), key=lambda s: sort_key(s.name))
    ctx.state["plan"] = result
    return result


def describe(cfg: Config) -> dict[str, Any]:
    """What `summary` prints: elements with who pulled them in, and per phase the steps in order."""
    from .pipeline import register  # the build's native steps, so summary shows the build's plan

    ctx = register(make_context(cfg))
    return {
        "elements": [
            {"name": e.name, "by": e.pulled_by or "requested", "path": str(e.path) if e.path else "(native)"}
            for e in ctx.elements
        ],
        "phases": [
            {
                "name": p.value,
                "where": p.where,
                "steps": [{"script": s.name, "element": s.element} for s in items],
            }
            for p, items in plan(ctx).items()
        ],
        "source_repositories": [
            {
                "name": r.name,
                "type": r.type,
                "dest": r.dest,
                "location": r.location,
                "ref": r.ref,
                "element": r.element,
            }
            for r in repos(ctx)
        ],
    }


# --- running -------------------------------------------------------------------------------------
def _break(ctx: BuildContext, where: str, mounted: bool) -> None:
    if where not in ctx.breakpoints:
        return
    if mounted:
        hooks.shell(ctx, where, chroot=True)
    elif os.path.lexists(ctx.root / "bin/sh"):
        with hooks.target_mounts(ctx):
            hooks.shell(ctx, where, chroot=True)
    else:
        hooks.shell(ctx, where, chroot=False)


def run_phase(ctx: BuildContext, phase: Phase) -> None:
    todo = plan(ctx)[phase]
    wanted = {f"before-{phase.value}", f"after-{phase.value}"} & ctx.breakpoints
    if not todo and not wanted:
        log.debug("phase %s: nothing to run", phase.value)
        return
    with (
        step(f"phase {phase.value} ({phase.where})", ctx.timings),
        contextlib.ExitStack() as stack,
    ):
        if phase.chroot:
            stack.enter_context(hooks.target_mounts(ctx))
        _break(ctx, f"before-{phase.value}", phase.chroot)
        try:
            for s in todo:
                if s.native is not None:
                    hooks.run_native(ctx, phase.value, s.name, s.element, s.native)
                else:
                    hooks.run_script(ctx, phase.value, s.name, s.element, phase.chroot)
        except BuildError:
            _break(ctx, "after-error", phase.chroot)
            raise
        _break(ctx, f"after-{phase.value}", phase.chroot)


def run_phases(ctx: BuildContext, which: Iterable[Phase] = tuple(Phase)) -> None:
    """Run phases in order. resolv.conf is swapped for the host's after root and put back after cleanup."""
    plan(ctx)  # the install-types links are part of the hooks dir written next
    hooks.materialise(ctx)
    ctx.root.mkdir(parents=True, exist_ok=True)
    for phase in which:
        if phase is not Phase.ROOT:
            hooks.resolv_conf_in(ctx)
        run_phase(ctx, phase)
        if phase is Phase.ROOT:
            _check_root(ctx)
        if phase is Phase.CLEANUP:
            hooks.resolv_conf_out(ctx)


def _check_root(ctx: BuildContext) -> None:
    left = {p.name for p in ctx.root.iterdir()} - {"lost+found", "tmp"}
    if not left:
        raise BuildError(
            "Failed to deploy the root element: the root tree is empty after root.d",
            "give --base-tree, or an operating-system element whose root.d fills $TARGET_ROOT",
        )


# --- workspace -----------------------------------------------------------------------------------
def _refuse(path: Path, why: str) -> None:
    raise ConfigError(
        f"refusing to empty {path}: {why}", "set IPA_BUILD_WORKSPACE/--workspace to a build directory"
    )


def prepare_workspace(ctx: BuildContext) -> None:
    """Empty the build dir, as the seed empties its workspace; never the outputs or the caches."""
    bd = Path(os.path.abspath(ctx.build_dir))
    home = Path(os.path.expanduser("~")).resolve()
    real = bd.resolve()
    out = Path(os.path.abspath(ctx.outputs)).resolve()
    if real == Path("/") or len(real.parts) < 2:
        _refuse(bd, "it is /")
    if real == home or real in home.parents:
        _refuse(bd, "it is your home directory or above it")
    if real == out or real in out.parents:
        _refuse(bd, f"the output directory {out} is inside it")
    if real == cache_root() or real in cache_root().parents:
        _refuse(bd, "the caches are inside it")
    _remove(bd)
    bd.mkdir(parents=True)


def _remove(path: Path) -> None:
    if not os.path.lexists(path):
        return
    namespace.umount_all_under(path)
    namespace.kill_rooted_in(path)
    run.run(["rm", "-rf", "--one-file-system", path])


def finish_workspace(ctx: BuildContext) -> None:
    """Remove the build dir, after success or failure, unless --keep-workspace."""
    if ctx.cfg.keep_workspace:
        log.info("build tree kept in %s", ctx.build_dir)
        return
    _remove(ctx.build_dir)


def copy_base_tree(ctx: BuildContext) -> None:
    """--base-tree: the root starts as a copy of an extracted tree (hard links are kept by cp -a)."""
    assert ctx.cfg.base_tree is not None
    run.run(["cp", "-a", "--reflink=auto", f"{ctx.cfg.base_tree}/.", ctx.root])


def build_tree_only(ctx: BuildContext) -> None:
    """The engine alone: workspace, (base tree), all phases; the outputs are the lead's steps."""
    prepare_workspace(ctx)
    try:
        with ctx.stack:
            if ctx.cfg.base_tree:
                add_step(ctx, "root", "00-base-tree", "(base-tree)", copy_base_tree)
            run_phases(ctx)
    finally:
        finish_workspace(ctx)
