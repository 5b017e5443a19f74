"""What differs between SLES 15 service packs, in one table read by the engine and (through the
variables the engine exports) by the hooks."""

from __future__ import annotations

from .errors import ConfigError

# The interpreter of the IPA venv: SP4 and older ship python310 on their GM media, SP5 and later python311.
PYTHON = {"SP1": "python3.10", "SP2": "python3.10", "SP3": "python3.10", "SP4": "python3.10"}
NEWER_PYTHON = "python3.11"


def normalise(service_pack: str) -> str:
    """`sp5`, `SP5` -> `SP5`; GM (no service pack) stays `GM`."""
    sp = service_pack.strip().upper()
    if sp != "GM" and not (sp.startswith("SP") and sp[2:].isdigit()):
        raise ConfigError(f"'{service_pack}' is not a SLES 15 service pack", "use SP4, SP5, SP6 or SP7")
    return sp


def python(service_pack: str) -> str:
    return PYTHON.get(normalise(service_pack), NEWER_PYTHON)


def dib_release(sles_release: str, service_pack: str) -> str:
    """SLE-15 + SP4 -> 15.4, the release key pkg-map's tables use."""
    major = sles_release.rsplit("-", 1)[-1]
    sp = normalise(service_pack).removeprefix("SP")
    return f"{major}.{sp}" if sp.isdigit() else major
