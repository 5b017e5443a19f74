"""Running hook scripts, as dib-run-parts does, on the host or inside the target.

Each script runs in its own shell that first sources every environment.d file of the merged tree
(under `set -eu -o pipefail`, as dib-run-parts), then execs the script, so environment.d exports
reach it and `$(dirname $0)` is its phase dir. Inside the target it gets an explicit environment
(run.target_env + the element variables + the build-time CA bundle), never the host's.
"""

from __future__ import annotations

import logging
import sys
import time

from .. import run
from ..errors import BuildError, CommandError
from ..log import step
from .paths import target_shell
from .stages import Phase
from .state import NativeFn, Plan, Runtime
from .target import IN_TARGET, chroot_env, host_env

log = logging.getLogger(__name__)
DIB_PHASES = frozenset(p.value for p in Phase)

RUNNER = 'set -eu -o pipefail; s=$1; shift; for f in "$@"; do . "$f"; done; exec "$s"'
DIE = 'function die { echo "ERROR: $*" >&2; exit 1; }\n'  # DIB's lib/die, for hooks that source $_LIB/die


def materialise(plan: Plan) -> None:
    """Write the merged hooks dir (TMP_HOOKS_PATH) and DIB's small _LIB once per build."""
    if not plan.hooks_dir.exists():
        plan.tree.materialise(plan.hooks_dir)
    lib = plan.build_dir / "lib"
    lib.mkdir(parents=True, exist_ok=True)
    (lib / "die").write_text(DIE)


def env_files(plan: Plan, base: str) -> list[str]:
    return [f"{base}/{rel}" for rel, _ in plan.tree.env_files()]


def script_argv(plan: Plan, phase_dir: str, name: str, chroot: bool) -> tuple[list[str], str | None]:
    """argv (and cwd) that runs one script the dib-run-parts way."""
    if chroot:
        base = IN_TARGET
        inner = [
            target_shell(plan.root),
            "-c",
            RUNNER,
            "sib-hook",
            f"{base}/{phase_dir}/{name}",
            *env_files(plan, base),
        ]
        return run.chroot_argv(plan.root, inner), None
    base = str(plan.hooks_dir)
    argv = ["bash", "-c", RUNNER, "sib-hook", f"{base}/{phase_dir}/{name}", *env_files(plan, base)]
    return argv, str(plan.workspace)


def line_level(line: str) -> int:
    """A hook's `warning: ...` lines (a package no repository provides, ...) reach the console; the
    rest of its output goes to the build log only."""
    return logging.WARNING if line.startswith("warning:") else logging.DEBUG


def run_script(plan: Plan, rt: Runtime, phase: str, name: str, element: str, chroot: bool) -> None:
    """Run one hook script; its output goes to the log; failure is a BuildError with the tail."""
    phase_dir = f"{phase}.d"
    argv, cwd = script_argv(plan, phase_dir, name, chroot)
    hlog = logging.getLogger(f"sles_ipa_builder.hook.{phase}")
    start = time.monotonic()
    env = chroot_env(plan, rt.env) if chroot else host_env(plan, rt.env)
    try:
        with step(f"{phase_dir}/{name} ({element})"):
            run.stream(
                argv,
                env=env,
                cwd=cwd,
                on_line=lambda line: hlog.log(line_level(line), "%s: %s", name, line),
            )
    except CommandError as e:
        raise BuildError(
            f"hook {phase_dir}/{name} of element {element} exited {e.returncode}",
            f"rerun with --break after-error for a shell in the target; full output in {plan.log_path}",
            tail=e.tail,
        ) from None
    finally:
        rt.timings.add(phase, name, element, time.monotonic() - start)


def run_native(
    plan: Plan, rt: Runtime, phase: str, name: str, element: str, fn: NativeFn
) -> None:
    """Time and log a native step like a hook, so the profile table lists it in its place."""
    start = time.monotonic()
    where = f"{phase}.d/{name}" if phase in DIB_PHASES else f"{phase}/{name}"
    try:
        with step(f"{where} ({element}, native)"):
            fn(plan, rt)
    except CommandError as e:
        raise BuildError(
            f"native step {where} ({element}) failed: {e.argv[0]} exited {e.returncode}",
            e.hint
            or f"rerun with --break after-error for a shell in the target; full output in {plan.log_path}",
            tail=e.tail,
        ) from None
    finally:
        rt.timings.add(phase, name, element, time.monotonic() - start)


def shell(plan: Plan, rt: Runtime, where: str, chroot: bool) -> None:
    """--break: an interactive shell in the target (or on the host before the root exists)."""
    if not sys.stdin.isatty():
        log.warning("break at %s: stdin is not a terminal, continuing without a shell", where)
        return
    log.warning("break at %s: starting a shell; exit it to resume the build", where)
    if chroot:
        argv = run.chroot_argv(plan.root, [target_shell(plan.root), "-i"])
        run.run(argv, env={**chroot_env(plan, rt.env), "PS1": f"({where}) # "}, check=False)
    else:
        run.run(["bash", "-i"], env={**host_env(plan, rt.env), "PS1": f"({where}) # "}, cwd=plan.root, check=False)
    log.info("resuming after break at %s", where)


