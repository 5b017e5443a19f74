"""Build the builder's container image from Debian packages, with no base image from a registry.

    python3 image/build.py            (what `make image` runs; as root, on Debian 12 with podman)

1. debootstrap --variant=minbase bookworm into a temp dir (its .debs kept in the download cache);
2. apt-get install, in a chroot, the packages the tool runs (RUNTIME_PACKAGES: the Makefile's
   APT_PACKAGES without the ones only the tests use), the .debs again kept in the download cache;
3. a venv /opt/sles-ipa-builder (--system-site-packages: python3-guestfs) with the tool installed from
   a wheel of this checkout and its dependencies' wheels, built on the host (no index in the chroot);
4. apt lists and caches dropped, then the tree streamed as a tar into `podman import`, with the
   entrypoint, environment, working directory and OCI labels, tagged
   localhost/sles-ipa-builder:<version>-<shortcommit> and :latest.

The downloads stay in ${XDG_CACHE_HOME:-~/.cache}/sles-ipa-builder/image-downloads: a rebuild
downloads nothing new. The pure parts (names, labels, podman's arguments) are plain functions, tested
in tests/unit/test_image_build.py.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
NAME = "localhost/sles-ipa-builder"
SUITE = "bookworm"
MIRROR = "http://deb.debian.org/debian"
VENV = "/opt/sles-ipa-builder"
PYTHON = "python3.11"

# The Makefile's APT_PACKAGES minus what only the tests use (shellcheck, docker-registry,
# apache2-utils): libguestfs with its appliance's kernel, qemu for both arches and qemu-user, zypper,
# rpm, skopeo, the test media's generator (debootstrap, createrepo-c, xorriso, mtools...).
TEST_ONLY = {"shellcheck", "docker-registry", "apache2-utils"}
# unshare/mount; what libguestfs' appliance build reads; XFS in the appliance (recommended, not installed
# by --no-install-recommends)
EXTRA = ["util-linux", "procps", "kmod", "udev", "libguestfs-xfs"]
# docs, man pages and translations stay out of the image (copyright files stay)
DPKG_EXCLUDES = """path-exclude=/usr/share/doc/*
path-include=/usr/share/doc/*/copyright
path-exclude=/usr/share/man/*
path-exclude=/usr/share/info/*
path-exclude=/usr/share/locale/*
path-include=/usr/share/locale/locale.alias
"""


def makefile_packages(makefile: Path = REPO / "Makefile") -> list[str]:
    """APT_PACKAGES as the Makefile spells it (one list for host and image)."""
    text = makefile.read_text().replace("\\\n", " ")
    for line in text.splitlines():
        if line.startswith("APT_PACKAGES"):
            return line.split(":=", 1)[1].split()
    raise SystemExit("error: no APT_PACKAGES in the Makefile")


def runtime_packages(apt_packages: list[str]) -> list[str]:
    out = [p for p in apt_packages if p not in TEST_ONLY]
    return out + [p for p in EXTRA if p not in out]


def version(repo: Path = REPO) -> str:
    return str(tomllib.loads((repo / "pyproject.toml").read_text())["project"]["version"])


def tags(ver: str, commit: str, dirty: bool = False) -> list[str]:
    """The image's names: <version>-<shortcommit> (with -dirty for uncommitted changes) and latest."""
    return [f"{NAME}:{ver}-{commit[:7]}{'-dirty' if dirty else ''}", f"{NAME}:latest"]


def labels(ver: str, commit: str, created: int) -> dict[str, str]:
    return {
        "org.opencontainers.image.title": "sles-ipa-builder",
        "org.opencontainers.image.description": "Builds Ironic Python Agent ramdisks from SLES media",
        "org.opencontainers.image.version": ver,
        "org.opencontainers.image.revision": commit,
        "org.opencontainers.image.licenses": "Apache-2.0",
        "org.opencontainers.image.base.name": f"debian:{SUITE} (debootstrap --variant=minbase, no registry)",
        "org.opencontainers.image.created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(created)),
    }


ENV = {
    "PATH": f"{VENV}/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    # the caches (and libguestfs' appliance, which supermin otherwise rebuilds on every run) on /cache
    "XDG_CACHE_HOME": "/cache",
    "LIBGUESTFS_CACHEDIR": "/cache",
    "LANG": "C.UTF-8",
    # KVM is used when the container is given /dev/kvm; the tool falls back to TCG by itself otherwise.
}


def changes(ver: str, commit: str, created: int) -> list[str]:
    """podman import --change instructions (Dockerfile syntax, one per --change)."""
    out = ['ENTRYPOINT ["sles-ipa-builder"]', 'CMD ["--help"]', "WORKDIR /out"]
    out += [f"ENV {k}={v}" for k, v in ENV.items()]
    out += [f"LABEL {k}={json.dumps(v)}" for k, v in labels(ver, commit, created).items()]
    return out


def import_argv(tag: str, ver: str, commit: str, created: int) -> list[str]:
    argv = ["podman", "import", "--quiet"]
    for c in changes(ver, commit, created):
        argv += ["--change", c]
    return argv + ["-", tag]


def tar_argv(root: Path, epoch: int) -> list[str]:
    """The tree as a tar on stdout: sorted, numeric owners, mtimes clamped to the commit's time."""
    return ["tar", "-C", str(root), "--sort=name", "--numeric-owner", "--xattrs", "--xattrs-include=*",
            f"--mtime=@{epoch}", "--clamp-mtime", "-cf", "-", "."]


def downloads() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "sles-ipa-builder" / "image-downloads"


# --- the build ------------------------------------------------------------------------------------
def sh(argv: list[str], **kw: object) -> subprocess.CompletedProcess[bytes]:
    print("+", " ".join(argv), flush=True)
    return subprocess.run(argv, check=True, **kw)  # type: ignore[call-overload,no-any-return]


def git(*args: str) -> str:
    return subprocess.run(["git", "-C", str(REPO), *args], check=True, capture_output=True, text=True).stdout.strip()


@contextlib.contextmanager
def mounted(root: Path, cache: Path) -> Iterator[None]:
    """proc, sys, dev for the maintainer scripts; the apt archive cache bound from the download cache."""
    archives = cache / "apt-archives"
    (archives / "partial").mkdir(parents=True, exist_ok=True)
    binds = [("proc", root / "proc", ["-t", "proc", "proc"]), ("sys", root / "sys", ["-t", "sysfs", "sysfs"]),
             ("dev", root / "dev", ["--rbind", "/dev"]),
             ("archives", root / "var/cache/apt/archives", ["--bind", str(archives)])]
    done: list[Path] = []
    try:
        for _, target, how in binds:
            target.mkdir(parents=True, exist_ok=True)
            sh(["mount", *how, str(target)])
            done.append(target)
        yield
    finally:
        for target in reversed(done):
            subprocess.run(["umount", "-R", "-l", str(target)], check=False)


def chroot(root: Path, *argv: str) -> None:
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "DEBIAN_FRONTEND": "noninteractive", "LANG": "C.UTF-8",
           "HOME": "/root"}
    sh(["chroot", str(root), *argv], env=env)


def wheels(cache: Path, work: Path) -> Path:
    """This checkout's wheel plus its dependencies' wheels (cached), built with the host's Python 3.11."""
    out = work / "wheels"
    dep_cache = cache / "wheels"
    dep_cache.mkdir(parents=True, exist_ok=True)
    src = work / "src"  # a copy: building in the checkout would leave build/ and *.egg-info in it
    shutil.copytree(REPO, src, ignore=shutil.ignore_patterns(".git", ".venv", "build", "*.egg-info", "__pycache__",
                                                            ".*_cache", "tests", "bench"))
    sh([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(out), str(src)])
    sh([sys.executable, "-m", "pip", "wheel", "-q", "-w", str(dep_cache), "--find-links", str(dep_cache),
        str(next(out.glob("*.whl")))])
    for whl in dep_cache.glob("*.whl"):
        if not whl.name.startswith("sles_ipa_builder-"):
            shutil.copy2(whl, out)
    return out


def build_root(root: Path, cache: Path, work: Path) -> None:
    debs = cache / "debootstrap"
    debs.mkdir(parents=True, exist_ok=True)
    sh(["debootstrap", "--variant=minbase", f"--cache-dir={debs}", SUITE, str(root), MIRROR])
    (root / "etc/apt/sources.list").write_text(
        f"deb {MIRROR} {SUITE} main\ndeb {MIRROR} {SUITE}-updates main\n"
        f"deb http://deb.debian.org/debian-security {SUITE}-security main\n")
    (root / "usr/sbin/policy-rc.d").write_text("#!/bin/sh\nexit 101\n")  # no services start in the chroot
    (root / "usr/sbin/policy-rc.d").chmod(0o755)
    (root / "etc/apt/apt.conf.d/90sib-keep-debs").write_text('Binary::apt::APT::Keep-Downloaded-Packages "true";\n')
    (root / "etc/dpkg/dpkg.cfg.d/90sib-excludes").write_text(DPKG_EXCLUDES)
    shutil.copy2("/etc/resolv.conf", root / "etc/resolv.conf")
    whl = wheels(cache, work)
    shutil.copytree(whl, root / "tmp/wheels")
    with mounted(root, cache):
        chroot(root, "apt-get", "update", "-qq")
        chroot(root, "apt-get", "install", "-y", "-qq", "--no-install-recommends",
               *runtime_packages(makefile_packages()))
        chroot(root, "/usr/bin/python3", "-m", "venv", "--system-site-packages", VENV)
        chroot(root, f"{VENV}/bin/pip", "install", "-q", "--no-index", "--find-links", "/tmp/wheels",
               "--no-cache-dir", "sles-ipa-builder")
    # the builder finds its built-in elements next to its package (engine/elements.BUILTIN_DIR: the
    # checkout's layout); a wheel does not carry them, so they go where that path points
    site = root / VENV.lstrip("/") / "lib" / PYTHON / "site-packages"
    shutil.copytree(REPO / "elements", site / "elements", symlinks=True)
    for p in ["tmp/wheels", "usr/sbin/policy-rc.d", "etc/apt/apt.conf.d/90sib-keep-debs"]:
        q = root / p
        shutil.rmtree(q) if q.is_dir() else q.unlink()
    for initrd in (root / "boot").glob("initrd.img*"):  # libguestfs' appliance uses the kernel and modules only
        initrd.unlink()
    for f in (root / "usr/share/doc").rglob("*"):  # what debootstrap installed before the excludes applied
        if not f.is_dir() and f.name != "copyright":
            f.unlink()
    for d in ["var/lib/apt/lists", "var/cache/apt", "var/log", "tmp", "var/tmp", "root/.cache", "usr/share/man",
              "usr/share/info"]:
        q = root / d
        if q.is_dir():
            for child in q.iterdir():
                shutil.rmtree(child) if child.is_dir() and not child.is_symlink() else child.unlink()
    (root / "etc/resolv.conf").write_text("")  # podman mounts its own
    for d in ["out", "cache", "images"]:
        (root / d).mkdir(exist_ok=True)


def size_of(tag: str) -> int:
    out = subprocess.run(["podman", "image", "inspect", "--format", "{{.Size}}", tag], check=True,
                         capture_output=True, text=True).stdout
    return int(out.strip())


def exists(tag: str) -> bool:
    return subprocess.run(["podman", "image", "exists", tag]).returncode == 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--print-tag", action="store_true", help="print the tag this checkout's image gets, and stop")
    ap.add_argument("--if-missing", action="store_true", help="do nothing when the image for this commit exists")
    args = ap.parse_args(argv)
    ver, commit = version(), git("rev-parse", "HEAD")
    dirty = bool(git("status", "--porcelain", "--untracked-files=no"))
    tag, latest = tags(ver, commit, dirty)
    if args.print_tag:
        print(tag)
        return 0
    if args.if_missing and exists(tag):
        print(f"{tag} exists")
        return 0
    if os.geteuid() != 0:
        print("error: make image needs root (debootstrap, chroot, mounts)", file=sys.stderr)
        return 2
    epoch = int(git("log", "-1", "--format=%ct"))
    cache = downloads()
    cache.mkdir(parents=True, exist_ok=True)
    lock = (cache / ".lock").open("w")
    fcntl.flock(lock, fcntl.LOCK_EX)  # a second build waits for the first (apt's lock is in the shared cache)
    if args.if_missing and exists(tag):
        print(f"{tag} exists")
        return 0
    start = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="sib-image-", dir="/var/tmp") as tmp:
        work = Path(tmp)
        root = work / "root"
        build_root(root, cache, work)
        tar = subprocess.Popen(tar_argv(root, epoch), stdout=subprocess.PIPE)
        sh(import_argv(tag, ver, commit, epoch), stdin=tar.stdout)
        if tar.wait() != 0:
            raise SystemExit("error: tar of the image tree failed")
    sh(["podman", "tag", tag, latest])
    size = size_of(tag)
    print(f"{tag} ({latest}): {size / 1e6:.0f} MB, built in {time.monotonic() - start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
