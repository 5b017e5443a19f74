"""The target tree while hooks run: its mounts, commands run in it, zypper under the shared cache lock,
and the host's resolv.conf lent to it for the build. (Paths as seen inside it: paths.py.)"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import time
from collections.abc import Iterator, Mapping
from pathlib import Path

from .. import run
from ..cache.store import cache_dir, locked
from ..errors import CommandError
from ..inputs import zypper
from . import namespace
from .paths import in_root
from .state import TARGET_CA, Plan, ResolvSaved, Runtime

log = logging.getLogger(__name__)

IN_TARGET = "/tmp/in_target.d"  # the merged hooks dir, bound read-only while chroot phases run


def chroot_env(plan: Plan, env: Mapping[str, str]) -> dict[str, str]:
    """Commands in the target: a clean environment with the hook variables `env` (the runtime's) and
    the build-time CA bundle."""
    return run.target_env({**env, **plan.target_ca_env()})


def host_env(plan: Plan, env: Mapping[str, str]) -> dict[str, str]:
    """Host hooks: a clean environment too, with the host's PATH (plus sbin dirs, as DIB)."""
    path = os.environ.get("PATH", "/usr/bin:/bin") + ":/sbin:/usr/sbin:/usr/local/sbin"
    env = run.target_env({**env, **plan.host_ca_env()})
    env.update(PATH=path, HOME=os.environ.get("HOME", "/root"))
    return env


@contextlib.contextmanager
def target_mounts(plan: Plan) -> Iterator[contextlib.ExitStack]:
    """proc, sys (ro), dev, dev/pts, extra binds, hooks (ro) and the CA bundle, undone on exit."""
    root = plan.root

    def at(rel: str) -> Path:  # mount(8) follows symlinks on the host: resolve them inside the target
        return in_root(root, rel, follow_last=True)

    with contextlib.ExitStack() as stack:
        namespace.proc(stack, at("proc"))
        namespace.sysfs(stack, at("sys"))
        namespace.dev(stack, at("dev"))
        namespace.devpts(stack, at("dev/pts"))
        # host /dev/shm is a mount of its own, so the bound /dev has a bare devtmpfs dir there
        namespace.tmpfs(stack, at("dev/shm"))
        for host_dir, inside in plan.target_mounts:
            host_dir.mkdir(parents=True, exist_ok=True)
            namespace.bind(stack, host_dir, at(inside))
        hooks = at(IN_TARGET)
        created = not hooks.exists()
        hooks.mkdir(parents=True, exist_ok=True)
        if created:
            stack.callback(_rmdir, hooks)
        namespace.bind(stack, plan.hooks_dir, hooks, ro=True)
        if plan.ca_bundle is not None:
            namespace.bind_file(stack, plan.ca_bundle, at(TARGET_CA))
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


def run_in_target(
    plan: Plan, rt: Runtime, argv: list[str], *, extra_env: Mapping[str, str] | None = None, label: str = ""
) -> None:
    """A native command inside the target (zypper for package-installs), output streamed to the log."""
    env = {**chroot_env(plan, rt.env), **(extra_env or {})}
    clog = logging.getLogger("sles_ipa_builder.hook.native")
    run.stream(
        run.chroot_argv(plan.root, argv),
        env=env,
        on_line=lambda line: clog.debug("%s: %s", label or argv[0], line),
    )


def run_zypper(plan: Plan, rt: Runtime, argv: list[str] | None = None) -> None:
    """zypper in the target while holding the host's shared zypper cache (/var/cache/zypp of every
    build). The media repositories of all builds have the same aliases, perhaps from different ISOs:
    unlocked, one build's refresh would replace the metadata another is installing from, and its
    clean-up of downloaded packages would delete the other's. So under the lock the build refreshes
    its repositories first whenever the metadata was last refreshed by someone else (a stamp in the
    cache names the last build to refresh); alone, it refreshes once. argv None: only that."""
    env = zypper.target_env_extra()
    cache = cache_dir("zypper")
    stamp = cache / ".refreshed-by"
    mine = rt.zypper_token
    with locked(cache):
        if not stamp.is_file() or stamp.read_text() != mine:
            _forget_installed(cache)
            run_in_target(plan, rt, zypper.refresh_argv(rt.refresh_aliases), extra_env=env,
                          label="zypper")
            stamp.write_text(mine)
        if argv:
            _forget_installed(cache)
            run_in_target(plan, rt, argv, extra_env=env, label="zypper")


def _forget_installed(cache: Path) -> None:
    """zypper's cache of the target's rpm database (solv/@System) belongs to one target, but the cache
    is shared. libsolv takes the cached one as current when the database file's (st_ino, st_dev)
    match, and under the root tree's overlayfs every build's database has the same inode number, often
    on the same device number: one build would read another's packages (or fail: "Failed to cache
    rpm database"). So it goes before every zypper call; rebuilding it reads the target's headers
    (well under a second)."""
    shutil.rmtree(cache / "solv" / "@System", ignore_errors=True)


def resolv_conf_in(plan: Plan, rt: Runtime) -> None:
    """DIB's create_base: move the target's resolv.conf aside and use the host's during the build."""
    if rt.resolv is not None:
        return
    etc = plan.root / "etc"
    if not etc.is_dir():
        return
    conf, orig = etc / "resolv.conf", etc / "resolv.conf.ORIG"
    had = os.path.lexists(conf)
    if had:
        os.rename(conf, orig)
    host = Path("/etc/resolv.conf")
    text = host.read_text() if host.is_file() else "nameserver 8.8.8.8\n"
    conf.write_text(text)
    rt.resolv = ResolvSaved(had, text)
    rt.stack.callback(resolv_conf_out, plan, rt)


def resolv_conf_out(plan: Plan, rt: Runtime) -> None:
    """DIB's finalise_base: keep a symlink/immutable resolv.conf a hook made, else restore the original."""
    info, rt.resolv = rt.resolv, None
    if info is None:
        return
    conf, orig = plan.root / "etc/resolv.conf", plan.root / "etc/resolv.conf.ORIG"
    if not os.path.lexists(orig):
        # Nothing saved (there was no file, or a hook such as 98-prepare-resolve-conf already restored
        # it): drop only our own copy.
        if not info.had and not conf.is_symlink() and conf.is_file() and conf.read_text() == info.text:
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
