"""pip's share of `--offline`: a wheelhouse in the cache, filled by online builds.

git sources come from cached mirrors and packages from the Media1 ISO, but the hooks that build the
IPA venv run pip, which asks PyPI. An online build leaves pip alone and, at the end of post-install,
saves wheels of exactly what the IPA venv holds (plus the build backends of the cloned sources) into
`<cache>/wheels`; it skips that when the same set was saved before. An `--offline` build points every
pip call of every hook at that directory only (PIP_NO_INDEX, PIP_FIND_LINKS), so nothing is contacted
and a package missing from it fails the hook by name.

pip fills `.fill-<key>/` in the wheelhouse; the wheels are renamed into it when pip is done and the
`.saved-<key>` marker comes last. A build killed meanwhile leaves only that directory, which
--find-links does not read (it lists the wheelhouse's top) and the next online build removes.

The wheels are checked by content before a build reads them (cache/wheelrecord.py): each is recorded
in `SHA256SUMS` before it is renamed in, and hashed against that line when the wheelhouse is used
(before any work of an --offline build, and online before save_step's pip reads it). Wheels present
without a record (put there by an older builder) are recorded on first use, not rejected. A wheel
that differs from its record is removed with one warning, and with it every `.saved-*` marker, so
the next online build fills the wheelhouse again; an --offline build that would read it stops,
naming it.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tomllib
from collections.abc import Iterable
from pathlib import Path

from ..cache import wheelrecord
from ..cache.store import cache_dir, locked
from ..config.resolve import Config
from ..engine.state import Plan, Runtime
from ..engine.target import run_in_target
from ..errors import InputError
from ..packing.inventory import pip_freeze

log = logging.getLogger(__name__)

WHEELHOUSE = "/tmp/sib-wheelhouse"  # inside the target, bind-mounted from the cache while hooks run
VENV = "opt/ironic-python-agent"
# pip's own fallback backend for sources without pyproject.toml, and the venv's bootstrap packages:
# not pinned from the venv (ensurepip put them there), fetched as build requirements instead.
BACKEND = ("setuptools", "wheel")
BOOTSTRAP = {"pip", "setuptools", "wheel"}


def configure(cfg: Config) -> tuple[list[tuple[Path, str]], dict[str, str]]:
    """The wheelhouse mounted for the hooks, and offline the variables that make it pip's only index.
    (Online, save_step fills it: post-install.d/99-pip-wheelhouse, after sles-extra-hardware's
    99-package-installs-*, before 99-remove-extra-packages drops /tmp/<src>.)"""
    env = {"PIP_NO_INDEX": "1", "PIP_FIND_LINKS": WHEELHOUSE} if cfg.offline else {}
    return [(cache_dir("wheels"), WHEELHOUSE)], env


def for_arch(wheel: str, arch: str) -> bool:
    """Whether pip on `arch` (x86_64, aarch64) may read the wheel: its platform tag is `any` or names it."""
    platforms = wheel.removesuffix(".whl").rsplit("-", 1)[-1].split(".")
    return platforms == ["any"] or any(p.endswith(arch) for p in platforms)


def verify(house: Path) -> list[wheelrecord.Bad]:
    """Check the wheelhouse's wheels against their record (the caller holds `.house`'s lock): a bad
    one is removed, and the `.saved-*` markers with it (they no longer say true). The caller says so."""
    bad = wheelrecord.check(house)
    if bad:
        for marker in house.glob(".saved-*"):
            marker.unlink(missing_ok=True)
    return bad


def _warn(bad: Iterable[wheelrecord.Bad]) -> None:
    for b in bad:
        log.warning("wheelhouse: removed %s: %s", b.name, b.why)


def check_offline(plan: Plan) -> None:
    """An offline build of the IPA venv with nothing saved, or with a damaged wheel, would fail deep in
    a hook (or install what the damage left): say so first. Checks every wheel (about 30 ms for the
    62 wheels, 22 MiB, of the test media's two arches); a damaged one pip on this build's arch would
    read stops the build, one of another arch is only removed."""
    needs_pip = any(e.name == "sles-ipa-install" for e in plan.elements)
    if not (plan.cfg.offline and needs_pip):
        return
    house = cache_dir("wheels")
    with locked(house / ".house"):
        removed = verify(house)
    _warn(b for b in removed if not for_arch(b.name, plan.cfg.arch.suse))
    bad = [b for b in removed if for_arch(b.name, plan.cfg.arch.suse)]
    if bad:  # the error names it: no warning besides
        raise InputError(f"--offline: wheel {bad[0].name} in the pip wheelhouse is damaged ({bad[0].why}), "
                         "so it was removed",
                         f"run one build online: it fetches the wheel again into {house}")
    if not any(house.glob("*.whl")):
        raise InputError("--offline: the pip wheelhouse is empty, so the IPA venv cannot be built",
                         f"run one build online first (it saves the wheels in {house})")


def requirements(root: Path) -> list[str]:
    """`name==version` of the venv's distributions that came from an index (not from a cloned source)."""
    return [r for r in pip_freeze(root / VENV, skip_direct=True) if r.split("==")[0].lower() not in BOOTSTRAP]


def build_requirements(root: Path, sources: Iterable[str]) -> list[str]:
    """The build backends the cloned sources declare (pbr, setuptools...), as pip's isolated builds need."""
    out = list(BACKEND)
    for dest in sources:
        project = root / dest.lstrip("/") / "pyproject.toml"
        if project.is_file():
            out += tomllib.loads(project.read_text()).get("build-system", {}).get("requires", [])
    return sorted(set(out))


def save_step(plan: Plan, rt: Runtime) -> None:
    pins = requirements(plan.root)
    if not pins:
        log.info("no IPA venv at /%s: nothing to save for --offline", VENV)
        return
    backends = build_requirements(plan.root, [r.dest for r in plan.source_repos])
    house = cache_dir("wheels")
    # the same pins are other wheels on another arch: the arch is part of the key
    key = hashlib.sha256("\n".join([plan.cfg.arch.suse, *pins, "--", *backends]).encode()).hexdigest()[:16]
    done = house / f".saved-{key}"
    with locked(house / ".house"):
        _warn(verify(house))  # pip below reads the wheelhouse (--find-links): a wheel removed is fetched again
        if done.exists():
            log.info("wheelhouse already holds this venv's %d packages (%s)", len(pins), key)
            return
        for stale in house.glob(".fill-*"):  # we hold the lock: left by a build that was killed
            log.info("wheelhouse: removed %s, left by an interrupted build", stale.name)
            shutil.rmtree(stale)
        # pip writes into a directory of its own, not read by --find-links (it lists the top only);
        # each wheel is renamed into the house once pip is done, the marker last
        fill = house / f".fill-{key}"
        fill.mkdir()
        (fill / "requirements.txt").write_text("\n".join(pins) + "\n")
        pip = [f"/{VENV}/bin/python", "-m", "pip", "wheel", "--disable-pip-version-check",
               "--wheel-dir", f"{WHEELHOUSE}/{fill.name}", "--find-links", WHEELHOUSE]
        run_in_target(plan, rt, [*pip, "--no-deps", "-r", f"{WHEELHOUSE}/{fill.name}/requirements.txt"],
                      label="pip wheel")
        run_in_target(plan, rt, [*pip, *backends], label="pip wheel")
        made = sorted(fill.glob("*.whl"))
        wheelrecord.add(house, made)  # recorded before they are in: no wheel there without its line
        for wheel in made:
            os.replace(wheel, house / wheel.name)
        done.write_text("\n".join([*pins, "--", *backends]) + "\n")
        shutil.rmtree(fill)
    log.info("saved wheels of %d packages and %d build requirements for --offline", len(pins), len(backends))
