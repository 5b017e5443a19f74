"""The ramdisk's software bill of materials, as CycloneDX 1.6 JSON (`<name>.cdx.json`).

Why CycloneDX and not SPDX: its licence field takes an SPDX id, an SPDX expression *or* a free
name, and RPM licence tags are often none of the first two (`GPL-2.0+`, `SUSE-Freeware`,
`BSD-3-Clause and GPL-2.0`): SPDX 2.3 would need a LicenseRef- for each. Its component model
(purl, hashes, scope `excluded` for build inputs, a VCS reference and a commit for sources) holds
everything below without extensions, and the library that writes it is CycloneDX's own, with the
standard's JSON schemas inside to validate against.

What it lists:
- every RPM of the tree (name, epoch, version-release, arch, licence), from its rpm database, or
  from the list written into the tree before the package manager left it (pkgdrop.py);
- every Python distribution of the IPA venv (version, licence from its metadata);
- the git sources with their commits (the build manifest's `sources`);
- the kernel file (version, sha256) and the inputs (base image and Media1 ISO, sha256), the latter
  with scope `excluded`: used to build, not shipped.

The document is reproducible: its serial number is derived from the artifacts' hashes and its
timestamp is SOURCE_DATE_EPOCH when one is given.
"""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from importlib import metadata as md
from pathlib import Path
from typing import Any

from cyclonedx.contrib.license.factories import LicenseFactory
from cyclonedx.model import ExternalReference, ExternalReferenceType, HashAlgorithm, HashType, Property, XsUri
from cyclonedx.model.bom import Bom, BomMetaData
from cyclonedx.model.component import Commit, Component, ComponentScope, ComponentType, Pedigree
from cyclonedx.model.license import License
from cyclonedx.output.json import JsonV1Dot6
from packageurl import PackageURL

from .. import __version__
from ..cache import store as cache
from ..errors import BuildError
from ..packing.inventory import rpm_table

log = logging.getLogger(__name__)

SUFFIX = "cdx.json"
MEDIA_TYPE = "application/vnd.cyclonedx+json"
IPA_VENV = "opt/ironic-python-agent"
PROP = "sles-ipa-builder"  # namespace of our properties
# One line per package; tab separated (a licence may hold spaces).
_licences = LicenseFactory()


def _licence(text: str | None) -> list[License]:
    text = (text or "").strip()
    if not text or text in ("(none)", "UNKNOWN"):
        return []
    return [_licences.make_from_string(text)]


def _os_release(tree: Path) -> dict[str, str]:
    for rel in ("etc/os-release", "usr/lib/os-release"):
        p = tree / rel
        if p.is_file():
            pairs = (line.split("=", 1) for line in p.read_text(errors="replace").splitlines() if "=" in line)
            return {k.strip(): v.strip().strip('"') for k, v in pairs}
    return {}


def rpm_components(tree: Path) -> list[Component]:
    """One component per installed RPM (gpg-pubkey entries are keys, not software: left out)."""
    table = rpm_table(tree)
    if table is None:
        log.warning("SBOM: no rpm database or package list in the tree; no RPM is listed")
        return []
    osr = _os_release(tree)
    vendor = "suse" if osr.get("ID", "").startswith(("sle", "opensuse")) else (osr.get("ID") or "unknown")
    distro = f"{osr['ID']}-{osr['VERSION_ID']}" if osr.get("ID") and osr.get("VERSION_ID") else None
    out: list[Component] = []
    for fields in table:
        if len(fields) != 7:
            raise BuildError(f"unexpected rpm package row: {fields!r:.120}", "the tree's rpm database may be damaged")
        name, epoch, version, release, arch, _size, lic = fields
        if name == "gpg-pubkey":
            continue
        evr = f"{version}-{release}"
        qualifiers = {"arch": arch}
        if epoch not in ("", "0"):
            qualifiers["epoch"] = epoch
        if distro:
            qualifiers["distro"] = distro
        purl = PackageURL(type="rpm", namespace=vendor, name=name, version=evr, qualifiers=qualifiers)
        out.append(Component(
            name=name, version=evr if epoch in ("", "0") else f"{epoch}:{evr}", type=ComponentType.LIBRARY,
            purl=purl, bom_ref=purl.to_string(), licenses=_licence(lic),
            properties=[Property(name=f"{PROP}:rpm:arch", value=arch)],
        ))  # fmt: skip
    return out


def _python_licence(meta: Any) -> list[License]:
    expr = meta.get("License-Expression")
    if expr:
        return _licence(expr)
    text = (meta.get("License") or "").strip()
    if text and "\n" not in text and len(text) <= 100:  # some put the whole licence text there
        return _licence(text)
    classifiers = [c.rsplit(" :: ", 1)[-1] for c in meta.get_all("Classifier") or [] if c.startswith("License ::")]
    return _licence(classifiers[0]) if classifiers else []


def python_components(tree: Path, venv: str = IPA_VENV) -> list[Component]:
    """The IPA venv's distributions, read from their metadata files (no Python of the tree runs)."""
    site = sorted((tree / venv).glob("lib*/python3*/site-packages"))
    found: dict[str, Component] = {}
    for dist in md.distributions(path=[str(p) for p in site]):
        meta: Any = dist.metadata  # an email.message.Message underneath
        name, version = meta.get("Name"), meta.get("Version")
        if not name or not version:
            continue
        key = re.sub(r"[-_.]+", "-", name).lower()
        purl = PackageURL(type="pypi", name=key, version=version)
        found[key] = Component(
            name=name, version=version, type=ComponentType.LIBRARY, purl=purl, bom_ref=purl.to_string(),
            licenses=_python_licence(meta),
            properties=[Property(name=f"{PROP}:python:venv", value=f"/{venv}")],
        )
    return [found[k] for k in sorted(found)]


