"""Lifecycle benchmark: a real Ironic inspects, cleans and deploys through the ramdisk, timed per stage.

    .venv/bin/python bench/lifecycle.py                      # the artifacts in /tmp/dib, BIOS and UEFI
    .venv/bin/python bench/lifecycle.py --output DIR --mode bios
    .venv/bin/python bench/lifecycle.py --kernel K --initramfs I

Runs `sles-ipa-builder boot-test --ironic` once (as root: it needs a private network namespace) and
prints, per boot mode, the seconds from QEMU start to inspected (manageable, inventory stored),
cleaned (available) and deployed (active), plus the wall clock of the whole run (Ironic start
included). Issue 12's goal: the whole lifecycle within 3 minutes under TCG, boot included.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

from sles_ipa_builder import run

REPO = Path(__file__).resolve().parent.parent

BUDGET_SECONDS = 180.0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--output", type=Path, default=Path(os.environ.get("IPA_BUILD_WORKSPACE", "/tmp/dib")))
    ap.add_argument("--kernel", type=Path)
    ap.add_argument("--initramfs", type=Path)
    ap.add_argument("--mode", default="both", choices=("bios", "uefi", "both"))
    ap.add_argument("--accel", default=os.environ.get("SIB_ACCEL", "tcg"), choices=("auto", "kvm", "tcg"))
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="sib-bench-lifecycle-") as tmp:
        report = Path(tmp) / "report.json"
        argv = [sys.executable, "-m", "sles_ipa_builder", "boot-test", "--ironic", "--mode", args.mode,
                "--accel", args.accel, "--report", str(report), "--output", str(args.output)]  # fmt: skip
        for flag, value in (("--kernel", args.kernel), ("--initramfs", args.initramfs)):
            if value:
                argv += [flag, str(value)]
        started = time.monotonic()
        res = run.run(argv, check=False, capture=True)
        wall = time.monotonic() - started
        doc = json.loads(report.read_text()) if report.exists() else {"results": []}
    if res.returncode != 0:
        print((res.stdout + res.stderr)[-4000:], file=sys.stderr)
    accels = "/".join(r["accel"] for r in doc["results"]) or args.accel
    print(f"lifecycle benchmark: Ironic {doc.get('ironic', '?')}, accel {accels}, "
          f"{doc.get('initramfs', args.initramfs or args.output)}")  # fmt: skip
    print(f"  {'mode':5} {'inspected':>10} {'cleaned':>9} {'deployed':>9}   stage durations (s)")
    for r in doc["results"]:
        t = r["since_boot"]
        cells = [f"{t[k]:8.0f}s" if k in t else f"{'-':>9}" for k in ("inspected", "cleaned", "deployed")]
        stages = ", ".join(f"{k} {v:.0f}" for k, v in r["seconds"].items())
        verdict = "" if r["ok"] else f"   FAILED at {r['stage']}: {r['error'][:80]}"
        print(f"  {r['mode']:5} {cells[0]:>10} {cells[1]} {cells[2]}   {stages}{verdict}")
    print(f"  wall clock (Ironic start, every mode) {wall:6.0f} s")
    for r in doc["results"]:
        if r["ok"]:
            verdict = "within" if r["since_boot"]["deployed"] <= BUDGET_SECONDS else "OVER"
            print(f"  {r['mode']}: QEMU start to active {r['since_boot']['deployed']:.0f} s, "
                  f"{verdict} the {BUDGET_SECONDS:.0f} s goal")  # fmt: skip
    return res.returncode


if __name__ == "__main__":
    sys.exit(main())
