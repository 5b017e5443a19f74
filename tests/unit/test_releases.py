"""config/releases.py and detect.py: the release table, naming a release, finding it in images_dir,
SLES 16's install.iso layout, and the mismatches refused before any work."""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import urllib.request
from contextlib import ExitStack
from pathlib import Path

import pytest
from repohttp import build_rpm, make_repo
from test_media import make_iso, repo_tree

from sles_ipa_builder import run
from sles_ipa_builder.config import releases
from sles_ipa_builder.config import resolve as config
from sles_ipa_builder.engine.hookenv import hook_env
from sles_ipa_builder.errors import ConfigError, InputError
from sles_ipa_builder.inputs import media, repos

SLES16_IMAGE = "SLES-16.0-Minimal-VM.x86_64-Cloud-GM.qcow2"
SLES16_ISO = "SLES-16.0-Full-x86_64-GM.install.iso"
SP7_IMAGE = "SLES15-SP7-Minimal-VM.x86_64-OpenStack-Cloud-GM.qcow2"
SP7_ISO = "SLE-15-SP7-Full-x86_64-GM-Media1.iso"


def resolve(cli: dict[str, str] | None = None, **env: str) -> config.Config:
    return config.resolve(cli or {}, environ=env)


def images(tmp_path: Path, *names: str) -> Path:
    """An images directory holding empty files by these names: detection reads names only."""
    d = tmp_path / "images"
    d.mkdir(exist_ok=True)
    for n in names:
        (d / n).touch()
    return d


# --- the table -------------------------------------------------------------------------------------
def test_one_row_per_first_class_release() -> None:
    assert [r.name for r in releases.TABLE] == ["15-SP4", "15-SP5", "15-SP6", "15-SP7", "16.0", "16.1"]
    assert releases.DEFAULT.name == "15-SP7"
    for r in releases.TABLE:
        fifteen = r.major == 15
        assert r.layout == (releases.MEDIA1 if fifteen else releases.INSTALL)
        assert r.network == ("wicked" if fifteen else "NetworkManager")
        assert r.usr_etc is not fifteen
        assert r.selinux == ("" if fifteen else "enforcing")
        assert r.firmware == ("bios" if fifteen else "uefi")
        assert r.qemu_cpu == ("" if fifteen else "max")
        assert r.package("dhcp-client") == ("dhcp-client" if fifteen else "dhcpcd")
        assert r.package("mkinitrd") == ("mkinitrd" if r.name == "15-SP4" else "dracut-mkinitrd-deprecated")
    assert [r.python_for() for r in releases.TABLE] == ["python3.10"] + ["python3.11"] * 3 + ["python3.13"] * 2


def test_names_of_the_media() -> None:
    sixteen, sp7 = releases.find("SLES-16.0"), releases.find("SLE-15", "SP7")
    assert sixteen.iso_name("x86_64") == SLES16_ISO
    assert sixteen.image_names("Minimal-VM", "x86_64", "Cloud-GM") == [SLES16_IMAGE]
    assert (sixteen.prefix, sixteen.service_pack, sixteen.dib_release) == ("SLES-16.0", "", "16.0")
    assert sp7.iso_name("x86_64") == SP7_ISO
    assert sp7.image_names("Minimal-VM", "x86_64", "OpenStack-Cloud-GM") == [
        SP7_IMAGE, "SLE-15-SP7-Minimal-VM.x86_64-OpenStack-Cloud-GM.qcow2"]
    assert (sp7.prefix, sp7.service_pack, sp7.dib_release) == ("SLE-15", "SP7", "15.7")
    assert sixteen.iso_pattern("x86_64").fullmatch("SLES-16.0-Full-x86_64-QU2.install.iso")
    assert not sixteen.iso_pattern("x86_64").fullmatch("SLES-16.0-Online-x86_64-GM.install.iso")
    assert sixteen.image_pattern("Minimal-VM", "x86_64").fullmatch("SLES-16.0-Minimal-VM.x86_64-Cloud-QU1.qcow2")


