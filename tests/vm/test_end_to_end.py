"""The whole pipeline on the test media: build with the default elements, boot, check the artifacts.

This is what `make demo` does for a newcomer. It is slow (a real libguestfs extraction, zypper
installs from the ISO, a pip install of IPA from source, a QEMU boot under TCG) and runs in CI.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import tarfile
from pathlib import Path

import pytest
from conftest import static_network_data

from sles_ipa_builder import run
from sles_ipa_builder.fixtures import testmedia
from sles_ipa_builder.packing import inventory, ramdisk

pytestmark = [pytest.mark.root, pytest.mark.guestfs, pytest.mark.qemu, pytest.mark.media, pytest.mark.slow]
NAME = "ipa-e2e"


def test_artifacts_and_checksums(built):
    out = built["out"]
    for suffix in ("kernel", "initramfs", "tar", "esp.img", "iso", "sha256", "packages", "manifest.json"):
        assert (out / f"{NAME}.{suffix}").is_file(), suffix
    with tarfile.open(out / f"{NAME}.tar") as tar:
        assert tar.getnames() == [f"{NAME}.kernel", f"{NAME}.initramfs"]
    sums = dict(reversed(line.split()) for line in (out / f"{NAME}.sha256").read_text().splitlines())
    for name, digest in sums.items():
        assert hashlib.sha256((out / name).read_bytes()).hexdigest() == digest


def test_sbom_of_the_build_validates_and_matches_the_package_list(built):
    """The CycloneDX schema accepts the real build's SBOM; it lists what <name>.packages lists (rpm -qa and
    the venv), the manifest's source commits, the kernel and both inputs with their sha256."""
    from cyclonedx.schema import SchemaVersion
    from cyclonedx.validation.json import JsonStrictValidator

    out = built["out"]
    text = (out / f"{NAME}.cdx.json").read_text()
    assert JsonStrictValidator(SchemaVersion.V1_6).validate_str(text) is None
    doc = json.loads(text)
    comps = doc["components"]
    packages = (out / f"{NAME}.packages").read_text().split("# pip freeze")
    rpm_lines = [x for x in packages[0].splitlines() if x and not x.startswith("#")]
    # the pip section ends at the next blank line (the repository of each package follows)
    pip_lines = [x for x in packages[1].split("\n\n")[0].splitlines()[1:] if x and not x.startswith("#")]
    rpms = [c for c in comps if c.get("purl", "").startswith("pkg:rpm/") and not c["bom-ref"].startswith("boot:")]
    boot = {c["name"]: c["version"] for c in comps if c["bom-ref"].startswith("boot:")}
    assert set(boot) == {"shim", "grub2-x86_64-efi", "syslinux"} and all(boot.values())  # in the ESP and ISO
    pys = {f"{c['name']}=={c['version']}" for c in comps if c.get("purl", "").startswith("pkg:pypi/")}
    assert len(rpms) == len([x for x in rpm_lines if not x.startswith("gpg-pubkey")]) > 10
    assert all(c["version"] and "arch=" in c["purl"] for c in rpms)
    assert pys == set(pip_lines)
    manifest = json.loads((out / f"{NAME}.manifest.json").read_text())
    commits = {c["version"] for c in comps if c["bom-ref"].startswith("git:")}
    assert commits == {s["commit"] for s in manifest["sources"]} and commits
    files = {c["name"]: c["hashes"][0]["content"] for c in comps if c["type"] == "file"}
    kernel = hashlib.sha256((out / f"{NAME}.kernel").read_bytes()).hexdigest()
    assert files[f"{NAME}.kernel"] == kernel
    assert manifest["inputs"]["base"]["sha256"] in files.values()
    assert len([c for c in comps if c.get("scope") == "excluded"]) == 2  # base image and Media1 ISO


def test_manifest(built):
    manifest = json.loads((built["out"] / f"{NAME}.manifest.json").read_text())
    text = json.dumps(manifest)
    assert built["password"] not in text
    assert "ironic-python-agent" in text
    report = json.loads((built["work"] / "report.json").read_text())
    assert report


