"""The keys of the cache layers: which points a plan has, and for each the hash of everything that
made the tree there (layers.py keeps, finds and restores the layers).

Each key chains the key of the layer below with the layer's own inputs: the media identity and
each --repo's repomd.xml digest (in the first layer), the source commits (in `venv`), the hooks'
environment (each variable in the first layer holding a script that names it), and the steps. Every
step is counted by content (a script by its bytes plus its element's other files, a native step by
what its declaration, stages.Reads, says it reads) and chained on the step before it, so a step
cannot be missing from the key of its layer or of any layer above. Nothing here writes; reading the
elements' files is all the I/O.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from .. import __version__
from ..engine.stages import Phase
from .entries import Layer

if TYPE_CHECKING:
    from ..engine.state import Plan, Step


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


def _sha(data: bytes | str) -> str:
    return hashlib.sha256(data.encode() if isinstance(data, str) else data).hexdigest()


def code_digest(package: Path) -> str:
    """The sha256 of a package's modules, names and contents."""
    return _sha(b"".join(str(p.relative_to(package)).encode() + b"\0" + p.read_bytes() + b"\0"
                     for p in sorted(package.rglob("*.py"))))


@functools.cache
def builder_id() -> str:
    """The builder's version and a digest of its own code: a native step (module cut, package drop,
    slimming...) is counted by what it reads, so a change to what it does must renew the layers too,
    also between two commits that share a version number."""
    return f"{__version__}+{code_digest(Path(__file__).parents[1])[:12]}"


def phase_steps(plan: Plan) -> list[Step]:
    return [s for s in plan.steps if isinstance(s.stage, Phase)]


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


def _element_data(plan: Plan, element: str, scripts: set[str]) -> str:
    """The hash of an element's files other than the plan's scripts (static files, service units,
    package lists...): any of its scripts may read them."""
    rows = sorted(f"{rel} {_sha(src.read_bytes()) if src.is_file() else os.readlink(src)}"
                  for rel, (el, src) in plan.tree.files.items()
                  if el == element and rel not in scripts and (src.is_file() or src.is_symlink()))
    return _sha("\n".join(rows))


def _script(plan: Plan, s: Step) -> bytes:
    entry = plan.tree.resolve_entry(f"{s.stage.value}.d/{s.name}")
    return entry[1].read_bytes() if entry is not None else b""


def _native(plan: Plan, s: Step) -> str:
    """A native step by what it declares it reads (stages.Reads), besides its name and the builder."""
    value = s.inputs.value(plan) if s.inputs.value is not None else None
    return _sha(json.dumps([s.inputs.words, value], default=str))


def _step_hash(plan: Plan, s: Step, data: dict[str, str], scripts: set[str]) -> str:
    if s.run is not None:
        return _native(plan, s)
    if s.element not in data:
        data[s.element] = _element_data(plan, s.element, scripts)
    return _sha(_script(plan, s) + data[s.element].encode())


def _keyed_env(plan: Plan) -> dict[str, str]:
    """The hooks' environment as the keys see it: without what only says where or how."""
    return {k: v for k, v in plan.phase_env.items() if k not in PLACES and not k.startswith(PLACE_PREFIXES)}


def _env_owner(plan: Plan, env: dict[str, str], steps: list[Step],
               ends: list[tuple[Point, int]]) -> dict[str, str]:
    """variable -> the layer of the first script that names it (else the first layer)."""
    owner: dict[str, str] = {}
    start = 0
    for point, end in ends:
        text = b"\n".join(_script(plan, s) for s in steps[start:end] if s.run is None).decode(errors="replace")
        names = set(re.findall(r"[A-Za-z_][A-Za-z0-9_]*", text))
        for var in env:
            if var not in owner and var in names:
                owner[var] = point.name
        start = end
    first = ends[0][0].name if ends else ""
    return {var: owner.get(var, first) for var in env}


def _shown(value: str, secret: bool) -> str:
    return value if len(value) <= 80 and not secret else "sha256:" + _sha(value)[:16]


def compute(plan: Plan, *, root_key: str, media_identity: str, repo_digests: dict[str, str],
            commits: dict[str, str]) -> list[Layer]:
    """The layers of this plan with their keys and the inputs that make them (no I/O but reading
    the elements' files)."""
    steps = phase_steps(plan)
    ends = _ends(steps)
    env = _keyed_env(plan)
    owner = _env_owner(plan, env, steps, ends)
    secrets = set(plan.cfg.secrets())
    data: dict[str, str] = {}
    scripts = {f"{s.stage.value}.d/{s.name}" for s in steps if s.run is None}
    out: list[Layer] = []
    parent, start, chained = root_key, 0, root_key
    for point, end in ends:
        inputs = {"below": parent, "builder": builder_id(), "arch": plan.cfg.arch.suse}
        if not out:
            inputs["media"] = media_identity
            inputs.update({f"repository {alias}": d for alias, d in sorted(repo_digests.items())})
        if point.name == "venv" or (point.name == "tree" and not any(layer.name == "venv" for layer in out)):
            inputs.update({f"source {name}": sha for name, sha in sorted(commits.items())})
        for s in steps[start:end]:
            step_hash = _step_hash(plan, s, data, scripts)
            inputs[f"step {s.stage.value}.d/{s.name}"] = step_hash[:16]
            chained = _sha(f"{chained} {s.stage.value}.d/{s.name} {step_hash}")
        inputs["steps"] = chained  # every step so far, in order: none can be left out of a key
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
