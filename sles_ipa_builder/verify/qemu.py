"""The QEMU launcher shared by the fake-API boot test and the real-Ironic lifecycle.

One `Machine` says what the VM is (arch, firmware, memory, CPUs, NIC, disks, kernel arguments);
`argv()` turns it into a command line and `Console` follows the serial console file QEMU writes.
The architecture's facts (binary, machine, CPU, console, UEFI firmware) come from `arch.Arch`, so
aarch64 is a new value there, not new branches here. Processes start through run.py, which kills
them with us.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from .. import run
from ..config.arch import X86_64, Arch
from ..config.releases import Release
from ..errors import ConfigError

if TYPE_CHECKING:
    from subprocess import Popen  # the type only: processes start in run.py

TAIL_LINES = 30
MAC = "52:54:00:5e:1b:01"  # fixed, so a lookup can be matched to this VM


def ovmf(arch: Arch = X86_64) -> tuple[Path, Path]:
    """(code, vars template) of the first installed UEFI firmware pair (their sizes must match)."""
    for code, vars_ in arch.uefi_firmware:
        if Path(code).is_file() and Path(vars_).is_file():
            return Path(code), Path(vars_)
    raise ConfigError(f"no UEFI firmware (OVMF) for {arch} found", arch.qemu_hint)


@dataclass
class Machine:
    """What the VM is. Disks are raw files attached as virtio; `uefi` copies the vars per run."""

    kernel: Path | None  # None: the firmware boots the cdrom
    initramfs: Path | None
    append: str
    console: Path
    accel: str = "tcg"
    memory_mb: int = 2048
    smp: int = 2
    mac: str = MAC
    nic_model: str = "virtio-net-pci"
    disks: list[Path] = field(default_factory=list)
    hostfwd: list[str] = field(default_factory=list)  # "tcp:127.0.0.1:9999-:9999"
    uefi: bool = False
    uefi_vars: Path | None = None  # a writable copy of the vars template (made by prepare())
    arch: Arch = X86_64
    name: str = "sles-ipa-builder"
    cdrom: Path | None = None  # an ISO attached as a CD, first in the boot order
    cdroms: list[Path] = field(default_factory=list)  # more CDs, not booted (a config drive)
    secure_boot: bool = False  # UEFI with Secure Boot enforced: q35, SMM, secure pflash, Microsoft's keys
    cpu: str = ""  # -cpu ("": host under KVM, the arch's under TCG)

    def firmware(self) -> tuple[Path, Path]:
        if not self.secure_boot:
            return ovmf(self.arch)
        pair = self.arch.secure_boot_firmware
        if pair is None or not all(Path(p).is_file() for p in pair):
            raise ConfigError(f"no UEFI firmware with Secure Boot for {self.arch} found",
                              "apt-get install ovmf (OVMF_CODE_4M.secboot.fd, OVMF_VARS_4M.ms.fd)")
        return Path(pair[0]), Path(pair[1])

    def prepare(self, workdir: Path) -> None:
        """Copy the UEFI vars template: the firmware writes to it (and efibootmgr, through it)."""
        if (self.uefi or self.secure_boot) and self.uefi_vars is None:
            _, template = self.firmware()
            self.uefi_vars = workdir / "uefi-vars.fd"
            shutil.copyfile(template, self.uefi_vars)

    def argv(self) -> list[str]:
        cpu = cpu_model(self.cpu, self.accel, self.arch)
        base = "q35,smm=on" if self.secure_boot else self.arch.qemu_machine
        machine = ",".join(p for p in (base, f"accel={self.accel}") if p)
        nic = ",".join(["user", f"model={self.nic_model}", f"mac={self.mac}", *(f"hostfwd={f}" for f in self.hostfwd)])
        firmware: list[str] = []
        if self.uefi or self.secure_boot:
            code, _ = self.firmware()
            if self.uefi_vars is None:
                raise ValueError("Machine.prepare() makes the UEFI vars copy first")
            if self.secure_boot:  # the vars flash is writable only from SMM: the firmware guards its keys
                firmware = ["-global", "driver=cfi.pflash01,property=secure,value=on"]
            firmware += [
                "-drive", f"if=pflash,format=raw,unit=0,readonly=on,file={code}",
                "-drive", f"if=pflash,format=raw,unit=1,file={self.uefi_vars}",
            ]  # fmt: skip
        drives: list[str] = []
        for i, cd in enumerate([self.cdrom, *self.cdroms]):
            if cd is not None:
                drives += ["-drive", f"file={cd},format=raw,media=cdrom,if=none,id=cd{i},readonly=on",
                           "-device", f"ide-cd,drive=cd{i}" + (",bootindex=0" if i == 0 else "")]
        for disk in self.disks:
            drives += ["-drive", f"file={disk},format=raw,if=virtio,cache=unsafe"]
        direct = [] if self.kernel is None or self.initramfs is None else [
            "-kernel", str(self.kernel), "-initrd", str(self.initramfs), "-append", self.append]
        return [
            self.arch.qemu_binary, "-name", self.name,
            "-machine", machine, "-cpu", cpu, "-m", str(self.memory_mb), "-smp", str(self.smp),
            "-nodefaults", "-display", "none", "-monitor", "none",
            # append: a VM started again (the lifecycle's second boot) adds to its console, not over it
            "-chardev", f"file,id=console,path={self.console},append=on", "-serial", "chardev:console",
            *firmware,
            *direct,
            "-nic", nic,
            # IPA's Python blocks on getrandom() until the kernel's pool is ready: feed it.
            "-device", "virtio-rng-pci",
            "-no-reboot",
            *drives,
        ]  # fmt: skip


def cpu_model(cpu: str, accel: str, arch: Arch = X86_64) -> str:
    """QEMU's -cpu: the one asked for (the qemu_cpu setting), else host under KVM, the arch's under TCG."""
    return cpu or ("host" if accel == "kvm" else arch.qemu_cpu)


CPUINFO = Path("/proc/cpuinfo")
# What x86-64-v2 adds to the baseline, as /proc/cpuinfo spells it (QEMU's -cpu options: sse4.1, lahf-lm too).
V2_FLAGS = ("cx16", "lahf_lm", "popcnt", "sse4_1", "sse4_2", "ssse3")
# QEMU's named x86 models that lack some of them (a -v<n> version too). Nehalem (2008) and every newer named
# model (Westmere, SandyBridge..., Opteron_G4, EPYC...) have them all, and so has max under TCG.
BELOW_V2 = frozenset(m.lower() for m in (
    "qemu64", "qemu32", "kvm64", "kvm32", "base", "486", "pentium", "pentium2", "pentium3", "coreduo", "core2duo",
    "n270", "Conroe", "Penryn", "athlon", "phenom", "Opteron_G1", "Opteron_G2", "Opteron_G3"))


def _flag(option: str) -> str:
    """`+sse4.2`, `sse4-2=on` -> `sse4_2`; '' for an option that adds no flag."""
    name, _, value = option.lstrip("+").partition("=")
    adds = option.startswith("+") or value in ("on", "true")
    return name.replace(".", "_").replace("-", "_").lower() if adds else ""


def host_flags(cpuinfo: Path) -> set[str] | None:
    """The first CPU's flags in /proc/cpuinfo (None: not readable)."""
    try:
        text = cpuinfo.read_text(errors="replace")
    except OSError:
        return None
    m = re.search(r"^flags\s*:(.*)$", text, re.M)
    return set(m.group(1).split()) if m else None


