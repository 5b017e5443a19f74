"""The stages of a build and its steps: DIB's phases in DIB's order, the outputs after them, the break
points named after the phases. Defined here only.

root, extra-data, post-root, pre-finalise and cleanup run on the host; pre-install, install,
post-install and finalise run in the target (seed-build-spec §2.4).
"""

from __future__ import annotations

import enum

from ..errors import ConfigError


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
