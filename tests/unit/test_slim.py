"""slim.py: finding ICU's data libraries, and the empty ICU data table it compiles in their place."""

from __future__ import annotations

import ctypes
import shutil
import subprocess
from pathlib import Path

import pytest

from sles_ipa_builder.steps import slim


def test_icu_data_libraries_are_the_real_files_once(tmp_path: Path) -> None:
    lib = tmp_path / "usr/lib/x86_64-linux-gnu"
    lib.mkdir(parents=True)
    (lib / "libicudata.so.72.1").write_bytes(b"\x7fELF icudt72_dat")
    (lib / "libicudata.so.72").symlink_to("libicudata.so.72.1")
    (lib / "libicuuc.so.72.1").write_bytes(b"\x7fELF")
    (tmp_path / "usr/lib64").mkdir()
    (tmp_path / "usr/lib64/libicudata.so.65.1").write_bytes(b"\x7fELF icudt65_dat")
    (tmp_path / "lib").symlink_to("usr/lib")  # merged /usr: found once
    found = sorted(str(p.relative_to(tmp_path)) for p in slim.icu_data_libraries(tmp_path))
    assert found == ["usr/lib/x86_64-linux-gnu/libicudata.so.72.1", "usr/lib64/libicudata.so.65.1"]


@pytest.mark.skipif(shutil.which("gcc") is None, reason="no gcc on this host to compile the table with")
def test_the_empty_table_is_an_icu_common_data_header(tmp_path: Path) -> None:
    """What ICU checks before it looks anything up: size 32, magic da 27, UDataInfo of 20 bytes in
    the host's byte order, ASCII family, 2-byte UChar, format CmnD 1, and no entries."""
    src = tmp_path / "stub.c"
    src.write_text(slim.STUB_C % {"name": "libicudata.so.72.1", "symbol": "icudt72_dat"})
    so = tmp_path / "libicudata.so.72"
    subprocess.run(["gcc", "-shared", "-fPIC", "-O2", "-o", str(so), str(src)], check=True)
    head = bytes((ctypes.c_ubyte * 40).in_dll(ctypes.CDLL(str(so)), "icudt72_dat"))
    assert int.from_bytes(head[0:2], "little") == 32 and head[2:4] == b"\xda\x27"
    assert int.from_bytes(head[4:6], "little") == 20 and head[8:12] == bytes([0, 0, 2, 0])
    assert head[12:16] == b"CmnD" and head[16] == 1
    assert int.from_bytes(head[32:36], "little") == 0  # the count of entries
