"""publish: the artifacts as an OCI artifact, pushed to a real registry (Debian's docker-registry, the
distribution registry, on 127.0.0.1) and read back with plain registry API calls, not skopeo."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from conftest import write_artifacts

from sles_ipa_builder import run
from sles_ipa_builder.config.arch import AARCH64, ARCHES, X86_64
from sles_ipa_builder.delivery import publish
from sles_ipa_builder.errors import ConfigError
from sles_ipa_builder.packing.compress import Compression

KVER = "6.4.0-150600.23.25-default"
NAME = "ipa"
needs_tools = pytest.mark.skipif(not (shutil.which("docker-registry") and shutil.which("skopeo")),
                                 reason="docker-registry and skopeo are not installed (make setup)")


# --- parsing (fast) --------------------------------------------------------------------------------
@pytest.mark.parametrize("text,want", [
    ("oci://127.0.0.1:5000/ipa/ramdisk:v1", ("127.0.0.1:5000", "ipa/ramdisk", "v1", None)),
    ("oci://registry.example.com/metal3/ipa-sles", ("registry.example.com", "metal3/ipa-sles", "latest", None)),
    ("oci://localhost/a/b/c:sp6-x86_64", ("localhost", "a/b/c", "sp6-x86_64", None)),
    ("oci-layout:/srv/mirror", ("", "", "latest", Path("/srv/mirror"))),
    ("oci-layout:/srv/mirror:2026.1", ("", "", "2026.1", Path("/srv/mirror"))),
])  # fmt: skip
def test_destinations(text: str, want: tuple[str, str, str, Path | None]) -> None:
    d = publish.parse_destination(text)
    assert (d.registry, d.repository, d.tag, d.layout) == want


@pytest.mark.parametrize("bad", ["docker://r/x:1", "oci://r/Upper:1", "oci://r/x:bad tag", "oci://bad_host!/x:1",
                                 "oci://r/x@sha256:" + "0" * 64, "oci://r/:1", "oci-layout:", "r/x:1"])
def test_bad_destinations(bad: str) -> None:
    with pytest.raises(ConfigError, match="bad destination"):
        publish.parse_destination(bad)


# --- artifacts and a registry ----------------------------------------------------------------------
def make_tree(base: Path, kernel: str = "vmlinuz") -> Path:
    for rel, data in {f"boot/{kernel}-{KVER}": os.urandom(64 << 10), f"boot/config-{KVER}": b"CONFIG_RD_GZIP=y\n",
                      "usr/bin/agent": os.urandom(32 << 10)}.items():  # fmt: skip
        (base / rel).parent.mkdir(parents=True, exist_ok=True)
        (base / rel).write_bytes(data)
    return base


@pytest.fixture
def artifacts(tmp_path: Path) -> Path:
    out = tmp_path / "out"
    write_artifacts(make_tree(tmp_path / "root"), out, NAME, Compression.parse("gzip"), size_limit_mb=None,
                    source_date_epoch=1_700_000_000, progress=False)
    return out


def test_the_layout_names_the_platform_as_oci_does(artifacts: Path, tmp_path: Path) -> None:
    layout = tmp_path / "layout"
    for arch in ARCHES:
        publish.write_layout([publish.Platform(artifacts, NAME, arch)], layout, arch.suse)
    top = json.loads((layout / "index.json").read_text())
    digests = {m["annotations"][publish.REF_NAME]: m["digest"] for m in top["manifests"]}
    for arch in ARCHES:
        index = json.loads((layout / "blobs/sha256" / digests[arch.suse].removeprefix("sha256:")).read_text())
        assert index["manifests"][0]["platform"] == {"architecture": arch.oci, "os": "linux"}
    assert [a.oci for a in ARCHES] == ["amd64", "arm64"]  # Go's GOARCH names, not SUSE's


def test_the_esp_and_the_iso_travel_as_layers_of_their_own(artifacts: Path) -> None:
    (artifacts / f"{NAME}.esp.img").write_bytes(b"FAT image")
    (artifacts / f"{NAME}.iso").write_bytes(b"ISO 9660")
    types = {p.name: t for p, t in publish.collect(artifacts, NAME)}
    assert types[f"{NAME}.esp.img"] == "application/vnd.sles-ipa-builder.esp"
    assert types[f"{NAME}.iso"] == "application/vnd.sles-ipa-builder.iso"
    (artifacts / f"{NAME}.iso").unlink()  # optional: a build with --boot-media off has neither
    assert f"{NAME}.iso" not in {p.name for p, _ in publish.collect(artifacts, NAME)}


def _state(d: Path) -> dict[str, tuple[str, int]]:
    return {p.name: (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns) for p in sorted(d.iterdir())}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Registry:
    url: str
    host: str
    auth: str | None = None  # "user:password"

    def get(self, path: str, accept: str = "") -> tuple[bytes, dict[str, str]]:
        req = urllib.request.Request(self.url + path, headers={"Accept": accept} if accept else {})
        if self.auth:
            req.add_header("Authorization", "Basic " + base64.b64encode(self.auth.encode()).decode())
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback: never a proxy
        with opener.open(req, timeout=30) as r:
            return r.read(), {k.lower(): v for k, v in r.headers.items()}


def start_registry(tmp_path: Path, *, htpasswd: Path | None = None) -> Iterator[Registry]:
    port = free_port()
    conf = tmp_path / f"registry-{port}.yml"
    auth = f"auth:\n  htpasswd:\n    realm: sib-test\n    path: {htpasswd}\n" if htpasswd else ""
    conf.write_text(f"version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: "
                    f"{tmp_path}/registry-data-{port}\n{auth}http:\n  addr: 127.0.0.1:{port}\n")
    logf = (tmp_path / f"registry-{port}.log").open("wb")
    proc = subprocess.Popen(["docker-registry", "serve", str(conf)], stdout=logf, stderr=subprocess.STDOUT)
    reg = Registry(f"http://127.0.0.1:{port}", f"127.0.0.1:{port}")
    try:
        for _ in range(200):
            try:
                reg.get("/v2/")
                break
            except urllib.error.HTTPError:  # 401: up, and asking for credentials
                break
            except OSError:
                if proc.poll() is not None:
                    pytest.fail(f"docker-registry exited: {(tmp_path / f'registry-{port}.log').read_text()}")
                time.sleep(0.05)
        yield reg
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
        logf.close()


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[Registry]:
    yield from start_registry(tmp_path)


def cli(*args: str, env: dict[str, str] | None = None) -> run.Result:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("DIB_", "IPA_", "SIB_", "REGISTRY_AUTH"))}
    return run.run([sys.executable, "-m", "sles_ipa_builder", "publish", *args], env={**base, **(env or {})},
                   capture=True, check=False)


def pull_and_compare(reg: Registry, repo: str, tag: str, out: Path, printed: str) -> dict[str, Any]:
    """Read the tag back over the registry API and check every digest against the local files."""
    body, headers = reg.get(f"/v2/{repo}/manifests/{tag}", publish.INDEX)
    digest = "sha256:" + hashlib.sha256(body).hexdigest()
    assert headers["docker-content-digest"] == digest and f"@{digest}" in printed
    index = json.loads(body)
    assert index["mediaType"] == publish.INDEX and len(index["manifests"]) == 1
    entry = index["manifests"][0]
    assert entry["platform"] == {"architecture": "amd64", "os": "linux"}
    mbody, _ = reg.get(f"/v2/{repo}/manifests/{entry['digest']}", publish.MANIFEST)
    assert "sha256:" + hashlib.sha256(mbody).hexdigest() == entry["digest"]
    manifest = json.loads(mbody)
    assert manifest["artifactType"] == publish.ARTIFACT_TYPE
    titles = {}
    for layer in manifest["layers"]:
        blob, _ = reg.get(f"/v2/{repo}/blobs/{layer['digest']}")
        name = layer["annotations"]["org.opencontainers.image.title"]
        local = (out / name).read_bytes()
        assert blob == local and layer["digest"] == "sha256:" + hashlib.sha256(local).hexdigest(), name
        assert layer["size"] == len(local)
        titles[name] = layer["mediaType"]
    assert titles[f"{NAME}.kernel"] == "application/vnd.sles-ipa-builder.kernel"
    assert titles[f"{NAME}.initramfs"] == "application/vnd.sles-ipa-builder.initramfs"
    assert titles[f"{NAME}.cdx.json"] == "application/vnd.cyclonedx+json"
    assert {f"{NAME}.manifest.json", f"{NAME}.sha256"} <= set(titles)
    return manifest


@pytest.mark.registry
@needs_tools
def test_push_round_trips_with_equal_digests(artifacts: Path, registry: Registry) -> None:
    before = _state(artifacts)
    res = cli(f"oci://{registry.host}/metal3/ipa-sles:sp6", "--output", str(artifacts), "--name", NAME,
              "--insecure")
    assert res.returncode == 0, res.stderr
    pull_and_compare(registry, "metal3/ipa-sles", "sp6", artifacts, res.stdout)
    assert _state(artifacts) == before  # only read
    # a second push of the same artifacts is the same index: nothing in it depends on the time
    again = cli(f"oci://{registry.host}/metal3/ipa-sles:again", "--output", str(artifacts), "--name", NAME,
                "--insecure")
    assert again.returncode == 0 and again.stdout.split("@")[1].split()[0] == res.stdout.split("@")[1].split()[0]


@pytest.mark.registry
@needs_tools
def test_401_without_credentials_and_push_with_the_auth_file(artifacts: Path, tmp_path: Path) -> None:
    htpasswd = tmp_path / "htpasswd"
    secret = "pw-" + os.urandom(6).hex()
    htpasswd.write_text(run.run(["htpasswd", "-Bbn", "sib", secret], capture=True).stdout)
    for reg in start_registry(tmp_path, htpasswd=htpasswd):
        before = _state(artifacts)
        dest = f"oci://{reg.host}/ipa/ramdisk:v1"
        denied = cli(dest, "--output", str(artifacts), "--name", NAME, "--insecure",
                     env={"HOME": str(tmp_path / "nohome"), "XDG_RUNTIME_DIR": str(tmp_path / "norun")})
        assert denied.returncode == 2, denied.stderr
        errors = [line for line in denied.stderr.splitlines() if line.startswith("error:")]
        assert len(errors) == 1 and "unauthorized" in errors[0], denied.stderr
        assert _state(artifacts) == before
        # the usual container auth file, named by REGISTRY_AUTH_FILE
        authfile = tmp_path / "auth.json"
        token = base64.b64encode(f"sib:{secret}".encode()).decode()
        authfile.write_text(json.dumps({"auths": {reg.host: {"auth": token}}}))
        ok = cli(dest, "--output", str(artifacts), "--name", NAME, "--insecure", "--debug",
                 env={"REGISTRY_AUTH_FILE": str(authfile), "HOME": str(tmp_path / "nohome")})
        assert ok.returncode == 0, ok.stderr
        assert secret not in ok.stderr + ok.stdout and token not in ok.stderr + ok.stdout  # never logged
        reg.auth = f"sib:{secret}"
        pull_and_compare(reg, "ipa/ramdisk", "v1", artifacts, ok.stdout)
        # ~/.docker/config.json works the same way
        home = tmp_path / "home"
        (home / ".docker").mkdir(parents=True)
        (home / ".docker/config.json").write_text(authfile.read_text())
        docker = cli(f"oci://{reg.host}/ipa/ramdisk:v2", "--output", str(artifacts), "--name", NAME, "--insecure",
                     env={"HOME": str(home), "XDG_RUNTIME_DIR": str(tmp_path / "norun")})
        assert docker.returncode == 0, docker.stderr


@pytest.mark.registry
@needs_tools
def test_unreachable_registry_and_bad_reference_are_one_line_errors(artifacts: Path, tmp_path: Path) -> None:
    before = _state(artifacts)
    port = free_port()  # nothing listens there
    res = cli(f"oci://127.0.0.1:{port}/ipa/ramdisk:v1", "--output", str(artifacts), "--name", NAME, "--insecure")
    assert res.returncode == 2
    errors = [line for line in res.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "cannot reach registry" in errors[0], res.stderr
    bad = cli("oci://127.0.0.1/Not Valid:tag", "--output", str(artifacts), "--name", NAME)
    assert bad.returncode == 2 and "error: bad destination" in bad.stderr and "hint:" in bad.stderr
    missing = cli("oci://127.0.0.1/ipa:v1", "--output", str(tmp_path / "nothing"), "--name", NAME)
    assert missing.returncode == 2 and "not found" in missing.stderr
    assert _state(artifacts) == before


@pytest.mark.registry
@needs_tools
def test_a_mixed_output_directory_is_refused(artifacts: Path, registry: Registry) -> None:
    (artifacts / f"{NAME}.kernel").write_bytes(b"another build's kernel")
    res = cli(f"oci://{registry.host}/ipa/ramdisk:v1", "--output", str(artifacts), "--name", NAME, "--insecure")
    assert res.returncode == 2 and "does not match ipa.sha256" in res.stderr


@pytest.mark.registry
@needs_tools
def test_oci_layout_for_air_gapped_transfer(artifacts: Path, tmp_path: Path, registry: Registry) -> None:
    """oci-layout:DIR holds what a push holds; skopeo reads it (and can carry it to a mirror later)."""
    layout = tmp_path / "layout"
    res = cli(f"oci-layout:{layout}:sp6", "--output", str(artifacts), "--name", NAME)
    assert res.returncode == 0, res.stderr
    again = cli(f"oci-layout:{layout}:other", "--output", str(artifacts), "--name", NAME)
    assert again.returncode == 0
    top = json.loads((layout / "index.json").read_text())
    assert sorted(m["annotations"][publish.REF_NAME] for m in top["manifests"]) == ["other", "sp6"]
    raw = run.run(["skopeo", "inspect", "--raw", f"oci:{layout}:sp6"], capture=True).stdout
    assert "sha256:" + hashlib.sha256(raw.encode()).hexdigest() in res.stdout
    for blob in (layout / "blobs/sha256").iterdir():  # content addressed, every one
        assert hashlib.sha256(blob.read_bytes()).hexdigest() == blob.name
    # the mirror step of an air-gapped site: layout -> registry, then the same digests come back
    run.run(["skopeo", "copy", "--all", "--preserve-digests", "--dest-tls-verify=false", f"oci:{layout}:sp6",
             f"docker://{registry.host}/mirror/ipa:sp6"], capture=True)
    pull_and_compare(registry, "mirror/ipa", "sp6", artifacts, res.stdout)


def test_a_digest_holding_401_is_no_authorisation_error() -> None:
    """skopeo names the blob it was copying; a digest's hex may hold "401" (seen in a CI run)."""
    dest = publish.parse_destination("oci://127.0.0.1:5000/ipa/ramdisk:v1")
    stderr = ("time=x level=fatal msg=\"copying image 1/1 from manifest list: trying to reuse blob sha256:a87a2bb7"
              "8abd233f4e64627bf80cc4016f92 at destination: pinging container registry 127.0.0.1:5000: Get "
              "\\\"http://127.0.0.1:5000/v2/\\\": dial tcp 127.0.0.1:5000: connect: connection refused\"")
    assert "cannot reach registry" in publish._push_error(dest, stderr, insecure=True).message
    denied = "level=fatal msg=\"reading manifest: received unexpected HTTP status: 401 Unauthorized\""
    assert "(unauthorized)" in publish._push_error(dest, denied, insecure=True).message


