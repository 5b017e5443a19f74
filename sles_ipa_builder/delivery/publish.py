"""Publishing the artifacts as an OCI artifact: to a registry (`oci://REGISTRY/REPO:TAG`) or into an
OCI image layout directory (`oci-layout:DIR[:TAG]`) for air-gapped transfer.

What is published, one tag:

    image index (application/vnd.oci.image.index.v1+json)
      ├─ manifest, platform {architecture: amd64, os: linux}, artifactType ARTIFACT_TYPE
      └─ manifest, platform {architecture: arm64, os: linux}, ... (one per architecture)
           config: the empty descriptor ({}), as OCI 1.1 says for artifacts
           layers: <name>.kernel, <name>.initramfs, <name>.manifest.json, <name>.cdx.json (SBOM),
                   <name>.esp.img and <name>.iso (when built), <name>.sha256 (and
                   <name>.sha256.minisig when signed),
                   each with its own media type and org.opencontainers.image.title = its file name

so `oras pull` or `skopeo copy` brings back the files under their names, a client picks its
platform's manifest (`skopeo --override-arch arm64`), and the kernel and initramfs by media type.

One publish writes one manifest per artifact set it is given (`--name` several times: the x86_64
and aarch64 builds in one output directory, each named as metal3 names it). The tag's manifests of
other platforms are kept: a later publish of one architecture replaces that architecture's manifest
only, unless `replace` says to drop the others.

The layout is written here (it is a directory of JSON and content-addressed files, OCI image-layout
1.0); the registry transport is skopeo's (`skopeo copy --all --preserve-digests oci:... docker://...`):
it is maintained by the containers project, packaged by Debian and SUSE, speaks the registry
protocols (token and basic auth, TLS, chunked uploads), and reads credentials from the usual auth
files itself ($REGISTRY_AUTH_FILE, ${XDG_RUNTIME_DIR}/containers/auth.json, ~/.docker/config.json),
so the builder never reads, holds or logs a credential. A push goes from a temporary layout:
the artifacts in the output directory are only read.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import run
from ..cache.store import sha256_uncached
from ..config.arch import Arch
from ..errors import BuildError, ConfigError, InputError

log = logging.getLogger(__name__)

ARTIFACT_TYPE = "application/vnd.sles-ipa-builder.ramdisk.v1"
INDEX = "application/vnd.oci.image.index.v1+json"
MANIFEST = "application/vnd.oci.image.manifest.v1+json"
EMPTY = "application/vnd.oci.empty.v1+json"
TITLE = "org.opencontainers.image.title"
REF_NAME = "org.opencontainers.image.ref.name"
# suffix -> media type; the first two are what a booting client needs
LAYERS: tuple[tuple[str, str, bool], ...] = (  # (suffix, media type, required)
    ("kernel", "application/vnd.sles-ipa-builder.kernel", True),
    ("initramfs", "application/vnd.sles-ipa-builder.initramfs", True),
    ("manifest.json", "application/vnd.sles-ipa-builder.manifest.v1+json", True),
    ("cdx.json", "application/vnd.cyclonedx+json", True),
    ("esp.img", "application/vnd.sles-ipa-builder.esp", False),  # a FAT image: Ironic's bootloader
    ("iso", "application/vnd.sles-ipa-builder.iso", False),  # Ironic's deploy_iso
    ("sha256", "application/vnd.sles-ipa-builder.sha256sums", False),
    ("sha256.minisig", "application/vnd.sles-ipa-builder.minisign.signature", False),
)

# distribution's reference grammar (docker/distribution reference/regexp.go), written out again
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_HOST = r"(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)*|\[[0-9a-fA-F:]+\])"
_REGISTRY_RE = re.compile(rf"^{_HOST}(?::[0-9]{{1,5}})?$")
_REPO_RE = re.compile(rf"^{_COMPONENT}(?:/{_COMPONENT})*$")
_TAG_RE = re.compile(r"^[\w][\w.-]{0,127}$")
HINT_REF = "write it as oci://REGISTRY[:PORT]/REPO[/...]:TAG (lower-case repository) or oci-layout:DIR[:TAG]"


@dataclass(frozen=True)
class Destination:
    registry: str = ""  # host[:port]; empty for a layout
    repository: str = ""
    tag: str = "latest"
    layout: Path | None = None  # oci-layout:DIR

    def __str__(self) -> str:
        if self.layout is not None:
            return f"oci-layout:{self.layout}:{self.tag}"
        return f"oci://{self.registry}/{self.repository}:{self.tag}"

    @property
    def skopeo_ref(self) -> str:
        return f"docker://{self.registry}/{self.repository}:{self.tag}"


def parse_destination(text: str) -> Destination:
    """oci://REGISTRY/REPO[:TAG] or oci-layout:DIR[:TAG] (TAG defaults to latest); ConfigError otherwise."""
    text = text.strip()
    if text.startswith("oci-layout:"):
        rest = text.removeprefix("oci-layout:")
        path, _, tag = rest.rpartition(":")
        if not path or "/" in tag or not _TAG_RE.match(tag):
            path, tag = rest, "latest"
        if not path:
            raise ConfigError(f"bad destination {text!r}: no directory", HINT_REF)
        return Destination(tag=tag, layout=Path(path))
    if not text.startswith("oci://"):
        raise ConfigError(f"bad destination {text!r}: neither oci:// nor oci-layout:", HINT_REF)
    rest = text.removeprefix("oci://")
    if "@" in rest:
        raise ConfigError(f"bad destination {text!r}: a push needs a tag, not a digest", HINT_REF)
    registry, _, path = rest.partition("/")
    repo, tag = path, "latest"
    last = path.rsplit("/", 1)[-1]
    if ":" in last:
        repo, tag = path[: len(path) - len(last)] + last.split(":", 1)[0], last.split(":", 1)[1]
    if not _REGISTRY_RE.match(registry):
        raise ConfigError(f"bad destination {text!r}: {registry!r} is not a registry host[:port]", HINT_REF)
    if not _REPO_RE.match(repo) or len(repo) > 255:
        raise ConfigError(f"bad destination {text!r}: {repo!r} is not a repository name", HINT_REF)
    if not _TAG_RE.match(tag):
        raise ConfigError(f"bad destination {text!r}: {tag!r} is not a tag", HINT_REF)
    return Destination(registry=registry, repository=repo, tag=tag)


