"""media.py: repository discovery from media.1/products and serving files out of the ISO over HTTP."""

from __future__ import annotations

import io
import os
import subprocess
import threading
import urllib.request
from contextlib import ExitStack
from pathlib import Path

import pycdlib
import pytest

from sles_ipa_builder.config.arch import AARCH64, X86_64
from sles_ipa_builder.errors import InputError
from sles_ipa_builder.inputs import media

PRODUCTS = b"/Module-Basesystem sle-module-basesystem 15.4-0\n/Product-SLES SLES 15.4-0\n"


def make_iso(path: Path, tree: dict[str, bytes], *, rock_ridge: bool = True, joliet: bool = True) -> Path:
    """Write an ISO holding `tree` (path -> bytes); ISO 9660 names are mangled, RR/Joliet keep real ones."""
    iso = pycdlib.PyCdlib()
    iso.new(interchange_level=4, rock_ridge="1.09" if rock_ridge else None, joliet=3 if joliet else None,
            vol_ident="SLE-15-SP4-TEST")
    dirs: dict[str, str] = {"": "/"}
    n = 0

    def ensure_dir(d: str) -> str:
        nonlocal n
        if d in dirs:
            return dirs[d]
        parent, _, name = d.rpartition("/")
        pdir = ensure_dir(parent)
        n += 1
        ipath = f"{pdir.rstrip('/')}/D{n}"
        iso.add_directory(ipath, rr_name=name if rock_ridge else None,
                          joliet_path=f"/{d}" if joliet else None)
        dirs[d] = ipath
        return ipath

    for p, data in sorted(tree.items()):
        parent, _, name = p.strip("/").rpartition("/")
        pdir = ensure_dir(parent)
        n += 1
        iso.add_fp(io.BytesIO(data), len(data), f"{pdir.rstrip('/')}/F{n}.;1",
                   rr_name=name if rock_ridge else None, joliet_path=f"/{p.strip('/')}" if joliet else None)
    iso.write(os.fspath(path))
    iso.close()
    return path


def repo_tree(tmp: Path, dirs: list[str]) -> dict[str, bytes]:
    """A media tree with empty but valid rpm-md repositories made by createrepo_c."""
    tree = {"media.1/media": b"SUSE - Linux Enterprise\n20220512-1\n1\n", "media.1/products": PRODUCTS}
    for d in dirs:
        src = tmp / "src" / d
        (src / "x86_64").mkdir(parents=True)
        subprocess.run(["createrepo_c", "-q", "--simple-md-filenames", str(src)], check=True)
        for f in src.rglob("*"):
            if f.is_file():
                tree[f"{d}/{f.relative_to(src)}"] = f.read_bytes()
    return tree


