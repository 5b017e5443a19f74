"""docs/settings.md is the settings table written out (sles_ipa_builder/config/docs.py)."""

from __future__ import annotations

from pathlib import Path

from sles_ipa_builder.config import docs
from sles_ipa_builder.config.settings import SETTINGS

PAGE = Path(__file__).resolve().parents[2] / "docs/settings.md"


def test_settings_page_is_up_to_date() -> None:
    assert PAGE.read_text() == docs.markdown(), f"docs/settings.md differs from the settings table: run {docs.COMMAND}"


def test_settings_page_names_every_setting_variable_flag_and_export() -> None:
    page = docs.markdown()
    for s in SETTINGS:
        assert f"| `{s.key}` |" in page, s.key
        for name in (*s.all_envs, *([s.option] if s.flag else []), *([s.export] if s.export else [])):
            assert f"`{name}" in page, (s.key, name)
    assert page.count("\n## ") == len({s.group for s in SETTINGS})
