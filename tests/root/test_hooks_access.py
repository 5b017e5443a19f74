"""Who can log in, and how: devuser, dynamic-login, openssh-server, runtime-ssh-host-keys.

Run on a small tree (tests/hooktree.py) with the engine; see there."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from hookfakes import SECRET
from hooktree import Target

pytestmark = [pytest.mark.root]


# --- devuser -----------------------------------------------------------------------------------------
def test_devuser_full(target: Target, tmp_path: Path) -> None:
    keys = tmp_path / "keys.pub"
    keys.write_text("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFakeKeyForTheTest test@example\n")
    target.run(["sles-zypper-config", "devuser"], ["extra-data.d", "install.d"], env={
        "DIB_DEV_USER_USERNAME": "metal3", "DIB_DEV_USER_PASSWORD": SECRET,
        "DIB_DEV_USER_PWDLESS_SUDO": "yes", "DIB_DEV_USER_AUTHORIZED_KEYS": str(keys),
        "DIB_DEV_USER_SHELL": "/bin/bash", "DIB_DEBUG_TRACE": "1",
    })
    passwd = [line for line in target.read("etc/passwd").splitlines() if line.startswith("metal3:")]
    assert passwd and passwd[0].endswith(":/home/metal3:/bin/bash")
    shadow = [line for line in target.read("etc/shadow").splitlines() if line.startswith("metal3:")]
    assert shadow and shadow[0].split(":")[1].startswith("$")
    # the password itself: in no file, not in the hook output even with DIB_DEBUG_TRACE=1
    assert target.files_containing(SECRET) == []
    assert SECRET not in target.output
    assert target.read("etc/sudoers.d/metal3") == "metal3 ALL=(ALL) NOPASSWD:ALL\n"
    assert target.mode("etc/sudoers.d/metal3") == 0o440
    ak = target.path("home/metal3/.ssh/authorized_keys")
    assert ak.read_text() == keys.read_text() and target.mode("home/metal3/.ssh/authorized_keys") == 0o600
    assert target.mode("home/metal3/.ssh") == 0o700
    uid = int(passwd[0].split(":")[2])
    assert ak.stat().st_uid == uid


def test_devuser_never_takes_the_builders_key(target: Target, tmp_path: Path) -> None:
    """Seed bug §8.13: with no DIB_DEV_USER_AUTHORIZED_KEYS the builder's ~/.ssh/id_rsa.pub was used."""
    ssh = tmp_path / ".ssh"  # HOME of the hooks is tmp_path's build parent
    ssh.mkdir()
    (ssh / "id_rsa.pub").write_text("ssh-rsa AAAAB3NzaBuilderKey builder@host\n")
    target.run(["devuser"], ["extra-data.d", "install.d"], env={"DIB_DEV_USER_USERNAME": "metal3"})
    assert not target.exists("home/metal3/.ssh/authorized_keys")
    assert target.files_containing("BuilderKey") == []
    assert not target.exists("etc/sudoers.d/metal3")


# --- dynamic-login -----------------------------------------------------------------------------------
def test_dynamic_login(target: Target, tmp_path: Path) -> None:
    crypted = "$6$abc$" + "y" * 86
    cmdline = tmp_path / "cmdline"
    cmdline.write_text(f'BOOT_IMAGE=/vmlinuz rootpwd="{crypted}" sshkey="ssh-ed25519 AAAAkey op@host" ro\n')
    target.run(["dynamic-login"], ["install.d", "post-install.d"])
    assert target.enabled("dynamic-login.service")
    assert target.mode("usr/local/bin/dynamic-login") == 0o755
    # and the script itself, at "boot", with that kernel command line
    boot = (f"mount -t proc proc $ROOT/proc\nmount --bind {cmdline} $ROOT/proc/cmdline\n"
            "chroot $ROOT /usr/local/bin/dynamic-login")
    target.run([], [], setup=boot)
    assert f"root:{crypted}:" in target.read("etc/shadow")
    assert target.read("root/.ssh/authorized_keys") == "ssh-ed25519 AAAAkey op@host\n"
    assert target.mode("root/.ssh/authorized_keys") == 0o600
    assert crypted not in target.output


# --- openssh-server / runtime-ssh-host-keys ----------------------------------------------------------
def _sshd_unit(target: Target) -> tuple[str, str]:
    """(unit name, path) of the base root's real sshd unit (sshd.service on SUSE, ssh.service on Debian)."""
    for unit in ("sshd.service", "ssh.service"):
        for d in ("usr/lib/systemd/system", "lib/systemd/system"):
            p = target.lower / d / unit
            if p.is_file() and not p.is_symlink():
                return unit, f"{d}/{unit}"
    pytest.skip("the base root has no sshd unit")


