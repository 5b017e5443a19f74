"""compress.py: spec parsing, each compressor decodes with the real tools, kernel-config refusal."""

from __future__ import annotations

import io
import logging
import os
from pathlib import Path

import pytest
import zstandard

from sles_ipa_builder import run
from sles_ipa_builder.errors import CommandError, ConfigError
from sles_ipa_builder.packing.compress import Compression, check_kernel_support

# compressible but not trivial: text with some randomness, several gzip blocks long
DATA = b"".join(b"line %d %s\n" % (i, os.urandom(8).hex().encode()) for i in range(120_000))


def compress(c: Compression, data: bytes = DATA, threads: int | None = None, chunk: int = 300_000) -> bytes:
    out = io.BytesIO()
    comp = c.open(out, threads=threads)
    for i in range(0, len(data), chunk):
        comp.write(data[i : i + chunk])
    comp.finish()
    return out.getvalue()


def test_parse() -> None:
    assert Compression.parse("zstd") == Compression("zstd", 9)
    assert Compression.parse("zstd:19") == Compression.release() == Compression("zstd", 19)
    assert Compression.parse("gzip", 9) == Compression("gzip", 9)
    assert Compression.parse("xz").level == 6
    assert Compression.parse("none") == Compression("none", None)
    cmd = Compression.parse("zstd -19 -T0")
    assert cmd.kind == "command" and cmd.command == ("zstd", "-19", "-T0") and cmd.family == "zstd"
    assert Compression.parse("xz --format=lzma -9").family == "lzma"
    assert Compression.parse("gzip -9").family == "gzip"
    assert Compression.parse("/opt/bin/mystery --fast").family is None
    with pytest.raises(ConfigError, match="unknown compression .brotli"):
        Compression.parse("brotli")
    for bad in ("zstd:20", "zstd:0", "gzip:10", "zstd:x"):
        with pytest.raises(ConfigError):
            Compression.parse(bad)
    with pytest.raises(ConfigError):
        Compression.parse("gzip -9", level=3)


@pytest.mark.parametrize(
    "spec,decoder",
    [("zstd", ["zstd", "-dc"]), ("gzip", ["gzip", "-dc"]), ("xz", ["xz", "-dc"]), ("none", ["cat"])],
)
def test_builtin_output_decodes_with_the_cli(tmp_path: Path, spec: str, decoder: list[str]) -> None:
    blob = compress(Compression.parse(spec))
    out = tmp_path / "out"
    with out.open("wb") as f:
        run.run(decoder, input=blob, stdout=f)
    assert out.read_bytes() == DATA
    if spec != "none":
        assert len(blob) < len(DATA) * 0.8


def test_gzip_and_zstd_do_not_depend_on_cores_or_write_sizes() -> None:
    for spec in ("gzip", "zstd"):
        c = Compression.parse(spec)
        assert compress(c, threads=1) == compress(c, threads=2, chunk=77_777) == compress(c, threads=3)


def test_gzip_header_is_reproducible() -> None:
    blob = compress(Compression.parse("gzip"))
    assert blob[:8] == b"\x1f\x8b\x08\x00\x00\x00\x00\x00"  # no name (flags 0), mtime 0: like gzip -n


def test_zstd_window_stays_within_the_kernel_limit() -> None:
    for level in (3, 19):
        blob = compress(Compression("zstd", level), DATA[: 2 << 20])
        params = zstandard.get_frame_parameters(blob)
        assert params.window_size <= 8 << 20
        assert params.has_checksum


def test_zstd_writes_exactly_one_frame(tmp_path: Path) -> None:
    # An empty second frame (window 0) makes older kernel zstd decoders fail the whole initramfs.
    f = tmp_path / "a.zst"
    f.write_bytes(compress(Compression("zstd", 3), DATA[: 1 << 20]))
    listing = run.output(["zstd", "-lv", f])
    assert "Zstandard Frames: 1" in listing, listing


def test_xz_uses_crc32(tmp_path: Path) -> None:
    f = tmp_path / "a.xz"
    f.write_bytes(compress(Compression.parse("xz:1")))
    listing = run.output(["xz", "--robot", "--list", f])
    assert "CRC32" in listing


def test_external_command(tmp_path: Path) -> None:
    out = tmp_path / "out.gz"
    with out.open("wb") as f:
        c = Compression.parse("gzip -1").open(f)
        c.write(DATA)
        c.finish()
    assert run.run(["gzip", "-dc", out], capture=True).stdout.encode() == DATA


def test_external_formats_the_kernel_refuses() -> None:
    with pytest.raises(ConfigError, match="only CRC32"):
        Compression.parse("xz -9 -T0")  # CRC64 by default
    with pytest.raises(ConfigError, match="legacy format"):
        Compression.parse("lz4 -9")
    for ok in ("xz -9 --check=crc32", "xz -C crc32", "lz4 -l -9", "zstd -19 -T0"):
        assert Compression.parse(ok).kind == "command"


def test_failing_external_command(tmp_path: Path) -> None:
    with (tmp_path / "out").open("wb") as f, pytest.raises(CommandError):
        c = Compression.parse("sh -c 'head -c 10 >/dev/null; exit 3'").open(f)
        c.write(DATA)
        c.finish()
    with pytest.raises(ConfigError, match="not found"), (tmp_path / "out").open("wb") as f:
        Compression.parse("no-such-compressor -9").open(f)


def kernel_config(tmp_path: Path, **symbols: str) -> Path:
    p = tmp_path / "config-5.14.21-150400.22-default"
    lines = [f"CONFIG_{k}={v}" if v != "n" else f"# CONFIG_{k} is not set" for k, v in symbols.items()]
    p.write_text("\n".join(["CONFIG_BLK_DEV_INITRD=y", *lines]) + "\n")
    return p


def test_kernel_config_refusal(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    conf = kernel_config(tmp_path, RD_GZIP="y", RD_ZSTD="n", RD_XZ="m")
    check_kernel_support(Compression.parse("gzip"), conf)
    check_kernel_support(Compression.parse("none"), conf)
    with pytest.raises(ConfigError, match="CONFIG_RD_ZSTD is not set") as e:
        check_kernel_support(Compression.parse("zstd"), conf)
    assert "gzip" in e.value.hint
    with pytest.raises(ConfigError, match="CONFIG_RD_XZ is m"):
        check_kernel_support(Compression.parse("xz"), conf)
    with pytest.raises(ConfigError, match="CONFIG_RD_ZSTD"):
        check_kernel_support(Compression.parse("zstd -19 -T0"), conf)
    with caplog.at_level(logging.WARNING):
        check_kernel_support(Compression.parse("zstd"), None)
    assert "no kernel config" in caplog.text
