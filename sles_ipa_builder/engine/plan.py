"""The plan: every step of a build, made in one place, in run order. `build` runs it, `summary` prints it.

A step is a hook script of the merged element tree or a native step: Python that stands where DIB's
script stood (DIB's generic elements, the builder's steps for the sles element, the artifacts).
Rules, in the order they apply:

- A native step stands for an element. DIB's generic elements (package-installs, install-bin, ...) are
  always native, as the first round made them. The builder's own steps for sles (the root from the
  qcow2, the Media1 repositories) and for sles-ipa-ramdisk-base (the outputs) run in every build
  unless a user's element of that name replaces ours: then it replaces ours completely, native
  steps included. The IPA python check and the agent tools check run only with our sles-ipa-install.
- A user's script with the name of a native step replaces the native step (summary says so).
- Scripts and native steps of a phase run in DIB's order (elements.sort_key).
- After the phases, the outputs: one step per artifact, then `commit`, which renames them into place.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import __version__, run
from ..cache import layers as checkpoints
from ..cache import roottree as layers
from ..cache.store import cache_dir
from ..config.resolve import Config
from ..delivery.artifacts import OUTPUTS, Output, Staging, close, commit, open_staging
from ..errors import CommandError, ConfigError
from ..inputs import zypper
from ..steps import dib as dibsteps
from ..steps import sles as slessteps
from ..steps import slim, wheels
from . import elements, packages
from .elements import sort_key
from .runtime import BuildContext, make_context
from .stages import Final, NativeFn, Phase, Step
from .target import host_env

log = logging.getLogger(__name__)

BUILDER = "(builder)"
PIP_CACHE = "/tmp/sib-pip-cache"  # pip's wheel cache, mounted from the host while hooks run (pruned)


@dataclass(frozen=True)
class Native:
    phase: Phase
    name: str
    element: str  # the element it stands for
    run: NativeFn
    reads: str
    when: Callable[[BuildContext], bool] = lambda ctx: True
    owned: str = ""  # "present": only with our element of that name; "ours": unless a user's element replaces it


def _has_bin(ctx: BuildContext) -> bool:
    return any("/" not in r for r in ctx.tree.subtree("bin"))


NATIVES: tuple[Native, ...] = (
    Native(Phase.ROOT, "00-base-tree", BUILDER, slessteps.root_step, "--base-tree",
           lambda ctx: ctx.cfg.base_tree is not None),
    Native(Phase.ROOT, "10-sles-image", "sles", slessteps.root_step, "the base qcow2, through the root-tree cache",
           lambda ctx: ctx.cfg.base_tree is None, owned="ours"),
    Native(Phase.EXTRA_DATA, "05-media-repositories", "sles", slessteps.media_step, "the Media1 ISO, --repo URLs",
           owned="ours"),
    Native(Phase.EXTRA_DATA, "10-create-pkg-map-dir", "pkg-map", dibsteps.pkg_map_dir, "the elements' pkg-map files",
           lambda ctx: bool(packages.pkg_map_files(ctx.elements))),
    Native(Phase.EXTRA_DATA, "98-source-repositories", "source-repositories", dibsteps.source_repositories,
           "source-repository-* lines, DIB_REPO* overrides", lambda ctx: bool(ctx.source_repos)),
    Native(Phase.EXTRA_DATA, "99-check-ipa-python", "sles-ipa-install", slessteps.python_check_step,
           "IPA's requires-python, the service pack's python", owned="present"),
    Native(Phase.PRE_INSTALL, "00-zypper-refresh", "sles", slessteps.refresh_step, "the repositories' metadata",
           owned="ours"),
    Native(Phase.PRE_INSTALL, "01-install-bin", "install-bin", dibsteps.install_bin, "the elements' bin/", _has_bin),
    Native(Phase.INSTALL, "10-install-static-files", "install-static", dibsteps.install_static,
           "the elements' static/", lambda ctx: bool(ctx.tree.subtree("static"))),
    Native(Phase.INSTALL, "70-strip-agent-venv", "sles-ipa-install", slim.strip_step,
           "the venv's ELF files; strip in the target (binutils, build-only)", owned="present"),
    Native(Phase.INSTALL, "75-empty-icu-data", "sles-ipa-ramdisk-base", slim.icu_step,
           "libicudata in the tree, keep_paths; gcc in the target (build-only)", owned="present"),
    Native(Phase.POST_INSTALL, "99-pip-wheelhouse", "sles-ipa-install", wheels.save_step,
           "the IPA venv (for later --offline builds)", lambda ctx: not ctx.cfg.offline, owned="ours"),
    Native(Phase.FINALISE, "60-cut-kernel-modules", "sles-ipa-ramdisk-base", slessteps.cut_step,
           "kernel module classes (cut_modules), their firmware", owned="ours"),
    Native(Phase.FINALISE, "70-check-agent-tools", "sles-ipa-install", slessteps.tools_step,
           "the tools the agent's sources execute, on the target's PATH", owned="present"),
    Native(Phase.CLEANUP, "01-copy-manifests-dir", "manifests", dibsteps.copy_manifests, "the DIB_* environment"),
    Native(Phase.CLEANUP, "05-remove-media-repositories", "sles", slessteps.unconfigure_step,
           "the repositories the build added", owned="ours"),
    Native(Phase.CLEANUP, "90-drop-packages", "sles-ipa-ramdisk-base", slessteps.drop_step,
           "package groups (drop_packages): zypper, rpm and their databases, perl; the libraries only they linked",
           owned="ours"),
)


def _package_natives(ctx: BuildContext) -> list[Native]:
    """package-installs: one install and one uninstall step in each phase DIB installs packages in."""
    out = []
    for phase_dir, names in packages.HOOK_NAMES.items():
        for name, uninstall in zip(names, (False, True), strict=True):
            if ctx.packages.get(phase_dir, uninstall):
                out.append(Native(Phase(phase_dir.removesuffix(".d")), name, "package-installs",
                                  dibsteps.package_step(phase_dir, uninstall), "package-installs.yaml/json"))
    return out


def _applies(native: Native, ctx: BuildContext) -> bool:
    if native.owned and not _ours(ctx, native.element, need_present=native.owned == "present"):
        return False
    return native.when(ctx)


def _ours(ctx: BuildContext, name: str, *, need_present: bool) -> bool:
    """Whether the builder's steps for element `name` belong in this build: not when a user's element
    of that name replaced ours, and (need_present) not when the build has no such element."""
    found = next((e for e in ctx.elements if e.name == name), None)
    return _builtin(found) if found is not None else not need_present


def _builtin(el: elements.Element) -> bool:
    return el.path is None or el.path.resolve().parent == elements.BUILTIN_DIR.resolve()


def _shadows_builtin(el: elements.Element) -> bool:
    """A user's element with the name of one of ours: it replaces ours completely."""
    return not _builtin(el) and (elements.BUILTIN_DIR / el.name).is_dir()


