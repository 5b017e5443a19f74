"""run.py: the process seam."""

from __future__ import annotations

import os
import signal

import pytest

from sles_ipa_builder import run
from sles_ipa_builder.errors import CommandError


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
