"""Running the plan: DIB's phases in order (chroot phases inside the target's mounts, break points
around each), then the outputs; and the workspace the build runs in.

engine/plan.py decides what runs; this module only runs it, so `summary` and `build` cannot disagree.
"""

from __future__ import annotations

import contextlib
import logging
import os
from itertools import groupby
from pathlib import Path

from .. import run, space
from ..cache import layers as checkpoints
from ..cache.store import cache_root, disk_usage
from ..errors import BuildError, ConfigError
from ..log import step
from . import namespace
from . import scripts as hooks
from .stages import Final, Phase, Stage
from .state import Plan, Runtime, Step
from .target import resolv_conf_in, resolv_conf_out, target_mounts

log = logging.getLogger(__name__)


def _break(plan: Plan, rt: Runtime, where: str, mounted: bool) -> None:
    if where not in plan.cfg.break_points:
        return
    if mounted:
        hooks.shell(plan, rt, where, chroot=True)
    elif os.path.lexists(plan.root / "bin/sh"):
        with target_mounts(plan):
            hooks.shell(plan, rt, where, chroot=True)
    else:
        hooks.shell(plan, rt, where, chroot=False)


def _run_steps(plan: Plan, rt: Runtime, stage: Stage, todo: list[Step]) -> None:
    for s in todo:
        if s.run is not None:
            hooks.run_native(plan, rt, stage.value, s.name, s.element, s.run)
        else:
            hooks.run_script(plan, rt, stage.value, s.name, s.element, stage.chroot)
        checkpoints.after_step(plan, rt, s)


def run_phase(plan: Plan, rt: Runtime, phase: Phase, todo: list[Step]) -> None:
    todo = [s for s in todo if not checkpoints.skipped(rt, s)]  # in the cache layer the build resumes from
    wanted = {f"before-{phase.value}", f"after-{phase.value}"} & plan.cfg.break_points
    if not todo and not wanted:
        log.debug("phase %s: nothing to run", phase.value)
        return
    with step(f"phase {phase.value} ({phase.where})", rt.timings), contextlib.ExitStack() as stack:
        if phase.chroot:
            stack.enter_context(target_mounts(plan))
        _break(plan, rt, f"before-{phase.value}", phase.chroot)
        try:
            with space.writing(plan.build_dir, f"the workspace (phase {phase.value})",
                               freed=lambda: disk_usage(plan.build_dir)):  # the tree goes after a failure
                _run_steps(plan, rt, phase, todo)
        except BuildError:
            _break(plan, rt, "after-error", phase.chroot)
            raise
        _break(plan, rt, f"after-{phase.value}", phase.chroot)


def run_plan(plan: Plan, rt: Runtime) -> None:
    """Every step of the plan, in order. resolv.conf is the host's from extra-data to cleanup."""
    hooks.materialise(plan)
    plan.root.mkdir(parents=True, exist_ok=True)
    by_stage = {stage: list(steps) for stage, steps in groupby(plan.steps, key=lambda s: s.stage)}
    for phase in Phase:
        if phase is not Phase.ROOT:
            resolv_conf_in(plan, rt)
        run_phase(plan, rt, phase, by_stage.get(phase, []))
        if phase is Phase.ROOT:
            _check_root(plan)
        if phase is Phase.CLEANUP:
            resolv_conf_out(plan, rt)
    checkpoints.after_phases(plan, rt)
    for final in Final:
        if by_stage.get(final):
            with step(final.value, rt.timings):
                _run_steps(plan, rt, final, by_stage[final])


def _check_root(plan: Plan) -> None:
    left = {p.name for p in plan.root.iterdir()} - {"lost+found", "tmp"}
    if not left:
        raise BuildError(
            "Failed to deploy the root element: the root tree is empty after root.d",
            "give --base-tree, or an operating-system element whose root.d fills $TARGET_ROOT",
        )


# --- workspace -----------------------------------------------------------------------------------
def _refuse(path: Path, why: str) -> None:
    raise ConfigError(
        f"refusing to empty {path}: {why}", "set IPA_BUILD_WORKSPACE/--workspace to a build directory"
    )


def prepare_workspace(plan: Plan) -> None:
    """Empty the build dir, as the seed empties its workspace; never the outputs or the caches."""
    bd = Path(os.path.abspath(plan.build_dir))
    home = Path(os.path.expanduser("~")).resolve()
    real = bd.resolve()
    out = Path(os.path.abspath(plan.outputs)).resolve()
    if real == Path("/") or len(real.parts) < 2:
        _refuse(bd, "it is /")
    if real == home or real in home.parents:
        _refuse(bd, "it is your home directory or above it")
    if real == out or real in out.parents:
        _refuse(bd, f"the output directory {out} is inside it")
    if real == cache_root() or real in cache_root().parents:
        _refuse(bd, "the caches are inside it")
    _remove(bd)
    bd.mkdir(parents=True)


def _remove(path: Path) -> None:
    if not os.path.lexists(path):
        return
    namespace.umount_all_under(path)
    namespace.kill_rooted_in(path)
    run.run(["rm", "-rf", "--one-file-system", path])


def finish_workspace(plan: Plan) -> None:
    """Remove the build dir, after success or failure, unless --keep-workspace."""
    if plan.cfg.keep_workspace:
        log.info("build tree kept in %s", plan.build_dir)
        return
    _remove(plan.build_dir)
