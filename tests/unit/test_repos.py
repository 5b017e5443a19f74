"""repos.py: the user's repositories by URL, their credentials, the up-front metadata check."""

from __future__ import annotations

import os
import socket
import sys
from pathlib import Path

import pytest
from repohttp import build_rpm, make_repo, serve

from sles_ipa_builder import run
from sles_ipa_builder.config import resolve as config
from sles_ipa_builder.engine import plan
from sles_ipa_builder.errors import ConfigError
from sles_ipa_builder.inputs import repos, zypper

USER, PASSWORD = "rmt-user", "s3cret-Pa55"


@pytest.fixture(scope="module")
def repo_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    work = tmp_path_factory.mktemp("repo")
    rpm = build_rpm(work, "sib-probe-tool", {"/usr/share/sib-probe-tool/README": "a file the package carries\n"})
    return make_repo(work / "repo", [rpm])


def python311_metadata_repo(tmp_path: Path) -> Path:
    """A repository whose one package is named python311: these tests read only its name (the build
    test, test_update_repo.py, uses the test media's real python311 RPMs)."""
    rpm = build_rpm(tmp_path / "w", "python311", {
        "/usr/share/doc/sib-test/python311-metadata-only": "repository test: only the package name matters here\n"})
    return make_repo(tmp_path / "update", [rpm])


def creds_file(tmp_path: Path, name: str = "RMT", password: str = PASSWORD) -> Path:
    d = tmp_path / "credentials.d"
    d.mkdir(exist_ok=True)
    (d / name).write_text(f"username={USER}\npassword={password}\n")
    return d / name


def test_mask_hides_passwords_and_tokens() -> None:
    assert repos.mask("https://u:pw@host:8443/repo/x?credentials=SCC") == "https://u:***@host:8443/repo/x?credentials=SCC"
    assert repos.mask("https://updates.suse.com/SUSE/Updates/x?abcTOKEN123") == (
        "https://updates.suse.com/SUSE/Updates/x?***")
    assert repos.mask("https://h/r?auth=tok&credentials=N") == "https://h/r?auth=***&credentials=N"
    r = repos.Repo("https://u:pw@host/r?tok")
    assert r.secrets() == ["pw", "tok"] and "pw" not in r.alias
    # a new token keeps the repository's alias (and with it its zypper cache)
    assert repos.Repo("https://host/r?tokA").alias == repos.Repo("https://host/r?tokB").alias
    assert zypper.is_local("http://u:p@127.0.0.1:80/x") and not zypper.is_local("https://127.0.0.1.example.com/")


def test_settings_mask_repos_and_know_the_secrets(tmp_path: Path) -> None:
    f = creds_file(tmp_path)
    cfg = config.resolve({"repos": ["https://u:pw-in-url@h/r", "https://h/u?credentials=RMT"],
                          "repo_credentials": str(f.parent)}, environ={})
    assert cfg.shown_settings()["repos"] == ["https://u:***@h/r", "https://h/u?credentials=RMT"]
    assert set(cfg.secrets()) >= {"pw-in-url", PASSWORD}
    with pytest.raises(ConfigError, match="names credentials 'OTHER'"):
        config.resolve({"repos": ["https://h/u?credentials=OTHER"], "repo_credentials": str(f)}, environ={})
    (tmp_path / "bad").write_text("password=x\n")
    with pytest.raises(ConfigError, match="no username= line"):
        config.resolve({"repo_credentials": str(tmp_path / "bad")}, environ={})
    with pytest.raises(ConfigError, match="not a URL zypper can use"):
        config.resolve({"repos": ["just-words"]}, environ={})


