"""The command line contract: verbs, exit codes, one-line errors, no tracebacks."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from sles_ipa_builder import run
from sles_ipa_builder.__main__ import main, parser
from sles_ipa_builder.config.settings import SETTINGS
from sles_ipa_builder.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]
VERBS = ["build", "summary", "doctor", "repos", "pack", "boot-test", "size-report", "clean", "fixtures"]


def test_every_verb_has_help(capsys):
    for verb in VERBS:
        with pytest.raises(SystemExit) as exc:
            main([verb, "--help"])
        assert exc.value.code == 0
        assert "usage:" in capsys.readouterr().out


def test_console_script_and_module_agree():
    out = run.output([sys.executable, "-m", "sles_ipa_builder", "--help"])
    assert "build" in out and "summary" in out


@pytest.mark.parametrize("env,fragment", [
    ({"IRONIC_SIZE_LIMIT_MB": "abc"}, "not a whole number"),
    ({"DIB_IPA_COMPRESS_CMD": "brotli-9000"}, "unknown compression"),
    ({"DIB_IPA_CERT": "/nonexistent.pem"}, "not a readable file"),
    ({"DIB_DEV_USER_PASSWORD": "secret-pw", "DIB_DEV_USER_USERNAME": ""}, "no user name"),
])
def test_bad_values_exit_2_with_one_line(env, fragment, tmp_path):
    full = {k: v for k, v in os.environ.items() if not k.startswith(("DIB_", "IPA_", "IRONIC_", "SIB_"))}
    full.update(env)
    res = run.run([sys.executable, "-m", "sles_ipa_builder", "build", "--workspace", str(tmp_path)],
                  env=full, check=False, capture=True)
    assert res.returncode == 2
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert lines[0].startswith("error: ") and fragment in lines[0]
    assert lines[1].startswith("hint: ")
    assert "Traceback" not in res.stderr
    assert "secret-pw" not in res.stderr + res.stdout


def test_flag_beats_environment(monkeypatch):
    from sles_ipa_builder.__main__ import cli_settings
    from sles_ipa_builder.config import resolve as config

    args = parser().parse_args(["summary", "--name", "flagged", "--no-boot-test", "--elements", "a", "b"])
    cli = cli_settings(args)
    cfg = config.resolve(cli, environ={"IPA_IMAGE_NAME": "env", "ENABLE_BOOTSTRAP_TEST": "true"})
    assert cfg.name == "flagged" and cfg.boot_test is False and cfg.elements == ["a", "b"]



def test_list_flags_take_several_words():
    """A row's `many` makes its flag take several words; the other list settings take one (quoted) word."""
    from sles_ipa_builder.__main__ import cli_settings

    assert [s.key for s in SETTINGS if s.many] == ["repos", "repo_credentials", "repo_keys", "elements",
                                                   "elements_path"]
    args = parser().parse_args(["summary", "--repo", "http://a", "http://b", "--repo-credentials", "/c", "/d",
                                "--elements", "x", "y", "--elements-path", "/e", "/f", "--keep-paths", "g h"])
    assert cli_settings(args) == {"repos": ["http://a", "http://b"], "repo_credentials": "/c:/d",
                                  "elements": ["x", "y"], "elements_path": "/e:/f", "keep_paths": "g h"}
    with pytest.raises(SystemExit):
        parser().parse_args(["summary", "--keep-paths", "g", "h"])

def test_readme_leads_to_every_setting():
    """The README links the settings reference, which names every setting (tests/test_docs.py keeps
    it current with the table)."""
    readme = (REPO / "README.md").read_text()
    page = (REPO / "docs/settings.md").read_text()
    assert "docs/settings.md" in readme
    for s in SETTINGS:
        assert f"`{s.key}`" in page, s.key
        for env in s.all_envs:
            assert env in page, env


def test_ci_calls_the_readme_test_command():
    assert "make test" in (REPO / ".ci" / "run").read_text()
    readme = (REPO / "README.md").read_text()
    assert "make test" in readme and "make demo" in readme


