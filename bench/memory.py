"""The smallest VM memory with which the agent still heartbeats (issue 15), found by bisection.

    .venv/bin/python bench/memory.py [KERNEL INITRAMFS] [--low MiB] [--high MiB] [--step MiB]

Default input: the last build in the default workspace (/tmp/dib/ironic-python-agent.*). Each probe
boots the ramdisk under TCG against the fake Ironic API with that much memory; a boot that reaches
the agent's heartbeat passes. The initramfs is unpacked into RAM (tmpfs) and the agent runs from
there, so the answer is about the unpacked tree plus what the agent and the kernel need; it prints
the answer next to the initramfs size and the README's figure.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from sles_ipa_builder import log
from sles_ipa_builder.errors import BuildError
from sles_ipa_builder.verify.boottest import boot_test

REPO = Path(__file__).resolve().parent.parent

WORKSPACE = Path("/tmp/dib")


def heartbeats(kernel: Path, initramfs: Path, memory: int, timeout: float) -> bool:
    try:
        r = boot_test(kernel, initramfs, memory_mb=memory, accel="tcg", timeout=timeout)
    except BuildError as e:
        print(f"  {memory:5d} MiB: no heartbeat ({e.message})", file=sys.stderr)
        return False
    print(f"  {memory:5d} MiB: heartbeat after {r.heartbeat_seconds:.1f} s", file=sys.stderr)
    return True


def smallest(kernel: Path, initramfs: Path, low: int = 512, high: int = 2048, step: int = 128,
             timeout: float = 400) -> int:
    """The smallest memory (MiB, to `step`) with which the agent heartbeats, by bisection."""
    if not heartbeats(kernel, initramfs, high, timeout):
        sys.exit(f"error: no heartbeat even with {high} MiB: raise --high")
    while high - low > step:  # invariant: high passes, low is not known to pass
        mid = (low + high) // 2 // step * step
        if mid <= low:
            break
        if heartbeats(kernel, initramfs, mid, timeout):
            high = mid
        else:
            low = mid
    return high


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("kernel", nargs="?", type=Path, default=WORKSPACE / "ironic-python-agent.kernel")
    ap.add_argument("initramfs", nargs="?", type=Path, default=WORKSPACE / "ironic-python-agent.initramfs")
    ap.add_argument("--low", type=int, default=512, help="MiB assumed too small unless it passes")
    ap.add_argument("--high", type=int, default=2048, help="MiB that must pass")
    ap.add_argument("--step", type=int, default=128, help="resolution (MiB)")
    ap.add_argument("--timeout", type=float, default=400)
    args = ap.parse_args()
    log.setup(0)
    for p in (args.kernel, args.initramfs):
        if not p.is_file():
            sys.exit(f"error: {p} not found: build first, or pass KERNEL INITRAMFS")
    high = smallest(args.kernel, args.initramfs, args.low, args.high, args.step, args.timeout)
    size = args.initramfs.stat().st_size / 2**20
    print(f"memory benchmark: {args.initramfs.name} ({size:.1f} MiB), TCG")
    print(f"  smallest memory with a heartbeat: {high} MiB (resolution {args.step} MiB; the seed's note: 1.5 GB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
