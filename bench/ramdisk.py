#!/usr/bin/env python3
"""The small ramdisk (issue 15): the current build against a previous one, measured in one run.

    .venv/bin/python bench/ramdisk.py --previous-ref 7e4af00 [--rounds 2] [--memory]
    .venv/bin/python bench/ramdisk.py --previous DIR [--current DIR]

Builds the test media's default ramdisk with this checkout and, with --previous-ref, with the code of
that git commit (a temporary worktree run by this venv), in fresh workspaces on one cache. Then, for
each: compressed size, file data of the tree and of its kernel modules (size-report), and the boot
under TCG from QEMU start to the agent's first lookup and heartbeat (rounds alternate between the
two, medians printed).
--memory also bisects the smallest VM memory with which each still heartbeats (bench/memory.py).
Goals: initramfs <= 110 MiB, tree <= 400 MB, lookup <= 30 s on an idle machine.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

from memory import smallest

from sles_ipa_builder import log, run
from sles_ipa_builder.fixtures import testmedia
from sles_ipa_builder.packing import sizereport
from sles_ipa_builder.verify.boottest import boot_test

REPO = Path(__file__).resolve().parent.parent

NAME = "ironic-python-agent"


def build(code: Path, profile: Path, work: Path) -> Path:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DIB_", "IPA_", "IRONIC_", "SIB_"))}
    env.update(PYTHONPATH=str(code), SIB_ACCEL=os.environ.get("SIB_ACCEL", "tcg"))
    out = work / "out"
    argv = [sys.executable, "-m", "sles_ipa_builder", "build", "--config", str(profile), "--workspace",
            str(work / "ws"), "--output", str(out)]
    res = run.run(argv, env=env, capture=True, check=False, cwd=code)
    if res.returncode != 0:
        sys.exit(f"build with {code} failed ({res.returncode}):\n{(res.stdout + res.stderr)[-3000:]}")
    return out


def boot(out: Path) -> tuple[float, float]:
    r = boot_test(out / f"{NAME}.kernel", out / f"{NAME}.initramfs", timeout=600, memory_mb=2048, accel="tcg")
    return r.lookup_seconds, r.heartbeat_seconds


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--previous-ref", help="git commit whose code builds the previous ramdisk")
    ap.add_argument("--previous", type=Path, help="output directory of a previous build")
    ap.add_argument("--current", type=Path, help="output directory of the current build (default: build now)")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--memory", action="store_true", help="also bisect the smallest VM memory")
    args = ap.parse_args()
    if not (args.previous or args.previous_ref):
        ap.error("give --previous-ref REF or --previous DIR")
    log.setup(0)
    tmp = Path(tempfile.mkdtemp(prefix="sib-bench-ramdisk-", dir="/var/tmp"))
    try:
        profile = testmedia.ensure().profile
        outs = {}
        if args.previous_ref:
            old = tmp / "previous-code"
            run.run(["git", "-C", str(REPO), "worktree", "add", "--detach", str(old), args.previous_ref], capture=True)
            try:
                outs["previous"] = build(old, profile, tmp / "previous")
            finally:
                run.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(old)], capture=True, check=False)
        else:
            outs["previous"] = args.previous
        outs["current"] = args.current or build(REPO, profile, tmp / "current")
        times: dict[str, list[tuple[float, float]]] = {k: [] for k in outs}
        for _ in range(args.rounds):
            for k, out in outs.items():
                times[k].append(boot(out))
        rows = {}
        for k, out in outs.items():
            rep = sizereport.analyze(out / f"{NAME}.initramfs")
            rows[k] = {
                "initramfs MiB": rep.compressed_size / 2**20,
                "tree MB": rep.uncompressed / 1e6,
                "modules MB": sum(size for _, size in rep.modules().values()) / 1e6,
                "lookup s": statistics.median(t[0] for t in times[k]),
                "heartbeat s": statistics.median(t[1] for t in times[k]),
            }
            if args.memory:
                rows[k]["min memory MiB"] = float(smallest(out / f"{NAME}.kernel", out / f"{NAME}.initramfs"))
        print(f"\n{'':16}{'previous':>12}{'current':>12}{'ratio':>8}   (load {os.getloadavg()[0]:.1f})")
        for metric in rows["current"]:
            a, b = rows["previous"][metric], rows["current"][metric]
            print(f"{metric:16}{a:12.1f}{b:12.1f}{b / a:8.2f}")
        print("goals: initramfs <= 110 MiB, tree <= 400 MB, lookup <= 30 s (idle machine)")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
