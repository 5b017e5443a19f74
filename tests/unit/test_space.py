"""space.py: a full disk is one line naming the filesystem, what was written, the need and the free space."""

from __future__ import annotations

import errno
import logging
import os
from collections.abc import Callable
from pathlib import Path

import pytest

from sles_ipa_builder import log, space
from sles_ipa_builder.__main__ import main
from sles_ipa_builder.cli import commands
from sles_ipa_builder.engine import namespace
from sles_ipa_builder.errors import CommandError, InputError, NoSpace

MiB = 2**20


def full_disk(path: Path | None = None) -> OSError:
    return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), None if path is None else str(path))


def raising(e: Exception) -> Callable[[], None]:
    def fail() -> None:
        raise e

    return fail


def test_message_forms() -> None:
    known = NoSpace("/srv", "ipa.tar", free=7 * MiB + 5, need=12 * MiB + 1)
    assert known.message == "no space left on /srv writing ipa.tar: needs about 13 MiB, 7 MiB free"
    assert known.hint and "\n" not in known.hint and known.exit_code == 1
    assert NoSpace("/", "x", free=3 * MiB).message == "no space left on / writing x: needs more than the 3 MiB free"
    assert NoSpace("/", "x", free=0, quota=True).message.startswith("disk quota exceeded on / writing x")


def test_mount_point_is_the_filesystem_holding_the_path(tmp_path: Path) -> None:
    mp = space.mount_point(tmp_path / "not" / "made" / "yet")
    assert mp == space.mount_point(tmp_path) and os.path.ismount(mp)
    assert os.stat(mp).st_dev == os.stat(tmp_path).st_dev
    assert mp in namespace.mounts_under(Path("/"))  # the kernel's list of mount points has it
    assert space.mount_point("/") == Path("/")
    assert space.mount_point("/proc/self/status") == Path("/proc")


def test_writing_maps_a_full_disk_and_nothing_else(tmp_path: Path) -> None:
    with pytest.raises(NoSpace) as e:
        with space.writing(tmp_path, "ipa.tar", lambda: 3 * MiB):
            raise full_disk()
    assert e.value.message.startswith(f"no space left on {space.mount_point(tmp_path)} writing ipa.tar: "
                                      "needs about 3 MiB, ")
    assert isinstance(e.value.__cause__, OSError)
    with pytest.raises(NoSpace, match="disk quota exceeded"):
        with space.writing(tmp_path, "x"):
            raise OSError(errno.EDQUOT, os.strerror(errno.EDQUOT))
    with pytest.raises(PermissionError):
        with space.writing(tmp_path, "x"):
            raise PermissionError(errno.EACCES, "denied")
    with pytest.raises(InputError):
        with space.writing(tmp_path, "x"):
            raise InputError("something else")


def test_a_commands_full_disk_keeps_its_last_lines(tmp_path: Path) -> None:
    out = "cp: error writing '/c/tree/big': No space left on device\n"
    with pytest.raises(NoSpace) as e:
        with space.writing(tmp_path, "the cache layer venv", 5 * MiB):
            raise CommandError(["cp", "-a"], 1, out)
    assert "writing the cache layer venv: needs about 5 MiB" in e.value.message
    assert e.value.tail == out.splitlines()


def test_the_innermost_writer_names_it(tmp_path: Path) -> None:
    with pytest.raises(NoSpace, match="writing inner: needs about 1 MiB"):
        with space.writing(tmp_path, "outer", 9 * MiB), space.writing(tmp_path, "inner", MiB):
            raise full_disk()


def test_require_stops_before_writing(tmp_path: Path) -> None:
    space.require(tmp_path, "small", 1)
    free = space.free_bytes(tmp_path)
    with pytest.raises(NoSpace) as e:
        space.require(tmp_path, "the outputs", free + 100 * MiB, freed=MiB)
    assert e.value.need == free + 100 * MiB
    assert f"{(free + MiB) // MiB} MiB free" in e.value.message


def test_an_unmapped_full_disk_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    def fill(*_: object) -> int:
        raise full_disk(tmp_path / "some.file")

    monkeypatch.setattr(commands, "dispatch", fill)
    assert main(["doctor"]) == 1
    lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert lines[0].startswith(f"error: no space left on {space.mount_point(tmp_path)} writing some.file: needs more")
    assert lines[1].startswith("hint: ") and len(lines) == 2

    def other(*_: object) -> int:
        raise full_disk()

    monkeypatch.setattr(commands, "dispatch", other)
    assert main(["doctor"]) == 1
    assert "error: no space left on a filesystem the error does not name" in capsys.readouterr().err


def test_a_full_disk_under_the_build_log_prints_no_traceback(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    root = logging.getLogger()
    log.attach_file(tmp_path / "build.log")
    fh = root.handlers[-1]
    assert isinstance(fh, logging.FileHandler)
    try:
        monkeypatch.setattr(fh, "flush", raising(full_disk()))
        logging.getLogger("sles_ipa_builder.test").warning("a line the full disk loses")
        assert "Logging error" not in capsys.readouterr().err
        monkeypatch.setattr(fh, "flush", raising(ValueError("a bug")))
        logging.getLogger("sles_ipa_builder.test").warning("a line a bug loses")
        assert "Logging error" in capsys.readouterr().err  # anything else still says so
    finally:
        monkeypatch.undo()
        root.removeHandler(fh)
        fh.close()
