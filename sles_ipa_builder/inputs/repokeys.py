"""Signing keys pinned: zypper never imports a key on its own, and a repository is used only when its
metadata is signed by a key the build was told to trust.

Trusted are:
- the keys the base image already trusts: the `gpg-pubkey` entries of its rpm database, and the key
  files `suse-build-key` ships in /usr/lib/rpm/gnupg/keys (a real SLES image has SUSE's keys there);
- keys the user gives: `--repo-key FILE` for every `--repo` repository, or `gpgkey=FILE` in one
  repository's URL for that repository only.

Before the build's first zypper call, every repository's `repodata/repomd.xml` is checked on the host
with gpgv against those keys. So an unsigned repository, a key nobody trusts or a bad signature stops
the build with one line naming the repository and the key id, exit 2, before any package is
installed. The keys that signed are then imported into the target's rpm database when it does not
hold them yet (`rpm --import`), and zypper, run without `--gpg-auto-import-keys`, checks every
signature again itself, and every package against the checksums in the signed metadata.
"""

from __future__ import annotations

import base64
import hashlib
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

from .. import run
from ..errors import ConfigError

IMAGE_KEY_DIR = "usr/lib/rpm/gnupg/keys"  # suse-build-key's files
SIGNATURE = "repodata/repomd.xml.asc"
ARMOR = re.compile(r"-----BEGIN PGP PUBLIC KEY BLOCK-----\n(.*?)-----END PGP PUBLIC KEY BLOCK-----", re.S)
GIVE_KEY = "if you trust its signer, give the public key: --repo-key FILE, or gpgkey=FILE in that --repo URL"


@dataclass(frozen=True)
class Key:
    data: bytes  # the certificate, binary (dearmored)
    origin: str  # where it came from, as a user would name it

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.data)

    @property
    def rpm_version(self) -> str:
        """The VERSION of the key's gpg-pubkey entry in an rpm database: its short key id, lowercase."""
        return self.fingerprint[-8:].lower()

    def armored(self) -> str:
        body = base64.b64encode(self.data).decode()
        lines = [body[i:i + 64] for i in range(0, len(body), 64)]
        return "\n".join(["-----BEGIN PGP PUBLIC KEY BLOCK-----", "", *lines,
                          "=" + base64.b64encode(_crc24(self.data)).decode(), "-----END PGP PUBLIC KEY BLOCK-----", ""])


def _crc24(data: bytes) -> bytes:
    crc = 0xB704CE
    for byte in data:
        crc ^= byte << 16
        for _ in range(8):
            crc <<= 1
            if crc & 0x1000000:
                crc ^= 0x1864CFB
    return (crc & 0xFFFFFF).to_bytes(3, "big")


def _packets(data: bytes) -> list[tuple[int, bytes]]:
    """OpenPGP packets (RFC 4880 4.2) as (tag, body); ValueError when `data` is not packets."""
    out, i = [], 0
    while i < len(data):
        first = data[i]
        if not first & 0x80:
            raise ValueError("not an OpenPGP packet")
        if first & 0x40:  # new format
            tag, octet = first & 0x3F, data[i + 1]
            if octet < 192:
                size, head = octet, 2
            elif octet < 224:
                size, head = ((octet - 192) << 8) + data[i + 2] + 192, 3
            elif octet == 255:
                size, head = int.from_bytes(data[i + 2:i + 6], "big"), 6
            else:
                raise ValueError("partial body lengths are not used in keys")
        else:
            tag, kind = (first >> 2) & 0x0F, first & 3
            width = {0: 1, 1: 2, 2: 4}.get(kind)
            if width is None:
                raise ValueError("indeterminate packet length")
            size, head = int.from_bytes(data[i + 1:i + 1 + width], "big"), 1 + width
        if i + head + size > len(data):
            raise ValueError("truncated packet")
        out.append((tag, data[i + head:i + head + size]))
        i += head + size
    return out


def fingerprint(cert: bytes) -> str:
    """The primary key's fingerprint (v4: SHA-1; v6: SHA-256), upper-case hex."""
    tag, body = _packets(cert)[0]
    if tag != 6:
        raise ValueError("not a public key")
    if body[0] == 4:
        return hashlib.sha1(b"\x99" + len(body).to_bytes(2, "big") + body).hexdigest().upper()  # noqa: S324
    if body[0] == 6:
        return hashlib.sha256(b"\x9b" + len(body).to_bytes(4, "big") + body).hexdigest().upper()
    raise ValueError(f"OpenPGP key version {body[0]} is not supported")


