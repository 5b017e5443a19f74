"""SP4 with an update repository: the case the GM media alone cannot build (IPA 12+ needs Python 3.11,
SP4's Media1 has python310). Built on the test media (Debian content, not SUSE software) without its
ISO: its RPMs are split into a "pool" repository without python311 and an "update" repository that
carries python311, both real rpm-md repositories (createrepo_c) served from loopback HTTP with basic
auth: the pool with the password in its URL, the update with a zypper credentials file, as RMT and
SCC registrations give them. Then no secret may be found anywhere the build wrote.

Signing keys are pinned: the pool is signed with the test media's key, which the test image trusts (as a
SLES image trusts SUSE's); the update repository with a key of its own (an RMT's), which the image does
not know. Without that key the build stops before any package is installed, naming the repository and
the key; with it given (gpgkey= in the URL) the build goes through."""

from __future__ import annotations

import json
import os
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
import zstandard
from repohttp import make_repo, serve

from sles_ipa_builder import run
from sles_ipa_builder.cache.store import cache_dir
from sles_ipa_builder.fixtures import signing
from sles_ipa_builder.inputs import media as media_mod
from sles_ipa_builder.inputs import repokeys

pytestmark = [pytest.mark.root, pytest.mark.guestfs, pytest.mark.media, pytest.mark.slow]
USER = "rmt-user"
POOL_PASSWORD = "pool-Pa55-" + "7f3c9e"
UPDATE_PASSWORD = "update-Pa55-" + "b81d42"
NAME = "ipa-sp4"


def split_media(iso: Path, dest: Path, media_keys: Path, rmt_keys: Path) -> tuple[Path, Path]:
    """Every RPM of the ISO into pool/ or (python311*) update/, each then made an rpm-md repository."""
    m = media_mod.open_media(iso)
    pool, update = dest / "pool", dest / "update"
    rpms: dict[str, list[Path]] = {"pool": [], "update": []}
    for path in m.index:
        if not path.endswith(".rpm"):
            continue
        name = Path(path).name
        kind = "update" if name.startswith("python311") else "pool"
        out = dest / "rpms" / kind / name
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_bytes(m.read(path))
        rpms[kind].append(out)
    assert {p.name.split("-")[0] for p in rpms["update"]} == {"python311"} and len(rpms["update"]) == 3
    make_repo(pool, rpms["pool"])
    make_repo(update, rpms["update"])
    signing.sign_repos([pool], media_keys)
    signing.sign_repos([update], rmt_keys)
    return pool, update


