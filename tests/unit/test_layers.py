"""layers.py and the cache's generations: a cached tree shown through overlayfs packs as a copy of it
does, the cached tree is never written, old trees are pruned unless a build uses them."""

from __future__ import annotations

import contextlib
import hashlib
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sles_ipa_builder.cache import store as cache

REPO = Path(__file__).resolve().parents[2]

# In a private namespace: the layer restored by overlayfs and by copy, the same edits in both (a new
# file, a changed one, a removed one, a removed directory, a chmod, one name of a hard link rewritten),
# then the cpio bytes of each. Prints "<how> <sha256>" per way.
CHILD = """
import hashlib, io, os, shutil, sys
from contextlib import ExitStack
from pathlib import Path
from sles_ipa_builder.packing import cpio
from sles_ipa_builder.cache import roottree as layers
from sles_ipa_builder.engine import namespace
namespace.enter()
layer, work = Path(sys.argv[1]), Path(sys.argv[2])
for copy in (False, True):
    root = work / ("copy" if copy else "overlay") / "root"
    root.parent.mkdir(parents=True)
    with ExitStack() as stack:
        facts = layers.restore(stack, layer, root, copy=copy)
        (root / "etc/new").write_text("new\\n")
        (root / "etc/changed").write_text("changed\\n")
        (root / "etc/gone").unlink()
        shutil.rmtree(root / "opt/dir")
        os.chmod(root / "usr/bin/tool", 0o700)
        os.unlink(root / "usr/bin/b")
        (root / "usr/bin/b").write_text("b\\n")
        for p in (root, root / "etc", root / "usr/bin", root / "opt"):
            os.utime(p, (1000, 1000))
        buf = io.BytesIO()
        cpio.write(cpio.scan(root, source_date_epoch=5000).entries, buf)
        print(facts["restore"], hashlib.sha256(buf.getvalue()).hexdigest(), flush=True)
"""


def _tree(path: Path) -> dict[str, str]:
    out = {}
    for dirpath, dirs, files in os.walk(path):
        for name in sorted(dirs + files):
            p = Path(dirpath, name)
            st = p.lstat()
            body = hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else ""
            out[str(p.relative_to(path))] = f"{st.st_mode:o} {st.st_nlink} {st.st_mtime_ns} {body}"
    return out


@pytest.mark.root
def test_overlay_packs_like_a_copy_and_leaves_the_layer_alone(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root")
    layer = tmp_path / "layer"
    for d in ("etc", "usr/bin", "opt/dir/sub"):
        (layer / d).mkdir(parents=True)
    for rel, text in (("etc/changed", "old\n"), ("etc/gone", "x\n"), ("etc/kept", "k\n"),
                      ("usr/bin/tool", "#!/bin/sh\n"), ("usr/bin/a", "same\n"), ("opt/dir/sub/f", "f\n")):
        (layer / rel).write_text(text)
    os.link(layer / "usr/bin/a", layer / "usr/bin/b")  # a hard link, one name of it rewritten
    os.link(layer / "etc/kept", layer / "etc/kept2")  # a hard link left alone
    for p in layer.rglob("*"):
        os.utime(p, (2000, 2000), follow_symlinks=False)
    before = _tree(layer)
    env = {k: v for k, v in os.environ.items() if k != "SIB_IN_NAMESPACE"}
    env["PYTHONPATH"] = str(REPO)
    res = subprocess.run([sys.executable, "-c", CHILD, str(layer), str(tmp_path / "work")], env=env,
                         capture_output=True, text=True, check=False)
    assert res.returncode == 0, res.stderr[-3000:]
    lines = dict(line.split() for line in res.stdout.splitlines())
    assert set(lines) == {"overlay", "copy"}, res.stdout
    assert lines["overlay"] == lines["copy"]
    assert _tree(layer) == before


def _entries(kind: str, names: list[str]) -> list[Path]:
    out = []
    for n, name in enumerate(names):
        entry = cache.cache_dir(kind) / name
        (entry / "etc").mkdir(parents=True)
        cache.touch_use(entry)
        t = time.time() - 100 * (len(names) - n)  # later names used more recently
        os.utime(f"{entry}.use", (t, t))
        out.append(entry)
    return out


def test_prune_keeps_the_most_recently_used_and_those_in_use(tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    oldest, old, new, newest = _entries("rootfs", ["a", "b", "c", "d"])
    with contextlib.ExitStack() as stack:
        cache.in_use(stack, oldest)  # a running build reads it
        os.utime(f"{oldest}.use", (1, 1))
        assert cache.prune("rootfs", 2) == [old]  # the least recently used, but in use: kept
        assert oldest.is_dir() and new.is_dir() and newest.is_dir()
    assert cache.prune("rootfs", 2) == [oldest]  # its build is over
    assert sorted(p.name for p in cache.cache_dir("rootfs").iterdir() if p.is_dir()) == ["c", "d"]


def test_disk_usage_counts_hard_links_once(tmp_path: Path) -> None:
    (tmp_path / "a").write_bytes(b"x" * 65536)
    os.link(tmp_path / "a", tmp_path / "b")
    used = cache.disk_usage(tmp_path)
    assert 65536 <= used < 2 * 65536


def test_summary_names_the_root_layer_without_hashing_or_writing(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    from sles_ipa_builder.cache import roottree as layers
    from sles_ipa_builder.config import resolve as config

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    img = tmp_path / "base.qcow2"
    img.write_bytes(b"QFI\xfb not really")
    cfg = config.resolve({"base_image": str(img)}, environ={})
    assert layers.describe(cfg)["state"] == "not hashed yet: the build hashes it"
    assert not (tmp_path / "xdg").exists()  # nothing written
    sha = cache.file_sha256(img)  # what a build does first
    assert layers.describe(cfg) == {"layer": "root", "key": f"rootfs/{sha}",
                                    "state": "not cached: the build reads the qcow2"}
    (cache.cache_dir("rootfs") / sha).mkdir()
    assert layers.describe(cfg)["state"] == "cached"
    img.write_bytes(b"QFI\xfb a new image")  # a new qcow2 at the same path: its hash is not known yet
    assert layers.describe(cfg)["state"] == "not hashed yet: the build hashes it"


def test_doctor_reports_the_cache_size(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from sles_ipa_builder.cli import doctor

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert doctor.cache_size().detail.startswith("empty")
    tree = cache.cache_dir("rootfs") / "ab12"
    tree.mkdir()
    (tree / "big").write_bytes(bytes(1 << 26))  # 64 MiB written (not sparse): shown per kind
    check = doctor.cache_size()
    assert check.ok and "rootfs 0.1" in check.detail and "1 root tree(s)" in check.detail, check.detail