# --- the layout ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Platform:
    """One architecture's artifacts: <output_dir>/<name>.*, built for `arch`."""

    output_dir: Path
    name: str
    arch: Arch


@dataclass
class Published:
    destination: Destination
    digest: str  # of the tagged image index
    manifests: dict[str, str]  # OCI architecture -> digest of the manifest this publish wrote
    layers: dict[str, str]  # file name -> digest
    kept: list[str]  # OCI architectures kept from the tag's earlier index


def collect(output_dir: Path, name: str) -> list[tuple[Path, str]]:
    """The files to publish with their media types; the required ones must be there, and match <name>.sha256."""
    found = []
    for suffix, media_type, required in LAYERS:
        p = output_dir / f"{name}.{suffix}"
        if p.is_file():
            found.append((p, media_type))
        elif required:
            raise InputError(f"{p} not found", "build first (or give --output/--name of a complete build)")
    return found


def _check_sums(output_dir: Path, name: str, digests: dict[str, str]) -> None:
    sums = output_dir / f"{name}.sha256"
    if not sums.is_file():
        return
    for line in sums.read_text().splitlines():
        want, _, fname = line.partition("  ")
        if fname in digests and digests[fname] != want:
            raise InputError(f"{fname} does not match {sums.name}",
                             "the output directory mixes two builds: build again before publishing")


