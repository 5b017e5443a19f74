"""cache.py: paths, hashing with its index, lookups that say why they missed, locks, atomic writes."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest

from sles_ipa_builder.cache import store as cache


@pytest.fixture(autouse=True)
def own_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))


def test_paths(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert cache.cache_root() == tmp_path / "xdg/sles-ipa-builder"
    assert cache.cache_dir("git").is_dir()
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache.cache_root() == tmp_path / "home/.cache/sles-ipa-builder"


def test_file_sha256_is_remembered(tmp_path: Path) -> None:
    f = tmp_path / "img"
    f.write_bytes(b"a" * 3_000_000)
    import hashlib

    want = hashlib.sha256(b"a" * 3_000_000).hexdigest()
    assert cache.file_sha256(f) == want
    # same (size, mtime, inode): the index answers without reading (prove it by changing bytes in place)
    st = f.stat()
    with f.open("r+b") as fh:
        fh.write(b"b")
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert cache.file_sha256(f) == want
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns + 1))  # a new mtime: hashed again
    assert cache.file_sha256(f) != want


def test_sha256_uncached_reads_every_time(tmp_path: Path) -> None:
    f = tmp_path / "staged"
    f.write_bytes(b"a" * 1000)
    first = cache.sha256_uncached(f)
    st = f.stat()
    with f.open("r+b") as fh:
        fh.write(b"b")
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))  # the same stamp file_sha256 would trust
    assert cache.sha256_uncached(f) != first
    assert not (cache.cache_root() / "hashes").exists()  # nothing remembered


def test_lookup_reasons(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("INFO")
    first = cache.lookup("rootfs", "aaaa", subject="/img", what="image hash", suffix=".tar.zst")
    assert not first.hit and first.reason == "not cached yet"
    first.path.write_bytes(b"x")
    cache.remember("rootfs", "/img", "aaaa")
    assert cache.lookup("rootfs", "aaaa", subject="/img", suffix=".tar.zst").hit
    assert "cache hit: rootfs /img" in caplog.text
    assert cache.lookup("rootfs", "aaaa", subject="/img", suffix=".tar.zst", force=True).reason == "--force"
    new = cache.lookup("rootfs", "bbbb", subject="/img", what="image hash", suffix=".tar.zst")
    assert new.reason == "new image hash (aaaa → bbbb)"
    first.path.unlink()
    assert cache.lookup("rootfs", "aaaa", subject="/img").reason == "entry missing (removed from the cache)"
    assert "cache miss: rootfs /img: entry missing" in caplog.text


def test_atomic_path_only_on_success(tmp_path: Path) -> None:
    final = tmp_path / "entry"
    with pytest.raises(RuntimeError):
        with cache.atomic_path(final) as tmp:
            tmp.write_text("half")
            raise RuntimeError("boom")
    assert not final.exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".entry")] == []
    with cache.atomic_path(final) as tmp:
        tmp.write_text("whole")
    assert final.read_text() == "whole"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".entry")] == []


def test_locked_serialises(tmp_path: Path) -> None:
    order: list[str] = []

    def other() -> None:
        with cache.locked(tmp_path / "e"):
            order.append("other")

    with cache.locked(tmp_path / "e"):
        t = threading.Thread(target=other)
        t.start()
        time.sleep(0.3)
        order.append("first")
    t.join()
    assert order == ["first", "other"]


def test_locked_times_out(tmp_path: Path) -> None:
    from sles_ipa_builder.errors import BuildError

    done = threading.Event()
    release = threading.Event()

    def holder() -> None:
        with cache.locked(tmp_path / "e"):
            done.set()
            release.wait()

    t = threading.Thread(target=holder)
    t.start()
    done.wait()
    # filelock is re-entrant within a thread but not across threads: this one must wait and give up
    with pytest.raises(BuildError, match="locked by another build"):
        with cache.locked(tmp_path / "e", timeout=0.2):
            pass
    release.set()
    t.join()


def test_clean(tmp_path: Path) -> None:
    cache.cache_dir("rootfs")
    cache.cache_dir("git")
    with cache.locked(cache.cache_dir("zypper")):
        assert cache.clean(keep=("git",)) == [cache.cache_root() / k for k in ("rootfs", "zypper")]
    assert sorted(p.name for p in cache.cache_root().iterdir()) == ["git", "zypper.lock"]
    assert cache.clean() == [cache.cache_root() / "git"]
    assert cache.clean() == []
