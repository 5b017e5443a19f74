"""metal3-dev-env mode against a small local repository whose Makefile records how it was called."""

from __future__ import annotations

import logging
from pathlib import Path
from types import SimpleNamespace

import git
import pytest

from sles_ipa_builder.errors import BuildError, InputError
from sles_ipa_builder.verify.metal3 import IPA_TAR_NAME, run_from_config, run_metal3_dev_env

# Each target runs record.sh, which appends "<target> USE_LOCAL_IPA=... IPA_DOWNLOAD_ENABLED=...
# LOCAL_IPA_PATH=... tar=yes|no <version>" to $RECORD: the order of targets and the environment each got.
MAKEFILE = """\
all:
\t@sh record.sh all
\t@echo "deploying the dev env"

test:
\t@sh record.sh test
\t@echo "running the tests"
\t@{test_result}

clean:
\t@sh record.sh clean
\t@echo "cleaning up the dev env"
"""
RECORD_SH = """\
tar=no
test -f "$LOCAL_IPA_PATH/{tar}" && tar=yes
echo "$1 USE_LOCAL_IPA=$USE_LOCAL_IPA IPA_DOWNLOAD_ENABLED=$IPA_DOWNLOAD_ENABLED \\
LOCAL_IPA_PATH=$LOCAL_IPA_PATH tar=$tar $(cat VERSION)" >> "$RECORD"
"""


def commit_makefile(repo: git.Repo, version: str, test_result: str = "true") -> str:
    tree = Path(repo.working_tree_dir or ".")
    (tree / "Makefile").write_text(MAKEFILE.format(test_result=test_result))
    (tree / "record.sh").write_text(RECORD_SH.format(tar=IPA_TAR_NAME))
    (tree / "VERSION").write_text(version + "\n")
    repo.index.add(["Makefile", "record.sh", "VERSION"])
    actor = git.Actor("Test", "test@example.com")
    return repo.index.commit(f"Makefile {version}", author=actor, committer=actor).hexsha


@pytest.fixture
def devenv(tmp_path: Path) -> dict[str, str]:
    """main: v1 then v2 (both pass); branch 'broken': make test fails."""
    repo = git.Repo.init(tmp_path / "origin", initial_branch="main")
    v1 = commit_makefile(repo, "v1")
    v2 = commit_makefile(repo, "v2")
    repo.git.checkout("-b", "broken")
    commit_makefile(repo, "v3", test_result="exit 3")
    repo.git.checkout("main")
    return {"url": f"file://{tmp_path / 'origin'}", "v1": v1, "v2": v2}


