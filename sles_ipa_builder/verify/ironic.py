"""A standalone OpenStack Ironic: installed from PyPI into a cached venv, configured, run, and talked to.

Standalone means no Keystone (noauth), no message bus (rpc_transport none: the all-in-one `ironic`
command runs API and conductor in one process), sqlite, and every path under one run directory
(the defaults write to /var/lib/ironic, /tftpboot and /httpboot). The node type is the one that
works without a BMC: `manual-management` with fake power and no-op management (the caller powers the
VM), booted with the ipxe interface and inspected by the agent itself. `fake-hardware` cannot finish a
direct deploy: its management refuses boot device "disk" at prepare_instance_boot.
"""

from __future__ import annotations

import json
import logging
import shutil
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import run
from ..cache import store as cache
from ..errors import BuildError, CommandError, ConfigError
from . import qemu

if TYPE_CHECKING:
    from subprocess import Popen

log = logging.getLogger(__name__)

# The Ironic release of the OpenStack series each IPA major belongs to (the one tried with it).
IRONIC_FOR_IPA = {13: "39.0.0"}
DEFAULT_VERSION = "39.0.0"
GUEST_HOST = "10.0.2.2"  # the host as a QEMU user-network guest sees it; also on the namespace's lo
API_PORT = 6385
AGENT_PORT = 9999
DONE = ".installed"
PIP_TIMEOUT = 30


def version_for(ipa_version: str | None) -> str:
    """The pinned Ironic for an IPA version string ('13.0.0', '13.1.dev4'); the default otherwise."""
    if ipa_version:
        major = ipa_version.split(".")[0]
        if major.isdigit() and int(major) in IRONIC_FOR_IPA:
            return IRONIC_FOR_IPA[int(major)]
    return DEFAULT_VERSION


def venv_dir(version: str) -> Path:
    return cache.cache_dir("ironic") / version


def ensure(version: str, *, offline: bool = False) -> Path:
    """The venv holding `ironic==version`, installed once (under a lock) and reused."""
    venv = venv_dir(version)
    with cache.locked(venv):
        if (venv / DONE).is_file():
            return venv
        if offline:
            raise ConfigError(f"Ironic {version} is not installed in {venv} and --offline forbids PyPI",
                              "run the lifecycle once with network access to fill the cache")
        if venv.exists():
            shutil.rmtree(venv)  # a half-made venv from an interrupted install
        log.info("installing Ironic %s from PyPI into %s (once)", version, venv)
        # The venv's scripts name their own path, so it is made in place and marked done at the end.
        pip = [str(venv / "bin/python"), "-m", "pip", "--disable-pip-version-check", "-q",
               "--timeout", str(PIP_TIMEOUT), "--retries", "1"]  # fmt: skip
        try:
            run.run([sys.executable, "-m", "venv", venv], capture=True)
            run.run([*pip, "install", f"ironic=={version}"], capture=True)
        except CommandError as e:
            shutil.rmtree(venv, ignore_errors=True)
            last = next((line for line in reversed(e.output.splitlines()) if line.strip()), "")[:200]
            raise ConfigError(f"cannot install Ironic {version} from PyPI: {last}",
                              "check the network and proxy (pip must reach PyPI once; the venv is cached in "
                              f"{venv.parent})") from None  # fmt: skip
        (venv / DONE).write_text(version + "\n")
        return venv


