"""Benchmark `pack` against the seed's `find | cpio -o -H newc | gzip`, in one run on one tree.

    .venv/bin/python bench/pack.py [TREE] [--release-sample N] [--keep DIR]
    .venv/bin/python bench/pack.py --initramfs FILE --levels 3,6,9,12

--initramfs unpacks a built ramdisk (zstd) and packs its tree: what a build packs, after its cuts.
--levels only packs that tree with zstd at each level (the default level's time/size trade-off):
seconds, MiB and the ratios against the default level.

Without TREE the fixture root tree is used if the test media is built (fixtures/testmedia.py).
Every variant packs the same content (the seed's full prune list is applied to the shell
pipelines too). Each of our variants runs in a child process that reports its own peak RSS.
Prints a table and PASS/FAIL for the goals of issue 7. --release-sample N measures zstd-19
against gzip on 1/N of the files only (zstd-19 runs at a few MiB/s per core; the ratio, not
the time, is the goal).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

from sles_ipa_builder import run
from sles_ipa_builder.packing import cpio, ramdisk
from sles_ipa_builder.packing.compress import DEFAULT_LEVEL, Compression

MIB = 2**20


def seed_find_args() -> str:
    """The seed's `find . -xdev` expression with its full prune list, as shell words."""
    words = []
    for p in ramdisk.FULL_PRUNE:
        path = p if p.startswith("*") else f"./{p}"
        words.append(f"-path '{path}' -prune -o")
    words.append("-name '*.pyc' -prune -o -name '*.pyo' -prune -o")
    return "find . -xdev " + " ".join(words) + " -print"


def shell(cmd: str, tree: Path, out: Path) -> dict[str, float]:
    start = time.monotonic()
    run.run(["bash", "-o", "pipefail", "-c", f"{cmd} > {out}"], cwd=tree)
    res = {"seconds": time.monotonic() - start, "size": out.stat().st_size, "maxrss": 0.0}
    print(f"  {cmd.split(' | ', 1)[1]}: {res['seconds']:.2f}s", file=sys.stderr)
    return res


def ours(spec: str, tree: Path, out: Path) -> dict[str, float]:
    start = time.monotonic()
    text = run.output([sys.executable, __file__, "--child", spec, str(tree), str(out)])
    res = json.loads(text.splitlines()[-1])
    res["seconds"] = time.monotonic() - start
    print(f"  pack {spec} {tree.name}: {res['seconds']:.2f}s", file=sys.stderr)
    return res


def child(spec: str, tree: Path, out: Path) -> None:
    comp = Compression.release() if spec == "release" else Compression.parse(spec)
    r = ramdisk.pack(tree, out, comp, progress=False, check_kernel=False)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"inner": r.seconds, "size": r.size, "maxrss": rss}))


