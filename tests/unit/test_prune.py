"""What the packer leaves out of the ramdisk: the prune rules, the precompiled .pyc files it keeps,
the user's keep and extra globs, and the report of each rule (ramdisk.Prune)."""

from __future__ import annotations

import py_compile
import stat
from pathlib import Path

from test_ramdisk import KVER, NONE, make_root, names_in

from sles_ipa_builder.config import resolve as config
from sles_ipa_builder.packing import ramdisk
from sles_ipa_builder.packing.cuts import PruneSettings


def test_prune_semantics_full(tmp_path: Path) -> None:
    tree = make_root(tmp_path / "root")
    out = tmp_path / "out/initrd"
    ramdisk.pack(tree, out, NONE, progress=False)
    names = names_in(out)
    for kept_empty in ("tmp", "sys", "boot", "var/log", "var/cache", "usr/share/doc", "usr/lib/locale"):
        assert stat.S_ISDIR(names[kept_empty].mode), kept_empty
        assert not [n for n in names if n.startswith(kept_empty + "/")], kept_empty
    assert "root/.cache" not in names and "root/.profile" in names
    assert "usr/share/misc/magic" not in names and "usr/share/misc/other" in names
    assert "usr/lib64/python3.6/__pycache__/os.cpython-36.pyc" not in names
    assert "usr/lib64/python3.6/encodings/__pycache__/utf_8.cpython-36.pyc" in names
    assert "usr/lib64/python3.6/encodings/utf_8.pyo" not in names
    babel = "opt/ironic-python-agent/lib/python3.6/site-packages/babel"
    assert f"{babel}/locale-data" in names and f"{babel}/locale-data/de.dat" not in names
    assert f"{babel}/core.py" in names
    assert "var/lib/misc/keep" in names


def test_prune_rules_for_what_the_agent_never_runs(tmp_path: Path) -> None:
    """udev's hwdb, venv wheels, packages' test suites, netaddr's registries, qemu-tools but qemu-img,
    and iconv's converters but the FAT code pages and Latin-1 stay out; minimal prune keeps them."""
    tree = make_root(tmp_path / "root")
    site = "opt/ironic-python-agent/lib/python3.11/site-packages"
    gconv = "usr/lib/x86_64-linux-gnu/gconv"
    out_ = ["usr/lib/udev/hwdb.bin", "usr/share/python-wheels/pip-23.0.1-py3-none-any.whl",
            "usr/lib64/python3.11/ensurepip/_bundled/pip-24.0-py3-none-any.whl", f"{site}/oslo_utils/tests/test_x.py",
            f"{site}/netaddr/eui/oui.txt", "usr/bin/qemu-nbd", "usr/bin/qemu-io", f"{gconv}/KOI8-R.so",
            "usr/lib64/gconv/EUC-JP.so"]
    stay = ["usr/bin/qemu-img", f"{site}/netaddr/eui/oui.idx", f"{site}/oslo_utils/strutils.py",
            f"{gconv}/gconv-modules", f"{gconv}/gconv-modules.d/gconv-modules-extra.conf", f"{gconv}/IBM850.so",
            f"{gconv}/IBM437.so", f"{gconv}/ISO8859-1.so", "usr/lib64/gconv/gconv-modules.cache"]
    for rel in out_ + stay:
        (tree / rel).parent.mkdir(parents=True, exist_ok=True)
        (tree / rel).write_bytes(b"x" * 10)
    ramdisk.pack(tree, tmp_path / "full", NONE, progress=False)
    names = names_in(tmp_path / "full")
    assert [r for r in out_ if r in names] == [] and [r for r in stay if r not in names] == []
    ramdisk.pack(tree, tmp_path / "minimal", NONE, prune=PruneSettings(minimal=True), progress=False)
    names = names_in(tmp_path / "minimal")
    assert [r for r in out_ + stay if r not in names] == []


def test_prune_semantics_minimal(tmp_path: Path) -> None:
    tree = make_root(tmp_path / "root")
    out = tmp_path / "initrd"
    ramdisk.pack(tree, out, NONE, prune=PruneSettings(minimal=True), progress=False)
    names = names_in(out)
    assert "usr/share/doc/pkg/README" in names and "var/log/messages" in names
    assert "usr/share/misc/magic" in names
    assert "tmp/junk" not in names and "boot/config-" + KVER not in names and "root/.cache" not in names
    assert "usr/lib64/python3.6/__pycache__/os.cpython-36.pyc" not in names



