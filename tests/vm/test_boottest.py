"""boot_test: qemu boots a ramdisk and the agent must look the node up and heartbeat.

The qemu tests boot the host's kernel with a busybox "fake agent" (tests/data/fakeagent.py) that
does what IPA does towards Ironic, so they run without a real IPA build.
"""

from __future__ import annotations

import gzip
import importlib.util
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import ModuleType

import pytest

from sles_ipa_builder.config.arch import AARCH64, ARCHES, HOST_DEFAULT
from sles_ipa_builder.errors import BuildError, ConfigError, InputError
from sles_ipa_builder.verify import boottest
from sles_ipa_builder.verify.boottest import MAC, BootResult, accel_plan, boot_test, qemu_argv

DATA = Path(__file__).parents[1] / "data"


def load_fakeagent() -> ModuleType:
    spec = importlib.util.spec_from_file_location("fakeagent", DATA / "fakeagent.py")
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


fakeagent = load_fakeagent()
KERNEL = fakeagent.host_kernel()
needs_qemu = [
    pytest.mark.qemu,
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which(boottest.QEMU) is None, reason="qemu-system-x86_64 missing"),
    pytest.mark.skipif(KERNEL is None, reason="no /boot/vmlinuz-* with modules"),
    pytest.mark.skipif(fakeagent.static_busybox() is None, reason="busybox-static missing"),
]


# --- without qemu


def test_accel_plan(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(boottest.ACCEL_ENV, raising=False)
    monkeypatch.setattr(boottest, "kvm_usable", lambda: True)
    assert accel_plan("auto") == ["kvm", "tcg"]
    assert accel_plan("tcg") == ["tcg"]
    assert accel_plan("kvm") == ["kvm"]
    monkeypatch.setenv(boottest.ACCEL_ENV, "tcg")
    assert accel_plan("auto") == ["tcg"]
    assert accel_plan("kvm") == ["kvm"]  # an explicit choice beats the environment
    monkeypatch.setattr(boottest, "kvm_usable", lambda: False)
    monkeypatch.setenv(boottest.ACCEL_ENV, "auto")
    assert accel_plan("auto") == ["tcg"]
    with pytest.raises(ConfigError):
        accel_plan("kvm")
    with pytest.raises(ConfigError):
        accel_plan("hvf")


def test_qemu_argv(tmp_path: Path) -> None:
    argv = qemu_argv(
        tmp_path / "k", tmp_path / "i", accel="tcg", console=tmp_path / "c.log", port=4321, memory_mb=1024,
        append="ipa-debug=1",
    )  # fmt: skip
    assert argv[0] == "qemu-system-x86_64"
    assert argv[argv.index("-machine") + 1] == "accel=tcg"
    assert argv[argv.index("-m") + 1] == "1024"
    assert argv[argv.index("-chardev") + 1] == f"file,id=console,path={tmp_path / 'c.log'},append=on"
    assert argv[argv.index("-serial") + 1] == "chardev:console"
    assert argv[argv.index("-nic") + 1] == f"user,model=virtio-net-pci,mac={MAC}"
    assert "-no-reboot" in argv
    cmdline = argv[argv.index("-append") + 1].split()
    assert "ipa-api-url=http://10.0.2.2:4321" in cmdline
    assert "console=ttyS0,115200" in cmdline and "ipa-insecure=1" in cmdline
    assert cmdline[-1] == "ipa-debug=1"  # the user's arguments come last, so they win
    assert "-drive" not in argv
    kvm = qemu_argv(tmp_path / "k", tmp_path / "i", accel="kvm", console=tmp_path / "c", port=1, memory_mb=1,
                    append="", disk=tmp_path / "d.raw")  # fmt: skip
    assert kvm[kvm.index("-cpu") + 1] == "host"
    assert kvm[kvm.index("-drive") + 1] == f"file={tmp_path / 'd.raw'},format=raw,if=virtio,cache=unsafe"


def test_qemu_argv_aarch64(tmp_path: Path) -> None:
    """qemu-system-aarch64 -machine virt -cpu max under TCG, the PL011 console; never KVM for another arch."""
    argv = qemu_argv(tmp_path / "k", tmp_path / "i", accel="tcg", console=tmp_path / "c.log", port=1, memory_mb=1024,
                     append="", arch=AARCH64)  # fmt: skip
    assert argv[0] == "qemu-system-aarch64"
    assert argv[argv.index("-machine") + 1] == "virt,accel=tcg"
    assert argv[argv.index("-cpu") + 1] == "max"
    assert "console=ttyAMA0,115200" in argv[argv.index("-append") + 1].split()
    # through UEFI firmware: a direct kernel boot on virt has no SMBIOS, and IPA 13 fails on lscpu's "Socket(s): -"
    assert any(a.startswith("if=pflash,format=raw,unit=0,readonly=on,file=") for a in argv)
    assert (tmp_path / "uefi-vars.fd").is_file()
    foreign = next(a for a in ARCHES if a != HOST_DEFAULT)
    assert accel_plan("auto", foreign) == ["tcg"]
    with pytest.raises(ConfigError, match="cannot run"):
        accel_plan("kvm", foreign)


def test_missing_artifacts_are_input_errors(tmp_path: Path) -> None:
    (tmp_path / "x.kernel").write_bytes(b"k")
    with pytest.raises(InputError, match="initramfs"):
        boot_test(tmp_path / "x.kernel", tmp_path / "x.initramfs")
    with pytest.raises(InputError, match="kernel"):
        boot_test(tmp_path / "nope.kernel", tmp_path / "x.kernel")


def test_console_follows_a_growing_file(tmp_path: Path) -> None:
    path = tmp_path / "console.log"
    con = boottest._Console(path)
    con.poll()
    assert not con.any_output
    path.write_bytes(b"Linux version 6.1\r\nRun /init as init process\r\npartial")
    con.poll()
    assert con.any_output and con.tail() == ["Linux version 6.1", "Run /init as init process", "partial"]
    with path.open("ab") as f:
        f.write(b" line\n[ 1.0] Kernel panic - not syncing: No working init found.\n")
    con.poll()
    assert con.tail(2) == ["partial line", "[ 1.0] Kernel panic - not syncing: No working init found."]
    assert con.panic == "Kernel panic - not syncing: No working init found."


def fake_qemu(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, *, silent: str) -> Path:
    """A qemu-system-x86_64 on PATH that records its pid and, when its argv matches `silent`, hangs
    printing nothing (as KVM guests do on some hosts); otherwise it runs the real qemu."""
    real = shutil.which(boottest.QEMU) or "/usr/bin/false"
    bindir = tmp_path / "bin"
    bindir.mkdir()
    pids = tmp_path / "pids"
    script = bindir / boottest.QEMU
    script.write_text(
        "#!/bin/sh\n"
        f'echo $$ >> "{pids}"\n'
        f'case "$*" in *{silent}*) exec sleep 600 ;; esac\n'
        f'exec "{real}" "$@"\n'
    )
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bindir}:{os.environ['PATH']}")
    return pids


