"""cli/privileges.py: the capabilities a build needs, named in one line when missing."""

from __future__ import annotations

import os

import pytest

from sles_ipa_builder.cli import privileges
from sles_ipa_builder.errors import ConfigError

FULL = "Name:\tx\nCapEff:\t000001ffffffffff\n"
# podman run without --privileged: chown dac_override fowner fsetid kill setgid setuid setpcap
# net_bind_service sys_chroot setfcap (no CAP_SYS_ADMIN)
PODMAN_DEFAULT = "CapEff:\t00000000800405fb\n"


def test_effective_reads_capeff():
    assert privileges.effective(FULL) == 0x1FFFFFFFFFF
    assert privileges.effective("Name:\tx\n") == 0


def test_missing_names_sys_admin_in_a_default_container():
    assert [n for n, _ in privileges.missing(privileges.effective(PODMAN_DEFAULT))] == ["CAP_SYS_ADMIN"]
    assert privileges.missing(privileges.effective(FULL)) == []
    assert [n for n, _ in privileges.missing(0)] == ["CAP_SYS_ADMIN", "CAP_SYS_CHROOT"]


def test_problem_is_one_sentence_naming_the_capability(monkeypatch):
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    p = privileges.problem(PODMAN_DEFAULT)
    assert p is not None and "CAP_SYS_ADMIN" in p and "\n" not in p


def test_require_raises_a_config_error(monkeypatch):
    monkeypatch.setattr(privileges, "problem", lambda: "missing capability CAP_SYS_ADMIN (x)")
    with pytest.raises(ConfigError) as e:
        privileges.require()
    assert e.value.exit_code == 2 and "--privileged" in (e.value.hint or "")


def test_unshare_refused_is_reported(monkeypatch):
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    monkeypatch.setattr(privileges, "can_unshare", lambda: 1)
    p = privileges.problem(FULL)
    assert p is not None and "unshare" in p and "seccomp or AppArmor" in p