def test_only_unchecked_hash_pyc_files_are_packed(tmp_path: Path) -> None:
    """A timestamp or checked .pyc is stale or useless once mtimes are clamped; an unchecked one is kept."""
    tree = make_root(tmp_path / "root")
    site = tree / "opt/ironic-python-agent/lib/python3.11/site-packages"
    modes = {"timestamp": py_compile.PycInvalidationMode.TIMESTAMP,
             "checked": py_compile.PycInvalidationMode.CHECKED_HASH,
             "unchecked": py_compile.PycInvalidationMode.UNCHECKED_HASH}
    pycs = {}
    for name, mode in modes.items():
        src = site / f"{name}.py"
        src.parent.mkdir(parents=True, exist_ok=True)
        src.write_text(f"WHO = {name!r}\n")
        pycs[name] = Path(py_compile.compile(str(src), invalidation_mode=mode, doraise=True)).relative_to(tree)
    out = tmp_path / "initrd"
    ramdisk.pack(tree, out, NONE, progress=False)
    names = names_in(out)
    assert [n for n, rel in pycs.items() if str(rel) in names] == ["unchecked"]
    assert names[str(pycs["unchecked"])].size == (tree / pycs["unchecked"]).stat().st_size


def test_each_prune_rule_reports_what_it_left_out(tmp_path: Path) -> None:
    tree = make_root(tmp_path / "root")
    extra = {"usr/lib/x86_64-linux-gnu/libc.a": 5000, "usr/lib/udev/hwdb.d/20-pci.hwdb": 700,
             "usr/lib/udev/hwdb.bin": 900}
    for rel, size in extra.items():
        (tree / rel).parent.mkdir(parents=True, exist_ok=True)
        (tree / rel).write_bytes(b"x" * size)
    result = ramdisk.pack(tree, tmp_path / "initrd", NONE, progress=False)
    names = names_in(tmp_path / "initrd")
    assert "usr/lib/udev/hwdb.bin" not in names
    assert "usr/lib/x86_64-linux-gnu/libc.a" not in names and "usr/lib/udev/hwdb.d/20-pci.hwdb" not in names
    report = {c.rule: (c.files, c.bytes) for c in result.pruned}
    assert report["left out usr/lib*/*.a"] == (1, 5000)
    assert report["left out usr/lib/udev/hwdb.d/*"] == (1, 700)
    assert report["left out usr/lib/udev/hwdb.bin"] == (1, 900)
    assert report["left out usr/share/doc/*"] == (1, len(b"doc"))  # the files under the pruned directory
    assert report[f"left out {ramdisk.PYC_RULE}"] == (2, len(b"pyc") + len(b"pyo"))
    assert [c.bytes for c in result.pruned] == sorted((c.bytes for c in result.pruned), reverse=True)


def test_kept_and_extra_paths(tmp_path: Path) -> None:
    tree = make_root(tmp_path / "root")
    (tree / "usr/share/doc/other").mkdir()
    (tree / "usr/share/doc/other/NEWS").write_bytes(b"news")
    (tree / "usr/lib/firmware/big").mkdir(parents=True)
    (tree / "usr/lib/firmware/big/fw.bin").write_bytes(b"fw")
    prune = PruneSettings(keep=("usr/share/doc/pkg/*", "var/log/messages"), more=("usr/lib/firmware/big/*",))
    result = ramdisk.pack(tree, tmp_path / "initrd", NONE, prune=prune, progress=False)
    names = names_in(tmp_path / "initrd")
    assert "usr/share/doc/pkg/README" in names and "var/log/messages" in names  # kept under pruned dirs
    assert "usr/share/doc/other/NEWS" not in names and "usr/lib/firmware/big/fw.bin" not in names
    assert {c.rule: c.files for c in result.pruned}["left out usr/lib/firmware/big/*"] == 1
    cfg = config.resolve(cli={"keep_paths": "usr/share/doc/pkg/*", "prune_paths": "a/* b/*"}, environ={})
    assert cfg.prune == PruneSettings(False, ("usr/share/doc/pkg/*",), ("a/*", "b/*"))
