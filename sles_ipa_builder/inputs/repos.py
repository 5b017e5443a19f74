"""Repositories beyond the ISO: the user's zypper repositories by URL, their credentials, and a look
at their metadata before any work.

A repository is a URL (`--repo`, `repos` in TOML). Credentials come in the two ways SUSE's tools use:
- a credentials file in zypper's `credentials.d` format (`username=` / `password=` lines), as
  SUSEConnect writes for SCC and RMT/SMT/SUSE Manager registrations. The URL names it with
  `?credentials=NAME`, and `repo_credentials` gives the file (or a whole `credentials.d`
  directory); zypper in the target reads a copy that lives only while the build runs;
- or in the URL itself: `https://user:password@host/...`, or an SCC-style token as its query
  (`https://updates.suse.com/...?<token>`).

A repository's signing key is pinned (repokeys.py): the base image's keys, `--repo-key FILE`, or
`gpgkey=FILE` in the URL for that repository only (a parameter for the builder, not sent to the server).

Either way the secret parts are masked (`***`) wherever a URL is shown: summary, log, manifest,
`.packages`. `check()` reads every repository's repomd.xml and primary metadata up front, so a URL
that is unreachable, refuses the credentials or is not an rpm-md repository stops the build (exit 2)
before any work, and so the build knows which packages the repositories provide (SP4's python311).
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import logging
import lzma
import re
import ssl
import urllib.error
import urllib.parse
import urllib.request
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import zstandard

from ..errors import ConfigError

if TYPE_CHECKING:
    from .media import Media

log = logging.getLogger(__name__)

CREDENTIALS_D = "etc/zypp/credentials.d"
TIMEOUT = 30  # seconds for one metadata request
MASK = "***"
SHOWN_PARAMETERS = ("credentials", "gpgkey")  # URL parameters that name files: no secret in them


@dataclass(frozen=True)
class Credentials:
    name: str
    username: str
    password: str


@dataclass(frozen=True)
class Repo:
    url: str  # as given; may hold a password or token

    @property
    def alias(self) -> str:
        """Named by the URL with its secrets masked, so a new token keeps the zypper cache of the repository."""
        return f"user-{hashlib.sha256(self.shown.encode()).hexdigest()[:12]}"

    @property
    def parts(self) -> urllib.parse.SplitResult:
        return urllib.parse.urlsplit(self.url)

    @property
    def credentials_name(self) -> str | None:
        found = urllib.parse.parse_qs(self.parts.query).get("credentials")
        return found[0] if found else None

    @property
    def key_file(self) -> Path | None:
        """`gpgkey=FILE` in the URL: the key this repository's metadata is signed with."""
        found = [v for k, v in _query_items(self.parts.query) if k == "gpgkey"]
        return Path(urllib.parse.unquote(found[0])) if found else None

    @property
    def zypper_url(self) -> str:
        """The URL as zypper gets it: without the builder's own gpgkey= parameter."""
        return urllib.parse.urlunsplit(self.parts._replace(query=_query_without(self.parts.query, ("gpgkey",))))

    @property
    def shown(self) -> str:
        return mask(self.url)

    def secrets(self) -> list[str]:
        p = self.parts
        out = [p.password] if p.password else []
        out += [v for k, v in _query_items(p.query) if k not in SHOWN_PARAMETERS and v]
        return out

    def is_loopback(self) -> bool:
        return self.parts.hostname in ("127.0.0.1", "localhost", "::1")


def _query_items(query: str) -> list[tuple[str, str]]:
    """The query as (key, value) pairs; a bare token (SCC's `?<token>`) is a value without a key."""
    items = []
    for piece in query.split("&") if query else []:
        key, eq, value = piece.partition("=")
        items.append((key, value) if eq else ("", key))
    return items


def _query_without(query: str, keys: tuple[str, ...]) -> str:
    """The query with the parameters named `keys` left out (a bare token stays)."""
    return "&".join(f"{k}={v}" if k else v for k, v in _query_items(query) if k not in keys)


def _unreachable(repo: Repo, e: OSError) -> ConfigError:
    return ConfigError(f"repository {repo.shown} is unreachable: {getattr(e, 'reason', e)}",
                       "check the URL, the network and the proxy (https_proxy)")


def mask(url: str) -> str:
    """The URL as it may be shown: password and query tokens (all but `credentials=`, `gpgkey=`) replaced by ***."""
    p = urllib.parse.urlsplit(url)
    netloc = p.netloc
    if p.password is not None:
        netloc = f"{p.username}:{MASK}@{p.hostname}" + (f":{p.port}" if p.port else "")
    query = "&".join(f"{k}={v}" if k in SHOWN_PARAMETERS else (f"{k}={MASK}" if k else MASK)
                     for k, v in _query_items(p.query))
    return urllib.parse.urlunsplit((p.scheme, netloc, p.path, query, p.fragment))


