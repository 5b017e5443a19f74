"""The package inventory of a tree: its rpm database (read by the host's rpm, else the tree's own) and
the IPA venv's Python distributions. Written as `<name>.packages`; size-report and the wheelhouse use it."""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from pathlib import Path

from .. import run
from ..errors import BuildError

log = logging.getLogger(__name__)

RPMDB_DIRS = ("usr/lib/sysimage/rpm", "var/lib/rpm")
RPMDB_FILES = ("rpmdb.sqlite", "Packages.db", "Packages")
# The rpm package list, kept in the tree when its package manager and database leave (pkgdrop.py).
LISTED = "usr/lib/sles-ipa-builder/rpm-packages.tsv"
RPM_FIELDS = ("NAME", "EPOCHNUM", "VERSION", "RELEASE", "ARCH", "SIZE", "LICENSE")
RPM_QF = "%{NAME} " + "\\t".join(f"%{{{f}}}" for f in RPM_FIELDS) + "\\n"


class RpmdbKeeper:
    """Extracts the package inventory found in an archive: the files of an rpm database (whatever the
    backend), or the list written when the database left (LISTED); rpm_table(tmp) reads them."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp

    def __call__(self, name: str) -> Path | None:
        d, _, base = name.rpartition("/")
        return self.tmp / name if (d in RPMDB_DIRS and base) or name == LISTED else None


def rpm_lines(dbdir: Path, qf: str) -> list[tuple[str, str]]:
    """`rpm -qa --qf` on a copy of the database (rpm may write lock/wal files next to it)."""
    if run.which("rpm") is None:
        raise BuildError("rpm is not installed on this host", "install rpm to list packages")
    with tempfile.TemporaryDirectory(prefix="rpmdb-") as tmp:
        copy = Path(tmp) / "db"
        shutil.copytree(dbdir, copy, symlinks=True)
        out = run.run(["rpm", "--dbpath", copy, "-qa", "--qf", qf], capture=True, check=False)
    if out.returncode != 0 or (not out.stdout.strip() and out.stderr.strip()):
        msg = out.stderr.strip().splitlines()[-1:] or [f"exit {out.returncode}"]
        raise BuildError(f"rpm -qa failed: {msg[0][:200]}", "the host's rpm cannot read this database")
    rows = [tuple(line.split(" ", 1)) for line in out.stdout.splitlines() if " " in line]
    if not rows:
        # rpm "reads" a database of a backend it lacks (ndb) as a new empty one
        raise BuildError("rpm -qa found no packages", "the host's rpm may lack this database's backend")
    return rows  # type: ignore[return-value]


def _rpm_in_tree(tree: Path, qf: str) -> list[tuple[str, str]]:
    """The tree's own rpm, for a database backend the host's rpm lacks (SLE's ndb on Debian).

    A query needs no /proc or /dev, so a bare chroot does (root only); the database is read-only.
    """
    rpm = tree / "usr/bin/rpm"
    if os.geteuid() != 0 or not (rpm.is_file() or rpm.is_symlink()):
        raise BuildError("no rpm in the tree (or not root to chroot)", "")
    argv = run.chroot_argv(tree, ["rpm", "-qa", "--qf", qf])
    out = run.run(argv, env=run.target_env(), capture=True, check=False)
    if out.returncode != 0:
        raise BuildError(f"rpm -qa in the tree exited {out.returncode}", "")
    return [(a, b) for a, _, b in (line.partition(" ") for line in out.stdout.splitlines() if " " in line)]


def find_rpmdb(tree: Path) -> Path | None:
    for d in RPMDB_DIRS:
        p = tree / d
        if p.is_dir() and not p.is_symlink() and any((p / f).is_file() for f in RPMDB_FILES):
            return p
    return None


def pip_freeze(venv: Path, *, skip_direct: bool = False) -> list[str]:
    """`name==version` of every distribution in the venv, from the dist-info metadata (no python run).

    skip_direct: leave out what was installed from a path or URL (PEP 610 direct_url.json).
    """
    found: dict[str, str] = {}
    for meta in sorted(venv.glob("lib*/python3*/site-packages/*.dist-info/METADATA")):
        if skip_direct and (meta.parent / "direct_url.json").exists():
            continue
        name = version = ""
        for line in meta.read_text(errors="replace").splitlines():
            if not line:
                break
            key, _, value = line.partition(": ")
            if key == "Name":
                name = value.strip()
            elif key == "Version":
                version = value.strip()
        if name:
            found[name] = version
    return [f"{n}=={v}" for n, v in sorted(found.items(), key=lambda kv: kv[0].lower())]


def rpm_pairs(tree: Path, qf: str) -> list[tuple[str, str]]:
    """`rpm -qa --qf` of the tree's database as (first word, rest) pairs: the host's rpm, else the
    tree's own (root only). `qf` starts with `%{NAME} `. BuildError when neither can read it."""
    dbdir = find_rpmdb(tree)
    if dbdir is None:
        raise BuildError("no rpm database in the tree", "")
    try:
        return rpm_lines(dbdir, qf)
    except BuildError as e:
        try:
            return _rpm_in_tree(tree, qf)
        except BuildError as e2:
            raise BuildError(f"{e.message}; {e2.message}", e.hint) from None


def rpm_table(tree: Path) -> list[list[str]] | None:
    """One row of RPM_FIELDS per installed package, sorted: from the rpm database, else from the list
    written before the database left the tree (LISTED); None when there is neither."""
    if find_rpmdb(tree) is not None:
        return sorted(rest.split("\t") for _, rest in rpm_pairs(tree, RPM_QF))
    listed = tree / LISTED
    if listed.is_file():
        return [line.split("\t") for line in listed.read_text().splitlines() if line and not line.startswith("#")]
    return None


def save_list(tree: Path) -> bool:
    """Write the package list into the tree (LISTED), for when the rpm database is gone; False when
    there is a database that cannot be read."""
    if find_rpmdb(tree) is None:
        return True
    try:
        rows = rpm_table(tree) or []
    except BuildError as e:
        log.warning("cannot list rpm packages: %s", e.message)
        return False
    out = tree / LISTED
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("# " + "\t".join(f.lower() for f in RPM_FIELDS) + "\n" + "".join("\t".join(r) + "\n" for r in rows))
    return True


def list_packages(tree: Path, venv: str = "opt/ironic-python-agent", sources: dict[str, str] | None = None) -> str:
    """The `<name>.packages` text: rpm -qa of the tree, the IPA venv's pip freeze, then the repository
    each package the build installed came from (`sources`, name -> repository; secrets masked)."""
    lines = ["# rpm -qa"]
    try:
        table = rpm_table(tree)
    except BuildError as e:
        log.warning("cannot list rpm packages: %s", e.message)
        lines.append(f"# (rpm database not readable: {e.message.split(';')[0]})")
    else:
        if table is None:
            lines.append("# (no rpm database in the tree)")
        else:
            lines += sorted(f"{r[0]}-{r[2]}-{r[3]}.{r[4]}" for r in table)
    lines += ["", f"# pip freeze (/{venv})"]
    lines += pip_freeze(tree / venv) if (tree / venv).is_dir() else ["# (no venv)"]
    if sources:
        lines += ["", "# repository of each package this build installed (zypper history; the rest came with the base)"]
        lines += [f"{name} {repo}" for name, repo in sources.items()]
    return "\n".join(lines) + "\n"


