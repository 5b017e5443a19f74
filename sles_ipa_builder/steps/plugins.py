"""IPA plugins: custom hardware managers pip-installed into the agent's venv (`ipa_plugins`, the
Nordix builder's DIB_IPA_PLUGINS), on every release alike.

A plugin is a directory under `ipa_plugin_dir` (DIB_CUSTOM_HW_MANAGER_DIR, as Nordix's
ipa-plugin-installer element reads them), or the path of a project directory, a wheel or an sdist.
The step copies each into the target's /tmp, installs it with the venv's pip under the requirements'
upper constraints (so a plugin cannot move the agent's own dependencies), and removes the copy. Its
files are in the cache key of the layer that holds it: a changed plugin is installed again. With
--offline, pip reads the wheelhouse only: a plugin's dependencies must have been saved there by an
online build, and a project directory needs its build backend there (setuptools is).

When a user's element named ipa-plugin-installer is in the plan (Nordix's), that element installs
the plugins and this step stays out.
"""

from __future__ import annotations

import hashlib
import logging
import re
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

from ..engine.target import run_in_target
from ..errors import ConfigError

if TYPE_CHECKING:
    from ..config.resolve import Config
    from ..engine.state import Plan, Runtime

log = logging.getLogger(__name__)

VENV = "/opt/ironic-python-agent"
CONSTRAINTS = "/tmp/requirements/upper-constraints.txt"
IN_TARGET = "tmp/ipa-plugins"
NORDIX_ELEMENT = "ipa-plugin-installer"
KINDS = (".whl", ".tar.gz", ".zip")
PIP_ENV = {"PIP_DISABLE_PIP_VERSION_CHECK": "1"}  # and no pip cache in the image, as the IPA install
PROJECT = ("pyproject.toml", "setup.py", "setup.cfg")


def names(cfg: Config) -> list[str]:
    return [n for n in re.split(r"[,\s]+", cfg.ipa_plugins.strip()) if n]


def paths(cfg: Config) -> list[Path]:
    """Each plugin's path on the host; a ConfigError naming the first that is no plugin."""
    out = []
    for name in names(cfg):
        given = Path(name).expanduser()
        path = given if given.is_absolute() else cfg.ipa_plugin_dir / name
        if path.is_dir() and not any((path / f).is_file() for f in PROJECT):
            raise ConfigError(f"IPA plugin {name}: {path} has no pyproject.toml, setup.py or setup.cfg",
                              "give a Python project directory, a wheel or an sdist")
        if not path.is_dir() and not (path.is_file() and path.name.endswith(KINDS)):
            raise ConfigError(f"IPA plugin {name}: {path} is not a project directory, wheel or sdist",
                              f"put it under ipa_plugin_dir ({cfg.ipa_plugin_dir}, DIB_CUSTOM_HW_MANAGER_DIR) "
                              "or give its path")
        out.append(path)
    return out


def digest(cfg: Config) -> list[tuple[str, str]]:
    """(name, sha256 over the plugin's files and links): what the cache key holds of each plugin."""
    out = []
    for path in paths(cfg):
        h = hashlib.sha256()
        files = sorted(p for p in path.rglob("*") if not p.is_dir()) if path.is_dir() else [path]
        for f in files:
            if "__pycache__" in f.parts:
                continue
            h.update(str(f.relative_to(path) if path.is_dir() else f.name).encode() + b"\0")
            h.update((str(f.readlink()) if f.is_symlink() else hashlib.sha256(f.read_bytes()).hexdigest()).encode())
        out.append((path.name, h.hexdigest()))
    return out


def wanted(plan: Plan) -> bool:
    return bool(names(plan.cfg)) and not any(e.name == NORDIX_ELEMENT for e in plan.elements)


def install_step(plan: Plan, rt: Runtime) -> None:
    """install.d/65-ipa-plugins: each plugin into the IPA venv, under the upper constraints."""
    staged = plan.root / IN_TARGET
    staged.mkdir(parents=True, exist_ok=True)
    try:
        for path in paths(plan.cfg):
            copy = staged / path.name
            if path.is_dir():
                shutil.copytree(path, copy, symlinks=True, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
            else:
                shutil.copyfile(path, copy)
            run_in_target(plan, rt, [f"{VENV}/bin/python", "-m", "pip", "install", "-c", CONSTRAINTS,
                                     f"/{IN_TARGET}/{path.name}"], label=f"pip install {path.name}",
                          extra_env=PIP_ENV if "PIP_CACHE_DIR" in rt.env else {**PIP_ENV, "PIP_NO_CACHE_DIR": "1"})
            log.info("IPA plugin %s installed into %s", path.name, VENV)
    finally:
        shutil.rmtree(staged, ignore_errors=True)