def sample_tree(tree: Path, dest: Path, every: int) -> Path:
    """Hard-link one run of 100 files in N (and all dirs) into dest: a smaller tree of the same kind.

    Runs of neighbours, not single files, so the locality a compressor's window sees is kept.
    """
    scan = cpio.scan(tree, exclude=ramdisk.Prune())
    dest.mkdir()
    files = 0
    for e in scan.entries[1:]:
        target = dest / os.fsdecode(e.name)
        if (e.mode & 0o170000) == 0o040000:
            target.mkdir(exist_ok=True)
        elif e.path is not None:
            files += 1
            if (files // 100) % every == 0:
                os.link(e.path, target)
    return dest


def warm(tree: Path) -> None:
    class Null:
        def write(self, data: object) -> None:
            pass

    cpio.write(cpio.scan(tree).entries, Null())


def unpack(initramfs: Path, dest: Path) -> Path:
    dest.mkdir()
    run.run(["bash", "-euo", "pipefail", "-c",
             f"zstd -dcq '{initramfs}' | cpio -idm --quiet --no-absolute-filenames"], cwd=dest)
    return dest


def levels(tree: Path, work: Path, wanted: list[int]) -> None:
    """zstd at each level on the same tree, in one run; ratios against the default level."""
    base = DEFAULT_LEVEL["zstd"]
    res = {lvl: ours(f"zstd:{lvl}", tree, work / f"z{lvl}") for lvl in sorted({base, *wanted})}
    b = res[base]
    print(f"{'zstd level':12} {'seconds':>8} {'MiB':>9} {'peak RSS MB':>12} {'time x':>7} {'size x':>7}"
          f"   (load {os.getloadavg()[0]:.1f}, {os.cpu_count()} cores)")
    for lvl, r in res.items():
        mark = " (default)" if lvl == base else ""
        print(f"{lvl:<12} {r['seconds']:8.2f} {r['size'] / MIB:9.1f} {r['maxrss']:12.0f} "
              f"{r['seconds'] / b['seconds']:7.2f} {r['size'] / b['size']:7.3f}{mark}")


def default_tree() -> Path:
    """The fixtures' root tree, only if the test media is already built (the bench never builds it)."""
    from sles_ipa_builder.cli.commands import built_testmedia

    media = built_testmedia()
    if media is not None:
        return Path(media.root_tree)
    sys.exit("no TREE given and the test media is not built: pass a tree, e.g. a copy of /usr/lib")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("tree", nargs="?", type=Path)
    ap.add_argument("--release-sample", type=int, default=1, metavar="N")
    ap.add_argument("--keep", type=Path, help="keep the outputs in this directory")
    ap.add_argument("--initramfs", type=Path, help="pack the tree of this built (zstd) initramfs")
    ap.add_argument("--levels", help="only compare these zstd levels, e.g. 3,6,9,12")
    ap.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        child(a.child[0], Path(a.child[1]), Path(a.child[2]))
        return
    work = Path(tempfile.mkdtemp(prefix="bench-pack-", dir=a.keep or "/var/tmp"))
    try:
        tree = unpack(a.initramfs, work / "tree") if a.initramfs else (a.tree or default_tree()).resolve()
        warm(tree)
        if a.levels:
            levels(tree, work, [int(x) for x in a.levels.split(",")])
            return
        find = seed_find_args()
        z = DEFAULT_LEVEL["zstd"]
        res = {
            "seed: find|cpio|gzip": shell(f"{find} | cpio -o -H newc --quiet | gzip", tree, work / "seed.gz"),
            "find|cpio|zstd -T0": shell(
                f"{find} | cpio -o -H newc --quiet | zstd -{z} -T0 -q", tree, work / "z"
            ),
            f"pack (zstd-{z})": ours("zstd", tree, work / "ours.zst"),
            "pack --compress gzip": ours("gzip", tree, work / "ours.gz"),
        }
        rel_tree = tree
        if a.release_sample > 1:
            rel_tree = sample_tree(tree, work / "sample", a.release_sample)
            res["sample: pack gzip"] = ours("gzip", rel_tree, work / "sample.gz")
        res[f"{'sample: ' if a.release_sample > 1 else ''}pack --release"] = ours(
            "release", rel_tree, work / "rel"
        )
        report(res, a.release_sample > 1)
    finally:
        if a.keep is None:
            shutil.rmtree(work, ignore_errors=True)


def report(res: dict[str, dict[str, float]], sampled: bool) -> None:
    print(f"{'variant':28} {'seconds':>8} {'MiB':>9} {'peak RSS MB':>12}")
    for name, r in res.items():
        shown = f"{r['maxrss']:.0f}" if r["maxrss"] else "-"
        print(f"{name:28} {r['seconds']:8.2f} {r['size'] / MIB:9.1f} {shown:>12}")
    seed, z3 = res["seed: find|cpio|gzip"], res["find|cpio|zstd -T0"]
    ours_, gz = res[f"pack (zstd-{DEFAULT_LEVEL['zstd']})"], res["pack --compress gzip"]
    rel = res["sample: pack --release" if sampled else "pack --release"]
    gz_ref = res["sample: pack gzip"]["size"] if sampled else seed["size"]
    rss = max(ours_["maxrss"], gz["maxrss"])  # zstd-19 workers need more; shown in the table
    goals = [
        (f"pack {seed['seconds'] / ours_['seconds']:.1f}x faster than seed (>= 5x)",
         seed["seconds"] / ours_["seconds"] >= 5),
        (f"pack size {ours_['size'] / seed['size']:.3f} of seed (<= 1)", ours_["size"] <= seed["size"]),
        (f"pack time {ours_['seconds'] / z3['seconds']:.2f}x of find|cpio|zstd (<= 1.3x)",
         ours_["seconds"] <= 1.3 * z3["seconds"]),
        (f"pack gzip time {gz['seconds'] / seed['seconds']:.2f}x of seed (<= 1)",
         gz["seconds"] <= seed["seconds"]),
        (f"release {100 * (1 - rel['size'] / gz_ref):.1f}% smaller than gzip (>= 20%)"
         + (" [sampled tree]" if sampled else ""), rel["size"] <= 0.8 * gz_ref),
        (f"peak RSS of pack, default and gzip, {rss:.0f} MB (< 300 MB)", rss < 300),
    ]  # fmt: skip
    print()
    for text, ok in goals:
        print(f"{'PASS' if ok else 'FAIL'}  {text}")


if __name__ == "__main__":
    main()
