"""Running hook scripts, as dib-run-parts does, on the host or inside the target.

Each script runs in its own shell that first sources every environment.d file of the merged tree
(under `set -eu -o pipefail`, as dib-run-parts), then execs the script, so environment.d exports
reach it and `$(dirname $0)` is its phase dir. Inside the target it gets an explicit environment
(run.target_env + the element variables + the build-time CA bundle), never the host's.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

from . import namespace, run, zypper
from .cache import cache_dir, locked
from .context import TARGET_CA, BuildContext
from .errors import BuildError, CommandError
from .log import step

log = logging.getLogger(__name__)

IN_TARGET = "/tmp/in_target.d"
RUNNER = 'set -eu -o pipefail; s=$1; shift; for f in "$@"; do . "$f"; done; exec "$s"'
DIE = 'function die { echo "ERROR: $*" >&2; exit 1; }\n'  # DIB's lib/die, for hooks that source $_LIB/die


def target_shell(root: Path) -> str:
    """bash when the target has it (SLES does), else sh (busybox test trees)."""
    for cand in ("usr/bin/bash", "bin/bash"):
        if os.path.lexists(root / cand):
            return "/" + cand
    return "/bin/sh"


def chroot_argv(root: Path, argv: list[str]) -> list[str]:
    """`chroot root argv...`; the environment goes through exec (run with env=chroot_env), not argv,
    so secrets among the element variables never show in the log or in /proc/PID/cmdline."""
    return [run.which("chroot") or "/usr/sbin/chroot", str(root), *argv]


def chroot_env(ctx: BuildContext) -> dict[str, str]:
    return run.target_env({**ctx.env, **ctx.target_ca_env()})


def host_env(ctx: BuildContext) -> dict[str, str]:
    """Host hooks: a clean environment too, with the host's PATH (plus sbin dirs, as DIB)."""
    path = os.environ.get("PATH", "/usr/bin:/bin") + ":/sbin:/usr/sbin:/usr/local/sbin"
    env = run.target_env({**ctx.env, **ctx.host_ca_env()})
    env.update(PATH=path, HOME=os.environ.get("HOME", "/root"))
    return env


def materialise(ctx: BuildContext) -> None:
    """Write the merged hooks dir (TMP_HOOKS_PATH) and DIB's small _LIB once per build."""
    if not ctx.hooks_dir.exists():
        ctx.tree.materialise(ctx.hooks_dir)
    lib = ctx.build_dir / "lib"
    lib.mkdir(parents=True, exist_ok=True)
    (lib / "die").write_text(DIE)


def env_files(ctx: BuildContext, base: str) -> list[str]:
    return [f"{base}/{rel}" for rel, _ in ctx.tree.env_files()]


@contextlib.contextmanager
def target_mounts(ctx: BuildContext) -> Iterator[contextlib.ExitStack]:
    """proc, sys (ro), dev, dev/pts, extra binds, hooks (ro) and the CA bundle, undone on exit."""
    root = ctx.root

    def at(rel: str) -> Path:  # mount(8) follows symlinks on the host: resolve them inside the target
        return in_root(root, rel, follow_last=True)

    with contextlib.ExitStack() as stack:
        namespace.proc(stack, at("proc"))
        namespace.sysfs(stack, at("sys"))
        namespace.dev(stack, at("dev"))
        namespace.devpts(stack, at("dev/pts"))
        # host /dev/shm is a mount of its own, so the bound /dev has a bare devtmpfs dir there
        namespace.tmpfs(stack, at("dev/shm"))
        for host_dir, inside in ctx.target_mounts:
            host_dir.mkdir(parents=True, exist_ok=True)
            namespace.bind(stack, host_dir, at(inside))
        hooks = at(IN_TARGET)
        created = not hooks.exists()
        hooks.mkdir(parents=True, exist_ok=True)
        if created:
            stack.callback(_rmdir, hooks)
        namespace.bind(stack, ctx.hooks_dir, hooks, ro=True)
        if ctx.ca_bundle is not None:
            namespace.bind_file(stack, ctx.ca_bundle, at(TARGET_CA))
        # Anything a hook left running in the target would keep these mounts busy.
        stack.callback(namespace.kill_rooted_in, root)
        yield stack