def source_components(sources: Iterable[Mapping[str, str]]) -> list[Component]:
    """The git sources the build cloned, each pinned to its commit."""
    out = []
    for row in sources:
        url = XsUri(row["location"]) if "://" in row["location"] else None
        out.append(Component(
            name=row["name"], version=row["commit"], type=ComponentType.APPLICATION,
            bom_ref=f"git:{row['name']}@{row['commit']}",
            external_references=[ExternalReference(type=ExternalReferenceType.VCS, url=url)] if url else [],
            pedigree=Pedigree(commits=[Commit(uid=row["commit"], url=url)]),
            properties=[Property(name=f"{PROP}:git:ref", value=row.get("ref", "")),
                        Property(name=f"{PROP}:git:location", value=row["location"]),
                        Property(name=f"{PROP}:git:dest", value=row.get("dest", ""))],
        ))  # fmt: skip
    return out


def _file(name: str, sha256: str, *, version: str | None = None, scope: ComponentScope | None = None,
          props: Mapping[str, str] | None = None) -> Component:  # fmt: skip
    return Component(
        name=name, version=version, type=ComponentType.FILE, scope=scope, bom_ref=f"file:{name}@sha256:{sha256}",
        hashes=[HashType(alg=HashAlgorithm.SHA_256, content=sha256)],
        properties=[Property(name=f"{PROP}:{k}", value=v) for k, v in (props or {}).items()],
    )


def input_components(inputs: Mapping[str, Any]) -> list[Component]:
    """The base image and the Media1 ISO with their sha256 (hashed once per file: cache.file_sha256)."""
    out = []
    base = inputs.get("base") or {}
    if base.get("sha256"):
        out.append(_file(Path(str(base["image"])).name, str(base["sha256"]), scope=ComponentScope.EXCLUDED,
                         props={"input": "base image", "path": str(base["image"])}))
    media = inputs.get("media") or {}
    iso = Path(str(media["iso"])) if media.get("iso") else None
    if iso is not None and iso.is_file():
        out.append(_file(iso.name, cache.file_sha256(iso), scope=ComponentScope.EXCLUDED,
                         props={"input": "Media1 ISO", "path": str(iso), "identity": str(media.get("identity", ""))}))
    return out


def boot_components(boot: Mapping[str, Any] | None) -> list[Component]:
    """The media's packages the ESP and the ISO carry files of (shim, grub, syslinux): not in the tree."""
    out = []
    for pkg in (boot or {}).get("packages") or []:
        purl = PackageURL(type="rpm", namespace="suse", name=pkg["name"], version=pkg["version"],
                          qualifiers={"arch": pkg["arch"]})
        out.append(Component(name=pkg["name"], version=pkg["version"], type=ComponentType.APPLICATION, purl=purl,
                             bom_ref=f"boot:{purl.to_string()}",
                             properties=[Property(name=f"{PROP}:boot-media", value="esp.img iso")]))
    return out


def make_bom(tree: Path, *, name: str, kernel_version: str, kernel_sha256: str, manifest: Mapping[str, Any],
             artifacts: Mapping[str, str], source_date_epoch: int | None = None) -> Bom:  # fmt: skip
    """The whole document. `artifacts`: file name -> sha256 of what is already written (kernel, initramfs...)."""
    rpms, pys = rpm_components(tree), python_components(tree)
    ipa = next((c.version for c in pys if c.name.lower().replace("_", "-") == "ironic-python-agent"), None)
    root = Component(
        name=name, version=ipa, type=ComponentType.OPERATING_SYSTEM, bom_ref=f"ramdisk:{name}",
        description="Ironic Python Agent ramdisk (kernel + initramfs) built by sles-ipa-builder",
        properties=[Property(name=f"{PROP}:artifact:{f}:sha256", value=d) for f, d in sorted(artifacts.items())],
    )  # fmt: skip
    tool = Component(name="sles-ipa-builder", version=__version__, type=ComponentType.APPLICATION,
                     bom_ref="tool:sles-ipa-builder")
    stamp = datetime.fromtimestamp(source_date_epoch, UTC) if source_date_epoch is not None else datetime.now(UTC)
    meta = BomMetaData(component=root, timestamp=stamp)
    meta.tools.components.add(tool)
    kernel = _file(f"{name}.kernel", kernel_sha256, version=kernel_version)
    sources, boot = source_components(manifest.get("sources") or []), boot_components(manifest.get("boot_media"))
    inputs = input_components(manifest.get("inputs") or {})
    components = [*rpms, *pys, *sources, kernel, *boot, *inputs]
    seed = "\n".join(f"{f} {d}" for f, d in sorted(artifacts.items()))
    bom = Bom(components=components, metadata=meta, serial_number=uuid.uuid5(uuid.NAMESPACE_URL, f"sib:{seed}"))
    bom.register_dependency(root, [c for c in components if c.scope is not ComponentScope.EXCLUDED])
    log.info("SBOM: %d RPMs, %d Python packages, %d sources, %d boot packages, %d inputs", len(rpms), len(pys),
             len(sources), len(boot), len(inputs))
    return bom


def to_json(bom: Bom) -> str:
    return JsonV1Dot6(bom).output_as_string(indent=2) + "\n"
