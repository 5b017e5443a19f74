"""Running the plan: DIB's phases in order (chroot phases inside the target's mounts, break points
around each), then the outputs; and the workspace the build runs in.

plan.py decides what runs; this module only runs it, so `summary` and `build` cannot disagree.
"""

from __future__ import annotations

import contextlib
import logging
import os
from itertools import groupby
from pathlib import Path

from .. import run
from ..cache import layers as checkpoints
from ..cache.store import cache_root
from ..errors import BuildError, ConfigError
from ..log import step
from . import namespace
from . import scripts as hooks
from .runtime import BuildContext
from .stages import Final, Phase, Stage, Step
from .target import resolv_conf_in, resolv_conf_out, target_mounts

log = logging.getLogger(__name__)


def _break(ctx: BuildContext, where: str, mounted: bool) -> None:
    if where not in ctx.breakpoints:
        return
    if mounted:
        hooks.shell(ctx, where, chroot=True)
    elif os.path.lexists(ctx.root / "bin/sh"):
        with target_mounts(ctx):
            hooks.shell(ctx, where, chroot=True)
    else:
        hooks.shell(ctx, where, chroot=False)


def _run_steps(ctx: BuildContext, stage: Stage, todo: list[Step]) -> None:
    for s in todo:
        if s.run is not None:
            hooks.run_native(ctx, stage.value, s.name, s.element, s.run)
        else:
            hooks.run_script(ctx, stage.value, s.name, s.element, stage.chroot)
        checkpoints.after_step(ctx, s)


def run_phase(ctx: BuildContext, phase: Phase, todo: list[Step]) -> None:
    todo = [s for s in todo if not checkpoints.skipped(ctx, s)]  # in the cache layer the build resumes from
    wanted = {f"before-{phase.value}", f"after-{phase.value}"} & ctx.breakpoints
    if not todo and not wanted:
        log.debug("phase %s: nothing to run", phase.value)
        return
    with step(f"phase {phase.value} ({phase.where})", ctx.timings), contextlib.ExitStack() as stack:
        if phase.chroot:
            stack.enter_context(target_mounts(ctx))
        _break(ctx, f"before-{phase.value}", phase.chroot)
        try:
            _run_steps(ctx, phase, todo)
        except BuildError:
            _break(ctx, "after-error", phase.chroot)
            raise
        _break(ctx, f"after-{phase.value}", phase.chroot)


def run_plan(ctx: BuildContext) -> None:
    """Every step of the plan, in order. resolv.conf is the host's from extra-data to cleanup."""
    hooks.materialise(ctx)
    ctx.root.mkdir(parents=True, exist_ok=True)
    by_stage = {stage: list(steps) for stage, steps in groupby(ctx.steps, key=lambda s: s.stage)}
    for phase in Phase:
        if phase is not Phase.ROOT:
            resolv_conf_in(ctx)
        run_phase(ctx, phase, by_stage.get(phase, []))
        if phase is Phase.ROOT:
            _check_root(ctx)
        if phase is Phase.CLEANUP:
            resolv_conf_out(ctx)
    checkpoints.after_phases(ctx)
    for final in Final:
        if by_stage.get(final):
            with step(final.value, ctx.timings):
                _run_steps(ctx, final, by_stage[final])


def _check_root(ctx: BuildContext) -> None:
    left = {p.name for p in ctx.root.iterdir()} - {"lost+found", "tmp"}
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


def prepare_workspace(ctx: BuildContext) -> None:
    """Empty the build dir, as the seed empties its workspace; never the outputs or the caches."""
    bd = Path(os.path.abspath(ctx.build_dir))
    home = Path(os.path.expanduser("~")).resolve()
    real = bd.resolve()
    out = Path(os.path.abspath(ctx.outputs)).resolve()
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


def finish_workspace(ctx: BuildContext) -> None:
    """Remove the build dir, after success or failure, unless --keep-workspace."""
    if ctx.cfg.keep_workspace:
        log.info("build tree kept in %s", ctx.build_dir)
        return
    _remove(ctx.build_dir)