def parse(urls: list[str]) -> list[Repo]:
    repos = []
    for url in urls:
        p = urllib.parse.urlsplit(url)
        if p.scheme not in ("http", "https", "ftp", "file", "dir") or (p.scheme != "file" and not p.path
                                                                         and not p.netloc):
            raise ConfigError(f"repository {mask(url)} is not a URL zypper can use",
                              "give an http(s)://, ftp://, dir:// or file:// URL of an rpm-md repository")
        repos.append(Repo(url))
    return repos


# --- credentials -----------------------------------------------------------------------------------
def read_credentials(file: Path) -> Credentials:
    """One zypper credentials file: `username=` and `password=` lines (SUSEConnect's format)."""
    values: dict[str, str] = {}
    for line in file.read_text().splitlines():
        key, eq, value = line.strip().partition("=")
        if eq and key.strip() in ("username", "password"):
            values[key.strip()] = value.strip()
    if not values.get("username"):
        raise ConfigError(f"credentials file {file} has no username= line",
                          "write it as zypper's credentials.d files are: username=... and password=... lines")
    return Credentials(file.name, values["username"], values.get("password", ""))


def load_credentials(paths: list[Path]) -> dict[str, Credentials]:
    """Files, or directories of files (a `credentials.d`), by file name: the name a URL's `credentials=` gives."""
    found: dict[str, Credentials] = {}
    for path in paths:
        if path.is_dir():
            files = sorted(f for f in path.iterdir() if f.is_file())
        elif path.is_file():
            files = [path]
        else:
            raise ConfigError(f"repo_credentials: {path} is not a file or directory",
                              "give a zypper credentials file or a credentials.d directory")
        for f in files:
            found[f.name] = read_credentials(f)
    return found


def credentials_for(repo: Repo, creds: dict[str, Credentials]) -> Credentials | None:
    name = repo.credentials_name
    if name is None:
        return None
    if name not in creds:
        raise ConfigError(f"repository {repo.shown} names credentials '{name}', which no repo_credentials file has",
                          f"give the file with --repo-credentials FILE (its name must be {name})")
    return creds[name]


def write_credentials(root: Path, repos: list[Repo], creds: dict[str, Credentials]) -> list[Path]:
    """The credentials the repositories name, in the target's credentials.d (0600), for zypper."""
    written = []
    for repo in repos:
        c = credentials_for(repo, creds)
        if c is None:
            continue
        d = root / CREDENTIALS_D
        d.mkdir(parents=True, exist_ok=True)
        path = d / c.name
        path.touch(mode=0o600)
        path.chmod(0o600)
        path.write_text(f"username={c.username}\npassword={c.password}\n")
        written.append(path)
    return written


def remove_credentials(root: Path, creds: dict[str, Credentials]) -> None:
    for name in creds:
        (root / CREDENTIALS_D / name).unlink(missing_ok=True)


# --- metadata --------------------------------------------------------------------------------------
def decompress(data: bytes) -> bytes:
    if data[:2] == b"\x1f\x8b":
        return gzip.decompress(data)
    if data[:4] == b"\x28\xb5\x2f\xfd":
        return zstandard.ZstdDecompressor().decompressobj().decompress(data)
    if data[:6] == b"\xfd7zXZ\x00":
        return lzma.decompress(data)
    return data


def primary_href(repomd: bytes) -> str | None:
    m = re.search(rb'<data type="primary">.*?<location href="([^"]+)"', repomd, re.S)
    return m.group(1).decode() if m else None


def package_names(primary: bytes) -> set[str]:
    """Names of the packages in primary.xml (each <package> starts with its <name>)."""
    return {m.decode() for m in re.findall(rb"<package[^>]*>\s*<name>([^<]+)</name>", primary)}


def _fetch(repo: Repo, rel: str, creds: Credentials | None, ca_bundle: Path | None) -> bytes:
    p = repo.parts
    base = p.path if p.path.endswith("/") else p.path + "/"
    if p.scheme in ("file", "dir"):
        return (Path(urllib.parse.unquote(base)) / rel).read_bytes()
    host = p.hostname or ""
    netloc = f"[{host}]" if ":" in host else host
    netloc += f":{p.port}" if p.port else ""
    query = _query_without(p.query, SHOWN_PARAMETERS)
    url = urllib.parse.urlunsplit((p.scheme, netloc, base + rel, query, ""))
    req = urllib.request.Request(url, headers={"User-Agent": "sles-ipa-builder"})
    user, password = (creds.username, creds.password) if creds else (p.username, p.password)
    if user is not None:
        token = base64.b64encode(f"{urllib.parse.unquote(user)}:{urllib.parse.unquote(password or '')}".encode())
        req.add_header("Authorization", "Basic " + token.decode())
    handlers: list[urllib.request.BaseHandler] = []
    if repo.is_loopback():
        handlers.append(urllib.request.ProxyHandler({}))
    if p.scheme == "https":
        context = ssl.create_default_context(cafile=str(ca_bundle) if ca_bundle else None)
        handlers.append(urllib.request.HTTPSHandler(context=context))
    with urllib.request.build_opener(*handlers).open(req, timeout=TIMEOUT) as resp:
        data: bytes = resp.read()
        return data


