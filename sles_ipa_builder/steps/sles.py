"""The builder's own steps for the sles element: the root tree from the qcow2, the Media1 ISO as
zypper repositories (and their removal), and an early check of IPA's Python requirement; for
sles-ipa-ramdisk-base, the cut of unused kernel modules; for the agent, the check of its tools.
Each function is a step of the plan (engine/plan.py)."""

from __future__ import annotations

import logging
import re
from pathlib import Path

from ..cache import layers as checkpoints
from ..cache import roottree as layers
from ..config import releases
from ..engine.state import Plan, Runtime
from ..engine.target import run_in_target, run_zypper
from ..errors import BuildError, ConfigError
from ..inputs import media, repos, zypper
from ..packing import cuts
from . import agenttools, pkgdrop, repotrust

log = logging.getLogger(__name__)

HISTORY = "var/log/zypp/history"


def root_step(plan: Plan, rt: Runtime) -> None:
    """root.d/10-sles-image: the base tree from the qcow2 (or --base-tree), through the cache."""
    facts = layers.prepare_root(plan.cfg, plan.root, accel=plan.cfg.accel, stack=rt.stack,
                                above=checkpoints.above(rt), checked=checkpoints.root_checked(rt))
    if facts.get("restore") != "overlay":
        checkpoints.off(rt, f"the root tree was {facts.get('restore', 'copied')}, not mounted")
    rt.manifest.setdefault("inputs", {})["base"] = facts
    rt.env["SIB_BASE_IMAGE_SHA256"] = str(facts.get("sha256", "tree:" + str(facts.get("path", ""))))


def media_step(plan: Plan, rt: Runtime) -> None:
    """The Media1 modules (and any --repo) as zypper repositories, served from the ISO on loopback.
    With --repo URLs the ISO is optional (the input checks leave rt.media None when there is none)."""
    cfg = plan.cfg
    m = rt.media
    if m is None and not cfg.iso_optional:
        m = media.open_media(cfg.iso_path)
    local = media.repo_urls(m, media.serve(m, rt.stack)) if m is not None else []
    user = repos.parse(list(cfg.repos))
    remote = [(r.alias, r.zypper_url) for r in user]
    signed_by = repotrust.check(plan, rt, m, user)  # before the first zypper call: pinned keys only
    repos.write_credentials(plan.root, user, repos.load_credentials(list(cfg.repo_credentials)))
    zypper.write_repos(plan.root, local + remote)
    zypper.zypp_conf(plan.root)
    rt.zypper_repos = local + remote
    # offline, only the media's repositories are refreshed: remote ones keep what was cached
    rt.refresh_aliases = [alias for alias, _ in local] if cfg.offline else None
    rt.env["SIB_MEDIA_IDENTITY"] = m.identity if m is not None else "none"
    rt.manifest.setdefault("inputs", {})["media"] = {
        "iso": str(cfg.iso_path) if m is not None else None,
        "identity": m.identity if m is not None else None,
        "repositories": [alias for alias, _ in local + remote],
        "remote": {r.alias: r.shown for r in user},
        "signed_by": signed_by,
    }


def refresh_step(plan: Plan, rt: Runtime) -> None:
    """Fresh metadata once per build: the loopback port changes, and the ISO may have."""
    run_zypper(plan, rt)


def python_floor(src: Path) -> tuple[tuple[int, int], str] | None:
    """The `>=X.Y` of a Python project's requires-python (pyproject.toml, else setup.cfg), if any."""
    for name, pattern in (("pyproject.toml", r"^\s*requires-python\s*=\s*[\"']([^\"']+)"),
                          ("setup.cfg", r"^\s*python[_-]requires\s*=\s*(\S+)")):
        found = re.search(pattern, (src / name).read_text(), re.M) if (src / name).is_file() else None
        floor = re.search(r">=\s*(\d+)\.(\d+)", found.group(1)) if found else None
        if found and floor:
            return (int(floor.group(1)), int(floor.group(2))), found.group(1)
    return None


