"""zypper inside the target: repository files, zypp.conf and the argv lists the engine runs in the chroot.

Repository files are written directly (no `zypper addrepo` round trips, no dependency on the image's
zypper behaving). Two kinds of repositories:

* the Media1 modules, served from the ISO on loopback (media.serve): `keeppackages=0` because the
  packages already sit in the ISO on this host (kiwi#847: don't cache local repos); `proxy=_none_` in
  the URL because zypper inside the chroot must never send loopback requests to a proxy it inherited;
* remote repositories the user adds (`repos`): `keeppackages=1`, so their packages land in the host
  cache bind-mounted at /var/cache/zypp (the seed's `modifyrepo --keep-packages`) and a rebuild does
  not download them again.

`gpgcheck=1` on both, and zypper never imports a key (no `--gpg-auto-import-keys`): the build has
checked each repository's signature against pinned keys before (repokeys.py), and zypper checks it
again, and each package against the signed metadata's checksums.

`autorefresh=0` on both: the engine runs `refresh_argv()` once per build instead of zypper checking
every repository on every call.
"""

from __future__ import annotations

import re
import urllib.parse
from pathlib import Path

from ..cache.store import cache_dir

REPOS_D = "etc/zypp/repos.d"
ZYPP_CONF = "etc/zypp/zypp.conf"
ZYPPER = ["zypper", "--non-interactive"]  # never --gpg-auto-import-keys: keys are pinned (repokeys.py)
NO_PROXY_HOSTS = "127.0.0.1,localhost"
USER_PRIORITY = 90  # zypper: lower wins; the media's repositories keep the default 99

# Settings the build wants in the target's zypp.conf: no docs in the ramdisk, no recommended packages.
ZYPP_SETTINGS = {
    "rpm.install.excludedocs": "yes",
    "solver.onlyRequires": "true",
}


def _alias_ok(alias: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9_.:+-]+", alias):
        raise ValueError(f"bad repository alias {alias!r}")
    return alias


def _loopback_http(url: str) -> bool:
    p = urllib.parse.urlsplit(url)
    return p.scheme == "http" and p.hostname in ("127.0.0.1", "localhost")


def is_local(url: str) -> bool:
    return _loopback_http(url) or url.startswith(("dir:", "file:", "iso:"))


def local_url(url: str) -> str:
    """The URL as zypper should see it: loopback URLs get proxy=_none_ (libzypp's 'never a proxy')."""
    if _loopback_http(url) and "proxy=" not in url:
        return url + ("&" if "?" in url else "?") + "proxy=_none_"
    return url


def repo_file(alias: str, url: str, *, keep_packages: bool, priority: int = 99) -> str:
    return "\n".join([
        f"[{_alias_ok(alias)}]",
        f"name={alias}",
        "enabled=1",
        "autorefresh=0",
        f"baseurl={local_url(url)}",
        "type=rpm-md",
        f"priority={priority}",
        "gpgcheck=1",
        f"keeppackages={1 if keep_packages else 0}",
        "",
    ])


def write_repos(root: Path, repos: list[tuple[str, str]], *, keep_packages: bool | None = None) -> list[Path]:
    """Write /etc/zypp/repos.d/<alias>.repo for each (alias, url) in `root`.

    keep_packages=None picks per URL: off for local media, on for remote repositories.
    """
    d = root / REPOS_D
    d.mkdir(parents=True, exist_ok=True)
    written = []
    for alias, url in repos:
        local = is_local(url)
        keep = (not local) if keep_packages is None else keep_packages
        path = d / f"{_alias_ok(alias)}.repo"
        # the user's repositories (an update channel) win over the media's packages
        priority = USER_PRIORITY if alias.startswith("user-") else 99
        path.write_text(repo_file(alias, url, keep_packages=keep, priority=priority))
        written.append(path)
    return written


def remove_repos(root: Path, aliases: list[str]) -> None:
    """Drop the build's repository files so the image keeps no definition of a loopback port."""
    for alias in aliases:
        (root / REPOS_D / f"{_alias_ok(alias)}.repo").unlink(missing_ok=True)


def zypp_conf(root: Path, settings: dict[str, str] | None = None) -> None:
    """Set keys in the [main] section of the target's zypp.conf, idempotently."""
    wanted = dict(ZYPP_SETTINGS if settings is None else settings)
    path = root / ZYPP_CONF
    lines = path.read_text().splitlines() if path.exists() else ["[main]"]
    if not any(line.strip() == "[main]" for line in lines):
        lines.insert(0, "[main]")
    out: list[str] = []
    done: set[str] = set()
    section = ""
    for line in lines:
        stripped = line.strip()
        if stripped.startswith("[") and stripped.endswith("]"):
            if section == "[main]":
                out.extend(f"{k} = {v}" for k, v in wanted.items())
                done.update(wanted)
                wanted.clear()
            section = stripped
        elif section == "[main]":
            m = re.match(r"(#?)\s*([\w.]+)\s*=", stripped)
            if m and m.group(2) in wanted:  # replace the (commented) default line in place
                out.append(f"{m.group(2)} = {wanted.pop(m.group(2))}")
                done.add(m.group(2))
                continue
            if m and not m.group(1) and m.group(2) in done:  # a later duplicate would win: drop it
                continue
        out.append(line)
    if section == "[main]":
        out.extend(f"{k} = {v}" for k, v in wanted.items())
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(out) + "\n")


def install_argv(packages: list[str], *, uninstall: bool = False) -> list[str]:
    """The argv run in the chroot for one phase's package list (DIB's install-packages, natively)."""
    if uninstall:
        return [*ZYPPER, "remove", "--clean-deps", *packages]
    return [*ZYPPER, "install", "--no-recommends", *packages]


def refresh_argv(aliases: list[str] | None = None) -> list[str]:
    """Refresh metadata once per build: cheap (compares repomd.xml), and catches a changed ISO.

    aliases: only these (offline, the media's: remote repositories keep their cached metadata).
    """
    return [*ZYPPER, "refresh", *(aliases or [])]


def target_env_extra() -> dict[str, str]:
    """Variables to add to run.target_env() for zypper: loopback must never go through a proxy."""
    return {"no_proxy": NO_PROXY_HOSTS, "NO_PROXY": NO_PROXY_HOSTS}


def cache_mounts() -> list[tuple[Path, str]]:
    """Host directories the engine bind-mounts into the target: the zypper cache (packages of remote
    repositories, kept between builds; metadata of every repository)."""
    return [(cache_dir("zypper"), "/var/cache/zypp")]