def assert_all_gone(pids: Path) -> None:
    for pid in pids.read_text().split():
        with pytest.raises(ProcessLookupError):
            os.kill(int(pid), 0)


def test_interrupt_stops_qemu(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pids = fake_qemu(tmp_path, monkeypatch, silent="accel=")
    (tmp_path / "k").write_bytes(b"k")
    polls = 0

    def interrupted_poll(self: boottest._Console) -> None:
        nonlocal polls
        polls += 1
        if polls == 3:
            raise KeyboardInterrupt

    monkeypatch.setattr(boottest._Console, "poll", interrupted_poll)
    with pytest.raises(KeyboardInterrupt):
        boot_test(tmp_path / "k", tmp_path / "k", accel="tcg", timeout=60)
    assert pids.read_text().split()  # it did start
    assert_all_gone(pids)


def test_sigterm_to_the_cli_stops_qemu(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`boot-test` killed by a CI timeout or `kill`: its qemu must not live on."""
    pids = fake_qemu(tmp_path, monkeypatch, silent="accel=")
    (tmp_path / "k").write_bytes(b"k")
    proc = subprocess.Popen([sys.executable, "-m", "sles_ipa_builder", "boot-test", "--kernel", str(tmp_path / "k"),
                             "--initramfs", str(tmp_path / "k"), "--accel", "tcg", "--timeout", "300"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        while not (pids.exists() and pids.read_text().split()):
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 128 + signal.SIGTERM
    assert_all_gone(pids)


# --- with qemu and the fake agent


def with_wrapper(initramfs: Path, dest: Path, commands: str) -> Path:
    """The initramfs plus an appended cpio whose /wrapper (rdinit=/wrapper) runs `commands` on the
    console, then execs the fake agent's /init."""
    tree = dest / "wrapper-tree"
    tree.mkdir()
    wrapper = tree / "wrapper"
    wrapper.write_text("#!/bin/busybox sh\n/bin/busybox mount -t devtmpfs devtmpfs /dev\n"
                       "exec </dev/console >/dev/console 2>&1\nexport PATH=/bin\n"
                       f"{commands}\nexec /init\n")  # fmt: skip
    wrapper.chmod(0o755)
    extra = dest / "wrapper.cpio"
    with extra.open("wb") as out:
        subprocess.run(["cpio", "-o", "-H", "newc", "--quiet"], input=b"wrapper\n", cwd=tree, stdout=out, check=True)
    first = initramfs.read_bytes()
    combined = dest / "with-wrapper.initramfs"
    # The kernel unpacks archives one after the other; each starts on a 4-byte boundary.
    combined.write_bytes(first + bytes(-len(first) % 4) + gzip.compress(extra.read_bytes()))
    return combined


@pytest.fixture(scope="module")
def agents(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    if KERNEL is None or fakeagent.static_busybox() is None:
        pytest.skip("needs a host kernel and busybox-static")
    out: dict[str, Path] = {}
    variants: dict[str, dict[str, bool]] = {
        "good": {},
        "silent": {"heartbeat": False},
        "noinit": {"with_init": False},
    }
    for name, kw in variants.items():
        d = tmp_path_factory.mktemp(name)
        out[name] = fakeagent.build(d, **kw)
    return out


class TestWithQemu:
    pytestmark = needs_qemu

    def test_fake_agent_passes_under_tcg(self, agents: dict[str, Path], tmp_path: Path) -> None:
        assert KERNEL is not None
        keep = tmp_path / "kept" / "console.log"
        result = boot_test(KERNEL, agents["good"], timeout=300, memory_mb=512, accel="tcg", keep_console=keep)
        assert isinstance(result, BootResult)
        assert result.accel == "tcg" and not result.fell_back
        assert MAC in result.addresses
        assert 0 < result.lookup_seconds <= result.heartbeat_seconds
        paths = [r.path for r in result.requests]
        assert "/v1/lookup" in paths and f"/v1/heartbeat/{result.node_uuid}" in paths
        assert "fake-agent: lookup succeeded" in keep.read_text()
        assert result.agent_version == "fake"
        print(result.verdict())

    @pytest.mark.skipif(not boottest.kvm_usable(), reason="no usable /dev/kvm")
    def test_fake_agent_passes_with_auto_accel(
        self, agents: dict[str, Path], monkeypatch: pytest.MonkeyPatch
    ) -> None:
        # KVM when it works; on hosts where KVM guests hang, the fallback to TCG must still pass.
        monkeypatch.delenv(boottest.ACCEL_ENV, raising=False)
        assert KERNEL is not None
        result = boot_test(KERNEL, agents["good"], timeout=300, memory_mb=512, accel="auto")
        assert result.accel == "kvm" or result.fell_back
        assert MAC in result.addresses
        print(result.verdict())

    def test_a_missing_tool_on_the_console_fails_the_boot_test(self, agents: dict[str, Path], tmp_path: Path) -> None:
        # The agent got as far as the heartbeat, but the console says a tool it calls is missing: the
        # ramdisk lacks a package (issue 11: lsb_release). An optional tool (biosdevname) is fine.
        assert KERNEL is not None
        initramfs = with_wrapper(agents["good"], tmp_path, "lsb_release; biosdevname")
        with pytest.raises(BuildError) as exc:
            boot_test(KERNEL, initramfs, timeout=300, memory_mb=512, accel="tcg", append="rdinit=/wrapper")
        err = exc.value
        assert "the ramdisk lacks lsb_release" in err.message and "biosdevname" not in err.message
        assert "OPTIONAL_TOOLS" in err.hint

    def test_ramdisk_without_init_fails_with_the_panic(self, agents: dict[str, Path]) -> None:
        assert KERNEL is not None
        with pytest.raises(BuildError) as exc:
            boot_test(KERNEL, agents["noinit"], timeout=300, memory_mb=512, accel="tcg")
        err = exc.value
        assert "panic" in err.message
        assert "no lookup" in err.message
        assert any("Kernel panic" in line for line in err.tail)
        assert "/init" in err.hint

    def test_agent_that_never_heartbeats_fails_naming_the_heartbeat(self, agents: dict[str, Path]) -> None:
        assert KERNEL is not None
        with pytest.raises(BuildError) as exc:
            boot_test(KERNEL, agents["silent"], timeout=60, memory_mb=512, accel="tcg")
        err = exc.value
        assert "timed out" in err.message
        assert "lookup received" in err.message and "no heartbeat" in err.message
        assert any("GET /v1/lookup?addresses=" in line for line in err.tail)
        assert any("not heartbeating" in line for line in err.tail)

    def test_silent_kvm_guest_is_killed_and_tcg_takes_over(
        self, agents: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        pids = fake_qemu(tmp_path, monkeypatch, silent="accel=kvm")
        monkeypatch.setattr(boottest, "kvm_usable", lambda: True)
        monkeypatch.setattr(boottest, "KVM_SILENCE_SECONDS", 3.0)
        monkeypatch.delenv(boottest.ACCEL_ENV, raising=False)
        assert KERNEL is not None
        result = boot_test(KERNEL, agents["good"], timeout=300, memory_mb=512, accel="auto")
        assert result.accel == "tcg" and result.fell_back
        assert len(pids.read_text().split()) == 2
        assert_all_gone(pids)