def test_openssh_server_enabled_and_hardened(target: Target) -> None:
    unit, _ = target.sshd_unit()
    target.run(["openssh-server"], ["post-install.d"])
    assert target.enabled(unit)
    merged = target.read("etc/ssh/sshd_config")
    dropin = "etc/ssh/sshd_config.d/10-hardening.conf"
    text = target.read(dropin) if target.exists(dropin) else merged
    assert "Ciphers chacha20-poly1305@openssh.com," in text
    assert "MACs hmac-sha2-512-etm@openssh.com," in text
    assert "KexAlgorithms curve25519-sha256@libssh.org," in text
    assert not target.files_containing("BEGIN OPENSSH PRIVATE KEY")  # the sshd -t key was removed


def test_openssh_hardening_in_sshd_config_before_match(target: Target) -> None:
    setup = textwrap.dedent("""\
        printf 'Port 22\\n# Ciphers and keying\\nCiphers aes128-ctr\\n' > $ROOT/etc/ssh/sshd_config
        printf 'Match User nobody\\n    X11Forwarding no\\n' >> $ROOT/etc/ssh/sshd_config
        """)
    target.run(["openssh-server"], ["post-install.d"], setup=setup)
    lines = target.read("etc/ssh/sshd_config").splitlines()
    match = lines.index("Match User nobody")
    for key in ("Ciphers", "MACs", "KexAlgorithms"):
        at = [i for i, line in enumerate(lines) if line.startswith(key + " ")]
        assert len(at) == 1 and at[0] < match, (key, lines)


def test_openssh_vendor_config_from_usr_etc(target: Target) -> None:
    """SLES 16: only /usr/etc/ssh/sshd_config exists; /etc gets a copy (hardening off or on), and it checks."""
    setup = "mkdir -p $ROOT/usr/etc/ssh && mv $ROOT/etc/ssh/sshd_config $ROOT/usr/etc/ssh/sshd_config"
    vendor = target.read("etc/ssh/sshd_config")
    target.run(["openssh-server"], ["post-install.d"], setup=setup, env={"DIB_OPENSSH_SERVER_HARDENING": "0"})
    assert target.read("etc/ssh/sshd_config") == vendor
    assert "taking SLES 16's vendor default from /usr/etc/ssh" in target.output
    target.run(["openssh-server"], ["post-install.d"], setup=setup)
    dropin = "etc/ssh/sshd_config.d/10-hardening.conf"
    text = target.read(dropin) if target.exists(dropin) else target.read("etc/ssh/sshd_config")
    assert "Ciphers chacha20-poly1305@openssh.com," in text


def test_openssh_hardening_off(target: Target) -> None:
    target.run(["openssh-server"], ["post-install.d"], env={"DIB_OPENSSH_SERVER_HARDENING": "0"})
    assert not target.exists("etc/ssh/sshd_config.d/10-hardening.conf")
    assert "etc/ssh/sshd_config" not in target.changed()


def test_runtime_ssh_host_keys(target: Target) -> None:
    setup = "ssh-keygen -q -t ed25519 -N '' -f $ROOT/etc/ssh/ssh_host_test_ed25519_key"
    target.run(["runtime-ssh-host-keys"], ["install.d", "post-install.d", "cleanup.d"], setup=setup)
    keys = {p.name for d in (target.lower / "etc/ssh", target.upper / "etc/ssh") if d.is_dir()
            for p in d.glob("ssh_host_*")}
    # the key made by setup (only ever in upper, so gone without a trace) and the base's own keys
    assert not target.exists("etc/ssh/ssh_host_test_ed25519_key")
    assert [k for k in keys if target.exists(f"etc/ssh/{k}")] == []
    sshd = target.read(target.sshd_unit()[1])
    if "ssh-keygen" in sshd or "gen-keys" in sshd:
        assert not target.enabled("runtime-ssh-host-keys.service")
    else:
        assert target.enabled("runtime-ssh-host-keys.service")


def test_runtime_ssh_host_keys_not_enabled_where_sshd_makes_keys(target: Target) -> None:
    setup = textwrap.dedent("""\
        mkdir -p $ROOT/usr/lib/systemd/system
        printf '[Service]\\nExecStartPre=/usr/sbin/sshd-gen-keys-start\\nExecStart=/usr/sbin/sshd -D\\n' \\
            > $ROOT/usr/lib/systemd/system/sshd.service
        printf '[Install]\\nWantedBy=multi-user.target\\n' >> $ROOT/usr/lib/systemd/system/sshd.service
        """)
    target.run(["runtime-ssh-host-keys"], ["install.d", "post-install.d"], setup=setup)
    assert not target.enabled("runtime-ssh-host-keys.service")
