"""The release to build when no setting names one: the one whose media are in the images directory.

Media are found by SUSE's file names (config/releases.py). A release with both its qcow2 and its
Full ISO there beats one with only one of them; among equals the newest wins (16.1 over 16.0 over
15 SP7). Files given by path (--base-image, --iso) count instead of the directory when they carry
such a name. `summary` shows the one-line reason as the setting's source.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from . import releases
from .releases import Release


@dataclass(frozen=True)
class Found:
    release: Release
    why: str  # one line: the files, and the other releases passed over


def _names(directory: Path) -> list[str]:
    try:
        return sorted(p.name for p in directory.iterdir() if p.is_file())
    except OSError:  # no images directory yet: nothing found, the default release
        return []


def media(names: list[str], arch: str, install_type: str) -> dict[Release, dict[str, list[str]]]:
    """Release -> {"iso": [file...], "image": [file...]} for every name some release's media carry."""
    found: dict[Release, dict[str, list[str]]] = {}
    patterns = releases.name_patterns(arch, install_type)
    for name in names:
        for pattern, major, kind in patterns:
            m = pattern.fullmatch(name)
            if m is None:
                continue
            release = (releases.find("SLE-15", m.group(1)) if major == 15 else releases.find(m.group(1)))
            found.setdefault(release, {}).setdefault(kind, []).append(name)
            break
    return found


def detect(images_dir: Path, arch: str, install_type: str, given: list[Path]) -> Found | None:
    """The release whose media are in `images_dir` (or are the files `given`), None when none are."""
    where, found = "given", media([p.name for p in given], arch, install_type)
    if not found:
        where, found = str(images_dir), media(_names(images_dir), arch, install_type)
    if not found:
        return None

    def rank(r: Release) -> tuple[bool, int, int]:
        return len(found[r]) == 2, r.major, r.minor  # both kinds first, then the newest

    best = max(found, key=rank)
    files = ", ".join(n for kind in ("image", "iso") for n in found[best].get(kind, []))
    why = f"found in {where}: {files}"
    if len(found[best]) < 2:
        why += f" (no {'Full ISO' if 'iso' not in found[best] else 'qcow2'} of it)"
    newer = [r for r in found if (r.major, r.minor) > (best.major, best.minor)]
    if newer:
        why += f"; {', '.join(r.name for r in newer)} newer but incomplete"
    elif len(found) > 1:
        why += f"; the newest of {', '.join(r.name for r in sorted(found, key=rank, reverse=True))}"
    return Found(best, why)
