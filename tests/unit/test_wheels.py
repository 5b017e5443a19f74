"""The --offline wheelhouse: what an online build pins and saves, and the offline pip settings."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import pytest

from sles_ipa_builder import run
from sles_ipa_builder.steps import wheels


def dist(venv: Path, name: str, version: str, *, direct: bool = False) -> None:
    info = venv / "lib/python3.11/site-packages" / f"{name.replace('-', '_')}-{version}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n\nlong text\n")
    if direct:
        (info / "direct_url.json").write_text('{"url": "file:///tmp/src", "dir_info": {}}')


def test_pins_what_came_from_an_index(tmp_path: Path) -> None:
    venv = tmp_path / wheels.VENV
    dist(venv, "ironic-python-agent", "13.0.0", direct=True)  # from the cloned source: built each time
    dist(venv, "oslo.config", "9.4.0")
    dist(venv, "Werkzeug", "3.0.1")
    dist(venv, "pip", "23.0.1")  # ensurepip's: not pinned
    dist(venv, "setuptools", "66.1.1")
    assert wheels.requirements(tmp_path) == ["oslo.config==9.4.0", "Werkzeug==3.0.1"]


def test_no_venv_pins_nothing(tmp_path: Path) -> None:
    assert wheels.requirements(tmp_path) == []


def test_build_backends_of_the_sources(tmp_path: Path) -> None:
    src = tmp_path / "tmp/ironic-python-agent"
    src.mkdir(parents=True)
    (src / "pyproject.toml").write_text('[build-system]\nrequires = ["pbr>=6.0.0", "setuptools>=64.0.0"]\n')
    (tmp_path / "tmp/requirements").mkdir()  # no pyproject.toml: pip's fallback backend
    got = wheels.build_requirements(tmp_path, ["/tmp/ironic-python-agent", "/tmp/requirements", "/tmp/absent"])
    assert got == ["pbr>=6.0.0", "setuptools", "setuptools>=64.0.0", "wheel"]


@pytest.mark.media
def test_offline_with_an_empty_wheelhouse_stops_before_any_work(tmp_path: Path, fixture_media: Any) -> None:
    tree = tmp_path / "tree"
    tree.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DIB_", "IPA_", "IRONIC_", "SIB_"))}
    env["XDG_CACHE_HOME"] = str(tmp_path / "empty-cache")
    res = run.run([sys.executable, "-m", "sles_ipa_builder", "build", "--offline", "--base-tree", str(tree),
                   "--iso", str(fixture_media.iso), "--workspace", str(tmp_path / "ws")],
                  env=env, check=False, capture=True)
    assert res.returncode == 2, res.stdout + res.stderr
    assert "error: --offline: the pip wheelhouse is empty" in res.stderr
    assert "hint: run one build online first" in res.stderr
    assert not (tmp_path / "ws" / "build").exists()