def _overrides(ctx: BuildContext) -> list[str]:
    """One line per built-in element a user's element replaced, with the native steps that went with it."""
    out = []
    for el in ctx.elements:
        if not _shadows_builtin(el):
            continue
        natives = [f"{n.phase.dir}/{n.name}" for n in NATIVES if n.element == el.name and n.owned]
        if el.name == "sles-ipa-ramdisk-base":
            natives.append("the outputs")
        gone = f", with its native steps {', '.join(natives)}" if natives else ""
        out.append(f"element {el.name}: the built-in one replaced by {el.path}{gone}")
    return out


def _phase_steps(ctx: BuildContext, phase: Phase, natives: list[Native]) -> list[Step]:
    items = {s.name: Step(phase, s.name, s.element) for s in ctx.tree.scripts(phase.dir)}
    for n in natives:
        if n.phase is not phase:
            continue
        if n.name in items:
            ctx.replaced.append(f"{phase.dir}/{n.name} ({n.element}) by {items[n.name].element}'s script")
            log.info("native step %s/%s replaced by the script of %s", phase.dir, n.name, items[n.name].element)
            continue
        items[n.name] = Step(phase, n.name, n.element, n.run, n.reads)
    return sorted(items.values(), key=lambda s: sort_key(s.name))


def _output_step(output: Output) -> NativeFn:
    def write(ctx: BuildContext) -> None:
        output.write(staging(ctx))

    return write


def staging(ctx: BuildContext) -> Staging:
    """The build's Staging, opened by the first output step (its temp dir goes with ctx.stack)."""
    if ctx.staging is None:
        ctx.manifest["timings"] = ctx.timings.as_dict()
        cfg = ctx.cfg
        ctx.staging = open_staging(ctx.root, ctx.outputs, cfg.name, cfg.compression, arch=cfg.arch,
                                   manifest=ctx.manifest, prune=cfg.prune,
                                   source_date_epoch=cfg.source_date_epoch, size_limit_mb=cfg.size_limit_mb,
                                   sign_key=cfg.sign_key)
        ctx.stack.callback(close, ctx.staging)
    return ctx.staging


