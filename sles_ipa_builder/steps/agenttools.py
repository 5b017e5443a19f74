"""The host tools the agent runs, read from its own installed sources, checked in the tree before packing.

The agent runs its tools through `execute('tool', ...)` calls (utils.execute, il_utils.execute,
processutils.execute). Reading those calls from the installed package gives the list for the IPA
release actually built, whatever it adds or drops. A missing core tool (disk layout, image writing,
inspection, RAID, firmware settings) fails the build with its name; any other missing tool is one
warning naming each tool and the agent modules that call it.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from ..engine.paths import in_root
from ..errors import BuildError

CORE = (
    "qemu-img", "lsblk", "blkid", "parted", "sgdisk", "mkfs.ext4", "mkfs.vfat", "efibootmgr", "hdparm",
    "dmidecode", "lshw", "ipmitool", "mdadm", "nvme",
)  # fmt: skip
PATH_DIRS = ("usr/local/sbin", "usr/local/bin", "usr/sbin", "usr/bin", "sbin", "bin")
_CALL = re.compile(r"""execute\(\s*['"]([A-Za-z0-9_.+-]+)['"]""")


def agent_package(tree: Path) -> Path | None:
    """The installed ironic_python_agent package in the tree's IPA venv, if any."""
    found = sorted(tree.glob("opt/ironic-python-agent/lib*/python3*/site-packages/ironic_python_agent"))
    return found[0] if found else None


def called_tools(package: Path) -> dict[str, set[str]]:
    """tool -> the agent's modules (relative paths) that execute it; tests excluded."""
    out: dict[str, set[str]] = {}
    for dirpath, dirnames, files in os.walk(package):
        dirnames[:] = [d for d in dirnames if d != "tests"]
        for name in files:
            if name.endswith(".py"):
                path = Path(dirpath, name)
                for tool in _CALL.findall(path.read_text(errors="replace")):
                    out.setdefault(tool, set()).add(str(path.relative_to(package.parent)))
    return out


def present(tree: Path, tool: str) -> bool:
    """Whether `tool` is an executable file on the target's PATH (links resolved inside the tree)."""
    for d in PATH_DIRS:
        try:
            p = in_root(tree, f"{d}/{tool}", follow_last=True)
        except BuildError:  # a link loop: not a usable tool
            continue
        if p.is_file() and os.access(p, os.X_OK):
            return True
    return False


def missing(tree: Path, package: Path | None) -> tuple[list[str], dict[str, set[str]]]:
    """(missing core tools, {missing other tool: the agent modules calling it})."""
    calls = called_tools(package) if package else {}
    core = [t for t in CORE if not present(tree, t)]
    others = {t: where for t, where in sorted(calls.items()) if t not in CORE and not present(tree, t)}
    return core, others
