"""boot-test --ironic: a real OpenStack Ironic (from PyPI) drives a real ramdisk in QEMU.

The first tests need no VM: the checks made from outside the agent (disk signatures, the written
image, the inventory), the Ironic configuration, and the bad inputs that must stop before a VM
starts. The slow ones build a ramdisk from the test media once, run the whole lifecycle in BIOS and
UEFI mode, and show that a ramdisk without qemu-img fails at deploy, saying so.
"""

from __future__ import annotations

import configparser
import dataclasses
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from sles_ipa_builder import run
from sles_ipa_builder.config.arch import AARCH64, X86_64
from sles_ipa_builder.errors import InputError
from sles_ipa_builder.verify import ironic, qemu, vmdisk
from sles_ipa_builder.verify.ironic import StageFailed
from sles_ipa_builder.verify.lifecycle import check_inventory, uefi_entry

needs_tools = pytest.mark.skipif(
    any(shutil.which(t) is None for t in ("sgdisk", "mkfs.vfat", "mcopy", "qemu-img", "mkfs.ext4")),
    reason="needs gdisk, dosfstools, mtools, qemu-utils, e2fsprogs",
)
is_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root")


def cli(*argv: str, env: dict[str, str] | None = None, timeout: float | None = None) -> run.Result:
    return run.run([sys.executable, "-m", "sles_ipa_builder", *argv], env=env, check=False, capture=True,
                   timeout=timeout)  # fmt: skip


# --- without a VM


def test_missing_tool_lines_and_the_optional_list(tmp_path: Path) -> None:
    assert qemu.missing_tool("[ 40.1] ironic-python-agent[612]: /bin/sh: 1: lsb_release: not found") == "lsb_release"
    assert qemu.missing_tool("bash: line 1: foo: command not found") == "foo"
    assert qemu.missing_tool("Failed to call get_disk_identifier ... The hexdump tool may be missing") == "hexdump"
    assert qemu.missing_tool("FileNotFoundError: [Errno 2] No such file or directory: 'qemu-img'") == "qemu-img"
    assert qemu.missing_tool("No such file or directory: '/sys/block/vda/device/scsi_device'") == ""
    assert qemu.missing_tool("modprobe: FATAL: Module foo not found in directory") == ""
    console = tmp_path / "console.log"
    console.write_text("x: biosdevname: not found\nNo such file or directory: 'multipath'\n")
    con = qemu.Console(console)
    con.poll()
    assert not con.missing and con.missing_report() == ""
    with console.open("a") as f:
        f.write("/bin/sh: 1: lsb_release: not found\n")
    con.poll()
    assert con.missing == {"lsb_release": "/bin/sh: 1: lsb_release: not found"}
    assert "lsb_release" in con.missing_report()


def test_ironic_config_keeps_every_path_under_the_run_dir(tmp_path: Path) -> None:
    conf = configparser.ConfigParser(interpolation=None)
    conf.read_string(ironic.config(tmp_path, http_port=1234))
    assert conf["DEFAULT"]["auth_strategy"] == "noauth" and conf["DEFAULT"]["rpc_transport"] == "none"
    assert conf["deploy"]["fast_track"] == "True" and conf["agent"]["image_download_source"] == "local"
    assert conf["DEFAULT"]["force_raw_images"] == "False"
    assert conf["deploy"]["erase_devices_priority"] == "0"
    paths = [v for s in conf.sections() + ["DEFAULT"] for v in conf[s].values() if v.startswith("/")]
    assert paths and all(p.startswith(str(tmp_path)) for p in paths), paths
    assert conf["deploy"]["http_url"] == "http://10.0.2.2:1234"


def test_ironic_version_follows_the_agent() -> None:
    assert ironic.version_for("13.0.0") == "39.0.0"
    assert ironic.version_for("13.1.0.dev3") == "39.0.0"
    assert ironic.version_for(None) == ironic.DEFAULT_VERSION


def test_inventory_must_match_the_vm(tmp_path: Path) -> None:
    m = qemu.Machine(kernel=tmp_path, initramfs=tmp_path, append="", console=tmp_path, memory_mb=2048, smp=2)
    inv: dict[str, Any] = {"inventory": {
        "cpu": {"count": 2, "architecture": m.arch.suse}, "memory": {"physical_mb": 2048},
        "disks": [{"size": 5 * 2**30}], "interfaces": [{"mac_address": m.mac.upper()}],
        "boot": {"current_boot_mode": "uefi"}}}  # fmt: skip
    assert check_inventory(inv, m, 5 * 2**30, "uefi")["boot_mode"] == "uefi"
    arm = dataclasses.replace(m, arch=AARCH64)
    with pytest.raises(StageFailed, match="cpu architecture 'x86_64', the VM is aarch64"):
        check_inventory(inv, arm, 5 * 2**30, "uefi")
    with pytest.raises(StageFailed, match="boot mode 'uefi', the VM booted bios"):
        check_inventory(inv, m, 5 * 2**30, "bios")
    inv["inventory"]["cpu"]["count"] = 1
    inv["inventory"]["disks"] = [{"size": 4 * 2**30}]
    with pytest.raises(StageFailed, match="1 CPUs.*disks"):
        check_inventory(inv, m, 5 * 2**30, "uefi")


