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
are left out, so two workspaces and an --offline build share layers.

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
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import __version__, cache, image, layers, media, repos, run, sources
from .context import TARGET_CA
from .errors import InputError
from .packages import HOOK_NAMES, pkg_map_files
from .phase import Phase, Step
from .target import IN_TARGET, ResolvSaved

if TYPE_CHECKING:
    from .config import Config
    from .context import BuildContext

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Point:
    name: str
    phase: Phase | None  # None: after the last phase
    step: str


POINTS = (Point("packages", Phase.INSTALL, "01-package-installs"),
          Point("venv", Phase.INSTALL, "60-ironic-python-agent-ramdisk-install"),
          Point("tree", None, ""))

# Where things are or how they are fetched, not what they are: left out of the keys. The media, the
# qcow2 and the sources are in the keys by content (identity, sha256, commits) instead of by name.
PLACES = {"PATH", "HOME", "PWD", "OLDPWD", "SHLVL", "_", "TERM", "SHELL", "TARGET_ROOT", "TMP_MOUNT_PATH",
          "TMP_HOOKS_PATH", "TMP_BUILD_DIR", "TMP_IMAGE_DIR", "_LIB", "ELEMENTS_PATH", "IMAGE_ELEMENT_YAML",
          "DIB_PYTHON_EXEC", "DIB_IMAGE_CACHE", "PIP_CACHE_DIR", "PIP_NO_INDEX", "PIP_FIND_LINKS",
          "SIB_BUILDER_VERSION", "SSL_CERT_FILE", "PIP_CERT", "REQUESTS_CA_BUNDLE", "GIT_SSL_CAINFO",
          "CURL_CA_BUNDLE", "DIB_OFFLINE", "SIB_OFFLINE", "DIB_SLES_OFFLINE_TARGET_DIR", "DIB_SLES_ISO_REPO_FILE"}
PLACE_PREFIXES = ("DIB_REPOLOCATION_", "DIB_REPOREF_")


@dataclass
class Layer:
    name: str
    end: int  # how many of the plan's phase steps ran before it is taken
    key: str
    inputs: dict[str, str]
    after: tuple[str, str] | None  # (phase, step) it is taken after; None: after the last phase
    state: str = "not looked up"

    @property
    def path(self) -> Path:
        return _root() / self.name / self.key


@dataclass
class Checkpoints:
    """A build's layers: their keys, the one it resumes from, what it skips."""

    layers: list[Layer] = field(default_factory=list)
    resume: Layer | None = None
    skip: set[tuple[str, str]] = field(default_factory=set)  # (phase, step name)
    commits: dict[str, str] = field(default_factory=dict)
    env0: dict[str, str] = field(default_factory=dict)  # ctx.env before any step ran


# --- keys ----------------------------------------------------------------------------------------
def _sha(data: bytes | str) -> str:
    return hashlib.sha256(data.encode() if isinstance(data, str) else data).hexdigest()


def phase_steps(ctx: BuildContext) -> list[Step]:
    return [s for s in ctx.steps if isinstance(s.stage, Phase)]


def _ends(steps: list[Step]) -> list[tuple[Point, int]]:
    """(point, how many steps come before it) for the points this plan has."""
    where = {(s.stage, s.name): i for i, s in enumerate(steps)}
    out = []
    for p in POINTS:
        if p.phase is None:
            out.append((p, len(steps)))
        elif (p.phase, p.step) in where:
            out.append((p, where[(p.phase, p.step)] + 1))
    return out


def _element_data(ctx: BuildContext, element: str, scripts: set[str]) -> str:
    """The hash of an element's files other than the plan's scripts (static files, service units,
    package lists...): any of its scripts may read them."""
    rows = sorted(f"{rel} {_sha(src.read_bytes()) if src.is_file() else os.readlink(src)}"
                  for rel, (el, src) in ctx.tree.files.items()
                  if el == element and rel not in scripts and (src.is_file() or src.is_symlink()))
    return _sha("\n".join(rows))


def _script(ctx: BuildContext, s: Step) -> bytes:
    entry = ctx.tree.resolve_entry(f"{s.stage.value}.d/{s.name}")
    return entry[1].read_bytes() if entry is not None else b""


