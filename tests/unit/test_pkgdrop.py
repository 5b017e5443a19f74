"""Package groups leaving the tree before packing, and the libraries only they linked (pkgdrop.py,
elfdeps.py). The trees hold real ELF files copied from the host, so the links are real."""

from __future__ import annotations

import os
import shutil
import stat
import sysconfig
from pathlib import Path

import pytest

from sles_ipa_builder.config import resolve as config
from sles_ipa_builder.errors import ConfigError
from sles_ipa_builder.packing import inventory
from sles_ipa_builder.steps import elfdeps, pkgdrop

MULTIARCH = sysconfig.get_config_var("MULTIARCH") or "x86_64-linux-gnu"
LIBDIR = f"usr/lib/{MULTIARCH}"
# What the host's binaries link (Debian 12): zstd links libz, liblzma, liblz4; xz links liblzma.
LIBS = ("libc.so.6", "libz.so.1", "liblzma.so.5", "liblz4.so.1")


def _copy_lib(tree: Path, soname: str) -> None:
    """The host's library under its real file name, and the soname link to it, as a package lays them."""
    real = Path(os.path.realpath(f"/{LIBDIR}/{soname}"))
    shutil.copy2(real, tree / LIBDIR / real.name)
    if real.name != soname:
        (tree / LIBDIR / soname).symlink_to(real.name)


def _script(path: Path, text: str) -> None:
    path.write_text(text)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)


def _dpkg(tree: Path, package: str, *paths: str) -> None:
    info = tree / "var/lib/dpkg/info"
    info.mkdir(parents=True, exist_ok=True)
    (info / f"{package}.list").write_text("".join(p + "\n" for p in paths))


def make_tree(base: Path) -> Path:
    """A merged-/usr tree: `zypper` (the host's zstd) and `xz`, the libraries they link, perl with a
    script run under it, and dpkg's file lists for zypper and perl."""
    for d in (LIBDIR, "usr/bin", "usr/share/zypper", "usr/share/perl/5.36", "var/lib/zypp", "etc/zypp"):
        (base / d).mkdir(parents=True)
    (base / "lib").symlink_to("usr/lib")
    (base / "bin").symlink_to("usr/bin")
    for lib in LIBS:
        _copy_lib(base, lib)
    shutil.copy2("/usr/bin/zstd", base / "usr/bin/zypper")
    shutil.copy2("/usr/bin/xz", base / "usr/bin/xz")
    shutil.copy2("/usr/bin/gzip", base / "usr/bin/perl")
    (base / "usr/share/zypper/zypper.conf").write_text("[main]\n")
    (base / "usr/share/perl/5.36/strict.pm").write_text("1;\n")
    (base / "var/lib/zypp/AnonymousUniqueId").write_text("x\n")
    (base / "etc/zypp/zypp.conf").write_text("[main]\n")
    _script(base / "usr/bin/dirsplit", "#!/usr/bin/perl -w\nprint 1;\n")
    _script(base / "usr/bin/hello", "#!/bin/sh\necho hello\n")
    # dpkg lists directories too, and paths through the /lib link: neither may go
    _dpkg(base, "zypper", "/.", "/usr", "/usr/bin", "/usr/bin/zypper", "/lib", "/usr/share/zypper",
          "/usr/share/zypper/zypper.conf")
    _dpkg(base, "perl-base", "/usr/bin", "/usr/bin/perl")
    _dpkg(base, "perl-modules-5.36", "/usr/share/perl/5.36", "/usr/share/perl/5.36/strict.pm")
    _dpkg(base, "xz-utils", "/usr/bin/xz")
    (base / "usr/bin/gpgv").write_bytes(b"\x7fELF not really")
    (base / "usr/lib/systemd/user").mkdir(parents=True)
    (base / "usr/lib/systemd/user/gpg-agent.socket").write_text("[Socket]\n")
    wants = base / "etc/systemd/user/sockets.target.wants"
    wants.mkdir(parents=True)
    (wants / "gpg-agent.socket").symlink_to("/usr/lib/systemd/user/gpg-agent.socket")
    _dpkg(base, "gpgv", "/usr/bin/gpgv")  # apt's signature checks: leaves with the package managers
    _dpkg(base, "gpg-agent", "/usr/lib/systemd/user/gpg-agent.socket")
    return base


def test_the_graph_resolves_links_through_the_trees_own_paths(tmp_path: Path) -> None:
    tree = make_tree(tmp_path / "t")
    graph = elfdeps.Graph(tree)
    names = {os.path.basename(p) for p in graph.edges["usr/bin/zypper"]}
    assert {os.path.basename(os.path.realpath(f"/{LIBDIR}/{lib}")) for lib in LIBS} == names
    assert {os.path.basename(p) for p in graph.edges["usr/bin/xz"]} == {
        os.path.basename(os.path.realpath(f"/{LIBDIR}/{lib}")) for lib in ("libc.so.6", "liblzma.so.5")}
    assert "usr/bin/dirsplit" not in graph.edges  # a script is no ELF
    assert elfdeps.real(tree, "lib/" + MULTIARCH + "/libz.so.1") == str(
        Path(LIBDIR, os.path.basename(os.path.realpath(f"/{LIBDIR}/libz.so.1"))))