# --- several architectures in one index ----------------------------------------------------------
ARM = f"{NAME}_aarch64"


@pytest.fixture
def two_arches(tmp_path: Path) -> Path:
    """Artifacts of two architectures in one output directory, each under its metal3 name."""
    out = tmp_path / "out2"
    write_artifacts(make_tree(tmp_path / "root-x86"), out, NAME, Compression.parse("gzip"), size_limit_mb=None,
                    arch=X86_64, source_date_epoch=1_700_000_000, progress=False)
    write_artifacts(make_tree(tmp_path / "root-arm", "Image"), out, ARM, Compression.parse("gzip"), size_limit_mb=None,
                    arch=AARCH64, source_date_epoch=1_700_000_000, progress=False)
    return out


def index_of(reg: Registry, repo: str, tag: str) -> dict[str, str]:
    """OCI architecture -> manifest digest, as the registry serves the tag's index."""
    body, _ = reg.get(f"/v2/{repo}/manifests/{tag}", publish.INDEX)
    index = json.loads(body)
    assert index["mediaType"] == publish.INDEX
    return {m["platform"]["architecture"]: m["digest"] for m in index["manifests"]}


def pulled_by_platform(reg: Registry, repo: str, tag: str, arch: str, dest: Path) -> str:
    """skopeo picks the platform's manifest from the index; returns the digest of what it pulled."""
    run.run(["skopeo", "--override-arch", arch, "--override-os", "linux", "copy", "--src-tls-verify=false",
             f"docker://{reg.host}/{repo}:{tag}", f"oci:{dest}:{arch}"], capture=True)
    top = json.loads((dest / "index.json").read_text())  # (skopeo inspect refuses artifacts: read the layout)
    return next(str(m["digest"]) for m in top["manifests"] if m["annotations"][publish.REF_NAME] == arch)


