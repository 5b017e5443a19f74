"""The SLES Full ISO as zypper repositories, read with pycdlib and never mounted.

`open_media()` indexes the ISO once (path -> byte extent, Rock Ridge names, else Joliet, else plain
ISO 9660) and finds its repositories by its layout (config/releases.py): SLE 15's Media1 ISO lists
them in `media.1/products` (one per Module-* directory); SLES 16's install.iso holds one rpm-md
repository in /install, next to boot/ and LiveOS/. Each must have `repodata/repomd.xml`.
`serve()` answers HTTP GET/HEAD (with Range) on loopback straight from those extents with os.pread,
so zypper in the chroot reads packages out of the ISO file itself: no loop device, no host mount,
nothing left behind after a crash.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import logging
import lzma
import os
import re
import threading
import zlib
from contextlib import ExitStack
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path, PurePosixPath
from urllib.parse import unquote, urlsplit

import pycdlib
import zstandard
from pycdlib.pycdlibexception import PyCdlibException

from ..config.arch import Arch
from ..config.releases import INSTALL, MEDIA1
from ..errors import InputError

log = logging.getLogger(__name__)

BLOCK = 2048
CHUNK = 1 << 20
HINT_ISO = ("give the Full ISO downloaded from SUSE (--iso): SLE-15-SPx-Full-<arch>-GM-Media1.iso, "
            "or SLES-16.x-Full-<arch>-GM.install.iso")
HINT_INSTALL = ("use SLES-16.x-Full-<arch>-GM.install.iso: the Full ISO carries the packages in /install, "
                "the Online one none")


@dataclass(frozen=True)
class Repo:
    alias: str  # stable: derived from the directory name only
    dir: str  # directory on the ISO, without slashes ("Module-Basesystem"; "" for the ISO root)
    name: str  # product name from media.1/products
    version: str


@dataclass
class Media:
    iso: Path
    volume_id: str
    info: list[str]  # media.1/media lines: vendor, date/id, ...
    repos: list[Repo]
    identity: str
    index: dict[str, tuple[int, int]] = field(repr=False, default_factory=dict)  # path -> (offset, size)
    links: dict[str, str] = field(repr=False, default_factory=dict)  # Rock Ridge symlinks: path -> target
    layout: str = MEDIA1  # config/releases.py: MEDIA1 (media.1/products) or INSTALL (/install)

    def resolve(self, path: str) -> tuple[int, int] | None:
        path = "/" + path.strip("/")
        for _ in range(8):  # bounded: symlink loops on a hostile ISO end in a 404
            if path in self.index:
                return self.index[path]
            target = self.links.get(path)
            if target is None:
                return None
            parent = PurePosixPath(path).parent
            path = os.path.normpath(target if target.startswith("/") else str(parent / target))
        return None

    def read(self, path: str) -> bytes:
        ext = self.resolve(path)
        if ext is None:
            raise KeyError(path)
        fd = os.open(self.iso, os.O_RDONLY)
        try:
            return os.pread(fd, ext[1], ext[0])
        finally:
            os.close(fd)


def alias_for(directory: str) -> str:
    """`Module-Basesystem` -> `sle-Module-Basesystem`; the same directory always gives the same alias."""
    clean = re.sub(r"[^A-Za-z0-9_.+-]+", "-", directory.strip("/")).strip("-")
    return f"sle-{clean}" if clean else "sle-media"


def _name(rec: object, facet: str) -> str:
    if facet == "rr_path" and getattr(rec, "rock_ridge", None) is not None:
        return bytes(rec.rock_ridge.name()).decode(errors="replace")  # type: ignore[attr-defined]
    raw: bytes = rec.file_identifier()  # type: ignore[attr-defined]
    if facet == "joliet_path":
        return raw.decode("utf-16_be", errors="replace")
    text = raw.decode(errors="replace").split(";")[0]
    return text[:-1] if text.endswith(".") else text


def _index(iso: pycdlib.PyCdlib) -> tuple[dict[str, tuple[int, int]], dict[str, str]]:
    """Map every file path to (byte offset, size) in the ISO file: one walk, directory by directory."""
    facet = "rr_path" if iso.has_rock_ridge() else "joliet_path" if iso.has_joliet() else "iso_path"
    files: dict[str, tuple[int, int]] = {}
    links: dict[str, str] = {}
    stack = ["/"]
    iso_paths = {"/": "/"}  # our path -> the facet's own path (differs only for plain ISO 9660 names)
    while stack:
        d = stack.pop()
        for child in iso.list_children(**{facet: iso_paths[d]}):
            if child is None or child.is_dot() or child.is_dotdot():
                continue
            name = _name(child, facet)
            path = d.rstrip("/") + "/" + name
            rr = child.rock_ridge if facet == "rr_path" else None
            if rr is not None and rr.is_symlink():
                links[path] = rr.symlink_path().decode(errors="replace")
            elif child.is_dir():
                stack.append(path)
                raw_name = child.file_identifier().decode("utf-16_be") if facet == "joliet_path" else (
                    name if facet == "rr_path" else child.file_identifier().decode())
                iso_paths[path] = iso_paths[d].rstrip("/") + "/" + raw_name
            else:
                files[path] = (child.extent_location() * BLOCK, child.get_data_length())
    if facet == "iso_path":  # 8.3 upper-case names: also answer to the lower-case spelling
        files.update({k.lower(): v for k, v in list(files.items())})
    return files, links


def open_media(iso_path: Path) -> Media:
    """Index the ISO and discover its repositories by its layout. An ISO indexed before (the plan's
    python check, then the input checks) is indexed again only when its file changed."""
    if not iso_path.is_file():
        raise InputError(f"Full ISO {iso_path} not found", HINT_ISO)
    st = iso_path.stat()
    return _open(iso_path, st.st_size, st.st_mtime_ns, st.st_ino)


def layout_of(iso_path: Path) -> str | None:
    """MEDIA1 or INSTALL by the ISO's top directories; None when it is no ISO (open_media says why)."""
    try:
        st = iso_path.stat()
        _, index, _ = _indexed(iso_path, st.st_size, st.st_mtime_ns, st.st_ino)
    except (OSError, InputError):
        return None
    return _layout(index)


