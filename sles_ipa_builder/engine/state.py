"""A build's state, in two objects every step gets: the Plan (frozen: what this build will do, its
steps and what each native step reads, made once by plan.make) and the Runtime (what changes while
it runs: resources to undo, timings, the opened media, the outputs being written, the cache layers)."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..cache.entries import Checkpoints
from ..config.resolve import Config
from ..log import Timings
from .elements import Element, HookTree, SourceRepo
from .packages import PackageLists
from .stages import Stage

if TYPE_CHECKING:
    from ..delivery.artifacts import Artifacts, Staging
    from ..delivery.bootfiles import Source
    from ..inputs.media import Media

# Inside the target the build-time CA bundle is bind-mounted here, only while a chroot phase runs.
TARGET_CA = "/tmp/sib-build-ca.pem"
CA_VARS = ("SSL_CERT_FILE", "PIP_CERT", "REQUESTS_CA_BUNDLE", "GIT_SSL_CAINFO", "CURL_CA_BUNDLE")


NativeFn = Callable[["Plan", "Runtime"], None]  # a native step


@dataclass(frozen=True)
class Reads:
    """What a native step reads from the plan, declared once: `words` is what summary shows, `value`
    what the step's part of the cache-layer key is made of (None: nothing beyond the words, e.g.
    what is keyed elsewhere, as the qcow2, the media and the source commits are)."""

    words: str
    value: Callable[[Plan], object] | None = None


@dataclass(frozen=True)
class Step:
    """One step of the plan: a hook script of the merged tree, or a native step (`run`)."""

    stage: Stage
    name: str  # the script's name, or the native step's (named like the DIB script it stands for)
    element: str  # the element it belongs to ("(builder)" for the builder's own steps)
    run: NativeFn | None = None  # None: the element's hook script of that name
    inputs: Reads = Reads("")  # what a native step reads

    @property
    def where(self) -> str:
        return self.stage.where

    @property
    def reads(self) -> str:
        return self.inputs.words

    def describe(self) -> dict[str, str]:
        return {"stage": self.stage.value, "where": self.where, "name": self.name, "element": self.element,
                "kind": "script" if self.run is None else "native", "reads": self.reads}


@dataclass(frozen=True)
class ResolvSaved:
    """What resolv_conf_in found and wrote, so resolv_conf_out can undo exactly that."""

    had: bool
    text: str


@dataclass(frozen=True)
class Plan:
    """The settled configuration and everything derived from it before any work: `summary` prints
    it, `build` runs it, both get it from plan.make."""

    cfg: Config  # settled: SP4's python decided by what the repositories provide
    search_path: list[Path]
    elements: list[Element]
    tree: HookTree  # the merged hooks of the elements
    env: Mapping[str, str]  # the hook environment a build starts with
    phase_env: Mapping[str, str] = field(default_factory=dict)  # env after sourcing environment.d
    source_repos: list[SourceRepo] = field(default_factory=list)
    packages: PackageLists = field(default_factory=PackageLists)
    steps: list[Step] = field(default_factory=list)  # every step in run order, outputs included
    replaced: list[str] = field(default_factory=list)  # built-in elements and native steps the user's replaced
    # Bind mounts for chroot phases: (host dir, absolute path in the target), e.g. the zypper cache.
    target_mounts: list[tuple[Path, str]] = field(default_factory=list)

    @property
    def build_dir(self) -> Path:
        return self.cfg.build_dir

    @property
    def root(self) -> Path:
        return self.cfg.build_dir / "root"

    @property
    def hooks_dir(self) -> Path:
        return self.cfg.build_dir / "hooks"

    @property
    def outputs(self) -> Path:
        return self.cfg.output_dir

    @property
    def workspace(self) -> Path:
        return Path(self.cfg.workspace)

    @property
    def log_path(self) -> Path:
        return self.workspace / "build.log"

    @property
    def ca_bundle(self) -> Path | None:
        return self.cfg.ca_bundle

    def target_ca_env(self) -> dict[str, str]:
        """The CA variables for commands in the target (empty when no bundle is configured)."""
        return {v: TARGET_CA for v in CA_VARS} if self.ca_bundle else {}

    def host_ca_env(self) -> dict[str, str]:
        return {v: str(self.ca_bundle) for v in CA_VARS} if self.ca_bundle else {}

    def needs(self, name: str) -> bool:
        """Whether a native step of that name is in the plan (the input checks ask: qcow2? ISO?)."""
        return any(s.name == name and s.run is not None for s in self.steps)


@dataclass
class Runtime:
    """The mutable part of a running build."""

    env: dict[str, str]  # the plan's hook environment plus what steps add (image and media identity)
    stack: contextlib.ExitStack = field(default_factory=contextlib.ExitStack)
    timings: Timings = field(default_factory=Timings)
    manifest: dict[str, Any] = field(default_factory=dict)
    media: Media | None = None  # the Media1 ISO, opened once by the input checks
    boot_source: Source | None = None  # the media's boot packages, for the ESP and the ISO (input checks)
    zypper_repos: list[tuple[str, str]] = field(default_factory=list)
    refresh_aliases: list[str] | None = None  # zypper repositories to refresh (None: all)
    zypper_token: str = field(default_factory=lambda: uuid.uuid4().hex)  # names this build's zypper refresh
    resolv: ResolvSaved | None = None
    staging: Staging | None = None  # the outputs being written, before they are renamed into place
    artifacts: Artifacts | None = None
    checkpoints: Checkpoints | None = None  # the cache layers after the root tree (cache/layers.py)

    @classmethod
    def start(cls, plan: Plan) -> Runtime:
        return cls(env=dict(plan.env))
