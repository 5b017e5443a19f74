"""Add-on cpios: what `addon` writes, what it refuses, and how the ramdisk's script reads network data.

The boot (trust, SSH key, network applied to an unchanged ramdisk) is checked in
test_end_to_end.py (test_addon_changes_trust_ssh_and_network_without_a_rebuild)."""

from __future__ import annotations

import importlib.machinery
import importlib.util
import json
import shutil
import stat
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

from sles_ipa_builder import run
from sles_ipa_builder.delivery import addon
from sles_ipa_builder.errors import InputError

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "elements/sles-ipa-addon/static/usr/local/sbin/sles-ipa-addon"
CERT = b"-----BEGIN CERTIFICATE-----\nMIIBszCCAVmgAwIBAgIU\n-----END CERTIFICATE-----\n"
KEY = b"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGx1Y2t5IGtleSBmb3IgdGVzdHMgb25seSBub3QgcmVhbA sib@test\n"
NET = {
    "links": [{"id": "nic0", "type": "phy", "ethernet_mac_address": "52:54:00:12:34:56"}],
    "networks": [{"id": "n0", "link": "nic0", "type": "ipv4", "ip_address": "10.0.2.77", "netmask": "255.255.255.0",
                  "routes": [{"network": "0.0.0.0", "netmask": "0.0.0.0", "gateway": "10.0.2.2"}]}],
    "services": [{"type": "dns", "address": "10.0.2.3"}],
}  # fmt: skip


@pytest.fixture
def inputs(tmp_path: Path) -> dict[str, Path]:
    files = {"ca": ("ca.pem", CERT), "key": ("id.pub", KEY), "net": ("network_data.json", json.dumps(NET).encode())}
    out = {}
    for k, (name, data) in files.items():
        (tmp_path / name).write_bytes(data)
        out[k] = tmp_path / name
    return out


def unpack(archive: Path, dest: Path) -> None:
    dest.mkdir()
    run.pipe(["cat", archive], ["cpio", "-idm", "--quiet", "--no-absolute-filenames"], cwd=dest)


def test_addon_holds_only_its_directory(tmp_path: Path, inputs: dict[str, Path]) -> None:
    out = tmp_path / "addon.cpio"
    files = addon.make_addon(out, ca_bundle=inputs["ca"], ssh_key=inputs["key"], network_data=inputs["net"],
                             ssh_user="metal3")
    assert sorted(files) == ["authorized_keys", "ca-bundle.pem", "network_data.json", "ssh-user"]
    assert out.stat().st_size % 512 == 0  # block-padded, so it can be concatenated to an initramfs
    tree = tmp_path / "x"
    unpack(out, tree)
    got = sorted(str(p.relative_to(tree)) for p in tree.rglob("*"))
    assert got == ["etc", "etc/sles-ipa-addon", "etc/sles-ipa-addon/authorized_keys",
                   "etc/sles-ipa-addon/ca-bundle.pem", "etc/sles-ipa-addon/network_data.json",
                   "etc/sles-ipa-addon/ssh-user"]  # fmt: skip
    d = tree / "etc/sles-ipa-addon"
    assert (d / "ca-bundle.pem").read_bytes() == CERT and (d / "authorized_keys").read_bytes() == KEY
    assert stat.S_IMODE((d / "authorized_keys").stat().st_mode) == 0o600
    assert stat.S_IMODE((tree / "etc").stat().st_mode) == 0o755  # the kernel applies it to the ramdisk's /etc
    # reproducible: same inputs, same bytes
    addon.make_addon(tmp_path / "again.cpio", ca_bundle=inputs["ca"], ssh_key=inputs["key"],
                     network_data=inputs["net"], ssh_user="metal3")
    assert (tmp_path / "again.cpio").read_bytes() == out.read_bytes()


def test_nmstate_is_kept_as_nmstate(tmp_path: Path) -> None:
    nm = tmp_path / "net.yml"
    nm.write_text("interfaces:\n- name: eth0\n  type: ethernet\n  state: up\n  ipv4: {enabled: true, dhcp: false}\n")
    files = addon.make_addon(tmp_path / "a.cpio", network_data=nm)
    assert list(files) == ["nmstate.yml"]


@pytest.mark.parametrize("kind,data,match", [
    ("ca", b"not a certificate\n", "no PEM certificate"),
    ("ca", CERT + b"-----BEGIN PRIVATE KEY-----\nx\n-----END PRIVATE KEY-----\n", "private key"),
    ("key", b"-----BEGIN OPENSSH PRIVATE KEY-----\nabc\n", "not an OpenSSH public key"),
    ("key", b"", "not an OpenSSH public key"),
    ("net", b'{"interfaces_": 1}', "neither an OpenStack"),
    ("net", b"links: [", "neither an OpenStack"),
])  # fmt: skip
def test_bad_inputs_are_refused(tmp_path: Path, kind: str, data: bytes, match: str) -> None:
    p = tmp_path / "input"
    p.write_bytes(data)
    arg = {"ca": "ca_bundle", "key": "ssh_key", "net": "network_data"}[kind]
    with pytest.raises(InputError, match=match):
        addon.make_addon(tmp_path / "a.cpio", **{arg: p})  # type: ignore[arg-type]
    assert not (tmp_path / "a.cpio").exists()


