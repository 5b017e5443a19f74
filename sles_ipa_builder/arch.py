"""The target architecture: every name it has in SUSE, Debian, DIB, QEMU, the kernel and metal3.

Code that needs an architecture-specific fact asks the `Arch` value instead of spelling a name: a new
architecture is one more member here, not a search through the modules.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from .errors import ConfigError


@dataclass(frozen=True)
class _Names:
    suse: str  # RPM arch, media and image file names, uname -m
    dib: str  # DIB's ARCH (Debian's dpkg name), read by package-installs' arch filters
    qemu: str  # qemu-system-<qemu>
    qemu_package: str  # the Debian package that has it
    machine: str  # QEMU -machine ("": QEMU's default for the binary)
    cpu: str  # QEMU -cpu under TCG
    uefi_code: tuple[str, ...]  # UEFI firmware, code and vars templates in pairs (Debian, then SUSE/Fedora)
    uefi_vars: tuple[str, ...]
    qemu_hint: str  # how to install QEMU and its UEFI firmware
    console: str  # the serial console device
    kernels: tuple[str, ...]  # /boot/<name>[-<version>], in order of preference
    elf: str  # what libguestfs' file_architecture says of the image's binaries
    metal3_suffix: str  # ironic-python-agent<suffix>.kernel, as metal3's ironic-ipa-downloader names them
    aliases: tuple[str, ...]


class Arch(enum.Enum):
    X86_64 = _Names(
        suse="x86_64", dib="amd64", qemu="x86_64", qemu_package="qemu-system-x86", machine="", cpu="max",
        uefi_code=("/usr/share/OVMF/OVMF_CODE_4M.fd", "/usr/share/OVMF/OVMF_CODE.fd",
                   "/usr/share/qemu/ovmf-x86_64-code.bin", "/usr/share/edk2/ovmf/OVMF_CODE.fd"),
        uefi_vars=("/usr/share/OVMF/OVMF_VARS_4M.fd", "/usr/share/OVMF/OVMF_VARS.fd",
                   "/usr/share/qemu/ovmf-x86_64-vars.bin", "/usr/share/edk2/ovmf/OVMF_VARS.fd"),
        qemu_hint="apt-get install qemu-system-x86 ovmf (or zypper in qemu-x86 qemu-ovmf-x86_64)",
        console="ttyS0", kernels=("vmlinuz",), elf="x86_64", metal3_suffix="", aliases=("x86-64",))

    @property
    def suse(self) -> str:
        return self.value.suse

    @property
    def dib(self) -> str:
        return self.value.dib

    @property
    def qemu_binary(self) -> str:
        return f"qemu-system-{self.value.qemu}"

    @property
    def qemu_package(self) -> str:
        return self.value.qemu_package

    @property
    def qemu_machine(self) -> str:
        return self.value.machine

    @property
    def qemu_cpu(self) -> str:
        return self.value.cpu

    @property
    def uefi_firmware(self) -> tuple[tuple[str, str], ...]:
        """(code, vars template) candidates, in order of preference."""
        return tuple(zip(self.value.uefi_code, self.value.uefi_vars, strict=True))

    @property
    def qemu_hint(self) -> str:
        return self.value.qemu_hint

    @property
    def console(self) -> str:
        return self.value.console

    @property
    def kernel_names(self) -> tuple[str, ...]:
        return self.value.kernels

    @property
    def elf(self) -> str:
        return self.value.elf

    @property
    def metal3_suffix(self) -> str:
        return self.value.metal3_suffix

    def __str__(self) -> str:
        return self.suse

    @classmethod
    def parse(cls, text: str) -> Arch:
        """SUSE's name (x86_64), DIB's (amd64) or another usual alias."""
        wanted = text.strip().lower()
        for arch in cls:
            if wanted == arch.suse or wanted == arch.dib or wanted in arch.value.aliases:
                return arch
        raise ConfigError(f"unknown architecture '{text}'",
                          "supported: " + ", ".join(a.suse for a in cls))


HOST_DEFAULT = Arch.X86_64
