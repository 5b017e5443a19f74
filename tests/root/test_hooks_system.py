"""The system around the agent: zypper config, journal, SELinux, sysprep, module autoload, build info,
and the whole default element list together.

Run on a small tree (tests/hooktree.py) with the engine; see there."""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

import pytest
from hookfakes import SECRET, fake_ipa_setup, fake_package
from hooktree import ORDER, Target

pytestmark = [pytest.mark.root]


# --- sles-zypper-config ------------------------------------------------------------------------------
def test_sles_zypper_config(target: Target) -> None:
    target.run(["sles", "sles-zypper-config"])
    defs = target.read("etc/login.defs").splitlines()
    assert [line for line in defs if line.startswith("USERGROUPS_ENAB")] == ["USERGROUPS_ENAB yes"]
    assert "98-zypper-clean-cache" in target.output
    # the system python stays: nothing under usr/bin/python3* was touched
    assert not [r for r in target.changed() if r.startswith("usr/bin/python")]


def test_login_defs_added_where_missing(target: Target) -> None:
    target.run(["sles-zypper-config"], ["install.d"],
               setup="sed -i '/USERGROUPS_ENAB/d' $ROOT/etc/login.defs")
    assert target.read("etc/login.defs").splitlines().count("USERGROUPS_ENAB yes") == 1


# --- journal-to-console ------------------------------------------------------------------------------
def test_journal_to_console(target: Target) -> None:
    target.run(["journal-to-console"])
    conf = "etc/systemd/journald.conf.d/log-to-console.conf"
    assert target.read(conf) == "[Journal]\nForwardToConsole=yes\n" and target.mode(conf) == 0o644


def test_selinux_permissive(target: Target) -> None:
    target.run(["selinux-permissive"])
    assert target.read("etc/selinux/config") == "SELINUX=permissive\nSELINUXTYPE=targeted\n"


def test_sysprep_machine_id(target: Target) -> None:
    setup = "echo 0123456789abcdef0123456789abcdef > $ROOT/etc/machine-id"
    target.run(["sysprep"], setup=setup)
    assert target.read("etc/machine-id") == ""  # a new ID at each boot, and no first-boot mode
    dbus = target.lower / "var/lib/dbus/machine-id"
    if dbus.is_symlink():
        assert (target.upper / "var/lib/dbus/machine-id").exists() is False  # link left alone


def test_sysprep_dbus_copy_emptied(target: Target) -> None:
    setup = textwrap.dedent("""\
        mkdir -p $ROOT/var/lib/dbus; rm -f $ROOT/var/lib/dbus/machine-id
        echo 0123456789abcdef0123456789abcdef > $ROOT/var/lib/dbus/machine-id
        """)
    target.run(["sysprep"], setup=setup)
    assert target.read("var/lib/dbus/machine-id") == ""
    assert target.read("etc/machine-id") == ""


# --- sles-ipa-ramdisk-base -----------------------------------------------------------------------------
UNITS = textwrap.dedent("""\
    d=$ROOT/usr/lib/systemd/system; mkdir -p $d/getty.target.wants $ROOT/usr/lib/systemd/system-preset
    printf '[Service]\\nExecStart=/bin/true\\n[Install]\\nWantedBy=multi-user.target\\n' > $d/sib-daemon.service
    printf '[Service]\\nExecStart=/usr/bin/fio --server\\n[Install]\\nWantedBy=multi-user.target\\n' > $d/fio.service
    printf '[Service]\\nExecStart=/bin/true\\n' > $d/getty-static.service
    ln -sf ../getty-static.service $d/getty.target.wants/getty-static.service
    printf 'enable sib-daemon.service\\nenable fio.service\\n' > $ROOT/usr/lib/systemd/system-preset/10-sib.preset
    g=$ROOT/usr/lib/systemd/system-generators; mkdir -p $g
    for x in systemd-gpt-auto-generator systemd-fstab-generator; do printf '#!/bin/sh\\n' > $g/$x; done
    """)


def test_ramdisk_base_settles_units_at_build_time(target: Target) -> None:
    target.run(["sles-ipa-ramdisk-base"], ["finalise.d"], setup=UNITS)
    wants = "etc/systemd/system/multi-user.target.wants"
    assert target.exists(f"{wants}/sib-daemon.service")  # its preset, applied now rather than at first boot
    assert not target.exists(f"{wants}/fio.service")  # preset on, but the agent runs fio itself
    assert os.readlink(target.path("etc/systemd/system/getty-static.service")) == "/dev/null"  # static: masked
    line = next(x for x in target.output.splitlines() if "units of installed systems left out" in x)
    assert "fio.service" in line and "getty-static.service" in line and "sib-daemon" not in line
    assert os.readlink(target.path("etc/systemd/system-generators/systemd-gpt-auto-generator")) == "/dev/null"
    assert not target.exists("etc/systemd/system-generators/systemd-fstab-generator")  # reads the kernel's root=


def test_ramdisk_base_keeps_the_units_asked_for(target: Target) -> None:
    target.run(["sles-ipa-ramdisk-base"], ["finalise.d"],
               env={"DIB_IPA_KEEP_UNITS": "fio.service systemd-gpt-auto-generator"}, setup=UNITS)
    assert target.exists("etc/systemd/system/multi-user.target.wants/fio.service")
    assert not target.exists("etc/systemd/system-generators/systemd-gpt-auto-generator")
    assert os.readlink(target.path("etc/systemd/system/getty-static.service")) == "/dev/null"  # not kept


