"""Each native step declares what it reads (stages.Reads) once: the same declaration gives summary its
words and the cache layers their keys, and the keys chain step by step."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from sles_ipa_builder.cache import keys as layerkeys
from sles_ipa_builder.config import resolve as config
from sles_ipa_builder.engine import plan
from sles_ipa_builder.engine.state import Plan, Reads, Step

ARGS: dict[str, Any] = {"root_key": "r" * 64, "media_identity": "iso-1", "repo_digests": {},
                        "commits": {"ironic-python-agent": "a" * 40}}


@pytest.fixture
def made(tmp_path: Path) -> Plan:
    return plan.make(config.resolve({"workspace": str(tmp_path / "ws")}, environ={}))


def _keys(p: Plan) -> list[str]:
    return [layer.key for layer in layerkeys.compute(p, **ARGS)]


def _layer_of(p: Plan, s: Step) -> int:
    """The index of the layer whose range holds step s."""
    position = layerkeys.phase_steps(p).index(s)
    return next(i for i, layer in enumerate(layerkeys.compute(p, **ARGS)) if position < layer.end)


def _with(p: Plan, old: Step, new: Step) -> Plan:
    return replace(p, steps=[new if s is old else s for s in p.steps])


def test_changing_any_native_steps_declared_input_renews_its_layer_and_those_above(made: Plan) -> None:
    natives = [s for s in layerkeys.phase_steps(made) if s.run is not None]
    assert {"10-sles-image", "60-cut-kernel-modules", "90-drop-packages", "01-package-installs"} <= {
        s.name for s in natives}
    before = _keys(made)
    for s in natives:
        changed = replace(s, inputs=Reads(s.inputs.words, lambda _plan: "something else"))
        after = _keys(_with(made, s, changed))
        at = _layer_of(made, s)
        assert after[:at] == before[:at], f"{s.name}: a layer below it changed"
        assert all(a != b for a, b in zip(after[at:], before[at:], strict=True)), f"{s.name}: not in its layer's key"


def test_summary_shows_the_words_the_key_is_declared_with(made: Plan) -> None:
    for s in made.steps:
        assert s.describe()["reads"] == s.inputs.words
    cut = next(s for s in made.steps if s.name == "60-cut-kernel-modules")
    assert cut.inputs.value is not None and cut.inputs.value(made) == [False, sorted(made.cfg.cut_modules)]


def test_a_step_added_to_the_plan_is_in_the_keys_without_declaring_anything(made: Plan) -> None:
    """The chain holds every step: one more, even with nothing declared, renews its layer."""
    steps = layerkeys.phase_steps(made)
    last = steps[-1]
    extra = Step(last.stage, "99-zz-new-native", "sles", last.run, Reads("nothing declared"))
    grown = replace(made, steps=[*made.steps[:made.steps.index(last) + 1], extra,
                                 *made.steps[made.steps.index(last) + 1:]])
    assert _keys(grown)[-1] != _keys(made)[-1]
    assert _keys(grown)[:-1] == _keys(made)[:-1]


def test_the_settings_a_native_step_reads_renew_only_its_layer(tmp_path: Path) -> None:
    def keys(**cli: Any) -> list[str]:
        return _keys(plan.make(config.resolve({"workspace": str(tmp_path / "ws"), **cli}, environ={})))

    base = keys()
    for cli in ({"cut_modules": "wireless"}, {"drop_packages": "perl"}, {"minimal_prune": "1"}):
        got = keys(**cli)
        assert got[:2] == base[:2] and got[2] != base[2], cli  # finalise and cleanup: the tree layer
