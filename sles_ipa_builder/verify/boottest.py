"""Boot the artifacts in QEMU and watch the agent call a fake Ironic API on loopback.

The VM gets user-mode networking, so the guest reaches the host's loopback endpoint as
10.0.2.2:PORT, and `ipa-api-url` points there. The test passes when a lookup carrying the VM's MAC
arrives and a heartbeat for the node we answered with follows: that is IPA up, networked, and
talking to Ironic, which is what metal3 needs from the ramdisk.

KVM guests can hang silently on some hosts (nested virtualisation, broken /dev/kvm), so with
accel=auto a KVM guest that prints nothing on the serial console within KVM_SILENCE_SECONDS is
killed and the boot retried under TCG.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .. import run
from ..config.arch import HOST_DEFAULT, X86_64, Arch
from ..config.releases import Release
from ..delivery import bootmedia
from ..errors import BuildError, ConfigError, InputError
from ..log import progress
from . import qemu
from .fake_ironic import FakeIronic, Request

log = logging.getLogger(__name__)

QEMU = X86_64.qemu_binary
MAC = qemu.MAC
_Console = qemu.Console
KVM_SILENCE_SECONDS = 20.0
DISK_BYTES = 8 * 2**30
ACCEL_ENV = "SIB_ACCEL"  # auto|kvm|tcg; overrides accel='auto' (e.g. CI hosts where KVM hangs)
# Kernel arguments IPA reads, plus a console and a panic that ends qemu instead of hanging it.
AGENT_APPEND = "ipa-insecure=1 systemd.journald.forward_to_console=1 panic=1 ipa-lookup-timeout=600"


def base_append(arch: Arch = HOST_DEFAULT) -> str:
    return f"console={arch.console},115200 {AGENT_APPEND}"


@dataclass
class BootResult:
    kernel: Path | None  # None: booted from an ISO
    initramfs: Path | None
    accel: str
    fell_back: bool  # KVM was tried and abandoned for TCG
    mac: str
    node_uuid: str
    lookup_seconds: float  # from qemu start (of the attempt that passed) to the first lookup
    heartbeat_seconds: float  # ... to the first heartbeat after it
    addresses: list[str] = field(default_factory=list)
    requests: list[Request] = field(default_factory=list)
    console_tail: list[str] = field(default_factory=list)
    console_path: Path | None = None
    agent_version: str = ""  # as the first heartbeat announced it
    secure_boot: bool = False  # the kernel said "Secure boot enabled"
    lockdown: str = ""  # the kernel's lockdown line, if it locked itself down

    def verdict(self) -> str:
        via = "tcg after kvm failed" if self.fell_back else self.accel
        return (
            f"agent lookup after {self.lookup_seconds:.1f}s and heartbeat after "
            f"{self.heartbeat_seconds:.1f}s ({via})"
        )

    def summary(self) -> str:
        """The line the CLI prints: verdict, the agent's version and where the console went."""
        parts = [f"boot test passed: {self.verdict()}"]
        if self.agent_version:
            parts.append(f"agent version {self.agent_version}")
        if self.secure_boot:
            parts.append("Secure Boot on" + (", kernel locked down" if self.lockdown else ""))
        if self.console_path:
            parts.append(f"console in {self.console_path}")
        return "; ".join(parts)


def kvm_usable() -> bool:
    return os.access("/dev/kvm", os.R_OK | os.W_OK)


def accel_plan(accel: str, arch: Arch = HOST_DEFAULT) -> list[str]:
    """The accelerators to try in order. 'auto' (or $SIB_ACCEL) means KVM if usable, then TCG.
    Another architecture than the host's has only TCG."""
    if arch != HOST_DEFAULT:
        if accel == "kvm":
            raise ConfigError(f"--accel kvm cannot run an {arch} VM on this host", "use --accel auto or tcg")
        return ["tcg"]
    if accel == "auto":
        accel = os.environ.get(ACCEL_ENV, "auto").strip().lower() or "auto"
    if accel not in ("auto", "kvm", "tcg"):
        raise ConfigError(f"unknown accelerator {accel!r}", "use auto, kvm or tcg")
    if accel == "kvm" and not kvm_usable():
        raise ConfigError("--accel kvm but /dev/kvm is not usable", "use --accel auto or tcg")
    if accel == "auto":
        return ["kvm", "tcg"] if kvm_usable() else ["tcg"]
    return [accel]