def config(run_dir: Path, *, http_port: int, debug: bool = True) -> str:
    """ironic.conf for one standalone run. Every option here is needed; why is said next to it."""
    s = run_dir
    return f"""[DEFAULT]
auth_strategy = noauth
rpc_transport = none
host = sles-ipa-builder
state_path = {s}/state
tempdir = {s}/tmp
log_dir = {s}
log_file = ironic.log
debug = {debug}
enabled_hardware_types = manual-management
enabled_power_interfaces = fake
enabled_management_interfaces = noop
enabled_boot_interfaces = ipxe
enabled_deploy_interfaces = direct
enabled_inspect_interfaces = agent
enabled_network_interfaces = noop
enabled_raid_interfaces = no-raid
enabled_bios_interfaces = no-bios
enabled_console_interfaces = no-console
enabled_vendor_interfaces = no-vendor
enabled_rescue_interfaces = no-rescue
enabled_firmware_interfaces = no-firmware
default_network_interface = noop
# Keep a qcow2 a qcow2: the ramdisk's qemu-img converts it while writing (that is what is tested).
force_raw_images = False

[api]
host_ip = 127.0.0.1
port = {API_PORT}

[database]
connection = sqlite:///{s}/ironic.sqlite

[conductor]
automated_clean = True
# The VM has no BMC: nothing to sync, and a sync would only log.
sync_power_state_interval = 0
heartbeat_interval = 5
file_url_allowed_paths = {s}
deploy_callback_timeout = 600

[deploy]
fast_track = True
# Only the metadata erase: a full erase (priority 10 in the agent) shreds the whole 5 GiB disk.
erase_devices_priority = 0
erase_devices_metadata_priority = 10
http_root = {s}/http
http_url = http://{GUEST_HOST}:{http_port}
default_boot_mode = bios

[agent]
# The conductor caches the image and serves it; the ramdisk's qemu-img converts it (not the conductor).
image_download_source = local
certificates_path = {s}/certificates
deploy_logs_collect = on_failure
deploy_logs_local_path = {s}/deploy-logs
# Fake power never reports "off" after the agent's soft power-off: do not wait 30 s for it.
post_deploy_get_power_state_retries = 0
post_deploy_get_power_state_retry_interval = 1

[inspector]
# The VM's MAC is enrolled as a port before inspection.
add_ports = disabled

[pxe]
tftp_root = {s}/tftp
tftp_master_path = {s}/tftp/master_images
images_path = {s}/images
instance_master_path = {s}/master_images

[dhcp]
dhcp_provider = none

[service_catalog]
# Without it the conductor looks Ironic's own URL up in a (missing) Keystone catalog and cleaning fails.
endpoint_override = http://{GUEST_HOST}:{API_PORT}

[oslo_concurrency]
lock_path = {s}/locks
"""


def write_config(run_dir: Path, *, http_port: int) -> Path:
    for d in ("state", "tmp", "http", "tftp", "images", "master_images", "certificates", "locks", "deploy-logs"):
        (run_dir / d).mkdir(parents=True, exist_ok=True)
    path = run_dir / "ironic.conf"
    path.write_text(config(run_dir, http_port=http_port))
    return path


class Ironic:
    """The running service. `with Ironic(venv, run_dir, http_port) as api:` starts and stops it."""

    def __init__(self, venv: Path, run_dir: Path, *, http_port: int, start_timeout: float = 120) -> None:
        self.venv = venv
        self.run_dir = run_dir
        self.http_port = http_port
        self.start_timeout = start_timeout
        self.log_path = run_dir / "ironic.log"
        self.out_path = run_dir / "ironic.out"
        self.proc: Popen[bytes] | None = None
        self._stack = ExitStack()

    def __enter__(self) -> Api:
        conf = write_config(self.run_dir, http_port=self.http_port)
        bindir = self.venv / "bin"
        try:
            run.run([bindir / "ironic-dbsync", "--config-file", conf, "create_schema"], capture=True)
        except CommandError as e:
            raise BuildError("Ironic's database schema could not be created", "see the output above",
                             tail=e.tail) from None
        with self.out_path.open("wb") as out:
            self.proc = run.popen([bindir / "ironic", "--config-file", conf], stdout=out, stderr=out)
        self._stack.callback(qemu.stop, self.proc, 15.0)
        api = Api(f"http://127.0.0.1:{API_PORT}")
        deadline = time.monotonic() + self.start_timeout
        while not api.up():
            if self.proc.poll() is not None:
                self._stack.close()
                raise BuildError(f"Ironic exited with code {self.proc.returncode} while starting",
                                 f"see {self.log_path}", tail=self.log_tail())
            if time.monotonic() > deadline:
                self._stack.close()
                raise BuildError(f"Ironic's API did not answer in {self.start_timeout:.0f}s",
                                 f"see {self.log_path}", tail=self.log_tail())
            time.sleep(0.5)
        return api

    def __exit__(self, *exc: object) -> None:
        self._stack.close()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_tail(self, n: int = 25) -> list[str]:
        """The last lines of Ironic's log (and of its stdout/stderr when the log is empty)."""
        lines: list[str] = []
        for p in (self.log_path, self.out_path):
            if p.exists():
                lines = [line for line in p.read_text(errors="replace").splitlines() if _telling(line)]
                if lines:
                    break
        return [line[:300] for line in lines[-n:]]


