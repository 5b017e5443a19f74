"""Pinned signing keys (inputs/repokeys.py) with real keys (gpg), real signatures and gpgv: a repository
is used only when its repomd.xml is signed by a trusted key; the error names the repository and the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from sles_ipa_builder import run
from sles_ipa_builder.errors import ConfigError
from sles_ipa_builder.fixtures import signing
from sles_ipa_builder.inputs import repokeys, repos


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, str]]:
    """Two signing keys: name -> (key directory, fingerprint)."""
    out = {}
    for name in ("media", "rmt"):
        d = tmp_path_factory.mktemp(f"key-{name}")
        out[name] = (d, signing.make_key(d))
    return out


def signed_repo(tmp_path: Path, keydir: Path, name: str = "repo") -> Path:
    repo = tmp_path / name
    (repo / "repodata").mkdir(parents=True)
    (repo / "repodata/repomd.xml").write_text(f"<repomd><revision>{name}</revision></repomd>\n")
    signing.sign_repos([repo], keydir)
    return repo


def test_fingerprint_and_armor_agree_with_gpg(keys: dict[str, tuple[Path, str]], tmp_path: Path) -> None:
    keydir, fpr = keys["media"]
    [key] = repokeys.read_file(keydir / signing.PUBLIC)
    assert key.fingerprint == fpr and key.rpm_version == fpr[-8:].lower()
    again = tmp_path / "again.asc"
    again.write_text(key.armored())  # our armor (with its CRC-24) is one gpg reads back
    shown = run.output(["gpg", "--homedir", tmp_path, "--batch", "--with-colons", "--show-keys", again])
    assert f"fpr:::::::::{fpr}:" in shown
    crc = next(line for line in (keydir / signing.PUBLIC).read_text().splitlines() if line.startswith("="))
    assert key.armored().splitlines()[-2] == crc
    binary = tmp_path / "key.gpg"
    binary.write_bytes(key.data)
    assert [k.fingerprint for k in repokeys.read_file(binary)] == [fpr]  # a binary key file too


def test_a_file_without_a_public_key_is_one_line(keys: dict[str, tuple[Path, str]], tmp_path: Path) -> None:
    junk = tmp_path / "junk.asc"
    junk.write_text("-----BEGIN PGP PUBLIC KEY BLOCK-----\n\nbm90IGEga2V5\n-----END PGP PUBLIC KEY BLOCK-----\n")
    with pytest.raises(ConfigError, match=f"^repository key {junk} holds no OpenPGP public key$"):
        repokeys.read_file(junk)
    with pytest.raises(ConfigError, match="^repository key .*/secret.asc holds no OpenPGP public key$"):
        (tmp_path / "secret.asc").write_bytes((keys["media"][0] / signing.SECRET).read_bytes())
        repokeys.read_file(tmp_path / "secret.asc")
    with pytest.raises(ConfigError, match="cannot be read"):
        repokeys.read_file(tmp_path / "missing.asc")


def test_a_trusted_key_verifies_and_says_which(keys: dict[str, tuple[Path, str]], tmp_path: Path) -> None:
    repo = signed_repo(tmp_path, keys["media"][0])
    trusted = repokeys.read_file(keys["media"][0] / signing.PUBLIC, "the image") + \
        repokeys.read_file(keys["rmt"][0] / signing.PUBLIC, "--repo-key rmt.asc")
    done = repokeys.verify("repo", (repo / "repodata/repomd.xml").read_bytes(),
                           (repo / "repodata/repomd.xml.asc").read_bytes(), trusted)
    assert done.fingerprint == keys["media"][1] and done.key.origin == "the image"


def test_an_unknown_key_names_the_repository_and_the_key(keys: dict[str, tuple[Path, str]], tmp_path: Path) -> None:
    repo = signed_repo(tmp_path, keys["rmt"][0])
    image = repokeys.read_file(keys["media"][0] / signing.PUBLIC, "the image")
    with pytest.raises(ConfigError) as e:
        repokeys.verify("http://rmt.example/update/", (repo / "repodata/repomd.xml").read_bytes(),
                        (repo / "repodata/repomd.xml.asc").read_bytes(), image)
    assert e.value.message == (f"repository http://rmt.example/update/ is signed by key {keys['rmt'][1][-16:]}, "
                               "which neither the base image nor --repo-key trusts")
    assert "--repo-key FILE" in e.value.hint and e.value.exit_code == 2


def test_changed_metadata_is_a_bad_signature(keys: dict[str, tuple[Path, str]], tmp_path: Path) -> None:
    repo = signed_repo(tmp_path, keys["media"][0])
    repomd = (repo / "repodata/repomd.xml").read_bytes().replace(b"repo", b"evil")
    trusted = repokeys.read_file(keys["media"][0] / signing.PUBLIC)
    with pytest.raises(ConfigError, match=rf"^repository r: repodata/repomd.xml has a bad signature .*key "
                                          rf"{keys['media'][1][-16:]}$"):
        repokeys.verify("r", repomd, (repo / "repodata/repomd.xml.asc").read_bytes(), trusted)


def test_an_unsigned_repository_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"^repository r is not signed: it has no repodata/repomd.xml.asc$"):
        repokeys.verify("r", b"<repomd/>", None, [])


def test_image_keys_come_from_the_rpm_database_and_suse_build_key_files(
        keys: dict[str, tuple[Path, str]], tmp_path: Path) -> None:
    media, rmt = (keys[n][0] / signing.PUBLIC for n in ("media", "rmt"))
    (tmp_path / repokeys.IMAGE_KEY_DIR).mkdir(parents=True)
    (tmp_path / repokeys.IMAGE_KEY_DIR / "gpg-pubkey-rmt.asc").write_text(rmt.read_text())
    rpm_output = f"{media.read_text()}\nno key here\n"  # as `rpm -q gpg-pubkey --qf '%{{DESCRIPTION}}\\n'`
    found = repokeys.image_keys(tmp_path, rpm_output)
    assert [(k.fingerprint, k.origin) for k in found] == [
        (keys["media"][1], "the base image's rpm database"),
        (keys["rmt"][1], f"the base image's /{repokeys.IMAGE_KEY_DIR}/gpg-pubkey-rmt.asc")]


def test_gpgkey_in_a_url_is_the_builders_not_the_servers(tmp_path: Path) -> None:
    r = repos.Repo("https://u:secret@rmt.example/repo/?credentials=RMT&gpgkey=/etc/rmt.asc&token")
    assert r.key_file == Path("/etc/rmt.asc")
    assert r.zypper_url == "https://u:secret@rmt.example/repo/?credentials=RMT&token"
    assert r.shown == "https://u:***@rmt.example/repo/?credentials=RMT&gpgkey=/etc/rmt.asc&***"
    assert "/etc/rmt.asc" not in r.secrets() and "token" in r.secrets()
    assert repos.Repo("https://rmt.example/repo/").key_file is None


def test_signed_metadata_reads_the_signature_when_there_is_one(keys: dict[str, tuple[Path, str]],
                                                                tmp_path: Path) -> None:
    repo = signed_repo(tmp_path, keys["media"][0])
    repomd, sig = repos.signed_metadata(repos.Repo(repo.as_uri()), {}, None)
    assert repomd == (repo / "repodata/repomd.xml").read_bytes() and sig is not None
    assert sig.startswith(b"-----BEGIN PGP SIGNATURE-----")
    (repo / "repodata/repomd.xml.asc").unlink()
    assert repos.signed_metadata(repos.Repo(repo.as_uri()), {}, None)[1] is None


def test_a_bad_key_file_stops_the_command_before_any_work(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from sles_ipa_builder.__main__ import main

    junk = tmp_path / "rmt.asc"
    junk.write_text("not a key\n")
    assert main(["summary", "--images-dir", str(tmp_path), "--repo-key", str(junk)]) == 2
    assert capsys.readouterr().err.splitlines()[0] == f"error: repository key {junk} holds no OpenPGP public key"
    assert main(["summary", "--images-dir", str(tmp_path), "--repo", f"https://rmt.example/r/?gpgkey={junk}"]) == 2
    assert capsys.readouterr().err.splitlines()[0] == f"error: repository key {junk} holds no OpenPGP public key"