def test_package_manager_and_perl_leave_with_the_libraries_only_they_linked(tmp_path: Path) -> None:
    tree = make_tree(tmp_path / "t")
    done = {c.rule.split(" (")[0]: c for c in pkgdrop.drop(tree, pkgdrop.DROP_GROUPS)}
    for gone in ("usr/bin/zypper", "usr/share/zypper", "var/lib/zypp", "etc/zypp", "var/lib/dpkg",
                 "usr/bin/perl", "usr/share/perl/5.36/strict.pm", "usr/bin/dirsplit", "usr/bin/gpgv",
                 f"{LIBDIR}/libz.so.1", f"{LIBDIR}/liblz4.so.1"):  # fmt: skip
        assert not (tree / gone).exists() and not (tree / gone).is_symlink(), gone
    for stays in ("usr/bin/xz", "usr/bin/hello", f"{LIBDIR}/liblzma.so.5", f"{LIBDIR}/libc.so.6", "usr/bin", "usr"):
        assert (tree / stays).exists(), stays
    assert (tree / "lib").is_symlink() and (tree / "bin").is_symlink()  # dpkg listed /lib: a link to a directory stays
    assert not (tree / "etc/systemd/user/sockets.target.wants").exists()  # the enablement link of a unit that left
    assert done["packages: package-manager"].files >= 5 and done["packages: package-manager"].bytes > 10_000
    assert done["packages: perl"].files == 3  # perl, its module, the script that runs under it
    libs = done["shared libraries only the dropped packages linked"]
    assert libs.files == 2 and libs.bytes > 10_000  # libz and liblz4 (their soname links go too)


def test_a_perl_script_the_agent_runs_keeps_perl(tmp_path: Path) -> None:
    tree = make_tree(tmp_path / "t")
    _script(tree / "usr/bin/mdadm", "#!/usr/bin/perl\n")  # mdadm is one of the agent's core tools
    cuts = pkgdrop.drop(tree, ("perl",))
    assert (tree / "usr/bin/perl").exists() and (tree / "usr/bin/dirsplit").exists()
    assert cuts[0].rule == "packages: perl (kept: the agent runs mdadm (/usr/bin/mdadm))" and cuts[0].files == 0


def test_kept_paths_stay_and_so_do_the_libraries_they_link(tmp_path: Path) -> None:
    tree = make_tree(tmp_path / "t")
    pkgdrop.drop(tree, ("package-manager",), keep=("usr/bin/zypper", "etc/zypp"))
    assert (tree / "usr/bin/zypper").exists() and (tree / "etc/zypp/zypp.conf").exists()
    assert (tree / f"{LIBDIR}/liblz4.so.1").exists()  # zypper still links it
    assert not (tree / "usr/share/zypper").exists() and (tree / "usr/bin/perl").exists()


@pytest.fixture
def fake_rpm(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An `rpm` on PATH: a database with libzypp (one library file) and bash, answering the file
    query and the package table in the query's shape (the first word is the name)."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    _script(bindir / "rpm", "#!/bin/sh\ncase \"$*\" in\n"
            "  *FILENAMES*) printf 'libzypp /usr/lib64/libzypp.so.1735\\nbash /usr/bin/bash\\n';;\n"
            "  *-qa*) printf 'libzypp libzypp\\t0\\t17.35\\t1.1\\tx86_64\\t9000\\tGPL-2.0-or-later\\n"
            "bash bash\\t0\\t4.4\\t9.1\\tx86_64\\t1000\\tGPL-3.0-or-later\\n';;\n"
            "  *) exit 1;;\nesac\n")  # fmt: skip
    monkeypatch.setenv("PATH", f"{bindir}:{os.environ['PATH']}")


def test_the_rpm_list_is_kept_in_the_tree_when_the_database_goes(tmp_path: Path, fake_rpm: None) -> None:
    tree = make_tree(tmp_path / "t")
    (tree / "usr/lib64").mkdir()
    (tree / "usr/lib64/libzypp.so.1735").write_bytes(b"not an ELF: still the package's file")
    (tree / "usr/bin/bash").write_bytes(b"bash")
    db = tree / "usr/lib/sysimage/rpm"
    db.mkdir(parents=True)
    (db / "rpmdb.sqlite").write_bytes(b"read by the fake rpm")
    cuts = pkgdrop.drop(tree, ("package-manager",))
    assert "libzypp" in cuts[0].rule and not (tree / "usr/lib64/libzypp.so.1735").exists()
    assert (tree / "usr/bin/bash").exists() and not db.exists()
    assert inventory.find_rpmdb(tree) is None
    rows = inventory.rpm_table(tree)  # now from the list in the tree
    assert rows == [["bash", "0", "4.4", "9.1", "x86_64", "1000", "GPL-3.0-or-later"],
                    ["libzypp", "0", "17.35", "1.1", "x86_64", "9000", "GPL-2.0-or-later"]]
    assert inventory.list_packages(tree).splitlines()[1:3] == ["bash-4.4-9.1.x86_64", "libzypp-17.35-1.1.x86_64"]


def test_drop_packages_takes_only_known_groups() -> None:
    assert config.resolve(cli={}, environ={}).drop_packages == ["package-manager", "perl"]
    assert config.resolve(cli={}, environ={"SIB_DROP_PACKAGES": ""}).drop_packages == []
    with pytest.raises(ConfigError, match="python"):
        config.resolve(cli={"drop_packages": "perl python"}, environ={})
