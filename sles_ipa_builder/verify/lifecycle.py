"""A real OpenStack Ironic drives the ramdisk through inspect, clean and deploy.

`prepare()` runs first, on the host's network: it checks the inputs (a deploy image that is not a
disk image is refused here, before any VM starts) and installs the pinned Ironic into its cached
venv. Then the caller enters a private network namespace (namespace.enter(net=True)) whose lo also
carries 10.0.2.2, the address a QEMU user-network guest uses for the host: Ironic's API, the HTTP
server for images and the agent callback (forwarded into the VM) are then the same URLs for the
guest and for the conductor, which checks the image URL it hands to the agent, and nothing leaks
out. `run()` then drives one node per boot mode:

    enroll -> manage -> inspect (VM starts; agent inventory) -> provide (automated cleaning with
    the metadata erase) -> deploy of a small whole-disk image -> active

all with fast-track (one agent boot), and checks each stage from outside the agent: the inventory
against what QEMU was given, the disk's old signatures gone after cleaning, the image's bytes on the
disk after deploy. A failure names the stage, Ironic's last_error and the tails of the agent's
console and Ironic's log.
"""

from __future__ import annotations

import functools
import json
import logging
import tempfile
import threading
import time
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from ..config.arch import HOST_DEFAULT, Arch
from ..config.releases import Release
from ..errors import BuildError, ConfigError, InputError
from ..log import progress
from . import ironic, qemu, vmdisk
from .ironic import AGENT_PORT, API_PORT, GUEST_HOST, Api, StageFailed

log = logging.getLogger(__name__)

DISK_BYTES = 5 * 2**30
KVM_SILENCE_SECONDS = 20.0
# Stages that need the VM (re)booted, and the state Ironic waits in for the agent meanwhile.
BOOTS = {"inspect": "inspect wait", "unprovision": "clean wait"}
MODES = ("bios", "uefi")
MACS = {"bios": "52:54:00:5e:1b:11", "uefi": "52:54:00:5e:1b:12"}
# The agent reaches Ironic at 10.0.2.2; the conductor reaches the agent at 127.0.0.1:9999, which
# QEMU forwards into the VM (the guest's own 10.0.2.15 is not routable from the host side).
APPEND = (
    "systemd.journald.forward_to_console=1 panic=1 ipa-insecure=1 "
    f"ipa-api-url=http://{GUEST_HOST}:{API_PORT} "
    f"ipa-inspection-callback-url=http://{GUEST_HOST}:{API_PORT}/v1/continue_inspection "
    "ipa-inspection-collectors=default,extra-hardware,logs "
    f"ipa-advertise-host=127.0.0.1 ipa-advertise-port={AGENT_PORT}"
)


@dataclass
class Plan:
    kernel: Path
    initramfs: Path
    venv: Path
    ironic_version: str
    modes: tuple[str, ...]
    deploy_image: Path | None = None
    accels: tuple[str, ...] = ("tcg",)  # boottest.accel_plan(): KVM first falls back to TCG
    memory_mb: int = 2048
    smp: int = 2
    append: str = ""
    lookup_timeout: float = 300
    stage_timeout: float = 600
    keep_dir: Path | None = None  # consoles, Ironic's log and the report end up here
    unprovision: bool = False  # after active: undeploy with cleaning (a second agent boot)
    arch: Arch = HOST_DEFAULT  # the VM's (qemu-system-aarch64 for aarch64); the inventory must report it
    cpu: str = ""  # QEMU's -cpu ("": host under KVM, the arch's under TCG)
    release: Release | None = None  # the ramdisk's: a CPU below what it needs is refused by prepare()


