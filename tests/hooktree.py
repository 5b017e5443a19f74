"""Running built-in hooks on a small root tree, and reading back what they changed.

In the spirit of osbuild's stage diff tests: a base root is the lower layer of an overlay, an
element's hooks run (chroot phases inside the merged tree, host phases against it) and the upper
layer is exactly what the element changed. Tests then check that diff: files, modes, units enabled
(symlinks in *.wants), and secrets absent.

The base root is made from this host in seconds (`host_tree`): its /usr hard-linked, its /etc
copied, and stand-ins for what a SLES root has and a build host may lack (an sshd unit and config,
rpm's database in /usr/lib/sysimage). The hooks run with real tools (bash, systemctl, useradd,
python3 -m venv, zypper), so no test media is needed; package installs and clones are the
end-to-end test's job. SIB_TEST_ROOT_TREE=DIR runs them on a root tree of your own instead (the test
media's root, for example).

The engine runs the hooks (phases.run_phase: its mounts, environment, install-static, script order)
for just the elements under test, in a child process inside the engine's private namespace, with the
overlay as TARGET_ROOT; each element is tested alone, in seconds.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import stat
import sys
from collections.abc import Iterable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

from sles_ipa_builder import run
from sles_ipa_builder.config import resolve as config
from sles_ipa_builder.engine import elements, hookenv, namespace, plan
from sles_ipa_builder.engine import runner as phases
from sles_ipa_builder.engine import scripts as hooks
from sles_ipa_builder.engine.stages import Phase
from sles_ipa_builder.engine.state import Plan, Runtime
from sles_ipa_builder.errors import BuildError

HOOKS = elements.BUILTIN_DIR
REPO = HOOKS.parent
ORDER = ("extra-data.d", "pre-install.d", "install.d", "post-install.d", "post-root.d", "pre-finalise.d",
         "finalise.d", "cleanup.d")
WANTS = "etc/systemd/system/multi-user.target.wants"

# What the hooks expect of a SLES root that a build host need not have. No sshd binary: the hardening
# hook then skips its `sshd -t` check (the end-to-end build runs it with a real sshd).
SSH_UNIT = """\
# A stand-in written by the hook tests (Debian's ssh.service, shortened)
[Unit]
Description=OpenBSD Secure Shell server
After=network.target

[Service]
ExecStartPre=/usr/sbin/sshd -t
ExecStart=/usr/sbin/sshd -D

