"""A full disk is one line: ENOSPC or EDQUOT while writing becomes errors.NoSpace, naming the
filesystem (its mount point), what was being written, about how much it needs and how much is free.

`writing(path, what, need)` wraps the few places that write big things (the outputs, `pack`, the
cache layers and the root-tree cache, the workspace's steps). It maps an OSError with those errnos,
and a BuildError (a command's, as `cp -a` or `tar -x`) whose text says so. The free space is read
when the error is raised, after the writer's own clean-up inside the block (plus what a clean-up
after it will free, when the writer says so): what a retry would have.
"""

from __future__ import annotations

import errno
import os
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from .errors import BuildError, CommandError, NoSpace

ERRNOS = (errno.ENOSPC, errno.EDQUOT)
TEXTS = {os.strerror(errno.ENOSPC): False, os.strerror(errno.EDQUOT): True}  # text -> a quota


def mount_point(path: Path | str) -> Path:
    """The mount point of the filesystem holding `path` (or its nearest existing parent)."""
    p = Path(os.path.abspath(path))
    while not p.exists() and p != p.parent:
        p = p.parent
    p = p.resolve()
    while not os.path.ismount(p):
        p = p.parent
    return p


def free_bytes(path: Path | str) -> int:
    """Bytes free for an unprivileged writer on the filesystem holding `path`."""
    return shutil.disk_usage(mount_point(path)).free


def full(e: BaseException) -> bool | None:
    """None when `e` is not a full disk; else whether it is a quota (EDQUOT) rather than ENOSPC."""
    if isinstance(e, OSError) and e.errno in ERRNOS:
        return e.errno == errno.EDQUOT
    if isinstance(e, BuildError) and not isinstance(e, NoSpace):
        text = "\n".join([e.message, *e.tail, e.output if isinstance(e, CommandError) else ""])
        for words, quota in TEXTS.items():
            if words in text:
                return quota
    return None


Need = int | Callable[[], int] | None  # bytes, or a function asked only on error (a walk of a tree)


def no_space(path: Path | str, what: str, need: Need = None, *, quota: bool = False, hint: str = "",
             free: int | None = None, tail: list[str] | None = None) -> NoSpace:
    """The error for a full disk under `path`: its mount point, and its free space now unless given."""
    return NoSpace(str(mount_point(path)), what, free_bytes(path) if free is None else free,
                   need() if callable(need) else need, quota=quota, hint=hint, tail=tail)


@contextmanager
def writing(path: Path | str, what: str, need: Need = None, *, hint: str = "",
            freed: Callable[[], int] | None = None) -> Iterator[None]:
    """Turn a full disk under `path` inside the block into one NoSpace (a NoSpace from a writer
    nested inside passes as it is). `freed`: the bytes the failed writer's clean-up will free (a
    build's workspace tree), counted as free in the message."""
    try:
        yield
    except (OSError, BuildError) as e:
        quota = full(e)
        if quota is None:
            raise
        tail = e.tail if isinstance(e, BuildError) else None
        free = free_bytes(path) + freed() if freed is not None else None
        raise no_space(path, what, need, quota=quota, hint=hint, free=free, tail=tail) from e


def require(path: Path | str, what: str, need: int, *, freed: int = 0) -> None:
    """Stop before writing `what` when the filesystem cannot hold `need` bytes. `freed`: bytes
    the failed build frees (its staged files), counted as free in the message."""
    free = free_bytes(path) + freed
    if free < need:
        raise no_space(path, what, need, free=free)