def test_uefi_boot_entry_is_read_from_the_vms_nvram(tmp_path: Path) -> None:
    nvram = tmp_path / "vars.fd"
    nvram.write_bytes(bytes(4096) + "ironic1".encode("utf-16-le") + bytes(8))
    with pytest.raises(StageFailed, match="no boot entry"):
        uefi_entry(nvram, {})
    nvram.write_bytes(bytes(4096) + "\\EFI\\BOOT\\BOOTX64.EFI".encode("utf-16-le") + bytes(8))
    assert "BOOTX64.EFI" in uefi_entry(nvram, {})


@needs_tools
def test_old_disk_signatures_and_what_cleaning_must_remove(tmp_path: Path) -> None:
    disk = tmp_path / "disk.raw"
    vmdisk.old_disk(disk, 512 * 2**20)
    assert {"mbr", "gpt", "gpt-backup", "ext4"} <= set(vmdisk.signatures(disk))
    # A whole-disk wipe leaves the filesystem inside the old partition: the check still sees it.
    run.run(["wipefs", "-q", "-a", "-f", disk], capture=True)  # -f: a file is "not a whole disk"
    assert vmdisk.signatures(disk) == ["ext4"]
    # The agent's erase_devices_metadata also wipes each partition's signatures first.
    with disk.open("r+b") as f:
        f.seek(vmdisk.OLD_FS_OFFSET)
        f.write(bytes(4096))
    assert vmdisk.signatures(disk) == []


@needs_tools
def test_written_image_is_compared_except_the_gpt_header_the_agent_moves(tmp_path: Path) -> None:
    image = vmdisk.deploy_image(tmp_path)
    assert image.format == "qcow2" and run.output(["sgdisk", "-v", image.raw]).find("No problems") >= 0
    disk = tmp_path / "disk.raw"
    shutil.copyfile(image.raw, disk)
    with disk.open("r+b") as f:
        f.truncate(256 * 2**20)
    run.run(["sgdisk", "-e", disk], capture=True)  # what IPA's fix_gpt_partition does on a larger disk
    ok, what = vmdisk.written(disk, image.raw)
    assert ok, what
    with disk.open("r+b") as f:
        f.seek(10 * 2**20)
        byte = f.read(1)
        f.seek(10 * 2**20)
        f.write(bytes([byte[0] ^ 1]))
    ok, what = vmdisk.written(disk, image.raw)
    assert not ok and "sha256" in what


@needs_tools
def test_a_deploy_image_that_is_not_a_disk_image_is_refused(tmp_path: Path) -> None:
    fat = tmp_path / "fs.img"
    with fat.open("wb") as f:
        f.truncate(8 * 2**20)
    run.run(["mkfs.vfat", fat], capture=True)
    for bad in (fat, Path("/etc/hostname"), tmp_path / "missing.qcow2"):
        with pytest.raises(InputError):
            vmdisk.check_image(bad, tmp_path, 5 * 2**30)
    (tmp_path / "made").mkdir()
    good = vmdisk.deploy_image(tmp_path / "made")
    assert vmdisk.check_image(good.path, tmp_path, 5 * 2**30).format == "qcow2"


@is_root
@pytest.mark.root
def test_cli_refuses_a_non_disk_image_before_any_vm(tmp_path: Path) -> None:
    (tmp_path / "k").write_bytes(b"k")
    res = cli("boot-test", "--ironic", "--kernel", str(tmp_path / "k"), "--initramfs", str(tmp_path / "k"),
              "--deploy-image", "/etc/hostname", timeout=120)  # fmt: skip
    out = res.stdout + res.stderr
    assert res.returncode == 2, out
    assert "error: deploy image /etc/hostname" in out and "not a disk image" in out and "hint:" in out