# --- ipa-module-autoload, ipa-add-buildinfo ----------------------------------------------------------
def test_module_autoload_idempotent(target: Target) -> None:
    env = {"DIB_ADDITIONAL_IPA_KERNEL_MODULES": "megaraid_sas  mpt3sas"}
    target.run(["ipa-module-autoload"], ["install.d"], env=env)
    target.run(["ipa-module-autoload"], ["install.d"], env=env)
    assert target.read("etc/modules-load.d/load.conf") == "megaraid_sas\nmpt3sas\n"


def test_module_autoload_finds_compressed_modules_and_warns_of_missing_ones(target: Target) -> None:
    """SLES ships .ko.zst: a module is found in modules.dep whatever its compression, or built in."""
    kdir = "$ROOT/usr/lib/modules/6.4.0-150700.51-default"
    setup = (f"mkdir -p {kdir} && printf '%s\\n' 'kernel/drivers/scsi/megaraid/megaraid_sas.ko.zst:'"
             f" 'kernel/drivers/block/nbd.ko.xz: kernel/lib/x.ko' 'kernel/drivers/net/e1000e/e1000e.ko:'"
             f" > {kdir}/modules.dep && echo kernel/drivers/block/virtio_blk.ko > {kdir}/modules.builtin")
    env = {"DIB_ADDITIONAL_IPA_KERNEL_MODULES": "megaraid_sas nbd e1000e virtio-blk mpt3sas"}
    target.run(["ipa-module-autoload"], ["install.d"], env=env, setup=setup)
    assert target.read("etc/modules-load.d/load.conf").split() == env["DIB_ADDITIONAL_IPA_KERNEL_MODULES"].split()
    warned = [line for line in target.output.splitlines() if "in no kernel of the image" in line]
    assert len(warned) == 1 and "'mpt3sas'" in warned[0], target.output[-2000:]


def test_module_autoload_rejects_garbage(target: Target) -> None:
    result = target.run(["ipa-module-autoload"], ["install.d"],
                        env={"DIB_ADDITIONAL_IPA_KERNEL_MODULES": "ok ../../etc"}, check=False)
    assert result.returncode != 0 and "not a module name" in target.output


def test_add_buildinfo(target: Target) -> None:
    target.run(["ipa-add-buildinfo"], ["install.d"], env={
        "SOURCE_DATE_EPOCH": "1700000000", "SIB_BUILDER_VERSION": "9.9.9",
        "SIB_BASE_IMAGE_SHA256": "ab" * 32})
    info = target.read("buildinfo.txt")
    assert "build date (UTC): 2023-11-14T22:13:20Z" in info
    assert "builder version: 9.9.9" in info and "base image sha256: " + "ab" * 32 in info
    assert "elements: ipa-add-buildinfo" in info and "image name: ironic-python-agent" in info
    assert "media: unknown" in info



# --- the whole default list, plus the optional elements, together --------------------------------------
DEFAULT = ("sles-ipa-install sles sles-zypper-config sles-ipa-ramdisk-base dynamic-login journal-to-console "
           "devuser openssh-server sles-extra-hardware ipa-module-autoload").split()


def test_default_elements_together(target: Target, tmp_path: Path) -> None:
    """All hooks of the default list + sles-ipa-tls + ipa-add-buildinfo in one run, in the engine's order."""
    keys = tmp_path / "keys.pub"
    keys.write_text("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIDevKey dev@example\n")
    setup = "\n".join([
        fake_ipa_setup(),
        fake_package("$ROOT/tmp/fake-hardware", "hardware", ["hardware-detect"], {}),
        "ssh-keygen -q -t ed25519 -N '' -f $ROOT/etc/ssh/ssh_host_test_key",
    ])
    env = {"ENABLE_DEV_USER_PASS": "true", "DIB_DEV_USER_PASSWORD": SECRET,
           "DIB_DEV_USER_AUTHORIZED_KEYS": str(keys), "DIB_IPA_HARDWARE_PACKAGE": "/tmp/fake-hardware",
           "PIP_NO_INDEX": "1", "DIB_DEBUG_TRACE": "1"}
    target.run([*DEFAULT, "sles-ipa-tls", "ipa-add-buildinfo"], ORDER, env=env, setup=setup, resolve=True)
    for unit in ("ironic-python-agent.service", "ironic-agent-create-rescue-user.path",
                 "dynamic-login.service", "init-ibft-interfaces.service", target.sshd_unit()[0]):
        assert target.enabled(unit), unit
    for entry in ("ironic-python-agent", "ironic-collect-introspection-data", "hardware-detect"):
        assert os.readlink(target.upper / "usr/local/bin" / entry) == f"/opt/ironic-python-agent/bin/{entry}"
    assert target.read("etc/modules-load.d/load.conf") == "megaraid_sas\n"
    assert target.exists("etc/systemd/journald.conf.d/log-to-console.conf")
    assert target.read("etc/selinux/config").startswith("SELINUX=permissive")
    assert target.read("etc/machine-id") == ""
    assert target.read("home/metal3/.ssh/authorized_keys") == keys.read_text()
    assert target.read("etc/sudoers.d/metal3") == "metal3 ALL=(ALL) NOPASSWD:ALL\n"
    assert target.mode("etc/ironic-python-agent.d/agent.key") == 0o600
    assert "elements: " in target.read("buildinfo.txt") and "sles-ipa-install" in target.read("buildinfo.txt")
    # gone before packing: sources, host keys; never anywhere: the password
    for gone in ("tmp/ironic-python-agent", "tmp/requirements", "etc/ssh/ssh_host_test_key"):
        assert not target.exists(gone), gone
    base_keys = [p.name for p in (target.lower / "etc/ssh").glob("ssh_host_*")]
    assert [k for k in base_keys if target.exists(f"etc/ssh/{k}")] == []
    assert target.files_containing(SECRET) == [] and SECRET not in target.output
