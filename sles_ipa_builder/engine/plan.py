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

import hashlib
import logging
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from .. import __version__, run
from ..cache import layers as checkpoints
from ..cache import roottree as layers
from ..cache.store import cache_dir
from ..config.resolve import Config
from ..delivery.artifacts import OUTPUTS, Output, Staging, close, commit, open_staging
from ..errors import CommandError, ConfigError
from ..inputs import media, repos, zypper
from ..steps import dib as dibsteps
from ..steps import plugins, slim, wheels
from ..steps import sles as slessteps
from . import elements, packages
from .elements import sort_key
from .hookenv import hook_env
from .stages import Final, Phase
from .state import NativeFn, Plan, Reads, Runtime, Step
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
    reads: Reads
    when: Callable[[Plan], bool] = lambda plan: True
    owned: str = ""  # "present": only with our element of that name; "ours": unless a user's element replaces it


def _has_bin(plan: Plan) -> bool:
    return any("/" not in r for r in plan.tree.subtree("bin"))


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _files(plan: Plan, sub: str) -> list[tuple[str, str]]:
    """An element subtree (bin/, static/) by content: a file by its sha256, a link by its target."""
    return sorted((rel, _sha(path.read_bytes()) if path.is_file() else os.readlink(path) if path.is_symlink()
                   else str(path)) for rel, (_, path) in plan.tree.subtree(sub).items())


def _prune(*keys: str) -> Reads:
    words = {"cut_modules": "kernel module classes (cut_modules), their firmware",
             "keep_paths": "keep_paths", "drop_packages": "package groups (drop_packages)"}
    return Reads("; ".join(words[k] for k in keys),
                 lambda plan: [plan.cfg.minimal_prune, *(sorted(plan.cfg.value(k)) for k in keys)])


_REPO_ALIASES = Reads("the Media1 ISO, --repo URLs", lambda plan: [r.alias for r in repos.parse(list(plan.cfg.repos))])

NATIVES: tuple[Native, ...] = (
    Native(Phase.ROOT, "00-base-tree", BUILDER, slessteps.root_step, Reads("--base-tree"),
           lambda plan: plan.cfg.base_tree is not None),
    Native(Phase.ROOT, "10-sles-image", "sles", slessteps.root_step,
           Reads("the base qcow2, through the root-tree cache"), lambda plan: plan.cfg.base_tree is None, owned="ours"),
    Native(Phase.EXTRA_DATA, "05-media-repositories", "sles", slessteps.media_step, _REPO_ALIASES, owned="ours"),
    Native(Phase.EXTRA_DATA, "10-create-pkg-map-dir", "pkg-map", dibsteps.pkg_map_dir,
           Reads("the elements' pkg-map files", lambda plan: sorted(
               (e, _sha(f.read_bytes())) for e, f in packages.pkg_map_files(plan.elements).items())),
           lambda plan: bool(packages.pkg_map_files(plan.elements))),
    Native(Phase.EXTRA_DATA, "98-source-repositories", "source-repositories", dibsteps.source_repositories,
           Reads("source-repository-* lines, DIB_REPO* overrides",  # the commits: in the venv layer's key
                 lambda plan: [(r.name, r.type, r.dest) for r in plan.source_repos]),
           lambda plan: bool(plan.source_repos)),
    Native(Phase.EXTRA_DATA, "99-check-ipa-python", "sles-ipa-install", slessteps.python_check_step,
           Reads("IPA's requires-python, the service pack's python", lambda plan: plan.cfg.python), owned="present"),
    Native(Phase.PRE_INSTALL, "00-zypper-refresh", "sles", slessteps.refresh_step,
           Reads("the repositories' metadata"), owned="ours"),  # keyed by the media identity and repomd digests
    Native(Phase.PRE_INSTALL, "01-install-bin", "install-bin", dibsteps.install_bin,
           Reads("the elements' bin/", lambda plan: _files(plan, "bin")), _has_bin),
    Native(Phase.INSTALL, "10-install-static-files", "install-static", dibsteps.install_static,
           Reads("the elements' static/", lambda plan: _files(plan, "static")),
           lambda plan: bool(plan.tree.subtree("static"))),
    Native(Phase.INSTALL, "65-ipa-plugins", "sles-ipa-install", plugins.install_step,
           Reads("the IPA plugins' files (ipa_plugins)", lambda plan: plugins.digest(plan.cfg)), plugins.wanted,
           owned="present"),
    Native(Phase.INSTALL, "70-strip-agent-venv", "sles-ipa-install", slim.strip_step,
           Reads("the venv's ELF files; strip in the target (binutils, build-only)",
                 _prune("keep_paths").value), owned="present"),
    Native(Phase.INSTALL, "75-empty-icu-data", "sles-ipa-ramdisk-base", slim.icu_step,
           Reads("libicudata in the tree, keep_paths; gcc in the target (build-only)", _prune("keep_paths").value),
           owned="present"),
    Native(Phase.POST_INSTALL, "99-pip-wheelhouse", "sles-ipa-install", wheels.save_step,
           Reads("the IPA venv (for later --offline builds)"), lambda plan: not plan.cfg.offline, owned="ours"),
    Native(Phase.FINALISE, "60-cut-kernel-modules", "sles-ipa-ramdisk-base", slessteps.cut_step,
           _prune("cut_modules"), owned="ours"),
    Native(Phase.FINALISE, "70-check-agent-tools", "sles-ipa-install", slessteps.tools_step,
           Reads("the tools the agent's sources execute, on the target's PATH"), owned="present"),
    Native(Phase.CLEANUP, "01-copy-manifests-dir", "manifests", dibsteps.copy_manifests,
           Reads("the DIB_* environment", lambda plan: [sorted(f"{k}={v}" for k, v in plan.env.items()
                                                              if k.startswith("DIB_")), plan.cfg.element_list])),
    Native(Phase.CLEANUP, "05-remove-media-repositories", "sles", slessteps.unconfigure_step,
           replace(_REPO_ALIASES, words="the repositories the build added"), owned="ours"),
    Native(Phase.CLEANUP, "90-drop-packages", "sles-ipa-ramdisk-base", slessteps.drop_step,
           Reads("package groups (drop_packages): zypper, rpm and their databases, perl; the libraries only they "
                 "linked", _prune("drop_packages", "keep_paths").value), owned="ours"),
)