@pytest.mark.root  # the build checks for root before it reads its inputs
def test_missing_inputs_stop_before_any_work(tmp_path):
    tree = tmp_path / "tree"
    tree.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DIB_", "IPA_", "IRONIC_", "SIB_"))}
    res = run.run([sys.executable, "-m", "sles_ipa_builder", "build", "--workspace", str(tmp_path / "ws"),
                   "--base-tree", str(tree), "--iso", str(tmp_path / "missing.iso")],
                  env=env, check=False, capture=True)
    assert res.returncode == 2, res.stderr
    assert "error: Media1 ISO not found" in res.stderr
    assert not (tmp_path / "ws" / "build").exists()


@pytest.mark.root  # the build checks for root before it reads its inputs
@pytest.mark.parametrize("bad", ["image", "iso"])
def test_wrong_inputs_stop_before_any_work(tmp_path, bad):
    """A text file given as the qcow2 or the ISO: exit 2 naming it, the workspace untouched."""
    junk = tmp_path / "junk"
    junk.write_bytes(b"not a disk and not an ISO\n" * 4096)
    good_iso = tmp_path / "empty.iso"  # never read: the image check comes first
    good_iso.write_bytes(b"")
    args = ["--base-image", str(junk), "--iso", str(good_iso)] if bad == "image" else \
        ["--base-tree", str(tmp_path), "--iso", str(junk)]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DIB_", "IPA_", "IRONIC_", "SIB_"))}
    res = run.run([sys.executable, "-m", "sles_ipa_builder", "build", "--workspace", str(tmp_path / "ws"), *args],
                  env=env, check=False, capture=True)
    assert res.returncode == 2, res.stderr
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    want = "is not a disk image" if bad == "image" else "is not an ISO 9660 image"
    assert lines[0].startswith(f"error: {junk} {want}"), res.stderr
    assert lines[1].startswith("hint: ")
    assert "phase root" not in res.stdout + res.stderr
    assert not (tmp_path / "ws" / "build").exists()


def test_summary_json_without_side_effects(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DIB_", "IPA_", "IRONIC_", "SIB_"))}
    env["IPA_BUILD_WORKSPACE"] = str(tmp_path / "ws")
    env["DIB_DEV_USER_PASSWORD"] = "hunter2-secret"
    import json

    res = run.run([sys.executable, "-m", "sles_ipa_builder", "summary", "--json"], env=env, capture=True)
    doc = json.loads(res.stdout)
    assert doc["settings"]["dev_user_password"] == {"value": "***", "source": "env DIB_DEV_USER_PASSWORD"}
    names = [e["name"] for e in doc["elements"]]
    assert "sles" in names and "sles-ipa-install" in names
    scripts = [s["name"] for s in doc["steps"] if s["stage"] == "install"]
    assert scripts.index("01-package-installs") < scripts.index("60-ironic-python-agent-ramdisk-install")
    assert [s["stage"] for s in doc["steps"]][-1] == "outputs"  # packing and outputs are steps too
    assert "hunter2-secret" not in res.stdout + res.stderr
    assert not (tmp_path / "ws").exists()


def test_broken_environment_d_shows_its_error(tmp_path):
    el = tmp_path / "els" / "my-os"
    (el / "environment.d").mkdir(parents=True)
    (el / "element-provides").write_text("operating-system\n")
    (el / "environment.d" / "10-broken").write_text("export OK=1\nno_such_command_in_env_d\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DIB_", "IPA_", "IRONIC_", "SIB_"))}
    res = run.run([sys.executable, "-m", "sles_ipa_builder", "summary", "--elements", "my-os",
                   "--elements-path", str(tmp_path / "els")], env=env, check=False, capture=True)
    assert res.returncode == 2, res.stdout + res.stderr
    assert "no_such_command_in_env_d" in res.stdout + res.stderr  # the shell's own words, not just "failed"
    assert "error: sourcing the elements' environment.d files failed" in res.stdout + res.stderr