def test_tree_holds_what_the_elements_promise(built):
    t = built["tree"]
    assert os.readlink(t / "init") == "./sbin/init" or os.readlink(t / "init") == "sbin/init"
    assert (t / "etc/fstab").read_text().strip() == "#disabled"
    assert (t / "opt/ironic-python-agent/bin/ironic-python-agent").exists()
    for link in ("ironic-python-agent", "hardware-detect"):  # absolute links: resolve inside the tree
        target = os.readlink(t / "usr/local/bin" / link)
        assert (t / target.lstrip("/")).is_file(), (link, target)
    unit = t / "usr/lib/systemd/system/ironic-python-agent.service"
    assert "ConditionPathExists=!/etc/.rescued" in unit.read_text()
    assert (t / "etc/systemd/system/multi-user.target.wants/ironic-python-agent.service").is_symlink()
    assert "megaraid_sas" in (t / "etc/modules-load.d/load.conf").read_text()
    assert (t / "etc/systemd/journald.conf.d/log-to-console.conf").is_file()
    assert (t / "etc/machine-id").read_text() == ""  # a new ID at each boot, no first-boot mode
    # the ipa_plugins hardware manager: in the venv, registered under the agent's entry point group
    venv = next((t / "opt/ironic-python-agent/lib").glob("python3.*/site-packages"))
    assert (venv / "sib_test_hwm/__init__.py").is_file()
    entry_points = next(venv.glob("sib_test_hardware_manager-1.0.dist-info")) / "entry_points.txt"
    assert "[ironic_python_agent.hardware_managers]" in entry_points.read_text()
    assert not (t / "tmp/ipa-plugins").exists()
    assert not list((t / "etc/ssh").glob("ssh_host_*"))
    assert (t / "etc/ironic-python-agent.d/agent.key").stat().st_mode & 0o077 == 0
    assert (t / "buildinfo.txt").is_file()
    assert (t / "usr/bin/sysbench").is_file()  # the test media has it: 60-sysbench-if-available installed it
    assert (t / "usr/bin/xorriso").is_file()  # the test media has it: 50-packages-if-available installed it
    # the upstream switches: SSH asked for here (DIB_IPA_INSTALL_SSH), the debug tools not (dmesg and ip stay)
    assert (t / "usr/sbin/sshd").exists() and not (t / "usr/bin/ss").exists()
    assert (t / "usr/bin/dmesg").is_file() and (t / "usr/bin/ip").is_file()
    for cmd in ("install-packages", "pkg-map"):  # for users' DIB elements, as DIB's install-bin leaves them
        assert os.access(t / "usr/local/bin" / cmd, os.X_OK), cmd
    assert not (t / "etc/zypp/repos.d").exists() or not any(
        "127.0.0.1" in p.read_text() for p in (t / "etc/zypp/repos.d").glob("*.repo"))
    assert not (t / "tmp/ironic-python-agent").exists()
    assert not list(t.glob("lldpad*"))