def _layout(index: dict[str, tuple[int, int]]) -> str | None:
    tops = {path.split("/")[1] for path in index}
    if "media.1" in tops:
        return MEDIA1
    if "install" in tops or {"boot", "LiveOS"} <= tops:  # the Online install.iso has no /install
        return INSTALL
    return None


@functools.lru_cache(maxsize=4)
def _indexed(iso_path: Path, size: int, mtime_ns: int, inode: int
             ) -> tuple[str, dict[str, tuple[int, int]], dict[str, str]]:
    """(volume id, path -> extent, symlinks) of an ISO file, as it was when it had that size and mtime."""
    iso = pycdlib.PyCdlib()
    try:
        iso.open(os.fspath(iso_path))
    except (PyCdlibException, OSError, ValueError) as e:
        raise InputError(f"{iso_path} is not an ISO 9660 image ({str(e)[:80]})", HINT_ISO) from None
    try:
        volume_id = iso.pvd.volume_identifier.decode(errors="replace").strip()
        index, links = _index(iso)
    finally:
        iso.close()
    return volume_id, index, links


@functools.lru_cache(maxsize=4)
def _open(iso_path: Path, size: int, mtime_ns: int, inode: int) -> Media:
    volume_id, index, links = _indexed(iso_path, size, mtime_ns, inode)
    size = iso_path.stat().st_size
    cut = sorted(path for path, (offset, length) in index.items() if length < 0 or offset + length > size)
    if cut:  # a partial download: pycdlib reads the directories, the files are past the end
        raise InputError(f"{iso_path} is truncated or damaged: {len(cut)} file(s) lie past its end "
                         f"({cut[0]}...)", "download the ISO again and compare its checksum with SUSE's")
    media = Media(iso_path, volume_id, [], [], "", index, links, layout=_layout(index) or MEDIA1)
    media.info = _text(media, "/media.1/media").splitlines() if media.resolve("/media.1/media") else []
    if media.layout == INSTALL:
        media.repos = [_install_repo(media)]
    elif media.resolve("/media.1/products") is None:
        raise InputError(f"{iso_path} has no media.1/products and no /install: not a SUSE product medium",
                         "use the Full ISO: SLE 15's Media1 lists its modules in media.1/products, "
                         "SLES 16's install.iso has its repository in /install")
    else:
        media.repos = _products(media)
    media.identity = _identity(media)
    log.debug("media %s (%s): %d files, %d repositories, identity %s", iso_path, media.layout, len(index),
              len(media.repos), media.identity[:12])
    return media


