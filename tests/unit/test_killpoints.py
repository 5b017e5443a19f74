"""A build SIGKILLed while it writes a cache entry leaves no usable half (issue 30): the next build
does not use it, says it removed it, and makes the entry whole.

Each test runs the real writing function in a forked child that stops when it reaches one point
(the call that writes the next piece: a copy, a record, a rename) and tells the parent, which then
kills it there. Layers and root trees are plain directories, as in test_cacheverify.
"""

from __future__ import annotations

import logging
import os
import select
import shutil
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from sles_ipa_builder.cache import layers as checkpoints
from sles_ipa_builder.cache import roottree, trust
from sles_ipa_builder.cache.entries import Layer
from sles_ipa_builder.config import resolve as config
from sles_ipa_builder.engine import plan
from sles_ipa_builder.engine.state import Runtime
from sles_ipa_builder.fixtures import testmedia
from sles_ipa_builder.steps import wheels


def killed_at(obj: Any, name: str, when: Callable[..., bool], work: Callable[[], object]) -> None:
    """Run `work` in a forked child until it calls `obj.<name>(...)` with `when(...)` true; SIGKILL it there."""
    real = getattr(obj, name)
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        os.close(r)

        def stop(*args: Any, **kw: Any) -> Any:
            if not when(*args, **kw):
                return real(*args, **kw)
            os.write(w, b"!")
            while True:
                time.sleep(60)

        setattr(obj, name, stop)
        try:
            work()
        finally:
            os._exit(0)
    os.close(w)
    try:
        reached = select.select([r], [], [], 120)[0] and os.read(r, 1) == b"!"  # EOF: it finished
    finally:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        os.close(r)
    assert reached, f"the child never reached {name}"


def _removed(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if "by an interrupted build" in r.getMessage()]


def _leftovers(d: Path) -> list[str]:
    """What a writer left beside the entries (hidden names), but lock files."""
    return sorted(p.name for p in d.iterdir() if p.name.startswith(".") and not p.name.endswith(".lock"))


# --- (a) a layer's tree being copied, (b) its meta.json being written --------------------------------
def _is_meta(path: Path, *args: object, **kw: object) -> bool:
    return path.name == "meta.json"


@pytest.mark.parametrize(("obj", "name", "when"), [
    (checkpoints.run, "run", lambda argv, **kw: argv[0] == "cp"),  # (a) the copy of the upper directory
    (checkpoints.contents, "write", lambda *a: True),  # (a) the copy made, its record being written
    (Path, "write_text", _is_meta),  # (b) meta.json
], ids=["copy", "record", "meta.json"])
def test_a_layer_killed_while_kept_is_not_used_and_is_kept_again(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
        obj: Any, name: str, when: Callable[..., bool]) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    made = plan.make(config.resolve({"workspace": str(tmp_path / "ws")}, environ={}))
    rt = Runtime.start(made)
    upper = tmp_path / "ws/build/.root-upper"
    (upper / "etc").mkdir(parents=True)
    (upper / "etc/motd").write_text("ipa\n")
    layer = Layer("tree", 3, "1" * 64, {"below": "r"}, None)
    killed_at(obj, name, when, lambda: checkpoints._save(made, rt, layer))
    assert _leftovers(layer.path.parent) and not layer.path.exists()
    assert checkpoints._look_up([layer], False) is None and layer.state.startswith("miss")
    caplog.set_level(logging.INFO)
    checkpoints._save(made, rt, layer)
    assert len(_removed(caplog)) == 1 and _leftovers(layer.path.parent) == []
    assert trust.problem(layer.path) is None and (layer.path / "tree/etc/motd").read_text() == "ipa\n"


# --- (c) a root tree being extracted, recorded, renamed into place ----------------------------------
@pytest.mark.parametrize(("obj", "name", "when", "force"), [
    (roottree.contents, "write", lambda *a: True, False),  # extracted, its record being written
    (os, "replace", lambda src, dst: Path(dst).parent.name == "rootfs" and ".contents" not in str(dst), False),
    (shutil, "rmtree", lambda path, *a, **kw: Path(path).parent.name == "rootfs", True),  # --force: the old tree going
], ids=["record", "rename", "forced-removal"])
def test_a_root_tree_killed_while_made_is_not_used_and_is_made_again(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
        obj: Any, name: str, when: Callable[..., bool], force: bool) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    images = tmp_path / "images"
    images.mkdir()
    (images / "SLES15-SP7-Minimal-VM.x86_64-OpenStack-Cloud-GM.qcow2").write_bytes(b"QFI\xfb" + bytes(508))
    cfg = config.resolve({"workspace": str(tmp_path / "ws"), "images_dir": str(images)}, environ={})

    def extract(img: Path, fmt: str, root: Path, **kw: object) -> dict[str, object]:  # libguestfs' stand-in
        (root / "etc").mkdir()
        (root / "etc/os-release").write_text("NAME=SLES\n")
        return {}

    monkeypatch.setattr(roottree.image, "extract", extract)
    monkeypatch.setattr(roottree.image, "sniff", lambda img: "qcow2")
    if force:
        roottree.prepare_root(cfg, tmp_path / "root0")
    killed_at(obj, name, when, lambda: roottree.prepare_root(cfg, tmp_path / "root1", force=force))
    rootfs = tmp_path / "cache/sles-ipa-builder/rootfs"
    half = _leftovers(rootfs)
    assert half and not any(p.is_dir() and not p.name.startswith(".") for p in rootfs.iterdir())
    caplog.set_level(logging.INFO)
    facts = roottree.prepare_root(cfg, tmp_path / "root2")
    assert facts["cache"] == "miss" and len(_removed(caplog)) == len(half)
    entry = Path(str(facts["cache_file"]))
    assert _leftovers(rootfs) == [] and roottree.problem(entry) is None
    assert (tmp_path / "root2/etc/os-release").read_text() == "NAME=SLES\n"


