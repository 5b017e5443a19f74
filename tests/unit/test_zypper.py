"""zypper.py: repository files, zypp.conf edits, argv lists, cache mounts."""

from __future__ import annotations

from pathlib import Path

import pytest

from sles_ipa_builder.inputs import repos as user_repos
from sles_ipa_builder.inputs import zypper


def remote_aliases(urls: list[str]) -> list[tuple[str, str]]:
    """(alias, url) of the user's repositories, as the build writes them (steps/sles.py)."""
    return [(r.alias, r.url) for r in user_repos.parse(urls)]


def test_repo_files_local_and_remote(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    repos = [("sle-Module-Basesystem", "http://127.0.0.1:4242/Module-Basesystem"),
             *remote_aliases(["https://download.example.com/repo/oss"])]
    written = zypper.write_repos(tmp_path, repos)
    user = repos[1][0]
    assert user.startswith("user-") and remote_aliases(["https://b", "https://download.example.com/repo/oss"])[
        1][0] == user  # named by the URL, not by its position in the list
    assert [p.name for p in written] == ["sle-Module-Basesystem.repo", f"{user}.repo"]
    local = (tmp_path / "etc/zypp/repos.d/sle-Module-Basesystem.repo").read_text()
    assert local.splitlines() == [
        "[sle-Module-Basesystem]", "name=sle-Module-Basesystem", "enabled=1", "autorefresh=0",
        "baseurl=http://127.0.0.1:4242/Module-Basesystem?proxy=_none_", "type=rpm-md", "priority=99",
        "gpgcheck=1", "keeppackages=0"]
    remote = (tmp_path / f"etc/zypp/repos.d/{user}.repo").read_text()
    assert "baseurl=https://download.example.com/repo/oss\n" in remote
    assert "keeppackages=1" in remote and "gpgcheck=1" in remote
    # explicit keep_packages wins
    zypper.write_repos(tmp_path, [("x", "http://127.0.0.1:1/x")], keep_packages=True)
    assert "keeppackages=1" in (tmp_path / "etc/zypp/repos.d/x.repo").read_text()
    zypper.remove_repos(tmp_path, ["sle-Module-Basesystem", user, "x", "never-written"])
    assert list((tmp_path / "etc/zypp/repos.d").iterdir()) == []


def test_bad_alias_rejected(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        zypper.write_repos(tmp_path, [("../evil", "http://x")])


SUSE_CONF = """## Configuration file for software management
[main]
## Whether to install documentation
# rpm.install.excludedocs = no
# solver.onlyRequires = false
download.max_concurrent_connections = 5

[other]
x = 1
"""


def test_zypp_conf_is_idempotent(tmp_path: Path) -> None:
    conf = tmp_path / "etc/zypp/zypp.conf"
    conf.parent.mkdir(parents=True)
    conf.write_text(SUSE_CONF)
    zypper.zypp_conf(tmp_path)
    once = conf.read_text()
    assert "rpm.install.excludedocs = yes\nsolver.onlyRequires = true\n" in once
    assert "# rpm.install.excludedocs" not in once
    assert "download.max_concurrent_connections = 5" in once and "[other]\nx = 1" in once
    zypper.zypp_conf(tmp_path)
    assert conf.read_text() == once


def test_zypp_conf_created_and_duplicates_dropped(tmp_path: Path) -> None:
    zypper.zypp_conf(tmp_path)
    assert (tmp_path / "etc/zypp/zypp.conf").read_text() == (
        "[main]\nrpm.install.excludedocs = yes\nsolver.onlyRequires = true\n")
    conf = tmp_path / "etc/zypp/zypp.conf"
    conf.write_text("[main]\n# solver.onlyRequires = false\nsolver.onlyRequires = false\n")
    zypper.zypp_conf(tmp_path, {"solver.onlyRequires": "true"})
    assert conf.read_text() == "[main]\nsolver.onlyRequires = true\n"


def test_argv() -> None:
    assert zypper.install_argv(["a", "b"]) == [
        "zypper", "--non-interactive", "install", "--no-recommends", "a", "b"]
    assert zypper.install_argv(["a"], uninstall=True)[-3:] == ["remove", "--clean-deps", "a"]
    assert zypper.refresh_argv()[-1] == "refresh"
    assert zypper.refresh_argv(["sle-Module-Basesystem"])[-2:] == ["refresh", "sle-Module-Basesystem"]
    assert zypper.target_env_extra()["no_proxy"] == "127.0.0.1,localhost"


def test_cache_mounts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    [(host, target)] = zypper.cache_mounts()
    assert host == tmp_path / "sles-ipa-builder/zypper" and host.is_dir() and target == "/var/cache/zypp"


def test_zypper_refreshes_when_another_build_did_and_runs_under_the_cache_lock(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    from types import SimpleNamespace

    from filelock import FileLock, Timeout

    from sles_ipa_builder.engine import target

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    calls: list[tuple[list[str], bool]] = []

    def fake_run_in_target(plan: object, rt: object, argv: list[str], **kw: object) -> None:
        other = FileLock(f"{tmp_path / 'sles-ipa-builder/zypper'}.lock")  # another build's attempt
        try:
            other.acquire(timeout=0)
            other.release()
            held = False
        except Timeout:
            held = True
        calls.append((argv, held))

    monkeypatch.setattr(target, "run_in_target", fake_run_in_target)
    ctx = SimpleNamespace(refresh_aliases=["sle-Module-Basesystem"], zypper_token="ours")
    other = SimpleNamespace(refresh_aliases=None, zypper_token="theirs")  # a second build sharing the cache
    target.run_zypper(None, ctx, zypper.install_argv(["lshw"]))  # type: ignore[arg-type]
    target.run_zypper(None, ctx, zypper.install_argv(["mdadm"]))  # type: ignore[arg-type]  # metadata still ours
    target.run_zypper(None, other)  # type: ignore[arg-type]  # the other build refreshes
    target.run_zypper(None, ctx, zypper.install_argv(["fio"]))  # type: ignore[arg-type]  # so ours again first
    assert [(argv[-2:], held) for argv, held in calls] == [
        (["refresh", "sle-Module-Basesystem"], True), (["--no-recommends", "lshw"], True),
        (["--no-recommends", "mdadm"], True),
        (["--non-interactive", "refresh"], True),
        (["refresh", "sle-Module-Basesystem"], True), (["--no-recommends", "fio"], True)]


def test_no_zypper_call_sees_another_targets_rpmdb_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """solv/@System caches one target's rpm database; libsolv trusts it when the database file's inode
    and device match, which they do for every build under the root tree's overlayfs. Every zypper
    call starts without it (zypper rebuilds it from the target's own database)."""
    from types import SimpleNamespace

    from sles_ipa_builder.engine import target

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    system = tmp_path / "sles-ipa-builder/zypper/solv/@System"
    seen: list[bool] = []

    def fake_run_in_target(plan: object, rt: object, argv: list[str], **kw: object) -> None:
        seen.append(system.exists())
        system.mkdir(parents=True, exist_ok=True)  # what zypper leaves behind
        (system / "solv").write_bytes(b"another target's packages")

    monkeypatch.setattr(target, "run_in_target", fake_run_in_target)
    system.mkdir(parents=True)  # left by an earlier build
    ctx = SimpleNamespace(refresh_aliases=None, zypper_token="ours")
    target.run_zypper(None, ctx, zypper.install_argv(["lshw"]))  # type: ignore[arg-type]
    target.run_zypper(None, ctx, zypper.install_argv(["fio"]))  # type: ignore[arg-type]
    assert seen == [False, False, False]  # refresh, install, install
    assert (tmp_path / "sles-ipa-builder/zypper/.refreshed-by").read_text() == "ours"