def test_what_the_ramdisk_leaves_out_and_precompiles(built):
    t = built["tree"]
    manifest = json.loads((built["out"] / f"{NAME}.manifest.json").read_text())
    assert not (t / "usr/bin/git").exists()  # build-only
    site = next((t / "opt/ironic-python-agent/lib").glob("python3*/site-packages"))
    agent = list(site.glob("ironic_python_agent/cmd/__pycache__/agent.cpython-*.pyc"))
    assert agent and ramdisk.unchecked_pyc(bytes(agent[0]))
    stale = [p for p in t.rglob("*.pyc") if not ramdisk.unchecked_pyc(bytes(p)) and "/encodings/" not in str(p)]
    assert stale == []
    pruned = {c["rule"]: c for c in manifest["ramdisk"]["pruned"]}
    assert not list(t.glob("usr/lib/*/*.a"))  # python311-devel's libpython3.11.a left in install.d, others here
    assert pruned["left out usr/include/*"]["bytes"] > 0
    cuts = {c["rule"]: c for c in manifest["cuts"]}
    assert cuts["kernel modules: bluetooth"]["files"] > 0  # the test media keeps bluetooth for this
    modules = next(t.glob("usr/lib/modules/*/modules.dep"))
    dep = modules.read_text()  # the class's directories are gone (toshiba_bluetooth, a platform driver, stays)
    assert "kernel/drivers/bluetooth/" not in dep and "kernel/net/bluetooth/" not in dep
    assert not list(modules.parent.glob("kernel/*/bluetooth"))
    assert "virtio_net" in dep  # depmod ran over what stays
    assert "lsblk" not in manifest["agent_tools_missing"]  # a core tool: the build would have failed
    # the package managers and perl left after every chroot phase, with the libraries only they linked
    for gone in ("usr/bin/zypper", "usr/bin/rpm", "usr/bin/perl", "var/lib/rpm", "usr/lib/sysimage/rpm",
                 "var/lib/dpkg", "usr/bin/python3.11-config"):
        assert not (t / gone).exists(), gone
    assert not list(t.glob("usr/lib/*/libzypp.so*")) and not list(t.glob("usr/lib/*/libsolv.so*"))
    assert cuts["shared libraries only the dropped packages linked"]["files"] > 0
    assert any(r.startswith("packages: perl (") and c["bytes"] > 0 for r, c in cuts.items())
    listed = (t / inventory.LISTED).read_text()
    assert "\npython311\t" in listed and "python311-devel" not in listed  # build-only: removed in install.d
    # the venv's libraries lost their symbol tables; ICU's data library is an empty table that still loads
    assert cuts["stripped symbols: the agent venv's native libraries"]["bytes"] > 0
    icu = cuts["ICU data: an empty table in place of libicudata"]
    assert icu["files"] == 1 and icu["bytes"] > 20 * 2**20
    assert [p.stat().st_size < 2**16 for p in t.glob("usr/lib/*/libicudata.so.*.*")] == [True]

    def in_tree(*argv: str) -> str:
        return run.run(["chroot", str(t), *argv], env={"PATH": "/usr/bin:/usr/sbin"}, capture=True).stdout

    assert in_tree("fio", "--version").startswith("fio-")  # fio links libxml2 -> libicuuc -> libicudata
    in_tree("/opt/ironic-python-agent/bin/python", "-c", "import ctypes; ctypes.CDLL('libicuuc.so.72')")
    # the FAT code pages stay for mkfs.vfat's labels (the agent's efi-part and CONFIG-2); KOI8-R is gone
    assert (t / "usr/lib/x86_64-linux-gnu/gconv/IBM850.so").is_file()
    assert not (t / "usr/lib/x86_64-linux-gnu/gconv/KOI8-R.so").exists()
    in_tree("mkfs.vfat", "-n", "efi-part", "-C", "/tmp/efi.img", "8192")
    assert b"efi-part" in (t / "tmp/efi.img").read_bytes()[:512]
    (t / "tmp/efi.img").unlink()
    assert not (t / "usr/lib/udev/hwdb.bin").exists() and not (t / "usr/bin/qemu-nbd").exists()
    assert (t / "usr/bin/qemu-img").is_file()
    in_tree("/opt/ironic-python-agent/bin/python", "-c", "import netaddr; netaddr.EUI('52:54:00:12:34:56')")


def test_no_secret_outside_shadow(built):
    t, password = built["tree"], built["password"].encode()
    leaks = []
    for root, _dirs, files in os.walk(t):
        for f in files:
            p = Path(root) / f
            if p.is_symlink() or not p.is_file() or p == t / "etc/shadow":
                continue
            if password in p.read_bytes():
                leaks.append(str(p.relative_to(t)))
    assert leaks == []
    assert password.decode() not in built["log"]


def test_offline_rebuild_contacts_nothing(built, tmp_path):
    """After the online build, `--offline` builds again in a network namespace with only loopback:
    the root from the cache, git from the mirrors, packages from the ISO, pip from the wheelhouse."""
    media = testmedia.ensure()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DIB_", "IPA_", "IRONIC_", "SIB_"))}
    env["SIB_ACCEL"] = os.environ.get("SIB_ACCEL", "tcg")
    for var in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY"):
        env.pop(var, None)
    out = tmp_path / "out"
    argv = ["unshare", "--net", "sh", "-c", 'ip link set lo up && exec "$@"', "sh",
            sys.executable, "-m", "sles_ipa_builder", "build", "--offline", "--config", str(media.profile),
            "--workspace", str(tmp_path / "ws"), "--output", str(out), "--name", NAME]
    res = run.run(argv, env=env, check=False, capture=True)
    assert res.returncode == 0, (res.stdout + res.stderr)[-6000:]
    packages = (out / f"{NAME}.packages").read_text()
    assert "ironic-python-agent==" in packages and "hardware==" in packages


# --- add-on cpio: trust, SSH key and network of an unchanged ramdisk --------------------------------
STATIC_IP = "10.0.2.77"  # in QEMU's user network (10.0.2.0/24, gateway and host 10.0.2.2), not its DHCP range


