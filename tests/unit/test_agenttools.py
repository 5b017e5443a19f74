"""The tools the agent executes, read from its sources and checked in the tree (agenttools.py)."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from types import SimpleNamespace

import pytest

from sles_ipa_builder.errors import BuildError
from sles_ipa_builder.steps import agenttools
from sles_ipa_builder.steps import sles as slessteps

SITE = "opt/ironic-python-agent/lib/python3.11/site-packages"
HARDWARE = """\
from ironic_python_agent import utils


def raid():
    out, _ = utils.execute('mdadm', '--detail', '--scan')
    return il_utils.execute(
        "multipath", "-ll")


def runner(cmd):
    return utils.execute(*cmd)  # the tool is data here: not counted
"""


def _tree(base: Path, tools: list[str]) -> Path:
    pkg = base / SITE / "ironic_python_agent"
    (pkg / "tests").mkdir(parents=True)
    (pkg / "hardware.py").write_text(HARDWARE)
    (pkg / "tests/test_x.py").write_text("utils.execute('only-in-tests')\n")
    (base / "usr/bin").mkdir(parents=True)
    (base / "usr/sbin").mkdir(parents=True)
    for tool in tools:
        p = base / "usr/sbin" / tool
        p.write_text("#!/bin/sh\n")
        p.chmod(0o755)
    # an absolute link, as packages make them: resolved inside the tree, not on the host
    (base / "usr/bin/qemu-img").symlink_to("/usr/sbin/qemu-img.real")
    return base


def test_calls_read_from_the_sources_tests_excluded(tmp_path: Path) -> None:
    tree = _tree(tmp_path, [])
    package = agenttools.agent_package(tree)
    assert package is not None
    assert agenttools.called_tools(package) == {"mdadm": {"ironic_python_agent/hardware.py"},
                                                "multipath": {"ironic_python_agent/hardware.py"}}


def test_all_core_tools_present_and_a_missing_other_one_warned(tmp_path: Path,
                                                                caplog: pytest.LogCaptureFixture) -> None:
    tree = _tree(tmp_path, [*agenttools.CORE, "qemu-img.real"])
    os.unlink(tree / "usr/sbin/qemu-img")  # only the link in usr/bin, to qemu-img.real, remains
    ctx = SimpleNamespace(root=tree)
    rt = SimpleNamespace(manifest={})
    with caplog.at_level(logging.WARNING):
        slessteps.tools_step(ctx, rt)  # type: ignore[arg-type]
    assert rt.manifest["agent_tools_missing"] == ["multipath"]
    assert "multipath (ironic_python_agent/hardware.py)" in caplog.text


def test_a_missing_core_tool_fails_the_build_with_its_name(tmp_path: Path) -> None:
    tree = _tree(tmp_path, [t for t in agenttools.CORE if t not in ("sgdisk", "nvme")])
    (tree / "usr/sbin/lshw").chmod(0o644)  # not executable: not a tool
    with pytest.raises(BuildError, match="lacks tools the agent needs: sgdisk, lshw, nvme"):
        ns = SimpleNamespace(root=tree, manifest={})
        slessteps.tools_step(ns, ns)  # type: ignore[arg-type]
