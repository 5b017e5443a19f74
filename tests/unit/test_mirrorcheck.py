"""Git mirrors checked by content (issue 30): a damaged object store is found before `git clone` reads
it; online the mirror is discarded with one warning and cloned again, offline the build stops.

The mirrors are real: made by sources.update_mirror from a real upstream in tmp_path (a first fetch
big enough to be kept as a pack, a second one small enough to be unpacked into loose objects), then
damaged on disk as bit rot or a half-finished copy would.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable
from pathlib import Path

import git
import pytest

from sles_ipa_builder.cache import mirrorcheck
from sles_ipa_builder.engine import elements
from sles_ipa_builder.errors import InputError
from sles_ipa_builder.inputs import sources


@pytest.fixture(autouse=True)
def own_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


def commit(repo: git.Repo, files: dict[str, str], message: str) -> str:
    top = Path(repo.working_tree_dir or "")
    for name, text in files.items():
        (top / name).write_text(text)
    repo.index.add(list(files))
    return repo.index.commit(message).hexsha


def upstream(path: Path) -> git.Repo:
    """150 files in the first commit: more objects than git's unpackLimit (100), so fetched as a pack."""
    repo = git.Repo.init(path, initial_branch="master")
    with repo.config_writer() as w:
        w.set_value("user", "name", "t").set_value("user", "email", "t@example.com")
    commit(repo, {f"f{i:03}.py": f"print({i})\n" * (i + 1) for i in range(150)}, "one")
    repo.create_tag("1.0.0")
    return repo


def ipa(url: Path) -> elements.SourceRepo:
    return elements.SourceRepo("ipa", "git", "/tmp/ipa", str(url), "master", "e")


@pytest.fixture
def mirror(tmp_path: Path) -> tuple[Path, git.Repo]:
    """A mirror holding one pack (the first fetch) and loose objects (the second), and its upstream."""
    up = upstream(tmp_path / "up")
    sources.fetch_sources([ipa(tmp_path / "up")], tmp_path / "first", offline=False)
    commit(up, {"f000.py": "print('two')\n", "new.py": "x = 2\n"}, "two")
    sources.fetch_sources([ipa(tmp_path / "up")], tmp_path / "second", offline=False)
    path = sources.mirror_path("ipa", str(tmp_path / "up"))
    assert list((path / "objects/pack").glob("*.pack")) and loose(path), "a pack and loose objects"
    return path, up


def loose(path: Path) -> list[Path]:
    return sorted(p for p in (path / "objects").glob("??/*") if mirrorcheck.LOOSE.fullmatch(p.name))


def loose_of(path: Path, sha: str) -> Path:
    return path / "objects" / sha[:2] / sha[2:]


def writable(file: Path) -> Path:
    file.chmod(0o644)  # git writes packs and objects read-only
    return file


def the_pack(path: Path) -> Path:
    return writable(next((path / "objects/pack").glob("*.pack")))


