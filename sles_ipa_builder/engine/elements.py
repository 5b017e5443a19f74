"""DIB-format elements: find them, resolve element-deps/element-provides, merge their hooks.

Follows diskimage-builder 3.31 (`element_dependencies.py`, `generate_hooks`, `dib-run-parts`,
`99-enable-install-types`) so a user's DIB element runs unchanged. Deliberate differences:
- DIB prepends `base` to every element list; we do so only when an element called `base` is on the
  search path, because the built-in set need not ship one.
- The generic DIB elements in NATIVE are done by the engine in Python: their directories (stubs in
  elements/, or a user's copy of DIB's own) only let element-deps on them resolve; their hooks never run.
- The install-types links are made at plan time from the environment after environment.d (DIB
  makes them in extra-data.d with that environment), so that `summary` shows the build's scripts.
"""

from __future__ import annotations

import logging
import os
import re
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import ConfigError

log = logging.getLogger(__name__)

BUILTIN_DIR = Path(__file__).resolve().parents[2] / "elements"  # the builder's own elements, in the checkout
SCRIPT_RE = re.compile(r"^[0-9A-Za-z_-]+$")  # dib-run-parts' RUN_PARTS_REGEX
ENV_RE = re.compile(r"^[0-9A-Za-z_.-]+$")  # environment.d names may contain dots
SKIP_DIRS = {"tests", "__pycache__"}
NATIVE = frozenset(
    {"package-installs", "pkg-map", "source-repositories", "install-static", "install-bin", "install-types"}
)
REPO_LINE = re.compile(r"^([^ ]+) (git|tar|file|package) ?(/[^ ]+)? ?([^ ]+)? ?([^ ]*)$")


@dataclass(frozen=True)
class Element:
    name: str
    path: Path | None  # None: a native element that has no directory on the search path
    pulled_by: str | None  # None: requested by the user (or the implicit base)
    deps: tuple[str, ...] = ()
    provides: tuple[str, ...] = ()

    @property
    def native(self) -> bool:
        return self.name in NATIVE


@dataclass(frozen=True)
class SourceRepo:
    """One line of a `source-repository-*` file, expanded and with DIB_REPO* overrides applied."""

    name: str
    type: str  # git, tar, file, package
    dest: str  # absolute path inside the target
    location: str
    ref: str
    element: str


def search_path(extra: Sequence[Path] = ()) -> list[Path]:
    """ELEMENTS_PATH entries first, then the built-in elements/ (DIB's order)."""
    return [Path(p) for p in extra] + [BUILTIN_DIR]


def find_all(path: Sequence[Path]) -> dict[str, Path]:
    """name -> element dir; an earlier path entry wins, with a warning (as DIB)."""
    found: dict[str, Path] = {}
    for base in path:
        if not base.is_dir():
            log.warning("element path %s is not a directory; ignored", base)
            continue
        for d in sorted(base.iterdir()):
            if not d.is_dir() or d.name.startswith("."):
                continue
            if d.name in found:
                log.warning("element %s in %s is overridden by %s", d.name, base, found[d.name])
                continue
            found[d.name] = d
    return found


def _read_names(file: Path) -> tuple[str, ...]:
    """element-deps / element-provides: one name per line, blank lines dropped, no comments."""
    if not file.is_file():
        return ()
    names = [line.strip() for line in file.read_text().splitlines()]
    return tuple(dict.fromkeys(n for n in names if n))


