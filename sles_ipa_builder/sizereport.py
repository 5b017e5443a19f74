"""What takes the space in an initramfs: largest directories, files and packages, and a diff.

Reads any newc archive, plain or gzip/zstd/xz/lzma compressed (a plain segment such as early
microcode may precede the compressed one). When the archive holds an rpm database, it is
extracted to a temp dir and queried with the host's rpm for per-package sizes. Also home of the
package inventory written as `<name>.packages` (rpm -qa of the tree and the IPA venv's freeze).
"""

from __future__ import annotations

import gzip
import logging
import lzma
import os
import shutil
import stat
import tempfile
import zlib
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import zstandard
from rich.console import Group
from rich.table import Table

from . import run
from .errors import BuildError, InputError

log = logging.getLogger(__name__)

RPMDB_DIRS = ("usr/lib/sysimage/rpm", "var/lib/rpm")
RPMDB_FILES = ("rpmdb.sqlite", "Packages.db", "Packages")
DIR_DEPTH = 3
CHUNK = 1 << 20


def _detect(head: bytes) -> str:
    if head.startswith((b"070701", b"070702")):
        return "plain"
    if head.startswith(b"\x1f\x8b"):
        return "gzip"
    if head.startswith(b"\x28\xb5\x2f\xfd"):
        return "zstd"
    if head.startswith(b"\xfd7zXZ\x00"):
        return "xz"
    if head.startswith(b"\x5d\x00\x00"):
        return "lzma"
    raise InputError(f"not a cpio initramfs (unknown magic {head[:6]!r})", "pass a .initramfs file")


def _decompressor(kind: str, raw: IO[bytes]) -> IO[bytes]:
    if kind == "gzip":
        return gzip.GzipFile(fileobj=raw)  # type: ignore[return-value]  # reads concatenated members
    if kind == "zstd":
        return zstandard.ZstdDecompressor().stream_reader(raw, read_across_frames=True)
    if kind in ("xz", "lzma"):
        return lzma.LZMAFile(raw)
    return raw


TRUNCATED_HINT = "the initramfs is damaged or incomplete: rebuild it, or copy it again"


class _Reader:
    """Exact reads from a stream, counting the offset (cpio padding is relative to it)."""

    def __init__(self, f: IO[bytes]) -> None:
        self.f = f
        self.pos = 0

    def read(self, n: int) -> bytes:
        data = self.f.read(n)
        while len(data) < n:
            more = self.f.read(n - len(data))
            if not more:
                break
            data += more
        self.pos += len(data)
        return data

    def skip(self, n: int, sink: IO[bytes] | None = None) -> None:
        while n > 0:
            data = self.read(min(n, CHUNK))
            if not data:
                raise InputError("truncated cpio archive", TRUNCATED_HINT)
            if sink is not None:
                sink.write(data)
            n -= len(data)

    def align(self) -> None:
        self.read(-self.pos & 3)


@dataclass
class Member:
    name: str
    mode: int
    size: int
    nlink: int


def members(
    r: _Reader, keep: Callable[[str], Path | None] | None = None, *, one: bool = False
) -> Iterator[Member]:
    """Members of the newc archives on `r` (only the first one if `one`), up to the end of the stream.

    Regular files for which `keep(name)` gives a path are extracted there. A stream that ends before
    an archive's TRAILER!!!, or that its decompressor finds corrupt, is an InputError.
    """
    try:
        yield from _members(r, keep, one)
    except (EOFError, lzma.LZMAError, zstandard.ZstdError, gzip.BadGzipFile, zlib.error) as e:
        raise InputError(f"the initramfs is truncated or corrupt ({e or type(e).__name__})",
                         "rebuild it, or copy it again") from None


