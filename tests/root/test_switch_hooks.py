"""The upstream switches and optional packages of sles-ipa-install, run in a chroot of a busybox+bash
tree with a stand-in zypper, rpm and systemctl that record their calls (a build on the test media
runs them for real: tests/test_end_to_end.py and `make demo`)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import make_busybox_root
from test_user_elements import with_bash

from sles_ipa_builder.config import resolve as config
from sles_ipa_builder.engine.hookenv import hook_env

HOOKS = Path(__file__).resolve().parents[2] / "elements/sles-ipa-install"
pytestmark = pytest.mark.root

ZYPPER = """#!/bin/bash
echo "zypper $*" >> /var/log/calls
if [[ " $* " == *" search "* ]]; then
    for p in "$@"; do
        if grep -qxF -- "$p" /etc/repo-has; then echo "<solvable status=\\"not-installed\\" name=\\"$p\\"/>"; fi
    done
fi
"""
RPM = """#!/bin/bash
echo "rpm $*" >> /var/log/calls
[ "$1" = -q ] && grep -qxF -- "$2" /etc/installed
"""
SYSTEMCTL = '#!/bin/bash\necho "systemctl $*" >> /var/log/calls\n'


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    if os.geteuid() != 0:
        pytest.skip("needs root")
    root = with_bash(make_busybox_root(tmp_path / "tree"))
    (root / "usr/bin/zypper").write_text(ZYPPER)
    for name, text in (("rpm", RPM), ("systemctl", SYSTEMCTL)):
        (root / "usr/bin" / name).write_text(text)
    for name in ("zypper", "rpm", "systemctl"):
        (root / "usr/bin" / name).chmod(0o755)
    (root / "etc/repo-has").write_text("xorriso\nkexec-tools\n")
    (root / "etc/installed").write_text("openssh\nopenssh-server\n")
    for tool in ("usr/bin/ss", "usr/bin/diff", "usr/bin/top", "bin/ping", "usr/bin/vim", "usr/bin/ip",
                 "usr/bin/dmesg"):
        (root / tool).parent.mkdir(parents=True, exist_ok=True)
        (root / tool).write_text("#!/bin/sh\n")
    unit = root / "usr/lib/systemd/system/runtime-ssh-host-keys.service"
    unit.parent.mkdir(parents=True)
    unit.write_text("[Unit]\n")
    return root


def run_hook(root: Path, rel: str, **settings: object) -> subprocess.CompletedProcess[str]:
    cfg = config.resolve(settings, environ={})
    env = {k: v for k, v in hook_env(cfg, [], []).items() if k.startswith("DIB_")}
    shutil.copy2(HOOKS / rel, root / "tmp/hook")
    return subprocess.run(["chroot", str(root), "/bin/bash", "/tmp/hook"], capture_output=True, text=True,
                          env={"PATH": "/usr/bin:/bin:/usr/sbin:/sbin", **env}, check=False)


def calls(root: Path) -> list[str]:
    f = root / "var/log/calls"
    return f.read_text().splitlines() if f.exists() else []


def test_optional_packages_installed_when_provided_warned_when_not(tree: Path) -> None:
    r = run_hook(tree, "post-install.d/50-packages-if-available")
    assert r.returncode == 0, r.stderr
    zypper = "zypper --non-interactive"
    assert calls(tree)[-1] == f"{zypper} install --no-recommends xorriso kexec-tools"
    warned = [ln for ln in r.stderr.splitlines() if ln.startswith("warning:")]
    assert warned == [f"warning: no configured repository provides {p}: the ramdisk goes without it"
                      for p in ("nmstate", "openvswitch")]
    (tree / "etc/repo-has").write_text("")
    (tree / "var/log/calls").unlink()
    r = run_hook(tree, "post-install.d/50-packages-if-available")
    assert r.returncode == 0 and not any(" install " in c for c in calls(tree)) and r.stderr.count("warning:") == 4


def test_no_sshd_unless_asked(tree: Path) -> None:
    r = run_hook(tree, "finalise.d/40-ssh-only-when-asked")
    assert r.returncode == 0, r.stderr
    assert "zypper --non-interactive remove --clean-deps openssh openssh-server" in calls(tree)
    assert "systemctl disable sshd.service" in calls(tree)
    assert not (tree / "usr/lib/systemd/system/runtime-ssh-host-keys.service").exists()
    (tree / "var/log/calls").unlink()
    for settings in ({"install_ssh": "true"}, {"dev_user_ssh": "true", "dev_user_ssh_path": "/etc/passwd"},
                     {"dev_user_authorized_keys": "/etc/passwd"}):
        r = run_hook(tree, "finalise.d/40-ssh-only-when-asked", **settings)
        assert r.returncode == 0 and "keeping the SSH server" in r.stdout and calls(tree) == []
    # said explicitly, no SSH server even with keys for the dev user
    assert not config.resolve({"dev_user_authorized_keys": "/etc/passwd", "install_ssh": "false"},
                              environ={}).install_ssh


def test_debug_tools_go_unless_asked(tree: Path) -> None:
    r = run_hook(tree, "finalise.d/45-debug-tools-only-when-asked", install_debug_tools="true")
    assert r.returncode == 0 and (tree / "usr/bin/ss").exists()
    r = run_hook(tree, "finalise.d/45-debug-tools-only-when-asked")
    assert r.returncode == 0, r.stderr
    for gone in ("usr/bin/ss", "usr/bin/diff", "usr/bin/top", "bin/ping", "usr/bin/vim"):
        assert not (tree / gone).exists(), gone
    assert (tree / "usr/bin/ip").exists() and (tree / "usr/bin/dmesg").exists()  # the agent runs these


def test_a_hooks_warning_lines_reach_the_console() -> None:
    import logging

    from sles_ipa_builder.engine.scripts import line_level

    assert line_level("warning: no configured repository provides nmstate: the ramdisk goes without it") == \
        logging.WARNING
    assert line_level("Retrieving package xorriso") == logging.DEBUG