def test_probe_reads_the_packages_with_credentials(repo_dir: Path, tmp_path: Path) -> None:
    creds = repos.load_credentials([creds_file(tmp_path).parent])
    with serve(repo_dir, USER, PASSWORD) as url:
        assert repos.probe(repos.Repo(url + "/?credentials=RMT"), creds) == {"sib-probe-tool"}
        assert repos.probe(repos.Repo(url.replace("//", f"//{USER}:{PASSWORD}@")), {}) == {"sib-probe-tool"}
        with pytest.raises(ConfigError, match=r"refused the credentials \(HTTP 401\)") as e:
            repos.probe(repos.Repo(url.replace("//", f"//{USER}:wrong@")), {})
        assert "wrong" not in e.value.message and "***" in e.value.message
        with pytest.raises(ConfigError, match="refused the credentials"):
            repos.probe(repos.Repo(url), {})
    with serve(repo_dir.parent) as url:  # the parent directory: no repodata/ there
        with pytest.raises(ConfigError, match=r"has no repodata/repomd.xml \(HTTP 404\)"):
            repos.probe(repos.Repo(url), {})
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(ConfigError, match=f"repository http://127.0.0.1:{port}/x is unreachable"):
        repos.probe(repos.Repo(f"http://127.0.0.1:{port}/x"), {})
    assert repos.probe(repos.Repo(repo_dir.as_uri()), {}) == {"sib-probe-tool"}


@pytest.mark.root  # the build checks for root before it reads its inputs
@pytest.mark.parametrize("case", ["401", "no-repodata", "unreachable"])
def test_bad_repository_stops_the_build_before_any_work(repo_dir: Path, tmp_path: Path, case: str) -> None:
    """One error line naming the repository, exit 2, and no workspace made."""
    with serve(repo_dir if case != "no-repodata" else repo_dir.parent, USER, PASSWORD) as url:
        bad = {"401": url.replace("//", f"//{USER}:not-it@"), "no-repodata": url.replace("//", f"//{USER}:{PASSWORD}@"),
               "unreachable": "http://127.0.0.1:9/repo"}[case]
        env = {k: v for k, v in os.environ.items() if not k.startswith(("DIB_", "IPA_", "IRONIC_", "SIB_"))}
        ws = tmp_path / "ws"
        res = run.run([sys.executable, "-m", "sles_ipa_builder", "build", "--workspace", str(ws), "--repo", bad,
                       "--images-dir", str(tmp_path)], env=env, check=False, capture=True)
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert res.returncode == 2, res.stderr
    errors = [ln for ln in lines if ln.startswith("error: ")]
    assert len(errors) == 1 and errors[0].startswith("error: repository http://"), res.stderr
    assert "127.0.0.1:" in errors[0]
    assert {"401": "refused the credentials", "no-repodata": "no repodata",
            "unreachable": "unreachable"}[case] in errors[0]
    assert "not-it" not in res.stderr + res.stdout and PASSWORD not in res.stderr + res.stdout
    assert not ws.exists()


def test_credentials_live_in_the_target_only_while_the_build_runs(tmp_path: Path) -> None:
    root = tmp_path / "root"
    creds = repos.load_credentials([creds_file(tmp_path)])
    user = repos.parse(["https://rmt.example.com/repo/SUSE/Updates/x?credentials=RMT", "https://h/other"])
    [written] = repos.write_credentials(root, user, creds)
    assert written == root / "etc/zypp/credentials.d/RMT"
    assert written.stat().st_mode & 0o777 == 0o600
    assert written.read_text() == f"username={USER}\npassword={PASSWORD}\n"
    zypper.write_repos(root, [(r.alias, r.url) for r in user])
    text = (root / zypper.REPOS_D / f"{user[0].alias}.repo").read_text()
    assert "baseurl=https://rmt.example.com/repo/SUSE/Updates/x?credentials=RMT\n" in text
    assert "priority=90" in text  # an update channel wins over the media (99)
    repos.remove_credentials(root, creds)
    assert not written.exists()


def test_settle_picks_python_for_sp4_from_the_repositories(repo_dir: Path, tmp_path: Path) -> None:
    """SP4: python311 when a repository provides it, else the GM media's python310; SP5+ never asks."""
    update = python311_metadata_repo(tmp_path)
    with serve(update, USER, PASSWORD) as with_py, serve(repo_dir) as without:
        base = {"service_pack": "SP4", "images_dir": str(tmp_path)}
        cfg = plan.settle(config.resolve({**base, "repos": [with_py.replace("//", f"//{USER}:{PASSWORD}@")]},
                                                environ={}))
        assert cfg.python == "python3.11" and cfg.sources["sles_python"].startswith("python311 in http://")
        assert PASSWORD not in cfg.sources["sles_python"]
        cfg = plan.settle(config.resolve({**base, "repos": [without]}, environ={}))
        assert cfg.python == "python3.10" and "no repository provides python311" in cfg.sources["sles_python"]
        cfg = plan.settle(config.resolve({**base, "service_pack": "SP7", "repos": [without]}, environ={}))
        assert cfg.python == "python3.11" and cfg.sles_python is None