def _native(ctx: BuildContext, s: Step) -> str:
    """What a native step's result depends on, besides its name and the builder's version."""
    cfg = ctx.cfg
    parts: list[Any] = [s.reads]
    if s.name == "01-install-bin":
        parts.append(sorted((r, _sha(p.read_bytes())) for r, (_, p) in ctx.tree.subtree("bin").items()))
    elif s.name == "10-install-static-files":
        parts.append(sorted((r, _sha(p.read_bytes()) if p.is_file() else str(p))
                            for r, (_, p) in ctx.tree.subtree("static").items()))
    elif s.name == "10-create-pkg-map-dir":
        parts.append(sorted((e, _sha(f.read_bytes())) for e, f in pkg_map_files(ctx.elements).items()))
    elif s.name == "98-source-repositories":
        parts.append([(r.name, r.type, r.dest) for r in ctx.source_repos])  # the commits: in the venv layer
    elif s.name in {n for names in HOOK_NAMES.values() for n in names}:
        phase_dir, uninstall = f"{s.stage.value}.d", s.name in {n[1] for n in HOOK_NAMES.values()}
        parts.append(repr(ctx.packages.get(phase_dir, uninstall)))
    elif s.name == "60-cut-kernel-modules":
        parts.append([cfg.minimal_prune, sorted(cfg.cut_modules)])
    elif s.name in ("70-strip-agent-venv", "75-empty-icu-data"):
        parts.append([cfg.minimal_prune, sorted(cfg.keep_paths)])
    elif s.name == "90-drop-packages":
        parts.append([cfg.minimal_prune, sorted(cfg.drop_packages), sorted(cfg.keep_paths)])
    elif s.name == "01-copy-manifests-dir":
        parts.append([sorted(k + "=" + v for k, v in ctx.env.items() if k.startswith("DIB_")), cfg.element_list])
    elif s.name in ("05-media-repositories", "05-remove-media-repositories"):
        parts.append([r.alias for r in repos.parse(list(cfg.repos))])
    return _sha(json.dumps(parts, default=str))


def _step_hash(ctx: BuildContext, s: Step, data: dict[str, str], scripts: set[str]) -> str:
    if s.run is not None:
        return _native(ctx, s)
    if s.element not in data:
        data[s.element] = _element_data(ctx, s.element, scripts)
    return _sha(_script(ctx, s) + data[s.element].encode())


def _keyed_env(ctx: BuildContext) -> dict[str, str]:
    """The hooks' environment as the keys see it: without what only says where or how."""
    return {k: v for k, v in ctx.phase_env.items() if k not in PLACES and not k.startswith(PLACE_PREFIXES)}


def _env_owner(ctx: BuildContext, env: dict[str, str], steps: list[Step],
               ends: list[tuple[Point, int]]) -> dict[str, str]:
    """variable -> the layer of the first script that names it (else the first layer)."""
    owner: dict[str, str] = {}
    start = 0
    for point, end in ends:
        text = b"\n".join(_script(ctx, s) for s in steps[start:end] if s.run is None).decode(errors="replace")
        names = set(re.findall(r"[A-Za-z_][A-Za-z0-9_]*", text))
        for var in env:
            if var not in owner and var in names:
                owner[var] = point.name
        start = end
    first = ends[0][0].name if ends else ""
    return {var: owner.get(var, first) for var in env}


def _shown(value: str, secret: bool) -> str:
    return value if len(value) <= 80 and not secret else "sha256:" + _sha(value)[:16]


def compute(ctx: BuildContext, *, root_key: str, media_identity: str, repo_digests: dict[str, str],
            commits: dict[str, str]) -> list[Layer]:
    """The layers of this plan with their keys and the inputs that make them (no I/O but reading
    the elements' files)."""
    steps = phase_steps(ctx)
    ends = _ends(steps)
    env = _keyed_env(ctx)
    owner = _env_owner(ctx, env, steps, ends)
    secrets = set(ctx.cfg.secrets())
    data: dict[str, str] = {}
    scripts = {f"{s.stage.value}.d/{s.name}" for s in steps if s.run is None}
    out: list[Layer] = []
    parent, start = root_key, 0
    for point, end in ends:
        inputs = {"below": parent, "builder": __version__, "arch": ctx.cfg.arch.suse}
        if not out:
            inputs["media"] = media_identity
            inputs.update({f"repository {alias}": d for alias, d in sorted(repo_digests.items())})
        if point.name == "venv" or (point.name == "tree" and not any(layer.name == "venv" for layer in out)):
            inputs.update({f"source {name}": sha for name, sha in sorted(commits.items())})
        for s in steps[start:end]:
            inputs[f"step {s.stage.value}.d/{s.name}"] = _step_hash(ctx, s, data, scripts)[:16]
        for var in sorted(v for v, o in owner.items() if o == point.name):
            inputs[f"env {var}"] = _shown(env[var], env[var] in secrets)
        key = _sha(json.dumps(inputs, sort_keys=True))
        after = (steps[end - 1].stage.value, steps[end - 1].name) if point.phase is not None else None
        out.append(Layer(point.name, end, key, inputs, after))
        parent, start = key, end
    return out