def _commit(ctx: BuildContext) -> None:
    ctx.artifacts = commit(staging(ctx))


def _output_steps(ctx: BuildContext) -> list[Step]:
    owner = "sles-ipa-ramdisk-base"  # the seed's cleanup.d/99-ramdisk-create made the ramdisk
    if not _ours(ctx, owner, need_present=False):
        return []
    steps = [Step(Final.OUTPUTS, f"{ctx.cfg.name}.{o.suffix}", owner, _output_step(o), o.what) for o in OUTPUTS]
    return [*steps, Step(Final.OUTPUTS, "commit", owner, _commit, "renames the outputs into place, sha256 last")]


# --- making it -------------------------------------------------------------------------------------
def sourced_env(ctx: BuildContext) -> dict[str, str]:
    """The hook environment after sourcing environment.d (what DIB's host hooks see).

    package-installs' `when`/installtype and source-repository lines are evaluated against it, as
    DIB evaluates them in extra-data.d scripts after environment.d.
    """
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
            out = run.run(["bash", "-c", script, "sib-env", *files], env=host_env(ctx), capture=True).stdout
        except CommandError as e:
            raise ConfigError("sourcing the elements' environment.d files failed",
                              "fix the environment.d file named in the output above", tail=list(e.tail)) from e
    return dict(item.split("=", 1) for item in out.split("\0") if "=" in item)


def _environment(ctx: BuildContext) -> None:
    """What every hook gets besides the element variables: caches mounted in, build facts."""
    ctx.target_mounts.extend(zypper.cache_mounts())
    ctx.target_mounts.append((cache_dir("pip"), PIP_CACHE))
    ctx.env["PIP_CACHE_DIR"] = PIP_CACHE
    wheels.configure(ctx)
    ctx.env.update(SIB_BUILDER_VERSION=__version__)
    if ctx.cfg.source_date_epoch is not None:
        ctx.env["SOURCE_DATE_EPOCH"] = str(ctx.cfg.source_date_epoch)


def make(cfg: Config, *, breakpoints: set[str] | None = None) -> BuildContext:
    """Resolve the elements, merge their hooks and make the plan. Touches nothing on disk: summary uses it."""
    ctx = make_context(cfg, breakpoints=breakpoints)
    _environment(ctx)
    ctx.phase_env = sourced_env(ctx)
    elements.apply_install_types(ctx.tree, ctx.phase_env)
    ctx.source_repos = elements.source_repos(ctx.elements, ctx.phase_env)
    ctx.packages = packages.collect(ctx.elements, ctx.phase_env)
    ctx.steps = steps(ctx)
    ctx.replaced[:0] = _overrides(ctx)
    return ctx


def steps(ctx: BuildContext) -> list[Step]:
    """The steps, in run order, for a context whose elements, package lists and sources are known."""
    natives = [n for n in (*NATIVES, *_package_natives(ctx)) if _applies(n, ctx)]
    return [s for phase in Phase for s in _phase_steps(ctx, phase, natives)] + _output_steps(ctx)


def describe(ctx: BuildContext) -> dict[str, Any]:
    """What `summary` prints: elements and who pulled them in, every step in run order, the sources."""
    return {
        "elements": [
            {"name": e.name, "by": e.pulled_by or "requested", "path": str(e.path) if e.path else "(native)",
             "builtin": _builtin(e), "replaces_builtin": _shadows_builtin(e)}
            for e in ctx.elements
        ],
        "steps": [s.describe() for s in ctx.steps],
        "replaced": list(ctx.replaced),
        "layers": ([layers.describe(ctx.cfg), *checkpoints.describe(ctx)]
                   if needs(ctx, "10-sles-image") or needs(ctx, "00-base-tree") else []),
        "source_repositories": [
            {"name": r.name, "type": r.type, "dest": r.dest, "location": r.location, "ref": r.ref,
             "element": r.element}
            for r in ctx.source_repos
        ],
    }


def needs(ctx: BuildContext, name: str) -> bool:
    """Whether a native step of that name is in the plan (the input checks ask: qcow2? ISO?)."""
    return any(s.name == name and s.run is not None for s in ctx.steps)
