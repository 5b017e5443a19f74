"""Two builds at once, different workspaces, one fresh cache: both succeed (the cache locks hold).

Both miss the root-tree cache of the same qcow2 and race for it, then both mount the one cached tree
as their overlayfs' lower layer, and share the git mirror of the same repository; each must end
with its own complete artifacts.
"""

from __future__ import annotations

import os
import re
import sys
import tarfile
from pathlib import Path

import pytest

from sles_ipa_builder import run

pytestmark = [pytest.mark.root, pytest.mark.guestfs, pytest.mark.media, pytest.mark.slow]


def tiny_os(path: Path) -> Path:
    """An operating-system element that clones one source and checks it in the target."""
    el = path / "tiny-os"
    (el / "install.d").mkdir(parents=True)
    (el / "element-provides").write_text("operating-system\n")
    (el / "source-repository-requirements").write_text(
        "requirements git /tmp/requirements https://opendev.org/openstack/requirements\n")
    hook = el / "install.d" / "50-check-source"
    hook.write_text("#!/bin/sh\nset -eu\ntest -f /tmp/requirements/upper-constraints.txt\n"
                    "echo built-by-tiny-os > /etc/tiny-os\n")
    hook.chmod(0o755)
    return path


def test_two_builds_share_one_cache(tmp_path: Path, fixture_media: object) -> None:
    elements = tiny_os(tmp_path / "elements")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DIB_", "IPA_", "IRONIC_", "SIB_"))}
    env.update(XDG_CACHE_HOME=str(tmp_path / "cache"), SIB_ACCEL=os.environ.get("SIB_ACCEL", "tcg"))
    procs = []
    for n in (1, 2):
        argv = [sys.executable, "-m", "sles_ipa_builder", "build",
                "--config", str(fixture_media.profile),  # type: ignore[attr-defined]
                "--workspace", str(tmp_path / f"ws{n}"), "--output", str(tmp_path / f"out{n}"),
                "--name", "b", "--elements", "tiny-os", "--elements-path", str(elements)]
        log = (tmp_path / f"build{n}.log").open("w")
        procs.append((run.popen(argv, env=env, stdout=log, stderr=log), log))
    for n, (p, log) in enumerate(procs, 1):
        rc = p.wait()
        log.close()
        assert rc == 0, (tmp_path / f"build{n}.log").read_text()[-4000:]
    for n in (1, 2):
        with tarfile.open(tmp_path / f"out{n}" / "b.tar") as tar:
            assert tar.getnames() == ["b.kernel", "b.initramfs"]
    logs = [(tmp_path / f"ws{n}" / "build.log").read_text() for n in (1, 2)]
    # exactly one of them extracted the image; the other waited on the lock and took the cache
    assert sum("cache miss, " in text for text in logs) == 1, logs
    assert sum("cache hit, " in text for text in logs) == 1, logs
    # both read the one cached tree through their own overlayfs (layers.py)
    assert all("root tree restored from the cache by overlay" in text for text in logs), logs
    # the same inputs: both looked the finished tree's layer up, one kept it, the other found it made
    assert all("cache layer tree" in text for text in logs), logs
    assert sum(bool(re.search(r"cache layer tree \w+ kept", text)) for text in logs) == 1, logs
    assert len([p for p in (tmp_path / "cache/sles-ipa-builder/layers/tree").iterdir() if p.is_dir()]) == 1