def _install_repo(media: Media) -> Repo:
    """SLES 16's one repository, /install; named SLES and the version the volume id carries (16.0)."""
    if media.resolve("/install/repodata/repomd.xml") is None:
        raise InputError(f"{media.iso.name} has no install/repodata/repomd.xml: a SLES 16 install ISO "
                         "without its package repository", HINT_INSTALL)
    version = re.search(r"16\.\d+", media.volume_id)
    return Repo(alias_for("install"), "install", "SLES", version.group(0) if version else "")


def _text(media: Media, path: str) -> str:
    return media.read(path).decode(errors="replace")


def _products(media: Media) -> list[Repo]:
    repos: list[Repo] = []
    for line in _text(media, "/media.1/products").splitlines():
        parts = line.split()
        if not parts or not parts[0].startswith("/"):
            continue
        directory = parts[0].strip("/")
        name = parts[1] if len(parts) > 1 else directory
        version = parts[2] if len(parts) > 2 else ""
        shown = directory or "/"
        if directory and not any(p.startswith(f"/{directory}/") for p in _tops(media, directory)):
            raise InputError(f"{media.iso}: repository directory {shown} listed in media.1/products "
                             "is missing",
                             "the ISO is incomplete or damaged; download it again and check its checksum")
        repomd = f"/{directory}/repodata/repomd.xml" if directory else "/repodata/repomd.xml"
        if media.resolve(repomd) is None:
            raise InputError(f"{media.iso}: repository directory {shown} has no repodata/repomd.xml",
                             "the ISO is incomplete or damaged; download it again and check its checksum")
        repos.append(Repo(alias_for(directory), directory, name, version))
    if not repos:
        raise InputError(f"{media.iso}: media.1/products lists no repository",
                         "use the Full (Media1) ISO, which lists its modules in media.1/products")
    return repos


def package_arches(media: Media) -> set[str]:
    """The RPM architectures the ISO's repositories carry: <repo>/<arch>/*.rpm (noarch and sources left out)."""
    found: set[str] = set()
    for repo in media.repos:
        prefix = f"/{repo.dir}/" if repo.dir else "/"
        for path in media.index:
            if path.startswith(prefix) and path.endswith(".rpm"):
                parts = path[len(prefix):].split("/")
                if len(parts) == 2:
                    found.add(parts[0])
    return found - {"noarch", "src", "nosrc"}


def check_arch(media: Media, arch: Arch) -> None:
    """An ISO of another architecture is refused before any work (its packages would not run)."""
    found = package_arches(media)
    if found and arch.suse not in found:
        raise InputError(f"{media.iso} holds {', '.join(sorted(found))} packages, not {arch}",
                         f"use the Full ISO for {arch} (its name says {arch}), or build for --arch {sorted(found)[0]}")


def _tops(media: Media, directory: str) -> list[str]:
    """Index paths under the first component of `directory` (cheap prefilter for the missing-dir check)."""
    first = "/" + directory.split("/")[0] + "/"
    return [p for p in media.index if p.startswith(first)]


def _identity(media: Media) -> str:
    """A stable hash of the ISO that costs kilobytes, not 14 GB.

    Volume id, file size, media.1/media and every repomd.xml (which carries the checksums of all the
    repository metadata, hence of every package)."""
    h = hashlib.sha256()
    h.update(media.volume_id.encode())
    h.update(str(media.iso.stat().st_size).encode())
    h.update("\n".join(media.info).encode())
    for repo in media.repos:
        h.update(repo.dir.encode())
        h.update(media.read(f"/{repo.dir}/repodata/repomd.xml" if repo.dir else "/repodata/repomd.xml"))
    return h.hexdigest()