def _rmdir(path: Path) -> None:
    deadline = time.monotonic() + 10  # DIB retries for 10 s: a lazily detached mount may linger
    while True:
        try:
            path.rmdir()
            return
        except FileNotFoundError:
            return
        except OSError:
            if time.monotonic() > deadline:
                log.warning("unable to cleanly remove %s", path)
                return
            time.sleep(0.2)


def script_argv(ctx: BuildContext, phase_dir: str, name: str, chroot: bool) -> tuple[list[str], str | None]:
    """argv (and cwd) that runs one script the dib-run-parts way."""
    if chroot:
        base = IN_TARGET
        inner = [
            target_shell(ctx.root),
            "-c",
            RUNNER,
            "sib-hook",
            f"{base}/{phase_dir}/{name}",
            *env_files(ctx, base),
        ]
        return chroot_argv(ctx.root, inner), None
    base = str(ctx.hooks_dir)
    argv = ["bash", "-c", RUNNER, "sib-hook", f"{base}/{phase_dir}/{name}", *env_files(ctx, base)]
    return argv, str(ctx.workspace)


def run_script(ctx: BuildContext, phase: str, name: str, element: str, chroot: bool) -> None:
    """Run one hook script; its output goes to the log; failure is a BuildError with the tail."""
    phase_dir = f"{phase}.d"
    argv, cwd = script_argv(ctx, phase_dir, name, chroot)
    hlog = logging.getLogger(f"sles_ipa_builder.hook.{phase}")
    start = time.monotonic()
    env = chroot_env(ctx) if chroot else host_env(ctx)
    try:
        with step(f"{phase_dir}/{name} ({element})"):
            run.stream(
                argv,
                env=env,
                cwd=cwd,
                on_line=lambda line: hlog.debug("%s: %s", name, line),
            )
    except CommandError as e:
        raise BuildError(
            f"hook {phase_dir}/{name} of element {element} exited {e.returncode}",
            f"rerun with --break after-error for a shell in the target; full output in {ctx.log_path}",
            tail=e.tail,
        ) from None
    finally:
        ctx.timings.add(phase, name, element, time.monotonic() - start)


def run_native(
    ctx: BuildContext, phase: str, name: str, element: str, fn: Callable[[BuildContext], None]
) -> None:
    """Time and log a native step like a hook, so the profile table lists it in its place."""
    start = time.monotonic()
    try:
        with step(f"{phase}.d/{name} ({element}, native)"):
            fn(ctx)
    except CommandError as e:
        raise BuildError(
            f"native step {phase}.d/{name} ({element}) failed: {e.argv[0]} exited {e.returncode}",
            e.hint
            or f"rerun with --break after-error for a shell in the target; full output in {ctx.log_path}",
            tail=e.tail,
        ) from None
    finally:
        ctx.timings.add(phase, name, element, time.monotonic() - start)


def run_in_target(
    ctx: BuildContext, argv: list[str], *, extra_env: Mapping[str, str] | None = None, label: str = ""
) -> None:
    """A native command inside the target (zypper for package-installs), output streamed to the log."""
    env = {**chroot_env(ctx), **(extra_env or {})}
    clog = logging.getLogger("sles_ipa_builder.hook.native")
    run.stream(
        chroot_argv(ctx.root, argv),
        env=env,
        on_line=lambda line: clog.debug("%s: %s", label or argv[0], line),
    )