def _telling(line: str) -> bool:
    """A log line worth showing on failure: not debug chatter, not the access log of our own polling."""
    return bool(line.strip()) and " DEBUG " not in line and " ironic.api [" not in line and \
        not line.startswith((" ", "\t", "_"))


class Api:
    """The few calls of Ironic's REST API the lifecycle needs (urllib: no client library)."""

    def __init__(self, url: str) -> None:
        self.url = url.rstrip("/")
        # A direct connection: the proxy variables of the caller must not route loopback calls.
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    def call(self, method: str, path: str, body: Any = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(f"{self.url}{path}", data=data, method=method)
        req.add_header("X-OpenStack-Ironic-API-Version", "latest")
        req.add_header("Accept", "application/json")
        if data is not None:
            req.add_header("Content-Type", "application/json")
        try:
            with self._opener.open(req, timeout=60) as resp:
                raw = resp.read()
        except urllib.error.HTTPError as e:
            raise BuildError(f"Ironic API {method} {path}: HTTP {e.code}: {_fault(e.read())}",
                             "see Ironic's log") from None  # fmt: skip
        return json.loads(raw) if raw else None

    def up(self) -> bool:
        try:
            self.call("GET", "/")
            return True
        except (OSError, BuildError):
            return False

    def create_node(self, **fields: Any) -> dict[str, Any]:
        node: dict[str, Any] = self.call("POST", "/v1/nodes", fields)
        return node

    def create_port(self, node_uuid: str, mac: str) -> None:
        self.call("POST", "/v1/ports", {"node_uuid": node_uuid, "address": mac})

    def node(self, uuid: str) -> dict[str, Any]:
        node: dict[str, Any] = self.call("GET", f"/v1/nodes/{uuid}")
        return node

    def patch(self, uuid: str, ops: list[dict[str, Any]]) -> None:
        self.call("PATCH", f"/v1/nodes/{uuid}", ops)

    def provision(self, uuid: str, target: str, **extra: Any) -> None:
        self.call("PUT", f"/v1/nodes/{uuid}/states/provision", {"target": target, **extra})

    def inventory(self, uuid: str) -> dict[str, Any]:
        data: dict[str, Any] = self.call("GET", f"/v1/nodes/{uuid}/inventory")
        return data

    def wait(self, uuid: str, want: str, *, timeout: float, tick: Callable[[dict[str, Any]], None],
             settled: bool = True) -> dict[str, Any]:  # fmt: skip
        """Poll until provision_state is `want` (and, if settled, no transition is pending); a '... failed'
        state or a timeout raises StageFailed."""
        deadline = time.monotonic() + timeout
        while True:
            node = self.node(uuid)
            state = node.get("provision_state") or ""
            if state == want and not (settled and node.get("target_provision_state")):
                return node
            if state.endswith("failed") or (state == "manageable" and want != "manageable"
                                            and node.get("last_error")):
                raise StageFailed(f"node went to '{state}'", node)
            tick(node)
            if time.monotonic() > deadline:
                raise StageFailed(f"still '{state}' after {timeout:.0f}s", node)
            time.sleep(1)


class StageFailed(Exception):
    def __init__(self, why: str, node: dict[str, Any]) -> None:
        super().__init__(why)
        self.why = why
        self.node = node


def _fault(raw: bytes) -> str:
    try:
        doc = json.loads(raw)
        msg = doc.get("error_message", doc)
        if isinstance(msg, str):
            try:
                msg = json.loads(msg)
            except ValueError:
                return str(msg)[:300]
        return str(msg.get("faultstring", msg))[:300] if isinstance(msg, dict) else str(msg)[:300]
    except (ValueError, AttributeError):
        return raw.decode(errors="replace")[:300]
