"""The private namespaces and the mount helpers (root only)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import make_busybox_root

from sles_ipa_builder.engine import namespace

pytestmark = pytest.mark.root
REPO = Path(__file__).resolve().parents[2]

CHILD = """
import os, sys, time
from pathlib import Path
from contextlib import ExitStack
from sles_ipa_builder.engine import namespace
namespace.enter()
here = Path(sys.argv[1])
stack = ExitStack()
namespace.tmpfs(stack, here / "mnt")
(here / "mnt" / "inside").write_text(str(os.getpid()))
(here / "ready").write_text("")
if sys.argv[2] == "sleep":
    time.sleep(300)
stack.close()
print("pid", os.getpid(), "in", os.environ["SIB_IN_NAMESPACE"])
"""


@pytest.fixture(autouse=True)
def need_root() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root")


def start(tmp_path: Path, mode: str) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if k != namespace.MARK}
    env["PYTHONPATH"] = str(REPO)
    return subprocess.Popen(
        [sys.executable, "-c", CHILD, str(tmp_path), mode],
        env=env,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def wait_for(path: Path, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.05)


def test_enter_makes_the_build_pid_1_with_private_mounts(tmp_path: Path) -> None:
    p = start(tmp_path, "exit")
    out, err = p.communicate(timeout=60)
    assert p.returncode == 0, err
    assert out.split() == ["pid", "1", "in", "1"]
    assert namespace.mounts_under(tmp_path) == []
    assert not (tmp_path / "mnt" / "inside").exists()  # it was written to the tmpfs, not the disk


def test_sigkill_of_the_supervisor_leaves_nothing(tmp_path: Path) -> None:
    p = start(tmp_path, "sleep")
    wait_for(tmp_path / "ready")
    assert namespace.mounts_under(tmp_path) == []  # private: never visible on the host
    children = [int(x) for x in Path(f"/proc/{p.pid}/task/{p.pid}/children").read_text().split()]
    assert len(children) == 1
    assert any(
        "/mnt " in line
        for line in Path(f"/proc/{children[0]}/mountinfo").read_text().splitlines()
        if str(tmp_path) in line
    )
    p.send_signal(signal.SIGKILL)
    p.wait(timeout=30)
    deadline = time.monotonic() + 10
    while Path(f"/proc/{children[0]}").exists():
        assert time.monotonic() < deadline, "the namespace's PID 1 survived its supervisor"
        time.sleep(0.05)


def test_sigterm_is_forwarded_and_unwinds(tmp_path: Path) -> None:
    p = start(tmp_path, "sleep")
    wait_for(tmp_path / "ready")
    p.send_signal(signal.SIGTERM)
    p.wait(timeout=30)
    assert p.returncode == 143


def test_mount_helpers_register_their_undo(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "f").write_text("x")
    ca = tmp_path / "ca.pem"
    ca.write_text("CA")
    with contextlib.ExitStack() as stack:
        base = namespace.tmpfs(stack, tmp_path / "t")
        ro = namespace.bind(stack, src, base / "ro", ro=True)
        namespace.bind_file(stack, ca, base / "etc" / "ca.pem")
        namespace.proc(stack, base / "proc")
        assert [p.name for p in namespace.mounts_under(base)] == ["t", "ro", "ca.pem", "proc"]
        assert (ro / "f").read_text() == "x"
        with pytest.raises(OSError):
            (ro / "g").write_text("no")
        assert (base / "etc" / "ca.pem").read_text() == "CA"
    assert namespace.mounts_under(tmp_path) == []


def test_umount_all_under_is_the_fallback(tmp_path: Path) -> None:
    stack = contextlib.ExitStack()
    base = namespace.tmpfs(stack, tmp_path / "t")
    namespace.tmpfs(stack, base / "a" / "b")
    namespace.umount_all_under(tmp_path)
    assert namespace.mounts_under(tmp_path) == []
    stack.pop_all()  # already undone


def test_kill_rooted_in(tmp_path: Path) -> None:
    root = make_busybox_root(tmp_path / "root")
    proc = subprocess.Popen(["chroot", str(root), "/bin/sleep", "300"])
    try:
        deadline = time.monotonic() + 10
        while proc.pid not in namespace.processes_rooted_in(root):
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert namespace.kill_rooted_in(root, grace=1) == [proc.pid]
        assert proc.wait(timeout=10) != 0
    finally:
        proc.kill()