def python_check_step(plan: Plan, rt: Runtime) -> None:
    """IPA 12+ needs Python 3.11; SP4's GM media has 3.10: say so now, not after the package installs.
    (60-ironic-python-agent-ramdisk-install checks again in the target, for other users of the hook.)"""
    src = plan.root / "tmp/ironic-python-agent"
    found = python_floor(src)
    have = re.fullmatch(r"python(\d+)\.(\d+)", rt.env.get("DIB_SLES_PYTHON", ""))
    if found and have and (int(have.group(1)), int(have.group(2))) < found[0]:
        release = plan.cfg.sles
        older_ipa = "pick an IPA release that supports it (IPA_REF and OPENSTACK_REQUIREMENTS_REF"
        offered = "/".join(releases.python_package(p) for p in releases.pythons(release.major))
        hint = ("add a repository that provides python311 (SP4's update channel, --repo URL), build from "
                f"SP5 or later media (DIB_SLES_SERVICE_PACK), or {older_ipa}, e.g. stable/2026.1 for IPA 11.x)"
                if found[0] <= (3, 11) else
                f"no SLES {release.major} {offered} satisfies it: {older_ipa} of an older OpenStack release)")
        raise ConfigError(f"this ironic-python-agent requires Python {found[1]}, but {release.shown} "
                          f"gives the IPA venv {have.group(0)}", hint)


def unconfigure_step(plan: Plan, rt: Runtime) -> None:
    """No repository pointing at a loopback port of the build, and no credentials, are left in the image.
    Before they go, zypper's history says which repository each installed package came from."""
    rt.manifest["package_repositories"] = installed_from(plan.root, dict(rt.zypper_repos),
                                                         dict(rt.manifest.get("inputs", {}).get("media", {})
                                                              .get("remote", {})))
    zypper.remove_repos(plan.root, [alias for alias, _ in rt.zypper_repos])
    repos.remove_credentials(plan.root, repos.load_credentials(list(plan.cfg.repo_credentials)))


def installed_from(root: Path, aliases: dict[str, str], shown: dict[str, str]) -> dict[str, str]:
    """package name -> repository alias (with a user repository's masked URL), from /var/log/zypp/history.
    Only this build's repositories count, only packages still installed; the last install wins."""
    history = root / HISTORY
    out: dict[str, str] = {}
    if not history.is_file():
        return out
    for line in history.read_text(errors="replace").splitlines():
        fields = [f.strip() for f in line.split("|")]
        if len(fields) > 6 and fields[1] == "install" and fields[6] in aliases:
            alias = fields[6]
            out[fields[2]] = f"{alias} {shown[alias]}" if alias in shown else alias
        elif len(fields) > 2 and fields[1] == "remove":  # build-only packages, the SSH server...
            out.pop(fields[2], None)
    return dict(sorted(out.items()))


def cut_step(plan: Plan, rt: Runtime) -> None:
    """Kernel modules of classes the agent does not use, and the firmware only they name (cuts.py);
    then depmod in the target for each kernel whose module tree changed."""
    if plan.cfg.minimal_prune or not plan.cfg.cut_modules:
        log.info("no kernel modules cut (%s)", "minimal prune" if plan.cfg.minimal_prune else "cut_modules is empty")
        return
    done, kernels = cuts.cut_modules(plan.root, plan.cfg.cut_modules)
    for kver in kernels:
        run_in_target(plan, rt, ["depmod", "-a", kver], label="depmod")
    for c in done:
        if c.files:
            log.info("cut %s: %d files, %.1f MiB", c.rule, c.files, c.bytes / 2**20)
    if not any(c.files for c in done):
        log.info("no kernel modules of the classes %s in the tree", " ".join(plan.cfg.cut_modules))
    cuts.record(rt.manifest, done)


def drop_step(plan: Plan, rt: Runtime) -> None:
    """Package groups that leave before packing (pkgdrop.py), after every chroot phase."""
    if plan.cfg.minimal_prune or not plan.cfg.drop_packages:
        log.info("no packages dropped (%s)", "minimal prune" if plan.cfg.minimal_prune else "drop_packages is empty")
        return
    done = pkgdrop.drop(plan.root, tuple(plan.cfg.drop_packages), plan.cfg.prune.keep)
    for c in done:
        log.info("%s: %d files, %.1f MiB", c.rule, c.files, c.bytes / 2**20)
    cuts.record(rt.manifest, done)


def tools_step(plan: Plan, rt: Runtime) -> None:
    """The tools the agent runs (agenttools.py), on the tree's PATH: a missing core tool fails the build."""
    package = agenttools.agent_package(plan.root)
    if package is None:
        log.warning("no ironic_python_agent package in the tree: its tools were not checked")
    core, others = agenttools.missing(plan.root, package)
    if others:
        log.warning("tools the agent calls are not in the ramdisk: %s",
                    "; ".join(f"{t} ({', '.join(sorted(where))})" for t, where in others.items()))
    rt.manifest["agent_tools_missing"] = sorted(others)
    if core:
        raise BuildError(f"the ramdisk lacks tools the agent needs: {', '.join(core)}",
                         "install the packages that provide them (package-installs.yaml of an element)")