def _members(r: _Reader, keep: Callable[[str], Path | None] | None, one: bool) -> Iterator[Member]:
    trailer = False  # an archive (or the stream) must end with TRAILER!!!, else it was cut short
    while True:
        head = r.read(4)
        if not head:
            if not trailer:
                raise InputError("truncated cpio archive: no TRAILER!!! at the end", TRUNCATED_HINT)
            return
        if head == b"\0\0\0\0":
            continue  # padding between concatenated archives (records are 4-aligned)
        head += r.read(2)
        if len(head) < 6:
            raise InputError("truncated cpio archive: the stream ends inside a header", TRUNCATED_HINT)
        if head not in (b"070701", b"070702"):
            raise InputError(f"bad cpio header magic {head!r} at offset {r.pos - 6}", "not a newc archive")
        hdr = r.read(104)
        try:
            fields = [int(hdr[i : i + 8], 16) for i in range(0, 104, 8)]
        except ValueError:
            fields = []
        if len(hdr) < 104 or len(fields) != 13:
            raise InputError(f"truncated or damaged cpio header at offset {r.pos - len(hdr) - 6}", TRUNCATED_HINT)
        mode, nlink, size, namesize = fields[1], fields[4], fields[6], fields[11]
        name = r.read(namesize)[:-1].decode(errors="surrogateescape")
        r.align()
        trailer = name == "TRAILER!!!"
        if trailer:
            if one:
                return
            continue
        name = name.removeprefix("./").lstrip("/") or "."
        target = keep(name) if keep is not None and stat.S_ISREG(mode) else None
        if target is not None:
            target.parent.mkdir(parents=True, exist_ok=True)
            with target.open("wb") as out:
                r.skip(size, out)
        else:
            r.skip(size)
        r.align()
        yield Member(name, mode, size, nlink)


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


def analyze(path: Path) -> Report:
    """Sizes of everything in the initramfs at `path`."""
    if not path.is_file():
        raise InputError(f"no such initramfs: {path}", "pass the path of a .initramfs file")
    dirs: dict[str, int] = defaultdict(int)
    report = Report(path, "", path.stat().st_size)
    with tempfile.TemporaryDirectory(prefix="size-report-") as tmp, path.open("rb") as raw:
        kinds = []
        keep = _RpmdbKeeper(Path(tmp))
        while True:
            head = raw.read(6)
            if not head.strip(b"\0"):
                break
            kind = _detect(head)
            kinds.append(kind)
            raw.seek(-len(head), 1)
            r = _Reader(_decompressor(kind, raw))
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
            _skip_zeros(raw)
        report.compression = "+".join(kinds)
        report.dirs = dict(dirs)
        dbdir = keep.dbdir()
        if dbdir is not None:
            try:
                report.packages = {n: int(s) for n, s in _rpm_lines(dbdir, "%{NAME} %{SIZE}\\n")}
            except BuildError as e:
                log.warning("cannot read the rpm database in %s: %s", path.name, e.message)
    return report


def _skip_zeros(raw: IO[bytes]) -> None:
    while True:
        b = raw.read(4)
        if b.strip(b"\0") or not b:
            raw.seek(-len(b), 1)
            return


