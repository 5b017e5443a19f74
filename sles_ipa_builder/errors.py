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