def _tls_pair(d: Path) -> tuple[Path, Path, Path]:
    """A CA, and a server certificate it signed for 10.0.2.2 (the fake API as the VM sees it)."""
    ca_key, ca, key, csr, cert = (d / n for n in ("ca.key", "ca.pem", "api.key", "api.csr", "api.pem"))
    run.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", ca_key, "-out", ca,
             "-days", "2", "-subj", "/CN=sib add-on test CA"], capture=True)
    run.run(["openssl", "req", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", csr,
             "-subj", "/CN=10.0.2.2"], capture=True)
    ext = d / "ext.cnf"
    ext.write_text("subjectAltName=IP:10.0.2.2\n")
    run.run(["openssl", "x509", "-req", "-in", csr, "-CA", ca, "-CAkey", ca_key, "-CAcreateserial", "-out", cert,
             "-days", "2", "-extfile", ext], capture=True)
    return ca, cert, key


def check_addon_boot(kernel: Path, initramfs: Path, dev_user: str, work: Path) -> dict[str, str]:
    """Boot the ramdisk with an add-on cpio: the agent must verify the API's TLS with the add-on's CA
    (ipa-insecure=0), the dev user must let in the add-on's SSH key, and the agent must call back
    from the add-on's static address. The initramfs file is not changed."""
    import socket

    from sles_ipa_builder.verify import boottest, qemu

    work.mkdir(parents=True, exist_ok=True)
    ca, cert, key = _tls_pair(work)
    ssh_key = work / "id_ed25519"
    run.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", ssh_key], capture=True)
    net = work / "network_data.json"
    net.write_text(json.dumps(static_network_data(qemu.MAC, STATIC_IP)))
    cpio = work / "addon.cpio"
    res = run.run([sys.executable, "-m", "sles_ipa_builder", "addon", "--ca-bundle", str(ca), "--ssh-key",
                   f"{ssh_key}.pub", "--network-data", str(net), "-o", str(cpio)], capture=True, check=False)
    assert res.returncode == 0, res.stderr
    before = hashlib.sha256(initramfs.read_bytes()).hexdigest()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        ssh_port = s.getsockname()[1]
    seen: dict[str, str] = {}

    def ssh_in() -> None:
        argv = ["ssh", "-i", str(ssh_key), "-p", str(ssh_port), "-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes",
                "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "-o", "ConnectTimeout=90",
                f"{dev_user}@127.0.0.1", "id -un; ip -4 -o addr show"]  # fmt: skip
        for _ in range(3):  # sshd under emulation can miss a first banner deadline
            out = run.run(argv, capture=True, check=False)
            seen.update(rc=str(out.returncode), out=out.stdout, err=out.stderr[-2000:])
            if out.returncode != 255:
                break

    result = boottest.boot_test(kernel, initramfs, timeout=900, accel=os.environ.get("SIB_ACCEL", "tcg"),
                                addon=cpio, tls=(cert, key), append="ipa-insecure=0",
                                hostfwd=[f"tcp:127.0.0.1:{ssh_port}-{STATIC_IP}:22"], while_up=ssh_in,
                                keep_console=work / "console.log")  # fmt: skip
    assert hashlib.sha256(initramfs.read_bytes()).hexdigest() == before  # unchanged
    console = (work / "console.log").read_text(errors="replace")
    # trust: lookup and heartbeat went over TLS that the agent verified with the add-on's CA
    assert result.heartbeat_seconds > 0 and "sles-ipa-addon: trusted 1 CA certificate(s)" in console
    # the ipa_plugins hardware manager was loaded by the agent
    assert "Hardware manager found: sib_test_hwm:SibTestHardwareManager" in console
    # SSH: the add-on's key opens the dev user's account
    assert seen.get("rc") == "0", seen
    assert seen["out"].splitlines()[0] == dev_user
    # network: the static address from network_data.json, and the agent calls back from it
    assert f"inet {STATIC_IP}/24" in seen["out"], seen["out"]
    beats = [r for r in result.requests if r.method == "POST" and "/heartbeat" in r.path]
    assert beats and STATIC_IP in str(beats[-1].body.get("callback_url", "")), beats[-1].body
    return seen


def test_addon_changes_trust_ssh_and_network_without_a_rebuild(built, tmp_path):
    from sles_ipa_builder.config import resolve as config

    media = testmedia.ensure()
    dev_user = config.resolve({}, config_file=media.profile, environ={}).dev_user_username
    out = built["out"]
    check_addon_boot(out / f"{NAME}.kernel", out / f"{NAME}.initramfs", dev_user, tmp_path / "addon")
