"""The state of one build, handed to every step: config, paths, resources to undo, hook environment."""

from __future__ import annotations

import contextlib
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..config.resolve import Config
from ..log import Timings
from . import elements
from .elements import Element, HookTree, SourceRepo
from .hookenv import hook_env
from .packages import PackageLists
from .stages import Step

if TYPE_CHECKING:
    from ..cache.layers import Checkpoints
    from ..delivery.artifacts import Artifacts, Staging
    from ..inputs.media import Media
    from .target import ResolvSaved

# Inside the target the build-time CA bundle is bind-mounted here, only while a chroot phase runs.
TARGET_CA = "/tmp/sib-build-ca.pem"
CA_VARS = ("SSL_CERT_FILE", "PIP_CERT", "REQUESTS_CA_BUNDLE", "GIT_SSL_CAINFO", "CURL_CA_BUNDLE")


@dataclass
class BuildContext:
    cfg: Config
    build_dir: Path
    root: Path
    hooks_dir: Path
    outputs: Path
    log_path: Path
    search_path: list[Path]
    elements: list[Element]
    tree: HookTree
    env: dict[str, str]
    ca_bundle: Path | None
    stack: contextlib.ExitStack = field(default_factory=contextlib.ExitStack)
    timings: Timings = field(default_factory=Timings)
    breakpoints: set[str] = field(default_factory=set)
    zypper_repos: list[tuple[str, str]] = field(default_factory=list)
    # Extra bind mounts for chroot phases: (host dir, absolute path in the target), e.g. the zypper cache.
    target_mounts: list[tuple[Path, str]] = field(default_factory=list)
    manifest: dict[str, Any] = field(default_factory=dict)
    # --- made with the plan (plan.make), before anything runs
    phase_env: dict[str, str] = field(default_factory=dict)  # the hook environment after environment.d
    source_repos: list[SourceRepo] = field(default_factory=list)
    packages: PackageLists = field(default_factory=PackageLists)
    steps: list[Step] = field(default_factory=list)  # the plan: every step in run order, outputs included
    replaced: list[str] = field(default_factory=list)  # built-in elements and native steps the user's replaced
    # --- state of the running build
    media: Media | None = None  # the Media1 ISO, opened once by the input checks
    refresh_aliases: list[str] | None = None  # zypper repositories to refresh (None: all)
    zypper_token: str = field(default_factory=lambda: uuid.uuid4().hex)  # names this build's zypper refresh
    resolv: ResolvSaved | None = None
    staging: Staging | None = None  # the outputs being written, before they are renamed into place
    artifacts: Artifacts | None = None
    checkpoints: Checkpoints | None = None  # the cache layers after the root tree (checkpoints.py)

    @property
    def workspace(self) -> Path:
        return Path(self.cfg.workspace)

    def target_ca_env(self) -> dict[str, str]:
        """The CA variables for commands in the target (empty when no bundle is configured)."""
        return {v: TARGET_CA for v in CA_VARS} if self.ca_bundle else {}

    def host_ca_env(self) -> dict[str, str]:
        return {v: str(self.ca_bundle) for v in CA_VARS} if self.ca_bundle else {}


def make_context(cfg: Config, *, breakpoints: set[str] | None = None) -> BuildContext:
    """Resolve the elements and merge their hooks; touches nothing on disk (summary uses it too)."""
    path = elements.search_path(cfg.elements_path)
    resolved = elements.resolve(cfg.element_list, path)
    build_dir = cfg.build_dir
    env = hook_env(cfg, build_dir, path, resolved)
    tree = elements.merge(resolved, env)
    return BuildContext(
        cfg=cfg,
        build_dir=build_dir,
        root=build_dir / "root",
        hooks_dir=build_dir / "hooks",
        outputs=cfg.output_dir,
        log_path=Path(cfg.workspace) / "build.log",
        search_path=path,
        elements=resolved,
        tree=tree,
        env=env,
        ca_bundle=cfg.ca_bundle,
        breakpoints=set(breakpoints) if breakpoints is not None else set(cfg.break_points),
    )
