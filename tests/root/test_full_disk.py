"""A full disk is one line (space.py), on small tmpfs mounts: `pack`, the outputs, the cache layers and
the root-tree cache. Nothing half-written is left behind."""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import make_busybox_root, make_element, make_engine_elements, write_artifacts

from sles_ipa_builder import run, space
from sles_ipa_builder.cache import layers as checkpoints
from sles_ipa_builder.cache import roottree
from sles_ipa_builder.config import resolve as config
from sles_ipa_builder.config.arch import HOST_DEFAULT
from sles_ipa_builder.engine import plan
from sles_ipa_builder.engine.state import Runtime
from sles_ipa_builder.errors import NoSpace
from sles_ipa_builder.inputs import image
from sles_ipa_builder.packing.compress import Compression

pytestmark = pytest.mark.root
REPO = Path(__file__).resolve().parents[2]
MiB = 2**20


@pytest.fixture(autouse=True)
def need_root() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root")


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Callable[[str, int], Path]]:
    """small_fs(name, MiB): a tmpfs of that size at tmp_path/name, unmounted afterwards."""
    mounted: list[Path] = []

    def mount(name: str, mib: int) -> Path:
        d = tmp_path / name
        d.mkdir()
        run.run(["mount", "-t", "tmpfs", "-o", f"size={mib}m", "tmpfs", d])
        mounted.append(d)
        return d

    try:
        yield mount
    finally:
        for d in reversed(mounted):
            run.run(["umount", d], check=False)


def tree_with(base: Path, blob_mib: int) -> Path:
    """A tree with a kernel and a blob that does not compress (random bytes)."""
    (base / "boot").mkdir(parents=True)
    (base / f"boot/{HOST_DEFAULT.kernel_names[0]}-5.14.21-default").write_bytes(os.urandom(64 << 10))
    (base / "usr/lib/firmware").mkdir(parents=True)
    (base / "usr/lib/firmware/blob.bin").write_bytes(os.urandom(blob_mib * MiB))
    return base


def test_pack_onto_a_full_disk_is_one_line(tmp_path: Path, small_fs: Callable[[str, int], Path]) -> None:
    tree = tree_with(tmp_path / "tree", 12)
    out = small_fs("out", 8)
    env = {**os.environ, "PYTHONPATH": str(REPO), "XDG_CACHE_HOME": str(tmp_path / "xdg")}
    res = run.run([sys.executable, "-m", "sles_ipa_builder", "pack", tree, "-o", out / "ipa.initramfs"],
                  env=env, check=False, capture=True)
    lines = [ln for ln in res.stderr.splitlines() if ln.startswith(("error:", "hint:", "Traceback"))]
    assert res.returncode == 1, res.stderr
    assert lines[0].startswith(f"error: no space left on {out} writing ipa.initramfs: needs more than the ")
    assert lines[0].endswith(" MiB free") and lines[1].startswith("hint: ") and len(lines) == 2
    assert list(out.iterdir()) == []


def test_outputs_that_cannot_fit_stop_before_the_tar(tmp_path: Path, small_fs: Callable[[str, int], Path]) -> None:
    tree = tree_with(tmp_path / "tree", 6)  # a 6 MiB initramfs fits; the tar and the tar.gz do not
    out = small_fs("out", 16)
    with pytest.raises(NoSpace) as e:
        write_artifacts(tree, out, "ipa", Compression.parse("zstd"), size_limit_mb=None, progress=False)
    assert e.value.message.startswith(f"no space left on {out} writing the outputs into {out}: needs about ")
    assert e.value.need is not None and e.value.need >= 3 * 6 * MiB > e.value.free
    assert e.value.__cause__ is None  # the estimate stopped it, not a failed write
    assert list(out.iterdir()) == []