def qemu_argv(
    kernel: Path | None,
    initramfs: Path | None,
    *,
    accel: str,
    console: Path,
    port: int,
    memory_mb: int,
    append: str,
    nic_model: str = "virtio-net-pci",
    smp: int = 2,
    disk: Path | None = None,
    scheme: str = "http",
    hostfwd: Sequence[str] = (),
    arch: Arch = HOST_DEFAULT,
    iso: Path | None = None,
    firmware: str = "",
    cdroms: Sequence[Path] = (),
    cpu: str = "",
) -> list[str]:
    """QEMU's command line: a direct kernel boot, or with `iso` the firmware boots that CD (whose boot
    menu already carries agent_cmdline()); firmware: bios, uefi or secure-boot ('' for the arch's own)."""
    # After the lookup IPA waits up to 30 s for a root-device candidate (>= 4 GiB) before it
    # heartbeats: give it an empty sparse disk so the heartbeat is not delayed.
    machine = qemu.Machine(
        kernel=None if iso else kernel, initramfs=None if iso else initramfs,
        append=agent_cmdline(port, append, scheme, arch), console=console, accel=accel, memory_mb=memory_mb,
        smp=smp, nic_model=nic_model, disks=[disk] if disk else [], name="sles-ipa-builder-boot-test",
        hostfwd=list(hostfwd), arch=arch, uefi=firmware == "uefi" or (not firmware and arch.boot_uefi),
        cdrom=iso, secure_boot=firmware == "secure-boot", cdroms=list(cdroms), cpu=cpu,
    )  # fmt: skip
    machine.prepare(console.parent)  # the UEFI vars copy, beside the console
    return machine.argv()


def agent_cmdline(port: int, append: str = "", scheme: str = "http", arch: Arch = HOST_DEFAULT) -> str:
    return f"{base_append(arch)} ipa-api-url={scheme}://10.0.2.2:{port} {append}".strip()


FIRMWARES = ("bios", "uefi", "secure-boot")


def release_firmware(release: Release | None) -> str:
    """The firmware a direct boot of this release's ramdisk gets when none is asked for: UEFI where the
    release boots UEFI by default (SLES 16), else the arch's own ("": BIOS on x86_64, UEFI elsewhere)."""
    return "uefi" if release is not None and release.firmware == "uefi" else ""


class _KvmSilent(Exception):
    pass


def boot_test(
    kernel: Path | None,
    initramfs: Path | None,
    *,
    timeout: float = 300,
    memory_mb: int = 2048,
    append: str = "",
    keep_console: Path | None = None,
    accel: str = "auto",
    nic_model: str = "virtio-net-pci",
    addon: Path | None = None,
    tls: tuple[Path, Path] | None = None,
    hostfwd: Sequence[str] = (),
    while_up: Callable[[], None] | None = None,
    arch: Arch = HOST_DEFAULT,
    iso: Path | None = None,
    firmware: str = "",
    cdroms: Sequence[Path] = (),
    cpu: str = "",
    release: Release | None = None,
) -> BootResult:
    """Boot kernel+initramfs and wait for the agent's lookup and heartbeat; raise BuildError otherwise.

    iso: boot that ISO as a CD instead (kernel and initramfs unused), through `firmware` (bios, uefi or
    secure-boot). The VM boots a copy whose boot menus add the agent's parameters (the fake API's URL),
    every other file kept: Ironic, too, writes its own grub.cfg. cdroms: more CDs (a config drive).

    addon: an add-on cpio given after the initramfs, as a boot loader passes a second initrd (the
    initramfs file itself is not changed). tls: the fake API serves HTTPS with this (certificate,
    key); add `ipa-insecure=0` to `append` for the agent to verify it. hostfwd: QEMU user-network
    forwards. while_up: called after the heartbeat, while the VM still runs (an SSH check). cpu: QEMU's
    -cpu ("": host under KVM, the arch's under TCG); one below what `release` needs is refused first."""
    given = (("ISO", iso),) if iso is not None else (("kernel", kernel), ("initramfs", initramfs))
    for what, p in (*given, ("add-on", addon)):
        if p is not None and not Path(p).is_file():
            raise InputError(f"boot test: {what} {p} not found", "build first, or pass --output/--name")
    if firmware and firmware not in FIRMWARES:
        raise ConfigError(f"unknown firmware {firmware!r}", f"use one of {', '.join(FIRMWARES)}")
    if firmware == "bios" and arch.boot_uefi:
        raise ConfigError(f"an {arch} VM has no BIOS", "use --firmware uefi")
    if firmware == "secure-boot" and arch.secure_boot_firmware is None:
        raise ConfigError(f"no Secure Boot firmware is known for {arch}", "use --firmware uefi")
    if iso is not None and addon is not None:
        raise ConfigError("an add-on cpio cannot be given to an ISO boot", "boot the kernel and initramfs instead")
    plan = accel_plan(accel, arch)
    qemu.require_cpu(cpu, plan, arch, release)
    qemu.require(arch)
    with tempfile.TemporaryDirectory(prefix="sib-boot-") as tmp, FakeIronic(tls=tls) as api:
        if iso is not None:
            copy = Path(tmp) / Path(iso).name
            bootmedia.with_kernel_args(Path(iso), copy, Path(tmp) / "menus", agent_cmdline(api.port, append,
                                                                                           api.scheme, arch))
            iso = copy
        elif addon is not None and initramfs is not None:  # as a boot loader does with two initrds
            both = Path(tmp) / f"{initramfs.name}+{Path(addon).name}"
            from ..delivery.addon import combine

            combine(initramfs, Path(addon), both)
            initramfs = both
        disk = Path(tmp) / "disk.raw"
        with disk.open("wb") as f:
            f.truncate(DISK_BYTES)  # sparse: costs no space
        for i, acc in enumerate(plan):
            console = Path(tmp) / f"console-{acc}.log"
            try:
                result = _attempt(
                    api, kernel, initramfs, acc, console, Path(tmp) / f"qemu-{acc}.err",
                    timeout=timeout, memory_mb=memory_mb, append=append, nic_model=nic_model, disk=disk,
                    silence_limit=KVM_SILENCE_SECONDS if acc == "kvm" and i + 1 < len(plan) else None,
                    hostfwd=hostfwd, while_up=while_up, arch=arch, iso=iso, firmware=firmware, cdroms=cdroms,
                    cpu=cpu,
                )  # fmt: skip
            except _KvmSilent as e:
                log.warning("KVM guest %s; retrying under TCG (set %s=tcg to skip KVM)", e, ACCEL_ENV)
                continue
            finally:
                if keep_console is not None and console.exists():
                    keep_console.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copyfile(console, keep_console)
            result.fell_back = i > 0
            result.console_path = keep_console
            return result
    raise AssertionError("unreachable: the last accelerator never raises _KvmSilent")