@pytest.fixture
def record(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "record.log"
    monkeypatch.setenv("RECORD", str(path))  # the host environment reaches make
    return path


@pytest.fixture
def tar(tmp_path: Path) -> Path:
    out = tmp_path / "out"
    out.mkdir()
    path = out / IPA_TAR_NAME
    path.write_bytes(b"tar")
    return path


def calls(record: Path) -> list[list[str]]:
    return [line.split() for line in record.read_text().splitlines()]


def test_clone_make_test_clean_with_local_ipa(
    devenv: dict[str, str], record: Path, tar: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    ws = tmp_path / "ws"
    result = run_metal3_dev_env(
        devenv["url"], tar, branch="main", commit="HEAD", quiet_cleanup=False, workspace=ws
    )
    assert result.checkout == ws / "metal3-dev-env"
    assert result.commit == devenv["v2"]
    assert result.ran == ["", "test", "clean"]
    env = ["USE_LOCAL_IPA=true", "IPA_DOWNLOAD_ENABLED=false", f"LOCAL_IPA_PATH={tar.parent}", "tar=yes"]
    env.append("v2")
    assert calls(record) == [["all", *env], ["test", *env], ["clean", *env]]
    assert "cleaning up the dev env" in caplog.text  # not quiet: clean's output is shown


def test_commit_is_checked_out_and_quiet_cleanup_hides_clean(
    devenv: dict[str, str], record: Path, tar: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    result = run_metal3_dev_env(
        devenv["url"], tar, branch="main", commit=devenv["v1"], quiet_cleanup=True, workspace=tmp_path / "ws"
    )
    assert result.commit == devenv["v1"]
    assert [c[0] for c in calls(record)] == ["all", "test", "clean"]
    assert {c[-1] for c in calls(record)} == {"v1"}
    assert "deploying the dev env" in caplog.text
    # QUIET_CLEANUP=true hides it (the seed had it the wrong way round)
    assert "cleaning up the dev env" not in caplog.text


def test_failing_make_test_is_a_failure_after_make_clean(
    devenv: dict[str, str], record: Path, tar: Path, tmp_path: Path
) -> None:
    with pytest.raises(BuildError) as exc:
        run_metal3_dev_env(devenv["url"], tar, branch="broken", commit="HEAD", quiet_cleanup=True,
                           workspace=tmp_path / "ws")  # fmt: skip
    assert "make test failed (exit 2)" in exc.value.message  # make reports the recipe's exit 3 as 2
    assert [c[0] for c in calls(record)] == ["all", "test", "clean"]
    assert any("running the tests" in line for line in exc.value.tail)


def test_existing_checkout_is_used_in_place_and_odd_tar_names_are_staged(
    devenv: dict[str, str], record: Path, tmp_path: Path
) -> None:
    local = tmp_path / "my-dev-env"
    git.Repo.clone_from(devenv["url"], local)
    odd = tmp_path / "custom.tar"
    odd.write_bytes(b"tar")
    ws = tmp_path / "ws"
    result = run_metal3_dev_env(local, odd, branch="main", commit="HEAD", quiet_cleanup=True, workspace=ws)
    assert result.checkout == local
    assert not (ws / "metal3-dev-env").exists()
    staged = ws / "metal3-local-ipa"
    assert (staged / IPA_TAR_NAME).read_bytes() == b"tar"
    assert all(f"LOCAL_IPA_PATH={staged}" in c and "tar=yes" in c for c in calls(record))


def test_the_builders_own_clone_follows_the_branch_on_the_next_run(
    devenv: dict[str, str], record: Path, tar: Path, tmp_path: Path
) -> None:
    ws = tmp_path / "ws"
    first = run_metal3_dev_env(devenv["url"], tar, branch="main", commit="HEAD", quiet_cleanup=True, workspace=ws)
    origin = git.Repo(tmp_path / "origin")
    v4 = commit_makefile(origin, "v4")  # upstream moves on between two builds
    again = run_metal3_dev_env(devenv["url"], tar, branch="main", commit="HEAD", quiet_cleanup=True, workspace=ws)
    assert (first.commit, again.commit) == (devenv["v2"], v4)
    with pytest.raises(BuildError, match="make test failed"):  # and a changed branch is honoured
        run_metal3_dev_env(devenv["url"], tar, branch="broken", commit="HEAD", quiet_cleanup=True, workspace=ws)


def test_relative_workspace_gives_an_absolute_local_ipa_path(
    devenv: dict[str, str], record: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    odd = tmp_path / "custom.tar"
    odd.write_bytes(b"tar")
    run_metal3_dev_env(devenv["url"], odd, branch="main", commit="HEAD", quiet_cleanup=True, workspace=Path("ws"))
    assert all(f"LOCAL_IPA_PATH={tmp_path / 'ws' / 'metal3-local-ipa'}" in c and "tar=yes" in c
               for c in calls(record))


def test_bad_inputs(devenv: dict[str, str], tar: Path, tmp_path: Path) -> None:
    with pytest.raises(InputError, match="not found"):
        run_metal3_dev_env(devenv["url"], tmp_path / "missing.tar", workspace=tmp_path / "ws")
    with pytest.raises(BuildError, match="git clone failed"):
        run_metal3_dev_env(devenv["url"], tar, branch="no-such-branch", workspace=tmp_path / "ws")
    notgit = tmp_path / "notgit"
    notgit.mkdir()
    (notgit / "Makefile").write_text("all:\n")
    with pytest.raises(InputError, match="not a git checkout"):
        run_metal3_dev_env(notgit, tar, workspace=tmp_path / "ws")


def test_run_from_config_uses_the_seed_settings(
    devenv: dict[str, str], record: Path, tar: Path, tmp_path: Path
) -> None:
    cfg = SimpleNamespace(
        dev_env_location=None, dev_env_branch="main", dev_env_commit=devenv["v1"], quiet_cleanup=True,
        workspace=str(tmp_path / "ws"), dev_env_repo=devenv["url"],
    )  # fmt: skip
    result = run_from_config(cfg, tar)
    assert result.checkout == tmp_path / "ws" / "metal3-dev-env"
    assert result.commit == devenv["v1"]
    elsewhere = tmp_path / "elsewhere"
    # a path that does not exist yet is cloned into from dev_env_repo
    assert run_from_config(cfg, tar, location=elsewhere).checkout == elsewhere
    assert [c[0] for c in calls(record)] == ["all", "test", "clean"] * 2