def test_cli_errors_are_one_line_exit_2(tmp_path: Path, inputs: dict[str, Path]) -> None:
    def cli(*args: str) -> run.Result:
        return run.run([sys.executable, "-m", "sles_ipa_builder", "addon", *args], capture=True, check=False)

    nothing = cli("-o", str(tmp_path / "a.cpio"))
    assert nothing.returncode == 2 and "error: an add-on needs at least one of" in nothing.stderr
    missing = cli("--ca-bundle", str(tmp_path / "missing.pem"), "-o", str(tmp_path / "a.cpio"))
    assert missing.returncode == 2 and "cannot read" in missing.stderr
    user = cli("--ssh-key", str(inputs["key"]), "--ssh-user", "no such user", "-o", str(tmp_path / "a.cpio"))
    assert user.returncode == 2 and "not a user name" in user.stderr
    ok = cli("--ssh-key", str(inputs["key"]), "-o", str(tmp_path / "a.cpio"))
    assert ok.returncode == 0 and "authorized_keys" in ok.stdout


def boot_script() -> ModuleType:
    loader = importlib.machinery.SourceFileLoader("sib_addon_script", str(SCRIPT))
    spec = importlib.util.spec_from_loader(loader.name, loader)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


def test_the_boot_script_reads_network_data() -> None:
    static = boot_script()._static(NET)
    assert static == [("52:54:00:12:34:56", ["10.0.2.77/24"], "10.0.2.2", ["10.0.2.3"])]
    # a network on a link without a MAC, or DHCP, gives nothing to configure
    dhcp = {"links": [{"id": "l", "ethernet_mac_address": "52:54:00:00:00:01"}],
            "networks": [{"link": "l", "type": "ipv4_dhcp"}]}
    assert boot_script()._static(dhcp) == []


def test_the_boot_script_runs_on_the_oldest_python_it_meets() -> None:
    """SLES 15 SP4's /usr/bin/python3 is 3.6: the script must not use newer syntax."""
    import ast

    tree = ast.parse(SCRIPT.read_text(), feature_version=(3, 6))
    assert tree.body


def test_combined_initrd_puts_the_addon_where_the_kernel_looks(tmp_path: Path, inputs: dict[str, Path]) -> None:
    """The kernel takes an uncompressed cpio only at a 4-byte aligned offset: a plain `cat` after an
    initramfs of odd length hides the add-on. combine() pads with zeros, as a boot loader aligns."""
    cpio_file = tmp_path / "addon.cpio"
    addon.make_addon(cpio_file, ssh_key=inputs["key"])
    for size in (1001, 1002, 1003, 1004):
        initramfs = tmp_path / f"i{size}"
        initramfs.write_bytes(b"\x28\xb5\x2f\xfd" + b"z" * (size - 4))
        both = tmp_path / f"both{size}"
        addon.combine(initramfs, cpio_file, both)
        data = both.read_bytes()
        at = data.index(b"070701", size)
        assert at % 4 == 0 and data[size:at] == b"\0" * (at - size) and at - size < 4
        assert data[:size] == initramfs.read_bytes() and data[at:] == cpio_file.read_bytes()


def config_drive_iso(tmp: Path, name: str, *, label: str = "config-2", publisher: str = "pub-1",
                     network_data: bytes | None = None) -> Path:
    tree = tmp / f"{name}-tree" / "openstack/latest"
    tree.mkdir(parents=True)
    if network_data is not None:
        (tree / "network_data.json").write_bytes(network_data)
    out = tmp / f"{name}.iso"
    subprocess.run(["xorriso", "-as", "mkisofs", "-quiet", "-o", str(out), "-V", label, "-publisher", publisher,
                    "-J", "-R", str(tmp / f"{name}-tree")], check=True, capture_output=True)
    return out


@pytest.mark.skipif(shutil.which("xorriso") is None, reason="xorriso missing")
def test_the_config_drive_is_the_one_whose_publisher_is_ir_pub_id(tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    script = boot_script()
    assert script.pub_id("BOOT_IMAGE=x ir_pub_id=Ironic-42 ipa-debug=1") == "Ironic-42"
    assert script.pub_id("BOOTIF=01-52-54-00-12-34-56") is None  # a PXE boot: no config drive, no wait
    stray = config_drive_iso(tmp_path, "stray", publisher="someone-else")
    ours = config_drive_iso(tmp_path, "ours", publisher="Ironic-42")
    other = config_drive_iso(tmp_path, "other", label="data")
    assert script.iso_ids(str(ours)) == ("config-2", "IRONIC-42")  # xorriso folds it, as ISO 9660 wants
    assert script.iso_ids(str(tmp_path / "ours-tree/openstack/latest")) is None
    devices = lambda: [str(other), str(stray), str(ours)]  # noqa: E731
    naps: list[float] = []
    for _ in range(2):
        assert script.find_config_drive("Ironic-42", devices, wait=5, sleep=naps.append) == str(ours)
    said = capsys.readouterr().out
    assert said.count(f"config drive on {stray} ignored: its publisher id 'SOMEONE-ELSE' is not") == 2
    assert not naps  # found at once: no wait
    assert script.find_config_drive("nobody", devices, wait=0, sleep=naps.append) is None


def test_unusable_network_data_is_one_line_and_dhcp(capsys: pytest.CaptureFixture[str],
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    script = boot_script()
    monkeypatch.setattr(script, "LINK_WAIT", 0)
    monkeypatch.setattr(script, "_ifname", lambda mac: None)  # no link of this machine has the MAC
    assert script.apply_network_data(b"{not json", "config drive /dev/sr1") is False
    assert script.apply_network_data(json.dumps(NET).encode(), "config drive /dev/sr1") is False
    assert script.apply_network_data(None, "config drive /dev/sr1") is False
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 3 and all(line.endswith("DHCP") for line in lines), lines
    assert "is not valid JSON" in lines[0] and "names no link of this machine" in lines[1]
    assert "has no openstack/latest/network_data.json" in lines[2]