def _load(name: str, found: Mapping[str, Path]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    d = found.get(name)
    if d is None:
        return (), ()
    return _read_names(d / "element-deps"), _read_names(d / "element-provides")


def resolve(requested: Sequence[str], path: Sequence[Path]) -> list[Element]:
    """DIB's breadth-first expansion; returns the final elements (provided names removed) in BFS order."""
    found = find_all(path)
    user = list(dict.fromkeys(requested))
    if "base" in found and "base" not in user:
        user.insert(0, "base")
    final: dict[str, str | None] = {n: None for n in user}
    queue = deque(user)
    provided: dict[str, str] = {}
    info: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {}
    while queue:
        name = queue.popleft()
        if name in provided:
            continue
        if name not in found and name not in NATIVE:
            by = final.get(name)
            raise ConfigError(
                f"Element '{name}' not found" + (f" (a dependency of {by})" if by else ""),
                "searched "
                + ":".join(map(str, path))
                + "; add its directory with --elements-path/ELEMENTS_PATH",
            )
        deps, provides = info[name] = _load(name, found)
        for p in provides:
            if p in provided:
                raise ConfigError(
                    f"Element '{name}' provides '{p}' but it is already provided by '{provided[p]}'",
                    "drop one of the two elements from the list",
                )
            provided[p] = name
        for dep in deps:
            if dep not in final and dep not in provided:
                queue.append(dep)
            final.setdefault(dep, name)
    conflicts = [n for n in user if n in provided]
    if conflicts:
        n = conflicts[0]
        raise ConfigError(
            f"Element '{n}' is already provided by '{provided[n]}'",
            f"remove '{n}' from the element list: '{provided[n]}' stands in for it",
        )
    if "operating-system" not in provided:
        raise ConfigError(
            "Please include an operating system element",
            "add an element that provides operating-system, such as sles",
        )
    return [
        Element(n, found.get(n), by, *info.get(n, ((), ()))) for n, by in final.items() if n not in provided
    ]


# --- ordering -------------------------------------------------------------------------------------
def sort_key(name: str) -> tuple[int, bytes]:
    """`LANG=C sort -n`: the leading (signed) number, 0 if none; ties by the bytes of the name."""
    m = re.match(r"^(-?)(\d*)", name)
    assert m is not None
    num = int(m.group(2)) if m.group(2) else 0
    return (-num if m.group(1) else num, name.encode())


# --- the merged hooks tree ------------------------------------------------------------------------
@dataclass(frozen=True)
class Script:
    phase_dir: str  # "install.d"
    name: str
    element: str
    source: Path  # where it comes from (for install-types: the file inside the <x>-source-install dir)


@dataclass
class HookTree:
    """What DIB's TMP_HOOKS_PATH would hold, as a plan: each entry knows its element and source."""

    files: dict[str, tuple[str, Path]] = field(default_factory=dict)  # relpath -> (element, source)
    dirs: set[str] = field(default_factory=set)
    links: dict[str, str] = field(default_factory=dict)  # relpath -> relative symlink target
    generated: dict[str, str] = field(default_factory=dict)  # relpath -> file content

    def scripts(self, phase_dir: str) -> list[Script]:
        """dib-run-parts' selection: depth 1, regex, executable file (symlinks followed), sort -n."""
        out = []
        for rel in [*self.files, *self.links]:
            head, _, name = rel.partition("/")
            if head != phase_dir or "/" in name or not SCRIPT_RE.match(name):
                continue
            target = self.resolve_entry(rel)
            if target is None:
                continue
            element, src = target
            if src.is_file() and os.access(src, os.X_OK):
                out.append(Script(phase_dir, name, element, src))
        return sorted(out, key=lambda s: sort_key(s.name))

    def resolve_entry(self, rel: str) -> tuple[str, Path] | None:
        seen = 0
        while rel in self.links and seen < 10:
            rel = os.path.normpath(os.path.join(os.path.dirname(rel), self.links[rel]))
            seen += 1
        return self.files.get(rel)

    def env_files(self) -> list[tuple[str, str]]:
        """(relpath, element) of environment.d, in DIB's (byte-wise) order, generated ones included."""
        names: dict[str, str] = {}
        for rel, (element, src) in self.files.items():
            head, _, name = rel.partition("/")
            if head == "environment.d" and "/" not in name and ENV_RE.match(name) and src.is_file():
                names[name] = element
        for rel in self.generated:
            head, _, name = rel.partition("/")
            if head == "environment.d":
                names[name] = "(generated)"
        return [(f"environment.d/{n}", names[n]) for n in sorted(names, key=str.encode)]

    def subtree(self, top: str) -> dict[str, tuple[str, Path]]:
        """Entries under `top/` (e.g. static, bin), keyed by path relative to it."""
        prefix = top + "/"
        return {rel[len(prefix) :]: v for rel, v in self.files.items() if rel.startswith(prefix)}

    def materialise(self, dest: Path) -> None:
        """Write the merged tree (copies, as DIB's cp -a) to dest, which must not exist yet."""
        dest.mkdir(parents=True)
        for rel in sorted(self.dirs):
            (dest / rel).mkdir(parents=True, exist_ok=True)
        for rel, (_, src) in self.files.items():
            out = dest / rel
            out.parent.mkdir(parents=True, exist_ok=True)
            if src.is_symlink():
                os.symlink(os.readlink(src), out)
            else:
                out.write_bytes(src.read_bytes())
                os.chmod(out, src.stat().st_mode & 0o7777)
        for rel, target in self.links.items():
            out = dest / rel
            if out.is_symlink() or out.exists():
                out.unlink()
            os.symlink(target, out)
        for rel, text in self.generated.items():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            (dest / rel).write_text(text)


def _merge_dir(tree: HookTree, element: str, src: Path, rel: str, top_level: bool) -> None:
    tree.dirs.add(rel)
    for entry in sorted(src.iterdir()):
        if top_level and entry.name.startswith("."):
            continue  # DIB copies `<dir>/*`: a .gitkeep or an editor's swap file is not a hook
        r = f"{rel}/{entry.name}"
        if entry.is_dir() and not entry.is_symlink():
            _merge_dir(tree, element, entry, r, False)
            continue
        if r in tree.files:
            other = tree.files[r][0]
            if top_level:
                raise ConfigError(
                    f"There is a duplicated hook in your elements: {r} is in both {other} and {element}",
                    f"rename one of the two scripts, or drop {other} or {element} from the element list",
                )
            log.debug("%s of %s overwrites the one of %s", r, element, other)  # cp -a merges nested dirs
        tree.files[r] = (element, entry)


def merge(elements: Iterable[Element], env: Mapping[str, str]) -> HookTree:
    """Merge the hook dirs of all elements (DIB's generate_hooks) and apply install-types."""
    tree = HookTree()
    for el in elements:
        if el.path is None:
            continue
        subdirs = [d for d in sorted(el.path.iterdir()) if d.is_dir() and d.name not in SKIP_DIRS]
        if el.native:
            if any(d.name.endswith(".d") for d in subdirs):
                log.warning(
                    "element %s (%s) is done natively; its hook scripts are not run", el.name, el.path
                )
            continue
        for d in subdirs:
            _merge_dir(tree, el.name, d, d.name, True)
    default = env.get("DIB_DEFAULT_INSTALLTYPE", "source")
    tree.generated["environment.d/11-dib-install-type.bash"] = (
        f'export DIB_DEFAULT_INSTALLTYPE=${{DIB_DEFAULT_INSTALLTYPE:-"{default}"}}\n'
    )
    _install_types(tree, env, default)
    return tree


def apply_install_types(tree: HookTree, env: Mapping[str, str]) -> None:
    """Redo the install-types links for `env`: the environment after environment.d, as DIB links them
    in extra-data.d (an element may export DIB_INSTALLTYPE_<x> from its environment.d)."""
    tree.links.clear()
    _install_types(tree, env, env.get("DIB_DEFAULT_INSTALLTYPE", "source"))


def _install_types(tree: HookTree, env: Mapping[str, str], default: str) -> None:
    """Expose install.d/<x>-<type>-install/* in install.d as relative symlinks (99-enable-install-types)."""
    chosen = {
        k[len("DIB_INSTALLTYPE_") :].replace("_", "-"): v
        for k, v in env.items()
        if k.startswith("DIB_INSTALLTYPE_")
    }
    type_dirs = sorted(
        d.split("/")[1]
        for d in tree.dirs
        if d.count("/") == 1 and d.startswith("install.d/") and d.endswith("-install")
    )
    for name in type_dirs:
        # <prefix>-<type>-install: DIB_INSTALLTYPE_<prefix> covers exactly that prefix, not longer ones
        prefix = name[: -len("-install")].rsplit("-", 1)[0]
        covered = [p for p in chosen if p == prefix]
        if covered:
            wanted = any(name == f"{p}-{chosen[p]}-install" for p in covered)
        else:
            wanted = name.endswith(f"-{default}-install")
        if not wanted:
            continue
        prefix = f"install.d/{name}/"
        for rel in sorted(r for r in tree.files if r.startswith(prefix) and "/" not in r[len(prefix) :]):
            base = rel[len(prefix) :]
            tree.links[f"install.d/{base}"] = f"{name}/{base}"


# --- source-repository-* ---------------------------------------------------------------------------
_VAR = re.compile(r"\$(?:\{([A-Za-z_][A-Za-z0-9_]*)(?::?-([^}]*))?\}|([A-Za-z_][A-Za-z0-9_]*))")


def expand(text: str, env: Mapping[str, str]) -> str:
    """`eval echo` of a line, limited to $VAR, ${VAR} and ${VAR:-default} (unset is empty)."""

    def sub(m: re.Match[str]) -> str:
        name = m.group(1) or m.group(3)
        value = env.get(name, "")
        if m.group(1) and m.group(2) is not None and not value:
            return expand(m.group(2), env)
        return value

    return _VAR.sub(sub, text)


def override_key(name: str) -> str:
    """DIB's variable suffix of a source (DIB_REPOREF_<key>): every non-alphanumeric character is '_'."""
    return re.sub(r"[^A-Za-z0-9]", "_", name)


def source_repos(elements: Iterable[Element], env: Mapping[str, str]) -> list[SourceRepo]:
    """Every element's source-repository-* lines (DIB's source-repositories element, parsed natively)."""
    repos: list[SourceRepo] = []
    files: dict[str, tuple[str, Path]] = {}
    for el in elements:  # top-level files merge into TMP_HOOKS_PATH: a later element's copy wins
        if el.path is not None and not el.native:
            for f in sorted(el.path.glob("source-repository-*")):
                if f.is_file() and not f.name.endswith("~"):
                    files[f.name] = (el.name, f)
    default_type = env.get("DIB_DEFAULT_INSTALLTYPE", "source")
    for fname in sorted(files):
        element, path = files[fname]
        for raw in path.read_text().splitlines():
            line = " ".join(expand(raw, env).split())  # `eval echo $line` in DIB: tabs, runs of spaces
            if not line or line.startswith("#"):
                continue
            m = REPO_LINE.match(line)
            if not m:
                raise ConfigError(
                    f"{path}: cannot parse '{line}'",
                    "the format is '<name> <git|tar|file|package> <dest> <location> [ref]'",
                )
            name, rtype, dest, location, ref = m.groups()
            key = override_key(name)
            if env.get(f"DIB_INSTALLTYPE_{key}", default_type) != "source":
                log.debug("source repository %s skipped: install type is not source", name)
                continue
            rtype = env.get(f"DIB_REPOTYPE_{key}") or rtype
            location = env.get(f"DIB_REPOLOCATION_{key}") or location or ""
            ref = env.get(f"DIB_REPOREF_{key}") or ref or ("master" if rtype == "git" else "")
            repos.append(SourceRepo(name, rtype, dest or "", location, ref, element))
    return repos
