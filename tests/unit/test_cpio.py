"""cpio.py: byte-compatible with GNU cpio, round trips through `cpio -idm`, reproducible."""

from __future__ import annotations

import os
import socket
import stat
from pathlib import Path

import pytest

from sles_ipa_builder import run
from sles_ipa_builder.errors import BuildError
from sles_ipa_builder.packing import cpio

ROOT = os.geteuid() == 0


class Buf:
    def __init__(self) -> None:
        self.data = bytearray()

    def write(self, b: bytes | bytearray | memoryview) -> None:
        self.data += b


def pack_bytes(tree: Path, **kw: object) -> bytes:
    buf = Buf()
    cpio.write(cpio.scan(tree, **kw).entries, buf)  # type: ignore[arg-type]
    return bytes(buf.data)


def make_tree(root: Path) -> Path:
    root.mkdir()
    (root / "etc").mkdir()
    (root / "etc/hosts").write_text("127.0.0.1 localhost\n")
    (root / "empty").write_bytes(b"")
    (root / "big").write_bytes(os.urandom(cpio.SMALL_FILE + 12345))  # the chunked path
    (root / "usr/lib").mkdir(parents=True)
    (root / "usr/lib/a-b").write_text("dash sorts before slash")
    (root / "usr/lib/python3").mkdir()
    (root / "usr/lib/python3/x.py").write_text("print(1)\n")
    os.symlink("../etc/hosts", root / "usr/hosts-link")
    os.symlink("/absolute/target", root / "abs-link")
    # a hard-link group of three, spread over directories
    (root / "usr/bin").mkdir()
    (root / "usr/bin/tool").write_bytes(b"#!/bin/sh\necho tool\n")
    os.link(root / "usr/bin/tool", root / "usr/bin/tool-alias")
    os.link(root / "usr/bin/tool", root / "etc/tool-copy")
    os.mkfifo(root / "fifo")
    os.chmod(root / "usr/bin/tool", 0o4755)
    (root / "secret").write_text("x")
    os.chmod(root / "secret", 0o600)
    s = socket.socket(socket.AF_UNIX)
    s.bind(str(root / "sock"))
    s.close()
    if ROOT:
        os.mknod(root / "null", 0o666 | stat.S_IFCHR, os.makedev(1, 3))
        os.mknod(root / "loop0", 0o660 | stat.S_IFBLK, os.makedev(7, 0))
        os.chown(root / "secret", 1234, 5678)
        os.lchown(root / "abs-link", 42, 43)
    return root