def test_iso_is_optional_only_with_repositories(tmp_path: Path) -> None:
    from sles_ipa_builder.cli.doctor import input_checks

    def iso_check(**kw: object) -> tuple[bool, bool]:
        c = next(c for c in input_checks(config.resolve({"images_dir": str(tmp_path), **kw}, environ={}))
                 if c.name == "Media1 ISO")
        return c.ok, c.fatal

    assert iso_check() == (False, True)
    assert iso_check(repos=["https://rmt.example.com/repo/x/"]) == (False, False)
    assert config.resolve({"images_dir": str(tmp_path), "repos": ["https://h/x/"]}, environ={}).iso_optional
    # an ISO given by path stays required, repositories or not
    assert iso_check(repos=["https://h/x/"], iso=str(tmp_path / "given.iso")) == (False, True)
    (tmp_path / "SLE-15-SP7-Full-x86_64-GM-Media1.iso").write_bytes(b"")
    assert not config.resolve({"images_dir": str(tmp_path), "repos": ["https://h/x/"]}, environ={}).iso_optional


def test_installed_from_reads_zypper_history(tmp_path: Path) -> None:
    from sles_ipa_builder.steps.sles import HISTORY, installed_from

    h = tmp_path / HISTORY
    h.parent.mkdir(parents=True)
    h.write_text(
        "# 2026-11-30 21:00:00 zypper install curl gcc python311\n"
        "2026-11-30 21:00:01|install|curl|8.0-1|x86_64|root@h|sle-Module-Basesystem|abc|\n"
        "2026-11-30 21:00:01|install|gcc|12-1|x86_64|root@h|sle-Module-Development-Tools|abc|\n"
        "2026-11-30 21:00:01|install|python311|3.11-1|x86_64|root@h|user-0123456789ab|abc|\n"
        "2026-11-30 21:00:02|install|bash|5-1|x86_64|root@h|some-other-repo|abc|\n"
        "2026-11-30 21:00:03|remove |gcc|12-1|x86_64|root@h|\n")
    aliases = {"sle-Module-Basesystem": "", "sle-Module-Development-Tools": "", "user-0123456789ab": ""}
    assert installed_from(tmp_path, aliases, {"user-0123456789ab": "https://u:***@h/update"}) == {
        "curl": "sle-Module-Basesystem", "python311": "user-0123456789ab https://u:***@h/update"}
    assert installed_from(tmp_path / "nothing", aliases, {}) == {}


def test_probe_passes_an_scc_style_token(repo_dir: Path) -> None:
    token = "Aq3fToken0x9"
    with serve(repo_dir, token=token) as url:
        assert repos.probe(repos.Repo(f"{url}/?{token}"), {}) == {"sib-probe-tool"}
        with pytest.raises(ConfigError, match=r"repository http://127.0.0.1:\d+/\?\*\*\* refused the credentials"):
            repos.probe(repos.Repo(f"{url}/?expired"), {})


def test_offline_reads_what_zypper_cached(repo_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Offline, a remote repository is not contacted: its metadata in the zypper cache decides SP4's python."""
    import shutil

    from sles_ipa_builder.cache.store import cache_dir

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    url = "https://rmt.example.invalid/repo/SUSE/Updates/SLE-Module-Python3/15-SP4/x86_64/update/"
    cfg = config.resolve({"service_pack": "SP4", "images_dir": str(tmp_path), "repos": [url], "offline": "true"},
                         environ={})
    with pytest.raises(ConfigError, match="offline, and repository https://rmt.example.invalid/.* no cached metadata"):
        plan.settle(cfg)
    update = python311_metadata_repo(tmp_path)
    shutil.copytree(update / "repodata", cache_dir("zypper") / "raw" / repos.Repo(url).alias / "repodata")
    settled = plan.settle(cfg)
    assert settled.python == "python3.11"