[Install]
WantedBy=multi-user.target
Alias=sshd.service
"""
SSHD_CONFIG = """\
# A stand-in written by the hook tests (Debian's sshd_config, shortened)
Include /etc/ssh/sshd_config.d/*.conf

KbdInteractiveAuthentication no
UsePAM yes
Subsystem sftp /usr/lib/openssh/sftp-server
"""
# SLE 15 keeps the rpm database here, and /var/lib/rpm points to it (Debian's rpm would use ~/.rpmdb).
RPM_MACROS = "# A stand-in written by the hook tests\n%_dbpath /usr/lib/sysimage/rpm\n"
# Not linked into the small tree: docs, manuals, locales, icons, headers, kernel modules, and the large
# SDKs some build hosts carry.
SKIP_USR = {"include", "src", "share/doc", "share/man", "share/info", "share/locale", "share/icons",
            "lib/modules", "lib/google-cloud-sdk", "lib/jvm", "lib/node_modules"}
EMPTY_DIRS = {"dev": 0o755, "proc": 0o555, "sys": 0o555, "run": 0o755, "tmp": 0o1777, "root": 0o700,
              "home": 0o755, "opt": 0o755, "srv": 0o755, "mnt": 0o755, "boot": 0o755,
              "var/lib/dbus": 0o755, "usr/lib/sysimage/rpm": 0o755, "var/log": 0o755, "var/tmp": 0o1777,
              "var/cache": 0o755}


def host_tree(dest: Path) -> Path:
    """A root tree from this host: /usr hard-linked (dest must be on /usr's filesystem), /etc copied,
    the merged-usr links, empty var/run/tmp, and the stand-ins. The tree is only ever the lower
    layer of an overlay, so no hook writes through a link into the host's files."""
    dest.mkdir(parents=True)
    _link_usr(dest / "usr")
    run.run(["cp", "-a", "/etc", dest / "etc"])
    for name in ("bin", "sbin", "lib", "lib64", "lib32", "libx32"):
        if os.path.islink(f"/{name}"):
            os.symlink(os.readlink(f"/{name}"), dest / name)
    for rel, mode in EMPTY_DIRS.items():
        (dest / rel).mkdir(parents=True, exist_ok=True)
        os.chmod(dest / rel, mode)
    os.symlink("/run", dest / "var/run")
    os.symlink("../../usr/lib/sysimage/rpm", dest / "var/lib/rpm")
    (dest / "etc/rpm").mkdir(exist_ok=True)
    (dest / "etc/rpm/macros.sysimage").write_text(RPM_MACROS)
    ssh = dest / "etc/ssh"
    (ssh / "sshd_config.d").mkdir(parents=True, exist_ok=True)
    (ssh / "sshd_config").write_text(SSHD_CONFIG)
    units = dest / "usr/lib/systemd/system"
    units.mkdir(parents=True, exist_ok=True)
    (units / "ssh.service").write_text(SSH_UNIT)
    return dest


def _link_usr(dest: Path) -> None:
    """Hard-link /usr into dest, less what no hook reads (a third of the files on this machine kind)."""
    dest.mkdir()
    for top in sorted(os.listdir("/usr")):
        src = Path("/usr", top)
        if top in SKIP_USR:
            continue
        if top not in ("lib", "share") or src.is_symlink():
            run.run(["cp", "-al", src, dest / top])
            continue
        (dest / top).mkdir()
        shutil.copystat(src, dest / top)
        children = [src / c for c in sorted(os.listdir(src)) if f"{top}/{c}" not in SKIP_USR]
        if children:
            run.run(["cp", "-al", *children, dest / top])


def tree_place(tmp: Path) -> Path | None:
    """A directory for host_tree: tmp when it is on /usr's filesystem, else /var/tmp if that is; None."""
    usr = os.stat("/usr").st_dev
    for place in (tmp, Path("/var/tmp")):
        if os.stat(place).st_dev == usr:
            return place
    return None


def remove_tree(tree: Path) -> None:
    shutil.rmtree(tree, ignore_errors=True)


class Target:
    """An overlay over the base root: `upper` holds what the hooks changed (whiteouts = deletions)."""

    def __init__(self, tmp: Path, lower: Path) -> None:
        self.lower = lower
        self.build = tmp / "build"
        self.root = self.build / "root"  # the merged view while hooks run (TARGET_ROOT)
        self.upper = tmp / "upper"
        self.work = tmp / "work"
        self.hooks = self.build / "hooks"  # TMP_HOOKS_PATH
        for d in (self.root, self.upper, self.work):
            d.mkdir(parents=True)
        self.output = ""

    # --- the tree after the run ------------------------------------------------------------------
    def path(self, rel: str) -> Path:
        """The merged view of one path: upper if changed there, else lower."""
        up = self.upper / rel
        return up if os.path.lexists(up) else self.lower / rel

    def exists(self, rel: str) -> bool:
        up = self.upper / rel
        if os.path.lexists(up):
            return not _whiteout(up)
        return os.path.lexists(self.lower / rel)

    def read(self, rel: str) -> str:
        return self.path(rel).read_text()

    def mode(self, rel: str) -> int:
        return stat.S_IMODE(self.path(rel).lstat().st_mode)

    def changed(self) -> dict[str, str]:
        """relpath -> 'deleted' / 'dir' / 'link' / 'file' for everything in the upper layer."""
        out: dict[str, str] = {}
        for dirpath, dirnames, filenames in os.walk(self.upper):
            for name in dirnames + filenames:
                p = Path(dirpath) / name
                rel = str(p.relative_to(self.upper))
                if _whiteout(p):
                    out[rel] = "deleted"
                elif p.is_symlink():
                    out[rel] = "link"
                elif p.is_dir():
                    out[rel] = "dir"
                else:
                    out[rel] = "file"
        return out

    def enabled(self, unit: str, wants: str = WANTS) -> bool:
        """The unit's symlink is in the *.wants dir of the tree after the run (made now or before)."""
        rel = f"{wants}/{unit}"
        return self.exists(rel) and self.path(rel).is_symlink()

    def files_containing(self, needle: str) -> list[str]:
        hits = []
        for rel, kind in self.changed().items():
            if kind == "file" and needle.encode() in (self.upper / rel).read_bytes():
                hits.append(rel)
        return hits

    def sshd_unit(self) -> tuple[str, str]:
        """(unit name, path) of the base root's sshd unit (sshd.service on SUSE, ssh.service on Debian)."""
        for unit in ("sshd.service", "ssh.service"):
            for d in ("usr/lib/systemd/system", "lib/systemd/system"):
                p = self.lower / d / unit
                if p.is_file() and not p.is_symlink():
                    return unit, f"{d}/{unit}"
        raise AssertionError("the base root has no sshd unit")

    # --- running hooks ---------------------------------------------------------------------------
    def run(
        self,
        names: Iterable[str],
        phases: Iterable[str] = ORDER,
        env: Mapping[str, str] | None = None,
        setup: str = "",
        check: bool = True,
        resolve: bool = False,
    ) -> run.Result:
        """Run the named elements' hooks of `phases` (e.g. "install.d") with the engine.

        `setup` is shell run first, on the host, with $ROOT = the merged tree. Everything happens in
        a child process that enters the engine's private namespace, so no mount outlives it.
        """
        spec = {
            "lower": str(self.lower), "upper": str(self.upper), "work": str(self.work),
            "build": str(self.build), "names": list(names), "env": dict(env or {}),
            "phases": [p.removesuffix(".d") for p in phases], "setup": setup, "resolve": resolve,
        }
        code = "import runpy, sys; runpy.run_path(sys.argv[1])['_child'](sys.argv[2])"
        result = run.run([sys.executable, "-c", code, __file__, json.dumps(spec)], capture=True, check=False,
                         env={**os.environ, "PYTHONPATH": str(REPO)})
        self.output = result.stdout + result.stderr
        if check:
            assert result.returncode == 0, self.output[-4000:]
        return result


def _context(spec: Mapping[str, Any]) -> tuple[Plan, Runtime]:
    """A plan for just these elements (no operating-system element needed), like plan.make."""
    build = Path(spec["build"])
    extra: dict[str, str] = spec["env"]
    environ = {"HOME": str(build.parent), "DIB_SLES_SERVICE_PACK": "SP5", **extra}
    cfg = config.resolve(cli={"workspace": str(build.parent), "output": str(build.parent / "out"), "ca_bundle": ""},
                         environ=environ)
    assert cfg.build_dir == build
    if spec.get("resolve"):  # a whole element list, resolved as a build resolves it
        els = elements.resolve(spec["names"], [HOOKS])
    else:
        els = [elements.Element(n, HOOKS / n, None) for n in spec["names"]]
    env = hookenv.hook_env(cfg, [HOOKS], els)
    # what the builder does not own (SOURCE_DATE_EPOCH, PIP_NO_INDEX...) goes straight to the hooks
    env.update({k: v for k, v in extra.items() if k not in env or k.startswith("DIB_DEBUG")})
    p = Plan(cfg=cfg, search_path=[HOOKS], elements=els, tree=elements.merge(els, env), env=env)
    phase_env = plan.sourced_env(p)
    elements.apply_install_types(p.tree, phase_env)
    p = replace(p, phase_env=phase_env)
    # no package installs, no clones, and none of the builder's own steps (image, media, wheelhouse):
    # the hooks and DIB's generic elements only. The rest is the end-to-end test's job.
    p = replace(p, steps=[s for s in plan.steps(p, []) if s.run is None or s.element in elements.NATIVE])
    return p, Runtime.start(p)


def _child(raw: str) -> None:
    """In a fresh process: private namespace, overlay, setup, then the engine runs the phases."""
    # hook output (logged at debug by the engine) and step lines; not our own commands' argv
    logging.basicConfig(level=logging.INFO, stream=sys.stdout, format="%(message)s")
    logging.getLogger("sles_ipa_builder.hook").setLevel(logging.DEBUG)
    spec = json.loads(raw)
    namespace.enter()
    the_plan, rt = _context(spec)
    the_plan.workspace.mkdir(parents=True, exist_ok=True)  # host hooks run there
    run.run(["mount", "-t", "overlay", "overlay", "-o",
             f"lowerdir={spec['lower']},upperdir={spec['upper']},workdir={spec['work']}", the_plan.root])
    if spec["setup"]:
        run.run(["bash", "-euc", spec["setup"]], env={**os.environ, "ROOT": str(the_plan.root)})
    hooks.materialise(the_plan)
    try:
        for p in spec["phases"]:
            phases.run_phase(the_plan, rt, Phase(p), [s for s in the_plan.steps if s.stage is Phase(p)])
    except BuildError as e:
        print("\n".join(e.tail))
        print(f"error: {e.message}")
        sys.exit(1)


def _whiteout(p: Path) -> bool:
    st = p.lstat()
    return stat.S_ISCHR(st.st_mode) and st.st_rdev == 0