def run_zypper(ctx: BuildContext, argv: list[str] | None = None) -> None:
    """zypper in the target while holding the host's shared zypper cache (/var/cache/zypp of every
    build). The media repositories of all builds have the same aliases, perhaps from different ISOs:
    unlocked, one build's refresh would replace the metadata another is installing from, and its
    clean-up of downloaded packages would delete the other's. So under the lock the build refreshes
    its repositories first whenever the metadata was last refreshed by someone else (a stamp in the
    cache names the last build to refresh); alone, it refreshes once. argv None: only that."""
    env = zypper.target_env_extra()
    cache = cache_dir("zypper")
    stamp = cache / ".refreshed-by"
    mine = ctx.state.setdefault("zypper_token", uuid.uuid4().hex)
    with locked(cache):
        if not stamp.is_file() or stamp.read_text() != mine:
            run_in_target(ctx, zypper.refresh_argv(ctx.state.get("refresh_aliases")), extra_env=env,
                          label="zypper")
            stamp.write_text(mine)
        if argv:
            run_in_target(ctx, argv, extra_env=env, label="zypper")


def shell(ctx: BuildContext, where: str, chroot: bool) -> None:
    """--break: an interactive shell in the target (or on the host before the root exists)."""
    if not sys.stdin.isatty():
        log.warning("break at %s: stdin is not a terminal, continuing without a shell", where)
        return
    log.warning("break at %s: starting a shell; exit it to resume the build", where)
    if chroot:
        argv = chroot_argv(ctx.root, [target_shell(ctx.root), "-i"])
        run.run(argv, env={**chroot_env(ctx), "PS1": f"({where}) # "}, check=False)
    else:
        run.run(["bash", "-i"], env={**host_env(ctx), "PS1": f"({where}) # "}, cwd=ctx.root, check=False)
    log.info("resuming after break at %s", where)


# --- native steps (DIB's generic elements, done in Python) ----------------------------------------
CVS_EXCLUDE = (
    "RCS",
    "SCCS",
    "CVS",
    "CVS.adm",
    "RCSLOG",
    "cvslog.*",
    "tags",
    "TAGS",
    ".make.state",
    ".nse_depinfo",
    "*~",
    "#*",
    ".#*",
    ",*",
    "_$*",
    "*$",
    "*.old",
    "*.bak",
    "*.BAK",
    "*.orig",
    "*.rej",
    ".del-*",
    "*.a",
    "*.olb",
    "*.o",
    "*.obj",
    "*.so",
    "*.exe",
    "*.Z",
    "*.elc",
    "*.ln",
    "core",
    ".svn",
    ".git",
    ".hg",
    ".bzr",
)


def in_root(root: Path, rel: str, *, follow_last: bool = False) -> Path:
    """root/rel resolved as the kernel would inside `chroot root`: every symlink, at any depth and in
    any link's own target, is followed within root (an absolute link restarts at root, `..` stops at
    root), so a target's `/lib -> /usr/lib` never leads to the host's /usr/lib. The last component is
    followed only with follow_last (mount points); a file about to be replaced must not be followed."""
    base = Path(os.path.realpath(root))
    todo = [p for p in reversed(rel.split("/")) if p not in ("", ".")]
    done: list[str] = []
    hops = 0
    while todo:
        part = todo.pop()
        if part == "..":
            del done[-1:]
            continue
        here = base.joinpath(*done, part)
        if here.is_symlink() and (todo or follow_last):
            hops += 1
            if hops > 40:
                raise BuildError(f"{rel}: too many levels of symbolic links in the target", "fix the target's links")
            target = os.readlink(here)
            if target.startswith("/"):
                done = []
            todo.extend(p for p in reversed(target.split("/")) if p not in ("", "."))
            continue
        done.append(part)
    return base.joinpath(*done)


def _replace(dst: Path) -> None:
    if dst.is_symlink() or (dst.exists() and not dst.is_dir()):
        dst.unlink()


def install_bin(ctx: BuildContext) -> None:
    """install-bin: `install -m 0755 -o root -g root <hooks>/bin/* /usr/local/bin`."""
    dest = in_root(ctx.root, "usr/local/bin/x").parent
    dest.mkdir(parents=True, exist_ok=True)
    for rel, (element, src) in sorted(ctx.tree.subtree("bin").items()):
        if "/" in rel or not src.is_file():
            continue
        out = dest / rel
        _replace(out)
        out.write_bytes(src.read_bytes())
        os.chown(out, 0, 0)
        os.chmod(out, 0o755)
        log.debug("install-bin: %s (%s)", out, element)


