"""The build's private mount + PID namespace, and the only place that mounts.

`enter()` moves the build into new mount and PID namespaces before any work: the process the user
started stays in the host namespaces as a small supervisor, and a forked child becomes PID 1 of
the new PID namespace and runs the build. Why this leaves nothing behind, whatever happens:
- The child has PR_SET_PDEATHSIG=SIGKILL, so killing the supervisor (even with SIGKILL) kills it.
- When PID 1 of a PID namespace dies, the kernel kills every other process of that namespace:
  no chroot process survives the build.
- The mounts live in the private mount namespace (propagation private), which the kernel drops
  with its last process: no mount is ever visible on the host, and none survives.
- SIGTERM/SIGINT/SIGHUP to the supervisor are forwarded, so the build unwinds its ExitStack
  (unmounts, restores resolv.conf) and exits 143/130.
We do this with unshare(2)+fork via ctypes rather than exec'ing `unshare --fork --kill-child`:
util-linux' unshare blocks SIGTERM and SIGINT in its parent, so a `kill PID` of the user's process
would be ignored and the build could not unwind.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import select
import signal
import sys
import time
from pathlib import Path
from types import FrameType

from .. import run
from ..errors import BuildError, CommandError, ConfigError

log = logging.getLogger(__name__)

MARK = "SIB_IN_NAMESPACE"
CLONE_NEWNS = 0x00020000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000
PR_SET_PDEATHSIG = 1
FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT)


def inside() -> bool:
    return os.environ.get(MARK) == "1"


def enter(*, net: bool = False) -> None:
    """Continue in a private mount+PID namespace (no-op when already inside). Needs root.

    net=True adds a private network namespace with only a loopback interface (see private_loopback):
    servers started inside are reachable by nothing outside, and no address leaks to the host's routes.
    """
    if inside():
        return
    if os.geteuid() != 0:
        raise ConfigError("the build needs root for its private namespaces", "run it as root or with sudo")
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.unshare(CLONE_NEWNS | CLONE_NEWPID | (CLONE_NEWNET if net else 0)) != 0:
        err = ctypes.get_errno()
        raise BuildError(
            f"cannot create private namespaces: {os.strerror(err)}",
            "in a container, run it privileged (CAP_SYS_ADMIN) or with --pid=host",
        )
    sys.stdout.flush()
    sys.stderr.flush()
    alive_r, alive_w = os.pipe()
    pid = os.fork()
    if pid:
        os.close(alive_r)
        _supervise(pid)  # never returns
    os.close(alive_w)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if select.select([alive_r], [], [], 0)[0]:  # EOF: the supervisor died before prctl took effect
        os._exit(137)
    os.environ[MARK] = "1"
    run.run(["mount", "--make-rprivate", "/"])
    # A /proc of the new PID namespace, so /proc/<pid> and tools like ps see the build's processes.
    run.run(["mount", "-t", "proc", "-o", "nosuid,nodev,noexec", "proc", "/proc"])
    install_signal_handlers()


def _supervise(child: int) -> None:
    def forward(signum: int, frame: FrameType | None) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(child, signum)

    for s in FORWARDED:
        signal.signal(s, forward)
    while True:
        try:
            _, status = os.waitpid(child, 0)
            break
        except InterruptedError:
            continue
    code = os.waitstatus_to_exitcode(status)
    os._exit(code if code >= 0 else 128 - code)


def _on_signal(signum: int, frame: FrameType | None) -> None:
    # Ignore further signals while unwinding: a second Ctrl-C must not cut the unmounts short
    # (SIGKILL still works and, thanks to the namespaces, still leaves nothing behind).
    for s in FORWARDED:
        signal.signal(s, signal.SIG_IGN)
    if signum == signal.SIGINT:
        raise KeyboardInterrupt
    raise SystemExit(128 + signum)


def install_signal_handlers() -> None:
    """SIGINT -> KeyboardInterrupt (exit 130), SIGTERM/SIGHUP/SIGQUIT -> SystemExit(128+n): both unwind."""
    for s in FORWARDED:
        signal.signal(s, _on_signal)


def private_loopback(*addresses: str) -> None:
    """Bring up lo of a private network namespace and give it extra addresses (e.g. 10.0.2.2, which
    a QEMU user-network guest uses for the host, so host-side services see the same URLs it does)."""
    run.run(["ip", "link", "set", "lo", "up"], capture=True)
    for addr in addresses:
        run.run(["ip", "addr", "add", f"{addr}/32", "dev", "lo"], capture=True)


# --- mounts ---------------------------------------------------------------------------------------
def _unescape(field: str) -> str:
    return field.encode().decode("unicode_escape") if "\\" in field else field


def mounts_under(path: Path) -> list[Path]:
    """Mount points at or below path, in mount order (from /proc/self/mountinfo)."""
    base = os.path.realpath(path)
    out = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        mp = _unescape(line.split()[4])
        if mp == base or mp.startswith(base.rstrip("/") + "/"):
            out.append(Path(mp))
    return out


def umount(target: Path) -> None:
    """Unmount; lazily if busy (a process in the target still holds it; the namespace reaps it)."""
    try:
        run.run(["umount", target], capture=True)
    except CommandError as e:
        log.debug("umount %s failed (%s); detaching lazily", target, e.output.strip())
        try:
            run.run(["umount", "-l", target], capture=True)
        except CommandError as e2:
            log.warning("cannot unmount %s: %s", target, e2.output.strip())


def umount_all_under(path: Path) -> None:
    """The fallback: unmount everything at or below path, deepest (latest) first."""
    for mp in reversed(mounts_under(path)):
        umount(mp)


def _mount(stack: contextlib.ExitStack, argv: list[str], dst: Path) -> Path:
    if not dst.exists():
        dst.mkdir(parents=True)
    run.run(["mount", *argv, dst], capture=True)
    stack.callback(umount, dst)
    # Never let a mount below the build propagate back to where it came from (host /dev is shared).
    run.run(["mount", "--make-private", dst], capture=True)
    return dst


def bind(stack: contextlib.ExitStack, src: Path, dst: Path, *, ro: bool = False) -> Path:
    _mount(stack, ["--bind", str(src)], dst)
    if ro:
        run.run(["mount", "-o", "remount,ro,bind", dst], capture=True)
    return dst


def bind_file(stack: contextlib.ExitStack, src: Path, dst: Path, *, ro: bool = True) -> Path:
    """Bind a single file onto dst, creating an empty placeholder that is removed afterwards."""
    if not dst.exists():
        dst.parent.mkdir(parents=True, exist_ok=True)
        dst.touch()
        stack.callback(_unlink_if_empty, dst)
    run.run(["mount", "--bind", src, dst], capture=True)
    stack.callback(umount, dst)
    if ro:
        run.run(["mount", "-o", "remount,ro,bind", dst], capture=True)
    return dst


def _unlink_if_empty(path: Path) -> None:
    with contextlib.suppress(OSError):
        if path.is_file() and path.stat().st_size == 0:
            path.unlink()


def proc(stack: contextlib.ExitStack, dst: Path) -> Path:
    return _mount(stack, ["-t", "proc", "proc"], dst)


def sysfs(stack: contextlib.ExitStack, dst: Path) -> Path:
    return _mount(stack, ["-t", "sysfs", "-o", "ro", "sysfs"], dst)


def dev(stack: contextlib.ExitStack, dst: Path) -> Path:
    """The host /dev, as DIB binds it (so the target sees real devices, loop devices included)."""
    return bind(stack, Path("/dev"), dst)


def devpts(stack: contextlib.ExitStack, dst: Path) -> Path:
    """Host /dev/pts bound, so ptys opened through the bound /dev/ptmx show up in it."""
    return bind(stack, Path("/dev/pts"), dst)


def tmpfs(stack: contextlib.ExitStack, dst: Path, size: str | None = None) -> Path:
    opts = ["-o", f"size={size}"] if size else []
    return _mount(stack, ["-t", "tmpfs", *opts, "tmpfs"], dst)


def overlay(stack: contextlib.ExitStack, lowers: list[Path], upper: Path, work: Path, dst: Path) -> Path:
    """overlayfs: `lowers` read-only (cached layers, the topmost first), every write of the build goes
    to `upper`. Raises CommandError when the kernel or the filesystems refuse (the caller copies instead)."""
    for p in (*lowers, upper, work):
        if any(c in str(p) for c in ",:\\"):
            raise CommandError(["mount", "-t", "overlay"], 1, f"{p}: a comma, colon or backslash in the path")
    opts = f"lowerdir={':'.join(map(str, lowers))},upperdir={upper},workdir={work}"
    return _mount(stack, ["-t", "overlay", "-o", opts, "overlay"], dst)


# --- processes ------------------------------------------------------------------------------------
def processes_rooted_in(path: Path) -> list[int]:
    """PIDs whose root directory is path or below (chroot processes of a build)."""
    base = os.path.realpath(path).rstrip("/")
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            root = os.readlink(entry / "root")
        except OSError:
            continue
        if root == base or root.startswith(base + "/"):
            pids.append(int(entry.name))
    return pids


def kill_rooted_in(path: Path, *, grace: float = 2.0) -> list[int]:
    """SIGTERM, then SIGKILL, every process chrooted into path (DIB's cleanup_build_dir does the same)."""
    pids = processes_rooted_in(path)
    if not pids:
        return []
    log.warning("stopping %d process(es) left in %s: %s", len(pids), path, " ".join(map(str, pids)))
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 0.0)):
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, sig)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline and processes_rooted_in(path):
            time.sleep(0.1)
    return pids
