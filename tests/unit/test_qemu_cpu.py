"""The boot tests' CPU model: the qemu_cpu setting (default: the release's, max on SLES 16), and a SLES 16
ramdisk refused on a CPU below x86-64-v2 before any VM starts (verify/qemu.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_releases import resolve, sib

from sles_ipa_builder import run
from sles_ipa_builder.config import releases
from sles_ipa_builder.config.arch import AARCH64, X86_64
from sles_ipa_builder.errors import ConfigError
from sles_ipa_builder.verify import boottest, lifecycle, qemu

SIXTEEN = releases.find("SLES-16.0")
FIFTEEN = releases.DEFAULT
V2 = "fpu sse2 cx16 lahf_lm popcnt sse4_1 sse4_2 ssse3"


def cpuinfo(tmp_path: Path, flags: str) -> Path:
    p = tmp_path / "cpuinfo"
    p.write_text(f"processor\t: 0\nvendor_id\t: GenuineIntel\nflags\t\t: {flags}\n\nprocessor\t: 1\n")
    return p


# --- which -cpu ------------------------------------------------------------------------------------
def test_the_model_asked_for_else_host_under_kvm_else_the_archs() -> None:
    assert qemu.cpu_model("", "kvm") == "host"
    assert qemu.cpu_model("", "tcg", AARCH64) == AARCH64.qemu_cpu
    assert qemu.cpu_model("Nehalem", "kvm") == "Nehalem"
    m = qemu.Machine(kernel=Path("k"), initramfs=Path("i"), append="", console=Path("c"), accel="kvm")
    assert m.argv()[m.argv().index("-cpu") + 1] == "host"
    m.cpu = "Skylake-Server"
    assert m.argv()[m.argv().index("-cpu") + 1] == "Skylake-Server"


def test_the_setting_defaults_to_the_releases() -> None:
    sixteen = resolve({"sles_release": "16.0"})
    assert (sixteen.qemu_cpu, sixteen.sources["qemu_cpu"]) == ("max", "default for SLES 16.0")
    fifteen = resolve()
    assert (fifteen.qemu_cpu, fifteen.sources["qemu_cpu"]) == ("", "default")
    named = resolve({"sles_release": "16.0"}, SIB_QEMU_CPU="Icelake-Server")
    assert (named.qemu_cpu, named.sources["qemu_cpu"]) == ("Icelake-Server", "env SIB_QEMU_CPU")
    assert resolve({"qemu_cpu": "Nehalem"}).sources["qemu_cpu"] == "flag --qemu-cpu"


def test_summary_shows_it(tmp_path: Path) -> None:
    import json

    res = sib(tmp_path, "summary", "--json", "--sles-release", "16.1", "--images-dir", tmp_path)
    assert res.returncode == 0, res.stderr[-2000:]
    assert json.loads(res.stdout)["settings"]["qemu_cpu"] == {"value": "max", "source": "default for SLES 16.1"}


# --- x86-64-v2 -------------------------------------------------------------------------------------
@pytest.mark.parametrize("model", ["qemu64", "qemu32", "kvm64", "kvm32", "core2duo", "coreduo", "pentium",
                                   "pentium2", "pentium3", "486", "athlon", "phenom", "n270", "Conroe", "Penryn",
                                   "Penryn-v1", "qemu64-v1", "Opteron_G3", "qemu64,+popcnt"])
def test_models_below_v2(model: str) -> None:
    assert qemu.below_v2(model, "tcg") == f"QEMU's {model.split(',')[0]} model is older than Nehalem"


@pytest.mark.parametrize("model", ["Nehalem", "Nehalem-v2", "Westmere", "SandyBridge", "Skylake-Server", "EPYC",
                                   "Opteron_G4", "max", "qemu64,+cx16,+lahf-lm,+popcnt,+sse4.1,+sse4.2,+ssse3",
                                   "kvm64,cx16=on,lahf_lm=on,popcnt=on,sse4_1=on,sse4_2=on,ssse3=on"])
def test_models_with_v2(model: str) -> None:
    assert qemu.below_v2(model, "tcg") == ""


def test_host_and_max_under_kvm_are_the_hosts_cpu(tmp_path: Path) -> None:
    old = cpuinfo(tmp_path, "fpu sse2 cx16 ssse3 lahf_lm")
    assert qemu.below_v2("host", "kvm", old) == f"this host's CPU lacks popcnt sse4_1 sse4_2 ({old})"
    assert qemu.below_v2("max", "kvm", old).startswith("this host's CPU lacks popcnt")
    assert qemu.below_v2("max", "tcg", old) == ""  # TCG's max emulates them
    assert qemu.below_v2("host", "kvm", cpuinfo(tmp_path, V2)) == ""
    assert qemu.below_v2("host", "kvm", tmp_path / "absent") == ""  # nothing tells: QEMU decides


def test_sixteen_on_qemu64_is_refused_in_one_line() -> None:
    with pytest.raises(ConfigError) as e:
        qemu.require_cpu("qemu64", ["tcg"], X86_64, SIXTEEN)
    assert e.value.message == ("SLES 16.0 needs an x86-64-v2 CPU, but the boot test's -cpu qemu64 (tcg) is below "
                               "it: QEMU's qemu64 model is older than Nehalem")
    assert e.value.hint.startswith("set --qemu-cpu (SIB_QEMU_CPU) to max or a model from Nehalem on")


def test_sixteen_on_an_old_host_under_kvm_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(qemu, "CPUINFO", cpuinfo(tmp_path, "fpu sse2 cx16 ssse3"))
    with pytest.raises(ConfigError, match=r"^SLES 16.0 needs an x86-64-v2 CPU, but the boot test's -cpu max \(kvm\) "
                                          r"is below it: this host's CPU lacks lahf_lm popcnt sse4_1 sse4_2") as e:
        qemu.require_cpu("max", ["kvm", "tcg"], X86_64, SIXTEEN)
    assert "--accel tcg" in e.value.hint
    qemu.require_cpu("max", ["tcg"], X86_64, SIXTEEN)  # TCG's max has them


def test_only_x86_64_and_releases_that_need_v2_have_the_rule() -> None:
    qemu.require_cpu("qemu64", ["tcg"], X86_64, FIFTEEN)
    qemu.require_cpu("qemu64", ["tcg"], X86_64, None)
    qemu.require_cpu("cortex-a53", ["tcg"], AARCH64, SIXTEEN)
    assert [r.x86_64_level for r in releases.TABLE] == [1, 1, 1, 1, 2, 2]


# --- the boot-test paths refuse before a VM starts ------------------------------------------------
@pytest.fixture
def no_vm(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    def popen(*a: object, **k: object) -> None:
        raise AssertionError("no VM may start")

    monkeypatch.setattr(run, "popen", popen)
    monkeypatch.setattr(qemu, "require", lambda arch=X86_64: None)
    kernel, initramfs = tmp_path / "k", tmp_path / "i"
    kernel.write_bytes(b"k")
    initramfs.write_bytes(b"i")
    return kernel, initramfs


def test_boot_test_refuses_before_the_vm(no_vm: tuple[Path, Path]) -> None:
    with pytest.raises(ConfigError, match="SLES 16.0 needs an x86-64-v2 CPU, but the boot test's -cpu kvm64"):
        boottest.boot_test(*no_vm, accel="tcg", arch=X86_64, cpu="kvm64", release=SIXTEEN)


def test_lifecycle_refuses_before_ironic(no_vm: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(lifecycle.ironic, "ensure", lambda *a, **k: pytest.fail("Ironic installed first"))
    with pytest.raises(ConfigError, match="-cpu core2duo \\(tcg\\) is below it"):
        lifecycle.prepare(*no_vm, modes=("bios",), accels=("tcg",), arch=X86_64, cpu="core2duo", release=SIXTEEN)


def test_the_boot_test_verb_takes_qemu_cpu(no_vm: tuple[Path, Path], tmp_path: Path) -> None:
    toml = tmp_path / "sib.toml"
    toml.write_text('sles_release = "SLES-16.0"\n')
    res = sib(tmp_path, "boot-test", "--config", toml, "--kernel", no_vm[0], "--initramfs", no_vm[1],
              "--accel", "tcg", "--qemu-cpu", "Penryn")
    assert res.returncode == 2 and res.stdout == ""
    assert res.stderr.splitlines() == [
        "error: SLES 16.0 needs an x86-64-v2 CPU, but the boot test's -cpu Penryn (tcg) is below it: QEMU's Penryn "
        "model is older than Nehalem",
        "hint: set --qemu-cpu (SIB_QEMU_CPU) to max or a model from Nehalem on, or leave it unset (max)"]