def parse(text: str, origin: str) -> list[Key]:
    """Every armored public key block in `text`."""
    keys = []
    for block in ARMOR.findall(text.replace("\r\n", "\n")):
        lines = [ln for ln in block.split("\n\n", 1)[-1].splitlines() if ln and not ln.startswith("=")]
        try:
            key = Key(base64.b64decode("".join(lines), validate=True), origin)
            key.fingerprint  # noqa: B018 - proves it is a public key
        except (ValueError, IndexError):
            continue
        keys.append(key)
    return keys


def read_file(path: Path, origin: str = "") -> list[Key]:
    """The public keys in a file (armored, or one binary certificate); ConfigError when there are none."""
    origin = origin or f"--repo-key {path}"
    try:
        data = path.read_bytes()
    except OSError as e:
        raise ConfigError(f"repository key {path} cannot be read: {e.strerror}",
                          "give an OpenPGP public key file") from None
    keys = parse(data.decode(errors="replace"), origin)
    if not keys:
        try:
            keys = [Key(data, origin)] if data and fingerprint(data) else []
        except (ValueError, IndexError):
            keys = []
    if not keys:
        raise ConfigError(f"repository key {path} holds no OpenPGP public key",
                          "give the repository's public key (its repodata/repomd.xml.key, or "
                          "`gpg --export --armor KEYID`)")
    return keys


def image_keys(root: Path, rpm_descriptions: str) -> list[Key]:
    """The keys the base image trusts: its rpm database's gpg-pubkey entries (their descriptions, as
    `rpm -q gpg-pubkey --qf '%{DESCRIPTION}'` prints them in the target) and suse-build-key's files."""
    keys = parse(rpm_descriptions, "the base image's rpm database")
    for f in sorted((root / IMAGE_KEY_DIR).glob("*.asc")) if (root / IMAGE_KEY_DIR).is_dir() else []:
        keys += parse(f.read_text(errors="replace"), f"the base image's /{IMAGE_KEY_DIR}/{f.name}")
    return keys


@dataclass(frozen=True)
class Verified:
    fingerprint: str  # of the primary key that signed
    key: Key


def verify(shown: str, repomd: bytes, signature: bytes | None, keys: list[Key]) -> Verified:
    """gpgv over a repository's repomd.xml and its detached signature, with only `keys` trusted."""
    if signature is None:
        raise ConfigError(f"repository {shown} is not signed: it has no {SIGNATURE}",
                          "sign the repository's metadata (e.g. `gpg --detach-sign --armor repodata/repomd.xml`) "
                          "and give the key with --repo-key FILE")
    with tempfile.TemporaryDirectory(prefix="sib-gpgv-") as tmp:
        t = Path(tmp)
        (t / "home").mkdir(mode=0o700)
        (t / "keyring.gpg").write_bytes(b"".join(k.data for k in keys))
        (t / "repomd.xml").write_bytes(repomd)
        (t / "repomd.xml.asc").write_bytes(signature)
        res = run.run(["gpgv", "--homedir", t / "home", "--status-fd", "1", "--keyring", t / "keyring.gpg",
                       t / "repomd.xml.asc", t / "repomd.xml"], capture=True, check=False)
    status = {m.group(1): m.group(2).split() for m in re.finditer(r"^\[GNUPG:\] (\w+) ?(.*)$", res.stdout, re.M)}
    if res.returncode == 0 and "VALIDSIG" in status and "GOODSIG" in status:
        primary = status["VALIDSIG"][-1].upper()
        key = next((k for k in keys if k.fingerprint == primary), None)
        if key is not None:
            return Verified(primary, key)
    if "NO_PUBKEY" in status:
        raise ConfigError(f"repository {shown} is signed by key {status['NO_PUBKEY'][0]}, which neither the base "
                          "image nor --repo-key trusts", GIVE_KEY)
    for word, what in (("BADSIG", "a bad signature (the metadata changed after it was signed)"),
                       ("EXPKEYSIG", "a signature by an expired key"), ("REVKEYSIG", "a signature by a revoked key")):
        if word in status:
            raise ConfigError(f"repository {shown}: repodata/repomd.xml has {what}, key {status[word][0]}",
                              "check the mirror: its metadata must be as the repository's owner signed it")
    detail = (res.stderr.strip().splitlines() or ["no valid signature"])[-1]
    raise ConfigError(f"repository {shown}: {SIGNATURE} does not verify: {detail}",
                      "check the mirror: its metadata must be as the repository's owner signed it")