@pytest.mark.registry
@needs_tools
def test_two_architectures_in_one_index_each_pulled_by_platform(two_arches: Path, registry: Registry,
                                                                  tmp_path: Path) -> None:
    res = cli(f"oci://{registry.host}/metal3/ipa:multi", "--output", str(two_arches), "--name", NAME, ARM,
              "--insecure")
    assert res.returncode == 0, res.stderr
    manifests = index_of(registry, "metal3/ipa", "multi")
    assert sorted(manifests) == ["amd64", "arm64"]
    assert f"amd64 manifest {manifests['amd64']}" in res.stdout and f"arm64 manifest {manifests['arm64']}" in res.stdout
    for arch, name in (("amd64", NAME), ("arm64", ARM)):
        assert pulled_by_platform(registry, "metal3/ipa", "multi", arch, tmp_path / "pulled") == manifests[arch]
        body, _ = registry.get(f"/v2/metal3/ipa/manifests/{manifests[arch]}", publish.MANIFEST)
        titles = {layer["annotations"][publish.TITLE]: layer["digest"] for layer in json.loads(body)["layers"]}
        initramfs = (two_arches / f"{name}.initramfs").read_bytes()
        assert titles[f"{name}.initramfs"] == "sha256:" + hashlib.sha256(initramfs).hexdigest()


