"""The stages of a build and its steps: DIB's phases in DIB's order, the outputs after them, the break
points named after the phases. Defined here only.

root, extra-data, post-root, pre-finalise and cleanup run on the host; pre-install, install,
post-install and finalise run in the target (seed-build-spec §2.4).
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..errors import ConfigError

if TYPE_CHECKING:
    from .state import Plan, Runtime


class Phase(enum.Enum):
    ROOT = "root"
    EXTRA_DATA = "extra-data"
    PRE_INSTALL = "pre-install"
    INSTALL = "install"
    POST_INSTALL = "post-install"
    POST_ROOT = "post-root"
    PRE_FINALISE = "pre-finalise"
    FINALISE = "finalise"
    CLEANUP = "cleanup"

    @property
    def chroot(self) -> bool:
        return self in (Phase.PRE_INSTALL, Phase.INSTALL, Phase.POST_INSTALL, Phase.FINALISE)

    @property
    def dir(self) -> str:
        return f"{self.value}.d"

    @property
    def where(self) -> str:
        return "chroot" if self.chroot else "host"


BREAK_POINTS = frozenset({"after-error"} | {f"{w}-{p.value}" for w in ("before", "after") for p in Phase})


def parse_break_points(raw: object) -> frozenset[str]:
    """`--break before-install,after-error` (commas, spaces or a TOML list) -> the set of break points."""
    if not raw:
        return frozenset()
    items = raw if isinstance(raw, list | tuple | set | frozenset) else str(raw).replace(",", " ").split()
    names = frozenset(str(i).strip() for i in items if str(i).strip())
    bad = sorted(names - BREAK_POINTS)
    if bad:
        raise ConfigError(f"unknown break point(s) {', '.join(bad)}",
                          "use before-<phase>, after-<phase> or after-error; phases: "
                          + ", ".join(p.value for p in Phase))
    return names


class Final(enum.Enum):
    """What runs after DIB's phases, on the host: the artifacts, each written by its own step."""

    OUTPUTS = "outputs"

    @property
    def chroot(self) -> bool:
        return False

    @property
    def where(self) -> str:
        return "host"


Stage = Phase | Final
NativeFn = Callable[["Plan", "Runtime"], None]


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