def test_newer_than_the_table_builds_like_the_newest_row() -> None:
    later = releases.find("16.3")
    assert (later.name, later.prefix, later.dib_release) == ("16.3", "SLES-16.3", "16.3")
    assert later.iso_name("aarch64") == "SLES-16.3-Full-aarch64-GM.install.iso"
    assert later == dataclasses.replace(releases.find("16.1"), minor=3)
    sp9 = releases.find("SLE-15", "sp9")
    assert (sp9.name, sp9.python_for(), sp9.packages) == ("15-SP9", "python3.11", releases.find("SLE-15").packages)
    gm = releases.find("15", "GM")  # older than the table: like SP4
    assert (gm.name, gm.dib_release, gm.python_for()) == ("15-GM", "15", "python3.10")


@pytest.mark.parametrize(("text", "message"), [
    ("16", "names no minor release"),
    ("SLE-15.6", "names its service pack apart"),
    ("SLES-17.0", "is not a SLES release this builder knows"),
    ("SLE-12", "is not a SLES release this builder knows"),
])
def test_release_names_refused(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as e:
        resolve(DIB_SLES_RELEASE=text)
    assert e.value.hint


# --- naming a release ------------------------------------------------------------------------------
@pytest.mark.parametrize("spelling", ["SLES-16.0", "16.0", "sles16.0"])
def test_naming_sixteen(spelling: str, tmp_path: Path) -> None:
    cfg = resolve(DIB_SLES_RELEASE=spelling, DIB_SLES_OFFLINE_TARGET_DIR=str(tmp_path))
    assert (cfg.sles.name, cfg.sles_release, cfg.service_pack) == ("16.0", "SLES-16.0", "")
    assert cfg.sources["sles_release"] == "env DIB_SLES_RELEASE"
    assert cfg.iso_file_name == SLES16_ISO
    assert [p.name for p in cfg.base_image_candidates()] == [SLES16_IMAGE]
    assert cfg.image_platform == "Cloud-GM" and cfg.python == "python3.13"
    env = hook_env(cfg, [], [])
    assert {k: env[k] for k in ("DIB_SLES_RELEASE", "DIB_RELEASE", "DIB_SLES_SERVICE_PACK", "DIB_SLES_PYTHON",
                                "DIB_SLES_PYTHON_PACKAGE", "DIB_SLES_IMAGE_TARGET_PLATFORM",
                                "DIB_SLES_ISO_REPO_FILE", "DIB_SLES_NETWORK_STACK", "DIB_SLES_USR_ETC",
                                "DIB_SLES_SELINUX", "DIB_SLES_PKG_DHCP_CLIENT")} == {
        "DIB_SLES_RELEASE": "SLES-16.0", "DIB_RELEASE": "16.0", "DIB_SLES_SERVICE_PACK": "",
        "DIB_SLES_PYTHON": "python3.13", "DIB_SLES_PYTHON_PACKAGE": "python313",
        "DIB_SLES_IMAGE_TARGET_PLATFORM": "Cloud-GM", "DIB_SLES_ISO_REPO_FILE": SLES16_ISO,
        "DIB_SLES_NETWORK_STACK": "NetworkManager", "DIB_SLES_USR_ETC": "true", "DIB_SLES_SELINUX": "enforcing",
        "DIB_SLES_PKG_DHCP_CLIENT": "dhcpcd"}


def test_the_seeds_variables_keep_their_meaning(tmp_path: Path) -> None:
    d = images(tmp_path, SLES16_IMAGE, SLES16_ISO)  # 16 media there, but the user named 15
    for env in ({"DIB_SLES_SERVICE_PACK": "SP6"}, {"DIB_SLES_RELEASE": "SLE-15", "DIB_SLES_SERVICE_PACK": "SP6"}):
        cfg = resolve(DIB_SLES_OFFLINE_TARGET_DIR=str(d), **env)
        assert (cfg.sles.name, cfg.sles_release, cfg.service_pack) == ("15-SP6", "SLE-15", "SP6")
        assert cfg.iso_file_name == "SLE-15-SP6-Full-x86_64-GM-Media1.iso"
    cfg = resolve(DIB_SLES_RELEASE="SLES15", DIB_SLES_OFFLINE_TARGET_DIR=str(d))
    assert (cfg.sles.name, cfg.sles_release) == ("15-SP7", "SLE-15")  # the canonical spelling is exported
    # a user's own platform is kept as given (Nordix sets Cloud-GM itself)
    cfg = resolve({"sles_release": "16.1"}, DIB_SLES_IMAGE_TARGET_PLATFORM="Cloud-QU1")
    assert [p.name for p in cfg.base_image_candidates()] == ["SLES-16.1-Minimal-VM.x86_64-Cloud-QU1.qcow2"]


def test_a_service_pack_with_sixteen_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"service pack SP7 \(env DIB_SLES_SERVICE_PACK\) is SLE 15's, but "
                                          r"the release is SLES 16.0 \(flag --sles-release\)") as e:
        resolve({"sles_release": "16.0"}, DIB_SLES_SERVICE_PACK="SP7")
    assert "unset DIB_SLES_SERVICE_PACK" in e.value.hint


