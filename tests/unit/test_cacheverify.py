"""Cache entries are checked by content before a build uses them (contents.py, trust.py): a
layer or root tree that differs from its record, or cannot show one, is discarded with the layers
above it and one warning naming the first bad path, and the build falls back to what is whole.

Layers are plain directories here, laid out as layers.py keeps them: layers/<point>/<key>/{tree,
meta.json, contents.json}; the root tree is rootfs/<key>/ with rootfs/<key>.contents.json beside it.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import pytest

from sles_ipa_builder.cache import contents, roottree, trust
from sles_ipa_builder.cache import layers as checkpoints
from sles_ipa_builder.cache import store as cache
from sles_ipa_builder.cache.entries import Layer, root
from sles_ipa_builder.config import resolve as config
from sles_ipa_builder.engine import plan
from sles_ipa_builder.engine.state import Runtime

AGENT = "usr/lib/python3.11/site-packages/ironic_python_agent/agent.py"
FILES = {
    "packages": {"usr/bin/tool": "#!/bin/sh\necho tool\n", "etc/zypp/zypp.conf": "[main]\n"},
    "venv": {AGENT: "def run():\n    return 'agent'\n" * 20, "usr/lib/python3.11/site-packages/x.py": "X = 1\n"},
    "tree": {"etc/motd": "ironic python agent\n", "etc/hostname": "ipa\n"},
}
ROOT_KEY = "r" * 64


@pytest.fixture(autouse=True)
def _cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


def _fill(tree: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        (tree / rel).parent.mkdir(parents=True, exist_ok=True)
        (tree / rel).write_text(text)
    (tree / "usr/bin").mkdir(parents=True, exist_ok=True)
    (tree / "usr/bin/python3").symlink_to("python3.11")


def _keep(name: str, below: list[Layer]) -> Layer:
    """A kept layer `name`, resumed from `below` (topmost first): tree, record, meta.json."""
    layer = Layer(name, 1, name[0] * 64, {"below": below[0].key if below else ROOT_KEY}, None)
    _fill(layer.path / "tree", FILES[name])
    contents.write(layer.path / contents.NAME, layer.path / "tree")
    meta = {"inputs": layer.inputs, "below": [f"{x.name}/{x.key}" for x in below], "state": {}}
    (layer.path / "meta.json").write_text(json.dumps(meta))
    return layer


def _stack() -> tuple[list[Layer], Path]:
    """A root tree and three layers, each resumed from the one below, all looked up as hits."""
    entry = cache.cache_dir("rootfs") / ROOT_KEY
    _fill(entry, {"etc/os-release": "NAME=SLES\n", "usr/lib/libc.so.6": "\x7fELF" + "x" * 4000})
    contents.write(roottree.record_path(entry), entry)
    packages = _keep("packages", [])
    venv = _keep("venv", [packages])
    tree = _keep("tree", [venv, packages])
    found = [packages, venv, tree]
    assert checkpoints._look_up(found, False) is tree
    return found, entry


def _empty_keeping_mtime(path: Path) -> None:
    st = path.stat()
    path.write_text("")
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


def _warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]


def test_clean_layers_pass_and_stay(caplog: pytest.LogCaptureFixture) -> None:
    found, entry = _stack()
    assert trust.trusted(found, entry, checkpoints.chain) is found[-1]
    assert _warnings(caplog) == []
    assert all(x.state == "hit" and (x.path / "tree").is_dir() for x in found)


def test_an_emptied_file_discards_its_layer_and_those_above_with_one_warning(
        caplog: pytest.LogCaptureFixture) -> None:
    found, entry = _stack()
    packages, venv, tree = found
    _empty_keeping_mtime(venv.path / "tree" / AGENT)
    assert trust.trusted(found, entry, checkpoints.chain) is packages
    size = len(FILES["venv"][AGENT])
    assert _warnings(caplog) == [f"cache layer venv {'v' * 12}…: discarded with the layers above it (tree), "
                                 f"{AGENT} differs from what was kept (size {size} → 0); rebuilding"]
    assert not venv.path.exists() and not tree.path.exists() and (packages.path / "tree").is_dir()
    assert venv.state.startswith("miss: discarded") and tree.state.startswith("miss: discarded")
    assert not [p for p in (root() / "venv").iterdir() if p.name.startswith(".")]  # nothing left aside


def test_a_rewritten_file_of_the_same_size_is_caught(caplog: pytest.LogCaptureFixture) -> None:
    found, entry = _stack()
    motd = found[-1].path / "tree/etc/motd"
    motd.write_text(motd.read_text().upper())  # bit rot: same size
    assert trust.trusted(found, entry, checkpoints.chain) is found[1]
    assert _warnings(caplog) == [f"cache layer tree {'t' * 12}…: discarded, etc/motd differs from what was "
                                 "kept; rebuilding"]


def test_a_truncated_meta_json_discards_the_layer_and_those_above(caplog: pytest.LogCaptureFixture) -> None:
    found, entry = _stack()
    meta = found[0].path / "meta.json"
    meta.write_text(meta.read_text()[:20])
    assert trust.trusted(found, entry, checkpoints.chain) is None
    assert _warnings(caplog) == [f"cache layer packages {'p' * 12}…: discarded with the layers above it "
                                 "(venv, tree), its meta.json is missing or unreadable; rebuilding"]
    assert not any(x.path.exists() for x in found)
    assert entry.is_dir()  # the root tree under them is whole


def test_a_layer_without_a_record_is_discarded(caplog: pytest.LogCaptureFixture) -> None:
    found, entry = _stack()
    (found[-1].path / contents.NAME).unlink()  # as an older version kept it
    assert trust.trusted(found, entry, checkpoints.chain) is found[1]
    assert _warnings(caplog) == [f"cache layer tree {'t' * 12}…: discarded, no record of its contents (made "
                                 "by an older version); rebuilding"]


def test_a_truncated_record_is_discarded(caplog: pytest.LogCaptureFixture) -> None:
    found, entry = _stack()
    record = found[-1].path / contents.NAME
    record.write_text(record.read_text()[:-40])
    assert trust.trusted(found, entry, checkpoints.chain) is found[1]
    assert "its record of contents contents.json is unreadable" in _warnings(caplog)[0]


def test_a_missing_or_extra_file_is_found(caplog: pytest.LogCaptureFixture) -> None:
    found, entry = _stack()
    (found[-1].path / "tree/etc/hostname").unlink()  # a half-copied layer
    assert trust.trusted(found, entry, checkpoints.chain) is found[1]
    (found[1].path / "tree/etc").mkdir()
    (found[1].path / "tree/etc/stray").write_text("")
    assert trust.trusted(found, entry, checkpoints.chain) is found[0]
    assert _warnings(caplog) == [
        f"cache layer tree {'t' * 12}…: discarded, etc/hostname is missing; rebuilding",
        f"cache layer venv {'v' * 12}…: discarded, etc was not kept (an extra file); rebuilding"]


def test_a_changed_symlink_or_mode_is_found() -> None:
    found, _ = _stack()
    tree = found[0].path / "tree"
    record = found[0].path / contents.NAME
    (tree / "usr/bin/python3").unlink()
    (tree / "usr/bin/python3").symlink_to("python3.6")
    assert contents.problem(record, tree) == "usr/bin/python3 differs from what was kept"
    (tree / "usr/bin/python3").unlink()
    (tree / "usr/bin/python3").symlink_to("python3.11")
    assert contents.problem(record, tree) is None
    (tree / "usr/bin/tool").chmod(0o777)
    assert contents.problem(record, tree) == "usr/bin/tool differs from what was kept"


def test_a_damaged_root_tree_goes_with_every_layer_on_it(caplog: pytest.LogCaptureFixture) -> None:
    found, entry = _stack()
    _empty_keeping_mtime(entry / "usr/lib/libc.so.6")
    assert trust.trusted(found, entry, checkpoints.chain) is None
    assert _warnings(caplog) == [f"cache root tree {'r' * 12}…: discarded with the layers above it (packages, "
                                 "venv, tree), usr/lib/libc.so.6 differs from what was kept (size 4004 → 0); "
                                 "rebuilding"]
    assert not entry.exists() and not roottree.record_path(entry).exists()
    assert not any(x.path.exists() for x in found)


def test_the_root_step_extracts_a_damaged_or_unrecorded_root_tree_again(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    images = tmp_path / "images"
    images.mkdir()
    (images / "SLES15-SP7-Minimal-VM.x86_64-OpenStack-Cloud-GM.qcow2").write_bytes(b"QFI\xfb" + bytes(508))
    cfg = config.resolve({"workspace": str(tmp_path / "ws"), "images_dir": str(images)}, environ={})
    extracted = []

    def extract(img: Path, fmt: str, root: Path, **kw: object) -> dict[str, object]:
        _fill(root, {"etc/os-release": "NAME=SLES\n"})
        extracted.append(root)
        return {}

    monkeypatch.setattr(roottree.image, "extract", extract)
    monkeypatch.setattr(roottree.image, "sniff", lambda img: "qcow2")  # no qemu-img check of the stand-in

    def build(n: int, **kw: bool) -> dict[str, object]:
        return roottree.prepare_root(cfg, tmp_path / f"root{n}", **kw)

    assert build(1)["cache"] == "miss" and len(extracted) == 1
    entry = Path(str(build(2)["cache_file"]))
    assert len(extracted) == 1 and roottree.problem(entry) is None and _warnings(caplog) == []
    _empty_keeping_mtime(entry / "etc/os-release")
    assert build(3, checked=True)["cache"] == "hit"  # found whole moments ago by this build: not read again
    facts = build(4)
    assert facts["cache"] == "miss" and str(facts["cache_reason"]).startswith("discarded: etc/os-release differs")
    assert len(extracted) == 2 and (tmp_path / "root4/etc/os-release").read_text() == "NAME=SLES\n"
    roottree.record_path(entry).unlink()  # as an earlier version kept it
    assert build(5)["cache"] == "miss" and len(extracted) == 3
    assert _warnings(caplog) == [
        f"cache root tree {entry.name[:12]}…: discarded, etc/os-release differs from what was kept (size 10 → 0); "
        "rebuilding",
        f"cache root tree {entry.name[:12]}…: discarded, no record of its contents (made by an older version); "
        "rebuilding"]


def test_a_kept_layer_has_a_record_that_matches_it(tmp_path: Path) -> None:
    made = plan.make(config.resolve({"workspace": str(tmp_path / "ws")}, environ={}))
    rt = Runtime.start(made)
    upper = tmp_path / "ws/build/.root-upper"
    _fill(upper, FILES["tree"])
    layer = Layer("tree", 3, "1" * 64, {"below": "r"}, None)
    checkpoints._save(made, rt, layer)
    assert trust.problem(layer.path) is None
    rows = json.loads((layer.path / contents.NAME).read_text())["rows"]
    assert ["usr/bin/python3", "l", 0o777, f"{os.getuid()}:{os.getgid()}", 0, "python3.11"] in rows


def test_a_build_resumes_below_a_damaged_layer(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                               caplog: pytest.LogCaptureFixture) -> None:
    """prepare(): the emptied agent.py (mtime kept) never reaches the build: it resumes from packages."""
    found, _ = _stack()
    _empty_keeping_mtime(found[1].path / "tree" / AGENT)
    made = plan.make(config.resolve({"workspace": str(tmp_path / "ws")}, environ={}))
    rt = Runtime.start(made)
    monkeypatch.setattr(checkpoints, "compute", lambda *a, **k: found)
    monkeypatch.setattr(checkpoints.sources, "resolve", lambda *a, **k: {})
    monkeypatch.setattr(checkpoints.image, "find_image", lambda cfg: tmp_path / "base.qcow2")
    monkeypatch.setattr(checkpoints.cache, "file_sha256", lambda path: ROOT_KEY)
    monkeypatch.setattr(checkpoints, "_repo_digests", lambda cfg, offline: {})
    checkpoints.prepare(made, rt)
    assert rt.checkpoints is not None and rt.checkpoints.resume is found[0]
    assert checkpoints.root_checked(rt)  # the root step need not read the root tree again
    assert [x["state"][:15] for x in rt.manifest["layers"]] == ["hit", "miss: discarded", "miss: discarded"]
    assert len(_warnings(caplog)) == 1 and AGENT in _warnings(caplog)[0]
    rt.stack.close()


def test_a_broken_layer_above_a_broken_one_goes_too(caplog: pytest.LogCaptureFixture) -> None:
    """Else the broken one above would stay in the way of the layer the build makes in its place."""
    found, entry = _stack()
    for x in (found[0], found[2]):
        (x.path / "meta.json").write_text("{")
    assert checkpoints._look_up(found, False) is found[1]  # venv: its meta.json is whole
    assert trust.trusted(found, entry, checkpoints.chain) is None
    assert _warnings(caplog) == [f"cache layer packages {'p' * 12}…: discarded with the layers above it "
                                 "(venv, tree), its meta.json is missing or unreadable; rebuilding"]
    assert not any(x.path.exists() for x in found)


def test_test_media_are_checked_against_their_digests(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """The test media keep each image's sha256 in their manifest: a changed or missing one is rebuilt."""
    from sles_ipa_builder.fixtures import testmedia

    final = tmp_path / "0123456789abcdef"
    (final / "images").mkdir(parents=True)
    iso = final / "images/media.iso"
    iso.write_bytes(b"CD001" * 4096)
    (final / testmedia.DONE).write_text(json.dumps({"sha256": {"images/media.iso": testmedia._digest(iso)}}))
    assert testmedia._damaged(final) is None and testmedia._whole(final)
    testmedia._CHECKED.discard(final)
    with iso.open("r+b") as f:  # one byte flipped, the size kept
        f.seek(100)
        f.write(b"X")
    assert testmedia._damaged(final) == "images/media.iso changed since it was built"
    assert not testmedia._whole(final)
    assert f"test media {final}: images/media.iso changed since it was built; building them again" in caplog.text
    iso.unlink()
    assert testmedia._damaged(final) == "images/media.iso is missing"
    (final / testmedia.DONE).write_text('{"sha256": ')
    assert testmedia._damaged(final) == "the manifest is unreadable"