def why(old: dict[str, str] | None, new: dict[str, str]) -> str:
    """Which inputs changed between the last layer made at this point and this build's."""
    if old is None:
        return "not cached yet"
    changed = [k for k in sorted(old.keys() | new.keys()) if k != "below" and old.get(k) != new.get(k)]
    if not changed:
        return "the layer below changed" if old.get("below") != new.get("below") else "entry missing"
    parts = []
    for k in changed[:4]:
        a, b = old.get(k), new.get(k)
        parts.append(f"{k} added" if a is None else f"{k} removed" if b is None else
                     f"{k}: {a[:16]} → {b[:16]}")
    more = f" and {len(changed) - 4} more" if len(changed) > 4 else ""
    return "; ".join(parts) + more


def _meta(entry: Path) -> dict[str, Any] | None:
    """A layer's record, if the layer and every layer it sits on are whole."""
    try:
        data = json.loads((entry / "meta.json").read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or not (entry / "tree").is_dir():
        return None
    return data if all((_root() / rel / "tree").is_dir() for rel in data.get("below", [])) else None


def _root() -> Path:
    return cache.cache_root() / "layers"


def chain(layer: Layer) -> list[Path]:
    """The layer's tree and those of the layers it was made on (a build resumed from one keeps only
    its own changes), topmost first: the lower layers to mount over the root tree."""
    meta = _meta(layer.path) or {}
    return [layer.path / "tree", *(_root() / rel / "tree" for rel in meta.get("below", []))]


def _latest(name: str) -> dict[str, Any] | None:
    family = _root() / name
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
def of(ctx: BuildContext) -> Checkpoints:
    if ctx.checkpoints is None:
        ctx.checkpoints = Checkpoints()
    return ctx.checkpoints


def off(ctx: BuildContext, why_not: str) -> None:
    """No layers for this build (none used, none made). Called by the root step when the root tree
    could not be mounted, it undoes a resume: every step runs on the copied tree."""
    if of(ctx).layers:
        log.info("cache layers off for this build: %s", why_not)
    if of(ctx).resume is not None:
        ctx.resolv = None  # the layer's saved resolv.conf is not in a copied root tree
    ctx.checkpoints = Checkpoints()
    ctx.manifest["layers"] = [{"layer": "-", "state": f"off: {why_not}"}]


def _eligible(ctx: BuildContext) -> str | None:
    names = {(s.stage, s.name) for s in phase_steps(ctx) if s.run is not None}
    if (Phase.ROOT, "10-sles-image") not in names:
        return "the root tree is not the qcow2's (--base-tree or a root element of your own)"
    if ctx.cfg.keep_workspace:
        return "--keep-workspace copies the root tree instead of mounting it"
    return None


def prepare(ctx: BuildContext) -> None:
    """Before the first step: every layer's key, the deepest cached one, and the steps it saves.
    Fetches the source mirrors (as the sources step would) and hashes the qcow2 (as the root step would)."""
    reason = _eligible(ctx)
    if reason:
        off(ctx, reason)
        return
    cfg = ctx.cfg
    commits = sources.resolve(ctx.source_repos, offline=cfg.offline)
    found = compute(ctx, root_key=cache.file_sha256(image.find_image(cfg)),
                    media_identity=ctx.media.identity if ctx.media is not None else "none",
                    repo_digests=_repo_digests(cfg, offline=cfg.offline), commits=commits)
    best = _look_up(found, not cfg.cache)
    cp = Checkpoints(found, best, commits=commits, env0=dict(ctx.env))
    for layer in found:
        log.info("cache layer %s %s: %s", layer.name, layer.key[:12], layer.state)
    if best is not None:
        meta = _meta(best.path) or {}
        cp.skip = _skipped(phase_steps(ctx), best)
        state = meta.get("state", {})
        ctx.manifest.update(state.get("manifest", {}))
        ctx.env.update(state.get("env", {}))
        if state.get("resolv"):
            ctx.resolv = ResolvSaved(**state["resolv"])
        for tree in chain(best):
            cache.in_use(ctx.stack, tree.parent)
        log.info("resuming from cache layer %s: %d steps skipped", best.name, len(cp.skip))
    ctx.checkpoints = cp
    ctx.manifest["layers"] = [{"layer": x.name, "key": x.key, "state": x.state} for x in found]


def _repo_digests(cfg: Config, *, offline: bool) -> dict[str, str]:
    creds = repos.load_credentials(list(cfg.repo_credentials))
    zc = cache.cache_dir("zypper") if offline else None
    return {r.alias: repos.metadata_digest(r, creds, cfg.ca_bundle, zypper_cache=zc)
            for r in repos.parse(list(cfg.repos))}


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


def above(ctx: BuildContext) -> list[Path]:
    """The resumed layer's trees, which the root step mounts over the root tree."""
    resume = of(ctx).resume
    return chain(resume) if resume is not None else []


def skipped(ctx: BuildContext, s: Step) -> bool:
    return (s.stage.value, s.name) in of(ctx).skip


def after_step(ctx: BuildContext, s: Step) -> None:
    """Keep the tree as the layer taken after this step, when one is and it is not cached."""
    for layer in of(ctx).layers:
        if layer.after == (s.stage.value, s.name):
            _save(ctx, layer)


def after_phases(ctx: BuildContext) -> None:
    for layer in of(ctx).layers:
        if layer.after is None:
            _save(ctx, layer)


def _save(ctx: BuildContext, layer: Layer) -> None:
    upper = layers.upper_dir(ctx.root)
    if layer.state == "hit" or _meta(layer.path) is not None or not upper.is_dir():
        return
    start = time.monotonic()
    with cache.locked(layer.path):
        if _meta(layer.path) is not None:  # another build made it meanwhile
            return
        with cache.atomic_path(layer.path) as tmp:
            tmp.mkdir()
            run.run(["cp", "-a", "--reflink=auto", f"{upper}/.", f"{tmp}/tree/"],
                    hint=f"check free space in {tmp.parent}")
            for mountpoint in (IN_TARGET, TARGET_CA):  # a chroot phase's, made and removed by it
                p = tmp / "tree" / mountpoint.lstrip("/")
                if p.is_dir() and not p.is_symlink():
                    shutil.rmtree(p)
                elif p.is_file():
                    p.unlink()
            resume = of(ctx).resume
            below = [str(t.parent.relative_to(_root())) for t in chain(resume)] if resume is not None else []
            (tmp / "meta.json").write_text(json.dumps({"inputs": layer.inputs, "below": below,
                                                       "state": _state(ctx)}, indent=1, default=str))
        cache.touch_use(layer.path)
    layer.state = "made"
    log.info("cache layer %s %s kept (%.1fs)", layer.name, layer.key[:12], time.monotonic() - start)
    cache.prune(f"layers/{layer.name}", max(1, ctx.cfg.cache_generations))


def _state(ctx: BuildContext) -> dict[str, Any]:
    env0 = of(ctx).env0
    return {"manifest": {k: v for k, v in ctx.manifest.items() if k not in ("timings", "layers")},
            "env": {k: v for k, v in ctx.env.items() if env0.get(k) != v},
            "resolv": {"had": ctx.resolv.had, "text": ctx.resolv.text} if ctx.resolv is not None else None}


# --- summary -----------------------------------------------------------------------------------------
def describe(ctx: BuildContext) -> list[dict[str, str]]:
    """The layers a build would use and whether each is cached, for `summary`: no fetch, no writes
    (sources as last fetched, a qcow2 not hashed yet says so)."""
    reason = _eligible(ctx)
    if reason:
        return [{"layer": "packages, venv, tree", "key": "-", "state": f"off: {reason}"}]
    cfg = ctx.cfg
    try:
        img = image.find_image(cfg)
    except InputError as e:
        return [{"layer": "packages, venv, tree", "key": "-", "state": str(e)}]
    sha = cache.known_sha256(img)
    if sha is None:
        return [{"layer": "packages, venv, tree", "key": "-", "state": "unknown until the qcow2 is hashed"}]
    commits = sources.peek(ctx.source_repos)
    m = media.open_media(cfg.iso_path) if cfg.iso_path.is_file() else None
    zc = cache.cache_root() / "zypper"
    digests = {r.alias: repos.metadata_digest(r, {}, None, zypper_cache=zc) for r in repos.parse(list(cfg.repos))}
    found = compute(ctx, root_key=sha, media_identity=m.identity if m is not None else "none",
                    repo_digests=digests, commits={k: v or "not fetched yet" for k, v in commits.items()})
    _look_up(found, not cfg.cache)
    note = " (sources as last fetched)" if commits else ""
    return [{"layer": x.name, "key": f"layers/{x.name}/{x.key}", "state": x.state + note} for x in found]