@dataclass
class Result:
    mode: str
    ok: bool = False
    accel: str = ""
    stage: str = ""  # the stage that failed, or "" when all passed
    error: str = ""
    seconds: dict[str, float] = field(default_factory=dict)  # stage -> duration
    since_boot: dict[str, float] = field(default_factory=dict)  # inspected/cleaned/deployed after QEMU start
    checks: dict[str, Any] = field(default_factory=dict)

    def line(self) -> str:
        t = ", ".join(f"{k} {v:.0f}s" for k, v in self.since_boot.items() if k != "unprovisioned")
        again = self.since_boot.get("unprovisioned")
        end = "active" + (", then available again" if again is not None else "") if self.ok else \
            "FAILED at " + self.stage
        more = f"; cleaned again {again:.0f}s after its second boot" if again is not None else ""
        return f"{self.mode}: {end} ({t} after QEMU start{more})"


def prepare(
    kernel: Path, initramfs: Path, *, modes: tuple[str, ...] = MODES, deploy_image: Path | None = None,
    ironic_version: str | None = None, ipa_version: str | None = None, offline: bool = False, **kw: Any,
) -> Plan:  # fmt: skip
    """Everything that needs the host (files, firmware, PyPI): done before the namespace."""
    for what, p in (("kernel", kernel), ("initramfs", initramfs)):
        if not Path(p).is_file():
            raise InputError(f"{what} {p} not found", "build first, or give --kernel/--initramfs")
    arch = kw.get("arch", HOST_DEFAULT)
    qemu.require_cpu(kw.get("cpu", ""), kw.get("accels", Plan.accels), arch, kw.get("release"))
    qemu.require(arch)
    if arch.boot_uefi and "bios" in modes:
        raise ConfigError(f"an {arch} VM boots UEFI only", "use --mode uefi")
    if "uefi" in modes:
        qemu.ovmf(arch)
    if deploy_image is not None:
        with tempfile.TemporaryDirectory(prefix="sib-image-check-") as tmp:
            vmdisk.check_image(deploy_image, Path(tmp), DISK_BYTES)
    version = ironic_version or ironic.version_for(ipa_version)
    venv = ironic.ensure(version, offline=offline)
    return Plan(Path(kernel), Path(initramfs), venv, version, modes, deploy_image, **kw)


def run(plan: Plan, report: Path | None = None) -> list[Result]:
    """Drive one node per mode (inside the private network namespace); raise BuildError on failure."""
    results: list[Result] = []
    with ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="sib-lifecycle-")))
        run_dir = plan.keep_dir or tmp
        run_dir.mkdir(parents=True, exist_ok=True)
        http_root = run_dir / "http"
        server = _serve(http_root)
        stack.callback(server.shutdown)
        http_port = int(server.server_address[1])
        image = (vmdisk.check_image(plan.deploy_image, run_dir, DISK_BYTES) if plan.deploy_image
                 else vmdisk.deploy_image(run_dir))  # fmt: skip
        (http_root / "images").mkdir(parents=True, exist_ok=True)
        served = http_root / "images" / f"deploy.{image.format}"
        served.write_bytes(image.path.read_bytes())
        service = ironic.Ironic(plan.venv, run_dir, http_port=http_port)
        api = stack.enter_context(service)
        log.info("Ironic %s up on %s, images on port %d, state in %s", plan.ironic_version, api.url, http_port,
                 run_dir)  # fmt: skip
        try:
            for mode in plan.modes:
                results.append(Result(mode))
                _drive(plan, mode, run_dir, api, service, image, f"http://{GUEST_HOST}:{http_port}/images/"
                       f"{served.name}", results[-1])  # fmt: skip
        finally:
            if report is not None:
                doc = {"ironic": plan.ironic_version, "initramfs": str(plan.initramfs),
                       "results": [asdict(r) for r in results]}  # fmt: skip
                report.write_text(json.dumps(doc, indent=2) + "\n")
    return results


def _serve(root: Path) -> ThreadingHTTPServer:
    """Serve root over HTTP on every address of the private namespace (its lo: 127.0.0.1 for the guest's
    forwarded connections, 10.0.2.2 for the conductor's checks): nothing outside can reach it."""
    root.mkdir(parents=True, exist_ok=True)

    class Quiet(SimpleHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
            log.debug("image server: " + format, *args)

    server = ThreadingHTTPServer(("", 0), functools.partial(Quiet, directory=str(root)))
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="image-server", daemon=True).start()
    return server