@is_root
@pytest.mark.root
def test_cli_says_when_ironic_cannot_be_installed(tmp_path: Path) -> None:
    (tmp_path / "k").write_bytes(b"k")
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    # No cached venv (a fresh cache) and no index (a closed port): the state of an offline host.
    env.update({"XDG_CACHE_HOME": str(tmp_path / "cache"), "PIP_INDEX_URL": "http://127.0.0.1:9/simple",
                "PIP_FIND_LINKS": "", "PIP_EXTRA_INDEX_URL": ""})  # fmt: skip
    argv = ("boot-test", "--ironic", "--mode", "bios", "--kernel", str(tmp_path / "k"), "--initramfs",
            str(tmp_path / "k"))  # fmt: skip
    res = cli(*argv, env=env, timeout=300)
    out = res.stdout + res.stderr
    assert res.returncode == 2, out
    assert "error: cannot install Ironic 39.0.0 from PyPI" in out and "hint:" in out
    assert not (tmp_path / "cache/sles-ipa-builder/ironic/39.0.0").exists()  # no half-made venv left
    res = cli(*argv, "--offline", env=env, timeout=120)
    assert res.returncode == 2 and "--offline" in res.stdout + res.stderr


def processes_mentioning(text: str) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            try:
                if text.encode() in (entry / "cmdline").read_bytes():
                    pids.append(int(entry.name))
            except OSError:
                continue
    return pids


def with_descendants(pids: list[int]) -> list[int]:
    parent = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                status = (entry / "status").read_text()
            except OSError:
                continue
            ppid = next(line.split()[1] for line in status.splitlines() if line.startswith("PPid:"))
            parent[int(entry.name)] = int(ppid)
    found = set(pids)
    while True:
        more = {pid for pid, pp in parent.items() if pp in found} - found
        if not more:
            return sorted(found)
        found |= more


