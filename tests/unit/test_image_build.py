"""image/build.py's pure parts: package list, tags, labels, podman's and tar's arguments."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("image_build", REPO / "image" / "build.py")
assert _spec and _spec.loader
build = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(build)


def test_runtime_packages_follow_the_makefile_without_test_only_ones():
    apt = build.makefile_packages()
    assert {"python3-guestfs", "libguestfs-tools", "linux-image-amd64", "zypper", "skopeo"} <= set(apt)
    run = build.runtime_packages(apt)
    assert not build.TEST_ONLY & set(run)
    assert {"qemu-system-x86", "qemu-system-arm", "qemu-user-static", "qemu-efi-aarch64", "util-linux"} <= set(run)
    assert len(run) == len(set(run))


def test_makefile_parse_joins_continued_lines(tmp_path):
    mk = tmp_path / "Makefile"
    mk.write_text("X := 1\nAPT_PACKAGES := a b \\\n\tc d\nOTHER := e\n")
    assert build.makefile_packages(mk) == ["a", "b", "c", "d"]


def test_tags_carry_version_and_short_commit():
    commit = "0123456789abcdef0123456789abcdef01234567"
    name = "localhost/sles-ipa-builder"
    assert build.tags("0.1.0", commit) == [f"{name}:0.1.0-0123456", f"{name}:latest"]
    assert build.tags("0.1.0", commit, dirty=True)[0].endswith(":0.1.0-0123456-dirty")


def test_version_is_the_packages():
    from sles_ipa_builder import __version__

    assert build.version() == __version__


def test_labels_and_changes():
    commit = "f" * 40
    lab = build.labels("1.2.3", commit, 0)
    assert lab["org.opencontainers.image.version"] == "1.2.3"
    assert lab["org.opencontainers.image.revision"] == commit
    assert lab["org.opencontainers.image.created"] == "1970-01-01T00:00:00Z"
    ch = build.changes("1.2.3", commit, 0)
    assert ch[0] == 'ENTRYPOINT ["sles-ipa-builder"]'
    assert "WORKDIR /out" in ch
    env = dict(c[4:].split("=", 1) for c in ch if c.startswith("ENV "))
    assert env["PATH"].startswith("/opt/sles-ipa-builder/bin:")
    assert env["XDG_CACHE_HOME"] == "/cache"
    assert "LIBGUESTFS_BACKEND_SETTINGS" not in env  # KVM when given, the tool falls back to TCG itself
    label = next(c for c in ch if "image.description" in c)
    assert json.loads(label.split("=", 1)[1]) == lab["org.opencontainers.image.description"]


def test_import_argv_passes_each_change_and_reads_stdin():
    argv = build.import_argv("localhost/sles-ipa-builder:x", "1", "a" * 40, 0)
    assert argv[:3] == ["podman", "import", "--quiet"]
    assert argv[-2:] == ["-", "localhost/sles-ipa-builder:x"]
    assert argv.count("--change") == len(build.changes("1", "a" * 40, 0))


def test_tar_is_sorted_numeric_and_clamped(tmp_path):
    argv = build.tar_argv(tmp_path, 1700000000)
    assert {"--sort=name", "--numeric-owner", "--mtime=@1700000000", "--clamp-mtime"} <= set(argv)
    assert argv[argv.index("-C") + 1] == str(tmp_path)


def test_downloads_follow_xdg_cache_home(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert build.downloads() == tmp_path / "sles-ipa-builder" / "image-downloads"