def _drive(
    plan: Plan, mode: str, run_dir: Path, api: Api, service: ironic.Ironic, image: vmdisk.DeployImage,
    image_url: str, result: Result,
) -> None:  # fmt: skip
    disk = run_dir / f"disk-{mode}.raw"  # sparse; kept with --keep, for a look at what the agent wrote
    vmdisk.old_disk(disk, DISK_BYTES)
    machine = qemu.Machine(
        kernel=plan.kernel, initramfs=plan.initramfs,
        append=f"console={plan.arch.console},115200 {APPEND} {plan.append}".strip(),
        console=run_dir / f"console-{mode}.log", accel=plan.accels[0], memory_mb=plan.memory_mb, smp=plan.smp,
        mac=MACS[mode], disks=[disk], hostfwd=[f"tcp:127.0.0.1:{AGENT_PORT}-:{AGENT_PORT}"], uefi=mode == "uefi",
        name=f"sib-lifecycle-{mode}", arch=plan.arch, cpu=plan.cpu,
    )  # fmt: skip
    machine.prepare(run_dir)
    machine.console.unlink(missing_ok=True)  # QEMU appends to it (a --keep dir may hold an older run's)
    console = qemu.Console(machine.console)
    err_path = run_dir / f"qemu-{mode}.err"
    watch = _Watch(plan, mode, console, service, err_path, machine)
    node = api.create_node(
        name=f"sib-{mode}", driver="manual-management", boot_interface="ipxe", deploy_interface="direct",
        inspect_interface="agent", power_interface="fake", management_interface="noop", network_interface="noop",
        driver_info={"deploy_kernel": f"file://{_copy(plan.kernel, run_dir)}",
                     "deploy_ramdisk": f"file://{_copy(plan.initramfs, run_dir)}"},
        properties={"capabilities": f"boot_mode:{mode}", "cpu_arch": plan.arch.suse},
    )  # fmt: skip
    uuid = node["uuid"]
    api.create_port(uuid, machine.mac)
    with ExitStack() as stack, progress() as bar:
        stack.callback(watch.stop)
        task = bar.add_task(f"lifecycle {mode}", total=None)

        def tick(n: dict[str, Any]) -> None:
            watch.check(n)
            bar.update(task, description=f"lifecycle {mode}: {watch.stage} [{n.get('provision_state')}] "
                       f"{console.last()[:60]}")  # fmt: skip

        def stage(name: str, target: str, want: str, **extra: Any) -> dict[str, Any]:
            watch.stage = name
            t = time.monotonic()
            api.provision(uuid, target, **extra)
            if name in BOOTS:  # Ironic powers the node on (fake power) and waits: the VM starts now
                api.wait(uuid, BOOTS[name], timeout=120, tick=lambda n: None, settled=False)
                watch.start()
            done = api.wait(uuid, want, timeout=plan.stage_timeout, tick=tick)
            result.seconds[name] = round(time.monotonic() - t, 1)
            log.info("%s: %s done in %.0fs", mode, name, result.seconds[name])
            return done

        try:
            stage("manage", "manage", "manageable")
            stage("inspect", "inspect", "manageable")
            result.since_boot["inspected"] = watch.since_boot()
            result.checks["inventory"] = check_inventory(api.inventory(uuid), machine, DISK_BYTES, mode)
            stage("clean", "provide", "available")
            result.since_boot["cleaned"] = watch.since_boot()
            left = vmdisk.signatures(disk)
            if left:
                raise StageFailed(f"the disk still carries {', '.join(left)} after cleaning", api.node(uuid))
            result.checks["cleaned"] = "no MBR, GPT (primary, backup) or old ext4 signature left"
            watch.deploying = True
            api.patch(uuid, [{"op": "add", "path": "/instance_info", "value": {
                "image_source": image_url, "image_os_hash_algo": "sha256", "image_os_hash_value": image.sha256,
                "image_type": "whole-disk"}}])  # fmt: skip
            stage("deploy", "active", "active")
            result.since_boot["deployed"] = watch.since_boot()
            ok, what = vmdisk.written(disk, image.raw)
            if not ok:
                raise StageFailed(f"the disk does not hold the image: {what}", api.node(uuid))
            result.checks["deployed"] = what
            if machine.uefi_vars is not None:
                result.checks["uefi_boot_entry"] = uefi_entry(machine.uefi_vars, api.node(uuid))
            console.poll()
            if console.missing:
                watch.stage = "agent tools"
                raise StageFailed(console.missing_report(), api.node(uuid))
            if plan.unprovision:
                watch.stop()  # the agent powered it off at the end of deploy; Ironic boots it again
                watch.deploying = False
                stage("unprovision", "deleted", "available")
                result.since_boot["unprovisioned"] = watch.since_boot()
                left = vmdisk.signatures(disk)
                if left:
                    raise StageFailed(f"the disk still carries {', '.join(left)} after unprovisioning",
                                      api.node(uuid))  # fmt: skip
                result.checks["unprovisioned"] = "cleaned again: no partition table left of the image"
            result.ok, result.accel = True, machine.accel
        except StageFailed as e:
            result.stage, result.error, result.accel = watch.stage, e.why, machine.accel
            raise watch.failure(e) from None


