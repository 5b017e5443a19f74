"""sources.py: override precedence, mirrors, ref kinds, offline behaviour, DIB records."""

from __future__ import annotations

from pathlib import Path

import git
import pytest
from conftest import make_element

from sles_ipa_builder.config import resolve as config
from sles_ipa_builder.engine import elements
from sles_ipa_builder.errors import InputError
from sles_ipa_builder.inputs import sources


@pytest.fixture(autouse=True)
def own_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


def make_upstream(path: Path) -> git.Repo:
    repo = git.Repo.init(path, initial_branch="master")
    with repo.config_writer() as w:
        w.set_value("user", "name", "t").set_value("user", "email", "t@example.com")
    (path / "setup.py").write_text("v1\n")
    repo.index.add(["setup.py"])
    repo.index.commit("one")
    repo.create_tag("1.0.0")
    (path / "setup.py").write_text("v2\n")
    repo.index.add(["setup.py"])
    repo.index.commit("two")
    repo.git.branch("stable/x", "HEAD~1")
    return repo


def cfg(env: dict[str, str] | None = None) -> config.Config:
    return config.resolve({}, environ=env or {})


def SourceRepo(name: str, rtype: str, dest: str, location: str, ref: str | None = None,  # noqa: N802
               element: str = "e") -> elements.SourceRepo:
    return elements.SourceRepo(name, rtype, dest, location, ref or "", element)


def test_override_precedence(tmp_path: Path) -> None:
    """One place applies overrides: Config.source_env() feeds the element's source-repository lines."""
    el = make_element(tmp_path, "os", files={
        "source-repository-ipa": "ironic-python-agent git /tmp/ironic-python-agent https://file/ipa fileref\n",
        "source-repository-glean": "glean git /tmp/glean https://file/glean\n"})
    els = [elements.Element("os", el, None)]

    def effective(env: dict[str, str]) -> dict[str, tuple[str, str]]:
        c = cfg(env)
        return {r.name: (r.location, r.ref) for r in elements.source_repos(els, {**c.passthrough, **c.source_env()})}

    # the seed's settings (defaults included, as build_ipa_sles.sh always exported them) beat the file
    assert effective({})["ironic-python-agent"] == ("https://opendev.org/openstack/ironic-python-agent", "master")
    assert effective({"IPA_REPO": "https://x/ipa", "IPA_COMMIT": "stable/2023.1"})["ironic-python-agent"] == (
        "https://x/ipa", "stable/2023.1")
    # DIB_REPOLOCATION_/DIB_REPOREF_ beat the seed settings
    env = {"IPA_REPO": "https://x/ipa", "DIB_REPOLOCATION_ironic_python_agent": "https://y/ipa",
           "DIB_REPOREF_ironic_python_agent": "refs/changes/1/1/1"}
    assert effective(env)["ironic-python-agent"] == ("https://y/ipa", "refs/changes/1/1/1")
    # other repositories: the file, default ref master, DIB_ overrides
    assert effective({})["glean"] == ("https://file/glean", "master")
    assert effective({"DIB_REPOREF_glean": "refs/heads/parsing_error"})["glean"] == (
        "https://file/glean", "refs/heads/parsing_error")


def test_fetch_ref_kinds_and_records(tmp_path: Path) -> None:
    up = make_upstream(tmp_path / "up")
    head = up.head.commit.hexsha
    first = up.head.commit.parents[0].hexsha
    # a Gerrit-style change ref that is on no branch
    up.git.checkout("--detach", "HEAD~1")
    (tmp_path / "up" / "change.txt").write_text("c\n")
    up.index.add(["change.txt"])
    change = up.index.commit("change").hexsha
    up.git.update_ref("refs/changes/45/12345/3", change)
    up.git.checkout("master")

    root = tmp_path / "root"
    url = str(tmp_path / "up")
    cases = {"master": head, "1.0.0": first, "stable/x": first, "refs/heads/master": head,
             "refs/changes/45/12345/3": change, first: first}
    for i, (ref, want) in enumerate(cases.items()):
        repo = SourceRepo(f"r{i}", "git", f"/tmp/r{i}", url, ref, element="e")
        rows = sources.fetch_sources([repo], root, offline=False, image_name="ironic-python-agent")
        assert rows[0]["commit"] == want, ref
        co = git.Repo(root / f"tmp/r{i}")
        assert co.head.commit.hexsha == want
        assert "1.0.0" in [t.name for t in co.tags]  # pbr needs the tags
        assert co.remotes.origin.url == url
    lines = (root / "etc/dib-manifests/dib-manifest-git-ironic-python-agent").read_text().splitlines()
    assert lines[0] == f"r0 git /tmp/r0 {url} {head}"
    assert (root / "etc/dib-source-repositories").read_text().splitlines()[:2] == ["/tmp/r0", "/tmp/r1"]


