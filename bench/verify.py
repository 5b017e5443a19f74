"""What checking a cache entry by content costs (issue 30): record a tree, then check it, a few times.

    .venv/bin/python bench/verify.py TREE [--threads 1,2,4] [--runs 3]

TREE: a copy of a cache layer's tree (or a root tree). The bench only reads TREE; it writes the
record to a temp file. The first run may read from disk; the others from the page cache, as a warm
build right after the last one does. Prints entries, regular files, bytes, and the seconds of each
record and check, per thread count.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from sles_ipa_builder.cache import contents


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("tree", type=Path)
    ap.add_argument("--threads", default="1,2,4")
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    rows = contents.record(args.tree)
    files = [r for r in rows if r[1] == "f"]
    size = sum(int(str(r[4])) for r in files)
    print(f"{args.tree}: {len(rows)} entries, {len(files)} regular files, {size / 2**20:.1f} MiB")
    with tempfile.TemporaryDirectory() as tmp:
        record = Path(tmp) / contents.NAME
        for threads in (int(t) for t in args.threads.split(",")):
            contents.THREADS = threads
            made, checked = [], []
            for _ in range(args.runs):
                start = time.monotonic()
                contents.write(record, args.tree)
                made.append(time.monotonic() - start)
                start = time.monotonic()
                problem = contents.problem(record, args.tree)
                checked.append(time.monotonic() - start)
                if problem is not None:
                    raise SystemExit(f"{args.tree} changed while measured: {problem}")
            print(f"threads {threads}: record {statistics.median(made):.2f} s, "
                  f"check {statistics.median(checked):.2f} s (median of {args.runs}; "
                  f"check min {min(checked):.2f}, max {max(checked):.2f})")


if __name__ == "__main__":
    main()
