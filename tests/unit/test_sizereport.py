"""sizereport.py: reads our and GNU cpio's initramfs in every compression, rpm sizes, diff."""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest
from rich.console import Console
from test_ramdisk import make_root, make_rpm_tree

from sles_ipa_builder import run
from sles_ipa_builder.errors import InputError
from sles_ipa_builder.packing import ramdisk, sizereport
from sles_ipa_builder.packing.compress import Compression


def text(renderable: object) -> str:
    c = Console(file=io.StringIO(), width=200)
    c.print(renderable)
    return c.file.getvalue()  # type: ignore[attr-defined]


@pytest.mark.parametrize("spec,kind", [("zstd", "zstd"), ("gzip", "gzip"), ("xz", "xz"), ("none", "plain")])
def test_report_on_a_packed_tree(tmp_path: Path, spec: str, kind: str) -> None:
    tree = make_root(tmp_path / "root")
    (tree / "usr/lib/modules/k/kernel").mkdir(parents=True)
    (tree / "usr/lib/modules/k/kernel/big.ko").write_bytes(os.urandom(300_000))
    out = tmp_path / "initrd"
    res = ramdisk.pack(tree, out, Compression.parse(spec), progress=False, check_kernel=False)
    rep = sizereport.analyze(out)
    assert rep.compression == kind and rep.entries == res.entries
    assert rep.files["usr/lib/modules/k/kernel/big.ko"] == 300_000
    assert rep.dirs["usr"] >= rep.dirs["usr/lib"] >= rep.dirs["usr/lib/modules"] >= 300_000
    assert "usr/lib/modules/k" not in rep.dirs  # depth <= 3
    assert rep.packages is None
    shown = text(sizereport.render(rep))
    assert "usr/lib/modules/k/kernel/big.ko" in shown and "Largest directories" in shown
    assert rep.modules() == {".ko": (1, 300_000)} and "1 .ko (0.3 MiB)" in shown


def test_kernel_modules_are_counted_by_compression(tmp_path: Path) -> None:
    """SLES ships .ko.zst; the report says how many modules of each kind and their bytes in the tree."""
    tree = make_root(tmp_path / "root")
    k = tree / "usr/lib/modules/6.4.0-default/kernel/drivers"
    k.mkdir(parents=True)
    for name, size in (("a.ko.zst", 1000), ("b.ko.zst", 3000), ("c.ko.xz", 500), ("d.ko", 700)):
        (k / name).write_bytes(os.urandom(size))
    (tree / "usr/lib/modules/6.4.0-default/modules.dep").write_text("kernel/drivers/a.ko.zst:\n")
    (tree / "usr/share").mkdir(exist_ok=True)
    (tree / "usr/share/not-a-module.ko").write_bytes(b"x" * 10)  # outside a modules tree
    out = tmp_path / "initrd"
    ramdisk.pack(tree, out, Compression.parse("zstd"), progress=False, check_kernel=False)
    rep = sizereport.analyze(out)
    assert rep.modules() == {".ko.zst": (2, 4000), ".ko.xz": (1, 500), ".ko": (1, 700)}
    assert sizereport.modules_line(rep.modules()) == "1 .ko (0.0 MiB), 1 .ko.xz (0.0 MiB), 2 .ko.zst (0.0 MiB)"
    plain = tmp_path / "plain"
    (k / "a.ko.zst").unlink()
    (k / "a.ko").write_bytes(os.urandom(4000))  # the same module, uncompressed: the old side
    ramdisk.pack(tree, plain, Compression.parse("zstd"), progress=False, check_kernel=False)
    d = sizereport.compare(sizereport.analyze(plain), rep)
    assert d.modules == (8200, 5200)
    assert "kernel modules" in text(sizereport.render_diff(d))


def test_report_on_gnu_cpio_with_dot_slash_names_and_a_plain_first_segment(tmp_path: Path) -> None:
    tree = tmp_path / "t"
    (tree / "kernel/x86/microcode").mkdir(parents=True)
    (tree / "kernel/x86/microcode/GenuineIntel.bin").write_bytes(b"u" * 1000)
    main = tmp_path / "main"
    (main / "etc").mkdir(parents=True)
    (main / "etc/passwd").write_text("root:x:0:0::/root:/bin/sh\n")
    blob = tmp_path / "initrd"
    with blob.open("wb") as f:
        run.run(["sh", "-c", "find . | cpio -o -H newc --quiet"], cwd=tree, stdout=f)
        f.flush()
        run.run(["sh", "-c", "find . | cpio -o -H newc --quiet | gzip"], cwd=main, stdout=f)
    rep = sizereport.analyze(blob)
    assert rep.compression == "plain+gzip"
    assert rep.files == {"kernel/x86/microcode/GenuineIntel.bin": 1000, "etc/passwd": 26}


def test_packages_and_diff(tmp_path: Path) -> None:
    old_tree = make_rpm_tree(tmp_path, make_root(tmp_path / "old"))
    old = tmp_path / "old.initramfs"
    ramdisk.pack(old_tree, old, Compression.parse("zstd"), progress=False)
    new_tree = make_root(tmp_path / "new")
    (new_tree / "usr/lib/firmware").mkdir(parents=True)
    (new_tree / "usr/lib/firmware/blob").write_bytes(b"f" * 2_000_000)
    new = tmp_path / "new.initramfs"
    ramdisk.pack(new_tree, new, Compression.parse("gzip"), progress=False)

    a, b = sizereport.analyze(old), sizereport.analyze(new)
    assert a.packages == {"tinypkg": 300000} and b.packages is None
    d = sizereport.compare(a, b)
    assert d.dirs[0] == ("usr/lib/firmware", 0, 2_000_000)
    assert ("usr/share/tinypkg", 300000, 0) in d.dirs
    assert d.packages == [("tinypkg", 300000, 0)]
    shown = text(sizereport.render_diff(d))
    assert "+1.91" in shown and "tinypkg" in shown


def test_not_an_initramfs(tmp_path: Path) -> None:
    p = tmp_path / "x"
    p.write_bytes(b"hello world")
    with pytest.raises(InputError, match="unknown magic"):
        sizereport.analyze(p)
    with pytest.raises(InputError):
        sizereport.analyze(tmp_path / "missing")


@pytest.mark.parametrize("spec", ["zstd", "gzip", "xz", "none"])
def test_truncated_initramfs_is_an_input_error(tmp_path: Path, spec: str) -> None:
    tree = make_root(tmp_path / "root")
    (tree / "big").write_bytes(os.urandom(200_000))
    out = tmp_path / "initrd"
    ramdisk.pack(tree, out, Compression.parse(spec), progress=False, check_kernel=False)
    whole = out.read_bytes()
    for cut in (150, len(whole) // 2, len(whole) - 600):  # inside the first header, mid-file, near the end
        part = tmp_path / f"cut-{cut}"
        part.write_bytes(whole[:cut])
        with pytest.raises(InputError, match="truncated|corrupt|damaged"):
            sizereport.analyze(part)