def _package_list(phase_dir: str, uninstall: bool) -> Reads:
    return Reads("package-installs.yaml/json", lambda plan: repr(plan.packages.get(phase_dir, uninstall)))


def _package_natives(plan: Plan) -> list[Native]:
    """package-installs: one install and one uninstall step in each phase DIB installs packages in."""
    out = []
    for phase_dir, names in packages.HOOK_NAMES.items():
        for name, uninstall in zip(names, (False, True), strict=True):
            if plan.packages.get(phase_dir, uninstall):
                out.append(Native(Phase(phase_dir.removesuffix(".d")), name, "package-installs",
                                  dibsteps.package_step(phase_dir, uninstall), _package_list(phase_dir, uninstall)))
    return out


def _applies(native: Native, plan: Plan) -> bool:
    if native.owned and not _ours(plan, native.element, need_present=native.owned == "present"):
        return False
    return native.when(plan)


def _ours(plan: Plan, name: str, *, need_present: bool) -> bool:
    """Whether the builder's steps for element `name` belong in this build: not when a user's element
    of that name replaced ours, and (need_present) not when the build has no such element."""
    found = next((e for e in plan.elements if e.name == name), None)
    return _builtin(found) if found is not None else not need_present


def _builtin(el: elements.Element) -> bool:
    return el.path is None or el.path.resolve().parent == elements.BUILTIN_DIR.resolve()


def _shadows_builtin(el: elements.Element) -> bool:
    """A user's element with the name of one of ours: it replaces ours completely."""
    return not _builtin(el) and (elements.BUILTIN_DIR / el.name).is_dir()


def _overrides(plan: Plan) -> list[str]:
    """One line per built-in element a user's element replaced, with the native steps that went with it."""
    out = []
    for el in plan.elements:
        if not _shadows_builtin(el):
            continue
        natives = [f"{n.phase.dir}/{n.name}" for n in NATIVES if n.element == el.name and n.owned]
        if el.name == "sles-ipa-ramdisk-base":
            natives.append("the outputs")
        gone = f", with its native steps {', '.join(natives)}" if natives else ""
        out.append(f"element {el.name}: the built-in one replaced by {el.path}{gone}")
    return out


