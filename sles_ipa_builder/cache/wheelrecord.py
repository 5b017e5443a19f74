"""The wheelhouse's record of its wheels, and the check against it (issue 30).

`<cache>/wheels/SHA256SUMS`, in sha256sum's format (`sha256sum -c SHA256SUMS` in the wheelhouse
checks it by hand): one line per wheel, written atomically (store.atomic_path) before the wheels
it names are renamed into the wheelhouse, so a wheel in the wheelhouse has a line unless an older
builder put it there. pip's --find-links skips the file: its name is no archive's.

check() hashes every wheel at the wheelhouse's top and compares it with its line. A wheel whose
digest differs (truncated, emptied, changed) is removed. A wheel without a line (from a builder
before this record, or a line lost) is not rejected: it is recorded on first use, if its zip
directory reads (a truncated one does not: it is removed like a mismatch). Lines of wheels no
longer there are dropped. The caller holds the wheelhouse's lock.
"""

from __future__ import annotations

import re
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from .store import atomic_path, remove, sha256_uncached

RECORD = "SHA256SUMS"
LINE = re.compile(r"([0-9a-f]{64}) [ *](\S+\.whl)")


@dataclass(frozen=True)
class Bad:
    """A wheel check() removed, and why."""

    name: str
    why: str


def read(house: Path) -> dict[str, str]:
    """wheel name -> sha256 as recorded; a line that does not parse is ignored (its wheel is unrecorded)."""
    try:
        text = (house / RECORD).read_text()
    except (OSError, UnicodeDecodeError):
        return {}
    return {m[2]: m[1] for m in map(LINE.fullmatch, text.splitlines()) if m and "/" not in m[2]}


def write(house: Path, sums: dict[str, str]) -> None:
    with atomic_path(house / RECORD) as tmp:
        tmp.write_text("".join(f"{digest}  {name}\n" for name, digest in sorted(sums.items())))


def add(house: Path, wheels: Iterable[Path]) -> None:
    """Record wheels (about to be renamed into `house` under their names) beside what is recorded."""
    sums = read(house)
    sums.update({w.name: sha256_uncached(w) for w in wheels})
    write(house, sums)


def check(house: Path) -> list[Bad]:
    """Remove the wheels that differ from their record; record those without one; return the removed."""
    recorded = read(house)
    sums: dict[str, str] = {}
    bad: list[Bad] = []
    for wheel in sorted(house.glob("*.whl")):
        if not wheel.is_file():
            continue
        digest = sha256_uncached(wheel)
        want = recorded.get(wheel.name)
        if want is None and not _zip_reads(wheel):
            why = f"{wheel.stat().st_size} bytes, not a readable zip, and not recorded"
        elif want is not None and digest != want:
            why = f"{wheel.stat().st_size} bytes, not the sha256 recorded when it was saved"
        else:
            sums[wheel.name] = digest
            continue
        remove(wheel)
        bad.append(Bad(wheel.name, why))
    if sums != recorded:
        write(house, sums)
    return bad


def _zip_reads(wheel: Path) -> bool:
    """The wheel's zip directory reads (at its end: a truncated wheel loses it). Members not inflated."""
    try:
        with zipfile.ZipFile(wheel) as z:
            return bool(z.namelist())
    except (zipfile.BadZipFile, OSError, ValueError):
        return False