def _attempt(
    api: FakeIronic, kernel: Path | None, initramfs: Path | None, accel: str, console_path: Path, err_path: Path,
    *, timeout: float, memory_mb: int, append: str, nic_model: str, disk: Path | None,
    silence_limit: float | None, hostfwd: Sequence[str] = (), while_up: Callable[[], None] | None = None,
    arch: Arch = HOST_DEFAULT, iso: Path | None = None, firmware: str = "", cdroms: Sequence[Path] = (),
    cpu: str = "",
) -> BootResult:  # fmt: skip
    argv = qemu_argv(
        kernel, initramfs, accel=accel, console=console_path, port=api.port, memory_mb=memory_mb,
        append=append, nic_model=nic_model, disk=disk, scheme=api.scheme, hostfwd=hostfwd, arch=arch, iso=iso,
        firmware=firmware, cdroms=cdroms, cpu=cpu,
    )  # fmt: skip
    console = _Console(console_path)
    booted = iso or initramfs or Path()
    log.info("booting %s under %s%s, fake Ironic API on %s", booted.name, accel,
             f" ({firmware})" if firmware else "", api.url)
    with err_path.open("wb") as err, open(os.devnull, "rb") as null:
        proc = run.popen(argv, stdin=null, stdout=err, stderr=err)
    start = time.monotonic()
    lookup: Request | None = None
    beat: Request | None = None
    failure = ""
    try:
        with progress() as bar:
            task = bar.add_task("boot test", total=timeout)
            while True:
                elapsed = time.monotonic() - start
                console.poll()
                reqs = [r for r in api.requests() if r.monotonic >= start]
                if lookup is None:
                    lookup = next((r for r in reqs if _is_our_lookup(r)), None)
                    if lookup is not None:
                        log.info("lookup from %s after %.1fs", MAC, lookup.monotonic - start)
                if lookup is not None and beat is None:
                    beat = next((r for r in reqs if _is_heartbeat(r, api, lookup)), None)
                    if beat is not None:
                        log.info("heartbeat after %.1fs", beat.monotonic - start)
                        break
                if silence_limit is not None and not console.any_output:
                    if elapsed > silence_limit:
                        raise _KvmSilent(f"printed nothing on the console in {silence_limit:.0f}s")
                    if proc.poll() is not None:
                        raise _KvmSilent(f"failed to start (qemu exit code {proc.returncode})")
                if console.panic:
                    failure = f"the kernel panicked: {console.panic}"
                    break
                if console.refused:
                    failure = f"the firmware refused to boot: {console.refused}"
                    break
                if proc.poll() is not None:
                    failure = f"qemu exited with code {proc.returncode} before the agent heartbeat"
                    break
                if elapsed > timeout:
                    failure = f"timed out after {timeout:.0f}s"
                    break
                status = f"lookups {len(api.lookups())}, heartbeats {len(api.heartbeats())}"
                bar.update(task, completed=min(elapsed, timeout),
                           description=f"boot test ({accel}) {status} | {console.last()[:60]}")  # fmt: skip
                time.sleep(0.5)
        if while_up is not None and not failure and beat is not None:
            while_up()
    finally:
        qemu.stop(proc)
        console.poll()
    if failure or lookup is None or beat is None:
        raise _failure(failure, api, console, err_path, start, lookup, accel, arch)
    if firmware == "secure-boot" and not console.secure_boot:
        raise BuildError(f"boot test failed ({accel}): the agent ran, but the kernel did not report Secure Boot on",
                         "check the firmware (OVMF_CODE_4M.secboot.fd with OVMF_VARS_4M.ms.fd)", tail=console.tail())
    if console.missing:
        raise BuildError(f"boot test failed ({accel}): {console.missing_report()}",
                         "add the package that carries it to the element set (or, if the agent treats it as "
                         "optional, to qemu.OPTIONAL_TOOLS with the reason)", tail=console.tail())
    return BootResult(
        kernel=kernel, initramfs=initramfs, accel=accel, fell_back=False, mac=MAC,
        node_uuid=api.node.uuid, lookup_seconds=lookup.monotonic - start,
        heartbeat_seconds=beat.monotonic - start, addresses=lookup.addresses,
        requests=[r for r in api.requests() if r.monotonic >= start], console_tail=console.tail(),
        agent_version=str(beat.body.get("agent_version", "")) if isinstance(beat.body, dict) else "",
        secure_boot=console.secure_boot, lockdown=console.lockdown,
    )  # fmt: skip