def argv0(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode()
    except OSError:
        return ""


def alive(pids: list[int]) -> list[int]:
    # A zombie is gone for this purpose: it runs nothing and holds no port.
    out = []
    for pid in pids:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z":
            out.append(pid)
    return out


def fake_agent(dest: Path) -> tuple[Path, Path]:
    """The boot test's busybox stand-in for IPA (tests/data/fakeagent.py): it looks up and heartbeats
    but never inspects, which is all these tests need."""
    spec = importlib.util.spec_from_file_location("fakeagent", Path(__file__).parents[1] / "data" / "fakeagent.py")
    assert spec and spec.loader
    fakeagent = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(fakeagent)
    kernel = fakeagent.host_kernel()
    if kernel is None or fakeagent.static_busybox() is None or shutil.which(X86_64.qemu_binary) is None:
        pytest.skip("needs a host kernel, busybox-static and qemu")
    return kernel, fakeagent.build(dest)


@is_root
@pytest.mark.root
@pytest.mark.qemu
@pytest.mark.slow
def test_a_ramdisk_that_never_looks_up_fails_saying_so(tmp_path: Path) -> None:
    kernel, initramfs = fake_agent(tmp_path)
    # The last ipa-api-url wins: a closed port, so the agent's lookups never reach Ironic.
    res = cli("boot-test", "--ironic", "--mode", "bios", "--kernel", str(kernel), "--initramfs", str(initramfs),
              "--memory", "512", "--lookup-timeout", "45", "--append", "ipa-api-url=http://10.0.2.2:1",
              "--report", str(tmp_path / "r.json"), timeout=600)  # fmt: skip
    out = res.stdout + res.stderr
    assert res.returncode == 1, out[-4000:]
    assert "error: lifecycle failed at inspect (bios): no lookup in 45 s" in out
    assert "fake-agent: lookup failed, retrying" in out  # the console tail
    assert "--- Ironic log (last lines):" in out and "hint:" in out
    (result,) = json.loads((tmp_path / "r.json").read_text())["results"]
    assert not result["ok"] and result["stage"] == "inspect"


@is_root
@pytest.mark.root
@pytest.mark.qemu
@pytest.mark.slow
def test_sigkill_of_the_tool_ends_ironic_and_qemu(tmp_path: Path) -> None:
    """kill -9 runs no clean-up: the private PID namespace must take Ironic, its workers and QEMU along."""
    kernel, initramfs = fake_agent(tmp_path)
    keep = tmp_path / "keep"
    proc = subprocess.Popen([sys.executable, "-m", "sles_ipa_builder", "boot-test", "--ironic", "--mode", "bios",
                             "--kernel", str(kernel), "--initramfs", str(initramfs), "--keep", str(keep),
                             "--memory", "512"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)  # fmt: skip
    try:
        deadline = time.monotonic() + 600
        while not any(argv0(pid).endswith(X86_64.qemu_binary) for pid in processes_mentioning(str(keep))):
            assert proc.poll() is None, proc.stderr.read().decode()[-3000:] if proc.stderr else ""
            assert time.monotonic() < deadline, "QEMU never started"
            time.sleep(0.5)
        started = with_descendants(processes_mentioning(str(keep)))
        names = [argv0(pid) for pid in started]
        # Ironic's master and its worker (renamed, so found as a child), QEMU, and the tool itself
        assert any(n.startswith("ironic: master") for n in names), names
        assert any("worker" in n for n in names) and any(n.endswith(X86_64.qemu_binary) for n in names), names
        proc.kill()
        proc.wait(timeout=30)
        deadline = time.monotonic() + 30
        while alive(started) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert alive(started) == []
    finally:
        if proc.poll() is None:
            proc.kill()


# --- the real thing: build once, then Ironic drives it

def slow(test: Any) -> Any:
    for mark in (pytest.mark.root, pytest.mark.guestfs, pytest.mark.qemu, pytest.mark.media, pytest.mark.slow):
        test = mark(test)
    return test


@pytest.fixture(scope="module")
def ramdisk(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from sles_ipa_builder.fixtures import testmedia

    media = testmedia.ensure()
    work = tmp_path_factory.mktemp("lifecycle")
    res = cli("build", "--config", str(media.profile), "--workspace", str(work / "ws"), "--output", str(work / "out"))
    assert res.returncode == 0, (res.stdout + res.stderr)[-4000:]
    return work / "out"


# UEFI on these SLE 15 media is `make demo`'s (with BIOS) and SIB_TEST_SP7_UEFI=1's: in `make test`, so in
# CI, the real-Ironic UEFI lifecycle runs on SLES 16, the release that boots UEFI by default
# (test_sles16.py), which keeps CI within its time (about 1.5 minutes a lifecycle).
SP7_UEFI = pytest.mark.skipif(os.environ.get("SIB_TEST_SP7_UEFI", "0") != "1",
                              reason="UEFI lifecycle on SLE 15: make demo or SIB_TEST_SP7_UEFI=1 (CI: on SLES 16)")


@slow
@pytest.mark.parametrize("mode", ["bios", pytest.param("uefi", marks=SP7_UEFI)])
def test_lifecycle_reaches_active(ramdisk: Path, mode: str, tmp_path: Path) -> None:
    report = tmp_path / "report.json"
    res = cli("boot-test", "--ironic", "--output", str(ramdisk), "--mode", mode, "--report", str(report),
              "--keep", str(tmp_path / "keep"))  # fmt: skip
    out = res.stdout + res.stderr
    assert res.returncode == 0, out[-6000:]
    assert f"lifecycle passed with Ironic 39.0.0: {mode}: active" in out
    (result,) = json.loads(report.read_text())["results"]
    assert result["ok"] and result["mode"] == mode and result["stage"] == ""
    t = result["since_boot"]
    assert 0 < t["inspected"] < t["cleaned"] < t["deployed"]
    assert set(result["seconds"]) == {"manage", "inspect", "clean", "deploy"}
    inv = result["checks"]["inventory"]
    assert inv["boot_mode"] == mode and inv["cpus"] == 2 and inv["disk_bytes"] == 5 * 2**30
    assert "no MBR, GPT" in result["checks"]["cleaned"]
    assert "= the image's" in result["checks"]["deployed"]
    if mode == "uefi":
        assert "BOOTX64.EFI" in result["checks"]["uefi_boot_entry"]
    print(json.dumps(result["since_boot"]))


@slow
def test_ramdisk_without_qemu_img_fails_at_deploy(ramdisk: Path, tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    tree.mkdir()
    run.run(["sh", "-c", f"zstd -dc {ramdisk}/ironic-python-agent.initramfs | cpio -idm --quiet"], cwd=tree)
    removed = {p.resolve() for p in (tree / "usr/bin/qemu-img", tree / "bin/qemu-img") if p.is_file()}
    assert removed, "the ramdisk has no qemu-img to remove"
    for p in removed:
        p.unlink()
    broken = tmp_path / "broken.initramfs"
    res = cli("pack", str(tree), "-o", str(broken), "--minimal-prune")
    assert res.returncode == 0, res.stdout + res.stderr
    shutil.rmtree(tree)
    res = cli("boot-test", "--ironic", "--mode", "bios", "--kernel", str(ramdisk / "ironic-python-agent.kernel"),
              "--initramfs", str(broken))  # fmt: skip
    out = res.stdout + res.stderr
    assert res.returncode == 1, out[-6000:]
    assert "error: lifecycle failed at deploy (bios)" in out, out[-3000:]
    assert "qemu-img" in out.split("error: lifecycle failed at deploy", 1)[1]
