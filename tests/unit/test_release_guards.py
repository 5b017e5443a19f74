"""Bad input of the SLES 16 issue: media of one major release with the settings of the other are one
error line and exit 2 before any work (a qcow2 by SUSE's name, an ISO by its layout, else its name),
and an install.iso without its repository names the ISO."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_media import make_iso, repo_tree
from test_releases import SLES16_IMAGE, SLES16_ISO, SP7_IMAGE, images, resolve, sib

from sles_ipa_builder.errors import ConfigError, InputError
from sles_ipa_builder.inputs import media

SP6_IMAGE = SP7_IMAGE.replace("SP7", "SP6")


# --- the qcow2, by its name ------------------------------------------------------------------------
def test_a_sixteen_qcow2_with_a_fifteen_release(tmp_path: Path) -> None:
    d = images(tmp_path, SLES16_IMAGE)
    with pytest.raises(ConfigError, match=rf"^{SLES16_IMAGE} is SUSE's name of a SLES 16.0 qcow2, but the build "
                                          r"is for SLE 15 SP7 \(env DIB_SLES_RELEASE\)$") as e:
        resolve({"base_image": str(d / SLES16_IMAGE)}, DIB_SLES_RELEASE="SLE-15")
    assert e.value.hint == (f"set DIB_SLES_RELEASE=SLES-16.0 (--sles-release) and unset DIB_SLES_SERVICE_PACK, "
                            f"or give the {SP7_IMAGE}")


def test_a_fifteen_qcow2_with_a_sixteen_release(tmp_path: Path) -> None:
    d = images(tmp_path, SP6_IMAGE)
    with pytest.raises(ConfigError, match=rf"^{SP6_IMAGE} is SUSE's name of a SLE 15 SP6 qcow2, but the build is "
                                          r"for SLES 16.1 \(flag --sles-release\)$") as e:
        resolve({"base_image": str(d / SP6_IMAGE), "sles_release": "SLES-16.1"})
    assert e.value.hint.startswith("set DIB_SLES_RELEASE=SLE-15 and DIB_SLES_SERVICE_PACK=SP6 (--sles-release "
                                   "SLE-15 --service-pack SP6), or give the SLES-16.1-Minimal-VM.x86_64-Cloud-GM")


def test_given_files_of_two_majors_disagree(tmp_path: Path) -> None:
    """Nothing names the release: the given ISO's (the newest) is built, and the qcow2 is of the other."""
    d = images(tmp_path, SLES16_ISO, SP7_IMAGE)
    with pytest.raises(ConfigError, match=rf"^{SP7_IMAGE} is SUSE's name of a SLE 15 SP7 qcow2, but the build is "
                                          rf"for SLES 16.0 \(found in given: {SLES16_ISO}"):
        resolve({"base_image": str(d / SP7_IMAGE), "iso": str(d / SLES16_ISO)})


def test_names_suse_does_not_use_and_service_packs_pass(tmp_path: Path) -> None:
    d = images(tmp_path, "my-sles16.qcow2", SP6_IMAGE, "custom.iso")
    assert resolve({"base_image": str(d / "my-sles16.qcow2"), "iso": str(d / "custom.iso")},
                   DIB_SLES_RELEASE="SLE-15").sles.name == "15-SP7"
    assert resolve({"base_image": str(d / "my-sles16.qcow2")}, DIB_SLES_RELEASE="16.0").sles.name == "16.0"
    # another service pack of the same major is no layout mismatch: only 15 against 16 is refused here
    assert resolve({"base_image": str(d / SP6_IMAGE)}, DIB_SLES_SERVICE_PACK="SP7").sles.name == "15-SP7"


# --- the ISO, by its layout ------------------------------------------------------------------------
def test_a_renamed_media1_with_a_sixteen_release(tmp_path: Path) -> None:
    iso = make_iso(tmp_path / "custom.iso", repo_tree(tmp_path, ["Module-Basesystem"]))
    with pytest.raises(ConfigError, match=r"^custom.iso is a SLE 15 Media1 ISO, but the build is for SLES 16.0 "
                                          r"\(env DIB_SLES_RELEASE\)$") as e:
        resolve({"iso": str(iso)}, DIB_SLES_RELEASE="SLES-16.0")
    assert e.value.hint.startswith("set DIB_SLES_RELEASE=SLE-15 and DIB_SLES_SERVICE_PACK=SP<n>")


def test_a_renamed_install_iso_with_the_default_release_named(tmp_path: Path) -> None:
    iso = make_iso(tmp_path / "custom.iso", {"install/repodata/repomd.xml": b"<repomd/>",
                                             "boot/x86_64/loader/linux": b"k"})
    with pytest.raises(ConfigError, match=r"^custom.iso is a SLES 16 install ISO, but the build is for SLE 15 SP7 "
                                          r"\(env DIB_SLES_RELEASE\)$") as e:
        resolve({"iso": str(iso)}, DIB_SLES_RELEASE="SLE-15")
    assert e.value.hint.startswith("set DIB_SLES_RELEASE=SLES-16.<n> (--sles-release)")


def test_the_layout_beats_the_name(tmp_path: Path) -> None:
    """A Media1 ISO under a 16 name is a Media1 ISO: a 15 build takes it."""
    iso = make_iso(tmp_path / SLES16_ISO, repo_tree(tmp_path, ["Module-Basesystem"]))
    assert resolve({"iso": str(iso)}, DIB_SLES_RELEASE="SLE-15").sles.name == "15-SP7"


def test_summary_refuses_a_sixteen_qcow2_in_one_line(tmp_path: Path) -> None:
    d = images(tmp_path, SLES16_IMAGE)
    res = sib(tmp_path, "summary", "--base-image", d / SLES16_IMAGE, "--sles-release", "SLE-15")
    assert res.returncode == 2 and res.stdout == ""
    assert res.stderr.splitlines() == [
        f"error: {SLES16_IMAGE} is SUSE's name of a SLES 16.0 qcow2, but the build is for SLE 15 SP7 "
        "(flag --sles-release)",
        "hint: set DIB_SLES_RELEASE=SLES-16.0 (--sles-release) and unset DIB_SLES_SERVICE_PACK, or give the "
        f"{SP7_IMAGE}"]


# --- an install.iso without its repository ---------------------------------------------------------
def test_an_install_directory_without_repodata_names_the_iso(tmp_path: Path) -> None:
    iso = make_iso(tmp_path / SLES16_ISO, {"install/x86_64/a-1-1.x86_64.rpm": b"rpm", "boot/x86_64/linux": b"k"})
    with pytest.raises(InputError) as e:
        media.open_media(iso)
    assert e.value.message == (f"{SLES16_ISO} has no install/repodata/repomd.xml: a SLES 16 install ISO without "
                               "its package repository")
    assert "\n" not in e.value.message + e.value.hint


def test_repos_of_an_install_iso_without_repodata_is_one_line(tmp_path: Path) -> None:
    iso = make_iso(tmp_path / SLES16_ISO, {"boot/x86_64/loader/linux": b"k", "LiveOS/squashfs.img": b"l"})
    res = sib(tmp_path, "repos", iso)
    assert res.returncode == 2 and res.stdout == ""
    lines = res.stderr.splitlines()
    assert lines[0] == (f"error: {SLES16_ISO} has no install/repodata/repomd.xml: a SLES 16 install ISO without "
                        "its package repository")
    assert lines[1].startswith("hint: use SLES-16.x-Full-<arch>-GM.install.iso") and len(lines) == 2
