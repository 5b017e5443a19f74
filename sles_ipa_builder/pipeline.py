"""One build, top to bottom: root tree -> media repositories -> phases -> artifacts -> boot test.

The engine (phases.py) runs the hook phases; this module adds the native steps that stand where
DIB's generic elements stood (the root image, the Media1 repositories, the source repositories,
the manifests) and turns the finished tree into artifacts. `register()` is shared with `summary`,
so the plan it prints is the plan the build runs.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shlex
from pathlib import Path

from . import __version__, image, media, phases, ramdisk, sources, wheels, zypper
from . import log as logmod
from .cache import cache_dir
from .config import Config
from .context import BuildContext, make_context
from .errors import ConfigError, InputError
from .hooks import run_zypper
from .output import show

log = logging.getLogger(__name__)
MEDIA = "(media)"
PIP_CACHE = "/tmp/sib-pip-cache"


# --- native steps --------------------------------------------------------------------------------
def root_step(ctx: BuildContext) -> None:
    """root.d/10-sles-image: the base tree from the qcow2 (or --base-tree), through the cache."""
    facts = image.prepare_root(ctx.cfg, ctx.root, accel=ctx.cfg.accel)
    ctx.manifest.setdefault("inputs", {})["base"] = facts
    ctx.env["SIB_BASE_IMAGE_SHA256"] = str(facts.get("sha256", "tree:" + str(facts.get("path", ""))))


def media_step(ctx: BuildContext) -> None:
    """The Media1 modules (and any --repo) as zypper repositories, served from the ISO on loopback."""
    m = ctx.state.get("media") or media.open_media(ctx.cfg.iso_path)
    url = media.serve(m, ctx.stack)
    local = media.repo_urls(m, url)
    repos = local + zypper.remote_aliases(list(ctx.cfg.repos))
    zypper.write_repos(ctx.root, repos)
    zypper.zypp_conf(ctx.root)
    ctx.zypper_repos = repos
    # offline, only the media's repositories are refreshed: remote ones keep what was cached
    ctx.state["refresh_aliases"] = [alias for alias, _ in local] if ctx.cfg.offline else None
    ctx.env["SIB_MEDIA_IDENTITY"] = m.identity
    ctx.manifest.setdefault("inputs", {})["media"] = {
        "iso": str(ctx.cfg.iso_path),
        "identity": m.identity,
        "repositories": [alias for alias, _ in repos],
    }


def refresh_step(ctx: BuildContext) -> None:
    """Fresh metadata once per build: the loopback port changes, and the ISO may have."""
    run_zypper(ctx)


def sources_step(ctx: BuildContext) -> None:
    rows = sources.fetch_sources(phases.repos(ctx), ctx.root, offline=ctx.cfg.offline, image_name=ctx.cfg.name)
    ctx.manifest["sources"] = rows


def python_floor(src: Path) -> tuple[tuple[int, int], str] | None:
    """The `>=X.Y` of a Python project's requires-python (pyproject.toml, else setup.cfg), if any."""
    for name, pattern in (("pyproject.toml", r"^\s*requires-python\s*=\s*[\"']([^\"']+)"),
                          ("setup.cfg", r"^\s*python[_-]requires\s*=\s*(\S+)")):
        found = re.search(pattern, (src / name).read_text(), re.M) if (src / name).is_file() else None
        floor = re.search(r">=\s*(\d+)\.(\d+)", found.group(1)) if found else None
        if found and floor:
            return (int(floor.group(1)), int(floor.group(2))), found.group(1)
    return None


def python_check_step(ctx: BuildContext) -> None:
    """IPA 12+ needs Python 3.11 and SP4 has 3.10: say so now, not after the package installs.
    (60-ironic-python-agent-ramdisk-install checks again in the target, for other users of the hook.)"""
    src = ctx.root / "tmp/ironic-python-agent"
    found = python_floor(src)
    have = re.fullmatch(r"python(\d+)\.(\d+)", ctx.env.get("DIB_SLES_PYTHON", ""))
    if found and have and (int(have.group(1)), int(have.group(2))) < found[0]:
        older_ipa = "pick an IPA release that supports it (IPA_REF and OPENSTACK_REQUIREMENTS_REF"
        hint = (f"build from SP5 or later media (DIB_SLES_SERVICE_PACK, python3.11), or {older_ipa}, e.g. "
                "stable/2026.1 for IPA 11.x)" if found[0] <= (3, 11) else
                f"no SLES 15 python310/python311 satisfies it: {older_ipa} of an older OpenStack release)")
        raise ConfigError(f"this ironic-python-agent requires Python {found[1]}, but service pack "
                          f"{ctx.cfg.service_pack} gives the IPA venv {have.group(0)}", hint)


def unconfigure_step(ctx: BuildContext) -> None:
    """No repository pointing at a loopback port of the build is left in the image."""
    zypper.remove_repos(ctx.root, [alias for alias, _ in ctx.zypper_repos])


