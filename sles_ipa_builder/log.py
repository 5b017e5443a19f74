"""Console and file logging: timed steps, progress bars, the per-hook timing table.

The console shows one line per step with its elapsed time; everything at debug level also goes to
`<workspace>/build.log` once `attach_file()` is called.
"""

from __future__ import annotations

import errno
import logging
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console
from rich.logging import RichHandler
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TransferSpeedColumn,
)
from rich.table import Table

# Not a terminal (CI, a log file): wide lines instead of rich's 80-column wrapping.
console = Console(stderr=True, highlight=False, width=None if sys.stderr.isatty() else 160)
log = logging.getLogger("sles_ipa_builder")


def setup(verbosity: int = 0, debug: bool = False) -> None:
    """verbosity: -1 quiet, 0 normal, 1+ verbose (debug on the console)."""
    level = logging.DEBUG if (debug or verbosity > 0) else logging.WARNING if verbosity < 0 else logging.INFO
    root = logging.getLogger()
    root.setLevel(logging.DEBUG)
    for h in list(root.handlers):
        if isinstance(h, RichHandler):
            root.removeHandler(h)
    handler = RichHandler(
        console=console, show_path=False, show_level=debug, markup=False, rich_tracebacks=debug, log_time_format="[%X]"
    )
    handler.setLevel(level)
    root.addHandler(handler)


class _LogFile(logging.FileHandler):
    """The build log, which loses its lines quietly when its disk is full: the build stops with one
    line for that (space.py), not with logging's traceback for every line after."""

    def handleError(self, record: logging.LogRecord) -> None:
        e = sys.exc_info()[1]
        if not (isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT)):
            super().handleError(record)


def attach_file(path: Path) -> None:
    """Also write everything at debug level to `path` (this build's only: an old log is replaced)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fh = _LogFile(path, mode="w", encoding="utf-8")
    fh.setLevel(logging.DEBUG)
    fh.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
    logging.getLogger().addHandler(fh)


@dataclass
class Timings:
    """Seconds per (phase, script, element), like dib-run-parts' PROFILING table."""

    rows: list[tuple[str, str, str, float]] = field(default_factory=list)
    steps: list[tuple[str, float]] = field(default_factory=list)

    def add(self, phase: str, script: str, element: str, seconds: float) -> None:
        self.rows.append((phase, script, element, seconds))

    def table(self) -> Table:
        t = Table(title="Seconds per hook", show_lines=False)
        t.add_column("phase")
        t.add_column("script")
        t.add_column("element")
        t.add_column("seconds", justify="right")
        for phase, script, element, secs in self.rows:
            t.add_row(phase, script, element, f"{secs:.1f}")
        return t

    def steps_table(self) -> Table:
        t = Table(title="Seconds per step")
        t.add_column("step")
        t.add_column("seconds", justify="right")
        for name, secs in self.steps:
            t.add_row(name, f"{secs:.1f}")
        t.add_row("total", f"{sum(s for _, s in self.steps):.1f}")
        return t

    def as_dict(self) -> dict[str, object]:
        return {
            "steps": {name: round(secs, 2) for name, secs in self.steps},
            "hooks": [
                {"phase": p, "script": s, "element": e, "seconds": round(secs, 2)} for p, s, e, secs in self.rows
            ],
        }


@contextmanager
def step(name: str, timings: Timings | None = None) -> Iterator[None]:
    """Log the start and the end of a step with its elapsed time."""
    log.info("▸ %s", name)
    start = time.monotonic()
    try:
        yield
    except BaseException:
        log.info("✗ %s failed after %.1fs", name, time.monotonic() - start)
        raise
    secs = time.monotonic() - start
    if timings is not None:
        timings.steps.append((name, secs))
    log.info("✓ %s (%.1fs)", name, secs)


def progress(transfer: bool = False) -> Progress:
    """A progress bar for long work; a byte counter with speed when transfer=True."""
    columns = [TextColumn("{task.description}"), BarColumn(), TimeElapsedColumn()]
    if transfer:
        columns[2:2] = [DownloadColumn(), TransferSpeedColumn()]
    return Progress(*columns, console=console, transient=True, disable=not sys.stderr.isatty())