def test_a_tar_that_fills_the_disk_is_one_line(tmp_path: Path, small_fs: Callable[[str, int], Path],
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(space, "require", lambda *a, **k: None)  # no estimate: the write itself fails
    tree = tree_with(tmp_path / "tree", 6)
    out = small_fs("out", 10)
    with pytest.raises(NoSpace) as e:
        write_artifacts(tree, out, "ipa", Compression.parse("zstd"), size_limit_mb=None, progress=False)
    assert e.value.message.startswith(f"no space left on {out} writing ipa.tar: needs about 7 MiB, ")
    assert list(out.iterdir()) == []


def test_a_cache_layer_that_does_not_fit_is_not_kept(tmp_path: Path, small_fs: Callable[[str, int], Path],
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    xdg = small_fs("xdg", 8)
    monkeypatch.setenv("XDG_CACHE_HOME", str(xdg))
    made = plan.make(config.resolve({"workspace": str(tmp_path / "ws")}, environ={}))
    upper = tmp_path / "ws/build/.root-upper"
    (upper / "usr").mkdir(parents=True)
    (upper / "usr/big").write_bytes(os.urandom(12 * MiB))
    layer = checkpoints.Layer("venv", 3, "1" * 64, {}, None)
    with pytest.raises(NoSpace) as e:
        checkpoints._save(made, Runtime.start(made), layer)
    assert e.value.message.startswith(f"no space left on {xdg} writing the cache layer venv: needs about 13 MiB, ")
    assert any("No space left on device" in line for line in e.value.tail)  # cp's own words, above the line
    assert [p.name for p in layer.path.parent.iterdir()] == [f"{layer.key}.lock"]  # no half-made entry


def test_a_root_tree_that_does_not_fit_is_not_cached(tmp_path: Path, small_fs: Callable[[str, int], Path],
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    xdg = small_fs("xdg", 8)
    entry = xdg / "rootfs" / ("a" * 64)

    def extract(img: Path, fmt: str, root: Path, **_: Any) -> dict[str, Any]:
        (root / "big").write_bytes(os.urandom(12 * MiB))
        return {}

    monkeypatch.setattr(image, "extract", extract)
    with pytest.raises(NoSpace, match=rf"^no space left on {xdg} writing the root tree of base.qcow2 into the cache: "
                                      r"needs more than the \d+ MiB free$"):
        roottree._make_entry(tmp_path / "base.qcow2", "qcow2", entry, arch=HOST_DEFAULT, accel="tcg", force=False)
    assert list(entry.parent.iterdir()) == []


def test_a_hook_that_fills_the_workspace_is_one_line(tmp_path: Path, small_fs: Callable[[str, int], Path]) -> None:
    els = make_engine_elements(tmp_path / "elements")
    fill = '#!/bin/sh\nhead -c 40M /dev/zero > "$TARGET_ROOT/big"\n'
    make_element(els, "filler", files={"post-root.d/10-fill": fill})
    ws = small_fs("ws", 24)
    argv = [sys.executable, "-m", "sles_ipa_builder", "build", "--workspace", ws, "--output", tmp_path / "out",
            "--elements", "bb-os", "filler", "--elements-path", els,
            "--base-tree", make_busybox_root(tmp_path / "base")]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DIB_", "SIB_"))}
    res = run.run(argv, env={**env, "PYTHONPATH": str(REPO)}, check=False, capture=True)
    assert res.returncode == 1, res.stderr
    lines = [ln for ln in res.stderr.splitlines() if ln.startswith(("error:", "hint:", "Traceback", "--- Logging"))]
    # free: counting the tree, removed after the failure; the 24 MiB less the build log's blocks
    assert re.fullmatch(f"error: no space left on {re.escape(str(ws))} writing the workspace \\(phase post-root\\): "
                        r"needs more than the 2[34] MiB free", lines[0].rstrip()), lines[0]
    assert lines[1].startswith("hint: ") and len(lines) == 2
    assert any("No space left on device" in ln for ln in res.stderr.splitlines() if ln.startswith("  | "))
    assert not (ws / "build").exists()