def test_records_name_each_source_once_when_written_again(tmp_path: Path) -> None:
    """A build resumed from a cache layer checks the sources out again over the layer's tree: each
    source keeps one line, with this build's commit; lines of other sources stay."""
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    (root / "etc/dib-source-repositories").write_text("/opt/base-image-source\n")
    rows = [{"name": "ipa", "dest": "/tmp/ipa", "location": "file:///up", "commit": "a" * 40}]
    sources.write_records(root, rows, image_name="img")
    sources.write_records(root, [{**rows[0], "commit": "b" * 40}], image_name="img")
    assert (root / "etc/dib-source-repositories").read_text() == "/opt/base-image-source\n/tmp/ipa\n"
    assert (root / "etc/dib-manifests/dib-manifest-git-img").read_text() == f"ipa git /tmp/ipa file:///up {'b' * 40}\n"


def test_refresh_online_not_offline(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    up = make_upstream(tmp_path / "up")
    repo = SourceRepo("ipa", "git", "/tmp/ipa", str(tmp_path / "up"), "master")
    old = sources.fetch_sources([repo], tmp_path / "a", offline=False)[0]["commit"]
    (tmp_path / "up" / "new").write_text("x")
    up.index.add(["new"])
    new = up.index.commit("three").hexsha
    assert sources.fetch_sources([repo], tmp_path / "b", offline=True)[0]["commit"] == old
    caplog.set_level("INFO")
    assert sources.fetch_sources([repo], tmp_path / "c", offline=False)[0]["commit"] == new
    assert f"master moved {old[:12]} → {new[:12]}" in caplog.text


def test_a_moved_change_ref_is_refetched(tmp_path: Path) -> None:
    # refs/changes/... are outside the mirror's fetch specs: once cached they must still follow upstream
    up = make_upstream(tmp_path / "up")
    up.git.update_ref("refs/changes/01/1/1", "HEAD~1")
    repo = SourceRepo("ipa", "git", "/tmp/ipa", str(tmp_path / "up"), "refs/changes/01/1/1")
    first = sources.fetch_sources([repo], tmp_path / "a", offline=False)[0]["commit"]
    up.git.update_ref("refs/changes/01/1/1", "HEAD")
    moved = sources.fetch_sources([repo], tmp_path / "b", offline=False)[0]["commit"]
    assert first == up.head.commit.parents[0].hexsha and moved == up.head.commit.hexsha


def test_offline_errors(tmp_path: Path) -> None:
    make_upstream(tmp_path / "up")
    repo = SourceRepo("ipa", "git", "/tmp/ipa", str(tmp_path / "up"), "master")
    with pytest.raises(InputError, match="ipa: .* is not in the cache and --offline is set"):
        sources.fetch_sources([repo], tmp_path / "r", offline=True)
    sources.fetch_sources([repo], tmp_path / "r", offline=False)
    missing = SourceRepo("ipa", "git", "/tmp/ipa", str(tmp_path / "up"), "stable/nope")
    with pytest.raises(InputError, match="ipa: ref stable/nope is not in the cached mirror"):
        sources.fetch_sources([missing], tmp_path / "r", offline=True)


def test_missing_ref_and_unreachable_url(tmp_path: Path) -> None:
    make_upstream(tmp_path / "up")
    repo = SourceRepo("ipa", "git", "/tmp/ipa", str(tmp_path / "up"), "no-such-branch")
    with pytest.raises(InputError, match="source ipa: ref no-such-branch not found in"):
        sources.fetch_sources([repo], tmp_path / "r", offline=False)
    gone = SourceRepo("lib", "git", "/tmp/lib", str(tmp_path / "nowhere"), "master")
    with pytest.raises(InputError, match=r"source lib: cannot fetch .*nowhere \(ref master\): fatal: "):
        sources.fetch_sources([gone], tmp_path / "r", offline=False)


def test_a_source_without_destination_never_empties_the_image(tmp_path: Path) -> None:
    from sles_ipa_builder.errors import ConfigError

    make_upstream(tmp_path / "up")
    root = tmp_path / "r"
    (root / "etc").mkdir(parents=True)
    (root / "etc/os-release").write_text("the image\n")
    for dest in ("", "/", "//"):
        with pytest.raises(ConfigError, match="no destination directory"):
            sources.fetch_sources([SourceRepo("x", "git", dest, str(tmp_path / "up"), "master")], root,
                                  offline=False)
    assert (root / "etc/os-release").read_text() == "the image\n"


def test_unsupported_type(tmp_path: Path) -> None:
    from sles_ipa_builder.errors import BuildError

    with pytest.raises(BuildError, match="type tar is not supported"):
        sources.fetch_sources([SourceRepo("x", "tar", "/x", "http://x/x.tgz")], tmp_path, offline=False)
