"""Two cuts that need the target's own toolchain, so they run in install.d while the build-only
compilers are still there (they leave at install.d/99):

- the agent venv's native libraries lose their symbol tables (`strip --strip-unneeded`): wheels
  from PyPI often keep them, the Rust extension of cryptography alone holds 3 MB of them;
- ICU's data library (`libicudata.so.NN`, 30 MB) becomes an empty data table under the same name
  and entry symbol. Nothing the agent runs asks ICU for data: ICU is in the tree only because a
  library links it (libxml2 through fio's NBD engine on the test media), and those libraries use
  it for exotic character sets at most. Loading still works; a lookup in the table finds nothing,
  which ICU reports as an error to its caller, as when its data files are missing.

Each cut is recorded with its files and bytes; `keep_paths` matching the data library keeps it.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

from ..engine.state import Plan, Runtime
from ..engine.target import run_in_target
from ..errors import CommandError
from ..packing import cuts
from ..packing.cuts import Cut
from . import agenttools, wheels

log = logging.getLogger(__name__)

ELF_MAGIC = b"\x7fELF"
ICU_DATA = re.compile(r"libicudata\.so\.(\d+)(?:\.\d+)*$")
LIB_DIRS = ("usr/lib64", "usr/lib", "lib64", "lib")
BATCH = 200  # paths per strip call
# An ICU common-data header (ICU's udata.h: MappedData + UDataInfo, 32 bytes) with a table of no
# entries. ICU checks the magic, the byte order, the charset family and the size of a UChar.
STUB_C = """\
/* Written by sles-ipa-builder: ICU common data with no entries, in place of %(name)s. */
#include <stdint.h>
struct empty_icu_data {
    uint16_t header_size;
    uint8_t magic1, magic2;
    struct {
        uint16_t size, reserved_word;
        uint8_t is_big_endian, charset_family, sizeof_uchar, reserved_byte;
        uint8_t data_format[4], format_version[4], data_version[4];
    } info;
    uint8_t padding[8];
    uint32_t count, reserved;
    uint32_t entries[4];
};
__attribute__((visibility("default"))) const struct empty_icu_data %(symbol)s = {
    32, 0xda, 0x27,
    {20, 0, __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__, 0, 2, 0, {'C', 'm', 'n', 'D'}, {1, 0, 0, 0}, {0, 0, 0, 0}},
    {0}, 0, 0, {0},
};
"""


def strip_step(plan: Plan, rt: Runtime) -> None:
    """Symbol tables out of the venv's ELF files (extension modules and the libraries wheels bundle)."""
    if plan.cfg.minimal_prune:
        log.info("venv libraries not stripped (minimal prune)")
        return
    if not agenttools.present(plan.root, "strip"):
        log.info("venv libraries not stripped: the target has no strip (binutils)")
        return
    venv = plan.root / wheels.VENV
    elves = [p for p in _files(venv) if _is_elf(p)]
    before = {p: p.stat().st_size for p in elves}
    for i in range(0, len(elves), BATCH):
        try:
            run_in_target(plan, rt, ["strip", "--strip-unneeded", "--", *(_abs(plan, p) for p in elves[i:i + BATCH])],
                          label="strip")
        except CommandError as e:  # strip goes on past a file it cannot read; those stay as they were
            log.warning("strip failed on some of the venv's files, which stay as they are: %s",
                        (e.output.strip().splitlines() or [str(e)])[-1])
    cut = Cut("stripped symbols: the agent venv's native libraries")
    for p in elves:
        saved = before[p] - p.stat().st_size
        if saved > 0:
            cut.files += 1
            cut.bytes += saved
    log.info("%s: %d files, %.1f MiB", cut.rule, cut.files, cut.bytes / 2**20)
    cuts.record(rt.manifest, [cut])


def icu_step(plan: Plan, rt: Runtime) -> None:
    """ICU's data library replaced by an empty table, compiled by the target's gcc."""
    found = icu_data_libraries(plan.root)
    if plan.cfg.minimal_prune or not found:
        log.info("ICU data kept (%s)", "minimal prune" if plan.cfg.minimal_prune else "no ICU data library in the tree")
        return
    kept = [p for p in found if cuts.kept(str(p.relative_to(plan.root)), plan.cfg.prune.keep)]
    for p in kept:
        log.info("ICU data kept: %s is in keep_paths", p.relative_to(plan.root))
    todo = [p for p in found if p not in kept]
    if todo and not agenttools.present(plan.root, "gcc"):
        log.info("ICU data kept: the target has no gcc to build the empty table")
        return
    cut = Cut("ICU data: an empty table in place of libicudata")
    for lib in todo:
        major = ICU_DATA.match(lib.name).group(1)  # type: ignore[union-attr]
        symbol = f"icudt{major}_dat"
        if symbol.encode() not in lib.read_bytes():
            log.warning("ICU data kept: %s does not export %s", lib.relative_to(plan.root), symbol)
            continue
        size = lib.stat().st_size
        src = lib.with_name(f".{lib.name}.stub.c")
        src.write_text(STUB_C % {"name": lib.name, "symbol": symbol})
        out = lib.with_name(f".{lib.name}.stub")
        try:
            run_in_target(plan, rt, ["gcc", "-shared", "-fPIC", "-O2", "-s", f"-Wl,-soname,libicudata.so.{major}",
                                "-o", _abs(plan, out), _abs(plan, src)], label="icu-data")
        except CommandError as e:
            log.warning("ICU data kept: gcc could not build the empty table: %s",
                        (e.output.strip().splitlines() or [str(e)])[-1])
            out.unlink(missing_ok=True)
            continue
        finally:
            src.unlink(missing_ok=True)
        out.chmod(lib.stat().st_mode & 0o7777)
        os.replace(out, lib)
        cut.files += 1
        cut.bytes += size - lib.stat().st_size
    if cut.files:
        log.info("%s: %d files, %.1f MiB", cut.rule, cut.files, cut.bytes / 2**20)
        cuts.record(rt.manifest, [cut])


def icu_data_libraries(root: Path) -> list[Path]:
    """The ICU data libraries of the tree: regular files in the library directories or their
    multiarch subdirectories (lib/ is usr/lib/ on a merged-/usr tree)."""
    return [p for d in cuts.distinct_dirs(root, LIB_DIRS) for p in sorted([*d.glob("libicudata.so.*"),
                                                                           *d.glob("*/libicudata.so.*")])
            if ICU_DATA.match(p.name) and p.is_file() and not p.is_symlink()]


def _files(top: Path) -> list[Path]:
    """The regular files under a directory (links left alone)."""
    if not top.is_dir() or top.is_symlink():
        return []
    return [Path(d, n) for d, _, names in os.walk(top) for n in names if not os.path.islink(os.path.join(d, n))]


def _is_elf(p: Path) -> bool:
    try:
        with open(p, "rb") as f:
            return f.read(4) == ELF_MAGIC
    except OSError:
        return False


def _abs(plan: Plan, p: Path) -> str:
    return "/" + str(p.relative_to(plan.root))