def manifests_step(ctx: BuildContext) -> None:
    """cleanup.d/01-copy-manifests-dir: arguments and environment, never a secret, root-only."""
    d = ctx.root / "etc/dib-manifests"
    d.mkdir(parents=True, exist_ok=True)
    secret = set(ctx.cfg.secrets())
    env = {k: v for k, v in sorted(ctx.env.items()) if k.startswith("DIB_") and v not in secret
           and "PASSWORD" not in k}
    (d / "dib_environment").write_text("".join(f"export {k}={shlex.quote(v)}\n" for k, v in env.items()))
    (d / "dib_arguments").write_text(" ".join(ctx.cfg.element_list) + "\n")
    for f in d.iterdir():
        os.chown(f, 0, 0)
        f.chmod(0o600)


def register(ctx: BuildContext) -> BuildContext:
    """Put the native steps into their phases and the zypper cache into the chroot mounts."""
    phases.add_step(ctx, "root", "10-sles-image", "sles", root_step)
    phases.add_step(ctx, "extra-data", "05-media-repositories", MEDIA, media_step)
    if any(e.name == "sles-ipa-install" for e in ctx.elements):
        phases.add_step(ctx, "extra-data", "99-check-ipa-python", "sles-ipa-install", python_check_step)
    phases.add_step(ctx, "pre-install", "00-zypper-refresh", MEDIA, refresh_step)
    phases.add_step(ctx, "cleanup", "01-copy-manifests-dir", "manifests", manifests_step)
    phases.add_step(ctx, "cleanup", "05-remove-media-repositories", MEDIA, unconfigure_step)
    ctx.native_steps["source-repositories"] = sources_step
    ctx.target_mounts.extend(zypper.cache_mounts())
    # pip's wheel cache lives on the host and is mounted under /tmp (pruned) only while hooks run.
    ctx.target_mounts.append((cache_dir("pip"), PIP_CACHE))
    ctx.env["PIP_CACHE_DIR"] = PIP_CACHE
    wheels.register(ctx)
    ctx.env.update(SIB_BUILDER_VERSION=__version__)
    if ctx.cfg.source_date_epoch is not None:
        ctx.env["SOURCE_DATE_EPOCH"] = str(ctx.cfg.source_date_epoch)
    return ctx


# --- the build -----------------------------------------------------------------------------------
def check_inputs(cfg: Config) -> media.Media:
    """Missing or wrong inputs stop the build before any work, not after a minute of extraction.

    Both checks are cheap: the image's first KiB, the ISO's directory records. The opened media
    is handed on so the build does not index the ISO twice.
    """
    from .doctor import input_checks

    for c in input_checks(cfg):
        if not c.ok:
            raise InputError(f"{c.name} not found: {c.detail}",
                             "put the files in images_dir (DIB_SLES_OFFLINE_TARGET_DIR) or give --base-image/--iso")
    if cfg.base_tree is None:
        image.sniff(image.find_image(cfg))
    return media.open_media(cfg.iso_path)


def build(cfg: Config) -> ramdisk.Artifacts:
    opened = check_inputs(cfg)
    ctx = register(make_context(cfg))
    ctx.state["media"] = opened
    wheels.check_offline(ctx)
    comp = cfg.compression
    phases.prepare_workspace(ctx)
    logmod.attach_file(ctx.log_path)
    ctx.manifest.update(builder=__version__, elements=[e.name for e in ctx.elements],
                        settings=cfg.shown_settings())
    try:
        with ctx.stack:
            phases.run_phases(ctx)
            with logmod.step("ramdisk", ctx.timings):
                ctx.manifest["timings"] = ctx.timings.as_dict()
                arts = ramdisk.write_artifacts(
                    ctx.root, ctx.outputs, cfg.name, comp, size_limit_mb=cfg.size_limit_mb,
                    minimal_prune=cfg.minimal_prune, source_date_epoch=cfg.source_date_epoch,
                    manifest=ctx.manifest,
                )
    finally:
        logmod.console.print(ctx.timings.table())
        logmod.console.print(ctx.timings.steps_table())
        write_report(ctx)
        phases.finish_workspace(ctx)  # failed or not: the tree is gigabytes (--keep-workspace keeps it)
    report_artifacts(arts)
    if cfg.boot_test:
        boot(cfg, arts)
    return arts


def write_report(ctx: BuildContext) -> None:
    if ctx.cfg.report:
        doc = {**ctx.manifest, "timings": ctx.timings.as_dict()}
        Path(ctx.cfg.report).write_text(json.dumps(doc, indent=2, default=str) + "\n")


def report_artifacts(arts: ramdisk.Artifacts) -> None:
    """The build's result, on stdout: one line per artifact a user hands on."""
    show(*(f"{path}  {path.stat().st_size / 2**20:.1f} MiB" for path in (arts.kernel, arts.initramfs, arts.tar)))


def boot(cfg: Config, arts: ramdisk.Artifacts) -> None:
    from . import boottest

    with logmod.step("boot test"):
        result = boottest.boot_test(arts.kernel, arts.initramfs, timeout=cfg.boot_timeout,
                                    memory_mb=cfg.boot_memory, accel=cfg.accel)
    show(result.summary())
