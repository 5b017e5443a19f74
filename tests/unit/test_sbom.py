"""The CycloneDX SBOM: what it lists, and CycloneDX's own JSON schema accepts it."""

from __future__ import annotations

import json
import os
import shutil
import stat
from pathlib import Path
from typing import Any

import pytest
from conftest import write_artifacts
from cyclonedx.schema import SchemaVersion
from cyclonedx.validation.json import JsonStrictValidator

from sles_ipa_builder import run
from sles_ipa_builder.cache import store as cache
from sles_ipa_builder.delivery import sbom
from sles_ipa_builder.packing.compress import Compression

KVER = "6.4.0-150600.23.25-default"
SITE = "opt/ironic-python-agent/lib/python3.11/site-packages"
# what the fake rpm prints for the package query: name, epoch, version, release, arch, size, licence
RPMS = [
    "kernel-default\t0\t6.4.0\t150600.23.25.1\tx86_64\t98765\tGPL-2.0-only",
    "bash\t0\t4.4\t150400.25.22\tx86_64\t1234\tGPL-3.0-or-later",
    "openssl-3\t0\t3.1.4\t150600.5.15.1\tx86_64\t4321\tApache-2.0 AND OpenSSL",  # an SPDX expression
    "suse-build-key\t0\t12.0\t150000.8.46.1\tnoarch\t10\tGPL-2.0+",  # old style: a name, not an id
    "timezone\t2\t2024a\t150000.75.28.1\tx86_64\t99\tSUSE-Public-Domain",
    "gpg-pubkey\t0\t39db7c82\t5f68629b\t(none)\t0\tpubkey",
]


def make_tree(base: Path) -> Path:
    files = {
        f"boot/vmlinuz-{KVER}": b"KERNEL",
        f"boot/config-{KVER}": b"CONFIG_RD_ZSTD=y\nCONFIG_RD_GZIP=y\n",
        "etc/os-release": b'NAME="SLES"\nID="sles"\nVERSION_ID="15.6"\n',
        "usr/lib/sysimage/rpm/rpmdb.sqlite": b"not read: the fake rpm answers",
        "usr/bin/true": b"x",
        f"{SITE}/ironic_python_agent-13.0.0.dist-info/METADATA":
            b"Metadata-Version: 2.1\nName: ironic-python-agent\nVersion: 13.0.0\nLicense: Apache-2.0\n",
        f"{SITE}/oslo.config-9.4.0.dist-info/METADATA":
            b"Metadata-Version: 2.4\nName: oslo.config\nVersion: 9.4.0\nLicense-Expression: Apache-2.0\n",
        f"{SITE}/Babel-2.14.0.dist-info/METADATA": b"Metadata-Version: 2.1\nName: Babel\nVersion: 2.14.0\n"
            b"Classifier: License :: OSI Approved :: BSD License\n",
    }  # fmt: skip
    for rel, data in files.items():
        p = base / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
    return base