# --- the default: what images_dir holds ------------------------------------------------------------
def test_only_sixteen_media_give_a_sixteen_build(tmp_path: Path) -> None:
    d = images(tmp_path, SLES16_IMAGE, SLES16_ISO, "notes.txt")
    cfg = resolve(DIB_SLES_OFFLINE_TARGET_DIR=str(d))
    assert cfg.sles.name == "16.0" and cfg.iso_path == d / SLES16_ISO
    assert cfg.sources["sles_release"] == f"found in {d}: {SLES16_IMAGE}, {SLES16_ISO}"
    assert cfg.sources["service_pack"] == "SLES 16.0 has none"
    assert cfg.sources["image_platform"] == "default for SLES 16.0"


def test_both_present_the_newest_wins_and_says_why(tmp_path: Path) -> None:
    d = images(tmp_path, SP7_IMAGE, SP7_ISO, SLES16_IMAGE, SLES16_ISO)
    cfg = resolve(DIB_SLES_OFFLINE_TARGET_DIR=str(d))
    assert cfg.sles.name == "16.0"
    assert cfg.sources["sles_release"].endswith("; the newest of 16.0, 15-SP7")
    # a newer release with only half its media loses to a complete one, and the line says so
    (d / "SLES-16.1-Minimal-VM.x86_64-Cloud-GM.qcow2").touch()
    cfg = resolve(DIB_SLES_OFFLINE_TARGET_DIR=str(d))
    assert cfg.sles.name == "16.0" and cfg.sources["sles_release"].endswith("; 16.1 newer but incomplete")


def test_fifteen_media_give_their_service_pack(tmp_path: Path) -> None:
    d = images(tmp_path, "SLES15-SP6-Minimal-VM.x86_64-OpenStack-Cloud-GM.qcow2",
               "SLE-15-SP6-Full-x86_64-GM-Media1.iso", "SLES-16.0-Minimal-VM.aarch64-Cloud-GM.qcow2")
    cfg = resolve(DIB_SLES_OFFLINE_TARGET_DIR=str(d))  # the aarch64 image is not for this arch
    assert (cfg.sles.name, cfg.service_pack, cfg.sles_release) == ("15-SP6", "SP6", "SLE-15")
    assert cfg.sources["service_pack"] == cfg.sources["sles_release"]
    cfg = resolve(DIB_SLES_OFFLINE_TARGET_DIR=str(d), ARCH="arm64")
    assert cfg.sles.name == "16.0" and "(no Full ISO of it)" in cfg.sources["sles_release"]


