"""The builder's container image (image/build.py, `make image`): its names, and the tool run in it.

Off unless SIB_TEST_IMAGE=1 (`make test-image` sets it): building the image downloads and installs
about 450 Debian packages (about 5 min cold on 2 cores), and `.ci/run` is already near its
45-minute budget. The image is built once per commit and reused when
localhost/sles-ipa-builder:<version>-<commit> exists (SIB_TEST_IMAGE_TAG=<tag> takes a given image
instead). The test media are the host's (`fixtures`), mounted read-only at the same path inside the
container, so the profile's absolute paths resolve there. SIB_TEST_IMAGE_BUILD=1 adds the slow
parts: a build in the container and one on the host of the same inputs with SOURCE_DATE_EPOCH,
which must give one initramfs hash, and a build in the pod `podman kube play` makes of the
Kubernetes Job example.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from sles_ipa_builder.cache import store
from sles_ipa_builder.fixtures import testmedia

pytestmark = [pytest.mark.root, pytest.mark.media, pytest.mark.slow,
              pytest.mark.skipif(os.environ.get("SIB_TEST_IMAGE", "0") != "1",
                                 reason="SIB_TEST_IMAGE=1 (make test-image): builds the builder's container image")]
REPO = Path(__file__).resolve().parents[2]
EPOCH = "1700000000"
CA = "/etc/ssl/certs/ca-certificates.crt"  # the ca_bundle setting's default
ACCEL = {"SIB_ACCEL": os.environ.get("SIB_ACCEL", "tcg"),
         "LIBGUESTFS_BACKEND_SETTINGS": os.environ.get("LIBGUESTFS_BACKEND_SETTINGS", "force_tcg")}


def _sh(argv: list[str], **kw: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, **kw)


@pytest.fixture(scope="module")
def image() -> str:
    if os.environ.get("SIB_TEST_IMAGE_TAG"):  # an image already built (from another commit, say)
        return os.environ["SIB_TEST_IMAGE_TAG"]
    build = [sys.executable, str(REPO / "image" / "build.py")]
    tag = _sh([*build, "--print-tag"], check=True).stdout.strip()
    res = _sh([*build, "--if-missing"])
    assert res.returncode == 0, (res.stdout + res.stderr)[-4000:]
    return tag


def _hard(which: int) -> int:
    import resource

    return resource.getrlimit(which)[1]


@pytest.fixture(scope="module")
def compat(image: str, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """podman's environment on this host. Nested in a Docker container (as the machine these tests were
    written on), crun cannot raise podman's default rlimits above the outer container's hard limits
    and refuses its hybrid cgroups; runc with rlimits at those limits works, set in a containers.conf
    of our own (CONTAINERS_CONF), which `podman kube play` reads too."""
    env = dict(os.environ)
    if _sh(["podman", "run", "--rm", image, "--version"], env=env).returncode == 0:
        return env
    import resource

    nofile = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    nproc = min(resource.getrlimit(resource.RLIMIT_NPROC)[1], 32768)  # above that runc is refused there too
    conf = tmp_path_factory.mktemp("podman") / "containers.conf"
    conf.write_text(f'[containers]\ndefault_ulimits = ["nofile={nofile}:{nofile}", "nproc={nproc}:{nproc}"]\n'
                    '[engine]\nruntime = "runc"\n')
    env["CONTAINERS_CONF"] = str(conf)
    res = _sh(["podman", "run", "--rm", image, "--version"], env=env)
    assert res.returncode == 0, res.stderr[-2000:]
    return env


@pytest.fixture(scope="module")
def media() -> Any:
    return testmedia.ensure(log_progress=False)


def _run(image: str, compat: dict[str, str], media: Any, *args: str, privileged: bool = True,
         volumes: tuple[str, ...] = (), env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    here = media.profile.parent
    argv = ["podman", "run", "--rm", *(["--privileged"] if privileged else []), "-v", f"{here}:{here}:ro"]
    if Path(CA).is_file():  # the host's trust, a TLS-intercepting proxy's CA included (pip and git in the target)
        argv += ["-v", f"{CA}:{CA}:ro"]
    # the host's cache base by default: `fixtures` finds the media where the host's did
    for k, v in {"XDG_CACHE_HOME": str(store.cache_root().parent), **ACCEL, **(env or {})}.items():
        argv += ["-e", f"{k}={v}"]
    for v in volumes:
        argv += ["-v", v]
    return _sh([*argv, image, *args], env=compat)


def test_tags_and_labels(image: str) -> None:
    info = json.loads(_sh(["podman", "image", "inspect", image], check=True).stdout)[0]
    labels = info["Config"]["Labels"]
    from sles_ipa_builder import __version__

    revision = labels["org.opencontainers.image.revision"]
    assert labels["org.opencontainers.image.version"] == __version__
    assert len(revision) == 40
    # the commit the image was built from (HEAD then; a later commit may have landed since)
    assert _sh(["git", "-C", str(REPO), "cat-file", "-t", revision], check=True).stdout.strip() == "commit"
    if not os.environ.get("SIB_TEST_IMAGE_TAG"):
        assert image.split(":")[-1].startswith(f"{__version__}-{revision[:7]}")
    assert info["Config"]["Entrypoint"] == ["sles-ipa-builder"]
    assert not info.get("Parent")  # imported from a tar: no base image


def test_fixtures_print_profile_finds_the_mounted_media(image: str, compat: dict[str, str], media: Any) -> None:
    res = _run(image, compat, media, "fixtures", "--print-profile", privileged=False)
    assert res.returncode == 0, res.stderr[-3000:]
    assert res.stdout.strip() == str(media.profile)  # same generator key in the image's wheel as in the checkout


def test_doctor_privileged(image: str, compat: dict[str, str], media: Any, tmp_path: Path) -> None:
    res = _run(image, compat, media, "doctor", "--config", str(media.profile), volumes=(f"{tmp_path}:/cache",))
    out = res.stdout + res.stderr
    assert res.returncode == 0, out[-4000:]
    assert "libguestfs launch" in out and "privileges" in out


def test_build_without_privileges_is_one_error_line(image: str, compat: dict[str, str], media: Any) -> None:
    res = _run(image, compat, media, "build", "--config", str(media.profile), privileged=False)
    out = res.stdout + res.stderr
    assert res.returncode == 2, out[-3000:]
    errors = [line for line in out.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "CAP_SYS_ADMIN" in errors[0], out[-3000:]
    assert "Traceback" not in out


def test_doctor_without_privileges_names_them(image: str, compat: dict[str, str], media: Any) -> None:
    res = _run(image, compat, media, "doctor", "--config", str(media.profile), privileged=False)
    out = res.stdout + res.stderr
    assert res.returncode == 1, out[-3000:]
    assert "CAP_SYS_ADMIN" in out and "Traceback" not in out


@pytest.mark.skipif(os.environ.get("SIB_TEST_IMAGE_BUILD", "0") != "1",
                    reason="SIB_TEST_IMAGE_BUILD=1: a build in the container and one on the host")
def test_container_build_matches_host_build(image: str, compat: dict[str, str], media: Any, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DIB_", "IPA_", "IRONIC_", "SIB_"))}
    env.update(XDG_CACHE_HOME=str(tmp_path / "host-cache"), SOURCE_DATE_EPOCH=EPOCH, **ACCEL)
    host_out = tmp_path / "host-out"
    res = _sh([sys.executable, "-m", "sles_ipa_builder", "build", "--config", str(media.profile),
               "--workspace", str(tmp_path / "ws"), "--output", str(host_out), "--name", "repro"], env=env)
    assert res.returncode == 0, (res.stdout + res.stderr)[-6000:]
    out = tmp_path / "ctr-out"
    for d in ("ctr-out", "ctr-cache", "ctr-ws"):
        (tmp_path / d).mkdir()
    res = _run(image, compat, media, "build", "--config", str(media.profile), "--output", "/out", "--name", "repro",
               "--report", "/out/report.json",
               volumes=(f"{out}:/out", f"{tmp_path / 'ctr-cache'}:/cache", f"{tmp_path / 'ctr-ws'}:/tmp/dib"),
               env={"SOURCE_DATE_EPOCH": EPOCH, "XDG_CACHE_HOME": "/cache"})
    assert res.returncode == 0, (res.stdout + res.stderr)[-6000:]
    log = (tmp_path / "ctr-ws" / "build.log").read_text()  # the build log is in the workspace
    assert "restored from the cache by overlay" in log  # the workspace on a volume: overlayfs, no copy
    one, two = (hashlib.sha256((d / "repro.initramfs").read_bytes()).hexdigest() for d in (host_out, out))
    # the same bytes; when not, the entries that differ (dib_environment: the variables) say where
    assert one == two, _differ(host_out / "repro.initramfs", out / "repro.initramfs", tmp_path)
    assert (host_out / "repro.kernel").read_bytes() == (out / "repro.kernel").read_bytes()
    # again on the warm cache volume: every cache layer hits (overlayfs on the volume), same bytes
    (tmp_path / "ctr-out2").mkdir()
    res = _run(image, compat, media, "build", "--config", str(media.profile), "--output", "/out", "--name", "repro",
               "--report", "/out/report.json",
               volumes=(f"{tmp_path / 'ctr-out2'}:/out", f"{tmp_path / 'ctr-cache'}:/cache",
                        f"{tmp_path / 'ctr-ws'}:/tmp/dib"),
               env={"SOURCE_DATE_EPOCH": EPOCH, "XDG_CACHE_HOME": "/cache"})
    assert res.returncode == 0, (res.stdout + res.stderr)[-6000:]
    layers = {x["layer"]: x["state"] for x in json.loads((tmp_path / "ctr-out2" / "report.json").read_text())["layers"]}
    assert layers == {"packages": "hit", "venv": "hit", "tree": "hit"}
    assert (tmp_path / "ctr-out2" / "repro.initramfs").read_bytes() == (out / "repro.initramfs").read_bytes()


def _differ(one: Path, two: Path, tmp: Path) -> dict[str, set[str]]:
    """Entries whose mode, owner, content or (regular files) mtime differ between two initramfs; for dib_environment,
    the names of the variables that differ."""
    found = []
    for n, img in enumerate((one, two)):
        dest = tmp / f"x{n}"
        dest.mkdir()
        subprocess.run(f"zstd -dc {img.resolve()} | cpio -idm --quiet --no-absolute-filenames", shell=True, cwd=dest,
                       check=True)
        entries = {}
        for p in sorted(dest.rglob("*")):
            st = p.lstat()
            body = (os.readlink(p) if p.is_symlink() else
                    hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else str(st.st_rdev))
            entries[str(p.relative_to(dest))] = (st.st_mode, st.st_uid, st.st_gid,
                                                 st.st_mtime_ns if p.is_file() and not p.is_symlink() else 0, body)
        found.append((dest, entries))
    (d1, a), (d2, b) = found
    out: dict[str, set[str]] = {}
    for k in sorted(a.keys() | b.keys()):
        if a.get(k) != b.get(k):
            lines = set((d1 / k).read_text().splitlines()) ^ set((d2 / k).read_text().splitlines()) \
                if k.endswith("dib_environment") else {"entry"}
            out[k] = {line.split("=")[0].removeprefix("export ") for line in lines}
    return out


def job_as_pod(job: dict[str, Any], *, image: str, args: list[str], host_paths: dict[str, str]) -> dict[str, Any]:
    """The Job's pod template as a Pod, for `podman kube play` (podman 4.3 plays Pods, not Jobs): same
    container, security context and mounts; the image, the arguments and the volumes' host paths are
    this host's."""
    spec = json.loads(json.dumps(job["spec"]["template"]["spec"]))
    c = spec["containers"][0]
    c.update(image=image, args=args, imagePullPolicy="Never")
    for v in spec["volumes"]:
        name = v["name"]
        if name in host_paths:
            v.clear()
            v.update(name=name, hostPath={"path": host_paths[name], "type": "Directory"})
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "sib-job-test"}, "spec": spec}


