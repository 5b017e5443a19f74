"""One build, top to bottom: plan -> input checks -> workspace -> every step -> report -> boot test.

plan.py makes the list of steps (the same one `summary` prints); phases.py runs it. What is left
here is what wraps a run: checking the inputs the plan reads before any work, the workspace, the
build log and report, and the result on stdout.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from . import __version__, boottest, image, media, phases, plan, publish, wheels
from . import log as logmod
from .config import Config
from .context import BuildContext
from .doctor import input_checks
from .errors import InputError
from .outputs import Artifacts
from .results import show

log = logging.getLogger(__name__)


def check_inputs(ctx: BuildContext) -> None:
    """Missing or wrong inputs the plan reads stop the build before any work, not after a minute of
    extraction. Both checks are cheap: the image's first KiB, the ISO's directory records. The opened
    media is kept, so the build does not index the ISO twice."""
    cfg = ctx.cfg
    wanted = {"base image": plan.needs(ctx, "10-sles-image"), "Media1 ISO": plan.needs(ctx, "05-media-repositories")}
    for c in input_checks(cfg):
        if wanted.get(c.name, True) and not c.ok:
            raise InputError(f"{c.name} not found: {c.detail}",
                             "put the files in images_dir (DIB_SLES_OFFLINE_TARGET_DIR) or give --base-image/--iso")
    if wanted["base image"]:
        image.sniff(image.find_image(cfg))
    if wanted["Media1 ISO"]:
        ctx.media = media.open_media(cfg.iso_path)


def build(cfg: Config) -> Artifacts | None:
    ctx = plan.make(cfg)
    check_inputs(ctx)
    wheels.check_offline(ctx)
    phases.prepare_workspace(ctx)
    logmod.attach_file(ctx.log_path)
    ctx.manifest.update(builder=__version__, elements=[e.name for e in ctx.elements],
                        settings=cfg.shown_settings())
    try:
        with ctx.stack:
            phases.run_plan(ctx)
    finally:
        logmod.console.print(ctx.timings.table())
        logmod.console.print(ctx.timings.steps_table())
        write_report(ctx)
        phases.finish_workspace(ctx)  # failed or not: the tree is gigabytes (--keep-workspace keeps it)
    if ctx.artifacts is None:
        log.info("no outputs: a sles-ipa-ramdisk-base of your own replaced the builder's, and with it its outputs")
        return None
    report_artifacts(ctx.artifacts)
    if cfg.publish:
        with logmod.step(f"publish to {cfg.publish}"):
            done = publish.publish(ctx.outputs, cfg.name, cfg.arch.suse, cfg.publish, insecure=cfg.publish_insecure)
        show(publish.result_line(done))
    if cfg.boot_test:
        boot(cfg, ctx.artifacts)
    return ctx.artifacts


def write_report(ctx: BuildContext) -> None:
    if ctx.cfg.report:
        doc = {**ctx.manifest, "timings": ctx.timings.as_dict()}
        Path(ctx.cfg.report).write_text(json.dumps(doc, indent=2, default=str) + "\n")


def report_artifacts(arts: Artifacts) -> None:
    """The build's result, on stdout: one line per artifact a user hands on."""
    show(*(f"{path}  {path.stat().st_size / 2**20:.1f} MiB" for path in (arts.kernel, arts.initramfs, arts.tar)))


def boot(cfg: Config, arts: Artifacts) -> None:
    with logmod.step("boot test"):
        result = boottest.boot_test(arts.kernel, arts.initramfs, timeout=cfg.boot_timeout,
                                    memory_mb=cfg.boot_memory, accel=cfg.accel)
    show(result.summary())