def _is_our_lookup(r: Request) -> bool:
    return r.method == "GET" and r.path.rstrip("/") == "/v1/lookup" and MAC in r.addresses


def _is_heartbeat(r: Request, api: FakeIronic, lookup: Request) -> bool:
    ours = r.path == f"/v1/heartbeat/{api.node.uuid}"
    return r.method == "POST" and ours and r.monotonic >= lookup.monotonic


def _failure(
    why: str, api: FakeIronic, console: _Console, err_path: Path, start: float,
    lookup: Request | None, accel: str, arch: Arch = HOST_DEFAULT,
) -> BuildError:  # fmt: skip
    reqs = [r for r in api.requests() if r.monotonic >= start]
    other_lookups = [r for r in reqs if r.path.rstrip("/") == "/v1/lookup" and r is not lookup]
    if lookup is not None:
        got = f"lookup received after {lookup.monotonic - start:.0f}s but no heartbeat followed"
    elif other_lookups:
        seen = other_lookups[-1].param("addresses")
        got = f"lookups received, none with the VM's MAC {MAC} (addresses={seen})"
    elif reqs:
        got = f"{len(reqs)} request(s) received but no lookup"
    else:
        got = "no request reached the fake Ironic API (no lookup, no heartbeat)"
    tail = ["--- console (last lines):", *console.tail()]
    qemu_err = qemu.qemu_errors(err_path)
    if qemu_err:
        tail += ["--- qemu:", *qemu_err]
    tail += ["--- fake Ironic API received:", *(r.describe() for r in reqs)] if reqs else []
    if console.refused:
        hint = "Secure Boot refused a boot loader: its signature is not trusted (see the console lines)"
    elif "Unable to mount root fs" in console.panic:
        hint = "the initramfs has no working /init (the kernel fell back to mounting a root disk): repack it"
    elif console.panic:
        hint = "the ramdisk cannot boot: check its /init and that the kernel matches its modules"
    elif not console.any_output:
        hint = (f"nothing on the serial console: is console={arch.console} honoured, is the kernel an "
                f"{arch} kernel?")
    elif lookup is None:
        hint = "the agent never looked the node up: check its network (virtio_net) and ipa-api-url (console)"
    else:
        hint = "the agent looked the node up but did not heartbeat: see the agent's log in the console"
    return BuildError(f"boot test failed ({accel}): {why}; {got}", hint, tail=tail)