def test_nothing_there_is_sle_15_sp7(tmp_path: Path) -> None:
    cfg = resolve(DIB_SLES_OFFLINE_TARGET_DIR=str(tmp_path / "missing"))
    assert cfg.sles.name == "15-SP7" and cfg.sources["sles_release"].startswith("default (no SLES media")


def test_given_files_count_before_the_directory(tmp_path: Path) -> None:
    d = images(tmp_path, SP7_IMAGE, SP7_ISO)
    iso = tmp_path / SLES16_ISO
    iso.touch()
    cfg = resolve({"iso": str(iso)}, DIB_SLES_OFFLINE_TARGET_DIR=str(d))
    assert cfg.sles.name == "16.0" and cfg.sources["sles_release"].startswith("found in given: ")


def test_refreshes_are_found_newest_first(tmp_path: Path) -> None:
    qu1_image = "SLES-16.0-Minimal-VM.x86_64-Cloud-QU1.qcow2"
    d = images(tmp_path, SLES16_IMAGE, qu1_image, "SLES-16.0-Full-x86_64-QU2.install.iso",
               "SLES-16.0-Full-x86_64-QU10.install.iso")
    cfg = resolve(DIB_SLES_OFFLINE_TARGET_DIR=str(d))
    assert cfg.sles.name == "16.0"
    assert cfg.iso_file_name == "SLES-16.0-Full-x86_64-QU10.install.iso"
    assert [p.name for p in cfg.base_image_candidates()] == [qu1_image, SLES16_IMAGE]
    sp7 = resolve(DIB_SLES_OFFLINE_TARGET_DIR=str(images(tmp_path, "SLE-15-SP7-Full-x86_64-QU1-Media1.iso")),
                  DIB_SLES_SERVICE_PACK="SP7")
    assert sp7.iso_file_name == "SLE-15-SP7-Full-x86_64-QU1-Media1.iso"


