"""Git sources of the elements (DIB's source-repositories, natively, with GitPython).

One bare mirror per repository URL in the cache (`git/<name>-<hash of URL>.git`), refreshed on every
online build (the seed never refreshed its cache, so a long-lived host built a stale IPA) and never
with --offline. The ref is resolved to a commit in the mirror and cloned into the target at the
element's destination as a real repository with tags, because pbr computes IPA's version from them.
The commits go to the build manifest and, as DIB writes them, to /etc/dib-manifests in the image.

A mirror is checked before a build reads it (cache/mirrorcheck.py: its packs and loose objects
against their own hashes, its refs' history, the resolved commit's tree), so a damaged one never
reaches `git clone`: online it is discarded with one warning and cloned again; --offline stops,
naming it.
"""

from __future__ import annotations

import logging
import re
import shutil
from collections.abc import Callable
from pathlib import Path

import git

from .. import run
from ..cache import mirrorcheck
from ..cache import store as cache
from ..engine.elements import SourceRepo, override_key
from ..errors import BuildError, ConfigError, InputError

log = logging.getLogger(__name__)

DEFAULT_REF = "master"
FETCH_SPECS = ["+refs/heads/*:refs/heads/*", "+refs/tags/*:refs/tags/*"]


def mirror_path(name: str, location: str) -> Path:
    return cache.cache_root() / "git" / f"{override_key(name)}-{cache.url_key(location)}.git"


def _git_reason(e: git.GitCommandError) -> str:
    """git's own reason: its first `fatal:` line (the last line is often only a follow-up remark)."""
    lines = [line.strip().removeprefix("stderr: ").strip("'") for line in str(e.stderr or "").splitlines()
             if line.strip()]
    fatal = [line for line in lines if "fatal:" in line]
    return (fatal[0] if fatal else lines[-1] if lines else str(e))[:200]


def _git_error(repo: str, ref: str, location: str, e: git.GitCommandError) -> InputError:
    detail = _git_reason(e)
    return InputError(f"source {repo}: cannot fetch {location} (ref {ref}): {detail}",
                      f"check the URL and ref (DIB_REPOLOCATION_{override_key(repo)} / "
                      f"DIB_REPOREF_{override_key(repo)}), the network and proxy settings")


def _resolve(mirror: git.Repo, ref: str) -> str | None:
    for candidate in (ref, f"refs/heads/{ref}", f"refs/tags/{ref}"):
        try:
            return str(mirror.git.rev_parse("--verify", "--quiet", f"{candidate}^{{commit}}"))
        except git.GitCommandError:
            continue
    return None


def _other_ref(ref: str) -> bool:
    """Gerrit changes, pull requests...: refs the mirror's fetch specs (heads, tags) do not bring."""
    return ref.startswith("refs/") and not ref.startswith(("refs/heads/", "refs/tags/"))


def _discard(path: Path, name: str, wrong: str, *, offline: bool) -> None:
    """A damaged mirror is removed (online: the caller clones it again) or stops an offline build."""
    if offline:
        raise InputError(f"source {name}: the cached git mirror {path} is damaged: {wrong} (--offline)",
                         "run once online: the mirror is then cloned again")
    log.warning("source %s: git mirror %s is damaged: %s; discarded, cloning it again", name, path, wrong)
    cache.remove(path)


def update_mirror(path: Path, name: str, location: str, ref: str, *, offline: bool) -> tuple[Path, str]:
    """Make sure the mirror at `path` holds `ref`, whole; return (path, commit sha). The caller holds
    its lock. Checked before it is fetched into or read (its bytes, refs and history), and once the
    ref is resolved, the commit's tree: what the checkout reads."""
    wrong = mirrorcheck.damage(path) if path.is_dir() else None
    if wrong:
        _discard(path, name, wrong, offline=offline)
    path, sha = _update(path, name, location, ref, offline=offline)
    wrong = mirrorcheck.missing(path, sha)
    if wrong is None:
        return path, sha
    _discard(path, name, wrong, offline=offline)
    return _update(path, name, location, ref, offline=offline)  # a fresh fetch checks its own connectivity


def _update(path: Path, name: str, location: str, ref: str, *, offline: bool) -> tuple[Path, str]:
    """Fetch (online) and resolve `ref` in the mirror at `path`, cloning it when it is not there."""
    if offline:
        if not path.is_dir():
            raise InputError(f"source {name}: {location} is not in the cache and --offline is set",
                             "run one build online first, or drop --offline")
        sha = _resolve(run.git_repo(path), ref)
        if sha is None:
            raise InputError(f"source {name}: ref {ref} is not in the cached mirror of {location} "
                             "(--offline)",
                             "run online once to fetch it, or pick a ref the cache has")
        return path, sha
    try:
        if not path.is_dir():
            with cache.atomic_path(path) as tmp:
                created = run.git_init(tmp, bare=True)
                created.create_remote("origin", location)
                _fetch(created)
            mirror = run.git_repo(path)
        else:
            mirror = run.git_repo(path)
            mirror.remotes.origin.set_url(location)
            _fetch(mirror)
        if _other_ref(ref):  # fetched by name on every online build: it may have moved too
            mirror.git.fetch("--quiet", "origin", f"+{ref}:{ref}")
        sha = _resolve(mirror, ref)
        if sha is None and (ref.startswith("refs/") or re.fullmatch(r"[0-9a-f]{7,40}", ref)):
            # a bare commit is not under heads/tags: fetch that one object
            target = f"+{ref}:{ref}" if ref.startswith("refs/") else ref
            mirror.git.fetch("--quiet", "origin", target)
            sha = _resolve(mirror, ref)
    except git.GitCommandError as e:
        raise _git_error(name, ref, location, e) from None
    if sha is None:
        raise InputError(f"source {name}: ref {ref} not found in {location}",
                         f"give an existing branch, tag or commit (DIB_REPOREF_{override_key(name)})")
    return path, sha