class _Watch:
    """What is watched while a stage runs: QEMU alive, kernel panic, the agent's first contact."""

    def __init__(self, plan: Plan, mode: str, console: qemu.Console, service: ironic.Ironic, err: Path,
                 machine: qemu.Machine) -> None:  # fmt: skip
        self.plan, self.mode, self.console, self.service, self.err = plan, mode, console, service, err
        self.machine = machine
        self.stage = ""
        self.proc: Any = None
        self.t0 = 0.0
        self.deploying = False  # after deploy the agent powers the VM off: QEMU's exit is expected

    def start(self) -> None:
        self.proc, self.t0 = qemu.start(self.machine, self.err), time.monotonic()

    def stop(self) -> None:
        if self.proc is not None:
            qemu.stop(self.proc)

    def _kvm_failed(self) -> bool:
        """A KVM guest that died or stays silent on a host where KVM guests hang: retry under TCG,
        as the boot test does (the node just waits in 'inspect wait' meanwhile)."""
        if self.machine.accel != "kvm" or "tcg" not in self.plan.accels or self.console.any_output:
            return False
        if self.proc.poll() is None and self.since_boot() < KVM_SILENCE_SECONDS:
            return False
        log.warning("KVM guest %s; retrying under TCG (set SIB_ACCEL=tcg to skip KVM)",
                    "died" if self.proc.poll() is not None else f"silent for {KVM_SILENCE_SECONDS:.0f}s")
        self.stop()
        self.machine.accel = "tcg"
        self.start()
        return True

    def since_boot(self) -> float:
        return round(time.monotonic() - self.t0, 1)

    def check(self, node: dict[str, Any]) -> None:
        self.console.poll()
        if self.proc is not None and self._kvm_failed():
            return
        if self.console.panic:
            raise StageFailed(f"the kernel panicked: {self.console.panic}", node)
        if not self.service.alive():
            raise StageFailed("Ironic exited", node)
        if self.proc is not None and self.proc.poll() is not None and not self.deploying:
            raise StageFailed(f"QEMU exited with code {self.proc.returncode}", node)
        waited = self.since_boot()
        if self.stage == "inspect" and node.get("provision_state") == "inspect wait" and \
                waited > self.plan.lookup_timeout:
            if (node.get("driver_internal_info") or {}).get("agent_last_heartbeat"):
                raise StageFailed(f"the agent heartbeats but sent no inventory in {self.plan.lookup_timeout:.0f} s "
                                  "(ipa-inspection-callback-url, collectors)", node)  # fmt: skip
            raise StageFailed(f"no lookup in {self.plan.lookup_timeout:.0f} s: the agent never reported to Ironic",
                              node)  # fmt: skip

    def failure(self, e: StageFailed) -> BuildError:
        self.console.poll()
        err = e.node.get("last_error") or "(none)"
        tail = ["--- agent console (last lines):", *self.console.tail(40),
                "--- Ironic log (last lines):", *self.service.log_tail(20)]  # fmt: skip
        tail += ["--- qemu:", *qemu.qemu_errors(self.err)] if qemu.qemu_errors(self.err) else []
        if "no lookup" in e.why:
            hint = "the agent never looked the node up: see the console (network, ipa-api-url, agent start-up)"
        elif self.stage == "agent tools":
            hint = "add the package that carries it to the element set, or list it in qemu.OPTIONAL_TOOLS with why"
        else:
            hint = "see Ironic's last_error and the agent's console above"
        keep = self.plan.keep_dir
        hint += f"; consoles, Ironic's log and the disk are in {keep}" if keep else \
            "; --keep DIR keeps the consoles, Ironic's log and the disk"
        return BuildError(f"lifecycle failed at {self.stage} ({self.mode}): {e.why}; Ironic's last_error: {err}",
                          hint, tail=tail)  # fmt: skip


