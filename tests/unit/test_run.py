"""run.py: the process seam."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from sles_ipa_builder import run
from sles_ipa_builder.errors import CommandError

REPO = Path(__file__).resolve().parents[2]


def test_stream_waits_for_the_command_not_for_what_it_left_running() -> None:
    # A hook that starts a daemon: the daemon inherits the output pipe. The build must go on
    # when the hook exits (as dib-run-parts does); the daemon is dealt with at unmount.
    lines: list[str] = []
    tail = run.stream(["bash", "-c", "sleep 300 & echo $!; printf 'last line without newline'"],
                      on_line=lines.append)
    pid = int(tail[0])
    try:
        assert os.path.exists(f"/proc/{pid}"), "stream() waited for the background process to end"
        assert lines == [str(pid), "last line without newline"]
    finally:
        os.kill(pid, signal.SIGKILL)


def test_stream_raises_with_the_tail() -> None:
    with pytest.raises(CommandError) as exc:
        run.stream(["bash", "-c", "seq 1 50; exit 3"], tail_lines=5)
    assert exc.value.returncode == 3
    assert exc.value.tail == ["46", "47", "48", "49", "50"]


def test_popen_children_die_with_the_builder() -> None:
    # SIGKILL runs no clean-up: a qemu started by boot-test must still not outlive it
    import subprocess
    import sys
    import time

    code = ("import time; from sles_ipa_builder import run; "
            "p = run.popen(['sleep', '300']); print(p.pid, flush=True); time.sleep(300)")
    parent = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "PYTHONPATH": str(REPO)})
    assert parent.stdout is not None
    child = int(parent.stdout.readline())
    parent.kill()
    parent.wait()
    for _ in range(100):
        try:
            os.kill(child, 0)
        except ProcessLookupError:
            break
        with open(f"/proc/{child}/stat") as f:
            if f.read().split()[2] == "Z":  # reaped by init soon; already dead
                break
        time.sleep(0.05)
    else:
        os.kill(child, signal.SIGKILL)
        raise AssertionError("the child outlived its parent")


def test_pipe_chains_commands_on_the_host(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("b\na\nb\n")
    res = run.pipe(["cat", "f"], ["sort"], ["uniq", "-c"], cwd=tmp_path)
    assert [line.split() for line in res.stdout.splitlines()] == [["1", "a"], ["2", "b"]]
    with pytest.raises(CommandError):
        run.pipe(["cat", "missing-file"], ["sort"], ["false"], cwd=tmp_path)


def test_git_through_the_seam_never_prompts(tmp_path: Path) -> None:
    repo = run.git_init(tmp_path / "r")
    assert repo.git.environment()["GIT_TERMINAL_PROMPT"] == "0"


def test_chroot_argv_keeps_the_environment_off_the_command_line() -> None:
    argv = run.chroot_argv(Path("/t"), ["rpm", "-q", "x"])
    assert os.path.basename(argv[0]) == "chroot" and argv[1:] == ["/t", "rpm", "-q", "x"]
