"""One hash for two builds: the same inputs give the same initramfs, whether the caches are cold or warm.

`pack` is reproducible on its own (test_cpio, test_ramdisk); this is about the image content. The
first build starts from an empty cache (root extraction, git mirrors, pip all cold), the second
reuses it, in another workspace. Slow: two real builds on the test media.
"""

from __future__ import annotations

import hashlib
import os
import sys
from pathlib import Path

import pytest

from sles_ipa_builder import run
from sles_ipa_builder.commands import load_testmedia

pytestmark = [pytest.mark.root, pytest.mark.guestfs, pytest.mark.media, pytest.mark.slow]
EPOCH = "1700000000"


def _build(tmp: Path, n: int, env: dict[str, str], profile: Path) -> Path:
    out = tmp / f"out{n}"
    argv = [sys.executable, "-m", "sles_ipa_builder", "build", "--config", str(profile),
            "--workspace", str(tmp / f"ws{n}"), "--output", str(out), "--name", "repro"]
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
            content = os.readlink(p) if p.is_symlink() else hashlib.sha256(p.read_bytes()).hexdigest()
            found[rel] = f"{st.st_mode:o} {st.st_mtime_ns} {content}"
    return found


def test_cold_and_warm_builds_give_one_hash(tmp_path: Path) -> None:
    media = load_testmedia().ensure()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DIB_", "IPA_", "IRONIC_", "SIB_"))}
    env.update(XDG_CACHE_HOME=str(tmp_path / "cache"), SOURCE_DATE_EPOCH=EPOCH,
               SIB_ACCEL=os.environ.get("SIB_ACCEL", "tcg"))
    cold = _build(tmp_path, 1, env, media.profile)
    warm = _build(tmp_path, 2, env, media.profile)
    digests = [hashlib.sha256(p.read_bytes()).hexdigest() for p in (cold, warm)]
    if digests[0] != digests[1]:
        a, b = _files(cold, tmp_path / "a"), _files(warm, tmp_path / "b")
        differ = sorted(k for k in a.keys() | b.keys() if a.get(k) != b.get(k))
        pytest.fail(f"{len(differ)} of {len(a)} entries differ: {differ[:20]}")