class _RpmdbKeeper:
    """Extracts the files of an rpm database (whatever the backend) found in the archive."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp

    def __call__(self, name: str) -> Path | None:
        d, _, base = name.rpartition("/")
        return self.tmp / name if d in RPMDB_DIRS and base else None

    def dbdir(self) -> Path | None:
        for d in RPMDB_DIRS:
            if any((self.tmp / d / f).is_file() for f in RPMDB_FILES):
                return self.tmp / d
        return None


def _rpm_lines(dbdir: Path, qf: str) -> list[tuple[str, str]]:
    """`rpm -qa --qf` on a copy of the database (rpm may write lock/wal files next to it)."""
    if run.which("rpm") is None:
        raise BuildError("rpm is not installed on this host", "install rpm to list packages")
    with tempfile.TemporaryDirectory(prefix="rpmdb-") as tmp:
        copy = Path(tmp) / "db"
        shutil.copytree(dbdir, copy, symlinks=True)
        out = run.run(["rpm", "--dbpath", copy, "-qa", "--qf", qf], capture=True, check=False)
    if out.returncode != 0 or (not out.stdout.strip() and out.stderr.strip()):
        msg = out.stderr.strip().splitlines()[-1:] or [f"exit {out.returncode}"]
        raise BuildError(f"rpm -qa failed: {msg[0][:200]}", "the host's rpm cannot read this database")
    rows = [tuple(line.split(" ", 1)) for line in out.stdout.splitlines() if " " in line]
    if not rows:
        # rpm "reads" a database of a backend it lacks (ndb) as a new empty one
        raise BuildError("rpm -qa found no packages", "the host's rpm may lack this database's backend")
    return rows  # type: ignore[return-value]


def _rpm_in_tree(tree: Path, qf: str) -> list[str]:
    """The tree's own rpm, for a database backend the host's rpm lacks (SLE's ndb on Debian).

    A query needs no /proc or /dev, so a bare chroot does (root only); the database is read-only.
    """
    rpm = tree / "usr/bin/rpm"
    if os.geteuid() != 0 or not (rpm.is_file() or rpm.is_symlink()):
        raise BuildError("no rpm in the tree (or not root to chroot)", "")
    argv = run.chroot_argv(tree, ["rpm", "-qa", "--qf", qf], run.target_env())
    out = run.run(argv, capture=True, check=False)
    if out.returncode != 0:
        raise BuildError(f"rpm -qa in the tree exited {out.returncode}", "")
    return sorted(line.split(" ", 1)[1] for line in out.stdout.splitlines() if " " in line)


def find_rpmdb(tree: Path) -> Path | None:
    for d in RPMDB_DIRS:
        p = tree / d
        if p.is_dir() and not p.is_symlink() and any((p / f).is_file() for f in RPMDB_FILES):
            return p
    return None


def pip_freeze(venv: Path, *, skip_direct: bool = False) -> list[str]:
    """`name==version` of every distribution in the venv, from the dist-info metadata (no python run).

    skip_direct: leave out what was installed from a path or URL (PEP 610 direct_url.json).
    """
    found: dict[str, str] = {}
    for meta in sorted(venv.glob("lib*/python3*/site-packages/*.dist-info/METADATA")):
        if skip_direct and (meta.parent / "direct_url.json").exists():
            continue
        name = version = ""
        for line in meta.read_text(errors="replace").splitlines():
            if not line:
                break
            key, _, value = line.partition(": ")
            if key == "Name":
                name = value.strip()
            elif key == "Version":
                version = value.strip()
        if name:
            found[name] = version
    return [f"{n}=={v}" for n, v in sorted(found.items(), key=lambda kv: kv[0].lower())]


def list_packages(tree: Path, venv: str = "opt/ironic-python-agent") -> str:
    """The `<name>.packages` text: rpm -qa of the tree, then the IPA venv's pip freeze."""
    lines = ["# rpm -qa"]
    dbdir = find_rpmdb(tree)
    if dbdir is None:
        lines.append("# (no rpm database in the tree)")
    else:
        qf = "%{NAME} %{NAME}-%{VERSION}-%{RELEASE}.%{ARCH}\\n"
        try:
            lines += sorted(nvra for _, nvra in _rpm_lines(dbdir, qf))
        except BuildError as e:
            try:
                lines += _rpm_in_tree(tree, qf)
            except BuildError as e2:
                log.warning("cannot list rpm packages: %s; %s", e.message, e2.message)
                lines.append(f"# (rpm database not readable: {e.message})")
    lines += ["", f"# pip freeze (/{venv})"]
    lines += pip_freeze(tree / venv) if (tree / venv).is_dir() else ["# (no venv)"]
    return "\n".join(lines) + "\n"


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
    )


def render_diff(d: Diff, top: int = 25) -> Group:
    head = Table(title="Size diff (MiB)", show_header=True)
    for c in ("", "old", "new", "change"):
        head.add_column(c, justify="right")
    for label, (a, b) in (("compressed", d.compressed), ("file data", d.total)):
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