def package_count(media: Media, repo: Repo) -> int | None:
    """Packages in a repository, from the `packages="N"` attribute at the head of primary.xml.*."""
    base = f"/{repo.dir}" if repo.dir else ""
    repomd = media.read(f"{base}/repodata/repomd.xml").decode(errors="replace")
    m = re.search(r'<data type="primary">.*?<location href="([^"]+)"', repomd, re.S)
    if not m:
        return None
    ext = media.resolve(f"{base}/{m.group(1)}")
    if ext is None:
        return None
    fd = os.open(media.iso, os.O_RDONLY)
    try:
        head = os.pread(fd, min(ext[1], 65536), ext[0])
    finally:
        os.close(fd)
    try:
        if head[:2] == b"\x1f\x8b":
            text = zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(head, 4096)
        elif head[:4] == b"\x28\xb5\x2f\xfd":
            text = zstandard.ZstdDecompressor().decompressobj().decompress(head)[:4096]
        elif head[:6] == b"\xfd7zXZ\x00":
            text = lzma.LZMADecompressor().decompress(head, 4096)
        else:
            text = head[:4096]
    except (zlib.error, zstandard.ZstdError, lzma.LZMAError, gzip.BadGzipFile):
        return None
    n = re.search(rb'packages="(\d+)"', text)
    return int(n.group(1)) if n else None


def repo_rows(iso_path: Path) -> list[dict[str, object]]:
    """Rows for `repos ISO`: alias, directory, product, version, package count."""
    media = open_media(iso_path)
    return [{"alias": r.alias, "dir": r.dir or "/", "product": r.name, "version": r.version,
             "packages": package_count(media, r)} for r in media.repos]


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: zypper fetches hundreds of packages on one connection
    media: Media
    fd: int

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the base class's name
        log.debug("media http: " + format, *args)

    def do_HEAD(self) -> None:  # noqa: N802 - http.server's naming
        self._answer(body=False)

    def do_GET(self) -> None:  # noqa: N802
        self._answer(body=True)

    def _answer(self, body: bool) -> None:
        ext = self.media.resolve(unquote(urlsplit(self.path).path))
        if ext is None:
            self.send_error(404)
            return
        offset, size = ext
        start, end = 0, size - 1
        rng = self.headers.get("Range")
        status = 200
        if rng:
            m = re.fullmatch(r"bytes=(\d*)-(\d*)", rng.strip())
            if m and (m.group(1) or m.group(2)):
                if m.group(1):
                    start = int(m.group(1))
                    end = min(int(m.group(2)), size - 1) if m.group(2) else size - 1
                else:
                    start = max(0, size - int(m.group(2)))
                if start > end or start >= size:
                    self.send_response(416)
                    self.send_header("Content-Range", f"bytes */{size}")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                status = 206
        length = end - start + 1 if size else 0
        self.send_response(status)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(length))
        self.send_header("Accept-Ranges", "bytes")
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        self.end_headers()
        if not body:
            return
        pos = offset + start
        left = length
        while left > 0:
            chunk = os.pread(self.fd, min(CHUNK, left), pos)  # pread: no shared file position between threads
            if not chunk:  # the ISO shrank under us: a client waiting for the rest would hang
                self.close_connection = True
                break
            self.wfile.write(chunk)
            pos += len(chunk)
            left -= len(chunk)


def serve(media: Media, stack: ExitStack) -> str:
    """Serve the ISO's files on 127.0.0.1 (a free port) until `stack` closes. Returns the base URL."""
    fd = os.open(media.iso, os.O_RDONLY)
    stack.callback(os.close, fd)
    handler = type("MediaHandler", (_Handler,), {"media": media, "fd": fd})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    stack.callback(server.server_close)
    thread = threading.Thread(target=server.serve_forever, name="media-http", daemon=True)
    thread.start()
    stack.callback(server.shutdown)
    url = f"http://127.0.0.1:{server.server_address[1]}"
    log.info("serving %s (%d repositories) at %s", media.iso.name, len(media.repos), url)
    return url


def repo_urls(media: Media, base_url: str) -> list[tuple[str, str]]:
    """(alias, url) for zypper.write_repos."""
    return [(r.alias, f"{base_url}/{r.dir}" if r.dir else base_url) for r in media.repos]