# --- SLES 16's install.iso -------------------------------------------------------------------------
@pytest.fixture(scope="module")
def install_iso(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The install.iso layout: one rpm-md repository in /install (here with one package, python313),
    next to boot/ and LiveOS/; no media.1."""
    work = tmp_path_factory.mktemp("install")
    rpm = build_rpm(work, "python313", {"/usr/share/doc/sib-test/python313-metadata-only": "layout test\n"})
    repo = make_repo(work / "install", [rpm])
    tree = {f"install/{f.relative_to(repo)}": f.read_bytes() for f in repo.rglob("*") if f.is_file()}
    tree |= {"boot/x86_64/loader/linux": b"kernel", "LiveOS/squashfs.img": b"live"}
    return make_iso(work / SLES16_ISO, tree, joliet=False)  # createrepo_c's names pass Joliet's 64


def test_install_layout_is_one_repository(install_iso: Path) -> None:
    m = media.open_media(install_iso)
    assert m.layout == releases.INSTALL and media.layout_of(install_iso) == releases.INSTALL
    assert [(r.alias, r.dir, r.name) for r in m.repos] == [("sle-install", "install", "SLES")]
    assert repos.media_packages(m) == {"python313"}
    with ExitStack() as stack:
        base = media.serve(m, stack)
        assert media.repo_urls(m, base) == [("sle-install", f"{base}/install")]
        with urllib.request.urlopen(f"{base}/install/repodata/repomd.xml") as answer:
            assert b"<repomd" in answer.read()


def test_media1_layout_is_told_apart(tmp_path: Path) -> None:
    iso = make_iso(tmp_path / SP7_ISO, repo_tree(tmp_path, ["Module-Basesystem"]))
    assert media.layout_of(iso) == releases.MEDIA1
    assert media.layout_of(tmp_path / "absent.iso") is None
    (tmp_path / "not.iso").write_bytes(b"x" * 4096)
    assert media.layout_of(tmp_path / "not.iso") is None


def test_install_iso_without_its_repository_names_the_iso(tmp_path: Path) -> None:
    online = make_iso(tmp_path / "SLES-16.0-Online-x86_64-GM.install.iso",
                      {"boot/x86_64/loader/linux": b"kernel", "LiveOS/squashfs.img": b"live"})
    with pytest.raises(InputError, match=r"^SLES-16.0-Online-x86_64-GM.install.iso has no "
                                         r"install/repodata/repomd.xml") as e:
        media.open_media(online)
    assert "Full" in e.value.hint


# --- bad input: the release and the ISO disagree ---------------------------------------------------
def test_sixteen_iso_with_fifteen_settings(install_iso: Path) -> None:
    with pytest.raises(ConfigError, match=rf"^{SLES16_ISO} is a SLES 16 install ISO, but the build is for "
                                          r"SLE 15 SP7 \(env DIB_SLES_SERVICE_PACK\)$") as e:
        resolve({"iso": str(install_iso)}, DIB_SLES_SERVICE_PACK="SP7")
    assert e.value.hint.startswith("set DIB_SLES_RELEASE=SLES-16.0 (--sles-release)")


def test_media1_iso_with_a_sixteen_release(tmp_path: Path) -> None:
    iso = make_iso(tmp_path / SP7_ISO, repo_tree(tmp_path, ["Module-Basesystem"]))
    with pytest.raises(ConfigError, match=rf"^{SP7_ISO} is a SLE 15 Media1 ISO, but the build is for "
                                          r"SLES 16.1 \(flag --sles-release\)$") as e:
        resolve({"iso": str(iso), "sles_release": "16.1"})
    assert "DIB_SLES_SERVICE_PACK=SP7" in e.value.hint and SLES16_ISO.replace("16.0", "16.1") in e.value.hint


def test_a_renamed_iso_is_judged_by_its_layout(install_iso: Path, tmp_path: Path) -> None:
    renamed = tmp_path / SP7_ISO
    os.link(install_iso, renamed)
    with pytest.raises(ConfigError, match="is a SLES 16 install ISO, but the build is for SLE 15 SP7"):
        resolve({"sles_release": "SLE-15"}, DIB_SLES_OFFLINE_TARGET_DIR=str(tmp_path))


def test_an_empty_file_is_judged_by_its_name(tmp_path: Path) -> None:
    d = images(tmp_path, SLES16_ISO)
    with pytest.raises(ConfigError, match="is a SLES 16 install ISO"):
        resolve({"iso": str(d / SLES16_ISO)}, DIB_SLES_RELEASE="SLE-15")


# --- the command line ------------------------------------------------------------------------------
def sib(tmp_path: Path, *argv: str | Path) -> run.Result:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DIB_", "IPA_", "IRONIC_", "SIB_"))}
    env["XDG_CACHE_HOME"] = str(tmp_path / "cache")
    return run.run([sys.executable, "-m", "sles_ipa_builder", *map(str, argv)], env=env, check=False, capture=True)


def test_summary_says_which_release_and_why(tmp_path: Path) -> None:
    d = images(tmp_path, SP7_IMAGE, SP7_ISO, SLES16_IMAGE, SLES16_ISO)
    res = sib(tmp_path, "summary", "--json", "--images-dir", d)
    assert res.returncode == 0, res.stderr[-2000:]
    out = json.loads(res.stdout)
    assert out["settings"]["sles_release"] == {
        "value": "SLES-16.0", "source": f"found in {d}: {SLES16_IMAGE}, {SLES16_ISO}; the newest of 16.0, 15-SP7"}
    assert out["release"] == {"release": "SLES 16.0", "media": "install", "python": "python3.13",
                              "network": "NetworkManager", "/usr/etc": "yes", "selinux": "enforcing",
                              "firmware": "uefi", "qemu_cpu": "max", "why": out["settings"]["sles_release"]["source"]}
    text = sib(tmp_path, "summary", "--images-dir", d, "--sles-release", "SLE-15").stdout.splitlines()
    assert "# Release" in text
    row = text[text.index("# Release") + 2]
    assert row.split()[:3] == ["SLE", "15", "SP7"] and row.endswith("flag --sles-release")


def test_mismatch_is_one_error_line_and_exit_2(install_iso: Path, tmp_path: Path) -> None:
    res = sib(tmp_path, "summary", "--iso", install_iso, "--service-pack", "SP6")
    assert res.returncode == 2 and res.stdout == ""
    lines = res.stderr.splitlines()
    assert lines[0] == (f"error: {SLES16_ISO} is a SLES 16 install ISO, but the build is for SLE 15 SP6 "
                        "(flag --service-pack)")
    assert lines[1].startswith("hint: set DIB_SLES_RELEASE=SLES-16.0") and len(lines) == 2


def test_the_python_must_be_the_releases() -> None:
    assert resolve({"sles_release": "16.0"}, DIB_SLES_PYTHON="python3.13").python == "python3.13"
    with pytest.raises(ConfigError, match=r"python3.11 \(env DIB_SLES_PYTHON\) is no interpreter of SLES 16.0"):
        resolve({"sles_release": "16.0"}, DIB_SLES_PYTHON="python3.11")
    with pytest.raises(ConfigError, match="python3.13 .* is no interpreter of SLE 15 SP7") as e:
        resolve(DIB_SLES_PYTHON="python3.13")
    assert e.value.hint == "set DIB_SLES_PYTHON to python3.10 or python3.11, or leave it unset"


def test_an_ipa_beyond_the_releases_python_is_named_with_the_release(tmp_path: Path) -> None:
    from types import SimpleNamespace

    from sles_ipa_builder.steps import sles as slessteps

    src = tmp_path / "tmp/ironic-python-agent"
    src.mkdir(parents=True)
    (src / "pyproject.toml").write_text('[project]\nrequires-python = ">=3.14"\n')
    cfg = resolve({"sles_release": "16.0"})
    ctx = SimpleNamespace(root=tmp_path, cfg=cfg, env={"DIB_SLES_PYTHON": cfg.python})
    with pytest.raises(ConfigError, match=r"requires Python >=3.14, but SLES 16.0 gives the IPA venv python3.13") as e:
        slessteps.python_check_step(ctx, ctx)  # type: ignore[arg-type]
    assert e.value.hint.startswith("no SLES 16 python313 satisfies it")


def test_direct_boots_follow_the_release_firmware() -> None:
    """SLES 16 boots UEFI by default, so its ramdisk's boot test does; 15 keeps the arch's own (BIOS on x86_64)."""
    from sles_ipa_builder.verify.boottest import release_firmware

    assert release_firmware(releases.find("SLES-16.0")) == "uefi"
    assert release_firmware(releases.find("SLE-15", "SP7")) == ""
    assert release_firmware(None) == ""


def test_boot_test_takes_the_release_from_the_ramdisks_manifest(tmp_path: Path) -> None:
    """Nothing named, no media in images_dir: a SLES 16 ramdisk's boot test still gets 16's CPU rule."""
    from sles_ipa_builder.cli.commands import built_release

    cfg = resolve({"images_dir": str(tmp_path / "none")})
    manifest = tmp_path / "ipa.manifest.json"
    manifest.write_text(json.dumps({"settings": {"sles_release": "SLES-16.0", "service_pack": "SP7"}}))
    sixteen = built_release(cfg, manifest)
    assert sixteen.sles.name == "16.0" and sixteen.qemu_cpu == "max"
    assert built_release(cfg, tmp_path / "missing.json") is cfg
    named = resolve({"images_dir": str(tmp_path / "none"), "sles_release": "SLE-15"})
    assert built_release(named, manifest) is named  # a release the user named wins