def _phase_steps(plan: Plan, phase: Phase, natives: list[Native], replaced: list[str]) -> list[Step]:
    items = {s.name: Step(phase, s.name, s.element) for s in plan.tree.scripts(phase.dir)}
    for n in natives:
        if n.phase is not phase:
            continue
        if n.name in items:
            replaced.append(f"{phase.dir}/{n.name} ({n.element}) by {items[n.name].element}'s script")
            log.info("native step %s/%s replaced by the script of %s", phase.dir, n.name, items[n.name].element)
            continue
        items[n.name] = Step(phase, n.name, n.element, n.run, n.reads)
    return sorted(items.values(), key=lambda s: sort_key(s.name))


def _output_step(output: Output) -> NativeFn:
    def write(plan: Plan, rt: Runtime) -> None:
        output.write(staging(plan, rt))

    return write


def staging(plan: Plan, rt: Runtime) -> Staging:
    """The build's Staging, opened by the first output step (its temp dir goes with rt.stack)."""
    if rt.staging is None:
        rt.manifest["timings"] = rt.timings.as_dict()
        cfg = plan.cfg
        rt.staging = open_staging(plan.root, plan.outputs, cfg.name, cfg.compression, arch=cfg.arch,
                                   manifest=rt.manifest, prune=cfg.prune,
                                   source_date_epoch=cfg.source_date_epoch, size_limit_mb=cfg.size_limit_mb,
                                   sign_key=cfg.sign_key, boot_source=rt.boot_source,
                                   iso_kernel_args=cfg.iso_kernel_args)
        rt.stack.callback(close, rt.staging)
    return rt.staging


def _commit(plan: Plan, rt: Runtime) -> None:
    rt.artifacts = commit(staging(plan, rt))


def _output_steps(plan: Plan) -> list[Step]:
    owner = "sles-ipa-ramdisk-base"  # the seed's cleanup.d/99-ramdisk-create made the ramdisk
    if not _ours(plan, owner, need_present=False):
        return []
    steps = [Step(Final.OUTPUTS, f"{plan.cfg.name}.{o.suffix}", owner, _output_step(o), Reads(o.what)) for o in OUTPUTS]
    return [*steps, Step(Final.OUTPUTS, "commit", owner, _commit, Reads("renames the outputs into place, sha256 last"))]


# --- making it -------------------------------------------------------------------------------------
def make(cfg: Config) -> Plan:
    """The one place a plan is made (`build` and `summary` both call it): settle the configuration,
    resolve the elements, merge their hooks, read their package lists and sources, list the steps.
    Writes nothing; contacts only the --repo URLs (rpm-md metadata) and reads the ISO's directory."""
    cfg = settle(cfg)
    path = elements.search_path(cfg.elements_path)
    resolved = elements.resolve(cfg.element_list, path)
    env = hook_env(cfg, path, resolved)
    tree = elements.merge(resolved, env)
    mounts, extra = _caches(cfg)
    env.update(extra)
    plan = Plan(cfg=cfg, search_path=path, elements=resolved, tree=tree, env=env, target_mounts=mounts)
    phase_env = sourced_env(plan)
    elements.apply_install_types(tree, phase_env)
    plan = replace(plan, phase_env=phase_env, source_repos=elements.source_repos(resolved, phase_env),
                   packages=packages.collect(resolved, phase_env))
    replaced: list[str] = []
    planned = steps(plan, replaced)
    return replace(plan, steps=planned, replaced=[*_overrides(plan), *replaced])


def _caches(cfg: Config) -> tuple[list[tuple[Path, str]], dict[str, str]]:
    """What every hook gets besides the element variables: caches mounted in, build facts."""
    mounts = [*zypper.cache_mounts(), (cache_dir("pip"), PIP_CACHE)]
    env = {"PIP_CACHE_DIR": PIP_CACHE}
    wheel_mounts, wheel_env = wheels.configure(cfg)
    mounts += wheel_mounts
    env.update(wheel_env)
    env["SIB_BUILDER_VERSION"] = __version__
    if cfg.source_date_epoch is not None:
        env["SOURCE_DATE_EPOCH"] = str(cfg.source_date_epoch)
    return mounts, env