def probe(repo: Repo, creds: dict[str, Credentials], ca_bundle: Path | None = None) -> set[str]:
    """The package names the repository provides; a ConfigError naming it when it cannot be used."""
    c = credentials_for(repo, creds)
    hint = "check the URL: it must be the directory holding repodata/"
    try:
        repomd = _fetch(repo, "repodata/repomd.xml", c, ca_bundle)
        href = primary_href(repomd)
        if href is None:
            raise ConfigError(f"repository {repo.shown}: repodata/repomd.xml lists no primary metadata", hint)
        return package_names(decompress(_fetch(repo, href, c, ca_bundle)))
    except urllib.error.HTTPError as e:
        if e.code in (401, 403):
            raise ConfigError(f"repository {repo.shown} refused the credentials (HTTP {e.code})",
                              "check the credentials file (--repo-credentials) or the token in the URL") from None
        if e.code == 404:
            raise ConfigError(f"repository {repo.shown} has no repodata/repomd.xml (HTTP 404)", hint) from None
        raise ConfigError(f"repository {repo.shown} answered HTTP {e.code}", hint) from None
    except FileNotFoundError:
        raise ConfigError(f"repository {repo.shown} has no repodata/repomd.xml", hint) from None
    except (urllib.error.URLError, OSError) as e:
        raise _unreachable(repo, e) from None
    except (EOFError, zlib.error, lzma.LZMAError, zstandard.ZstdError, gzip.BadGzipFile) as e:
        raise ConfigError(f"repository {repo.shown}: damaged primary metadata ({e})", hint) from None


def _cached(repo: Repo, zypper_cache: Path) -> Path:
    """Offline: the copy of the repository's metadata zypper kept (raw/<alias>); a ConfigError when none."""
    raw = zypper_cache / "raw" / repo.alias
    if not (raw / "repodata/repomd.xml").is_file():
        raise ConfigError(f"offline, and repository {repo.shown} has no cached metadata",
                          "run one online build with this repository first, or drop --offline")
    return raw


def cached_packages(repo: Repo, zypper_cache: Path) -> set[str]:
    """Offline: the package names in the metadata zypper kept for the repository (raw/<alias>)."""
    return probe(Repo(_cached(repo, zypper_cache).as_uri()), {})


def metadata_digest(repo: Repo, creds: dict[str, Credentials], ca_bundle: Path | None, *,
                    zypper_cache: Path | None = None) -> str:
    """sha256 of the repository's repodata/repomd.xml, which names every metadata file by checksum:
    a new digest is an updated repository. With `zypper_cache` (offline), the copy zypper kept."""
    if zypper_cache is not None:
        cached = zypper_cache / "raw" / repo.alias / "repodata/repomd.xml"
        return hashlib.sha256(cached.read_bytes()).hexdigest() if cached.is_file() else "not cached"
    try:
        return hashlib.sha256(_fetch(repo, "repodata/repomd.xml", credentials_for(repo, creds), ca_bundle)).hexdigest()
    except (urllib.error.URLError, OSError) as e:
        raise _unreachable(repo, e) from None


def signed_metadata(repo: Repo, creds: dict[str, Credentials], ca_bundle: Path | None, *,
                    zypper_cache: Path | None = None) -> tuple[bytes, bytes | None]:
    """The repository's repodata/repomd.xml and its detached signature (None: unsigned). With
    `zypper_cache` (offline), the copies zypper kept when it last refreshed the repository."""
    if zypper_cache is not None:
        raw = _cached(repo, zypper_cache)
        asc = raw / "repodata/repomd.xml.asc"
        return (raw / "repodata/repomd.xml").read_bytes(), asc.read_bytes() if asc.is_file() else None
    c = credentials_for(repo, creds)
    try:
        repomd = _fetch(repo, "repodata/repomd.xml", c, ca_bundle)
        signature: bytes | None = None
        try:
            signature = _fetch(repo, "repodata/repomd.xml.asc", c, ca_bundle)
        except FileNotFoundError:
            pass  # unsigned: repokeys.verify says so
        except urllib.error.HTTPError as e:
            if e.code != 404:
                raise
    except (urllib.error.URLError, OSError) as e:
        raise _unreachable(repo, e) from None
    return repomd, signature


def media_packages(media: Media) -> set[str]:
    """Package names of every repository on the Media1 ISO."""
    names: set[str] = set()
    for r in media.repos:
        base = f"/{r.dir}" if r.dir else ""
        href = primary_href(media.read(f"{base}/repodata/repomd.xml"))
        if href:
            names |= package_names(decompress(media.read(f"{base}/{href}")))
    return names
