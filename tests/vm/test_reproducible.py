"""One hash for two builds: the same inputs give the same initramfs, whether the caches are cold or warm.

`pack` is reproducible on its own (test_cpio, test_ramdisk); this is about the image content. The
first build starts from an empty cache (root extraction, git mirrors, pip all cold), the second
reuses it, in another workspace: it resumes from the finished tree's cache layer. Then a late
setting changes: a build resumes from the venv layer, and gives the bytes of a build that ran every
step (--no-cache). Slow: four real builds on the test media.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import sys
from pathlib import Path

import pytest

from sles_ipa_builder import run
from sles_ipa_builder.fixtures import testmedia

pytestmark = [pytest.mark.root, pytest.mark.guestfs, pytest.mark.media, pytest.mark.slow]
EPOCH = "1700000000"


def _build(tmp: Path, n: int, env: dict[str, str], profile: Path, *more: str) -> Path:
    out = tmp / f"out{n}"
    argv = [sys.executable, "-m", "sles_ipa_builder", "build", "--config", str(profile),
            "--workspace", str(tmp / f"ws{n}"), "--output", str(out), "--name", "repro",
            "--report", str(tmp / f"report{n}.json"), *more]
    res = run.run(argv, env=env, check=False, capture=True)
    assert res.returncode == 0, (res.stdout + res.stderr)[-6000:]
    return out / "repro.initramfs"


def _files(initramfs: Path, dest: Path) -> dict[str, str]:
    """path -> mode, mtime and sha256 (or link target) of every file, to name what differs."""
    dest.mkdir()
    run.pipe(["zstd", "-dc", initramfs], ["cpio", "-idm", "--quiet", "--no-absolute-filenames"], cwd=dest)
    found = {}
    for root, _dirs, files in os.walk(dest):
        for f in files:
            p = Path(root) / f
            rel = str(p.relative_to(dest))
            st = p.lstat()
            if not (stat.S_ISREG(st.st_mode) or stat.S_ISLNK(st.st_mode)):  # /dev/zero would never end
                found[rel] = f"{st.st_mode:o} {st.st_rdev}"
                continue
            content = os.readlink(p) if p.is_symlink() else hashlib.sha256(p.read_bytes()).hexdigest()
            found[rel] = f"{st.st_mode:o} {st.st_mtime_ns} {content}"
    return found


def _layers(tmp: Path, n: int) -> dict[str, str]:
    return {x["layer"]: x["state"] for x in json.loads((tmp / f"report{n}.json").read_text())["layers"]}


def _same(tmp: Path, one: Path, two: Path) -> None:
    if hashlib.sha256(one.read_bytes()).digest() != hashlib.sha256(two.read_bytes()).digest():
        a, b = _files(one, tmp / f"{one.parent.name}-x"), _files(two, tmp / f"{two.parent.name}-y")
        differ = sorted(k for k in a.keys() | b.keys() if a.get(k) != b.get(k))
        pytest.fail(f"{one} and {two}: {len(differ)} of {len(a)} entries differ: {differ[:20]}")


def test_cold_and_warm_builds_give_one_hash(tmp_path: Path) -> None:
    media = testmedia.ensure()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DIB_", "IPA_", "IRONIC_", "SIB_"))}
    env.update(XDG_CACHE_HOME=str(tmp_path / "cache"), SOURCE_DATE_EPOCH=EPOCH,
               SIB_ACCEL=os.environ.get("SIB_ACCEL", "tcg"))
    cold = _build(tmp_path, 1, env, media.profile)
    assert set(_layers(tmp_path, 1).values()) == {"miss: not cached yet"}
    warm = _build(tmp_path, 2, env, media.profile)
    assert _layers(tmp_path, 2) == {"packages": "hit", "venv": "hit", "tree": "hit"}
    _same(tmp_path, cold, warm)
    for boot_media in ("esp.img", "iso"):  # the ESP and the ISO hold the initramfs and the media's bootloaders
        one, two = (b.with_suffix(f".{boot_media}") for b in (cold, warm))
        assert one.read_bytes() == two.read_bytes(), f"{one.name} differs between two builds"

    late = {**env, "DIB_IPA_KEEP_UNITS": "chronyd.service"}  # read by a finalise hook only
    resumed = _build(tmp_path, 3, late, media.profile)
    states = _layers(tmp_path, 3)
    assert states["venv"] == "hit" and states["tree"].startswith("miss: env DIB_IPA_KEEP_UNITS:  → chronyd.service")
    full = _build(tmp_path, 4, late, media.profile, "--no-cache")
    assert set(_layers(tmp_path, 4).values()) == {"skipped: --no-cache"}
    _same(tmp_path, resumed, full)
