"""Agent start benchmark (issue 15): one ramdisk with and without its precompiled .pyc files.

    .venv/bin/python bench/agentstart.py [KERNEL INITRAMFS] [--rounds N] [--memory MiB]

Default input: the last build in the default workspace (/tmp/dib/ironic-python-agent.*). The bench
unpacks the initramfs, removes the unchecked-hash .pyc files the build precompiled (what a ramdisk
was before sles-ipa-install's finalise.d/50-ipa-precompile), packs that tree again with the same
code, and boots both under TCG against the fake Ironic API, alternating A, B, A, B so that a change
in the machine's load hits both. It prints the sizes and the median seconds from QEMU start to the
agent's first lookup and heartbeat, as ratios.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from pathlib import Path

from sles_ipa_builder import (
    log,
    run,
)
from sles_ipa_builder.packing import ramdisk
from sles_ipa_builder.packing.compress import Compression
from sles_ipa_builder.verify.boottest import boot_test

REPO = Path(__file__).resolve().parent.parent

WORKSPACE = Path("/tmp/dib")


def without_precompiled(initramfs: Path, work: Path) -> tuple[Path, int]:
    """The same ramdisk without the unchecked-hash .pyc files; and how many there were."""
    tree = work / "tree"
    tree.mkdir()
    run.run(["bash", "-euo", "pipefail", "-c",
             f"zstd -dcq '{initramfs}' | cpio -idm --quiet --no-absolute-filenames"], cwd=tree)
    removed = 0
    for dirpath, _dirs, files in os.walk(tree):
        for name in files:
            p = os.path.join(dirpath, name)
            if name.endswith(".pyc") and ramdisk.unchecked_pyc(os.fsencode(p)):
                os.unlink(p)
                removed += 1
    out = work / "without-pyc.initramfs"
    ramdisk.pack(tree, out, Compression.parse("zstd"), progress=False, check_kernel=False)  # /init, /dev: synthetic
    return out, removed


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("kernel", nargs="?", type=Path, default=WORKSPACE / "ironic-python-agent.kernel")
    ap.add_argument("initramfs", nargs="?", type=Path, default=WORKSPACE / "ironic-python-agent.initramfs")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--memory", type=int, default=2048, help="MiB")
    args = ap.parse_args()
    log.setup(0)
    for p in (args.kernel, args.initramfs):
        if not p.is_file():
            sys.exit(f"error: {p} not found: build first, or pass KERNEL INITRAMFS")
    with tempfile.TemporaryDirectory(prefix="sib-bench-start-") as tmp:
        plain, removed = without_precompiled(args.initramfs, Path(tmp))
        variants = {"precompiled": args.initramfs, "without .pyc": plain}
        times: dict[str, list[tuple[float, float]]] = {k: [] for k in variants}
        for round_ in range(args.rounds):
            for name, initramfs in variants.items():
                r = boot_test(args.kernel, initramfs, memory_mb=args.memory, accel="tcg")
                times[name].append((r.lookup_seconds, r.heartbeat_seconds))
                print(f"round {round_ + 1}: {name:12} lookup {r.lookup_seconds:5.1f} s, "
                      f"heartbeat {r.heartbeat_seconds:5.1f} s", file=sys.stderr)
        sizes = {k: v.stat().st_size for k, v in variants.items()}
    med = {k: (statistics.median(t[0] for t in v), statistics.median(t[1] for t in v)) for k, v in times.items()}
    new, old = med["precompiled"], med["without .pyc"]
    mib = 1024 * 1024
    print(f"agent start benchmark: {args.initramfs.name}, {removed} precompiled modules, TCG, "
          f"{args.memory} MiB, median of {args.rounds}")
    print(f"  initramfs          {sizes['precompiled'] / mib:7.1f} MiB vs {sizes['without .pyc'] / mib:7.1f} MiB "
          f"({sizes['precompiled'] / sizes['without .pyc']:.3f}x)")
    print(f"  qemu -> lookup     {new[0]:7.1f} s   vs {old[0]:7.1f} s   ({new[0] / old[0]:.2f}x)")
    print(f"  qemu -> heartbeat  {new[1]:7.1f} s   vs {old[1]:7.1f} s   ({new[1] / old[1]:.2f}x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