@pytest.fixture(scope="module")
def good_iso(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("iso")
    tree = repo_tree(tmp, ["Module-Basesystem", "Product-SLES"])
    tree["Module-Basesystem/x86_64/big+name.rpm"] = bytes(range(256)) * 4096  # 1 MiB, a '+' in the name
    return make_iso(tmp / "media.iso", tree)


def test_discovers_repos_with_stable_aliases(good_iso: Path) -> None:
    m = media.open_media(good_iso)
    assert [(r.alias, r.dir, r.name, r.version) for r in m.repos] == [
        ("sle-Module-Basesystem", "Module-Basesystem", "sle-module-basesystem", "15.4-0"),
        ("sle-Product-SLES", "Product-SLES", "SLES", "15.4-0"),
    ]
    assert m.volume_id == "SLE-15-SP4-TEST"
    assert m.info[0].startswith("SUSE")
    assert media.open_media(good_iso).identity == m.identity


def test_repo_rows_count_packages(good_iso: Path) -> None:
    rows = media.repo_rows(good_iso)
    assert rows[0]["alias"] == "sle-Module-Basesystem"
    assert rows[0]["packages"] == 0  # createrepo_c of an empty dir


def test_iso_of_another_arch_is_refused(good_iso: Path) -> None:
    m = media.open_media(good_iso)
    assert media.package_arches(m) == {"x86_64"}
    media.check_arch(m, X86_64)
    with pytest.raises(InputError, match="holds x86_64 packages, not aarch64"):
        media.check_arch(m, AARCH64)


def test_alias_for() -> None:
    assert media.alias_for("/Module-Basesystem/") == "sle-Module-Basesystem"
    assert media.alias_for("Product SLES_SAP") == "sle-Product-SLES_SAP"
    assert media.alias_for("") == "sle-media"


def test_joliet_fallback(tmp_path: Path) -> None:
    tree = repo_tree(tmp_path, ["Module-Basesystem", "Product-SLES"])
    m = media.open_media(make_iso(tmp_path / "j.iso", tree, rock_ridge=False, joliet=True))
    assert [r.alias for r in m.repos] == ["sle-Module-Basesystem", "sle-Product-SLES"]


def test_plain_iso9660_names_are_not_the_media_layout(tmp_path: Path) -> None:
    # Without Rock Ridge or Joliet only mangled 8.3 names exist: the error says what is missing.
    iso = make_iso(tmp_path / "p.iso", {"media.1/products": PRODUCTS}, rock_ridge=False, joliet=False)
    with pytest.raises(InputError, match="has no media.1/products"):
        media.open_media(iso)


def test_not_an_iso(tmp_path: Path) -> None:
    f = tmp_path / "x.iso"
    f.write_bytes(b"hello" * 1000)
    with pytest.raises(InputError, match="is not an ISO 9660 image"):
        media.open_media(f)


def test_truncated_iso(good_iso: Path, tmp_path: Path) -> None:
    # a partial download: the directories are there, the last files are not
    cut = tmp_path / "cut.iso"
    cut.write_bytes(good_iso.read_bytes()[: good_iso.stat().st_size - (600 << 10)])
    with pytest.raises(InputError, match=r"is truncated or damaged: \d+ file\(s\) lie past its end"):
        media.open_media(cut)


def test_missing_iso(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="not found"):
        media.open_media(tmp_path / "nope.iso")


def test_no_products(tmp_path: Path) -> None:
    iso = make_iso(tmp_path / "a.iso", {"media.1/media": b"SUSE\n"})
    with pytest.raises(InputError, match="has no media.1/products"):
        media.open_media(iso)


def test_listed_dir_missing(tmp_path: Path) -> None:
    tree = repo_tree(tmp_path, ["Module-Basesystem"])
    with pytest.raises(InputError, match="directory Product-SLES listed in media.1/products is missing"):
        media.open_media(make_iso(tmp_path / "a.iso", tree))


def test_listed_dir_without_repodata(tmp_path: Path) -> None:
    tree = repo_tree(tmp_path, ["Module-Basesystem"])
    tree["Product-SLES/x86_64/a.rpm"] = b"x"
    with pytest.raises(InputError, match="directory Product-SLES has no repodata/repomd.xml"):
        media.open_media(make_iso(tmp_path / "a.iso", tree))


def _get(
    url: str, headers: dict[str, str] | None = None, method: str = "GET"
) -> tuple[int, dict[str, str], bytes]:
    req = urllib.request.Request(url, headers=headers or {}, method=method)
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(req) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), b""


