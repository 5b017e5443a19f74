"""ipa_plugins (DIB_IPA_PLUGINS): custom hardware managers pip-installed into the agent's venv by a
native step whose cache key holds the plugins' files. The install itself is proved by the shared
end-to-end build (tests/vm/test_end_to_end.py: in the venv, and "Hardware manager found" at boot)."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
from conftest import DATA, PLUGIN

from sles_ipa_builder.cache import keys as layerkeys
from sles_ipa_builder.config import resolve as config
from sles_ipa_builder.engine import plan
from sles_ipa_builder.errors import ConfigError
from sles_ipa_builder.steps import plugins

ARGS: dict[str, Any] = {"root_key": "r" * 64, "media_identity": "iso-1", "repo_digests": {},
                        "commits": {"ironic-python-agent": "a" * 40}}


def cfg(tmp_path: Path, **settings: str) -> config.Config:
    return config.resolve({"workspace": str(tmp_path / "ws"), **settings}, environ={})


@pytest.fixture
def plugin_dir(tmp_path: Path) -> Path:
    d = tmp_path / "hardware_managers"
    shutil.copytree(DATA / "ipa-plugins", d)
    (d / "vendor.whl").write_bytes(b"PK")  # a wheel file by its name: pip judges the rest
    return d


def test_names_are_found_under_the_plugin_dir_or_by_path(tmp_path: Path, plugin_dir: Path) -> None:
    c = cfg(tmp_path, ipa_plugins=f"{PLUGIN}, {plugin_dir / 'vendor.whl'}", ipa_plugin_dir=str(plugin_dir))
    assert plugins.names(c) == [PLUGIN, str(plugin_dir / "vendor.whl")]
    assert plugins.paths(c) == [plugin_dir / PLUGIN, plugin_dir / "vendor.whl"]
    assert plugins.names(cfg(tmp_path)) == []


def test_a_plugin_that_is_not_there_or_no_project_is_one_line(tmp_path: Path, plugin_dir: Path) -> None:
    with pytest.raises(ConfigError, match=f"^IPA plugin nope: {plugin_dir}/nope is not a project directory, "
                                          "wheel or sdist$"):
        cfg(tmp_path, ipa_plugins="nope", ipa_plugin_dir=str(plugin_dir))
    (plugin_dir / "empty").mkdir()
    with pytest.raises(ConfigError, match="has no pyproject.toml, setup.py or setup.cfg"):
        cfg(tmp_path, ipa_plugins="empty", ipa_plugin_dir=str(plugin_dir))


def test_the_step_is_planned_only_when_plugins_are_given(tmp_path: Path, plugin_dir: Path) -> None:
    without = plan.make(cfg(tmp_path))
    assert "65-ipa-plugins" not in [s.name for s in without.steps]
    with_one = plan.make(cfg(tmp_path, ipa_plugins=PLUGIN, ipa_plugin_dir=str(plugin_dir)))
    step = next(s for s in with_one.steps if s.name == "65-ipa-plugins")
    assert step.stage.value == "install" and step.inputs.value is not None
    assert [name for name, _ in step.inputs.value(with_one)] == [PLUGIN]


def test_a_changed_plugin_renews_the_layer_that_holds_it(tmp_path: Path, plugin_dir: Path) -> None:
    def keys() -> list[str]:
        made = plan.make(cfg(tmp_path, ipa_plugins=PLUGIN, ipa_plugin_dir=str(plugin_dir)))
        return [layer.key for layer in layerkeys.compute(made, **ARGS)]

    before = keys()
    (plugin_dir / PLUGIN / "sib_test_hwm/__pycache__").mkdir()
    (plugin_dir / PLUGIN / "sib_test_hwm/__pycache__/x.pyc").write_bytes(b"bytecode")
    assert keys() == before  # bytecode of the host's python is no change
    init = plugin_dir / PLUGIN / "sib_test_hwm/__init__.py"
    init.write_text(init.read_text() + "# changed\n")
    after = keys()
    assert after[:2] == before[:2] and after[2] != before[2]  # packages and venv kept; the tree layer renewed


def test_nordix_element_of_that_name_installs_them_instead(tmp_path: Path, plugin_dir: Path) -> None:
    element = tmp_path / "elements/ipa-plugin-installer"
    (element / "install.d").mkdir(parents=True)
    (element / "install.d/99-install-hardware-managers").write_text("#!/bin/bash\n")
    (element / "install.d/99-install-hardware-managers").chmod(0o755)
    elements = " ".join([*cfg(tmp_path).elements, "ipa-plugin-installer"])
    made = plan.make(cfg(tmp_path, ipa_plugins=PLUGIN, ipa_plugin_dir=str(plugin_dir),
                         elements_path=str(tmp_path / "elements"), elements=elements))
    assert "65-ipa-plugins" not in [s.name for s in made.steps]
    assert "99-install-hardware-managers" in [s.name for s in made.steps]
