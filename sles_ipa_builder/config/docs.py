"""docs/settings.md, written from the settings table (settings.SETTINGS), grouped as the table is.

Regenerate it with `make docs`, i.e. `python -m sles_ipa_builder.config.docs > docs/settings.md`;
a test fails when the committed page and the table differ.
"""

from __future__ import annotations

from typing import Any

from .settings import SETTINGS, Setting, text

COMMAND = "make docs (python -m sles_ipa_builder.config.docs > docs/settings.md)"
INTRO = """\
# Settings

<!-- Generated from sles_ipa_builder/config/settings.py by `make docs`; do not edit by hand. -->

Resolved in this order, later wins: defaults < TOML file (`--config FILE`; environment variables may
also go in its `[env]` table) < environment variables < flags. Booleans accept true/false, yes/no,
1/0. Bad values stop the build before any work. Secrets are shown as `***` everywhere. Settings the
seed had no variable for use the `SIB_` prefix.

The hooks get the variables in the *hooks get* column, written as it says (a value on its own: the
value as text). Any other `DIB_*` variable of the environment or the `[env]` table is passed to the
elements unchanged, and `DIB_REPOLOCATION_<name>` / `DIB_REPOREF_<name>` override any source
repository of any element.
"""
KINDS = {"str": "text", "int": "whole number", "bool": "boolean", "path": "path",
         "list": "list (space separated in a variable)", "pathlist": "paths (colon separated in a variable)",
         "choice": "one of", "arch": "one of"}


def _cell(value: str) -> str:
    """Text for a table cell: a | would end the cell, a <word> would be taken for HTML."""
    return value.replace("|", "\\|").replace("<", "&lt;")


def _code(value: Any) -> str:
    return f"`{value}`"


def _default(s: Setting) -> str:
    if s.default_doc:
        return s.default_doc
    value = s.default
    if value is None:
        return "unset"
    if isinstance(value, bool):
        return _code(str(value).lower())
    if isinstance(value, list):
        value = " ".join(value)
    return _code(value) if value != "" else "empty"


def _flag(s: Setting) -> str:
    if not s.flag:
        return ""
    if s.kind == "bool":
        return f"{_code(s.option)}, {_code('--no-' + s.option[2:])}"
    if s.many:
        return f"{_code(f'{s.option} {s.metavar}...')} (a list: several words)"
    if s.kind == "list":
        return _code(f"{s.option} 'A B'") + " (a list: one word, space separated)"
    return _code(s.option)


def _kind(s: Setting) -> str:
    kind = KINDS[s.kind]
    if s.choices:
        kind = ("list of " if s.kind == "list" else "one of ") + ", ".join(_code(c) for c in s.choices)
    return kind


def _export(s: Setting) -> str:
    if not s.export:
        return ""
    notes = [] if s.renderer is text else [_cell(s.renderer.__doc__ or "")]
    if s.export_from:
        notes.append("when unset, the default the meaning names")
    return _code(s.export) + (f" ({'; '.join(notes)})" if notes else "")


def _meaning(s: Setting) -> str:
    return _cell(s.help) + (" Secret: shown as `***`." if s.secret else "")


def markdown() -> str:
    out = [INTRO.rstrip("\n")]
    group = None
    for s in SETTINGS:
        if s.group != group:
            group = s.group
            out += ["", f"## {group}", "", "| TOML key | type | environment | flag | hooks get | default | meaning |",
                    "|---|---|---|---|---|---|---|"]
        row = [_code(s.key), _kind(s), ", ".join(_code(e) for e in s.all_envs), _flag(s), _export(s), _default(s),
               _meaning(s)]
        out.append("| " + " | ".join(row) + " |")
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    print(markdown(), end="")
