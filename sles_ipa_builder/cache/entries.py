"""What a cache layer is (its point, key and inputs) and a build's layers: plain records, shared by
the keys (keys.py), the finding and keeping (layers.py) and the build's runtime (engine/state.py)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from . import store as cache


def root() -> Path:
    """Where the layers are kept: <cache>/layers/<point>/<key>/."""
    return cache.cache_root() / "layers"


@dataclass
class Layer:
    name: str
    end: int  # how many of the plan's phase steps ran before it is taken
    key: str
    inputs: dict[str, str]
    after: tuple[str, str] | None  # (phase, step) it is taken after; None: after the last phase
    state: str = "not looked up"

    @property
    def path(self) -> Path:
        return root() / self.name / self.key


@dataclass
class Checkpoints:
    """A build's layers: their keys, the one it resumes from, what it skips."""

    layers: list[Layer] = field(default_factory=list)
    resume: Layer | None = None
    skip: set[tuple[str, str]] = field(default_factory=set)  # (phase, step name)
    commits: dict[str, str] = field(default_factory=dict)
    env0: dict[str, str] = field(default_factory=dict)  # rt.env before any step ran
    root_checked: bool = False  # the root tree under `resume` was found whole (the root step need not read it)
