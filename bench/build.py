#!/usr/bin/env python3
"""Cold vs warm end-to-end build on the test media (issue 8), and the boot time of the result.

Cold: empty build caches (root tree, git mirrors, zypper) in a fresh XDG_CACHE_HOME, test media
already generated. Warm: the same build again with those caches. Goal: warm <= 40% of cold.
The boot under TCG is timed from QEMU start to the agent's first lookup (goal <= 90 s).

    .venv/bin/python bench/build.py [--no-boot]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from sles_ipa_builder import run  # noqa: E402
from sles_ipa_builder.commands import load_testmedia  # noqa: E402


def build(profile: Path, work: Path, cache: Path, boot: bool) -> tuple[float, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DIB_", "IPA_", "IRONIC_", "SIB_"))}
    env.update(XDG_CACHE_HOME=str(cache), SIB_ACCEL=os.environ.get("SIB_ACCEL", "tcg"))
    argv = [sys.executable, "-m", "sles_ipa_builder", "build", "--config", str(profile),
            "--workspace", str(work), "--output", str(work / "out")]
    if boot:
        argv.append("--boot-test")
    start = time.monotonic()
    res = run.run(argv, env=env, capture=True, check=False)
    secs = time.monotonic() - start
    if res.returncode != 0:
        sys.exit(f"build failed ({res.returncode}):\n{(res.stdout + res.stderr)[-3000:]}")
    return secs, res.stdout + res.stderr


def phase_root(out: str) -> float:
    """Seconds of the root phase, from the build's step table (restoring the cached tree when warm)."""
    m = re.search(r"phase root \(host\)\s*│\s*([0-9.]+)", out)
    return float(m.group(1)) if m else float("nan")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--no-boot", action="store_true", help="skip the boot of the warm build")
    args = ap.parse_args()
    media = load_testmedia().ensure()
    tmp = Path(tempfile.mkdtemp(prefix="sib-bench-build-"))
    try:
        cold, cold_out = build(media.profile, tmp / "ws", tmp / "cache", boot=False)
        warm, out = build(media.profile, tmp / "ws", tmp / "cache", boot=not args.no_boot)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    boot_secs = None
    m = re.search(r"lookup after ([0-9.]+)s", out)
    if m:
        boot_secs = float(m.group(1))
    # The warm run also boots: its build time is the part before the boot test started.
    bm = re.search(r"boot test \(([0-9.]+)s\)", out)
    warm_build = warm - float(bm.group(1)) if bm else warm
    ratio = warm_build / cold
    print(f"cold build        {cold:7.1f} s  (root phase {phase_root(cold_out):.1f} s: the qcow2 read by libguestfs)")
    print(f"warm build        {warm_build:7.1f} s  = {ratio:.0%} of cold  "
          f"[{'PASS' if ratio <= 0.40 else 'FAIL'} goal <= 40%]  (root phase {phase_root(out):.1f} s)")
    if boot_secs is not None:
        verdict = "PASS" if boot_secs <= 90 else "FAIL"
        print(f"boot to lookup    {boot_secs:7.1f} s  (TCG)        [{verdict} goal <= 90 s]")
    return 0 if ratio <= 0.40 and (boot_secs is None or boot_secs <= 90) else 1


if __name__ == "__main__":
    sys.exit(main())
