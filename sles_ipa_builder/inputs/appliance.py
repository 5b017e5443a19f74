"""The libguestfs appliance: a read-only handle, launched under KVM when it comes up, else TCG.

On some hosts /dev/kvm exists but a KVM guest hangs or qemu aborts at once. A KVM launch is given a
bounded time in a thread; if it does not come up, its qemu is killed and the launch is retried
under TCG with a warning. The user's own LIBGUESTFS_* settings are respected as they are.
"""

from __future__ import annotations

import logging
import os
import signal
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from ..errors import BuildError

log = logging.getLogger(__name__)

LAUNCH_TIMEOUT = 60.0  # from qemu's start: a healthy KVM appliance is up in seconds; a hung one never
SUPERMIN_TIMEOUT = 600.0  # building the appliance before qemu starts (first run, busy host)
APPLIANCE_MEMORY = 2048
USER_GUESTFS_VARS = ("LIBGUESTFS_BACKEND", "LIBGUESTFS_BACKEND_SETTINGS", "LIBGUESTFS_HV")


def _handle(image: Path, fmt: str, tcg: bool) -> Any:
    import guestfs  # system bindings (python3-guestfs); imported late so the rest works without them

    g = guestfs.GuestFS(python_return_dict=True, close_on_exit=False)
    if tcg:
        settings = [s for s in g.get_backend_settings() if s != "force_kvm"]
        g.set_backend_settings([*settings, "force_tcg"] if "force_tcg" not in settings else settings)
    if not os.environ.get("LIBGUESTFS_MEMSIZE"):  # the user's own setting wins
        g.set_memsize(APPLIANCE_MEMORY)
    g.set_smp(max(1, min(2, os.cpu_count() or 1)))
    g.add_drive_opts(os.fspath(image), readonly=1, format=fmt)
    return g


def _qemu_children() -> list[int]:
    """qemu processes started by this process (the direct backend forks them)."""
    me, found = os.getpid(), []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            stat = (d / "stat").read_text()
        except OSError:
            continue
        comm = stat[stat.index("(") + 1 : stat.rindex(")")]
        ppid = int(stat[stat.rindex(")") + 2 :].split()[1])
        if ppid == me and comm.startswith("qemu"):
            found.append(int(d.name))
    return found


def _launch_bounded(g: Any, timeout: float) -> tuple[str, bool]:
    """launch() in a thread: ('', True) when up, else (why not, whether the handle may be closed).

    The clock starts when qemu does: building the appliance first (supermin) may take a while on a
    busy host and is not a hang. A qemu that does not come up in time is killed. A handle whose
    launch is still running after that must not be closed from this thread: it is left alone.
    """
    error: list[BaseException] = []

    def target() -> None:
        try:
            g.launch()
        except BaseException as e:  # noqa: BLE001 - handed to the caller's thread
            error.append(e)

    before = set(_qemu_children())
    t = threading.Thread(target=target, name="guestfs-launch", daemon=True)
    t.start()
    begun = time.monotonic()
    qemu_seen: float | None = None
    while t.is_alive():
        t.join(0.5)
        now = time.monotonic()
        if qemu_seen is None and set(_qemu_children()) - before:
            qemu_seen = now
        if (qemu_seen is not None and now - qemu_seen > timeout) or now - begun > SUPERMIN_TIMEOUT + timeout:
            break
    if t.is_alive():
        for pid in set(_qemu_children()) - before:
            os.kill(pid, signal.SIGKILL)
        t.join(30)
        return f"did not come up within {timeout:.0f}s", not t.is_alive()
    if error:
        return f"failed ({str(error[0]).splitlines()[0][:120]})", True
    return "", True


def launch(image: Path, fmt: str, accel: str = "auto") -> tuple[Any, str]:
    """A launched read-only handle and the acceleration it got ('kvm', 'tcg' or 'user')."""
    user_set = any(os.environ.get(v) for v in USER_GUESTFS_VARS)
    try:
        if accel == "tcg":
            g = _handle(image, fmt, tcg=True)
            g.launch()
            return g, "tcg"
        if user_set or accel == "kvm":  # the user's LIBGUESTFS_* settings (or explicit kvm) rule
            g = _handle(image, fmt, tcg=False)
            g.launch()
            return g, "user" if user_set else "kvm"
        g = _handle(image, fmt, tcg=False)
        why, closable = _launch_bounded(g, LAUNCH_TIMEOUT)
        if not why:
            return g, "kvm"
        if closable:
            g.close()
        # Some hosts have /dev/kvm but guests hang or qemu aborts: TCG is slower but works.
        log.warning("libguestfs appliance under KVM %s: retrying under TCG (slower)", why)
        g = _handle(image, fmt, tcg=True)
        g.launch()
        return g, "tcg"
    except RuntimeError as e:
        raise BuildError(f"libguestfs could not start its appliance: {str(e).splitlines()[0][:200]}",
                         "run `libguestfs-test-tool`; set LIBGUESTFS_BACKEND_SETTINGS=force_tcg if KVM "
                         "is broken here") from None


def check_launch(accel: str = "auto") -> str:
    """`doctor`: start the appliance on a scratch disk; returns how it ran (kvm, tcg, user)."""
    with tempfile.NamedTemporaryFile(suffix=".raw") as scratch:
        os.truncate(scratch.name, 2**20)
        start = time.monotonic()
        g, how = launch(Path(scratch.name), "raw", accel)
        g.close()
    return f"appliance up under {how} in {time.monotonic() - start:.0f}s"
