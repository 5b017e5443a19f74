"""Networking at boot: dhcp-all-interfaces (networkd, NetworkManager, wicked) and ibft-interfaces.

Run on a small tree (tests/hooktree.py) with the engine; see there."""

from __future__ import annotations

from pathlib import Path

import pytest
from hooktree import Target

pytestmark = [pytest.mark.root]


# --- dhcp-all-interfaces -----------------------------------------------------------------------------
def test_dhcp_networkd(target: Target) -> None:
    if not target.exists("usr/lib/systemd/systemd-networkd"):
        pytest.skip("the base root has no systemd-networkd")
    target.run(["dhcp-all-interfaces"], ["install.d"])
    net = target.read("etc/systemd/network/80-dhcp-all-interfaces.network")
    assert "Type=ether" in net and "DHCP=yes" in net
    assert target.enabled("systemd-networkd.service")
    wait = target.read("etc/systemd/system/systemd-networkd-wait-online.service.d/10-any-interface.conf")
    assert "ExecStart=\nExecStart=/usr/lib/systemd/systemd-networkd-wait-online --any\n" in wait \
        or "ExecStart=\nExecStart=/lib/systemd/systemd-networkd-wait-online --any\n" in wait


NM_UNIT = "printf '[Unit]\\nDescription=NM\\n[Install]\\nWantedBy=multi-user.target\\n' > " \
    "$ROOT/usr/lib/systemd/system/NetworkManager.service"


def test_dhcp_network_manager(target: Target) -> None:
    setup = "printf '#!/bin/sh\\n' > $ROOT/usr/sbin/NetworkManager; chmod 0755 $ROOT/usr/sbin/NetworkManager\n"
    setup += NM_UNIT
    target.run(["dhcp-all-interfaces"], ["install.d"], setup=setup, env={"DIB_DHCP_TIMEOUT": "45"})
    conf = target.read("etc/NetworkManager/conf.d/00-main.conf")
    assert "ignore-carrier=*" in conf and "ipv4.dhcp-timeout=45" in conf and "dhcp=internal" in conf
    assert not target.exists("etc/systemd/network/80-dhcp-all-interfaces.network")
    assert target.enabled("NetworkManager.service")


def test_dhcp_network_manager_replaces_wicked(target: Target) -> None:
    # SLES with NetworkManager added: NM must be the one stack that runs, not wicked's network.service
    units = "$ROOT/usr/lib/systemd/system"
    setup = "\n".join([
        "for b in NetworkManager wicked; do",
        "  printf '#!/bin/sh\\n' > $ROOT/usr/sbin/$b; chmod 0755 $ROOT/usr/sbin/$b",
        "done",
        NM_UNIT,
        f"printf '[Unit]\\nDescription=wicked\\n[Install]\\nWantedBy=multi-user.target\\n' > {units}/wicked.service",
        "ln -s /usr/lib/systemd/system/wicked.service $ROOT/etc/systemd/system/multi-user.target.wants/",
    ])
    target.run(["dhcp-all-interfaces"], ["install.d"], setup=setup)
    assert target.enabled("NetworkManager.service")
    assert not target.enabled("wicked.service")
    assert "masking wicked" in target.output
    assert (target.upper / "etc/systemd/system/wicked.service").readlink() == Path("/dev/null")


