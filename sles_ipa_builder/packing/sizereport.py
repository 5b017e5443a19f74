"""What takes the space in an initramfs: largest directories, files and packages, and a diff.

Reads the archive with cpioread.py. When it holds an rpm database (or the package list written when
the database left), that is extracted to a temp dir and read (inventory.py) for per-package sizes.
"""

from __future__ import annotations

import logging
import stat
import tempfile
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Group
from rich.table import Table

from ..errors import BuildError, InputError
from .cpioread import Reader, decompressor, detect, members, skip_zeros
from .cuts import MODULE_SUFFIXES
from .inventory import RpmdbKeeper, rpm_table

log = logging.getLogger(__name__)

DIR_DEPTH = 3
CHUNK = 1 << 20


@dataclass
class Report:
    path: Path
    compression: str
    compressed_size: int
    uncompressed: int = 0
    entries: int = 0
    files: dict[str, int] = field(default_factory=dict)
    dirs: dict[str, int] = field(default_factory=dict)
    packages: dict[str, int] | None = None

    def modules(self) -> dict[str, tuple[int, int]]:
        """Kernel modules by suffix (.ko, .ko.zst, .ko.xz, .ko.gz): (files, bytes in the tree)."""
        out: dict[str, tuple[int, int]] = {}
        for name, size in self.files.items():
            if "/modules/" in name and name.endswith(MODULE_SUFFIXES):
                suffix = name[name.rindex(".ko"):]
                n, total = out.get(suffix, (0, 0))
                out[suffix] = (n + 1, total + size)
        return out


def modules_line(mods: dict[str, tuple[int, int]]) -> str:
    """'2893 .ko.zst (44.1 MiB)', or 'none'."""
    if not mods:
        return "none"
    return ", ".join(f"{n} {suffix} ({size / 2**20:.1f} MiB)" for suffix, (n, size) in sorted(mods.items()))


def analyze(path: Path) -> Report:
    """Sizes of everything in the initramfs at `path`."""
    if not path.is_file():
        raise InputError(f"no such initramfs: {path}", "pass the path of a .initramfs file")
    dirs: dict[str, int] = defaultdict(int)
    report = Report(path, "", path.stat().st_size)
    with tempfile.TemporaryDirectory(prefix="size-report-") as tmp, path.open("rb") as raw:
        kinds = []
        keep = RpmdbKeeper(Path(tmp))
        while True:
            head = raw.read(6)
            if not head.strip(b"\0"):
                break
            kind = detect(head)
            kinds.append(kind)
            raw.seek(-len(head), 1)
            r = Reader(decompressor(kind, raw))
            for m in members(r, keep, one=kind == "plain"):
                report.entries += 1
                if stat.S_ISREG(m.mode) and m.size:
                    report.files[m.name] = m.size
                    report.uncompressed += m.size
                    parts = m.name.split("/")[:-1]
                    for depth in range(1, min(len(parts), DIR_DEPTH) + 1):
                        dirs["/".join(parts[:depth])] += m.size
            if kind != "plain":
                break  # a compressed segment runs to the end of the file
            skip_zeros(raw)
        report.compression = "+".join(kinds)
        report.dirs = dict(dirs)
        try:
            table = rpm_table(Path(tmp))
        except BuildError as e:
            log.warning("cannot read the rpm database in %s: %s", path.name, e.message)
        else:
            report.packages = {row[0]: int(row[5]) for row in table} if table else None
    return report


def _top(title: str, sizes: dict[str, int], n: int) -> Table:
    t = Table(title=title)
    t.add_column("MiB", justify="right")
    t.add_column("path" if "ackage" not in title else "package")
    for key, size in sorted(sizes.items(), key=lambda kv: (-kv[1], kv[0]))[:n]:
        t.add_row(f"{size / 2**20:.1f}", key)
    return t


def render(report: Report, top: int = 20) -> Group:
    """Rich tables: summary, largest directories, largest files, largest packages."""
    head = Table(title=f"{report.path.name}", show_header=False)
    head.add_row("compression", report.compression)
    head.add_row("compressed", f"{report.compressed_size / 2**20:.1f} MiB")
    head.add_row("file data", f"{report.uncompressed / 2**20:.1f} MiB")
    head.add_row("entries", str(report.entries))
    head.add_row("kernel modules", modules_line(report.modules()))
    parts: list[Any] = [head, _top(f"Largest directories (depth ≤ {DIR_DEPTH})", report.dirs, top)]
    parts.append(_top("Largest files", report.files, top))
    if report.packages:
        parts.append(_top("Largest packages (installed size)", report.packages, top))
    return Group(*parts)


@dataclass
class Diff:
    dirs: list[tuple[str, int, int]]  # (name, old, new), biggest change first
    packages: list[tuple[str, int, int]]
    total: tuple[int, int]
    compressed: tuple[int, int]
    modules: tuple[int, int] = (0, 0)  # bytes of kernel module files, old and new


def _delta(old: dict[str, int], new: dict[str, int]) -> list[tuple[str, int, int]]:
    rows = [(k, old.get(k, 0), new.get(k, 0)) for k in old.keys() | new.keys()]
    return sorted((r for r in rows if r[1] != r[2]), key=lambda r: (-abs(r[2] - r[1]), r[0]))


def compare(old: Report, new: Report) -> Diff:
    """What grew and shrank from `old` to `new`, by directory and by package."""
    return Diff(
        _delta(old.dirs, new.dirs),
        _delta(old.packages or {}, new.packages or {}),
        (old.uncompressed, new.uncompressed),
        (old.compressed_size, new.compressed_size),
        (sum(b for _, b in old.modules().values()), sum(b for _, b in new.modules().values())),
    )


def render_diff(d: Diff, top: int = 25) -> Group:
    head = Table(title="Size diff (MiB)", show_header=True)
    for c in ("", "old", "new", "change"):
        head.add_column(c, justify="right")
    for label, (a, b) in (("compressed", d.compressed), ("file data", d.total), ("kernel modules", d.modules)):
        head.add_row(label, f"{a / 2**20:.1f}", f"{b / 2**20:.1f}", f"{(b - a) / 2**20:+.1f}")
    parts: list[Any] = [head]
    for title, rows in (("Directories", d.dirs), ("Packages", d.packages)):
        if not rows:
            continue
        t = Table(title=f"{title} that changed")
        t.add_column("change MiB", justify="right")
        t.add_column("old", justify="right")
        t.add_column("new", justify="right")
        t.add_column("name")
        for name, a, b in rows[:top]:
            t.add_row(f"{(b - a) / 2**20:+.2f}", f"{a / 2**20:.1f}", f"{b / 2**20:.1f}", name)
        parts.append(t)
    return Group(*parts)


def report_tables(initramfs: Path, *, diff: Path | None = None, top: int = 20) -> list[Group]:
    """What `size-report INITRAMFS [--diff OTHER]` shows: OTHER is the old side of the diff."""
    new = analyze(initramfs)
    tables = [render(new, top)]
    if diff is not None:
        tables.append(render_diff(compare(analyze(diff), new), top))
    return tables
