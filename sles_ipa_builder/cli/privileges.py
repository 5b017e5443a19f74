"""The privileges a build needs, checked before any work: one line naming the missing one.

Root alone is not enough inside a container: `podman run` without --privileged keeps uid 0 but
drops CAP_SYS_ADMIN, and seccomp and AppArmor refuse unshare(2) and mount(2). The build's first act
is to enter a private mount + PID namespace (engine/namespace.py), then it mounts overlayfs, proc,
sys, dev and bind mounts and runs chroot. Without this check the first sign would be a failed
unshare far from its cause.
"""

from __future__ import annotations

import ctypes
import os
from pathlib import Path

from ..errors import ConfigError

# capability numbers (linux/capability.h) the build uses, and why
NEEDED = {
    21: ("CAP_SYS_ADMIN", "private mount and PID namespaces, overlayfs, proc/sys/dev and bind mounts"),
    18: ("CAP_SYS_CHROOT", "hooks and zypper run chrooted in the target"),
}
HINT = "run the container with --privileged (podman/docker) or securityContext.privileged: true (Kubernetes)"
CLONE_NEWNS = 0x00020000
CLONE_NEWPID = 0x20000000


def effective(status: str | None = None) -> int:
    """The effective capability set of this process, from /proc/self/status."""
    text = status if status is not None else Path("/proc/self/status").read_text()
    for line in text.splitlines():
        if line.startswith("CapEff:"):
            return int(line.split()[1], 16)
    return 0


def missing(caps: int) -> list[tuple[str, str]]:
    return [(name, why) for bit, (name, why) in NEEDED.items() if not caps >> bit & 1]


def can_unshare() -> int:
    """0 when a child can make new mount and PID namespaces (seccomp and AppArmor allow it), else errno."""
    pid = os.fork()
    if pid == 0:  # pragma: no cover (child)
        libc = ctypes.CDLL(None, use_errno=True)
        os._exit(0 if libc.unshare(CLONE_NEWNS | CLONE_NEWPID) == 0 else (ctypes.get_errno() or 1))
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


def problem(status: str | None = None) -> str | None:
    """What is missing for a build, in one sentence, or None."""
    if os.geteuid() != 0:
        return "the build needs root (chroot, mounts, device nodes)"
    lack = missing(effective(status))
    if lack:
        names = ", ".join(n for n, _ in lack)
        return f"missing capability {names} (needed for " + "; ".join(w for _, w in lack) + ")"
    err = can_unshare()
    if err:
        return (f"unshare(2) of a mount and PID namespace is refused ({os.strerror(err)}): "
                "a seccomp or AppArmor profile forbids it, although CAP_SYS_ADMIN is present")
    return None


def require() -> None:
    """Raise ConfigError (exit 2, one line) when the build cannot have its namespaces and mounts."""
    if (p := problem()) is not None:
        raise ConfigError(p, HINT)