# --- (d) the wheelhouse being filled ----------------------------------------------------------------
def pip_writes(path: Path) -> None:
    """Where the stand-in for pip is between the two halves of a wheel (the point the child is killed at)."""


def fake_pip(house: Path) -> Callable[..., None]:
    """`pip wheel` in the target: a wheel per requirement into --wheel-dir, written in two halves."""
    def run_in_target(plan: object, rt: object, argv: list[str], **kw: object) -> None:
        def here(p: str) -> Path:
            return house / os.path.relpath(p, wheels.WHEELHOUSE)
        if "-r" not in argv:
            return
        for pin in here(argv[argv.index("-r") + 1]).read_text().split():
            wheel = here(argv[argv.index("--wheel-dir") + 1]) / f"{pin.replace('==', '-')}-py3-none-any.whl"
            with wheel.open("wb") as f:
                f.write(WHEEL[:10])
                f.flush()
                pip_writes(wheel)
                f.write(WHEEL[10:])
    return run_in_target


WHEEL = b"PK\x03\x04" + bytes(60)


def test_a_wheelhouse_killed_while_filled_shows_no_half_wheel_and_is_filled_again(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    made = plan.make(config.resolve({"workspace": str(tmp_path / "ws")}, environ={}))
    rt = Runtime.start(made)
    info = made.root / wheels.VENV / "lib/python3.11/site-packages/Werkzeug-3.0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: Werkzeug\nVersion: 3.0.1\n\n")
    house = tmp_path / "cache/sles-ipa-builder/wheels"
    monkeypatch.setattr(wheels, "run_in_target", fake_pip(house))
    killed_at(sys.modules[__name__], "pip_writes", lambda *a: True, lambda: wheels.save_step(made, rt))
    assert not list(house.glob("*.whl")) and not list(house.glob(".saved-*"))  # offline pip sees nothing
    caplog.set_level(logging.INFO)
    wheels.save_step(made, rt)
    assert [m for m in _removed(caplog) if "wheelhouse" in m]
    assert [(p.name, p.read_bytes()) for p in house.glob("*.whl")] == [("Werkzeug-3.0.1-py3-none-any.whl", WHEEL)]
    assert list(house.glob(".saved-*")) and not list(house.glob(".fill-*"))


# --- (e) the test media being built -----------------------------------------------------------------
@pytest.mark.parametrize(("name", "when", "force"), [
    ("write_text", lambda path, *a: path.name == testmedia.DONE, False),  # built, its marker being written
    ("rename", lambda path, target: Path(target) == testmedia.media_dir(), False),  # renamed into place
    ("rename", lambda path, target: Path(target) == testmedia.media_dir(), True),  # the old ones moved aside
], ids=["marker", "rename", "forced-rename"])
def test_test_media_killed_while_built_are_not_used_and_are_built_again(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
        name: str, when: Callable[..., bool], force: bool) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))

    # debootstrap's stand-in
    def build(work: Path, final: Path, downloads: Path, arch: object, flavour: object) -> None:
        (work / "images").mkdir()
        (work / "images" / testmedia.ISO_NAME).write_bytes(b"iso")
        (work / testmedia.DONE).write_text("{}\n")  # last, as _build writes it

    monkeypatch.setattr(testmedia, "_build", build)
    if force:
        testmedia.ensure()
    killed_at(Path, name, when, lambda: testmedia.ensure(force=force))
    half = _leftovers(testmedia.cache_base())
    assert half and not (testmedia.media_dir() / testmedia.DONE).exists()
    caplog.set_level(logging.INFO)
    media = testmedia.ensure()
    assert len(_removed(caplog)) == len(half) and _leftovers(testmedia.cache_base()) == []
    assert media.iso.read_bytes() == b"iso" and (testmedia.media_dir() / testmedia.DONE).is_file()