def _cvs_excluded(name: str) -> bool:
    import fnmatch

    return any(fnmatch.fnmatchcase(name, pat) for pat in CVS_EXCLUDE)


def install_static(ctx: BuildContext) -> None:
    """install-static: `rsync -lCr <hooks>/static/ /`: symlinks kept, files root-owned, modes kept."""
    entries = ctx.tree.subtree("static")
    for rel in sorted(entries, key=lambda r: (r.count("/"), r)):
        if any(_cvs_excluded(part) for part in rel.split("/")):
            continue
        element, src = entries[rel]
        dst = in_root(ctx.root, rel)
        for parent in reversed(Path(rel).parents[:-1]):
            d = in_root(ctx.root, str(parent), follow_last=True)
            if not d.is_dir():
                _replace(d)
                d.mkdir(mode=0o755)
        _replace(dst)
        if src.is_symlink():
            os.symlink(os.readlink(src), dst)
            os.lchown(dst, 0, 0)
        else:
            dst.write_bytes(src.read_bytes())
            os.chown(dst, 0, 0)
            os.chmod(dst, src.stat().st_mode & 0o7755)
        log.debug("install-static: /%s (%s)", rel, element)


def pkg_map_dir(ctx: BuildContext) -> None:
    """pkg-map's extra-data: each element's pkg-map into /usr/share/pkg-map/<element>."""
    from .packages import pkg_map_files

    dest = in_root(ctx.root, "usr/share/pkg-map/x").parent
    dest.mkdir(parents=True, exist_ok=True)
    for element, f in pkg_map_files(ctx.elements).items():
        (dest / element).write_bytes(f.read_bytes())


def source_repositories(ctx: BuildContext) -> None:
    """source-repositories: handed to the sources step the build registered in ctx.native_steps."""
    fn = ctx.native_steps.get("source-repositories")
    if fn is None:
        log.warning("no source fetcher registered: the source-repository-* entries are not fetched")
        return
    fn(ctx)


def resolv_conf_in(ctx: BuildContext) -> None:
    """DIB's create_base: move the target's resolv.conf aside and use the host's during the build."""
    if ctx.state.get("resolv"):
        return
    etc = ctx.root / "etc"
    if not etc.is_dir():
        return
    conf, orig = etc / "resolv.conf", etc / "resolv.conf.ORIG"
    had = os.path.lexists(conf)
    if had:
        os.rename(conf, orig)
    host = Path("/etc/resolv.conf")
    text = host.read_text() if host.is_file() else "nameserver 8.8.8.8\n"
    conf.write_text(text)
    ctx.state["resolv"] = {"had": had, "text": text}
    ctx.stack.callback(resolv_conf_out, ctx)


def resolv_conf_out(ctx: BuildContext) -> None:
    """DIB's finalise_base: keep a symlink/immutable resolv.conf a hook made, else restore the original."""
    info = ctx.state.pop("resolv", None)
    if not info:
        return
    conf, orig = ctx.root / "etc/resolv.conf", ctx.root / "etc/resolv.conf.ORIG"
    if not os.path.lexists(orig):
        # Nothing saved (there was no file, or a hook such as 98-prepare-resolve-conf already restored
        # it): drop only our own copy.
        if not info["had"] and not conf.is_symlink() and conf.is_file() and conf.read_text() == info["text"]:
            conf.unlink()
        return
    if conf.is_symlink() or _immutable(conf):
        orig.unlink()
        return
    if os.path.lexists(conf):
        conf.unlink()
    os.rename(orig, conf)


def _immutable(path: Path) -> bool:
    try:
        out = run.output(["lsattr", "-d", path], check=True)
    except (CommandError, FileNotFoundError):
        return False
    return len(out) > 4 and out[4] == "i"
