"""The cache layers after the root tree (checkpoints.py): which input renews which layer, and why.

Each case changes one input of the default plan and checks exactly which of the three layers
(packages, venv, tree) get a new key. The build that resumes from them is in test_reproducible.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from conftest import make_element

from sles_ipa_builder import __version__
from sles_ipa_builder.cache import keys as layerkeys
from sles_ipa_builder.cache import layers as checkpoints
from sles_ipa_builder.config import resolve as config
from sles_ipa_builder.engine import plan
from sles_ipa_builder.engine.state import Runtime
from sles_ipa_builder.inputs import repos

COMMITS = {"ironic-python-agent": "a" * 40, "ironic-lib": "b" * 40, "requirements": "c" * 40}


def keys(tmp_path: Path, environ: dict[str, str] | None = None, cli: dict[str, Any] | None = None,
         **inputs: Any) -> dict[str, str]:
    made = plan.make(config.resolve({"workspace": str(tmp_path / "ws"), **(cli or {})}, environ=environ or {}))
    args: dict[str, Any] = {"root_key": "r" * 64, "media_identity": "iso-1", "repo_digests": {},
                            "commits": COMMITS, **inputs}
    return {layer.name: layer.key for layer in layerkeys.compute(made, **args)}


def renewed(a: dict[str, str], b: dict[str, str]) -> list[str]:
    assert list(a) == list(b) == ["packages", "venv", "tree"]
    return [name for name in a if a[name] != b[name]]


def test_the_same_inputs_give_the_same_keys_whatever_the_workspace_or_offline(tmp_path: Path) -> None:
    base = keys(tmp_path)
    assert keys(tmp_path) == base
    assert keys(tmp_path / "elsewhere", environ={"TERM": "dumb"}) == base
    # offline, the packages and the venv are the same; the image's /etc/dib-manifests records DIB_OFFLINE
    assert renewed(base, keys(tmp_path, cli={"offline": True})) == ["tree"]


def test_a_moved_branch_renews_the_venv_and_the_tree(tmp_path: Path) -> None:
    moved = {**COMMITS, "ironic-python-agent": "d" * 40}
    assert renewed(keys(tmp_path), keys(tmp_path, commits=moved)) == ["venv", "tree"]
    # another ref naming the same commit is the same source (the image's dib-manifests record the ref)
    assert renewed(keys(tmp_path), keys(tmp_path, environ={"DIB_REPOREF_ironic_python_agent": "x"})) == ["tree"]


def test_a_changed_late_hook_renews_the_tree_only(tmp_path: Path) -> None:
    els = tmp_path / "elements"
    make_element(els, "late", files={"finalise.d/55-late": "#!/bin/sh\necho one > /etc/late\n"})
    cli = {"elements_path": str(els), "elements": config.resolve({}, environ={}).element_list + ["late"]}
    before = keys(tmp_path, cli=cli)
    (els / "late/finalise.d/55-late").write_text("#!/bin/sh\necho two > /etc/late\n")
    assert renewed(before, keys(tmp_path, cli=cli)) == ["tree"]


def test_a_changed_early_hook_or_data_file_renews_every_layer(tmp_path: Path) -> None:
    els = tmp_path / "elements"
    make_element(els, "early", files={"extra-data.d/40-early": "#!/bin/sh\ntrue\n", "data/x.conf": "1\n"})
    cli = {"elements_path": str(els), "elements": config.resolve({}, environ={}).element_list + ["early"]}
    before = keys(tmp_path, cli=cli)
    (els / "early/data/x.conf").write_text("2\n")  # any script of the element may read it
    assert renewed(before, keys(tmp_path, cli=cli)) == ["packages", "venv", "tree"]


def test_a_setting_renews_the_layers_from_the_first_hook_that_names_it(tmp_path: Path) -> None:
    base = keys(tmp_path)
    # DIB_IPA_KEEP_UNITS is read by finalise.d/10-units-at-build-time only
    assert renewed(base, keys(tmp_path, environ={"DIB_IPA_KEEP_UNITS": "chronyd.service"})) == ["tree"]
    # the module classes are read by a native finalise step
    assert renewed(base, keys(tmp_path, cli={"cut_modules": "sound"})) == ["tree"]
    # a variable no hook names may be read by any program: it counts from the first layer
    assert renewed(base, keys(tmp_path, environ={"DIB_SOMETHING_OF_MINE": "1"})) == ["packages", "venv", "tree"]


def test_a_new_iso_renews_every_layer(tmp_path: Path) -> None:
    assert renewed(keys(tmp_path), keys(tmp_path, media_identity="iso-2")) == ["packages", "venv", "tree"]


def test_an_updated_repository_renews_every_layer(tmp_path: Path) -> None:
    repo_dir = tmp_path / "repo"
    (repo_dir / "repodata").mkdir(parents=True)
    (repo_dir / "repodata/primary.xml").write_text('<metadata><package><name>lshw</name></package></metadata>')
    primary = '<data type="primary"><location href="repodata/primary.xml"/></data>'
    (repo_dir / "repodata/repomd.xml").write_text(f"<repomd><revision>1</revision>{primary}</repomd>\n")
    url = repo_dir.as_uri()
    r = repos.parse([url])[0]
    first = repos.metadata_digest(r, {}, None)
    (repo_dir / "repodata/repomd.xml").write_text(f"<repomd><revision>2</revision>{primary}</repomd>\n")
    second = repos.metadata_digest(r, {}, None)
    assert first != second
    cli = {"repos": url}
    a = keys(tmp_path, cli=cli, repo_digests={r.alias: first})
    b = keys(tmp_path, cli=cli, repo_digests={r.alias: second})
    assert renewed(a, b) == ["packages", "venv", "tree"]


def test_a_miss_says_which_input_changed() -> None:
    old = {"below": "x", "env DIB_IPA_KEEP_UNITS": "", "source ironic-python-agent": "a" * 40}
    new = {"below": "x", "env DIB_IPA_KEEP_UNITS": "chronyd.service", "source ironic-python-agent": "b" * 40}
    assert layerkeys.why(old, new) == ("env DIB_IPA_KEEP_UNITS:  → chronyd.service; "
                                         f"source ironic-python-agent: {'a' * 16} → {'b' * 16}")
    assert layerkeys.why({**old, "below": "y"}, old) == "the layer below changed"
    assert layerkeys.why(None, new) == "not cached yet"


def test_secrets_never_show_in_the_inputs(tmp_path: Path) -> None:
    made = plan.make(config.resolve({"workspace": str(tmp_path)},
                                   environ={"DIB_DEV_USER_PASSWORD": "hunter2-very-secret"}))
    found = layerkeys.compute(made, root_key="r", media_identity="m", repo_digests={}, commits=COMMITS)
    shown = " ".join(v for layer in found for v in layer.inputs.values())
    assert "hunter2" not in shown
    assert any(k == "env DIB_DEV_USER_PASSWORD" for layer in found for k in layer.inputs)


def test_summary_shows_the_layers_without_fetching_or_writing(tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    images = tmp_path / "images"
    images.mkdir()
    qcow2 = images / "SLES15-SP7-Minimal-VM.x86_64-OpenStack-Cloud-GM.qcow2"
    qcow2.write_bytes(b"QFI\xfb" + bytes(508))
    made = plan.make(config.resolve({"workspace": str(tmp_path / "ws"), "images_dir": str(images)}, environ={}))
    assert checkpoints.describe(made)[0]["state"] == "unknown until the qcow2 is hashed"
    from sles_ipa_builder.cache import store as cache
    cache.file_sha256(qcow2)
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    rows = checkpoints.describe(made)
    assert [r["layer"] for r in rows] == ["packages", "venv", "tree"]
    assert all(r["state"].startswith("miss: not cached yet") for r in rows), rows
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before
    assert not os.path.exists(tmp_path / "cache/sles-ipa-builder/git")


def test_a_kept_layer_is_the_upper_directory_without_mountpoints_and_old_ones_go(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    made = plan.make(config.resolve({"workspace": str(tmp_path / "ws"), "cache_generations": "1"}, environ={}))
    rt = Runtime.start(made)
    upper = tmp_path / "ws/build/.root-upper"
    (upper / "etc").mkdir(parents=True)
    (upper / "etc/made-by-a-hook").write_text("x\n")
    (upper / "tmp/in_target.d").mkdir(parents=True)  # a chroot phase's mountpoints
    (upper / "tmp/sib-build-ca.pem").write_text("")
    rt.manifest["sources"] = [{"name": "ipa", "commit": "a" * 40}]
    first = checkpoints.Layer("tree", 3, "1" * 64, {"below": "r"}, None)
    second = checkpoints.Layer("tree", 3, "2" * 64, {"below": "s"}, None)
    checkpoints._save(made, rt, first)
    tree = first.path / "tree"
    assert (tree / "etc/made-by-a-hook").read_text() == "x\n"
    assert not (tree / "tmp/in_target.d").exists() and not (tree / "tmp/sib-build-ca.pem").exists()
    meta = json.loads((first.path / "meta.json").read_text())
    assert meta["inputs"] == {"below": "r"} and meta["below"] == []
    assert meta["state"]["manifest"]["sources"][0]["commit"] == "a" * 40
    checkpoints._save(made, rt, second)  # one generation: the older layer goes
    assert second.path.is_dir() and not first.path.exists()


def test_the_builders_own_code_is_in_every_key(tmp_path: Path) -> None:
    """A native step's code changing between two commits of one version renews the layers."""
    a, b = tmp_path / "a", tmp_path / "b"
    for d, body in ((a, "X = 1\n"), (b, "X = 2\n")):
        d.mkdir()
        (d / "step.py").write_text(body)
        (d / "other.py").write_text("Y = 0\n")
    assert layerkeys.code_digest(a) != layerkeys.code_digest(b)
    (b / "step.py").write_text("X = 1\n")
    assert layerkeys.code_digest(a) == layerkeys.code_digest(b)
    assert layerkeys.builder_id().startswith(__version__ + "+")