@pytest.fixture
def fake_rpm(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An `rpm` on PATH that answers -qa with RPMS in the query's shape (the first word is the name)."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    data = tmp_path / "rpms.txt"
    data.write_text("".join(f"{line.split(chr(9))[0]} {line}\n" for line in RPMS))
    script = bindir / "rpm"
    script.write_text(f"#!/bin/sh\ncase \"$*\" in *-qa*) cat {data};; *) exit 1;; esac\n")
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{bindir}:{os.environ['PATH']}")
    return script


def _validate(text: str) -> Any:
    return JsonStrictValidator(SchemaVersion.V1_6).validate_str(text)


def _build(tmp_path: Path, manifest: dict[str, Any]) -> dict[str, Any]:
    tree = make_tree(tmp_path / "root")
    arts = write_artifacts(tree, tmp_path / "out", "ipa", Compression.parse("gzip"), size_limit_mb=None,
                           source_date_epoch=1_700_000_000, manifest=manifest, progress=False)
    text = arts.files["cdx.json"].read_text()
    assert _validate(text) is None
    return dict(json.loads(text))


def test_sbom_lists_rpms_python_sources_kernel_and_inputs(tmp_path: Path, fake_rpm: Path) -> None:
    iso = tmp_path / "SLE-15-SP6-Full-x86_64-GM-Media1.iso"
    iso.write_bytes(b"iso" * 1000)
    manifest = {
        "sources": [{"name": "ironic-python-agent", "location": "https://opendev.org/openstack/ironic-python-agent",
                     "ref": "master", "commit": "a" * 40, "dest": "/tmp/ironic-python-agent", "element": "x"}],
        "inputs": {"base": {"image": "/img/SLES15-SP6-Minimal-VM.qcow2", "sha256": "b" * 64},
                   "media": {"iso": str(iso), "identity": "c" * 64}},
    }  # fmt: skip
    doc = _build(tmp_path, manifest)
    assert doc["bomFormat"] == "CycloneDX" and doc["specVersion"] == "1.6"
    by_ref = {c["bom-ref"]: c for c in doc["components"]}
    rpms = {c["name"]: c for c in doc["components"] if c.get("purl", "").startswith("pkg:rpm/")}
    assert sorted(rpms) == ["bash", "kernel-default", "openssl-3", "suse-build-key", "timezone"]  # no gpg-pubkey
    assert rpms["bash"]["purl"] == "pkg:rpm/suse/bash@4.4-150400.25.22?arch=x86_64&distro=sles-15.6"
    assert rpms["bash"]["licenses"] == [{"license": {"id": "GPL-3.0-or-later"}}]
    assert rpms["openssl-3"]["licenses"] == [{"expression": "Apache-2.0 AND OpenSSL"}]
    assert rpms["timezone"]["version"] == "2:2024a-150000.75.28.1" and "epoch=2" in rpms["timezone"]["purl"]
    assert "license" in rpms["suse-build-key"]["licenses"][0]  # kept, as an id or a name
    pys = {c["name"]: c for c in doc["components"] if c.get("purl", "").startswith("pkg:pypi/")}
    assert pys["ironic-python-agent"]["version"] == "13.0.0"
    assert pys["oslo.config"]["purl"] == "pkg:pypi/oslo-config@9.4.0"
    assert pys["oslo.config"]["licenses"] == [{"expression": "Apache-2.0"}] or \
        pys["oslo.config"]["licenses"] == [{"license": {"id": "Apache-2.0"}}]
    assert pys["Babel"]["licenses"]  # from the classifier
    src = by_ref[f"git:ironic-python-agent@{'a' * 40}"]
    assert src["pedigree"]["commits"][0]["uid"] == "a" * 40
    assert src["externalReferences"][0] == {"type": "vcs", "url": "https://opendev.org/openstack/ironic-python-agent"}
    files = {c["name"]: c for c in doc["components"] if c["type"] == "file"}
    kernel_sha = cache.sha256_uncached(tmp_path / "out/ipa.kernel")
    assert files["ipa.kernel"]["version"] == KVER
    assert files["ipa.kernel"]["hashes"] == [{"alg": "SHA-256", "content": kernel_sha}]
    assert files["SLES15-SP6-Minimal-VM.qcow2"]["hashes"][0]["content"] == "b" * 64
    assert files[iso.name]["hashes"][0]["content"] == cache.sha256_uncached(iso)
    assert files[iso.name]["scope"] == "excluded"
    root = doc["metadata"]["component"]
    assert root["name"] == "ipa" and root["version"] == "13.0.0" and root["type"] == "operating-system"
    assert doc["metadata"]["timestamp"].startswith("2023-11-14T22:13:20")  # SOURCE_DATE_EPOCH
    # the ramdisk depends on what it ships, not on the build inputs
    deps = next(d for d in doc["dependencies"] if d["ref"] == "ramdisk:ipa")["dependsOn"]
    assert "pkg:rpm/suse/bash@4.4-150400.25.22?arch=x86_64&distro=sles-15.6" in deps
    assert f"file:{iso.name}@sha256:{cache.sha256_uncached(iso)}" not in deps
    # covered by the one checksum file
    assert "ipa.cdx.json" in (tmp_path / "out/ipa.sha256").read_text()


def test_the_validator_rejects_a_broken_document(tmp_path: Path, fake_rpm: Path) -> None:
    doc = _build(tmp_path, {})
    doc["components"][0]["type"] = "not-a-type"
    assert _validate(json.dumps(doc)) is not None
    del doc["components"][0]["type"]
    doc["specVersion"] = "1.6"
    doc["components"][0]["hashes"] = [{"alg": "SHA-256", "content": "not hex"}]
    assert _validate(json.dumps(doc)) is not None


def test_same_tree_same_sbom(tmp_path: Path, fake_rpm: Path) -> None:
    a = _build(tmp_path / "a", {})
    b = _build(tmp_path / "b", {})
    assert a == b and a["serialNumber"].startswith("urn:uuid:")


def test_no_rpm_database_still_gives_a_valid_sbom(tmp_path: Path) -> None:
    tree = make_tree(tmp_path / "root")
    (tree / "usr/lib/sysimage/rpm/rpmdb.sqlite").unlink()
    bom = sbom.make_bom(tree, name="ipa", kernel_version=KVER, kernel_sha256="d" * 64, manifest={},
                        artifacts={"ipa.kernel": "d" * 64})
    text = sbom.to_json(bom)
    assert _validate(text) is None
    assert not [c for c in json.loads(text)["components"] if c.get("purl", "").startswith("pkg:rpm/")]


SPEC = """Name: {name}
Version: 1.2.3
Release: 4.5
Epoch: {epoch}
Summary: a package of the SBOM test
License: {licence}
BuildArch: noarch
%description
test
%files
"""


@pytest.mark.skipif(not shutil.which("rpmbuild"), reason="rpmbuild is not installed")
def test_sbom_reads_a_real_rpm_database(tmp_path: Path) -> None:
    """Real RPMs installed into a real database (sqlite, as SLE 15 SP3+ has), read by the host's rpm."""
    tree = make_tree(tmp_path / "root")
    (tree / "usr/lib/sysimage/rpm/rpmdb.sqlite").unlink()
    rpms = []
    for name, epoch, licence in (("sib-one", 0, "MIT"), ("sib-two", 3, "GPL-2.0-or-later AND MIT"),
                                 ("sib-three", 0, "SUSE-Freeware")):
        spec = tmp_path / f"{name}.spec"
        spec.write_text(SPEC.format(name=name, epoch=epoch, licence=licence))
        run.run(["rpmbuild", "-bb", "--define", f"_topdir {tmp_path / 'rpmbuild'}", "--define",
                 f"_rpmdir {tmp_path / 'rpms'}", spec], capture=True)
        rpms.append(tmp_path / f"rpms/noarch/{name}-1.2.3-4.5.noarch.rpm")
    dbargs = ["--root", str(tree), "--dbpath", "/usr/lib/sysimage/rpm"]
    run.run(["rpm", *dbargs, "--initdb"], capture=True)
    run.run(["rpm", *dbargs, "--justdb", "--nodeps", "--noscripts", "-i", *rpms], capture=True)
    bom = sbom.make_bom(tree, name="ipa", kernel_version=KVER, kernel_sha256="e" * 64, manifest={},
                        artifacts={"ipa.kernel": "e" * 64})
    text = sbom.to_json(bom)
    assert _validate(text) is None
    got = {c["name"]: c for c in json.loads(text)["components"] if c.get("purl", "").startswith("pkg:rpm/")}
    assert sorted(got) == ["sib-one", "sib-three", "sib-two"]
    assert got["sib-one"]["version"] == "1.2.3-4.5" and got["sib-one"]["licenses"] == [{"license": {"id": "MIT"}}]
    assert got["sib-two"]["version"] == "3:1.2.3-4.5"
    assert got["sib-two"]["purl"] == "pkg:rpm/suse/sib-two@1.2.3-4.5?arch=noarch&distro=sles-15.6&epoch=3"
    assert got["sib-two"]["licenses"] == [{"expression": "GPL-2.0-or-later AND MIT"}]
    assert got["sib-three"]["licenses"] == [{"license": {"name": "SUSE-Freeware"}}]
