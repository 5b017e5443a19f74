"""User-facing errors: one line of message, one line of hint, and an exit code."""

from __future__ import annotations


class BuildError(Exception):
    """A build failed (exit 1). `hint` tells the user what to do next."""

    exit_code = 1

    def __init__(self, message: str, hint: str = "", *, tail: list[str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.tail = tail or []


class ConfigError(BuildError):
    """Bad configuration or command line (exit 2), found before any work starts."""

    exit_code = 2


class InputError(BuildError):
    """A bad input file: missing, unreadable or not what it claims to be (exit 2)."""

    exit_code = 2


class CommandError(BuildError):
    """An external command failed (exit 1)."""

    def __init__(self, argv: list[str], returncode: int, output: str = "", hint: str = "") -> None:
        self.argv = argv
        self.returncode = returncode
        self.output = output
        tail = output.splitlines()[-20:]
        super().__init__(f"{argv[0]} exited {returncode}: {' '.join(argv)}"[:400], hint, tail=tail)


NO_SPACE_HINT = ("free space there, or give --workspace/--output (XDG_CACHE_HOME for the caches) on a larger "
                 "filesystem; `sles-ipa-builder clean -ff` removes the caches")


class NoSpace(BuildError):
    """A filesystem filled up (ENOSPC) or a quota ran out (EDQUOT) while writing (exit 1).
    space.py finds the filesystem and its free space; `need` is None when the writer cannot tell."""

    def __init__(self, filesystem: str, what: str, free: int, need: int | None = None, *, quota: bool = False,
                 hint: str = "", tail: list[str] | None = None) -> None:
        mib = 2**20
        if need is None:
            needs = f"needs more than the {free // mib} MiB free"
        else:
            needs = f"needs about {-(-need // mib)} MiB, {free // mib} MiB free"
        full = "disk quota exceeded on" if quota else "no space left on"
        super().__init__(f"{full} {filesystem} writing {what}: {needs}", hint or NO_SPACE_HINT, tail=tail)
        self.filesystem, self.what, self.free, self.need = filesystem, what, free, need
