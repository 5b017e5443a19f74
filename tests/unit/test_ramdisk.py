"""ramdisk.py: prune semantics, synthetic members, kernel pick, artifacts, size limit, atomicity."""

from __future__ import annotations

import hashlib
import io
import json
import os
import stat
import tarfile
from pathlib import Path

import pytest
from conftest import write_artifacts

from sles_ipa_builder import run
from sles_ipa_builder.cache import store as cache
from sles_ipa_builder.delivery import artifacts as outputs
from sles_ipa_builder.errors import BuildError, CommandError, ConfigError, InputError
from sles_ipa_builder.packing import cpioread, inventory, ramdisk
from sles_ipa_builder.packing.compress import Compression

KVER = "5.14.21-150400.22-default"
NONE = Compression.parse("none")
SITE = "opt/ironic-python-agent/lib/python3.6/site-packages"


def make_root(base: Path, *, rd_zstd: str = "y") -> Path:
    """A small SLES-shaped tree: /boot with kernel and config, prunable junk, a venv."""
    files = {
        f"boot/vmlinuz-{KVER}": b"KERNEL-NEW",
        "boot/vmlinuz-5.3.18-57-default": b"KERNEL-OLD",
        f"boot/config-{KVER}": b"CONFIG_RD_GZIP=y\nCONFIG_RD_ZSTD=%b\n# CONFIG_RD_XZ is not set\n"
        % rd_zstd.encode(),
        "etc/fstab": b"LABEL=ROOT / ext4 defaults 0 1\n",
        "etc/os-release": b'NAME="SLES"\n',
        "usr/lib/systemd/systemd": b"\x7fELF systemd",
        "tmp/junk": b"x",
        "sys/kernel/x": b"x",
        "root/.cache/pip/x": b"x",
        "root/.profile": b"# profile",
        "var/log/messages": b"log",
        "var/cache/zypp/x": b"x",
        "var/lib/misc/keep": b"keep",
        "usr/share/doc/pkg/README": b"doc",
        "usr/share/man/man1/ls.1.gz": b"man",
        "usr/share/misc/magic": b"magic",
        "usr/share/misc/other": b"other",
        "usr/lib/locale/C.utf8/LC_CTYPE": b"locale",
        "usr/lib64/python3.6/os.py": b"import sys\n",
        "usr/lib64/python3.6/__pycache__/os.cpython-36.pyc": b"pyc",
        "usr/lib64/python3.6/encodings/__pycache__/utf_8.cpython-36.pyc": b"pyc",
        "usr/lib64/python3.6/encodings/utf_8.pyo": b"pyo",
        "opt/ironic-python-agent/lib/python3.6/site-packages/babel/locale-data/de.dat": b"babel",
        "opt/ironic-python-agent/lib/python3.6/site-packages/babel/core.py": b"babel",
        f"{SITE}/ironic_python_agent-9.1.0.dist-info/METADATA": (
            b"Metadata-Version: 2.1\nName: ironic-python-agent\nVersion: 9.1.0\n\nName: not-a-header\n"
        ),
        f"{SITE}/Babel-2.9.1.dist-info/METADATA": b"Metadata-Version: 2.1\nName: Babel\nVersion: 2.9.1\n",
    }
    for rel, data in files.items():
        p = base / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
    (base / "boot/vmlinuz").symlink_to(f"/boot/vmlinuz-{KVER}")  # absolute: must resolve in the tree
    (base / "sbin").mkdir()
    (base / "sbin/init").symlink_to("../usr/lib/systemd/systemd")
    (base / "dev").mkdir()
    (base / "proc").mkdir()
    return base


def names_in(initramfs: Path) -> dict[str, cpioread.Member]:
    with initramfs.open("rb") as f:
        return {m.name: m for m in cpioread.members(cpioread.Reader(f))}


@pytest.mark.root  # cpio -i makes the device nodes
def test_synthetic_members(tmp_path: Path) -> None:
    tree = make_root(tmp_path / "root")
    out = tmp_path / "initrd"
    ramdisk.pack(tree, out, NONE, progress=False)
    dest = tmp_path / "x"
    dest.mkdir()
    run.run(["cpio", "-idm", "--no-absolute-filenames", "--quiet"], cwd=dest, input=out.read_bytes())
    assert os.readlink(dest / "init") == "./sbin/init"
    assert (dest / "etc/fstab").read_text() == "#disabled\n"
    for node, dev, perm in (
        ("console", (5, 1), 0o600),
        ("null", (1, 3), 0o666),
        ("random", (1, 8), 0o666),
        ("urandom", (1, 9), 0o666),
    ):
        st = (dest / "dev" / node).lstat()
        assert stat.S_ISCHR(st.st_mode) and (os.major(st.st_rdev), os.minor(st.st_rdev)) == dev
        assert stat.S_IMODE(st.st_mode) == perm
    # the tree itself is untouched
    assert not (tree / "init").exists() and not (tree / "dev/null").exists()
    assert (tree / "etc/fstab").read_text().startswith("LABEL=ROOT")


