"""The hooks' environment: the one place that assembles every variable a hook sees (DIB's exported
environment), on the host and in the target.

Later wins:

1. DIB's defaults, and DIB_RELEASE from the release;
2. the source repositories (`Config.source_env()`: DIB_REPOLOCATION_<name>, DIB_REPOREF_<name>);
3. the user's DIB_* variables that no setting claims: passed through, so they win over 1 and 2;
4. every setting's export, as its row in config/settings.py says (`export`, `render`, `export_from`);
5. the release's facts and package names (config/releases.py);
6. the build's places and its element list.
"""

from __future__ import annotations

import sys
from pathlib import Path

import yaml

from ..cache.store import cache_root
from ..config import releases
from ..config.resolve import Config
from ..config.settings import SETTINGS
from .elements import Element

DIB_DEFAULTS = {
    "DIB_DEFAULT_INSTALLTYPE": "source",
    "DIB_INIT_SYSTEM": "systemd",
    "DIB_PYTHON_VERSION": "3",
    "DIB_DEBUG_TRACE": "0",
    "DIB_NO_TMPFS": "1",
    "DIB_CHECKSUM": "0",
    "DISTRO_NAME": "opensuse",
}


def release_env(release: releases.Release, python: str) -> dict[str, str]:
    """What the hooks need of the release that no setting says: the python package, the network stack,
    /usr/etc, SELinux, and each package some release names differently (DIB_SLES_PKG_<GENERIC>)."""
    env = {
        "DIB_SLES_PYTHON_PACKAGE": releases.python_package(python),
        "DIB_SLES_NETWORK_STACK": release.network,
        "DIB_SLES_USR_ETC": "true" if release.usr_etc else "false",
        "DIB_SLES_SELINUX": release.selinux or "none",
    }
    env.update({f"DIB_SLES_PKG_{generic.upper().replace('-', '_')}": package
                for generic, package in releases.renamed_packages(release).items()})
    return env


def hook_env(cfg: Config, search_path: list[Path], resolved_elements: list[Element]) -> dict[str, str]:
    """The variables every hook sees; touches nothing on disk."""
    build_dir = cfg.build_dir
    env = {**DIB_DEFAULTS, "DIB_IMAGE_CACHE": str(cache_root() / "image-create")}
    env.update(cfg.source_env())
    # DIB_RELEASE is DIB's own variable: a user's value passes through and wins
    env["DIB_RELEASE"] = cfg.sles.dib_release
    env.update(cfg.passthrough)
    for s in SETTINGS:
        if s.export:
            text = s.renderer(getattr(cfg, s.export_from) if s.export_from else cfg.value(s.key))
            if text is not None:
                env[s.export] = text
    env.update(release_env(cfg.sles, cfg.python))
    root = build_dir / "root"
    env.update(
        {
            "ARCH": cfg.arch.dib,
            "TARGET_ROOT": str(root),
            "TMP_MOUNT_PATH": str(root),
            "TMP_HOOKS_PATH": str(build_dir / "hooks"),
            "TMP_BUILD_DIR": str(build_dir),
            "TMP_IMAGE_DIR": str(build_dir),
            "IMAGE_ELEMENT": " ".join(e.name for e in resolved_elements),
            "IMAGE_ELEMENT_YAML": yaml.safe_dump(
                {e.name: str(e.path or "") for e in resolved_elements}, default_flow_style=True
            ).strip(),
            "ELEMENTS_PATH": ":".join(str(p) for p in search_path),
            "DIB_PYTHON_EXEC": sys.executable,
            "_LIB": str(build_dir / "lib"),
            "DIB_ARGS": " ".join(cfg.element_list),
        }
    )
    return env
