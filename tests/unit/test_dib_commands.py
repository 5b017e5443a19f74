"""install-packages and pkg-map, the commands existing DIB elements call inside the target."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from sles_ipa_builder import run

BIN = Path(__file__).resolve().parents[2] / "elements/sles-zypper-config/bin"
MAP = {
    "default": {"web": "httpd", "dbg": "gdb", "gone": "x"},
    "family": {"suse": {"web": "apache2", "gone": ""}},
    "release": {"sles": {"15": {"dbg": "gdb-15 gdb-extra"}}},
}


@pytest.fixture
def bindir(tmp_path: Path) -> Path:
    """A fake zypper recording its arguments, and pkg-map reading a map in tmp_path."""
    (tmp_path / "map.json").write_text(json.dumps(MAP))
    d = tmp_path / "bin"
    d.mkdir()
    (d / "zypper").write_text(f'#!/bin/sh\necho "$*" >> {tmp_path}/zypper.log\n')
    (d / "pkg-map").write_text(f'#!/bin/sh\nshift 2\nexec python3 {BIN}/pkg-map --pkg-map {tmp_path}/map.json "$@"\n')
    for f in d.iterdir():
        f.chmod(0o755)
    return d


def env(bindir: Path) -> dict[str, str]:
    return {"PATH": f"{bindir}:{os.environ['PATH']}", "DISTRO_NAME": "sles", "DIB_RELEASE": "15"}


def test_pkg_map_release_beats_family_beats_default(tmp_path: Path, bindir: Path) -> None:
    out = run.output(["python3", BIN / "pkg-map", "--pkg-map", tmp_path / "map.json", "web", "dbg", "gone"],
                     env=env(bindir))
    assert out.split() == ["apache2", "gdb-15", "gdb-extra"]  # "gone" maps to nothing: dropped
    res = run.run(["python3", BIN / "pkg-map", "--pkg-map", tmp_path / "map.json", "unknown"], env=env(bindir),
                  check=False, capture=True)
    assert res.returncode == 1 and "no mapping for package unknown" in res.stderr
    assert run.output(["python3", BIN / "pkg-map", "--pkg-map", tmp_path / "map.json", "--missing-ok",
                       "unknown"], env=env(bindir)) == "unknown"
    res = run.run(["python3", BIN / "pkg-map", "--element", "no-such-element", "x"], env=env(bindir),
                  check=False, capture=True)
    assert res.returncode == 2


def test_install_packages_maps_then_calls_zypper(tmp_path: Path, bindir: Path) -> None:
    run.run([BIN / "install-packages", "-m", "my-element", "web", "dbg"], env=env(bindir))
    run.run([BIN / "install-packages", "-e", "nano"], env=env(bindir))
    run.run([BIN / "install-packages", "-m", "my-element", "gone"], env=env(bindir))  # nothing left to install
    log = (tmp_path / "zypper.log").read_text().splitlines()
    assert log == [
        "--non-interactive install --no-recommends apache2 gdb-15 gdb-extra",
        "--non-interactive remove nano",
    ]
    bad = run.run([BIN / "install-packages", "-m", "my-element", "unknown"], env=env(bindir), check=False,
                  capture=True)
    assert bad.returncode != 0
