"""Build a tiny initramfs whose /init behaves like ironic-python-agent towards Ironic.

busybox-static + tests/data/fake_agent/init: DHCP on eth0, GET /, lookup with eth0's MAC, then a
heartbeat every 5 s. The host's Debian kernel is used with its virtio modules copied in. Packed with
GNU cpio on purpose (not our cpio module), so the boot test does not test our packer with itself.

Used by tests/test_boottest.py and bench/boot.py (import it after putting tests/data on sys.path).
"""

from __future__ import annotations

import gzip
import lzma
import os
import re
import shutil
from pathlib import Path

from sles_ipa_builder import run

HERE = Path(__file__).resolve().parent / "fake_agent"
# virtio-net-pci needs these (modinfo depends pulls in virtio, virtio_ring, failover, ...).
NIC_MODULES = ("virtio_pci", "virtio_net")


def _version_key(path: Path) -> list[object]:
    return [int(p) if p.isdigit() else p for p in re.split(r"(\d+)", path.name)]


def host_kernel() -> Path | None:
    """The newest /boot/vmlinuz-* that has its modules installed, or None."""
    kernels = sorted(Path("/boot").glob("vmlinuz-*"), key=_version_key, reverse=True)
    for k in kernels:
        release = k.name.removeprefix("vmlinuz-")
        if os.access(k, os.R_OK) and Path("/lib/modules", release).is_dir():
            return k
    return None


def static_busybox() -> Path | None:
    """A statically linked busybox (apt-get install busybox-static), or None."""
    for cand in ("/bin/busybox", "/usr/bin/busybox"):
        p = Path(cand)
        if not p.is_file():
            continue
        ldd = run.run(["ldd", p], capture=True, check=False)
        if "not a dynamic executable" in ldd.stdout + ldd.stderr:
            return p
    return None


def _module_files(release: str, names: tuple[str, ...]) -> list[Path]:
    """Module files in load order (dependencies first); built-in modules are skipped."""
    ordered: list[Path] = []
    seen: set[str] = set()

    def visit(name: str) -> None:
        if name in seen:
            return
        seen.add(name)
        deps = run.output(["modinfo", "-k", release, "-F", "depends", name])
        for dep in filter(None, deps.split(",")):
            visit(dep.strip())
        filename = run.output(["modinfo", "-k", release, "-n", name])
        if filename.startswith("/") and Path(filename).is_file():
            ordered.append(Path(filename))

    for n in names:
        visit(n)
    return ordered


def _plain_module(src: Path, dest_dir: Path) -> str:
    """Copy a module, decompressed (busybox insmod takes plain .ko only); return its file name."""
    name = re.sub(r"\.ko(\.xz|\.zst|\.gz)?$", ".ko", src.name)
    data = src.read_bytes()
    if src.suffix == ".xz":
        data = lzma.decompress(data)
    elif src.suffix == ".gz":
        data = gzip.decompress(data)
    elif src.suffix == ".zst":
        import zstandard

        data = zstandard.ZstdDecompressor().decompressobj().decompress(data)
    (dest_dir / name).write_bytes(data)
    return name


def build(
    dest: Path,
    *,
    kernel: Path | None = None,
    heartbeat: bool = True,
    with_init: bool = True,
) -> Path:
    """Write dest/fake-agent.initramfs (gzip newc cpio) and return its path."""
    kernel = kernel or host_kernel()
    busybox = static_busybox()
    if kernel is None or busybox is None:
        raise RuntimeError("need a /boot/vmlinuz-* with modules and busybox-static")
    release = kernel.name.removeprefix("vmlinuz-")
    root = dest / "fake-agent-root"
    if root.exists():
        shutil.rmtree(root)
    for d in ("bin", "dev", "proc", "sys", "tmp", "run", "etc/fake-agent", "lib/modules"):
        (root / d).mkdir(parents=True, exist_ok=True)
    shutil.copy2(busybox, root / "bin/busybox")
    (root / "bin/sh").symlink_to("busybox")
    if with_init:
        shutil.copy2(HERE / "init", root / "init")
    shutil.copy2(HERE / "udhcpc.script", root / "etc/fake-agent/udhcpc.script")
    names = [_plain_module(m, root / "lib/modules") for m in _module_files(release, NIC_MODULES)]
    (root / "etc/fake-agent/modules").write_text("\n".join(names) + "\n")
    if not heartbeat:
        (root / "etc/fake-agent/no-heartbeat").write_text("")

    members = sorted(str(p.relative_to(root)) for p in root.rglob("*"))
    raw = dest / "fake-agent.cpio"
    with raw.open("wb") as out:
        listing = "\n".join(members) + "\n"
        run.run(["cpio", "-o", "-H", "newc", "--quiet"], input=listing, stdout=out, cwd=root)
    initramfs = dest / "fake-agent.initramfs"
    with raw.open("rb") as src, gzip.open(initramfs, "wb", compresslevel=1) as dst:
        shutil.copyfileobj(src, dst)
    raw.unlink()
    return initramfs
