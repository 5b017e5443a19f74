"""SLES 16: a ramdisk built from the SLES 16.0 test media (Debian 13 content, not SUSE software) and
proved as the SP7 one is: the build's boot test against the fake API, then a real Ironic in UEFI mode.

One media build and one ramdisk build for the module; the profile names no release, so the build
also shows that 16.0 media alone in the images directory give a 16.0 build.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest
from conftest import clean_env, timed_build, timed_media

from sles_ipa_builder import run
from sles_ipa_builder.fixtures.flavour import SIXTEEN

pytestmark = [pytest.mark.root, pytest.mark.guestfs, pytest.mark.qemu, pytest.mark.media, pytest.mark.slow]
NAME = "ironic-python-agent"


def cli(*argv: str, env: dict[str, str] | None = None) -> run.Result:
    return run.run([sys.executable, "-m", "sles_ipa_builder", *argv], env=env or clean_env(), check=False,
                   capture=True)


@pytest.fixture(scope="module")
def media16(request: pytest.FixtureRequest) -> Any:
    return timed_media(request, "SLES 16.0", flavour=SIXTEEN)


@pytest.fixture(scope="module")
def built16(media16: Any, tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> dict[str, Any]:
    return timed_build(request, "SLES 16.0", tmp_path_factory.mktemp("sles16"), NAME, "--config", str(media16.profile),
                       "--boot-test", env={**clean_env(), "DIB_IPA_INSTALL_SSH": "true"})


def test_media_are_shaped_like_sles16(media16: Any) -> None:
    assert media16.base_ext4.name == "SLES-16.0-Minimal-VM.x86_64-Cloud-GM.qcow2"
    assert media16.iso.name == "SLES-16.0-Full-x86_64-GM.install.iso"
    assert sorted(p.name for p in media16.images_dir.iterdir()) == sorted([media16.base_ext4.name, media16.iso.name])
    root = media16.root_tree
    assert (root / "usr/etc/ssh/sshd_config").is_file() and not (root / "etc/ssh/sshd_config").exists()
    assert "SELINUX=enforcing" in (root / "etc/selinux/config").read_text()
    assert (root / "usr/sbin/NetworkManager").exists() and not (root / "usr/sbin/wicked").exists()
    assert (root / "usr/bin/python3.13").exists()
    modules = list((root / "usr/lib/modules").glob("*/kernel/**/*.ko*"))
    assert modules and all(m.name.endswith(".ko.zst") for m in modules)


def test_summary_finds_sles16_in_the_images_dir(media16: Any) -> None:
    res = cli("summary", "--json", "--config", str(media16.profile))
    assert res.returncode == 0, res.stdout + res.stderr
    assert "SLES-16.0" in res.stdout and "found in" in res.stdout


def test_sixteen_ramdisk_content(built16: dict[str, Any]) -> None:
    tree, out = built16["tree"], built16["out"]
    manifest = json.loads((out / f"{NAME}.manifest.json").read_text())
    assert json.dumps(manifest).count("SLES-16.0") >= 1
    venv = tree / "opt/ironic-python-agent"
    assert list(venv.glob("lib/python3.13/site-packages/ironic_python_agent")), "the venv is not on python3.13"
    assert "ignore-carrier" in (tree / "etc/NetworkManager/conf.d/00-main.conf").read_text()
    units = tree / "etc/systemd/system"
    assert (units / "multi-user.target.wants/NetworkManager.service").is_symlink()  # its target is absolute
    assert not list(tree.glob("usr/sbin/wicked*")) and not list(units.glob("*.wants/wicked*"))
    for unit in ("systemd-networkd.service", "systemd-networkd-wait-online.service"):  # one network stack
        assert (units / unit).readlink() == Path("/dev/null"), unit
    assert "SELINUX=permissive" in (tree / "etc/selinux/config").read_text()
    assert "SELINUX=enforcing" not in (tree / "etc/selinux/config").read_text()
    assert "taking SLES 16's vendor default from /usr/etc/ssh" in built16["hooks"]
    assert (tree / "etc/ssh/sshd_config").is_file()
    assert not (tree / "usr/etc/zypp").exists()


def test_sixteen_boot_test_passed_under_uefi(built16: dict[str, Any]) -> None:
    """The build's boot test follows the release: SLES 16 boots UEFI by default."""
    log = built16["log"]
    assert "boot test passed" in log, log[-3000:]
    assert any(" (uefi)" in ln for ln in log.splitlines() if ln.lstrip().startswith("booting ")), log[-3000:]


def test_sixteen_boots_under_bios_too(built16: dict[str, Any], tmp_path: Path) -> None:
    res = cli("boot-test", "--output", str(built16["out"]), "--firmware", "bios")
    assert res.returncode == 0, (res.stdout + res.stderr)[-3000:]
    assert "boot test passed" in res.stdout


def test_size_report_diff_against_sp7(built16: dict[str, Any], built: dict[str, Any]) -> None:
    res = cli("size-report", str(built16["out"] / f"{NAME}.initramfs"), "--diff",
              str(built["out"] / "ipa-e2e.initramfs"))
    assert res.returncode == 0, res.stdout + res.stderr
    assert "python3.13" in res.stdout and "python3.11" in res.stdout


def test_sixteen_lifecycle_uefi(built16: dict[str, Any], tmp_path: Path) -> None:
    report = tmp_path / "report.json"
    res = cli("boot-test", "--ironic", "--output", str(built16["out"]), "--mode", "uefi", "--report", str(report),
              "--keep", str(tmp_path / "keep"))
    out = res.stdout + res.stderr
    assert res.returncode == 0, out[-6000:]
    assert "lifecycle passed with Ironic 39.0.0: uefi: active" in out
    (result,) = json.loads(report.read_text())["results"]
    assert result["ok"] and result["mode"] == "uefi"
    assert "BOOTX64.EFI" in result["checks"]["uefi_boot_entry"]
    print(json.dumps(result["since_boot"]))
