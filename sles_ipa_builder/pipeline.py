"""One build, top to bottom: plan -> input checks -> workspace -> every step -> report -> boot test.

plan.py makes the list of steps (the same one `summary` prints); phases.py runs it. What is left
here is what wraps a run: checking the inputs the plan reads before any work, the workspace, the
build log and report, and the result on stdout.
"""

from __future__ import annotations

import json
import logging
from dataclasses import replace
from pathlib import Path

from . import __version__
from . import log as logmod
from .cache import layers as checkpoints
from .cache.store import cache_dir
from .cli.doctor import input_checks
from .cli.results import show
from .config import servicepack
from .config.resolve import Config
from .delivery import publish
from .delivery.artifacts import Artifacts
from .engine import plan
from .engine import runner as phases
from .engine.runtime import BuildContext
from .errors import InputError
from .inputs import image, media, repos
from .steps import wheels
from .verify import boottest

log = logging.getLogger(__name__)


def check_inputs(ctx: BuildContext) -> None:
    """Missing or wrong inputs the plan reads stop the build before any work, not after a minute of
    extraction. Both checks are cheap: the image's first KiB, the ISO's directory records. The opened
    media is kept, so the build does not index the ISO twice."""
    cfg = ctx.cfg
    wanted = {"base image": plan.needs(ctx, "10-sles-image"),
              "Media1 ISO": plan.needs(ctx, "05-media-repositories") and not cfg.iso_optional}
    if plan.needs(ctx, "05-media-repositories") and cfg.iso_optional:
        log.info("no Media1 ISO (%s): packages come from the --repo repositories only", cfg.iso_path)
    for c in input_checks(cfg):
        if wanted.get(c.name, True) and not c.ok:
            raise InputError(f"{c.name} not found: {c.detail}",
                             "put the files in images_dir (DIB_SLES_OFFLINE_TARGET_DIR) or give --base-image/--iso")
    if wanted["base image"]:
        image.sniff(image.find_image(cfg))
    if wanted["Media1 ISO"] and ctx.media is None:
        ctx.media = media.open_media(cfg.iso_path)
    if wanted["Media1 ISO"] and ctx.media is not None:
        media.check_arch(ctx.media, cfg.arch)


def settle(cfg: Config) -> tuple[Config, media.Media | None]:
    """Before the plan: every --repo must answer with rpm-md metadata (else exit 2, naming it), and a
    service pack whose python depends on the repositories (SP4: python311 from the update channel)
    gets it decided. Returns the config to build with and the ISO when it was opened for that."""
    user = repos.parse(list(cfg.repos))
    creds = repos.load_credentials(list(cfg.repo_credentials))
    provided: dict[str, set[str]] = {}
    for r in user:  # offline, remote repositories are not contacted: zypper uses their cached metadata
        remote = r.parts.scheme not in ("file", "dir")
        provided[r.shown] = (repos.cached_packages(r, cache_dir("zypper")) if cfg.offline and remote
                             else repos.probe(r, creds, cfg.ca_bundle))
        log.info("repository %s: %d packages", r.shown, len(provided[r.shown]))
    sp = servicepack.facts(cfg.service_pack)
    if cfg.sles_python is not None or not sp.may_change_python:
        return cfg, None
    opened = None
    if not cfg.iso_optional and cfg.iso_path.is_file():
        opened = media.open_media(cfg.iso_path)
        provided[f"the Media1 ISO {cfg.iso_path.name}"] = repos.media_packages(opened)
    where = next((name for name, names in provided.items() if sp.python_if in names), None)
    python = sp.python_for(lambda pkg: where is not None)
    source = f"{sp.python_if} in {where}" if where else f"{sp.name}: no repository provides {sp.python_if}"
    log.info("IPA venv python: %s (%s)", python, source)
    return replace(cfg, sles_python=python, sources={**cfg.sources, "sles_python": source}), opened


def build(cfg: Config) -> Artifacts | None:
    cfg, opened = settle(cfg)
    ctx = plan.make(cfg)
    ctx.media = opened
    check_inputs(ctx)
    wheels.check_offline(ctx)
    phases.prepare_workspace(ctx)
    logmod.attach_file(ctx.log_path)
    checkpoints.prepare(ctx)  # after the log file: it says which layers hit, and why the others missed
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
                                    memory_mb=cfg.boot_memory, accel=cfg.accel, arch=cfg.arch)
    show(result.summary())
