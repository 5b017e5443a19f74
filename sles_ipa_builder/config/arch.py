"""The target architecture: every name it has in SUSE, Debian, DIB, QEMU, the kernel and metal3.

Code that needs an architecture-specific fact asks the `Arch` value instead of spelling a name: a new
architecture is one more value in ARCHES, not a search through the modules.
"""

from __future__ import annotations

import platform
from dataclasses import dataclass

from ..errors import ConfigError


@dataclass(frozen=True)
class Arch:
    suse: str  # RPM arch, media and image file names, uname -m
    dib: str  # DIB's ARCH (Debian's dpkg name), read by package-installs' arch filters
    oci: str  # the OCI platform's architecture: Go's GOARCH name, as image indexes spell it
    qemu: str  # qemu-system-<qemu>
    qemu_package: str  # the Debian package that has it
    qemu_machine: str  # QEMU -machine ("": QEMU's default for the binary)
    qemu_cpu: str  # QEMU -cpu under TCG
    uefi_code: tuple[str, ...]  # UEFI firmware, code and vars templates in pairs (Debian, then SUSE/Fedora)
    uefi_vars: tuple[str, ...]
    qemu_hint: str  # how to install QEMU and its UEFI firmware
    console: str  # the serial console device
    kernel_names: tuple[str, ...]  # /boot/<name>[-<version>], in order of preference
    elf: str  # what libguestfs' file_architecture says of the image's binaries
    metal3_suffix: str  # ironic-python-agent<suffix>.kernel, as metal3's ironic-ipa-downloader names them
    debian_kernel: str  # Debian's kernel metapackage (the test media's kernel)
    binfmt: str  # /proc/sys/fs/binfmt_misc/<binfmt>: the qemu-user handler a foreign host runs the target with
    # The VM boots through UEFI firmware even for the fake-API boot test: QEMU's virt machine has no BIOS, and
    # a direct kernel boot has no SMBIOS tables, so lscpu says "Socket(s): -", which IPA 13 fails to parse.
    boot_uefi: bool
    aliases: tuple[str, ...] = ()
    efi: str = ""  # the suffix of the removable-media loader's name: BOOT<EFI>.EFI, grub<efi>.efi
    grub_efi: str = ""  # grub's EFI platform: SUSE's signed grub is in grub2-<grub_efi>
    # UEFI firmware with Secure Boot enforced (code, vars with Microsoft's keys enrolled; q35, SMM, secure pflash)
    secure_boot_firmware: tuple[str, str] | None = None

    @property
    def qemu_binary(self) -> str:
        return f"qemu-system-{self.qemu}"

    @property
    def uefi_firmware(self) -> tuple[tuple[str, str], ...]:
        """(code, vars template) candidates, in order of preference."""
        return tuple(zip(self.uefi_code, self.uefi_vars, strict=True))

    def __str__(self) -> str:
        return self.suse

    @staticmethod
    def parse(text: str) -> Arch:
        """SUSE's name (x86_64), DIB's (amd64) or another usual alias."""
        wanted = text.strip().lower()
        for arch in ARCHES:
            if wanted in (arch.suse, arch.dib, *arch.aliases):
                return arch
        raise ConfigError(f"unknown architecture '{text}'", "supported: " + ", ".join(a.suse for a in ARCHES))


X86_64 = Arch(
    suse="x86_64", dib="amd64", qemu="x86_64", qemu_package="qemu-system-x86", qemu_machine="", qemu_cpu="max",
    uefi_code=("/usr/share/OVMF/OVMF_CODE_4M.fd", "/usr/share/OVMF/OVMF_CODE.fd",
               "/usr/share/qemu/ovmf-x86_64-code.bin", "/usr/share/edk2/ovmf/OVMF_CODE.fd"),
    uefi_vars=("/usr/share/OVMF/OVMF_VARS_4M.fd", "/usr/share/OVMF/OVMF_VARS.fd",
               "/usr/share/qemu/ovmf-x86_64-vars.bin", "/usr/share/edk2/ovmf/OVMF_VARS.fd"),
    qemu_hint="apt-get install qemu-system-x86 ovmf (or zypper in qemu-x86 qemu-ovmf-x86_64)",
    console="ttyS0", kernel_names=("vmlinuz",), elf="x86_64", metal3_suffix="", debian_kernel="linux-image-amd64",
    binfmt="qemu-x86_64", boot_uefi=False, oci="amd64", aliases=("x86-64",),
    efi="x64", grub_efi="x86_64-efi",
    secure_boot_firmware=("/usr/share/OVMF/OVMF_CODE_4M.secboot.fd", "/usr/share/OVMF/OVMF_VARS_4M.ms.fd"),
)
# SUSE's aarch64 kernel is /boot/Image-<version> (uncompressed); the serial console is the PL011, ttyAMA0.
AARCH64 = Arch(
    suse="aarch64", dib="arm64", qemu="aarch64", qemu_package="qemu-system-arm", qemu_machine="virt", qemu_cpu="max",
    uefi_code=("/usr/share/AAVMF/AAVMF_CODE.fd", "/usr/share/qemu/aavmf-aarch64-code.bin",
               "/usr/share/edk2/aarch64/QEMU_EFI-pflash.raw"),
    uefi_vars=("/usr/share/AAVMF/AAVMF_VARS.fd", "/usr/share/qemu/aavmf-aarch64-vars.bin",
               "/usr/share/edk2/aarch64/vars-template-pflash.raw"),
    qemu_hint="apt-get install qemu-system-arm qemu-efi-aarch64 (or zypper in qemu-arm qemu-uefi-aarch64)",
    console="ttyAMA0", kernel_names=("Image",), elf="aarch64", metal3_suffix="_aarch64",
    debian_kernel="linux-image-arm64", binfmt="qemu-aarch64", boot_uefi=True, oci="arm64",
    aliases=("armv8", "arm64v8"), efi="aa64", grub_efi="arm64-efi",
)
ARCHES: tuple[Arch, ...] = (X86_64, AARCH64)


def host() -> Arch | None:
    """The architecture this machine runs natively (None: one we do not build for)."""
    machine = platform.machine().lower()
    return next((a for a in ARCHES if machine in (a.suse, a.dib, *a.aliases)), None)


HOST_DEFAULT = host() or X86_64
