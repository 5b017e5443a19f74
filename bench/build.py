#!/usr/bin/env python3
"""Cold and warm builds on the test media, in one run (issue 18): how much of a cold build each kind
of change costs, with the cache layers (README "Cache layers").

1. cold: empty build caches (root tree, git mirrors, zypper, layers) in a fresh XDG_CACHE_HOME, the
   test media already generated;
2. warm, nothing changed (goal <= 10% of cold: the tree layer, then packing);
3. warm after a late hook changed (an extra element's finalise.d script; goal <= 25%);
4. warm after a new IPA commit (the IPA repository copied, a commit pushed to the branch the build
   follows; goal <= 40%).
Every build uses the same element list (the default plus the extra element) and the same IPA branch.
Optionally the warm build's boot: QEMU start to the agent's first lookup under TCG.

    .venv/bin/python bench/build.py [--boot]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from sles_ipa_builder import run
from sles_ipa_builder.config import resolve as config
from sles_ipa_builder.fixtures import testmedia

REPO = Path(__file__).resolve().parent.parent

GOALS = {"nothing changed": 0.10, "a late hook changed": 0.25, "a new IPA commit": 0.40}


class Bench:
    def __init__(self, tmp: Path, profile: Path) -> None:
        self.tmp, self.profile, self.n = tmp, profile, 0
        self.elements = tmp / "elements"
        self.hook = self.elements / "bench-late/finalise.d/55-bench-late"
        self.hook.parent.mkdir(parents=True)
        self.set_hook("one")
        self.ipa = tmp / "ipa.git"
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(("DIB_", "IPA_", "IRONIC_", "SIB_"))}
        self.env.update(XDG_CACHE_HOME=str(tmp / "cache"), SIB_ACCEL=os.environ.get("SIB_ACCEL", "tcg"),
                        DIB_REPOLOCATION_ironic_python_agent=self.ipa.as_uri(),
                        DIB_REPOREF_ironic_python_agent="bench")

    def set_hook(self, word: str) -> None:
        self.hook.write_text(f"#!/bin/bash\nset -eu\necho {word} > /etc/bench-late\n")
        self.hook.chmod(0o755)

    def copy_ipa(self, origin: str, tag: str) -> None:
        run.run(["git", "clone", "--quiet", "--bare", origin, self.ipa])
        run.run(["git", "-C", self.ipa, "branch", "bench", f"{tag}^{{commit}}"])

    def new_commit(self) -> None:
        work = self.tmp / "ipa-work"
        run.run(["git", "clone", "--quiet", "--branch", "bench", self.ipa, work])
        (work / "bench-commit.txt").write_text(f"{time.time()}\n")
        git = ["git", "-C", str(work), "-c", "user.name=bench", "-c", "user.email=bench@localhost"]
        run.run([*git, "add", "bench-commit.txt"])
        run.run([*git, "commit", "--quiet", "-m", "bench: a new commit"])
        run.run([*git, "push", "--quiet", "origin", "bench"])

    def build(self, *more: str) -> tuple[float, dict[str, str], str]:
        self.n += 1
        report = self.tmp / f"report{self.n}.json"
        names = [*config.resolve({}, environ={}).element_list, "bench-late"]
        argv = [sys.executable, "-m", "sles_ipa_builder", "build", "--config", str(self.profile),
                "--workspace", str(self.tmp / "ws"), "--output", str(self.tmp / "out"),
                "--elements-path", str(self.elements), "--elements", *names, "--report", str(report), *more]
        start = time.monotonic()
        res = subprocess.run(argv, env=self.env, capture_output=True, text=True, check=False)
        secs = time.monotonic() - start
        if res.returncode != 0:
            sys.exit(f"build {self.n} failed ({res.returncode}):\n{(res.stdout + res.stderr)[-3000:]}")
        layers = {x["layer"]: x["state"] for x in json.loads(report.read_text()).get("layers", [])}
        return secs, layers, res.stdout + res.stderr


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--boot", action="store_true", help="boot the nothing-changed build to the agent's lookup")
    args = ap.parse_args()
    media = testmedia.ensure()
    prof = config.load_toml(media.profile)["env"]
    tmp = Path(tempfile.mkdtemp(prefix="sib-bench-build-", dir="/var/tmp"))
    load = os.getloadavg()[0]
    try:
        b = Bench(tmp, media.profile)
        b.copy_ipa(prof["DIB_REPOLOCATION_ironic_python_agent"], prof["DIB_REPOREF_ironic_python_agent"])
        cold, _, _ = b.build()
        rows = []
        secs, layers, out = b.build(*(["--boot-test"] if args.boot else []))
        boot = None
        if args.boot:
            m = [line for line in out.splitlines() if "lookup after" in line]
            boot = m[-1].strip() if m else "no lookup line"
            bm = re.search(r"boot test \(([0-9.]+)s\)", out)
            secs -= float(bm.group(1)) if bm else 0.0
        rows.append(("nothing changed", secs, layers))
        b.set_hook("two")
        rows.append(("a late hook changed", *b.build()[:2]))
        b.new_commit()
        rows.append(("a new IPA commit", *b.build()[:2]))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"load at start {load:.1f}, at end {os.getloadavg()[0]:.1f} (2 cores; TCG)")
    print(f"{'cold':<22}{cold:8.1f} s")
    ok = True
    for what, secs, layers in rows:
        ratio, goal = secs / cold, GOALS[what]
        ok &= ratio <= goal
        resumed = next((name for name in ("tree", "venv", "packages") if layers.get(name) == "hit"), "root")
        print(f"{what:<22}{secs:8.1f} s = {ratio:4.0%} of cold  [{'PASS' if ratio <= goal else 'FAIL'} goal <= "
              f"{goal:.0%}]  resumed from {resumed}")
    if boot:
        print(f"boot of the warm build: {boot}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