def below_v2(cpu: str, accel: str, cpuinfo: Path | None = None) -> str:
    """Why -cpu `cpu` under `accel` is below x86-64-v2, in a few words ('' when it is not, or nothing
    tells). A named model below it passes when its +options add every flag it lacks; host, and max
    under KVM, are this host's CPU: its /proc/cpuinfo flags say."""
    name, *options = cpu.split(",")
    added = {_flag(o) for o in options}
    if name == "host" or (name == "max" and accel == "kvm"):
        cpuinfo = cpuinfo or CPUINFO
        have = host_flags(cpuinfo)
        lacking = [f for f in V2_FLAGS if have is not None and f not in have | added]
        return f"this host's CPU lacks {' '.join(lacking)} ({cpuinfo})" if lacking else ""
    if re.sub(r"-v\d+$", "", name).lower() in BELOW_V2 and not set(V2_FLAGS) <= added:
        return f"QEMU's {name} model is older than Nehalem"
    return ""


def require_cpu(cpu: str, accels: list[str] | tuple[str, ...], arch: Arch, release: Release | None) -> None:
    """A VM whose CPU the release cannot run on is refused before it starts: its kernel and packages
    stop, or hang silently, on an illegal instruction. SLES 16 needs x86-64-v2; only x86_64 has levels."""
    if release is None or release.x86_64_level < 2 or arch != X86_64:
        return
    for accel in accels:
        model = cpu_model(cpu, accel, arch)
        why = below_v2(model, accel)
        if why:
            raise ConfigError(
                f"{release.shown} needs an x86-64-v2 CPU, but the boot test's -cpu {model} ({accel}) is below it: "
                f"{why}",
                "boot under TCG with -cpu max (--accel tcg --qemu-cpu max), or run the boot test on a newer host"
                if model in ("host", "max") else
                "set --qemu-cpu (SIB_QEMU_CPU) to max or a model from Nehalem on, or leave it unset (max)")


def require(arch: Arch = X86_64) -> None:
    if run.which(arch.qemu_binary) is None:
        raise ConfigError(f"{arch.qemu_binary} not found", arch.qemu_hint)


def start(machine: Machine, err_path: Path) -> Popen[bytes]:
    """Start the VM (stdout/stderr to err_path). It dies with this process, even on SIGKILL."""
    with err_path.open("wb") as err, open(os.devnull, "rb") as null:
        return run.popen(machine.argv(), stdin=null, stdout=err, stderr=err)