def test_dhcp_network_manager_masks_networkd_against_presets(target: Target) -> None:
    """SLES 16 and Debian 13 have networkd beside NetworkManager: its wait-online would hold the agent for
    two minutes. Masked, it stays off after the presets that finalise applies (preset-all enable-only)."""
    setup = "printf '#!/bin/sh\\n' > $ROOT/usr/sbin/NetworkManager; chmod 0755 $ROOT/usr/sbin/NetworkManager\n"
    setup += NM_UNIT + "\nmkdir -p $ROOT/usr/lib/systemd/system-preset\n"
    setup += "echo 'enable systemd-networkd.service' > $ROOT/usr/lib/systemd/system-preset/10-test.preset"
    if not (target.lower / "usr/lib/systemd/systemd-networkd").exists():
        pytest.skip("the base root has no systemd-networkd")
    target.run(["dhcp-all-interfaces"], ["install.d"], setup=setup)
    assert "masking systemd-networkd" in target.output
    for unit in ("systemd-networkd.service", "systemd-networkd-wait-online.service"):
        assert (target.upper / "etc/systemd/system" / unit).readlink() == Path("/dev/null"), unit
    target.run([], [], setup="chroot $ROOT systemctl preset-all --preset-mode=enable-only")
    assert not target.enabled("systemd-networkd.service")


def test_dhcp_wicked(target: Target) -> None:
    setup = "printf '#!/bin/sh\\n' > $ROOT/usr/sbin/wicked; chmod 0755 $ROOT/usr/sbin/wicked"
    target.run(["dhcp-all-interfaces"], ["install.d"], setup=setup)
    unit = target.read("usr/lib/systemd/system/dhcp-interface@.service")
    assert "ExecStart=/usr/local/sbin/dhcp-all-interfaces.sh %i /usr/sbin/wicked" in unit
    assert "TimeoutStartSec=60s" in unit and "Environment=DHCP_CARRIER_WAIT=10" in unit
    assert "ConditionPathExists=!/etc/sysconfig/network/ifcfg-%i" in unit
    assert 'SYSTEMD_WANTS}+="dhcp-interface@$name.service"' in target.read(
        "etc/udev/rules.d/99-dhcp-all-interfaces.rules")
    assert target.mode("usr/local/sbin/dhcp-all-interfaces.sh") == 0o755
    # the runtime script, for an interface of this host (lo is skipped, a real one gets an ifcfg)
    target.run([], [], setup="mount -t sysfs sysfs $ROOT/sys\n"
                             "chroot $ROOT /usr/local/sbin/dhcp-all-interfaces.sh lo")
    assert not target.exists("etc/sysconfig/network/ifcfg-lo")
    # in a network namespace of its own: a veth whose peer is down has no link, then gets one
    veth = ("unshare --net sh -euc 'ip link add sib0 type veth peer name sib1; mount -t sysfs sysfs $ROOT/sys;"
            " DHCP_CARRIER_WAIT=1 chroot $ROOT /usr/local/sbin/dhcp-all-interfaces.sh sib0;"
            " test ! -e $ROOT/etc/sysconfig/network/ifcfg-sib0; ip link set sib1 up;"
            " DHCP_CARRIER_WAIT=5 chroot $ROOT /usr/local/sbin/dhcp-all-interfaces.sh sib0'")
    target.run([], [], setup=veth)
    assert "no link on sib0: not configured" in target.output
    assert target.read("etc/sysconfig/network/ifcfg-sib0") == 'BOOTPROTO="dhcp"\nSTARTMODE="auto"\n'


def test_dhcp_without_any_stack_fails(target: Target) -> None:
    setup = "rm -f $ROOT/usr/lib/systemd/systemd-networkd $ROOT/lib/systemd/systemd-networkd"
    result = target.run(["dhcp-all-interfaces"], ["install.d"], setup=setup, check=False)
    assert result.returncode != 0 and "no way to run DHCP" in target.output


# --- ibft-interfaces, selinux-permissive, sysprep ----------------------------------------------------
def test_ibft_interfaces(target: Target) -> None:
    target.run(["ibft-interfaces"])
    assert target.enabled("init-ibft-interfaces.service")
    assert target.read("etc/modules-load.d/ibft.conf").split("\n")[1:4] == ["iscsi_boot_sysfs", "iscsi_ibft",
                                                                            "iscsi_tcp"]
    assert target.mode("usr/local/sbin/init-ibft-interfaces.sh") == 0o755
