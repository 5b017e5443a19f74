"""The environment every hook sees (DIB's exported environment), on the host and in the target."""

from __future__ import annotations

import sys
from pathlib import Path

import yaml

from ..cache.store import cache_root
from ..config.resolve import Config
from .elements import Element


def hook_env(cfg: Config, build_dir: Path, path: list[Path], resolved: list[Element]) -> dict[str, str]:
    """The variables every hook sees (DIB's exported environment), on the host and in the target."""
    root, hooks = build_dir / "root", build_dir / "hooks"
    env = {
        "DIB_DEFAULT_INSTALLTYPE": "source",
        "DIB_INIT_SYSTEM": "systemd",
        "DIB_PYTHON_VERSION": "3",
        "DIB_DEBUG_TRACE": "0",
        "DIB_NO_TMPFS": "1",
        "DIB_CHECKSUM": "0",
        "DISTRO_NAME": "opensuse",
        "DIB_IMAGE_CACHE": str(cache_root() / "image-create"),
    }
    env.update(cfg.source_env())
    env.update(cfg.hook_env())  # the user's DIB_* pass through, so they win over our defaults above
    env.update(
        {
            "ARCH": cfg.arch.dib,
            "TARGET_ROOT": str(root),
            "TMP_MOUNT_PATH": str(root),
            "TMP_HOOKS_PATH": str(hooks),
            "TMP_BUILD_DIR": str(build_dir),
            "TMP_IMAGE_DIR": str(build_dir),
            "IMAGE_ELEMENT": " ".join(e.name for e in resolved),
            "IMAGE_ELEMENT_YAML": yaml.safe_dump(
                {e.name: str(e.path or "") for e in resolved}, default_flow_style=True
            ).strip(),
            "ELEMENTS_PATH": ":".join(str(p) for p in path),
            "DIB_PYTHON_EXEC": sys.executable,
            "_LIB": str(build_dir / "lib"),
            "DIB_ARGS": " ".join(cfg.element_list),
        }
    )
    return env