class _Layout:
    def __init__(self, root: Path) -> None:
        self.root = root
        (root / "blobs/sha256").mkdir(parents=True, exist_ok=True)

    def blob_bytes(self, data: bytes, media_type: str) -> dict[str, Any]:
        d = hashlib.sha256(data).hexdigest()
        p = self.root / "blobs/sha256" / d
        if not p.exists():
            p.write_bytes(data)
        return {"mediaType": media_type, "digest": f"sha256:{d}", "size": len(data)}

    def blob_file(self, src: Path, digest: str, media_type: str) -> dict[str, Any]:
        p = self.root / "blobs/sha256" / digest
        if not p.exists():
            tmp = p.with_name(f".{digest}.tmp")
            try:
                os.link(src, tmp)  # same file system: no copy, and the source is never written
            except OSError:
                shutil.copyfile(src, tmp)
            os.replace(tmp, p)
        return {"mediaType": media_type, "digest": f"sha256:{digest}", "size": src.stat().st_size}

    def tag(self, descriptor: dict[str, Any], tag: str) -> None:
        (self.root / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
        index_path = self.root / "index.json"
        top: dict[str, Any] = {"schemaVersion": 2, "mediaType": INDEX, "manifests": []}
        if index_path.is_file():
            try:
                top = json.loads(index_path.read_text())
            except ValueError:
                raise InputError(f"{index_path} is not JSON", "give an empty directory or an OCI layout") from None
        kept = [m for m in top.get("manifests", []) if (m.get("annotations") or {}).get(REF_NAME) != tag]
        top["manifests"] = [*kept, {**descriptor, "annotations": {REF_NAME: tag}}]
        tmp = index_path.with_name(".index.json.tmp")
        tmp.write_text(json.dumps(top, indent=2) + "\n")
        os.replace(tmp, index_path)


def _canonical(doc: dict[str, Any]) -> bytes:
    return json.dumps(doc, separators=(",", ":"), sort_keys=True).encode()


def _platform_of(descriptor: dict[str, Any]) -> str:
    return str((descriptor.get("platform") or {}).get("architecture", ""))


def others(index: dict[str, Any] | None, arches: set[str]) -> list[dict[str, Any]]:
    """The manifests of an existing index for platforms other than `arches` (none when it is no index)."""
    if index is None or index.get("mediaType", INDEX) != INDEX:
        return []
    return [m for m in index.get("manifests", []) if _platform_of(m) and _platform_of(m) not in arches]


def _check_platforms(sets: list[Platform]) -> None:
    if not sets:
        raise ConfigError("nothing to publish", "name the artifacts with --name")
    seen: dict[str, str] = {}
    for s in sets:
        if s.arch.oci in seen:
            raise ConfigError(f"two artifact sets for {s.arch.suse}: {seen[s.arch.oci]} and {s.name}",
                              "publish one build per architecture into a tag")
        seen[s.arch.oci] = s.name


def write_layout(sets: list[Platform], layout_dir: Path, tag: str,
                 keep: list[dict[str, Any]] | None = None) -> Published:
    """Add one manifest per artifact set to an OCI image layout, in one index under `tag` (the
    directory is made if missing). `keep`: descriptors of other platforms' manifests whose blobs are
    already in the layout, listed in the index too."""
    _check_platforms(sets)
    staged = [(s, collect(s.output_dir, s.name)) for s in sets]
    digests = {p.name: sha256_uncached(p) for _, files in staged for p, _ in files}
    for s, _ in staged:
        _check_sums(s.output_dir, s.name, digests)
    if layout_dir.exists() and not layout_dir.is_dir():
        raise InputError(f"{layout_dir} is not a directory", "give a directory for the OCI layout")
    if layout_dir.is_dir() and any(layout_dir.iterdir()) and not (layout_dir / "oci-layout").is_file():
        raise InputError(f"{layout_dir} is neither empty nor an OCI layout", "give an empty or new directory")
    lay = _Layout(layout_dir)
    written = []
    for s, files in staged:
        layers = [{**lay.blob_file(p, digests[p.name], mt), "annotations": {TITLE: p.name}} for p, mt in files]
        manifest = {
            "schemaVersion": 2, "mediaType": MANIFEST, "artifactType": ARTIFACT_TYPE,
            "config": lay.blob_bytes(b"{}", EMPTY), "layers": layers,
            "annotations": {TITLE: s.name},
        }  # fmt: skip
        # no artifactType in the index's descriptor (OCI 1.1 allows it): skopeo 1.9 would have to rewrite such
        # an index, which --preserve-digests forbids; the manifest itself carries it
        platform = {"architecture": s.arch.oci, "os": "linux"}
        written.append({**lay.blob_bytes(_canonical(manifest), MANIFEST), "platform": platform})
    kept = list(keep or [])
    # sorted by platform: the same artifacts give the same index, whichever order they were named in
    index = {"schemaVersion": 2, "mediaType": INDEX, "manifests": sorted(kept + written, key=_platform_of)}
    i_desc = lay.blob_bytes(_canonical(index), INDEX)
    lay.tag(i_desc, tag)
    return Published(Destination(tag=tag, layout=layout_dir), i_desc["digest"],
                     {_platform_of(m): m["digest"] for m in written},
                     {name: f"sha256:{d}" for name, d in digests.items()}, sorted(_platform_of(m) for m in kept))


def layout_index(layout_dir: Path, tag: str) -> dict[str, Any] | None:
    """The index an OCI layout holds under `tag`, if any."""
    try:
        top = json.loads((layout_dir / "index.json").read_text())
        found = [m for m in top.get("manifests", []) if (m.get("annotations") or {}).get(REF_NAME) == tag]
        if not found:
            return None
        blob = layout_dir / "blobs/sha256" / str(found[-1]["digest"]).removeprefix("sha256:")
        return dict(json.loads(blob.read_text()))
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


# --- the registry ----------------------------------------------------------------------------------
def _skopeo_reason(stderr: str) -> str:
    msgs = re.findall(r'msg="((?:[^"\\]|\\.)*)"', stderr)
    text = (msgs[-1] if msgs else (stderr.strip().splitlines() or [""])[-1]).replace('\\"', '"')
    return text[-300:]


def _push_error(dest: Destination, stderr: str, insecure: bool) -> BuildError:
    reason = _skopeo_reason(stderr)
    low = reason.lower()
    where = f"{dest.registry}"
    # a status code as a word: a blob digest in the message may hold "401" (sha256:...cc4016f...)
    if any(s in low for s in ("unauthorized", "authentication required", "denied")) or re.search(r"\b401\b", low):
        return InputError(f"registry {where} refused the push (unauthorized): {reason}",
                          "log in (`skopeo login REGISTRY`) or point REGISTRY_AUTH_FILE at an auth file with "
                          "credentials for it")  # fmt: skip
    if "server gave http response to https client" in low:
        return InputError(f"registry {where} speaks plain HTTP", "add --insecure for a plain-HTTP registry")
    if "x509" in low or "certificate" in low:
        return InputError(f"registry {where}: TLS certificate not trusted: {reason}",
                          "add its CA to the system trust store, or --insecure to skip verification")
    if any(s in low for s in ("connection refused", "no such host", "i/o timeout", "dial tcp", "network is unreachable",
                              "connection reset", "eof")):  # fmt: skip
        return InputError(f"cannot reach registry {where}: {reason}",
                          "check the registry address and port" + ("" if insecure else " (--insecure for plain HTTP)"))
    if any(s in low for s in ("name invalid", "invalid reference", "repository name")):
        return InputError(f"registry {where} refused the name {dest.repository}:{dest.tag}: {reason}", HINT_REF)
    return BuildError(f"pushing to {dest} failed: {reason}", "see the message above; --debug shows skopeo's output")


def _access(side: str, insecure: bool, authfile: Path | None) -> list[str]:
    """skopeo's TLS and auth-file flags for the registry side `side` ("", "src-" or "dest-")."""
    return [*([f"--{side}tls-verify=false"] if insecure else []),
            *([f"--{side}authfile", str(authfile)] if authfile is not None else [])]


def _remote_index(dest: Destination, insecure: bool, authfile: Path | None) -> dict[str, Any] | None:
    """The tag's manifest (an index, or a single manifest) as the registry holds it; None when the tag is new."""
    argv = ["skopeo", "inspect", "--raw", *_access("", insecure, authfile), dest.skopeo_ref]
    out = run.run(argv, capture=True, check=False)
    if out.returncode != 0:
        if re.search(r"manifest unknown|not found|name unknown", out.stderr, re.I):
            return None
        raise _push_error(dest, out.stderr, insecure)
    try:
        return dict(json.loads(out.stdout))
    except ValueError:
        return None


def _fetch_kept(dest: Destination, keep: list[dict[str, Any]], layout: Path, insecure: bool,
                authfile: Path | None) -> None:
    """The kept platforms' manifests and blobs, by digest, into the staging layout (the push then finds
    them at the registry already and skips them)."""
    for n, m in enumerate(keep):
        src = f"docker://{dest.registry}/{dest.repository}@{m['digest']}"
        argv = ["skopeo", "copy", "--preserve-digests", *_access("src-", insecure, authfile), src,
                f"oci:{layout}:kept-{n}"]
        out = run.run(argv, capture=True, check=False)
        if out.returncode != 0:
            raise _push_error(dest, out.stderr, insecure)


def push(sets: list[Platform], dest: Destination, *, insecure: bool = False, authfile: Path | None = None,
         replace: bool = False) -> Published:
    """A temporary layout of the artifacts (and of the tag's other platforms, unless `replace`), copied
    by skopeo to the registry with its digests."""
    if run.which("skopeo") is None:
        raise ConfigError("skopeo is not installed", "apt-get install skopeo (or zypper in skopeo)")
    if authfile is not None and not authfile.is_file():
        raise ConfigError(f"auth file {authfile} not found", "give an existing auth file, or leave --authfile out")
    _check_platforms(sets)
    for s in sets:  # the local files first: a missing one is the user's to fix before the registry is asked
        collect(s.output_dir, s.name)
    keep = [] if replace else others(_remote_index(dest, insecure, authfile), {s.arch.oci for s in sets})
    with tempfile.TemporaryDirectory(prefix="sib-oci-") as tmp:
        _fetch_kept(dest, keep, Path(tmp) / "layout", insecure, authfile)
        staged = write_layout(sets, Path(tmp) / "layout", dest.tag, keep)
        digestfile = Path(tmp) / "digest"
        argv = ["skopeo", "copy", "--all", "--preserve-digests", "--digestfile", str(digestfile),
                *_access("dest-", insecure, authfile), f"oci:{Path(tmp) / 'layout'}:{dest.tag}", dest.skopeo_ref]
        log.info("pushing %s (%s) to %s", ", ".join(s.name for s in sets), staged.digest[:19], dest)
        out = run.run(argv, capture=True, check=False)
        if out.returncode != 0:
            log.debug("skopeo: %s", out.stderr.strip())
            raise _push_error(dest, out.stderr, insecure)
        pushed = digestfile.read_text().strip() if digestfile.is_file() else ""
    if pushed and pushed != staged.digest:
        raise BuildError(f"the registry stored {pushed}, not the index {staged.digest}",
                         "the registry rewrote the index; it may not support OCI image indexes")
    return Published(dest, staged.digest, staged.manifests, staged.layers, staged.kept)


def publish(sets: list[Platform], destination: str, *, insecure: bool = False, authfile: Path | None = None,
            replace: bool = False) -> Published:
    dest = parse_destination(destination)
    if dest.layout is not None:
        keep = [] if replace else others(layout_index(dest.layout, dest.tag), {s.arch.oci for s in sets})
        done = write_layout(sets, dest.layout, dest.tag, keep)
        log.info("wrote %s into the OCI layout %s as %s", ", ".join(s.name for s in sets), dest.layout, dest.tag)
        return done
    return push(sets, dest, insecure=insecure, authfile=authfile, replace=replace)


def result_line(p: Published) -> str:
    wrote = ", ".join(f"{arch} manifest {digest}" for arch, digest in sorted(p.manifests.items()))
    kept = f"; kept {', '.join(p.kept)}" if p.kept else ""
    return f"{p.destination}@{p.digest}  ({len(p.layers)} files; {wrote}{kept})"