def walk(root: Path) -> dict[str, tuple[object, ...]]:
    """Everything cpio -i can restore, per path (hard links as the sorted group of names)."""
    groups: dict[tuple[int, int], list[str]] = {}
    out: dict[str, tuple[object, ...]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for n in dirnames + filenames:
            p = Path(dirpath) / n
            rel = str(p.relative_to(root))
            st = p.lstat()
            extra: object = None
            if stat.S_ISREG(st.st_mode):
                extra = p.read_bytes()
                if st.st_nlink > 1:
                    groups.setdefault((st.st_dev, st.st_ino), []).append(rel)
            elif stat.S_ISLNK(st.st_mode):
                extra = os.readlink(p)
            elif stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
                extra = (os.major(st.st_rdev), os.minor(st.st_rdev))
            out[rel] = (st.st_mode, st.st_uid, st.st_gid, extra)
    for names in groups.values():
        for n in names:
            out[n] = out[n] + (tuple(sorted(names)),)
    return out


def test_byte_identical_to_gnu_cpio_reproducible(tmp_path: Path) -> None:
    """Without hard links, the archive is what `cpio -o -H newc --reproducible` writes for `find .`."""
    tree = tmp_path / "t"
    tree.mkdir()
    (tree / "a").write_text("hello")
    (tree / "big").write_bytes(os.urandom(2 * cpio.SMALL_FILE + 3))
    os.symlink("a", tree / "s")
    os.mkfifo(tree / "f")
    (tree / "sub").mkdir()
    (tree / "sub/x").write_text("x" * 7)
    (tree / "sub/y").write_text("")
    gnu = tmp_path / "gnu.cpio"
    with gnu.open("wb") as f:
        run.run(["sh", "-c", "find . -print | LC_ALL=C sort | cpio -o -H newc --reproducible --quiet"],
                cwd=tree, stdout=f)  # fmt: skip
    assert pack_bytes(tree) == gnu.read_bytes()


@pytest.mark.root
@pytest.mark.skipif(not ROOT, reason="needs root for owners and device nodes")
def test_round_trip_through_gnu_cpio(tmp_path: Path) -> None:
    tree = make_tree(tmp_path / "tree")
    archive = tmp_path / "out.cpio"
    archive.write_bytes(pack_bytes(tree))
    dest = tmp_path / "dest"
    dest.mkdir()
    with archive.open("rb") as f:
        run.run(["cpio", "-idm", "--no-absolute-filenames", "--quiet"], cwd=dest, input=f.read())
    want = walk(tree)
    del want["sock"]  # sockets are never packed
    got = walk(dest)
    assert got == want
    assert got["etc/tool-copy"][-1] == ("etc/tool-copy", "usr/bin/tool", "usr/bin/tool-alias")
    assert got["null"][-1] == (1, 3) and got["loop0"][-1] == (7, 0)
    assert (dest / "big").stat().st_mtime == int((tree / "big").stat().st_mtime)


def test_order_owners_links_and_trailer(tmp_path: Path) -> None:
    tree = make_tree(tmp_path / "tree")
    scan = cpio.scan(tree)
    names = [e.name for e in scan.entries]
    assert names[0] == b"."
    assert b"sock" not in names
    # children sorted bytewise per directory; a directory before its contents
    assert names.index(b"usr/lib") < names.index(b"usr/lib/a-b") < names.index(b"usr/lib/python3")
    group = [e for e in scan.entries if e.name in (b"etc/tool-copy", b"usr/bin/tool", b"usr/bin/tool-alias")]
    assert [e.nlink for e in group] == [3, 3, 3]
    assert [e.size for e in group] == [0, 0, len(b"#!/bin/sh\necho tool\n")]  # data with the last link
    data = pack_bytes(tree)
    assert len(data) % 512 == 0
    assert b"TRAILER!!!\0" in data
    inos = {}
    pos = 0
    while True:
        h = data[pos : pos + 110]
        f = [int(h[6 + 8 * i : 14 + 8 * i], 16) for i in range(13)]
        name = data[pos + 110 : pos + 110 + f[11] - 1]
        inos[name] = f[0]
        assert (pos + 110 + f[11] + (-(110 + f[11]) & 3)) % 4 == 0
        pos = (pos + 110 + f[11] + 3) & ~3
        pos = (pos + f[6] + 3) & ~3
        if name == b"TRAILER!!!":
            break
    assert inos[b"etc/tool-copy"] == inos[b"usr/bin/tool"] == inos[b"usr/bin/tool-alias"]
    others = [v for k, v in inos.items() if k not in (b"etc/tool-copy", b"usr/bin/tool-alias", b"TRAILER!!!")]
    assert len(others) == len(set(others))
    assert data[pos:].strip(b"\0") == b""


def test_same_tree_same_bytes_and_mtime_clamp(tmp_path: Path) -> None:
    tree = make_tree(tmp_path / "tree")
    assert pack_bytes(tree) == pack_bytes(tree)
    first = pack_bytes(tree, source_date_epoch=1_000_000)
    for dirpath, dirnames, filenames in os.walk(tree):
        for n in [*dirnames, *filenames, "."]:
            os.utime(Path(dirpath) / n, (2_000_000_000, 2_000_000_000), follow_symlinks=False)
    assert pack_bytes(tree, source_date_epoch=1_000_000) == first
    assert pack_bytes(tree) != first
    assert all(e.mtime <= 1_000_000 for e in cpio.scan(tree, source_date_epoch=1_000_000).entries)


def test_exclude_and_synthetic(tmp_path: Path) -> None:
    tree = make_tree(tmp_path / "tree")
    (tree / "dev").mkdir()
    (tree / "dev/stale").write_text("old")

    def exclude(rel: bytes, is_dir: bool) -> bool:
        return rel.startswith(b"usr/lib/")

    syn = {
        "init": cpio.Synthetic.symlink("./sbin/init"),
        "etc/hosts": cpio.Synthetic.file(b"replaced\n"),
        "dev/console": cpio.Synthetic.chardev(5, 1, 0o600),
        "new/deep/file": cpio.Synthetic.file(b"added"),
    }
    scan = cpio.scan(tree, exclude=exclude, synthetic=syn, source_date_epoch=7)
    by = {e.name: e for e in scan.entries}
    assert b"usr/lib" in by and b"usr/lib/a-b" not in by and b"usr/lib/python3" not in by
    assert by[b"init"].data == b"./sbin/init" and stat.S_ISLNK(by[b"init"].mode)
    assert by[b"etc/hosts"].data == b"replaced\n" and by[b"etc/hosts"].path is None
    assert by[b"dev/console"].rdev == (5, 1) and by[b"dev/console"].mode == stat.S_IFCHR | 0o600
    assert b"dev/stale" in by  # real content next to synthetic entries stays
    assert stat.S_ISDIR(by[b"new"].mode) and stat.S_ISDIR(by[b"new/deep"].mode)
    names = [e.name for e in scan.entries]
    assert names.index(b"new") < names.index(b"new/deep") < names.index(b"new/deep/file")
    assert by[b"init"].mtime == 7


@pytest.mark.root
@pytest.mark.skipif(not ROOT, reason="mounting a tmpfs needs root")
def test_other_filesystems_are_not_descended(tmp_path: Path) -> None:
    tree = make_tree(tmp_path / "tree")
    (tree / "proc").mkdir()
    try:
        run.run(["mount", "-t", "tmpfs", "none", tree / "proc"], capture=True)
    except Exception as e:  # noqa: BLE001 - no mount privilege in this sandbox
        pytest.skip(f"cannot mount: {e}")
    try:
        (tree / "proc/inside").write_text("x")
        names = [e.name for e in cpio.scan(tree).entries]
    finally:
        run.run(["umount", tree / "proc"])
    assert b"proc" in names and b"proc/inside" not in names


def test_file_changing_size_is_an_error(tmp_path: Path) -> None:
    tree = tmp_path / "t"
    tree.mkdir()
    (tree / "f").write_text("0123456789")
    scan = cpio.scan(tree)
    (tree / "f").write_text("01")
    with pytest.raises(BuildError, match="changed size"):
        cpio.write(scan.entries, Buf())