def truncate_pack(path: Path, up: git.Repo) -> None:
    pack = the_pack(path)
    os.truncate(pack, pack.stat().st_size // 2)


def empty_pack(path: Path, up: git.Repo) -> None:
    the_pack(path).write_bytes(b"")


def flip_a_byte_in_the_pack(path: Path, up: git.Repo) -> None:
    pack = the_pack(path)
    data = bytearray(pack.read_bytes())
    data[len(data) * 2 // 3] ^= 0xFF
    pack.write_bytes(bytes(data))


def drop_the_index(path: Path, up: git.Repo) -> None:
    writable(next((path / "objects/pack").glob("*.idx"))).unlink()


def empty_a_loose_object(path: Path, up: git.Repo) -> None:
    writable(loose_of(path, up.head.commit.tree["new.py"].hexsha)).write_bytes(b"")


def delete_a_loose_object(path: Path, up: git.Repo) -> None:
    loose_of(path, up.head.commit.tree["new.py"].hexsha).unlink()


def delete_the_loose_head_commit(path: Path, up: git.Repo) -> None:
    loose_of(path, up.head.commit.hexsha).unlink()


def garbage_in_a_ref(path: Path, up: git.Repo) -> None:
    (path / "refs/heads/master").write_text("not a commit\n")


def a_ref_to_a_missing_commit(path: Path, up: git.Repo) -> None:
    (path / "refs/heads/master").write_text("1234567890" * 4 + "\n")


DAMAGE: dict[Callable[[Path, git.Repo], None], str] = {
    truncate_pack: r"objects/pack/pack-\w+\.pack is truncated or changed",
    empty_pack: r"objects/pack/pack-\w+\.pack is empty",
    flip_a_byte_in_the_pack: r"objects/pack/pack-\w+\.pack is truncated or changed",
    drop_the_index: r"a ref or its history is broken: fatal: bad object refs/",
    empty_a_loose_object: r"loose object \w+ is damaged",
    # a blob of the commit checked out: no ref's history shows it, the walk of that commit's tree does
    delete_a_loose_object: r"objects of \w{12} are missing: fatal: missing blob object",
    delete_the_loose_head_commit: r"a ref or its history is broken: fatal: bad object refs/heads/master",
    garbage_in_a_ref: r"a ref or its history is broken: fatal: bad object refs/heads/master",
    a_ref_to_a_missing_commit: r"a ref or its history is broken: fatal: bad object refs/heads/master",
}


def found(path: Path, up: git.Repo) -> str | None:
    """What the two checks say, in the order a build runs them."""
    return mirrorcheck.damage(path) or mirrorcheck.missing(path, up.head.commit.hexsha)


def test_a_whole_mirror_passes(mirror: tuple[Path, git.Repo]) -> None:
    path, up = mirror
    assert found(path, up) is None
    # what git gc and later git versions add beside the packs carries checksums too
    repo = git.Repo(path)
    repo.git.execute(["git", "-C", str(path), "-c", "pack.writeReverseIndex=true", "repack", "-a", "-d", "-b",
                      "--write-midx"])
    repo.git.commit_graph("write", "--reachable")
    assert {p.suffix for p in (path / "objects/pack").iterdir()} >= {".pack", ".idx", ".rev", ".bitmap"}
    assert (path / "objects/pack/multi-pack-index").is_file()
    assert (path / "objects/info/commit-graph").is_file()
    assert mirrorcheck.damage(path) is None
    # a temp object a killed git left is not the store's: git ignores it, so does the check
    (path / "objects/ab").mkdir(exist_ok=True)
    (path / "objects/ab/tmp_obj_XyZ123").write_bytes(b"half")
    assert mirrorcheck.damage(path) is None


def test_a_damaged_commit_graph_is_found(mirror: tuple[Path, git.Repo]) -> None:
    path, _ = mirror
    git.Repo(path).git.commit_graph("write", "--reachable")
    graph = writable(path / "objects/info/commit-graph")
    os.truncate(graph, graph.stat().st_size - 7)
    assert mirrorcheck.damage(path) == ("objects/info/commit-graph is truncated or changed "
                                        "(its checksum does not match its bytes)")


def test_a_history_commit_gone_is_found_past_the_commit_graph(mirror: tuple[Path, git.Repo],
                                                               tmp_path: Path) -> None:
    """git gc writes a commit-graph, from which rev-list takes parents without reading the commits;
    pbr's `git log` reads them. A commit object gone from the history must still be found."""
    path, up = mirror
    two = up.head.commit.hexsha  # fetched loose by the second build
    commit(up, {"new.py": "x = 3\n"}, "three")
    sources.fetch_sources([ipa(tmp_path / "up")], tmp_path / "third", offline=False)
    git.Repo(path).git.commit_graph("write", "--reachable")
    loose_of(path, two).unlink()
    assert git.Repo(path).git.rev_list("--all", "--quiet") == ""  # what the graph lets through
    assert mirrorcheck.damage(path) == f"a ref or its history is broken: error: Could not read {two}"


def test_not_a_repository(tmp_path: Path) -> None:
    (tmp_path / "m.git").mkdir()
    assert mirrorcheck.damage(tmp_path / "m.git") == "not a git repository (no HEAD or objects)"


@pytest.mark.parametrize("damage", list(DAMAGE), ids=[d.__name__ for d in DAMAGE])
def test_damage_is_found_and_the_mirror_cloned_again(
        damage: Callable[[Path, git.Repo], None], mirror: tuple[Path, git.Repo], tmp_path: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    path, up = mirror
    damage(path, up)
    wrong = found(path, up)
    assert wrong is not None
    assert re.match(DAMAGE[damage], wrong), wrong

    caplog.set_level(logging.INFO)
    rows = sources.fetch_sources([ipa(tmp_path / "up")], tmp_path / "root", offline=False)
    warned = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert warned == [f"source ipa: git mirror {path} is damaged: {wrong}; discarded, cloning it again"]
    assert rows[0]["commit"] == up.head.commit.hexsha
    out = git.Repo(tmp_path / "root/tmp/ipa")
    assert out.head.commit.hexsha == up.head.commit.hexsha and "1.0.0" in [t.name for t in out.tags]
    assert (tmp_path / "root/tmp/ipa/new.py").read_text() == "x = 2\n"
    assert found(path, up) is None  # cloned again, whole


@pytest.mark.parametrize("damage", [truncate_pack, garbage_in_a_ref, delete_a_loose_object],
                         ids=["truncate_pack", "garbage_in_a_ref", "delete_a_loose_object"])
def test_the_clone_it_prevents_fails_or_leaves_files_out(damage: Callable[[Path, git.Repo], None],
                                                         mirror: tuple[Path, git.Repo], tmp_path: Path) -> None:
    """The damage is real: unchecked, the clone into the target fails, or worse, git checks out what it
    can read, exits 0, and the files it could not read are simply missing (seen with git 2.39)."""
    path, up = mirror
    damage(path, up)
    want = sorted(b.path for b in up.head.commit.tree.traverse() if isinstance(b, git.Blob))
    try:
        sources.checkout(path, up.head.commit.hexsha, tmp_path / "target", str(tmp_path / "up"))
    except git.GitCommandError:
        return
    got = sorted(p.name for p in (tmp_path / "target").iterdir() if p.name != ".git")
    assert got != want and set(got) < set(want)


def test_offline_a_damaged_mirror_stops_the_build(mirror: tuple[Path, git.Repo], tmp_path: Path) -> None:
    path, up = mirror
    truncate_pack(path, up)
    with pytest.raises(InputError) as e:
        sources.fetch_sources([ipa(tmp_path / "up")], tmp_path / "root", offline=True)
    assert str(e.value).startswith(f"source ipa: the cached git mirror {path} is damaged: objects/pack/pack-")
    assert str(e.value).endswith("(its checksum does not match its bytes) (--offline)")
    assert "\n" not in str(e.value)
    assert e.value.hint == "run once online: the mirror is then cloned again"
    assert path.is_dir()  # kept: offline it cannot be replaced, and the user may want to look at it
    assert not (tmp_path / "root/tmp/ipa").exists()  # no clone was tried
    # once online, it is whole again, and offline builds work from it
    sources.fetch_sources([ipa(tmp_path / "up")], tmp_path / "online", offline=False)
    rows = sources.fetch_sources([ipa(tmp_path / "up")], tmp_path / "offline", offline=True)
    assert rows[0]["commit"] == up.head.commit.hexsha


def test_offline_missing_objects_of_the_commit_stop_the_build(mirror: tuple[Path, git.Repo],
                                                              tmp_path: Path) -> None:
    path, up = mirror
    delete_a_loose_object(path, up)
    with pytest.raises(InputError, match=rf"source ipa: the cached git mirror {re.escape(str(path))} is damaged: "
                                         rf"objects of {up.head.commit.hexsha[:12]} are missing: fatal: missing blob"):
        sources.fetch_sources([ipa(tmp_path / "up")], tmp_path / "root", offline=True)
    assert not (tmp_path / "root/tmp/ipa").exists()


def test_resolve_checks_too(mirror: tuple[Path, git.Repo], tmp_path: Path,
                            caplog: pytest.LogCaptureFixture) -> None:
    """The layers' keys read the commits through resolve() before any step: the check runs there."""
    path, up = mirror
    empty_a_loose_object(path, up)
    with pytest.raises(InputError, match="is damaged: loose object"):
        sources.resolve([ipa(tmp_path / "up")], offline=True)
    assert sources.resolve([ipa(tmp_path / "up")], offline=False) == {"ipa": up.head.commit.hexsha}
    assert "discarded, cloning it again" in caplog.text