def _fetch(mirror: git.Repo) -> None:
    mirror.git.fetch("--quiet", "--prune", "--prune-tags", "--force", "origin", *FETCH_SPECS)


def checkout(mirror: Path, sha: str, target: Path, location: str) -> None:
    """A real clone at `target` (pbr reads tags), detached at `sha`; no hardlinks into the cache, since
    hooks may chown or rewrite files in the target."""
    if target.exists():
        shutil.rmtree(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    repo = run.git_clone(str(mirror), target, no_checkout=True, no_hardlinks=True)
    repo.git.checkout("--quiet", "--detach", sha)
    repo.remotes.origin.set_url(location)


def _checkout_into(root: Path, repo: SourceRepo, mirror: Path, sha: str, ref: str, location: str) -> str:
    dest = "/" + (repo.dest or "").strip("/")
    if dest == "/":  # checkout() empties its target first: never the whole image
        raise ConfigError(f"source {repo.name} (element {repo.element}): no destination directory",
                          "give the line as: <name> git <destination> <location> [<ref>]")
    try:
        checkout(mirror, sha, root / dest.lstrip("/"), location)
    except git.GitCommandError as e:
        raise BuildError(f"source {repo.name}: checking out {sha[:12]} ({ref}) into {dest} failed: "
                         f"{_git_reason(e)}", f"the mirror is in {mirror}; `clean -ff` re-creates it") from None
    return dest


def _git_sources(repos: list[SourceRepo]) -> list[SourceRepo]:
    """The sources to fetch: git ones (a `package` source is installed from a package, as in DIB)."""
    for repo in repos:
        if repo.type not in ("git", "package"):
            raise BuildError(f"source {repo.name} (element {repo.element}): type {repo.type} is not "
                             "supported",
                             "only git source repositories are supported; use a git URL")
    return [r for r in repos if r.type == "git"]


def resolve(repos: list[SourceRepo], *, offline: bool) -> dict[str, str]:
    """name -> the commit each source's ref names now, fetching the mirrors as a build does (the
    cache layers' keys read it before any step runs; fetch_sources then checks these commits out)."""
    out = {}
    for repo in _git_sources(repos):
        mirror = mirror_path(repo.name, repo.location)
        with cache.locked(mirror):
            out[repo.name] = update_mirror(mirror, repo.name, repo.location, repo.ref or DEFAULT_REF,
                                           offline=offline)[1]
    return out


def peek(repos: list[SourceRepo]) -> dict[str, str | None]:
    """name -> the commit each ref named when its mirror was last fetched (None: not fetched yet).
    No fetch, no writes: for `summary`."""
    out: dict[str, str | None] = {}
    for repo in _git_sources(repos):
        mirror = mirror_path(repo.name, repo.location)
        out[repo.name] = _resolve(run.git_repo(mirror), repo.ref or DEFAULT_REF) if mirror.is_dir() else None
    return out


def fetch_sources(repos: list[SourceRepo], root: Path, *, offline: bool, image_name: str = "image",
                  resolved: dict[str, str] | None = None) -> list[dict[str, str]]:
    """Fetch every git source into `root`, write DIB's in-image records, return the manifest rows.
    `resolved` (from resolve(), this build) gives commits already fetched: those are not fetched again."""
    rows: list[dict[str, str]] = []
    for repo in _git_sources(repos):
        location, ref = repo.location, repo.ref or DEFAULT_REF
        mirror = mirror_path(repo.name, location)
        with cache.locked(mirror):  # held through the clone: another build's fetch may prune packs
            sha = (resolved or {}).get(repo.name) or update_mirror(mirror, repo.name, location, ref,
                                                                   offline=offline)[1]
            dest = _checkout_into(root, repo, mirror, sha, ref, location)
        subject = f"{location}#{ref}"
        previous = cache.last_key("git", subject)
        if previous and previous != sha:
            log.info("source %s: %s moved %s → %s", repo.name, ref, str(previous)[:12], sha[:12])
        cache.remember("git", subject, sha)
        log.info("source %s %s @ %s → %s", repo.name, ref, sha[:12], dest)
        rows.append({"name": repo.name, "location": location, "ref": ref, "commit": sha, "dest": dest,
                     "element": repo.element})
    write_records(root, rows, image_name=image_name)
    return rows


def write_records(root: Path, rows: list[dict[str, str]], *, image_name: str) -> None:
    """/etc/dib-source-repositories and /etc/dib-manifests/dib-manifest-git-<name>, as DIB writes them
    (appended), but a source's line written before (a cache layer's tree, checked out again) is replaced."""
    etc = root / "etc"
    etc.mkdir(parents=True, exist_ok=True)
    _append(etc / "dib-source-repositories", [r["dest"] for r in rows], lambda line: line)
    manifests = etc / "dib-manifests"
    manifests.mkdir(parents=True, exist_ok=True)
    _append(manifests / f"dib-manifest-git-{Path(image_name).name}",
            [f"{r['name']} git {r['dest']} {r['location']} {r['commit']}" for r in rows],
            lambda line: line.split(" ", 1)[0])


def _append(path: Path, lines: list[str], key: Callable[[str], str]) -> None:
    ours = {key(line) for line in lines}
    kept = [line for line in path.read_text().splitlines() if key(line) not in ours] if path.is_file() else []
    path.write_text("".join(f"{line}\n" for line in (*kept, *lines)))