def settle(cfg: Config) -> Config:
    """Every --repo must answer with rpm-md metadata (else exit 2, naming it), and a release
    whose python depends on the repositories (SP4: python311 from the update channel) gets it decided."""
    user = repos.parse(list(cfg.repos))
    creds = repos.load_credentials(list(cfg.repo_credentials))
    provided: dict[str, set[str]] = {}
    for r in user:  # offline, remote repositories are not contacted: zypper uses their cached metadata
        remote = r.parts.scheme not in ("file", "dir")
        provided[r.shown] = (repos.cached_packages(r, cache_dir("zypper")) if cfg.offline and remote
                             else repos.probe(r, creds, cfg.ca_bundle))
        log.info("repository %s: %d packages", r.shown, len(provided[r.shown]))
    release = cfg.sles
    if cfg.sles_python is not None or not release.may_change_python:
        return cfg
    if not cfg.iso_optional and cfg.iso_path.is_file():
        provided[f"the Media1 ISO {cfg.iso_path.name}"] = repos.media_packages(media.open_media(cfg.iso_path))
    where = next((name for name, names in provided.items() if release.python_if in names), None)
    python = release.python_for(lambda pkg: where is not None)
    source = (f"{release.python_if} in {where}" if where
              else f"{release.service_pack}: no repository provides {release.python_if}")
    log.info("IPA venv python: %s (%s)", python, source)
    return replace(cfg, sles_python=python, sources={**cfg.sources, "sles_python": source})


def sourced_env(plan: Plan) -> dict[str, str]:
    """The hook environment after sourcing environment.d (what DIB's host hooks see).

    package-installs' `when`/installtype and source-repository lines are evaluated against it, as
    DIB evaluates them in extra-data.d scripts after environment.d.
    """
    with tempfile.TemporaryDirectory(prefix="sib-env-") as tmp:
        files = []
        for rel, _ in plan.tree.env_files():
            if rel in plan.tree.generated:
                f = Path(tmp) / rel.replace("/", "_")
                f.write_text(plan.tree.generated[rel])
                files.append(str(f))
            else:
                files.append(str(plan.tree.files[rel][1]))
        script = 'set -eu -o pipefail; for f in "$@"; do . "$f"; done; env -0'
        try:
            out = run.run(["bash", "-c", script, "sib-env", *files], env=host_env(plan, plan.env), capture=True).stdout
        except CommandError as e:
            raise ConfigError("sourcing the elements' environment.d files failed",
                              "fix the environment.d file named in the output above", tail=list(e.tail)) from e
    return dict(item.split("=", 1) for item in out.split("\0") if "=" in item)


def steps(plan: Plan, replaced: list[str]) -> list[Step]:
    """The steps, in run order, for a plan whose elements, package lists and sources are known; the
    native steps a user's script replaced are added to `replaced`."""
    natives = [n for n in (*NATIVES, *_package_natives(plan)) if _applies(n, plan)]
    return [s for phase in Phase for s in _phase_steps(plan, phase, natives, replaced)] + _output_steps(plan)


def describe(plan: Plan) -> dict[str, Any]:
    """What `summary` prints: elements and who pulled them in, every step in run order, the sources."""
    cfg = plan.cfg
    return {
        "release": {**cfg.sles.facts(), "python": cfg.python, "why": cfg.release_source},
        "elements": [
            {"name": e.name, "by": e.pulled_by or "requested", "path": str(e.path) if e.path else "(native)",
             "builtin": _builtin(e), "replaces_builtin": _shadows_builtin(e)}
            for e in plan.elements
        ],
        "steps": [s.describe() for s in plan.steps],
        "replaced": list(plan.replaced),
        "layers": ([layers.describe(plan.cfg), *checkpoints.describe(plan)]
                   if plan.needs("10-sles-image") or plan.needs("00-base-tree") else []),
        "source_repositories": [
            {"name": r.name, "type": r.type, "dest": r.dest, "location": r.location, "ref": r.ref,
             "element": r.element}
            for r in plan.source_repos
        ],
    }
