"""Signing `<name>.sha256`, the one checksum file that covers every artifact, with minisign.

Why minisign and not gpg: a key is one file, no keyring, agent or trust database to set up on a
build host; Ed25519 signatures are deterministic, so with a fixed trusted comment the same sums give
the same signature; verifying needs only the public key (`minisign -Vm FILE -p KEY.pub`). It is
packaged by Debian (`minisign`) and SUSE.

An encrypted secret key reads its password from SIB_SIGN_PASSWORD (given to minisign on stdin,
never logged or put on a command line); a key made with `minisign -G -W` needs none.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from .. import __version__, run
from ..errors import ConfigError

log = logging.getLogger(__name__)

SIG_SUFFIX = "minisig"
PASSWORD_ENV = "SIB_SIGN_PASSWORD"


def check_key(key: Path) -> None:
    """A minisign secret key file, and the tool to use it: or ConfigError before any work."""
    try:
        head = key.read_text(errors="replace").splitlines()[:2]
    except OSError as e:
        raise ConfigError(f"sign_key: cannot read {key}: {e.strerror}", "give a minisign secret key file") from None
    if len(head) != 2 or not head[0].startswith("untrusted comment:") or "public key" in head[0]:
        raise ConfigError(f"sign_key: {key} is not a minisign secret key",
                          "make one with `minisign -G -s KEY -p KEY.pub` (-W: without a password)")
    if run.which("minisign") is None:
        raise ConfigError("sign_key is set but minisign is not installed", "apt-get install minisign")


def sign(path: Path, key: Path, sig: Path, *, comment: str | None = None) -> None:
    """Write `sig`, minisign's detached signature of `path` made with the secret key `key`."""
    check_key(key)
    trusted = comment or f"file:{path.name} sles-ipa-builder {__version__}"  # no timestamp: reproducible
    argv = ["minisign", "-S", "-s", str(key), "-m", str(path), "-x", str(sig), "-t", trusted]
    password = os.environ.get(PASSWORD_ENV, "")
    out = run.run(argv, input=password + "\n", capture=True, check=False)
    if out.returncode != 0 or not sig.is_file():
        detail = out.stderr.strip().splitlines()
        reason = next((line for line in reversed(detail) if line.strip() and "Password" not in line), "")
        hint = (f"an encrypted key needs its password in {PASSWORD_ENV}" if not password
                else f"check the key and {PASSWORD_ENV}")
        raise ConfigError(f"signing {path.name} with {key} failed: {reason or f'exit {out.returncode}'}", hint)
    log.info("signed %s with %s -> %s", path.name, key, sig.name)


def verify(path: Path, pubkey: Path, sig: Path) -> bool:
    """minisign's own verification of a detached signature."""
    out = run.run(["minisign", "-V", "-p", str(pubkey), "-m", str(path), "-x", str(sig), "-q"],
                  capture=True, check=False)
    return out.returncode == 0
