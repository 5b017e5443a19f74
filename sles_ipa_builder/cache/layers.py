"""Cache layers after the root tree: the build's tree kept at three points, each under the hash of
everything that made it, so a build starts from the deepest one whose inputs did not change.

    packages  after install.d/01-package-installs: the root tree, the media, the package lists, and
              every step up to there (its script, or for a native step what it reads)
    venv      after install.d/60-ironic-python-agent-ramdisk-install: the layer below, the source
              commits (IPA, ironic-lib, the requirements' constraints), the steps in between
    tree      after the cleanup phase, what is packed: the layer below and every remaining step

The environment the hooks see is in the keys too, each variable in the first layer holding a script
that names it (a variable no script names may be read by any program: it goes in the first layer).
Variables that only say where things are (the build's paths, the host's PATH, pip's offline index)
are left out, so two workspaces and an --offline build share layers. The keys are computed in
keys.py; this module finds, restores and keeps the layers.

A layer is a copy of the root overlay's upper directory at its point (`cp -a --reflink=auto`:
whiteouts, opaque directories and all), i.e. the difference from the root tree. A build restores it
by mounting it as a second read-only layer over the root tree: one mount, whatever its size. The
build then skips the steps the layer holds, except the ones that set up the build's own resources:
the root mount, and for the packages and venv layers the extra-data phase (sources, the media served
on a new port, files hooks hand to later hooks) and the zypper refresh. Each layer also keeps what
the skipped steps reported (the manifest, the variables they set, the saved resolv.conf).

Layers need the root tree mounted (overlayfs): a copied root (`--keep-workspace`, no overlay) builds
without them. `--no-cache` skips the lookup and builds every step (the layers are then made again).
The most recently used layers of each point are kept, two by default (the cache_generations setting).

Each layer keeps a record of its tree (contents.json beside meta.json, contents.py), written before
the layer is renamed into place; before a build resumes from a layer, trust.py checks it, the layers
it is mounted with and the root tree under them against their records.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import run, space
from ..engine.stages import Phase
from ..engine.state import TARGET_CA, ResolvSaved, Step
from ..engine.target import IN_TARGET
from ..errors import InputError
from ..inputs import image, media, repokeys, repos, sources
from . import contents, trust
from . import roottree as layers
from . import store as cache
from .entries import Checkpoints, Layer, root
from .keys import compute, phase_steps, why

if TYPE_CHECKING:
    from ..config.resolve import Config
    from ..engine.state import Plan, Runtime

log = logging.getLogger(__name__)

def _meta(entry: Path) -> dict[str, Any] | None:
    """A layer's record, if the layer and every layer it sits on are whole."""
    try:
        data = json.loads((entry / "meta.json").read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or not (entry / "tree").is_dir():
        return None
    return data if all((root() / rel / "tree").is_dir() for rel in data.get("below", [])) else None


def chain(layer: Layer) -> list[Path]:
    """The layer's tree and those of the layers it was made on (a build resumed from one keeps only
    its own changes), topmost first: the lower layers to mount over the root tree."""
    meta = _meta(layer.path) or {}
    return [layer.path / "tree", *(root() / rel / "tree" for rel in meta.get("below", []))]


def _latest(name: str) -> dict[str, Any] | None:
    family = root() / name
    if not family.is_dir():
        return None
    entries = [e for e in family.iterdir() if e.is_dir() and not e.name.startswith(".")]
    for e in sorted(entries, key=cache.last_use, reverse=True):
        meta = _meta(e)
        if meta is not None:
            return meta
    return None


def _look_up(found: list[Layer], no_cache: bool) -> Layer | None:
    """Set each layer's state; return the deepest cached one (each layer's key holds the one below)."""
    best = None
    for layer in found:
        if no_cache:
            layer.state = "skipped: --no-cache"
        elif _meta(layer.path) is not None:
            layer.state = "hit"
            best = layer
        else:
            old = _latest(layer.name)
            layer.state = "miss: " + why(old.get("inputs") if old else None, layer.inputs)
    return best


# --- a build ---------------------------------------------------------------------------------------
def of(rt: Runtime) -> Checkpoints:
    if rt.checkpoints is None:
        rt.checkpoints = Checkpoints()
    return rt.checkpoints


def off(rt: Runtime, why_not: str) -> None:
    """No layers for this build (none used, none made). Called by the root step when the root tree
    could not be mounted, it undoes a resume: every step runs on the copied tree."""
    if of(rt).layers:
        log.info("cache layers off for this build: %s", why_not)
    if of(rt).resume is not None:
        rt.resolv = None  # the layer's saved resolv.conf is not in a copied root tree
    rt.checkpoints = Checkpoints()
    rt.manifest["layers"] = [{"layer": "-", "state": f"off: {why_not}"}]


def _eligible(plan: Plan) -> str | None:
    names = {(s.stage, s.name) for s in phase_steps(plan) if s.run is not None}
    if (Phase.ROOT, "10-sles-image") not in names:
        return "the root tree is not the qcow2's (--base-tree or a root element of your own)"
    if plan.cfg.keep_workspace:
        return "--keep-workspace copies the root tree instead of mounting it"
    return None


def prepare(plan: Plan, rt: Runtime) -> None:
    """Before the first step: every layer's key, the deepest cached one, and the steps it saves.
    Fetches the source mirrors (as the sources step would) and hashes the qcow2 (as the root step would)."""
    reason = _eligible(plan)
    if reason:
        off(rt, reason)
        return
    cfg = plan.cfg
    commits = sources.resolve(plan.source_repos, offline=cfg.offline)
    root_key = cache.file_sha256(image.find_image(cfg))
    found = compute(plan, root_key=root_key,
                    media_identity=rt.media.identity if rt.media is not None else "none",
                    repo_digests=_repo_digests(cfg, offline=cfg.offline), commits=commits)
    best = _look_up(found, not cfg.cache)
    root_entry = cache.cache_root() / "rootfs" / root_key
    present = root_entry.is_dir()  # absent: the root step makes it (and its record)
    if cfg.cache:
        best = trust.trusted(found, root_entry, chain)
    cp = Checkpoints(found, best, commits=commits, env0=dict(rt.env), root_checked=present and best is not None)
    for layer in found:
        log.info("cache layer %s %s: %s", layer.name, layer.key[:12], layer.state)
    if best is not None:
        meta = _meta(best.path) or {}
        cp.skip = _skipped(phase_steps(plan), best)
        state = meta.get("state", {})
        rt.manifest.update(state.get("manifest", {}))
        rt.env.update(state.get("env", {}))
        if state.get("resolv"):
            rt.resolv = ResolvSaved(**state["resolv"])
        for tree in chain(best):
            cache.in_use(rt.stack, tree.parent)
        log.info("resuming from cache layer %s: %d steps skipped", best.name, len(cp.skip))
    rt.checkpoints = cp
    rt.manifest["layers"] = [{"layer": x.name, "key": x.key, "state": x.state} for x in found]


def _repo_digests(cfg: Config, *, offline: bool) -> dict[str, str]:
    creds = repos.load_credentials(list(cfg.repo_credentials))
    zc = cache.cache_dir("zypper") if offline else None
    user = repos.parse(list(cfg.repos))
    out = {r.alias: repos.metadata_digest(r, creds, cfg.ca_bundle, zypper_cache=zc) for r in user}
    # keys the user gives may be imported into the target's rpm database (repotrust.py)
    given = [*cfg.repo_keys, *(r.key_file for r in user if r.key_file)]
    if given:
        out["keys given"] = " ".join(sorted({k.fingerprint for f in given for k in repokeys.read_file(f)}))
    return out


def _skipped(steps: list[Step], layer: Layer) -> set[tuple[str, str]]:
    """The steps a layer holds, but those that set up this build's own resources."""
    keep_extra = layer.name != "tree"
    out = set()
    for s in steps[:layer.end]:
        if s.stage is Phase.ROOT and s.name == "10-sles-image":
            continue
        if keep_extra and (s.stage is Phase.EXTRA_DATA or (s.stage is Phase.PRE_INSTALL
                                                            and s.name == "00-zypper-refresh")):
            continue
        out.add((s.stage.value, s.name))
    return out


def above(rt: Runtime) -> list[Path]:
    """The resumed layer's trees, which the root step mounts over the root tree."""
    resume = of(rt).resume
    return chain(resume) if resume is not None else []


def root_checked(rt: Runtime) -> bool:
    """Whether prepare() found the root tree whole, under the layer the build resumes from."""
    return of(rt).root_checked


def skipped(rt: Runtime, s: Step) -> bool:
    return (s.stage.value, s.name) in of(rt).skip


def after_step(plan: Plan, rt: Runtime, s: Step) -> None:
    """Keep the tree as the layer taken after this step, when one is and it is not cached."""
    for layer in of(rt).layers:
        if layer.after == (s.stage.value, s.name):
            _save(plan, rt, layer)


def after_phases(plan: Plan, rt: Runtime) -> None:
    for layer in of(rt).layers:
        if layer.after is None:
            _save(plan, rt, layer)


def _save(plan: Plan, rt: Runtime, layer: Layer) -> None:
    upper = layers.upper_dir(plan.root)
    if layer.state == "hit" or _meta(layer.path) is not None or not upper.is_dir():
        return
    start = time.monotonic()
    with cache.locked(layer.path):
        if _meta(layer.path) is not None:  # another build made it meanwhile
            return
        with (space.writing(layer.path.parent, f"the cache layer {layer.name}", lambda: cache.disk_usage(upper)),
              cache.atomic_path(layer.path) as tmp):  # a half-made layer is gone before the error is told
            tmp.mkdir()
            run.run(["cp", "-a", "--reflink=auto", f"{upper}/.", f"{tmp}/tree/"], capture=True,  # its words: space.py
                    hint=f"check free space in {tmp.parent}")
            for mountpoint in (IN_TARGET, TARGET_CA):  # a chroot phase's, made and removed by it
                p = tmp / "tree" / mountpoint.lstrip("/")
                if p.is_dir() and not p.is_symlink():
                    shutil.rmtree(p)
                elif p.is_file():
                    p.unlink()
            resume = of(rt).resume
            below = [str(t.parent.relative_to(root())) for t in chain(resume)] if resume is not None else []
            contents.write(tmp / contents.NAME, tmp / "tree")  # before meta.json: a layer in place has both
            (tmp / "meta.json").write_text(json.dumps({"inputs": layer.inputs, "below": below,
                                                       "state": _state(rt)}, indent=1, default=str))
        cache.touch_use(layer.path)
    layer.state = "made"
    log.info("cache layer %s %s kept (%.1fs)", layer.name, layer.key[:12], time.monotonic() - start)
    cache.prune(f"layers/{layer.name}", max(1, plan.cfg.cache_generations))


def _state(rt: Runtime) -> dict[str, Any]:
    env0 = of(rt).env0
    return {"manifest": {k: v for k, v in rt.manifest.items() if k not in ("timings", "layers")},
            "env": {k: v for k, v in rt.env.items() if env0.get(k) != v},
            "resolv": {"had": rt.resolv.had, "text": rt.resolv.text} if rt.resolv is not None else None}


# --- summary -----------------------------------------------------------------------------------------
def describe(plan: Plan) -> list[dict[str, str]]:
    """The layers a build would use and whether each is cached, for `summary`: no fetch, no writes
    (sources as last fetched, a qcow2 not hashed yet says so)."""
    reason = _eligible(plan)
    if reason:
        return [{"layer": "packages, venv, tree", "key": "-", "state": f"off: {reason}"}]
    cfg = plan.cfg
    try:
        img = image.find_image(cfg)
    except InputError as e:
        return [{"layer": "packages, venv, tree", "key": "-", "state": str(e)}]
    sha = cache.known_sha256(img)
    if sha is None:
        return [{"layer": "packages, venv, tree", "key": "-", "state": "unknown until the qcow2 is hashed"}]
    commits = sources.peek(plan.source_repos)
    m = media.open_media(cfg.iso_path) if cfg.iso_path.is_file() else None
    zc = cache.cache_root() / "zypper"
    digests = {r.alias: repos.metadata_digest(r, {}, None, zypper_cache=zc) for r in repos.parse(list(cfg.repos))}
    found = compute(plan, root_key=sha, media_identity=m.identity if m is not None else "none",
                    repo_digests=digests, commits={k: v or "not fetched yet" for k, v in commits.items()})
    _look_up(found, not cfg.cache)
    note = " (sources as last fetched)" if commits else ""
    return [{"layer": x.name, "key": f"layers/{x.name}/{x.key}", "state": x.state + note} for x in found]
