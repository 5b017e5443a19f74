"""aarch64 on an x86_64 host: the Arch value, --arch, and the qemu-user check that runs before any work."""

from __future__ import annotations

from pathlib import Path

import pytest

from sles_ipa_builder.__main__ import main
from sles_ipa_builder.config import foreign
from sles_ipa_builder.config import resolve as config
from sles_ipa_builder.config.arch import AARCH64, X86_64, Arch
from sles_ipa_builder.errors import ConfigError

ENTRY = ("enabled\ninterpreter /usr/libexec/qemu-binfmt/aarch64-binfmt-P\nflags: {flags}\noffset 0\n"
         "magic 7f454c460201010000000000000000000200b700\n")


def binfmt(tmp_path: Path, *, mounted: bool = True, flags: str | None = "PF", enabled: bool = True) -> Path:
    d = tmp_path / "binfmt_misc"
    d.mkdir()
    if mounted:
        (d / "status").write_text("enabled\n")
    if flags is not None:
        text = ENTRY.format(flags=flags)
        (d / "qemu-aarch64").write_text(text if enabled else text.replace("enabled", "disabled", 1))
    return d


@pytest.mark.parametrize("name", ["aarch64", "arm64", "ARM64", " aarch64 "])
def test_aarch64_names(name: str) -> None:
    assert Arch.parse(name) is AARCH64


def test_aarch64_facts() -> None:
    assert (AARCH64.dib, AARCH64.console, AARCH64.qemu_binary, AARCH64.qemu_machine) == (
        "arm64", "ttyAMA0", "qemu-system-aarch64", "virt")
    assert AARCH64.kernel_names == ("Image",) and AARCH64.metal3_suffix == "_aarch64"
    assert X86_64.metal3_suffix == "" and X86_64.kernel_names == ("vmlinuz",)


def test_arch_from_every_source() -> None:
    assert config.resolve({"arch": "aarch64"}, environ={}).arch is AARCH64
    assert config.resolve({}, environ={"ARCH": "arm64"}).arch is AARCH64
    cfg = config.resolve({"arch": "aarch64"}, environ={})
    assert cfg.iso_file_name == "SLE-15-SP7-Full-aarch64-GM-Media1.iso"
    assert cfg.base_image_candidates()[0].name == "SLES15-SP7-Minimal-VM.aarch64-OpenStack-Cloud-GM.qcow2"


def test_native_needs_nothing(tmp_path: Path) -> None:
    r = foreign.runner(AARCH64, binfmt(tmp_path, mounted=False, flags=None), native=AARCH64)
    assert r.native and r.ok


def test_registered_with_f_flag(tmp_path: Path) -> None:
    r = foreign.runner(AARCH64, binfmt(tmp_path), native=X86_64)
    assert r.ok and not r.native and "aarch64-binfmt-P" in r.detail


@pytest.mark.parametrize("kw,fragment", [
    ({"mounted": False, "flags": None}, "binfmt_misc is not mounted"),
    ({"flags": None}, "no qemu-aarch64 handler"),
    ({"flags": "P"}, "lacks the F flag"),
    ({"enabled": False}, "disabled"),
])
def test_unusable_handler(tmp_path: Path, kw: dict[str, object], fragment: str) -> None:
    r = foreign.runner(AARCH64, binfmt(tmp_path, **kw), native=X86_64)  # type: ignore[arg-type]
    assert not r.ok and fragment in r.detail


def test_require_names_package_and_binfmt(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(foreign, "host", lambda: X86_64)
    with pytest.raises(ConfigError) as exc:
        foreign.require(AARCH64, binfmt(tmp_path, flags=None))
    assert "qemu-user-static" in exc.value.hint and "binfmt_misc" in exc.value.hint


def test_build_stops_before_any_work(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    """exit 2 and one line, before the namespace, the inputs or the workspace are touched."""
    monkeypatch.setattr(foreign, "BINFMT", binfmt(tmp_path, mounted=False, flags=None))
    monkeypatch.setattr(foreign, "host", lambda: X86_64)
    monkeypatch.setattr("os.geteuid", lambda: 0)
    ws = tmp_path / "ws"
    assert main(["build", "--arch", "aarch64", "--workspace", str(ws), "--base-image", "/nonexistent.qcow2"]) == 2
    err = capsys.readouterr()
    lines = [ln for ln in (err.out + err.err).splitlines() if ln.strip()]
    assert any(ln.startswith("error: cannot run aarch64 programs") for ln in lines)
    assert not ws.exists()


def test_metal3_names() -> None:
    assert config.resolve({"arch": "aarch64"}, environ={}).name == "ironic-python-agent_aarch64"
    assert config.resolve({"arch": "x86_64"}, environ={}).name == "ironic-python-agent"
    assert config.resolve({"arch": "aarch64", "name": "mine"}, environ={}).name == "mine"
