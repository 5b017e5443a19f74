"""One build, top to bottom: plan -> input checks -> workspace -> every step -> report -> boot test.

engine/plan.py makes the plan (the same one `summary` prints); engine/runner.py runs its steps. What
is left here is what wraps a run: checking the inputs the plan reads before any work, the workspace,
the build log and report, and the result on stdout.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from . import __version__
from . import log as logmod
from .cache import layers as checkpoints
from .cli.doctor import input_checks
from .cli.results import show
from .config.resolve import Config
from .delivery import bootfiles, publish
from .delivery.artifacts import Artifacts
from .engine import runner
from .engine.plan import make as make_plan
from .engine.state import Plan, Runtime
from .errors import InputError
from .inputs import image, media
from .steps import wheels
from .verify import boottest, qemu

log = logging.getLogger(__name__)


def check_inputs(plan: Plan, rt: Runtime) -> None:
    """Missing or wrong inputs the plan reads stop the build before any work, not after a minute of
    extraction. Both checks are cheap: the image's first KiB, the ISO's directory records. The opened
    media is kept, so the build does not index the ISO twice."""
    cfg = plan.cfg
    wanted = {"base image": plan.needs("10-sles-image"),
              "Media1 ISO": plan.needs("05-media-repositories") and not cfg.iso_optional}
    if plan.needs("05-media-repositories") and cfg.iso_optional:
        log.info("no Media1 ISO (%s): packages come from the --repo repositories only", cfg.iso_path)
    for c in input_checks(cfg):
        if wanted.get(c.name, True) and not c.ok:
            raise InputError(f"{c.name} not found: {c.detail}",
                             "put the files in images_dir (DIB_SLES_OFFLINE_TARGET_DIR) or give --base-image/--iso")
    if wanted["base image"]:
        image.sniff(image.find_image(cfg))
    if wanted["Media1 ISO"]:
        rt.media = media.open_media(cfg.iso_path)
        media.check_arch(rt.media, cfg.arch)
    if plan.needs("commit"):  # the outputs: the ESP and the ISO take the media's boot packages
        rt.boot_source = bootfiles.find(rt.media, cfg.arch, cfg.boot_media)
    if cfg.boot_test:  # a CPU the release cannot run on: refused now, not after the build
        qemu.require_cpu(cfg.qemu_cpu, boottest.accel_plan(cfg.accel, cfg.arch), cfg.arch, cfg.sles)


def build(cfg: Config) -> Artifacts | None:
    plan = make_plan(cfg)
    cfg = plan.cfg  # settled
    rt = Runtime.start(plan)
    check_inputs(plan, rt)
    wheels.check_offline(plan)
    runner.prepare_workspace(plan)
    logmod.attach_file(plan.log_path)
    checkpoints.prepare(plan, rt)  # after the log file: it says which layers hit, and why the others missed
    rt.manifest.update(builder=__version__, elements=[e.name for e in plan.elements],
                       settings=cfg.shown_settings())
    try:
        with rt.stack:
            runner.run_plan(plan, rt)
    finally:
        logmod.console.print(rt.timings.table())
        logmod.console.print(rt.timings.steps_table())
        write_report(plan, rt)
        runner.finish_workspace(plan)  # failed or not: the tree is gigabytes (--keep-workspace keeps it)
    if rt.artifacts is None:
        log.info("no outputs: a sles-ipa-ramdisk-base of your own replaced the builder's, and with it its outputs")
        return None
    report_artifacts(rt.artifacts)
    if cfg.publish:
        with logmod.step(f"publish to {cfg.publish}"):
            done = publish.publish([publish.Platform(plan.outputs, cfg.name, cfg.arch)], cfg.publish,
                                   insecure=cfg.publish_insecure, replace=cfg.publish_replace)
        show(publish.result_line(done))
    if cfg.boot_test:
        boot(cfg, rt.artifacts)
    return rt.artifacts


def write_report(plan: Plan, rt: Runtime) -> None:
    if plan.cfg.report:
        doc = {**rt.manifest, "timings": rt.timings.as_dict()}
        Path(plan.cfg.report).write_text(json.dumps(doc, indent=2, default=str) + "\n")


def report_artifacts(arts: Artifacts) -> None:
    """The build's result, on stdout: one line per artifact a user hands on."""
    show(*(f"{path}  {path.stat().st_size / 2**20:.1f} MiB" for path in (arts.kernel, arts.initramfs, arts.tar)))


def boot(cfg: Config, arts: Artifacts) -> None:
    with logmod.step("boot test"):
        result = boottest.boot_test(arts.kernel, arts.initramfs, timeout=cfg.boot_timeout,
                                    memory_mb=cfg.boot_memory, accel=cfg.accel, arch=cfg.arch,
                                    cpu=cfg.qemu_cpu, release=cfg.sles,
                                    firmware=boottest.release_firmware(cfg.sles))
    show(result.summary())
