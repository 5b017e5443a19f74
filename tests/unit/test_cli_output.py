"""Results on stdout, logs on stderr: each verb piped, as `summary | less` or `repos ISO > f` would.

Also `clean`, on an empty cache, a full one, and one whose lock files are held by a running build.
"""

from __future__ import annotations

import json
import os
import sys
import threading
from pathlib import Path

import pytest
from filelock import FileLock
from test_media import make_iso, repo_tree
from test_ramdisk import make_root

from sles_ipa_builder import run

KINDS = ("rootfs", "git", "zypper", "pip", "wheels", "hashes")


def sib(*argv: str | Path, cache: Path, check: bool = True) -> run.Result:
    """Run the CLI with stdout and stderr apart (both pipes: not a terminal) and an own cache."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DIB_", "IPA_", "IRONIC_", "SIB_"))}
    env["XDG_CACHE_HOME"] = str(cache)
    res = run.run([sys.executable, "-m", "sles_ipa_builder", *map(str, argv)], env=env, check=False, capture=True)
    if check:
        assert res.returncode == 0, res.stderr[-3000:]
    return res


def test_summary_pipes_its_tables(tmp_path: Path) -> None:
    res = sib("summary", "--workspace", tmp_path / "ws", cache=tmp_path / "c")
    out = res.stdout.splitlines()
    assert "# Configuration" in out and "# Elements" in out
    row = next(line for line in out if line.startswith("workspace "))
    assert str(tmp_path / "ws") in row and row.endswith("flag --workspace")
    assert any(line.startswith("# install ") for line in out)
    assert "─" not in res.stdout and "\x1b[" not in res.stdout  # plain text when piped
    assert "Configuration" not in res.stderr


def test_summary_json_is_stdout_only(tmp_path: Path) -> None:
    res = sib("summary", "--json", cache=tmp_path / "c")
    assert json.loads(res.stdout)["settings"]["name"]["value"] == "ironic-python-agent"


def test_repos_pipes_its_table(tmp_path: Path) -> None:
    iso = make_iso(tmp_path / "m.iso", repo_tree(tmp_path, ["Module-Basesystem", "Product-SLES"]))
    res = sib("repos", iso, cache=tmp_path / "c")
    lines = res.stdout.splitlines()
    assert lines[0] == f"# {iso}"
    assert any("Module-Basesystem" in line for line in lines[2:])
    assert "Module-Basesystem" not in res.stderr


def test_pack_and_size_report_pipe_their_results(tmp_path: Path) -> None:
    tree = make_root(tmp_path / "root")
    initramfs = tmp_path / "r.initramfs"
    res = sib("pack", tree, "-o", initramfs, cache=tmp_path / "c")
    assert res.stdout.startswith(f"{initramfs}: ") and "sha256" in res.stdout
    res = sib("size-report", initramfs, "--diff", initramfs, cache=tmp_path / "c")
    lines = res.stdout.splitlines()
    for title in ("# r.initramfs", "# Largest files", "# Size diff (MiB)"):
        assert title in lines, title
    assert "Largest" not in res.stderr


def _full_cache(cache: Path) -> Path:
    root = cache / "sles-ipa-builder"
    for kind in (*KINDS, "fixtures/abc"):
        (root / kind).mkdir(parents=True)
        (root / kind / "entry").write_text(kind)
    for lock in ("zypper.lock", "git/mirror.git.lock", "fixtures/.build.lock"):
        (root / lock).touch()
    return root


def test_clean_empty_cache(tmp_path: Path) -> None:
    res = sib("clean", "-ff", "--workspace", tmp_path / "ws", cache=tmp_path / "none")
    assert res.stdout.strip() == "nothing to remove"
    assert "Traceback" not in res.stderr


def test_clean_f_removes_the_build_tree_only(tmp_path: Path) -> None:
    root = _full_cache(tmp_path / "c")
    (tmp_path / "ws/build/root/etc").mkdir(parents=True)
    res = sib("clean", "-f", "--workspace", tmp_path / "ws", cache=tmp_path / "c")
    assert res.stdout.strip() == f"removed {tmp_path / 'ws/build'}"
    assert not (tmp_path / "ws/build").exists() and (tmp_path / "ws").is_dir()
    assert all((root / k / "entry").is_file() for k in KINDS)


def test_clean_ff_removes_caches_keeps_media_and_locks(tmp_path: Path) -> None:
    root = _full_cache(tmp_path / "c")
    res = sib("clean", "-ff", "--workspace", tmp_path / "ws", cache=tmp_path / "c")
    assert sorted(res.stdout.split()[1::2]) == sorted(str(root / k) for k in KINDS)
    assert sorted(p.name for p in root.iterdir()) == ["fixtures", "zypper.lock"]
    assert (root / "fixtures/abc/entry").is_file() and (root / "fixtures/.build.lock").is_file()
    again = sib("clean", "-ff", "--workspace", tmp_path / "ws", cache=tmp_path / "c")  # not the default /tmp/dib
    assert again.stdout.strip() == "nothing to remove"


def test_clean_ff_while_a_lock_is_held(tmp_path: Path) -> None:
    """A running build holds zypper.lock: clean still removes the caches and leaves its lock working."""
    root = _full_cache(tmp_path / "c")
    held, release = threading.Event(), threading.Event()

    def holder() -> None:
        with FileLock(str(root / "zypper.lock")):
            held.set()
            release.wait()

    t = threading.Thread(target=holder)
    t.start()
    held.wait()
    try:
        sib("clean", "-ff", "--workspace", tmp_path / "ws", cache=tmp_path / "c")  # not the default /tmp/dib
        assert not (root / "zypper").exists() and (root / "zypper.lock").is_file()
    finally:
        release.set()
        t.join()


def test_clean_without_force_removes_nothing(tmp_path: Path) -> None:
    root = _full_cache(tmp_path / "c")
    res = sib("clean", "--workspace", tmp_path / "ws", cache=tmp_path / "c")
    assert "nothing removed" in res.stdout
    assert all((root / k).is_dir() for k in KINDS)


@pytest.mark.parametrize("verb", ["summary", "repos", "size-report", "clean"])
def test_errors_stay_on_stderr(tmp_path: Path, verb: str) -> None:
    argv = {"summary": ["--size-limit-mb", "x"], "repos": [tmp_path / "no.iso"],
            "size-report": [tmp_path / "no.initramfs"], "clean": ["--compress", "nope"]}[verb]
    res = sib(verb, *argv, cache=tmp_path / "c", check=False)
    assert res.returncode == 2 and res.stdout == ""
    assert res.stderr.startswith("error: ")