def stop(proc: Popen[bytes], grace: float = 5.0) -> None:
    """SIGTERM, then SIGKILL after `grace` seconds: QEMU never outlives its test."""
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + grace
    while proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    if proc.poll() is None:
        proc.kill()
        proc.wait()


def qemu_errors(err_path: Path, n: int = 10) -> list[str]:
    lines = err_path.read_text(errors="replace").splitlines() if err_path.exists() else []
    return [line for line in lines if line.strip() and "terminating on signal" not in line][-n:]


class Console:
    """Follows the serial console file QEMU writes, keeping a tail and a few facts."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0
        self.partial = ""
        self.lines: deque[str] = deque(maxlen=400)
        self.any_output = False
        self.panic = ""
        self.missing: dict[str, str] = {}  # tool -> first console line that said it is missing
        self.secure_boot = False  # the kernel said Secure Boot was on
        self.lockdown = ""  # the kernel's lockdown line
        self.refused = ""  # the line where shim or the firmware refused an unsigned or untrusted loader
        self.kernel = False  # the kernel has started: refusals are the boot loaders', before it

    def poll(self) -> None:
        try:
            with self.path.open("rb") as f:
                f.seek(self.offset)
                chunk = f.read()
        except FileNotFoundError:
            return
        if not chunk:
            return
        self.any_output = True
        self.offset += len(chunk)
        text = self.partial + chunk.decode(errors="replace").replace("\r", "")
        *complete, self.partial = text.split("\n")
        for line in complete:
            self.lines.append(line)
            if not self.panic and "Kernel panic" in line:
                self.panic = _untimed(line)
            if "Secure boot enabled" in line:
                self.secure_boot = True
            if not self.lockdown and "Kernel is locked down" in line:
                self.lockdown = _untimed(line)
            self.kernel = self.kernel or "Linux version" in line
            if not self.refused and not self.kernel and REFUSED.search(line):  # the firmware's, not the agent's
                self.refused = _plain(line)[:200]
            tool = missing_tool(line)
            if tool and tool not in OPTIONAL_TOOLS:
                self.missing.setdefault(tool, line.strip())
        # shim draws its refusal in a box with cursor moves and no newline: look at the unfinished line too
        refusal = None if self.refused or self.kernel else REFUSED.search(self.partial)
        if refusal is not None:
            self.refused = _plain(self.partial[refusal.start():])[:200]

    def tail(self, n: int = TAIL_LINES) -> list[str]:
        lines = list(self.lines) + ([self.partial] if self.partial else [])
        return lines[-n:]

    def last(self) -> str:
        for line in reversed(self.tail(5)):
            if line.strip():
                return line.strip()
        return ""

    def missing_report(self) -> str:
        """'' when no required tool was reported missing, else one line naming them."""
        if not self.missing:
            return ""
        return "the ramdisk lacks " + ", ".join(sorted(self.missing)) + " (console: " + \
            next(iter(self.missing.values()))[:160] + ")"


# shim: "Verification failed: (0x1A) Security Violation"; grub: "bad shim signature"; OVMF: "Access Denied"
REFUSED = re.compile(r"Verification failed|Security Violation|bad shim signature|Access Denied")
# Tools IPA calls when present and treats as optional: their absence is logged, not fatal, and a
# ramdisk for ordinary servers does not need them. Every other "not found" on the console (the
# agent's journal goes there) fails the boot test and the lifecycle: the agent degrades silently
# without it (e.g. hexdump: no disk identifiers; lsb_release: no OS data in the inventory).
OPTIONAL_TOOLS = frozenset({
    "multipath", "multipathd",  # multipath-tools: probed at start-up, only for multipath storage
    "biosdevname",  # Dell NIC naming: probed for the inventory, absent on most distributions
    "podman",  # container-based clean steps: opt-in
    "ipmitool",  # the BMC address in the inventory: VMs and BMC-less machines have none
    "mstflint",  # Mellanox firmware clean steps: only with that hardware
})  # fmt: skip
_MISSING = (
    re.compile(r"(?P<tool>[\w.+-]+): (?:command )?not found\s*$"),  # sh, dash, bash
    re.compile(r"The (?P<tool>[\w.+-]+) tool may be missing"),
    re.compile(r"No such file or directory: '(?P<tool>[\w.+-]+)'"),
)


def _untimed(line: str) -> str:
    """A kernel console line without its "[   12.345678]" time stamp."""
    return re.sub(r"^\[\s*[\d.]+\]\s*", "", line.strip())


def _plain(text: str) -> str:
    """Console text without terminal escapes (the firmware's and shim's screen drawing)."""
    text = re.sub(r"\x1b\[[0-9;=?]*[A-Za-z]", " ", text)
    return " ".join(re.sub(r"[^\x20-\x7e]", " ", text).split())


def missing_tool(line: str) -> str:
    """The tool a console line says is missing ('' if none): shells, IPA's own hints, execve errors."""
    for pattern in _MISSING:
        m = pattern.search(line)
        if m:
            return m.group("tool")
    return ""
