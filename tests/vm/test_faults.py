"""Fault injection: kill the builder while a hook runs in each chroot phase; nothing may survive.

The real CLI (`build --base-tree` on a busybox tree, the test media's ISO as the repositories) runs
in a subprocess; a hook sleeps in the chosen phase; the test sends SIGKILL, SIGTERM or SIGINT to the
process it started, then checks: no mount under the workspace in any mount namespace, no process
whose root is in the workspace, the output directory untouched.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import CHROOT_PHASES, make_busybox_root, make_engine_elements

from sles_ipa_builder.engine import namespace

pytestmark = [pytest.mark.root, pytest.mark.slow, pytest.mark.media]
REPO = Path(__file__).resolve().parents[2]


def mounts_anywhere_under(path: Path) -> list[str]:
    """Mount points under path in the mount namespace of any process (not only ours)."""
    base = str(path)
    found = set()
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            text = (proc / "mountinfo").read_text()
        except OSError:
            continue
        found.update(
            f"{proc.name}:{line.split()[4]}" for line in text.splitlines() if line.split()[4].startswith(base)
        )
    return sorted(found)


def wait_until(cond, timeout: float, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM, signal.SIGINT], ids=lambda s: s.name)
@pytest.mark.parametrize("phase", CHROOT_PHASES)
def test_signal_during_chroot_phase_leaves_nothing(
    tmp_path: Path, phase: str, sig: signal.Signals, fixture_media: object
) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root")
    els = make_engine_elements(tmp_path / "elements")
    base = make_busybox_root(tmp_path / "base-tree")
    ws, out = tmp_path / "ws", tmp_path / "out"
    out.mkdir()
    (out / "ironic-python-agent.initramfs").write_text("the previous good build")
    before = {p.name: (p.stat().st_mtime_ns, p.read_text()) for p in out.iterdir()}
    argv = [sys.executable, "-m", "sles_ipa_builder", "build", "--workspace", str(ws), "--output", str(out),
            "--elements", "bb-os", "--elements-path", str(els), "--base-tree", str(base),
            "--iso", str(fixture_media.iso),  # type: ignore[attr-defined]
            "--keep-workspace"]  # so the unwinding below can be checked in the tree
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DIB_", "SIB_"))}
    env.update(PYTHONPATH=str(REPO), DIB_SLEEP_IN=phase)
    p = subprocess.Popen(
        argv,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        marker = ws / "build" / "root" / "tmp" / f"sleeping-{phase}"
        wait_until(lambda: marker.exists() or p.poll() is not None, 120, "the sleeping hook never started")
        assert p.poll() is None, p.stderr.read() if p.stderr else ""
        # the test can fail: right now there are mounts and chroot processes in the workspace
        assert namespace.processes_rooted_in(ws)
        assert any(m.endswith("/root/proc") for m in mounts_anywhere_under(ws))
        p.send_signal(sig)
        _, err = p.communicate(timeout=60)
    finally:
        if p.poll() is None:
            p.kill()
    expected = {signal.SIGKILL: -9, signal.SIGTERM: 143, signal.SIGINT: 130}[sig]
    assert p.returncode == expected, err[-2000:]
    wait_until(lambda: not mounts_anywhere_under(ws), 10, f"mounts left: {mounts_anywhere_under(ws)}")
    wait_until(lambda: not namespace.processes_rooted_in(ws), 10, "chroot processes left")
    assert namespace.mounts_under(ws) == []
    assert {p.name: (p.stat().st_mtime_ns, p.read_text()) for p in out.iterdir()} == before
    if sig is not signal.SIGKILL:  # a clean exit unwound the ExitStack: hooks dir gone, resolv.conf back
        root = ws / "build" / "root"
        assert not (root / "tmp" / "in_target.d").exists()
        assert (root / "etc" / "resolv.conf").read_text() == "# the image's own resolv.conf\n"