def _copy(src: Path, run_dir: Path) -> Path:
    """Ironic accepts file:// only under [conductor]file_url_allowed_paths, which is the run dir."""
    dst = run_dir / "deploy-ramdisk" / src.name
    if not dst.exists():
        dst.parent.mkdir(parents=True, exist_ok=True)
        dst.write_bytes(src.read_bytes())
    return dst


def uefi_entry(vars_file: Path, node: dict[str, Any]) -> str:
    """The agent registers the image's loader with efibootmgr: the VM's NVRAM file must now name it."""
    nvram = vars_file.read_bytes()
    if "\\EFI\\BOOT\\BOOTX64.EFI".encode("utf-16-le") not in nvram:
        raise StageFailed("the VM's UEFI variables hold no boot entry for \\EFI\\BOOT\\BOOTX64.EFI after deploy "
                          "(the agent's efibootmgr step)", node)  # fmt: skip
    return "NVRAM has a boot entry for \\EFI\\BOOT\\BOOTX64.EFI"


def check_inventory(inv: dict[str, Any], machine: qemu.Machine, disk_bytes: int, mode: str) -> dict[str, Any]:
    """The agent's inventory against what QEMU was given (CPUs, RAM, disk, MAC, boot mode); raises on a mismatch."""
    data = inv.get("inventory", inv)
    cpus = int(data.get("cpu", {}).get("count", 0))
    ram_mb = int(data.get("memory", {}).get("physical_mb", 0))
    disks = [int(d.get("size", 0)) for d in data.get("disks", [])]
    macs = [str(i.get("mac_address", "")).lower() for i in data.get("interfaces", [])]
    boot = data.get("boot", {}).get("current_boot_mode", "")
    cpu_arch = str(data.get("cpu", {}).get("architecture", ""))
    problems = []
    if cpu_arch != machine.arch.suse:
        problems.append(f"cpu architecture {cpu_arch!r}, the VM is {machine.arch}")
    if cpus != machine.smp:
        problems.append(f"{cpus} CPUs, QEMU has {machine.smp}")
    if not machine.memory_mb - 256 <= ram_mb <= machine.memory_mb + 64:
        problems.append(f"{ram_mb} MiB RAM, QEMU has {machine.memory_mb}")
    if disk_bytes not in disks:
        problems.append(f"disks {disks}, QEMU has one of {disk_bytes} bytes")
    if machine.mac not in macs:
        problems.append(f"MACs {macs}, QEMU's NIC is {machine.mac}")
    if boot != mode:
        problems.append(f"boot mode {boot!r}, the VM booted {mode}")
    if problems:
        raise StageFailed("inventory does not match the VM: " + "; ".join(problems), {})
    return {"cpus": cpus, "ram_mb": ram_mb, "disk_bytes": disk_bytes, "mac": machine.mac, "boot_mode": boot,
            "cpu_arch": cpu_arch}