@pytest.mark.registry
@needs_tools
def test_adding_an_architecture_keeps_the_other_unless_replaced(two_arches: Path, registry: Registry) -> None:
    ref = f"oci://{registry.host}/metal3/ipa:grow"
    first = cli(ref, "--output", str(two_arches), "--name", NAME, "--insecure")
    assert first.returncode == 0, first.stderr
    amd64 = index_of(registry, "metal3/ipa", "grow")
    assert list(amd64) == ["amd64"]
    second = cli(ref, "--output", str(two_arches), "--name", ARM, "--insecure")
    assert second.returncode == 0, second.stderr
    both = index_of(registry, "metal3/ipa", "grow")
    assert both["amd64"] == amd64["amd64"] and sorted(both) == ["amd64", "arm64"]
    assert "; kept amd64)" in second.stdout
    # the same two published at once give the same index: its order does not depend on history
    at_once = cli(f"oci://{registry.host}/metal3/ipa:once", "--output", str(two_arches), "--name", ARM, NAME,
                  "--insecure")
    assert at_once.stdout.split("@")[1].split()[0] == second.stdout.split("@")[1].split()[0]
    replaced = cli(ref, "--output", str(two_arches), "--name", ARM, "--insecure", "--replace")
    assert replaced.returncode == 0, replaced.stderr
    assert list(index_of(registry, "metal3/ipa", "grow")) == ["arm64"]


def test_two_artifact_sets_of_one_architecture_are_refused(two_arches: Path, tmp_path: Path) -> None:
    res = cli(f"oci-layout:{tmp_path / 'layout'}:v1", "--output", str(two_arches), "--name", NAME, NAME)
    assert res.returncode == 2
    assert f"error: two artifact sets for x86_64: {NAME} and {NAME}" in res.stderr


def test_a_layout_keeps_the_other_architecture_too(two_arches: Path, tmp_path: Path) -> None:
    layout = tmp_path / "layout"
    for name in (NAME, ARM):
        assert cli(f"oci-layout:{layout}:v1", "--output", str(two_arches), "--name", name).returncode == 0
    index = publish.layout_index(layout, "v1")
    assert index is not None and sorted(m["platform"]["architecture"] for m in index["manifests"]) == ["amd64", "arm64"]
