"""Add-on cpios: configure a built ramdisk without rebuilding it.

`sles-ipa-builder addon --ca-bundle FILE --ssh-key FILE --network-data FILE -o addon.cpio` writes a
small uncompressed newc archive holding only /etc/sles-ipa-addon/. The kernel unpacks every archive
it is given one after the other into the same root, so the add-on is either concatenated to the
initramfs (`cat ipa.initramfs addon.cpio > ipa-site.initramfs`) or given as a second initrd, as
metal3 does with its CA bundle. At boot, the ramdisk's `sles-ipa-addon.service` (element
sles-ipa-addon, run before the network and the agent) applies what it finds there:

- `ca-bundle.pem`: appended to the IPA venv's trust bundle (certifi, what the agent's requests use)
  and added to the system trust store;
- `authorized_keys` (+ `ssh-user`): given to the dev user (or the user named with --ssh-user);
- `network_data.json` (OpenStack's format: links, networks, services) or `nmstate.yml`: a static
  configuration for systemd-networkd, NetworkManager or wicked, whichever the ramdisk runs.
"""

from __future__ import annotations

import json
import re
import shutil
import stat
from pathlib import Path

import yaml

from ..errors import InputError
from ..packing import cpio

DIR = "etc/sles-ipa-addon"
KEY_TYPE_RE = re.compile(r"^(ssh-(rsa|ed25519|dss)|ecdsa-sha2-[\w-]+|sk-[\w@.-]+)$")
KEY_DATA_RE = re.compile(r"^AAAA[A-Za-z0-9+/]+=*$")
USER_RE = re.compile(r"^[a-z_][a-z0-9_.-]{0,31}$")


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as e:
        raise InputError(f"{what}: cannot read {path}: {e.strerror}", "give an existing, readable file") from None


def check_ca_bundle(data: bytes, path: Path) -> bytes:
    n = data.count(b"-----BEGIN CERTIFICATE-----")
    if n == 0 or n != data.count(b"-----END CERTIFICATE-----"):
        raise InputError(f"--ca-bundle {path}: no PEM certificate in it", "give a PEM file of CA certificates")
    if b"PRIVATE KEY-----" in data:
        raise InputError(f"--ca-bundle {path} holds a private key", "give only the CA certificates")
    return data if data.endswith(b"\n") else data + b"\n"


def _is_public_key(line: str) -> bool:
    """[options] type base64 [comment], as in authorized_keys."""
    words = line.split()
    return any(KEY_TYPE_RE.match(w) and i + 1 < len(words) and KEY_DATA_RE.match(words[i + 1])
               for i, w in enumerate(words))


def check_ssh_keys(data: bytes, path: Path) -> bytes:
    lines = [line.strip() for line in data.decode(errors="replace").splitlines()]
    keys = [line for line in lines if line and not line.startswith("#")]
    bad = [line for line in keys if not _is_public_key(line)]
    if not keys or bad:
        shown = (bad[0][:40] + "...") if bad else "(empty)"
        raise InputError(f"--ssh-key {path}: not an OpenSSH public key line: {shown}",
                         "give a public key (id_ed25519.pub) or an authorized_keys file, never a private key")
    return ("\n".join(keys) + "\n").encode()


def check_network_data(data: bytes, path: Path) -> tuple[str, bytes]:
    """(file name in the add-on, content): network_data.json or nmstate.yml."""
    text = data.decode(errors="replace")
    try:
        doc = json.loads(text)
    except ValueError:
        doc = None
    if isinstance(doc, dict) and isinstance(doc.get("links"), list) and isinstance(doc.get("networks"), list):
        return "network_data.json", data
    try:
        ydoc = yaml.safe_load(text)
    except yaml.YAMLError:
        ydoc = None
    if isinstance(ydoc, dict) and isinstance(ydoc.get("interfaces"), list):
        return "nmstate.yml", data
    raise InputError(f"--network-data {path}: neither an OpenStack network_data.json (links, networks) "
                     "nor an NMState document (interfaces)", "give network_data.json or an NMState YAML file")


def entries(files: dict[str, tuple[bytes, int]], mtime: int = 0) -> list[cpio.Entry]:
    """The archive members: /etc and /etc/sles-ipa-addon as they are in the ramdisk, then the files.

    The kernel applies a directory entry's mode and owner to an existing directory: /etc keeps 0755 root."""
    out = [cpio.Entry(b"etc", stat.S_IFDIR | 0o755, 0, 0, mtime),
           cpio.Entry(DIR.encode(), stat.S_IFDIR | 0o700, 0, 0, mtime)]
    for name in sorted(files):
        data, perm = files[name]
        out.append(cpio.Entry(f"{DIR}/{name}".encode(), stat.S_IFREG | perm, 0, 0, mtime, len(data), data=data))
    return out


ALIGN = 4  # the kernel looks for an uncompressed cpio only at 4-byte aligned offsets; boot loaders align initrds


def combine(initramfs: Path, addon: Path, output: Path) -> None:
    """initramfs, zero padding to the next 4 bytes (the kernel skips zeros between archives), the add-on:
    what a boot loader puts in memory for two initrds. A plain `cat` misaligns the add-on, and the
    kernel then reports "invalid magic at start of compressed archive" and ignores it."""
    tmp = output.with_name(f".{output.name}.tmp")
    with tmp.open("wb") as f:
        with initramfs.open("rb") as src:
            shutil.copyfileobj(src, f, 4 << 20)
        f.write(b"\0" * (-f.tell() % ALIGN))
        f.write(addon.read_bytes())
    tmp.replace(output)


def make_addon(output: Path, *, ca_bundle: Path | None = None, ssh_key: Path | None = None,
               network_data: Path | None = None, ssh_user: str | None = None,
               mtime: int = 0) -> dict[str, int]:  # fmt: skip
    """Write the add-on archive; return its files and their sizes."""
    if not (ca_bundle or ssh_key or network_data):
        raise InputError("an add-on needs at least one of --ca-bundle, --ssh-key, --network-data", "")
    files: dict[str, tuple[bytes, int]] = {}
    if ca_bundle is not None:
        files["ca-bundle.pem"] = (check_ca_bundle(_read(ca_bundle, "--ca-bundle"), ca_bundle), 0o644)
    if ssh_key is not None:
        files["authorized_keys"] = (check_ssh_keys(_read(ssh_key, "--ssh-key"), ssh_key), 0o600)
    if ssh_user is not None:
        if not USER_RE.match(ssh_user):
            raise InputError(f"--ssh-user {ssh_user!r} is not a user name", "give a plain login name")
        files["ssh-user"] = (ssh_user.encode() + b"\n", 0o644)
    if network_data is not None:
        name, data = check_network_data(_read(network_data, "--network-data"), network_data)
        files[name] = (data, 0o600)
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.with_name(f".{output.name}.tmp")
    with tmp.open("wb") as f:
        cpio.write(entries(files, mtime), f)
    tmp.replace(output)
    return {name: len(data) for name, (data, _) in files.items()}
