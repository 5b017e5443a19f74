"""The media step's check of every repository's signature (inputs/repokeys.py says what is trusted),
before the first zypper call: the Media1 ISO's modules read from the ISO, each --repo from its
server (offline: from zypper's cache). The keys that signed and are not in the target's rpm database
yet are imported into it, so that zypper, which never imports a key itself, trusts them too."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from .. import run
from ..cache.store import cache_dir
from ..engine.target import chroot_env, run_in_target
from ..inputs import repokeys, repos

if TYPE_CHECKING:
    from ..engine.state import Plan, Runtime
    from ..inputs.media import Media

log = logging.getLogger(__name__)

IMPORT_DIR = "tmp/sib-repo-keys"


def given_keys(plan: Plan) -> list[repokeys.Key]:
    return [k for f in plan.cfg.repo_keys for k in repokeys.read_file(f)]


def check(plan: Plan, rt: Runtime, m: Media | None, user: list[repos.Repo]) -> dict[str, str]:
    """alias -> fingerprint of the key that signed the repository's metadata; a ConfigError (exit 2)
    naming the repository and the key when one is unsigned, signed by an untrusted key or badly."""
    cfg = plan.cfg
    rpmdb = run.run(run.chroot_argv(plan.root, ["rpm", "-q", "gpg-pubkey", "--qf", "%{DESCRIPTION}\n"]),
                    env=chroot_env(plan, rt.env), capture=True, check=False).stdout
    image = repokeys.image_keys(plan.root, rpmdb)
    given = given_keys(plan)
    signed: dict[str, repokeys.Verified] = {}
    if m is not None:
        for alias, repomd, signature in media_metadata(m):
            signed[alias] = repokeys.verify(f"{alias} on {m.iso.name}", repomd, signature, image + given)
    creds = repos.load_credentials(list(cfg.repo_credentials))
    for repo in user:
        own = repokeys.read_file(repo.key_file, f"gpgkey= of {repo.shown}") if repo.key_file else []
        repomd, signature = repos.signed_metadata(repo, creds, cfg.ca_bundle,
                                                  zypper_cache=cache_dir("zypper") if cfg.offline else None)
        signed[repo.alias] = repokeys.verify(repo.shown, repomd, signature, image + given + own)
    in_rpmdb = {k.rpm_version for k in repokeys.parse(rpmdb, "")}
    missing = {v.fingerprint: v.key for v in signed.values() if v.key.rpm_version not in in_rpmdb}
    for fpr, key in sorted(missing.items()):
        _import(plan, rt, key)
        log.info("imported signing key %s (%s) into the target's rpm database", fpr, key.origin)
    for alias, v in signed.items():
        log.debug("repository %s: signed by %s (%s)", alias, v.fingerprint, v.key.origin)
    return {alias: v.fingerprint for alias, v in signed.items()}


def media_metadata(m: Media) -> list[tuple[str, bytes, bytes | None]]:
    """(alias, repomd.xml, its signature or None) of each repository on the ISO."""
    out = []
    for r in m.repos:
        base = f"/{r.dir}" if r.dir else ""
        try:
            signature: bytes | None = m.read(f"{base}/{repokeys.SIGNATURE}")
        except KeyError:
            signature = None
        out.append((r.alias, m.read(f"{base}/repodata/repomd.xml"), signature))
    return out


def _import(plan: Plan, rt: Runtime, key: repokeys.Key) -> None:
    d = plan.root / IMPORT_DIR
    d.mkdir(parents=True, exist_ok=True)
    f = d / f"{key.fingerprint}.asc"
    f.write_text(key.armored())
    try:
        run_in_target(plan, rt, ["rpm", "--import", f"/{IMPORT_DIR}/{f.name}"], label="rpm --import")
    finally:
        f.unlink()
        d.rmdir()