@pytest.mark.skipif(os.environ.get("SIB_TEST_IMAGE_BUILD", "0") != "1",
                    reason="SIB_TEST_IMAGE_BUILD=1: a build in a pod played from the Kubernetes Job example")
def test_kube_play_of_the_job_builds_a_ramdisk(image: str, compat: dict[str, str], media: Any, tmp_path: Path) -> None:
    import yaml

    job = yaml.safe_load((REPO / "examples" / "kubernetes" / "job.yaml").read_text())
    assert job["kind"] == "Job"
    tmpl = job["spec"]["template"]["spec"]
    assert tmpl["containers"][0]["securityContext"]["privileged"] is True
    mounts = {m["name"]: m for m in tmpl["containers"][0]["volumeMounts"]}
    assert mounts["images"]["readOnly"] is True
    here = str(media.profile.parent)
    for d in ("out", "cache", "ws"):
        (tmp_path / d).mkdir()
    pod = job_as_pod(job, image=image, args=["build", "--config", str(media.profile), "--output", "/out",
                                             "--report", "/out/report.json"],
                     host_paths={"images": here, "out": str(tmp_path / "out"), "cache": str(tmp_path / "cache"),
                                 "workspace": str(tmp_path / "ws")})
    c = pod["spec"]["containers"][0]
    for m in c["volumeMounts"]:
        if m["name"] == "images":
            m["mountPath"] = here  # the profile's absolute paths resolve in the pod
    c["env"] += [{"name": k, "value": v} for k, v in ACCEL.items()]
    if Path(CA).is_file():  # as in _run: the host's trust
        pod["spec"]["volumes"].append({"name": "ca", "hostPath": {"path": CA, "type": "File"}})
        c["volumeMounts"].append({"name": "ca", "mountPath": CA, "readOnly": True})
    play = tmp_path / "pod.yaml"
    play.write_text(yaml.safe_dump(pod))
    res = _sh(["podman", "kube", "play", str(play)], env=compat)
    try:
        assert res.returncode == 0, res.stderr[-3000:]
        name = "sib-job-test-build"
        code = _sh(["podman", "wait", name], env=compat).stdout.strip()
        logs = _sh(["podman", "logs", name], env=compat)
        assert code == "0", (logs.stdout + logs.stderr)[-6000:]
    finally:
        _sh(["podman", "kube", "down", str(play)], env=compat)
    assert (tmp_path / "out" / "ironic-python-agent.initramfs").is_file()
    assert json.loads((tmp_path / "out" / "report.json").read_text())
