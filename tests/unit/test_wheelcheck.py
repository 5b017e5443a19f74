"""The wheelhouse checked by content (issue 30): each wheel recorded in SHA256SUMS when it is saved,
hashed against that line before a build reads the wheelhouse; a damaged wheel is removed with one
warning (online: filled again), and an --offline build that would read it stops, naming it.

Wheels are real zip files; save_step runs for real with `pip wheel` in the target stood in by a
function that writes one wheel per requirement (no chroot, no network: the unit tier).
"""

from __future__ import annotations

import io
import logging
import os
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest

from sles_ipa_builder import run
from sles_ipa_builder.cache import wheelrecord
from sles_ipa_builder.config import resolve as config
from sles_ipa_builder.engine import plan
from sles_ipa_builder.engine.state import Plan, Runtime
from sles_ipa_builder.errors import InputError
from sles_ipa_builder.steps import wheels

X86 = "cffi-2.1.1-cp311-cp311-manylinux2014_x86_64.manylinux_2_17_x86_64.whl"
ARM = "cffi-2.1.1-cp311-cp311-manylinux2014_aarch64.manylinux_2_17_aarch64.whl"
PURE = "Werkzeug-3.0.1-py3-none-any.whl"


def wheel_bytes(name: str) -> bytes:
    """A small real wheel: a module and its dist-info, deflated."""
    dist, version = name.split("-")[:2]
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr(f"{dist.lower()}/__init__.py", f"VERSION = {version!r}\n" * 200)
        z.writestr(f"{dist}-{version}.dist-info/METADATA", f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n")
    return buf.getvalue()


def put(house: Path, *names: str) -> list[Path]:
    house.mkdir(parents=True, exist_ok=True)
    for name in names:
        (house / name).write_bytes(wheel_bytes(name))
    return [house / n for n in names]


def truncate(wheel: Path) -> None:
    os.truncate(wheel, wheel.stat().st_size // 2)


def empty(wheel: Path) -> None:
    wheel.write_bytes(b"")


def flip(wheel: Path) -> None:  # same size, one byte changed: bit rot
    data = bytearray(wheel.read_bytes())
    data[len(data) // 3] ^= 0xFF
    wheel.write_bytes(bytes(data))


# --- the record -------------------------------------------------------------------------------------
def test_recorded_wheels_pass_and_the_record_is_sha256sums(tmp_path: Path) -> None:
    house = tmp_path / "wheels"
    made = put(tmp_path / "fill", PURE, X86)
    wheelrecord.add(house, made)
    for w in made:
        os.replace(w, house / w.name)
    assert wheelrecord.check(house) == []
    assert sorted(wheelrecord.read(house)) == sorted([PURE, X86])
    # sha256sum -c reads it as it is, in the wheelhouse
    res = run.run(["sha256sum", "-c", wheelrecord.RECORD], cwd=house, capture=True)
    assert res.stdout.count(": OK") == 2
    assert not [p.name for p in house.iterdir() if ".tmp." in p.name]  # written atomically


@pytest.mark.parametrize("damage", [truncate, empty, flip])
def test_a_wheel_that_differs_from_its_record_is_removed(tmp_path: Path, damage: Callable[[Path], None]) -> None:
    house = tmp_path / "wheels"
    bad, good = put(house, X86, PURE)
    wheelrecord.add(house, [bad, good])
    damage(bad)
    size = bad.stat().st_size
    assert wheelrecord.check(house) == [wheelrecord.Bad(
        X86, f"{size} bytes, not the sha256 recorded when it was saved")]
    assert not bad.exists() and good.exists()
    assert list(wheelrecord.read(house)) == [PURE]  # its line goes with it


def test_wheels_of_an_older_builder_are_recorded_on_first_use(tmp_path: Path) -> None:
    """No record (a wheelhouse an earlier version filled): readable wheels are kept and recorded,
    a truncated one (its zip directory gone) is removed."""
    house = tmp_path / "wheels"
    kept, cut = put(house, PURE, X86)
    truncate(cut)
    size = cut.stat().st_size
    assert wheelrecord.check(house) == [wheelrecord.Bad(X86, f"{size} bytes, not a readable zip, and not recorded")]
    assert not cut.exists()
    assert wheelrecord.read(house) == {PURE: wheelrecord.sha256_uncached(kept)}
    # from now on it is checked like any other
    flip(kept)
    assert [b.name for b in wheelrecord.check(house)] == [PURE]


def test_lines_of_gone_wheels_and_garbage_are_dropped(tmp_path: Path) -> None:
    house = tmp_path / "wheels"
    (w,) = put(house, PURE)
    wheelrecord.add(house, [w])
    with (house / wheelrecord.RECORD).open("a") as f:
        f.write(f"{'0' * 64}  gone-1.0-py3-none-any.whl\nhalf a li")
    assert wheelrecord.check(house) == []
    assert (house / wheelrecord.RECORD).read_text() == f"{wheelrecord.sha256_uncached(w)}  {PURE}\n"


def test_for_arch() -> None:
    assert wheels.for_arch(X86, "x86_64") and not wheels.for_arch(X86, "aarch64")
    assert wheels.for_arch(ARM, "aarch64") and not wheels.for_arch(ARM, "x86_64")
    assert wheels.for_arch(PURE, "x86_64") and wheels.for_arch(PURE, "aarch64")


# --- save_step: online ------------------------------------------------------------------------------
def pip_in_target(house: Path, calls: list[list[str]]) -> Callable[..., None]:
    """`pip wheel ... --wheel-dir D -r R` in the target: a real wheel per pin of R into D."""
    def run_in_target(plan: object, rt: object, argv: list[str], **kw: object) -> None:
        calls.append(argv)
        if "-r" not in argv:
            return
        def here(p: str) -> Path:
            return house / os.path.relpath(p, wheels.WHEELHOUSE)
        for pin in here(argv[argv.index("-r") + 1]).read_text().split():
            name = PURE if pin.startswith("Werkzeug") else X86
            (here(argv[argv.index("--wheel-dir") + 1]) / name).write_bytes(wheel_bytes(name))
    return run_in_target


def a_plan(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, **settings: object) -> Plan:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    made = plan.make(config.resolve({"workspace": str(tmp_path / "ws"), **settings}, environ={}))
    for name, version in (("Werkzeug", "3.0.1"), ("cffi", "2.1.1")):
        info = made.root / wheels.VENV / f"lib/python3.11/site-packages/{name}-{version}.dist-info"
        info.mkdir(parents=True)
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n\n")
    return made


def test_save_records_and_an_online_build_fills_a_damaged_wheel_again(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    made = a_plan(tmp_path, monkeypatch)
    rt = Runtime.start(made)
    house = tmp_path / "cache/sles-ipa-builder/wheels"
    calls: list[list[str]] = []
    monkeypatch.setattr(wheels, "run_in_target", pip_in_target(house, calls))
    wheels.save_step(made, rt)
    assert sorted(wheelrecord.read(house)) == sorted([PURE, X86])
    assert wheelrecord.read(house)[X86] == wheelrecord.sha256_uncached(house / X86)
    pip_runs = len(calls)
    wheels.save_step(made, rt)  # the same set: saved already, pip not run
    assert len(calls) == pip_runs

    truncate(house / X86)
    caplog.set_level(logging.INFO)
    wheels.save_step(made, rt)
    warned = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert warned == [f"wheelhouse: removed {X86}: {len(wheel_bytes(X86)) // 2} bytes, not the sha256 recorded "
                      "when it was saved"]
    assert len(calls) > pip_runs  # the marker went with the wheel: pip filled the wheelhouse again
    assert (house / X86).read_bytes() == wheel_bytes(X86)
    assert wheelrecord.check(house) == [] and list(house.glob(".saved-*"))


# --- check_offline: before any work -----------------------------------------------------------------
def saved(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The wheelhouse an online build left (real save_step), and the cache it is in."""
    online = a_plan(tmp_path / "online", monkeypatch)
    house = tmp_path / "online/cache/sles-ipa-builder/wheels"
    monkeypatch.setattr(wheels, "run_in_target", pip_in_target(house, []))
    wheels.save_step(online, Runtime.start(online))
    return house


def test_offline_a_damaged_wheel_stops_the_build_naming_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    house = saved(tmp_path, monkeypatch)
    offline = plan.make(config.resolve({"workspace": str(tmp_path / "ws"), "offline": True}, environ={}))
    assert offline.cfg.arch.suse == "x86_64" or pytest.skip("the wheel names below are x86_64's")
    wheels.check_offline(offline)  # whole: passes
    empty(house / X86)
    with pytest.raises(InputError) as e:
        wheels.check_offline(offline)
    assert str(e.value) == (f"--offline: wheel {X86} in the pip wheelhouse is damaged (0 bytes, not the sha256 "
                            "recorded when it was saved), so it was removed")
    assert e.value.hint == f"run one build online: it fetches the wheel again into {house}"
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]  # the error is the one line
    assert not (house / X86).exists() and not list(house.glob(".saved-*"))  # the next online build refills
    # the next offline build, with the wheel still missing, is not told the wheelhouse is whole
    assert (house / PURE).exists()


def test_offline_a_damaged_wheel_of_another_arch_is_only_removed(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    house = saved(tmp_path, monkeypatch)
    (arm,) = put(house, ARM)
    wheelrecord.add(house, [arm])
    flip(arm)
    offline = plan.make(config.resolve({"workspace": str(tmp_path / "ws"), "offline": True}, environ={}))
    assert offline.cfg.arch.suse == "x86_64" or pytest.skip("the wheel names here are x86_64's")
    wheels.check_offline(offline)
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == [
        f"wheelhouse: removed {ARM}: {len(wheel_bytes(ARM))} bytes, not the sha256 recorded when it was saved"]
    assert not arm.exists() and (house / X86).exists()


def test_offline_an_unrecorded_wheelhouse_is_recorded_not_rejected(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    house = saved(tmp_path, monkeypatch)
    (house / wheelrecord.RECORD).unlink()  # as an older builder left it
    offline = plan.make(config.resolve({"workspace": str(tmp_path / "ws"), "offline": True}, environ={}))
    wheels.check_offline(offline)
    assert sorted(wheelrecord.read(house)) == sorted([PURE, X86])
