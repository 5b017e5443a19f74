"""Paths as seen inside a target root, read from the host: no build state, no processes (stdlib and
errors only), so the packer and the steps resolve a tree's links without the engine."""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import BuildError


def target_shell(root: Path) -> str:
    """bash when the target has it (SLES does), else sh (busybox test trees)."""
    for cand in ("usr/bin/bash", "bin/bash"):
        if os.path.lexists(root / cand):
            return "/" + cand
    return "/bin/sh"


def in_root(root: Path, rel: str, *, follow_last: bool = False) -> Path:
    """root/rel resolved as the kernel would inside `chroot root`: every symlink, at any depth and in
    any link's own target, is followed within root (an absolute link restarts at root, `..` stops at
    root), so a target's `/lib -> /usr/lib` never leads to the host's /usr/lib. The last component is
    followed only with follow_last (mount points); a file about to be replaced must not be followed."""
    base = Path(os.path.realpath(root))
    todo = [p for p in reversed(rel.split("/")) if p not in ("", ".")]
    done: list[str] = []
    hops = 0
    while todo:
        part = todo.pop()
        if part == "..":
            del done[-1:]
            continue
        here = base.joinpath(*done, part)
        if here.is_symlink() and (todo or follow_last):
            hops += 1
            if hops > 40:
                raise BuildError(f"{rel}: too many levels of symbolic links in the target", "fix the target's links")
            target = os.readlink(here)
            if target.startswith("/"):
                done = []
            todo.extend(p for p in reversed(target.split("/")) if p not in ("", "."))
            continue
        done.append(part)
    return base.joinpath(*done)