def test_reproducible(tmp_path: Path) -> None:
    tree = make_root(tmp_path / "root")
    zstd = Compression.parse("zstd")
    a = ramdisk.pack(tree, tmp_path / "a", zstd, progress=False, source_date_epoch=1_600_000_000)
    b = ramdisk.pack(tree, tmp_path / "b", zstd, progress=False, source_date_epoch=1_600_000_000)
    assert a.sha256 == b.sha256 == cache.sha256_uncached(tmp_path / "a")
    for p in tree.rglob("*"):
        os.utime(p, (1_700_000_000, 1_700_000_000), follow_symlinks=False)
    c = ramdisk.pack(tree, tmp_path / "c", zstd, progress=False, source_date_epoch=1_600_000_000)
    assert c.sha256 == a.sha256
    d = ramdisk.pack(tree, tmp_path / "d", zstd, progress=False)
    e = ramdisk.pack(tree, tmp_path / "e", zstd, progress=False)
    assert d.sha256 == e.sha256 != a.sha256


def test_kernel_config_refusal(tmp_path: Path) -> None:
    tree = make_root(tmp_path / "root", rd_zstd="n")
    with pytest.raises(ConfigError, match="CONFIG_RD_ZSTD"):
        ramdisk.pack(tree, tmp_path / "i", Compression.parse("zstd"), progress=False)
    with pytest.raises(ConfigError, match="CONFIG_RD_XZ"):
        write_artifacts(tree, tmp_path / "out", "ipa", Compression.parse("xz"), size_limit_mb=None)
    assert not (tmp_path / "i").exists() and not (tmp_path / "out").exists()  # refused before any work
    ramdisk.pack(tree, tmp_path / "i", Compression.parse("gzip"), progress=False)


