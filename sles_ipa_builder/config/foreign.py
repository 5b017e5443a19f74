"""Running the target's programs on a host of another architecture: qemu-user through binfmt_misc.

Everything that runs in the target (zypper, rpm, pip, the hooks) runs under chroot, so an aarch64
target on an x86_64 host needs the kernel to hand aarch64 ELF files to qemu-aarch64. The handler
must have the F flag (the interpreter is opened when it is registered): a chroot has no
/usr/libexec/qemu-binfmt of its own. Debian's qemu-user-static registers it so, through binfmt-support.
Host-side steps (libguestfs, cpio, compression) stay native and need none of this.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..errors import ConfigError
from .arch import Arch, host

BINFMT = Path("/proc/sys/fs/binfmt_misc")
HINT = ("apt-get install qemu-user-static binfmt-support; then mount -t binfmt_misc binfmt_misc "
        "/proc/sys/fs/binfmt_misc && update-binfmts --enable {handler} (make setup does both)")


@dataclass(frozen=True)
class Runner:
    native: bool
    ok: bool
    detail: str  # what was found, or what is missing


def runner(target: Arch, binfmt: Path | None = None, native: Arch | None = None) -> Runner:
    """How this host runs `target`'s programs: natively, through a usable qemu-user handler, or not."""
    binfmt = binfmt or BINFMT
    here = native if native is not None else host()
    if here == target:
        return Runner(True, True, f"native ({target} host)")
    if not (binfmt / "status").exists():
        return Runner(False, False, f"binfmt_misc is not mounted at {binfmt}")
    entry = binfmt / target.binfmt
    if not entry.is_file():
        return Runner(False, False, f"no {target.binfmt} handler in {binfmt} (qemu-user-static not installed?)")
    fields = _fields(entry.read_text())
    interpreter = fields.get("interpreter", "?")
    if fields.get("enabled") != "":
        return Runner(False, False, f"the {target.binfmt} handler is disabled")
    if "F" not in fields.get("flags", ""):
        return Runner(False, False, f"the {target.binfmt} handler ({interpreter}) lacks the F flag: it cannot run "
                                    "inside a chroot (install qemu-user-static, not qemu-user)")
    return Runner(False, True, f"qemu-user: {interpreter} (flags {fields['flags']})")


def _fields(text: str) -> dict[str, str]:
    """binfmt_misc's entry format: 'enabled', 'interpreter /path', 'flags: PF', 'magic ...'."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        key, _, value = line.replace(":", " ", 1).partition(" ") if line.startswith("flags:") else line.partition(" ")
        out[key.strip()] = value.strip()
    return out


def require(target: Arch, binfmt: Path | None = None) -> Runner:
    """Stop a build for `target` before any work when this host cannot run the target's programs."""
    r = runner(target, binfmt)
    if not r.ok:
        raise ConfigError(f"cannot run {target} programs on this {host() or 'unknown'} host: {r.detail}",
                          HINT.format(handler=target.binfmt))
    return r
