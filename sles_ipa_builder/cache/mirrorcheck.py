"""Is a cached git mirror whole? A cheap check of its object store before a build reads it (issue 30).

Two parts, each reading what git itself wrote to make it checkable:
- **Content.** Every binary file git keeps objects and indexes in (`*.pack`, `*.idx`, `*.rev`,
  `*.bitmap`, `*.mtimes`, `multi-pack-index`, `commit-graph`, `*.graph`) ends with the hash of the
  bytes before it: each is hashed and compared, and each index must name its pack's checksum. Every
  loose object is inflated and hashed against its name. This catches a truncated, emptied or changed
  pack or loose object, reading each byte once (sha1 at ~1 GB/s).
- **Connectivity.** `git fsck --connectivity-only --no-dangling`: every ref points at an object and
  every object reachable from the refs is there (a deleted loose object, a pack gone with its index,
  a ref file holding garbage). It reads commits and trees, not blobs: their bytes are the first part's.

Not checked: `.keep` and `.promisor` files (text, no checksum), the config, hooks and the reflogs of
the mirror, objects reached only through FETCH_HEAD, and a pack git does not read (one without its
index, as a killed fetch may leave).
"""

from __future__ import annotations

import hashlib
import re
import zlib
from pathlib import Path

import git

from .. import run

CHUNK = 1 << 20
TRAILED = (".pack", ".idx", ".rev", ".bitmap", ".mtimes", ".graph")
TRAILED_NAMES = ("multi-pack-index", "commit-graph")
FANOUT = re.compile(r"[0-9a-f]{2}")
LOOSE = re.compile(r"[0-9a-f]{38}|[0-9a-f]{62}")  # not tmp_obj_*: what a killed write leaves, git ignores it


def damage(path: Path) -> str | None:
    """What is wrong with the bare repository at `path`, in a few words; None when it is whole."""
    if not (path / "HEAD").is_file() or not (path / "objects").is_dir():
        return "not a git repository (no HEAD or objects)"
    try:
        repo = run.git_repo(path)
        algo = str(repo.config_reader("repository").get_value("extensions", "objectformat", "sha1"))
    except (git.InvalidGitRepositoryError, git.NoSuchPathError, OSError, ValueError) as e:
        return f"not a readable git repository ({e})"[:200]
    if algo not in ("sha1", "sha256"):
        return f"unknown object format {algo}"
    return _files(path / "objects", algo) or _loose(path / "objects", algo) or _connectivity(repo)


def _trailer_ok(file: Path, algo: str) -> tuple[str | None, bytes]:
    """(what is wrong with the file's trailing checksum or None, the checksum it ends with)."""
    name = _shown(file)
    size_of_hash = hashlib.new(algo).digest_size
    size = file.stat().st_size
    if size == 0:
        return f"{name} is empty", b""
    if size < size_of_hash:
        return f"{name} is truncated ({size} bytes)", b""
    h = hashlib.new(algo)
    with file.open("rb") as f:
        left = size - size_of_hash
        while left:
            chunk = f.read(min(CHUNK, left))
            if not chunk:
                return f"{name} changed while it was read", b""
            h.update(chunk)
            left -= len(chunk)
        trailer = f.read()
    if h.digest() != trailer:
        return f"{name} is truncated or changed (its checksum does not match its bytes)", trailer
    return None, trailer


def _shown(file: Path) -> str:
    """The file's path from the mirror's top (objects/pack/pack-….pack; objects/info/commit-graph)."""
    parts = file.parts
    return "/".join(parts[-4:] if parts[-2] == "commit-graphs" else parts[-3:])


def _files(objects: Path, algo: str) -> str | None:
    """The first pack, index, reverse index, bitmap or commit graph whose checksum does not match."""
    width = hashlib.new(algo).digest_size
    files = [p for d in (objects / "pack", objects / "info", objects / "info" / "commit-graphs") if d.is_dir()
             for p in sorted(d.iterdir()) if p.is_file() and (p.suffix in TRAILED or p.name in TRAILED_NAMES)]
    trailers: dict[Path, bytes] = {}
    for file in files:
        wrong, trailers[file] = _trailer_ok(file, algo)
        if wrong:
            return wrong
    for idx in (f for f in files if f.suffix == ".idx"):
        pack = idx.with_suffix(".pack")
        if pack not in trailers:
            return f"{_shown(idx)} has no pack"
        # an index holds its pack's checksum just before its own
        with idx.open("rb") as f:
            f.seek(-2 * width, 2)
            named = f.read(width)
        if named != trailers[pack]:
            return f"{_shown(pack)} does not match its index {idx.name}"
    return None


def _loose(objects: Path, algo: str) -> str | None:
    """The first loose object whose bytes do not inflate to what its name says."""
    for d in sorted(objects.iterdir()):
        if not (d.is_dir() and FANOUT.fullmatch(d.name)):
            continue
        for obj in sorted(o for o in d.iterdir() if LOOSE.fullmatch(o.name)):
            name = d.name + obj.name
            try:
                body = zlib.decompress(obj.read_bytes())
            except (zlib.error, OSError) as e:
                return f"loose object {name} is damaged ({e})"[:200]
            if hashlib.new(algo, body).hexdigest() != name:
                return f"loose object {name} does not hash to its name"
    return None


def _connectivity(repo: git.Repo) -> str | None:
    try:
        repo.git.fsck("--connectivity-only", "--no-dangling", "--no-progress")
    except git.GitCommandError as e:
        text = f"{e.stdout or ''}\n{e.stderr or ''}".replace("stdout: '", "").replace("stderr: '", "")
        lines = [" ".join(line.strip("'").split()) for line in text.splitlines()]
        lines = [line for line in lines if line]
        for i, line in enumerate(lines):
            if line.startswith("broken link") and i + 1 < len(lines):  # fsck says where to on the next line
                return f"git fsck: {line} {lines[i + 1]}"[:200]
            if line.startswith(("error", "missing", "fatal", "bad")):
                return f"git fsck: {line}"[:200]
        return f"git fsck: {(lines or [str(e)])[0]}"[:200]
    return None