def test_find_kernel(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    tree = make_root(tmp_path / "root")
    k = ramdisk.find_kernel(tree)
    assert k.path == tree / f"boot/vmlinuz-{KVER}" and k.version == KVER and k.config is not None
    (tree / "boot/vmlinuz").unlink()
    (tree / "boot/vmlinuz").symlink_to("/nonexistent")
    assert ramdisk.find_kernel(tree).version == KVER  # newest by version, not by name: 5.14 > 5.3
    (tree / "boot/vmlinuz").unlink()
    (tree / "boot/vmlinuz").symlink_to("vmlinuz-5.3.18-57-default")
    assert ramdisk.find_kernel(tree).version == "5.3.18-57-default"
    # a relative tree path, and one through a symlinked directory, find the same (pack rootfs -o x)
    (tmp_path / "via-link").symlink_to(tree)
    monkeypatch.chdir(tmp_path)
    for given in (Path("root"), Path("via-link"), tmp_path / "via-link"):
        assert ramdisk.find_kernel(given).version == "5.3.18-57-default", given
    for p in (tree / "boot").iterdir():
        p.unlink()
    with pytest.raises(InputError, match="no kernel"):
        ramdisk.find_kernel(tree)


def test_write_artifacts(tmp_path: Path) -> None:
    tree = make_root(tmp_path / "root")
    out = tmp_path / "out"
    arts = write_artifacts(
        tree,
        out,
        "ironic-python-agent",
        Compression.parse("zstd"),
        size_limit_mb=500,
        source_date_epoch=1_600_000_000,
        manifest={"elements": ["sles"], "commits": {"ipa": "abc"}},
        progress=False,
    )
    assert sorted(p.name for p in out.iterdir()) == sorted(
        f"ironic-python-agent.{s}"
        for s in ("kernel", "initramfs", "tar", "tar.gz", "tar.gz.sha256", "sha256", "packages", "manifest.json",
                  "cdx.json")
    )
    assert arts.kernel.read_bytes() == b"KERNEL-NEW"
    with tarfile.open(arts.tar) as tar:
        members = tar.getmembers()
        assert [m.name for m in members] == ["ironic-python-agent.kernel", "ironic-python-agent.initramfs"]
        assert all(m.isfile() for m in members)
        assert tar.extractfile(members[1]).read() == arts.initramfs.read_bytes()  # type: ignore[union-attr]
    run.run(["sha256sum", "--quiet", "-c", arts.sha256.name], cwd=out)
    # one checksum file for everything
    assert [line.split()[1] for line in arts.sha256.read_text().splitlines()] == [
        f"ironic-python-agent.{s}" for s in ("kernel", "initramfs", "tar", "tar.gz", "packages", "cdx.json",
                                             "manifest.json")]
    pkgs = arts.packages.read_text()
    assert "Babel==2.9.1\nironic-python-agent==9.1.0\n" in pkgs and "# rpm -qa" in pkgs
    doc = json.loads(arts.manifest.read_text())
    assert doc["elements"] == ["sles"] and doc["commits"] == {"ipa": "abc"}
    rd = doc["ramdisk"]
    assert rd["compression"]["kind"] == "zstd" and rd["kernel"]["version"] == KVER
    assert rd["artifacts"]["ironic-python-agent.tar"]["sha256"] == cache.sha256_uncached(arts.tar)
    assert rd["artifacts"]["ironic-python-agent.initramfs"]["size"] == arts.initramfs.stat().st_size
    # same inputs, same bytes: the tar is reproducible too
    again = write_artifacts(
        tree,
        tmp_path / "again",
        "ironic-python-agent",
        Compression.parse("zstd"),
        size_limit_mb=None,
        source_date_epoch=1_600_000_000,
        progress=False,
    )
    # the SBOM is reproducible too; the manifest is not (it records timings)
    timed = "ironic-python-agent.manifest.json"
    untimed = {k: v for k, v in arts.sha256s.items() if k != timed}
    assert {k: v for k, v in again.sha256s.items() if k != timed} == untimed


# The rules of metal3's ironic-ipa-downloader (get-resource.sh), with its defaults: the file name minus
# the first of EXTENSIONS it ends with is the stem; `tar -xaf` the download; link
# ironic-python-agent[_<arch>].{kernel,initramfs} to <stem>.{kernel,initramfs}.
DOWNLOADER_EXTENSIONS = (".tar.gz", ".tar.gz.sha256")


def _downloader_stem(filename: str) -> str:
    for ext in DOWNLOADER_EXTENSIONS:
        if filename.endswith(ext):
            return filename[: -len(ext)]
    return filename.rsplit(".", 2)[0] if filename.count(".") >= 2 else filename  # ${FILENAME%.*.*}


def test_metal3_downloader_takes_the_tar_gz_as_it_is(tmp_path: Path) -> None:
    tree = make_root(tmp_path / "root")
    out = tmp_path / "out"
    arts = write_artifacts(tree, out, "ironic-python-agent", Compression.parse("zstd"),
                           size_limit_mb=None, source_date_epoch=1_600_000_000, progress=False)
    published = arts.files["tar.gz"]
    stem = _downloader_stem(published.name)
    images = tmp_path / "shared/html/images"
    unpacked = images / f"{published.name}-etag"  # the downloader unpacks into <file>-<ETag>/
    unpacked.mkdir(parents=True)
    run.run(["tar", "-xaf", published], cwd=unpacked)
    for kind in ("kernel", "initramfs"):
        link = images / f"ironic-python-agent.{kind}"
        link.symlink_to(f"{unpacked.name}/{stem}.{kind}")
        assert link.resolve().read_bytes() == getattr(arts, kind).read_bytes(), kind
    run.run(["sha256sum", "--quiet", "-c", arts.files["tar.gz.sha256"].name], cwd=out)
    # the bare .tar is not for the downloader: its stem keeps ".tar" and the links would dangle
    assert _downloader_stem(arts.tar.name) == "ironic-python-agent.tar"
    # reproducible, like the tar it wraps
    write_artifacts(tree, tmp_path / "again", "ironic-python-agent", Compression.parse("zstd"),
                    size_limit_mb=None, source_date_epoch=1_600_000_000, progress=False)
    assert (tmp_path / "again/ironic-python-agent.tar.gz").read_bytes() == published.read_bytes()


def test_size_limit_fails_and_keeps_artifacts(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    tree = make_root(tmp_path / "root")
    (tree / "usr/lib/firmware").mkdir(parents=True)
    (tree / "usr/lib/firmware/blob.bin").write_bytes(os.urandom(3 << 20))
    out = tmp_path / "out"
    with pytest.raises(BuildError, match=r"ipa.tar is 3 MiB, at or over the 3 MiB limit") as e:
        write_artifacts(tree, out, "ipa", Compression.parse("zstd"), size_limit_mb=3, progress=False)
    assert "size report" in e.value.hint
    assert (out / "ipa.tar").is_file() and (out / "ipa.initramfs").is_file()
    assert outputs.check_size(out / "ipa.tar", 4) == 3


def test_atomic_pack_keeps_previous_output(tmp_path: Path) -> None:
    tree = make_root(tmp_path / "root")
    (tree / "big").write_bytes(os.urandom(4 << 20))
    out = tmp_path / "out" / "ipa.initramfs"
    out.parent.mkdir()
    out.write_bytes(b"previous good")
    failing = Compression.parse("sh -c 'head -c 1000 >/dev/null; exit 3'")
    with pytest.raises(CommandError):
        ramdisk.pack(tree, out, failing, progress=False, check_kernel=False)
    assert out.read_bytes() == b"previous good"
    assert [p.name for p in out.parent.iterdir()] == ["ipa.initramfs"]


def test_atomic_artifacts_keep_previous_set(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    tree = make_root(tmp_path / "root")
    out = tmp_path / "out"
    first = write_artifacts(
        tree, out, "ipa", Compression.parse("gzip"), size_limit_mb=None, progress=False
    )
    before = {p.name: p.read_bytes() for p in out.iterdir()}

    def broken(tree: Path, **_: object) -> str:
        raise BuildError("listing packages failed", "")

    monkeypatch.setattr(outputs, "list_packages", broken)
    (tree / "new-file").write_text("changes the initramfs")
    with pytest.raises(BuildError, match="listing packages failed"):
        write_artifacts(
            tree, out, "ipa", Compression.parse("gzip"), size_limit_mb=None, progress=False
        )
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert first.initramfs.is_file()


def test_packages_lists_rpms(tmp_path: Path, rpm_tree: Path) -> None:
    db = rpm_tree / "usr/lib/sysimage/rpm"
    before = {p.name: p.stat().st_mtime_ns for p in db.iterdir()}
    text = inventory.list_packages(rpm_tree)
    assert "tinypkg-1.2-3.noarch" in text.splitlines()
    assert {p.name: p.stat().st_mtime_ns for p in db.iterdir()} == before  # queried on a copy


@pytest.fixture
def rpm_tree(tmp_path: Path) -> Path:
    return make_rpm_tree(tmp_path, make_root(tmp_path / "rpmroot"))


def make_rpm_tree(tmp_path: Path, tree: Path) -> Path:
    """Install a tiny real rpm into the tree's database only (--justdb), with the host's rpm."""
    top = tmp_path / "rpmbuild"
    (top / "SPECS").mkdir(parents=True)
    spec = top / "SPECS/tiny.spec"
    spec.write_text(
        "Name: tinypkg\nVersion: 1.2\nRelease: 3\nSummary: t\nLicense: MIT\nBuildArch: noarch\n"
        "%description\nt\n%install\nmkdir -p %{buildroot}/usr/share/tinypkg\n"
        "head -c 300000 /dev/zero > %{buildroot}/usr/share/tinypkg/blob\n%files\n/usr/share/tinypkg/blob\n"
    )
    run.run(["rpmbuild", "--define", f"_topdir {top}", "-bb", spec], capture=True)
    rpm = next((top / "RPMS/noarch").glob("*.rpm"))
    db = tree / "usr/lib/sysimage/rpm"
    db.mkdir(parents=True)
    run.run(["rpm", "--dbpath", db, "--initdb"], capture=True)
    run.run(["rpm", "--dbpath", db, "--justdb", "--nodeps", "--noscripts", "-i", rpm], capture=True)
    (tree / "usr/share/tinypkg").mkdir(parents=True)
    (tree / "usr/share/tinypkg/blob").write_bytes(b"\0" * 300000)
    return tree


def test_pack_result_fields(tmp_path: Path) -> None:
    tree = make_root(tmp_path / "root")
    r = ramdisk.pack(tree, tmp_path / "i.gz", Compression.parse("gzip"), progress=False)
    assert r.size == (tmp_path / "i.gz").stat().st_size and r.entries > 30 and r.uncompressed % 512 == 0
    assert io.BytesIO((tmp_path / "i.gz").read_bytes()).read(2) == b"\x1f\x8b"


HOST_KERNELS = sorted(Path("/boot").glob("vmlinuz-*"))
INIT = """#!/bin/sh
export PATH=/bin
busybox mount -t proc proc /proc
echo "fstab=$(cat /etc/fstab)"
echo "big=$(md5sum /big | cut -c1-32)"
echo "links=$(stat -c %h /hl-a) $(cat /hl-b)"
echo "null=$(stat -c %t,%T /dev/null) console=$(stat -c %t,%T /dev/console)"
echo "init=$(readlink /init)"
echo BOOT-DONE
busybox poweroff -f
"""


@pytest.mark.qemu
@pytest.mark.slow
@pytest.mark.skipif(
    not HOST_KERNELS or not Path("/bin/busybox").is_file(), reason="needs a host kernel and busybox"
)
@pytest.mark.parametrize("spec", ["zstd", "gzip"])
def test_the_kernel_unpacks_and_runs_it(tmp_path: Path, spec: str) -> None:
    """The kernel's own initramfs unpacker is the reader that matters: boot it with a busybox /sbin/init."""
    tree = tmp_path / "root"
    (tree / "bin").mkdir(parents=True)
    for d in ("sbin", "proc", "etc", "dev"):
        (tree / d).mkdir()
    busybox = tree / "bin/busybox"
    busybox.write_bytes(Path("/bin/busybox").read_bytes())
    busybox.chmod(0o755)
    for applet in ("sh", "cat", "md5sum", "cut", "stat", "readlink", "echo"):
        (tree / "bin" / applet).symlink_to("busybox")
    (tree / "sbin/init").write_text(INIT)
    (tree / "sbin/init").chmod(0o755)
    big = os.urandom(3 << 20)
    (tree / "big").write_bytes(big)
    (tree / "hl-a").write_text("shared")
    os.link(tree / "hl-a", tree / "hl-b")
    out = tmp_path / "initrd"
    ramdisk.pack(tree, out, Compression.parse(spec), progress=False, check_kernel=False)
    argv = [
        "qemu-system-x86_64", "-machine", "accel=tcg", "-m", "512", "-nographic", "-no-reboot",
        "-kernel", HOST_KERNELS[-1], "-initrd", out, "-append", "console=ttyS0 panic=-1 quiet",
    ]  # fmt: skip
    console = run.run(argv, capture=True, check=False, timeout=600).stdout
    assert "BOOT-DONE" in console, console[-3000:]
    assert "fstab=#disabled" in console
    assert f"big={hashlib.md5(big).hexdigest()}" in console
    assert "links=2 shared" in console
    assert "null=1,3 console=5,1" in console
    assert "init=./sbin/init" in console


@pytest.mark.root
@pytest.mark.skipif(
    os.geteuid() != 0 or not Path("/bin/busybox").is_file(), reason="chroot needs root and busybox"
)
def test_packages_fall_back_to_the_trees_rpm(tmp_path: Path) -> None:
    """A database the host's rpm cannot read (SLE's ndb on Debian) is queried with the tree's rpm."""
    tree = make_root(tmp_path / "root")
    db = tree / "usr/lib/sysimage/rpm"
    db.mkdir(parents=True)
    (db / "Packages.db").write_bytes(b"not a database the host can read")
    for d in ("bin", "usr/bin"):
        (tree / d).mkdir(parents=True, exist_ok=True)
    (tree / "bin/busybox").write_bytes(Path("/bin/busybox").read_bytes())
    (tree / "bin/busybox").chmod(0o755)
    (tree / "bin/sh").symlink_to("busybox")
    (tree / "usr/bin/env").symlink_to("/bin/busybox")
    (tree / "usr/bin/rpm").write_text(
        "#!/bin/sh\nprintf 'zlib zlib\\t0\\t1.2.11\\t3.1\\tx86_64\\t100\\tZlib\\n'\n"
        "printf 'bash bash\\t0\\t4.4\\t9\\tx86_64\\t200\\tGPL-3.0-or-later\\n'\n"
    )
    (tree / "usr/bin/rpm").chmod(0o755)
    lines = inventory.list_packages(tree).splitlines()
    assert lines[:3] == ["# rpm -qa", "bash-4.4-9.x86_64", "zlib-1.2.11-3.1.x86_64"]


def test_temp_dirs_of_killed_builds_are_swept_not_busy_ones(tmp_path: Path) -> None:
    import fcntl

    tree = make_root(tmp_path / "root")
    out = tmp_path / "out"
    killed = out / ".ironic-python-agent.tmp-killed"  # what a SIGKILL leaves: its lock died with it
    killed.mkdir(parents=True)
    (killed / ".busy").touch()
    (killed / "ironic-python-agent.initramfs").write_bytes(b"half")
    busy = out / ".ironic-python-agent.tmp-busy"  # another build, writing right now
    busy.mkdir()
    with (busy / ".busy").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        write_artifacts(tree, out, "ironic-python-agent", Compression.parse("zstd"), size_limit_mb=500,
                        progress=False)
        assert not killed.exists() and busy.exists()
    assert sorted(p.name for p in out.iterdir() if p.name.startswith(".")) == [busy.name]