def env_for(profile_env: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DIB_", "IPA_", "IRONIC_", "SIB_"))}
    env.update(profile_env)
    env.update(DIB_SLES_SERVICE_PACK="SP4", SIB_ACCEL=os.environ.get("SIB_ACCEL", "tcg"))
    return env


def scan(places: list[Path], secrets: list[str]) -> list[str]:
    """Files (and decompressed initramfs contents) under `places` that hold any of the secrets."""
    found = []
    needles = [s.encode() for s in secrets]
    for place in places:
        files = [place] if place.is_file() else [p for p in place.rglob("*") if p.is_file() and not p.is_symlink()]
        for f in files:
            data = f.read_bytes()
            if f.suffix == ".initramfs":
                data = zstandard.ZstdDecompressor().stream_reader(data).read()
            if any(n in data for n in needles):
                found.append(str(f))
    return found


def test_sp4_with_an_update_repository_builds_current_ipa_with_python311(
        fixture_media: Any, tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root")
    rmt_keys = tmp_path / "rmt-key"
    rmt_fpr = signing.make_key(rmt_keys)
    pool, update = split_media(fixture_media.iso, tmp_path / "srv", fixture_media.signing, rmt_keys)
    images = tmp_path / "images"  # SP4 names, and no ISO
    images.mkdir()
    (images / "SLES15-SP4-Minimal-VM.x86_64-OpenStack-Cloud-GM.qcow2").symlink_to(fixture_media.base_ext4)
    creds = tmp_path / "credentials.d"
    creds.mkdir()
    (creds / "SLES_Updates").write_text(f"username={USER}\npassword={UPDATE_PASSWORD}\n")
    profile_env = tomllib.loads(fixture_media.profile.read_text())["env"]
    ws, out = tmp_path / "ws", tmp_path / "out"
    with serve(pool, USER, POOL_PASSWORD) as pool_url, serve(update, USER, UPDATE_PASSWORD) as update_url:
        pool_repo = pool_url.replace("//", f"//{USER}:{POOL_PASSWORD}@") + "/"
        unpinned = run.run([sys.executable, "-m", "sles_ipa_builder", "build", "--images-dir", str(images),
                            "--workspace", str(ws), "--repo-credentials", str(creds), "--output", str(out),
                            "--repo", pool_repo, update_url + "/?credentials=SLES_Updates"],
                           env=env_for(profile_env), check=False, capture=True)
        errors = [line for line in unpinned.stderr.splitlines() if line.startswith("error: ")]
        assert unpinned.returncode == 2, unpinned.stdout[-3000:] + unpinned.stderr[-3000:]
        assert len(errors) == 1 and errors[0] == (
            f"error: repository {update_url}/?credentials=SLES_Updates is signed by key {rmt_fpr[-16:]}, "
            "which neither the base image nor --repo-key trusts")
        assert not (out / f"{NAME}.initramfs").exists()
        repos = [pool_repo, update_url + f"/?credentials=SLES_Updates&gpgkey={rmt_keys / signing.PUBLIC}"]
        env = env_for(profile_env)
        common = ["--images-dir", str(images), "--workspace", str(ws), "--repo-credentials", str(creds),
                  "--repo", *repos]
        summary = run.run([sys.executable, "-m", "sles_ipa_builder", "summary", *common], env=env, capture=True)
        res = run.run([sys.executable, "-m", "sles_ipa_builder", "build", *common, "--output", str(out),
                       "--name", NAME, "--keep-workspace", "--report", str(tmp_path / "report.json")],
                      env=env, check=False, capture=True)
    log = res.stdout + res.stderr
    (tmp_path / "build-output.txt").write_text(log)
    assert res.returncode == 0, log[-6000:]
    flat = " ".join(log.split())  # the log wraps long lines (the update URL names its key file)
    assert "no Media1 ISO" in flat and "IPA venv python: python3.11 (python311 in http://127.0.0.1:" in flat
    assert f"imported signing key {rmt_fpr} (gpgkey= of http://127.0.0.1:" in flat
    manifest = json.loads((out / f"{NAME}.manifest.json").read_text())
    assert manifest["settings"]["service_pack"] == "SP4" and manifest["settings"]["sles_python"] == "python3.11"
    assert manifest["inputs"]["media"]["iso"] is None
    remote = manifest["inputs"]["media"]["remote"]
    update_alias = next(a for a, url in remote.items() if "credentials=SLES_Updates" in url)
    pool_alias = next(a for a, url in remote.items() if ":***@" in url)
    media_fpr = repokeys.read_file(fixture_media.signing / signing.PUBLIC)[0].fingerprint
    assert manifest["inputs"]["media"]["signed_by"] == {update_alias: rmt_fpr, pool_alias: media_fpr}
    by_repo = manifest["package_repositories"]
    assert by_repo["python311"].startswith(update_alias)
    assert "python311-pip" not in by_repo  # from the update repository too, but build-only: gone again
    assert by_repo["curl"].startswith(pool_alias)
    packages = (out / f"{NAME}.packages").read_text()
    assert f"python311 {update_alias} http://127.0.0.1:" in packages
    assert "ironic-python-agent==13.0.0" in packages  # requires-python >=3.11, as IPA master
    root = ws / "build/root"
    assert (root / "opt/ironic-python-agent/bin/python3.11").exists()
    assert not (root / "usr/sbin/sshd").exists() and not (root / "usr/bin/ss").exists()  # both switches off
    assert not (root / "etc/zypp/credentials.d/SLES_Updates").exists()
    assert not list((root / "etc/zypp/repos.d").glob("user-*.repo"))
    secrets = [POOL_PASSWORD, UPDATE_PASSWORD]
    leaks = scan([out, ws, tmp_path / "report.json", cache_dir("zypper")], secrets)
    assert leaks == [], leaks
    assert not any(s in log + summary.stdout + summary.stderr for s in secrets)