def test_install_type_chosen_in_environment_d(tmp_path):
    # DIB links install types after environment.d: an element may pick its own type there
    el = tmp_path / "els" / "my-os"
    for d in ("environment.d", "install.d/app-source-install", "install.d/app-package-install"):
        (el / d).mkdir(parents=True)
    (el / "element-provides").write_text("operating-system\n")
    (el / "environment.d" / "10-app").write_text("export DIB_INSTALLTYPE_app=package\n")
    for kind in ("source", "package"):
        script = el / f"install.d/app-{kind}-install/50-app-{kind}"
        script.write_text("#!/bin/sh\n")
        script.chmod(0o755)
    (el / "source-repository-app").write_text("app git /tmp/app https://example.com/app\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DIB_", "IPA_", "IRONIC_", "SIB_"))}
    res = run.run([sys.executable, "-m", "sles_ipa_builder", "summary", "--json", "--elements", "my-os",
                   "--elements-path", str(tmp_path / "els")], env=env, capture=True)
    import json

    doc = json.loads(res.stdout)
    assert [s["name"] for s in doc["steps"] if s["stage"] == "install"] == ["50-app-package"]
    assert doc["source_repositories"] == []  # a package install type fetches no source


def test_ipa_python_requirement_checked_before_the_package_installs(tmp_path):
    from types import SimpleNamespace

    from sles_ipa_builder.config import resolve as config
    from sles_ipa_builder.errors import ConfigError
    from sles_ipa_builder.steps import sles as slessteps

    src = tmp_path / "tmp/ironic-python-agent"
    src.mkdir(parents=True)
    (src / "setup.cfg").write_text("[metadata]\nname = ironic-python-agent\npython_requires = >=3.9\n")
    assert slessteps.python_floor(src) == ((3, 9), ">=3.9")
    (src / "pyproject.toml").write_text('[project]\nname = "ironic-python-agent"\nrequires-python = ">=3.11"\n')
    assert slessteps.python_floor(src) == ((3, 11), ">=3.11")  # pyproject.toml first, as pip reads it
    for sp, fails in (("SP4", True), ("SP5", False)):
        cfg = config.resolve({"service_pack": sp}, environ={})
        ctx = SimpleNamespace(root=tmp_path, cfg=cfg, env={"DIB_SLES_PYTHON": cfg.python})
        if fails:
            with pytest.raises(ConfigError, match=r"requires Python >=3.11, but SLE 15 SP4 gives .*python3.10"):
                slessteps.python_check_step(ctx, ctx)  # type: ignore[arg-type]
        else:
            slessteps.python_check_step(ctx, ctx)  # type: ignore[arg-type]
    (src / "pyproject.toml").write_text('[project]\nrequires-python = ">=3.12"\n')  # beyond any SLES 15 python
    cfg = config.resolve({"service_pack": "SP6"}, environ={})
    with pytest.raises(ConfigError) as exc:
        ns = SimpleNamespace(root=tmp_path, cfg=cfg, env={"DIB_SLES_PYTHON": cfg.python})
        slessteps.python_check_step(ns, ns)  # type: ignore[arg-type]
    assert "no SLES 15 python310/python311 satisfies it" in exc.value.hint


def test_build_takes_several_arches_each_with_its_metal3_name(tmp_path):
    from sles_ipa_builder.__main__ import cli_settings
    from sles_ipa_builder.cli import commands

    def configs(*flags):
        args = parser().parse_args(["build", "--workspace", str(tmp_path), *flags])
        return commands.per_arch(args, cli_settings(args))

    [one] = configs("--arch", "aarch64")
    assert one.arch.suse == "aarch64" and one.name == "ironic-python-agent_aarch64"
    both = configs("--arch", "x86_64,arm64", "--report", str(tmp_path / "r.json"))
    assert [(c.arch.suse, c.name) for c in both] == [("x86_64", "ironic-python-agent"),
                                                     ("aarch64", "ironic-python-agent_aarch64")]
    assert [c.report for c in both] == [tmp_path / "r.x86_64.json", tmp_path / "r.aarch64.json"]
    named = configs("--arch", "x86_64,aarch64", "--name", "ipa-sles")
    assert [c.name for c in named] == ["ipa-sles", "ipa-sles_aarch64"]  # one output directory, two names
    with pytest.raises(ConfigError, match="names an architecture twice"):
        configs("--arch", "x86_64,amd64")
    with pytest.raises(ConfigError, match="unknown architecture 'sparc'"):
        configs("--arch", "x86_64,sparc")