def test_serve_get_head_range_404(good_iso: Path) -> None:
    m = media.open_media(good_iso)
    data = bytes(range(256)) * 4096
    with ExitStack() as stack:
        base = media.serve(m, stack)
        url = f"{base}/Module-Basesystem/x86_64/big%2Bname.rpm"
        status, headers, body = _get(url)
        assert status == 200 and body == data
        status, headers, body = _get(url, method="HEAD")
        assert status == 200 and headers["Content-Length"] == str(len(data)) and body == b""
        status, headers, body = _get(url, {"Range": "bytes=1000-1999"})
        assert status == 206 and body == data[1000:2000]
        assert headers["Content-Range"] == f"bytes 1000-1999/{len(data)}"
        assert _get(url, {"Range": "bytes=-10"})[2] == data[-10:]
        assert _get(url, {"Range": "bytes=1048570-"})[2] == data[1048570:]
        assert _get(url, {"Range": f"bytes={len(data)}-"})[0] == 416
        assert _get(f"{base}/Module-Basesystem/nothing.rpm")[0] == 404
        assert _get(f"{base}/Module-Basesystem/repodata/repomd.xml")[2].startswith(b"<?xml")
        # many at once
        results: list[bytes] = []
        threads = [threading.Thread(target=lambda: results.append(_get(url)[2])) for _ in range(16)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert results == [data] * 16
        assert media.repo_urls(m, base)[0] == ("sle-Module-Basesystem", f"{base}/Module-Basesystem")
    with pytest.raises(OSError):  # the stack shut the server down
        _get(url)


# --- on the fixtures' test media (marker `media`: builds the media on first use) ----------------------

REPO = Path(__file__).resolve().parents[2]



@pytest.mark.media
def test_fixture_iso_repos(fixture_media: object) -> None:
    rows = media.repo_rows(fixture_media.iso)  # type: ignore[attr-defined]
    aliases = [r["alias"] for r in rows]
    assert "sle-Module-Basesystem" in aliases and "sle-Module-Python3" in aliases
    assert all(isinstance(r["packages"], int) for r in rows)
    assert sum(int(r["packages"] or 0) for r in rows) > 10  # type: ignore[call-overload]


CHROOT_SCRIPT = r"""
set -eu
root=$1; pkg=$2; cache=$3
mount -t proc proc "$root/proc"
mount --rbind /dev "$root/dev"
mkdir -p "$root/var/cache/zypp"
mount --bind "$cache" "$root/var/cache/zypp"
in_root() { chroot "$root" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8 \
    no_proxy=127.0.0.1,localhost NO_PROXY=127.0.0.1,localhost "$@"; }
if in_root rpm -q "$pkg"; then echo "$pkg is already installed"; exit 3; fi
in_root zypper --non-interactive refresh
in_root zypper --non-interactive install --no-recommends "$pkg"
in_root rpm -q "$pkg"
"""


@pytest.mark.media
@pytest.mark.root
@pytest.mark.slow
def test_zypper_in_chroot_installs_from_the_iso_over_http(
    fixture_media: object, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sles_ipa_builder.inputs import zypper

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    fm = fixture_media
    root = tmp_path / "root"
    root.mkdir()
    subprocess.run(["cp", "-a", f"{fm.root_tree}/.", f"{root}/"], check=True)  # type: ignore[attr-defined]
    m = media.open_media(fm.iso)  # type: ignore[attr-defined]
    with ExitStack() as stack:
        base = media.serve(m, stack)
        zypper.write_repos(root, media.repo_urls(m, base))
        zypper.zypp_conf(root)
        [(cache_dir, _)] = zypper.cache_mounts()
        out = subprocess.run(["unshare", "--mount", "--fork", "--propagation", "private", "sh", "-c",
                              CHROOT_SCRIPT, "chroot-test", str(root), "hdparm", str(cache_dir)],
                             capture_output=True, text=True)
        assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
        assert "hdparm-" in out.stdout.splitlines()[-1]
        # the ISO was never mounted or attached to a loop device on the host
        iso = str(Path(fm.iso).resolve())  # type: ignore[attr-defined]
        assert iso not in Path("/proc/self/mountinfo").read_text()
        assert subprocess.run(["losetup", "-j", iso], capture_output=True, text=True).stdout == ""
        zypper.remove_repos(root, [r.alias for r in m.repos])
    assert not list((root / "etc/zypp/repos.d").glob("sle-*.repo"))
    # local media: keeppackages=0, so no package of theirs stays in the host cache
    assert not list(cache_dir.rglob("*.rpm"))
