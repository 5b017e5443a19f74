"""Pinned keys with the real zypper, rpm and gpgv, in a copy of the test media's root (Debian content,
not SUSE software): the image trusts the media's signing key from its rpm database; a repository signed
by a key it does not know is refused, by the build's check and by zypper itself (no auto-import); the
user's key lets it through; a package changed after signing is refused."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
from repohttp import build_rpm, make_repo, serve

from sles_ipa_builder import run
from sles_ipa_builder.errors import ConfigError
from sles_ipa_builder.fixtures import signing
from sles_ipa_builder.inputs import media, repokeys, repos, zypper
from sles_ipa_builder.steps import repotrust

pytestmark = [pytest.mark.root, pytest.mark.media]

SCRIPT = r"""
set -u
root=$1; shift
mount -t proc proc "$root/proc"
mount --rbind /dev "$root/dev"
rm -rf "$root/var/cache/zypp/solv/@System"  # rpm -e changed the database: zypper must read it again
exec chroot "$root" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8 \
    no_proxy=127.0.0.1,localhost NO_PROXY=127.0.0.1,localhost "$@"
"""


def in_root(root: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["unshare", "--mount", "--fork", "--propagation", "private", "sh", "-c", SCRIPT,
                           "in-root", str(root), *argv], capture_output=True, text=True)


def test_pinned_keys_with_zypper_in_the_test_root(fixture_media: Any, tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    run.run(["cp", "-a", "--reflink=auto", f"{fixture_media.root_tree}/.", f"{root}/"])
    rpmdb = in_root(root, "rpm", "-q", "gpg-pubkey", "--qf", "%{DESCRIPTION}\n").stdout
    image = repokeys.image_keys(root, rpmdb)
    media_fpr = repokeys.read_file(fixture_media.signing / signing.PUBLIC)[0].fingerprint
    assert [k.fingerprint for k in image] == [media_fpr]
    # the ISO's modules are signed by the media's key, which the image trusts
    on_iso = repotrust.media_metadata(media.open_media(fixture_media.iso))
    assert len(on_iso) >= 4 and all(signature for _, _, signature in on_iso)
    for alias, repomd, signature in on_iso:
        assert repokeys.verify(alias, repomd, signature, image).fingerprint == media_fpr

    # an RMT of the user's own, signed by its own key
    rmt_keys = tmp_path / "rmt-key"
    rmt_fpr = signing.make_key(rmt_keys)
    pkg = build_rpm(tmp_path / "rpms", "sib-signed-test", {"/usr/share/sib-signed-test/hello": "hello\n"})
    repo = make_repo(tmp_path / "rmt", [pkg])
    signing.sign_repos([repo], rmt_keys)
    with serve(repo) as url:
        user = repos.Repo(url + "/")
        repomd, sig = repos.signed_metadata(user, {}, None)
        with pytest.raises(ConfigError, match=f"is signed by key {rmt_fpr[-16:]}, which neither the base image"):
            repokeys.verify(user.shown, repomd, sig, image)
        given = repokeys.read_file(rmt_keys / signing.PUBLIC)
        assert repokeys.verify(user.shown, repomd, sig, image + given).fingerprint == rmt_fpr

        zypper.write_repos(root, [(user.alias, user.zypper_url)])
        refresh = in_root(root, *zypper.refresh_argv())
        assert refresh.returncode != 0, refresh.stdout  # zypper imports no key by itself
        assert "Do you want to reject the key" in refresh.stdout and "(r): r" in refresh.stdout

        (root / "tmp/rmt.asc").write_text(given[0].armored())
        assert in_root(root, "rpm", "--import", "/tmp/rmt.asc").returncode == 0
        assert in_root(root, *zypper.refresh_argv()).returncode == 0
        install = in_root(root, *zypper.install_argv(["sib-signed-test"]))
        assert install.returncode == 0, install.stdout + install.stderr
        assert (root / "usr/share/sib-signed-test/hello").read_text() == "hello\n"

        # the package changed on the server after the metadata was signed
        assert in_root(root, "rpm", "-e", "sib-signed-test").returncode == 0
        served = repo / pkg.name
        data = bytearray(served.read_bytes())
        data[-16] ^= 0xFF
        served.write_bytes(bytes(data))
        again = in_root(root, *zypper.install_argv(["sib-signed-test"]))
        assert again.returncode != 0 and "corrupted" in again.stdout, again.stdout
        assert not (root / "usr/share/sib-signed-test/hello").exists()
