"""One checksum file for every artifact, signed with minisign and verified by minisign."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from conftest import write_artifacts

from sles_ipa_builder import run
from sles_ipa_builder.__main__ import main
from sles_ipa_builder.config import resolve as config
from sles_ipa_builder.delivery import artifacts as outputs
from sles_ipa_builder.delivery import sign
from sles_ipa_builder.errors import ConfigError
from sles_ipa_builder.packing.compress import Compression

pytestmark = pytest.mark.skipif(shutil.which("minisign") is None, reason="minisign is not installed")
KVER = "6.4.0-150600.23.25-default"


def make_tree(base: Path) -> Path:
    for rel, data in {f"boot/vmlinuz-{KVER}": b"KERNEL", f"boot/config-{KVER}": b"CONFIG_RD_GZIP=y\n",
                      "usr/bin/true": b"x"}.items():  # fmt: skip
        (base / rel).parent.mkdir(parents=True, exist_ok=True)
        (base / rel).write_bytes(data)
    return base


def keypair(tmp_path: Path, password: str | None = None) -> tuple[Path, Path]:
    sec, pub = tmp_path / "sib.key", tmp_path / "sib.pub"
    argv = ["minisign", "-G", "-f", "-s", sec, "-p", pub] + ([] if password else ["-W"])
    run.run(argv, input=f"{password}\n{password}\n" if password else "", capture=True)
    return sec, pub


def _write(tree: Path, out: Path, key: Path | None) -> outputs.Artifacts:
    return write_artifacts(tree, out, "ipa", Compression.parse("gzip"), size_limit_mb=None,
                           source_date_epoch=1_700_000_000, sign_key=key, progress=False)


def test_signed_sums_cover_everything_and_verify(tmp_path: Path) -> None:
    sec, pub = keypair(tmp_path)
    out = tmp_path / "out"
    arts = _write(make_tree(tmp_path / "root"), out, sec)
    sums, sig = arts.sha256, out / "ipa.sha256.minisig"
    listed = {line.split()[1] for line in sums.read_text().splitlines()}
    # everything a user hands on, except the checksum files themselves
    assert listed == {p.name for p in out.iterdir()} - {"ipa.sha256", "ipa.sha256.minisig", "ipa.tar.gz.sha256"}
    run.run(["sha256sum", "--quiet", "-c", sums.name], cwd=out)
    assert sign.verify(sums, pub, sig)
    verified = run.run(["minisign", "-V", "-p", pub, "-m", sums, "-x", sig], capture=True)
    assert "file:ipa.sha256" in verified.stdout  # the trusted comment names the file
    # a changed sums file, or a key that is not ours, fails verification
    sums.write_text(sums.read_text().replace("ipa.tar\n", "ipa.tar.old\n"))
    assert not sign.verify(sums, pub, sig)
    (tmp_path / "other").mkdir()
    _, other_pub = keypair(tmp_path / "other")
    run.run(["sha256sum", "--quiet", "-c", sums.name], cwd=out, check=False)
    sums.write_text(sums.read_text().replace("ipa.tar.old\n", "ipa.tar\n"))
    assert sign.verify(sums, pub, sig) and not sign.verify(sums, other_pub, sig)


def test_signature_is_reproducible_and_goes_when_unsigned(tmp_path: Path) -> None:
    sec, _ = keypair(tmp_path)
    tree = make_tree(tmp_path / "root")
    _write(tree, tmp_path / "a", sec)
    # same sums, same key, no timestamp in the trusted comment: the same signature (the manifest records
    # timings, so two builds' sums differ: sign one file twice)
    sums = tmp_path / "a/ipa.sha256"
    sign.sign(sums, sec, tmp_path / "again.minisig", comment="file:ipa.sha256")
    assert (tmp_path / "again.minisig").read_bytes() == (tmp_path / "a/ipa.sha256.minisig").read_bytes()
    _write(tree, tmp_path / "a", None)  # an unsigned build after a signed one leaves no stale signature
    assert not (tmp_path / "a/ipa.sha256.minisig").exists() and (tmp_path / "a/ipa.sha256").is_file()


@pytest.mark.slow  # minisign derives the key with scrypt: seconds a call
def test_encrypted_key_takes_its_password_from_the_environment(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    sec, pub = keypair(tmp_path, password="s3cret-pw")
    tree = make_tree(tmp_path / "root")
    monkeypatch.delenv(sign.PASSWORD_ENV, raising=False)
    with pytest.raises(ConfigError) as e:
        _write(tree, tmp_path / "out", sec)
    assert sign.PASSWORD_ENV in e.value.hint
    assert not (tmp_path / "out/ipa.sha256").exists()  # nothing committed: no unsigned set looks signed
    monkeypatch.setenv(sign.PASSWORD_ENV, "s3cret-pw")
    arts = _write(tree, tmp_path / "out", sec)
    assert sign.verify(arts.sha256, pub, tmp_path / "out/ipa.sha256.minisig")


def test_a_bad_sign_key_stops_before_any_work(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    _, pub = keypair(tmp_path)
    for bad in (pub, tmp_path / "missing.key"):
        with pytest.raises(ConfigError, match="sign_key"):
            config.resolve({"sign_key": str(bad), "workspace": str(tmp_path / "ws")}, environ={})
    monkeypatch.setenv("SIB_SIGN_KEY", str(pub))
    assert main(["summary", "--workspace", str(tmp_path / "ws")]) == 2
    err = capsys.readouterr().err
    assert "error: sign_key:" in err and "not a minisign secret key" in err
