"""Every setting the builder knows: TOML key, environment variables, flag, default, meaning, and the
variable it exports to the hooks.

One table, read by resolve.py (resolution), __main__.py (flags), engine/hookenv.py (the hooks'
environment) and docs.py (docs/settings.md). A new setting gets one row; its TOML key is the row's key,
its flag `--key-with-dashes` and, when the seed had no variable for it, its environment variable
`SIB_KEY_IN_CAPITALS`. The strings between the rows are the headings docs/settings.md groups them under.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from ..packing.cuts import DEFAULT_CUT, DROP_GROUPS, MODULE_CLASSES
from . import releases
from .arch import ARCHES, HOST_DEFAULT

DEFAULT_ELEMENTS = (
    "sles-ipa-install sles sles-zypper-config sles-ipa-ramdisk-base dynamic-login "
    "journal-to-console devuser openssh-server sles-extra-hardware ipa-module-autoload"
)
DEFAULT_REMOVE_FIRMWARE = (
    "amdgpu,netronome,qcom,ti-communication,ti-keystone,ueagle-atm,rsi,mrvl,brcm,mediatek,ath10k,rtlwifi"
)


# How a value is written for the hooks; None: the variable is not exported. The docstring is what
# docs/settings.md says of it.
def text(value: Any) -> str | None:
    """the value (empty too)"""
    return None if value is None else str(value)


def optional(value: Any) -> str | None:
    """the value; not exported when unset or empty"""
    return None if value is None or value == "" else str(value)


def true_false(value: Any) -> str:
    """`true` or `false`"""
    return "true" if value else "false"


def one_or_empty(value: Any) -> str:
    """`1`, or empty when off"""
    return "1" if value else ""


Render = Callable[[Any], str | None]


@dataclass(frozen=True)
class Setting:
    key: str
    default: Any
    kind: str  # str, int, bool, path, list (space separated), pathlist (colon separated), choice, arch
    help: str
    envs: tuple[str, ...] = ()
    flag: bool = True  # exposed as --key-with-dashes
    secret: bool = False
    choices: tuple[str, ...] = ()
    flag_name: str = ""  # when the flag reads better than the key (--repo URL... for repos)
    empty_ok: bool = False  # a path with a default that '' may turn off
    many: bool = False  # the flag takes several words (--repo URL URL...): argparse's nargs="+"
    export: str | None = None  # the variable the hooks get (DIB's or the seed's name)
    render: Render | None = None  # how `export` is written (default: true_false for bools, else text)
    export_from: str = ""  # the Config attribute exported instead of the value (one that fills in a default)
    default_doc: str = ""  # the default as docs/settings.md shows it, when it depends on the host
    group: str = ""  # the heading above the row in SETTINGS

    @property
    def renderer(self) -> Render:
        return self.render or (true_false if self.kind == "bool" else text)

    @property
    def option(self) -> str:
        return "--" + (self.flag_name or self.key.replace("_", "-"))

    @property
    def metavar(self) -> str:
        """The flag's argument as --help and docs/settings.md name it (one word of a list: REPO)."""
        return self.key.upper().rstrip("S") if self.many else self.key.upper()

    @property
    def all_envs(self) -> tuple[str, ...]:
        return self.envs or ("SIB_" + self.key.upper(),)


S = Setting
_ROWS: tuple[str | Setting, ...] = (
    "Where things are",
    S("workspace", "/tmp/dib", "path", "Build workspace; its build/ subdirectory is emptied when a build starts.",
      ("IPA_BUILD_WORKSPACE",)),
    S("output", None, "path", "Directory for the artifacts (default: the workspace, where metal3-dev-env looks)."),
    S("name", "ironic-python-agent", "str", "Artifact base name: <name>.kernel, .initramfs, .tar ...",
      ("IPA_IMAGE_NAME",), export="IMAGE_NAME"),
    S("base_os", "sles", "str", "Operating-system element put in the element list.", ("IPA_BASE_OS",)),
    S("arch", HOST_DEFAULT.suse, "arch", "Target architecture (SUSE's name; DIB's is accepted too: ARCH=arm64). "
      "`build --arch x86_64,aarch64` builds each in turn, each under its metal3 name.",
      ("SIB_ARCH", "ARCH"), choices=tuple(a.suse for a in ARCHES), default_doc="the host's architecture"),
    S("images_dir", "~/sles_images", "path", "Directory searched for the base qcow2 and the Full ISO; when no "
      "release is named, their names say which release to build.", ("DIB_SLES_OFFLINE_TARGET_DIR",),
      export="DIB_SLES_OFFLINE_TARGET_DIR"),
    S("base_image", None, "path", "The SLES Minimal-VM qcow2 (default: found in images_dir by name)."),
    S("base_tree", None, "path", "Start from an already extracted root tree instead of a qcow2."),
    S("iso", None, "path", "The SLES Full ISO: SLE 15's Media1 ISO or SLES 16's install.iso (default: "
      "images_dir/<iso_name>)."),
    S("iso_name", None, "str", "Full ISO file name in images_dir (default: SUSE's name for the release, "
      "SLE-15-<SP>-Full-<arch>-GM-Media1.iso or SLES-16.<n>-Full-<arch>-GM.install.iso, or its newest "
      "-QU<n> refresh there).", ("DIB_SLES_ISO_REPO_FILE",), flag=False, export="DIB_SLES_ISO_REPO_FILE",
      export_from="iso_file_name"),
    S("sles_release", releases.DEFAULT.prefix, "str", "SLES release as its file names spell it: SLE-15 (the "
      "service pack apart) or SLES-16.0, SLES-16.1 (15 and 16.0 are understood too; see config/releases.py).",
      ("DIB_SLES_RELEASE",), export="DIB_SLES_RELEASE",
      default_doc="the release whose media are in images_dir (the newest, when several), else SLE-15"),
    S("service_pack", releases.DEFAULT.service_pack, "str", "SLE 15 service pack, SP4 to SP7; SLES 16 has none "
      "(exported empty).", ("DIB_SLES_SERVICE_PACK",), export="DIB_SLES_SERVICE_PACK",
      default_doc="SP7, or the one whose media are in images_dir"),
    S("sles_python", None, "choice", "Interpreter of the IPA venv (default: the release's, python3.11 on 15 and "
      "python3.13 on 16; on SP4 python3.11 when a repository provides python311, else python3.10).",
      ("DIB_SLES_PYTHON",), choices=releases.PYTHONS, flag_name="python", export="DIB_SLES_PYTHON",
      export_from="python"),
    S("install_type", "Minimal-VM", "str", "Image type in the base image name.", ("DIB_SLES_INSTALL_TYPE",),
      flag=False, export="DIB_SLES_INSTALL_TYPE"),
    S("image_platform", f"{releases.DEFAULT.platform}-GM", "str", "Platform in the base image name (by default "
      "the release's GM one, or its newest -QU<n> refresh in images_dir).", ("DIB_SLES_IMAGE_TARGET_PLATFORM",),
      flag=False, export="DIB_SLES_IMAGE_TARGET_PLATFORM", default_doc="OpenStack-Cloud-GM on 15, Cloud-GM on 16"),
    S("repos", [], "list", "Extra zypper repositories (URLs) added next to the Media1 modules; with them the "
      "ISO is optional.", ("SIB_REPOS",), flag_name="repo", many=True),
    S("repo_credentials", [], "pathlist", "zypper credentials files (or credentials.d directories) for repository "
      "URLs that name them with ?credentials=NAME.", ("SIB_REPO_CREDENTIALS",), many=True),
    S("repo_keys", [], "pathlist", "OpenPGP public keys trusted to sign the --repo repositories, besides the keys "
      "in the base image's rpm database (zypper never imports a key itself; gpgkey=FILE in a --repo URL trusts a "
      "key for that repository only).", ("SIB_REPO_KEYS",), flag_name="repo-key", many=True),
    "Elements",
    S("elements", DEFAULT_ELEMENTS, "list", "Element list (replaces the default list).", ("SIB_ELEMENTS",), many=True),
    S("elements_path", [], "pathlist", "Extra element directories, searched before the built-in elements/.",
      ("ELEMENTS_PATH",), many=True),
    "Sources",
    S("ipa_repo", "https://opendev.org/openstack/ironic-python-agent", "str", "ironic-python-agent git URL.",
      ("IPA_REPO",)),
    S("ipa_ref", "master", "str", "ironic-python-agent ref (branch, tag or commit).", ("IPA_REF", "IPA_COMMIT")),
    S("ironic_lib_repo", "https://opendev.org/openstack/ironic-lib", "str", "ironic-lib git URL.",
      ("IRONIC_LIB_REPO", "IRONIc_LIB_REPO")),
    S("ironic_lib_ref", "master", "str", "ironic-lib ref.", ("IRONIC_LIB_REF",)),
    S("requirements_repo", "https://opendev.org/openstack/requirements", "str",
      "openstack/requirements git URL (upper-constraints).", ("OPENSTACK_REQUIREMENTS_REPO",)),
    S("requirements_ref", "master", "str", "openstack/requirements ref.", ("OPENSTACK_REQUIREMENTS_REF",)),
    S("ironic_lib_from_source", False, "bool", "Install ironic-lib from the cloned source.",
      ("IRONIC_LIB_FROM_SOURCE",), export="IRONIC_LIB_FROM_SOURCE"),
    "Contents",
    S("kernel_modules", "megaraid_sas", "str", "Kernel modules loaded at boot (space separated).",
      ("DIB_ADDITIONAL_IPA_KERNEL_MODULES",), export="DIB_ADDITIONAL_IPA_KERNEL_MODULES"),
    S("ipa_cert", None, "path", "CA certificate appended to the IPA venv's trust bundle.", ("DIB_IPA_CERT",),
      export="DIB_IPA_CERT", render=optional),
    S("enable_rescue", True, "bool", "Configure IPA rescue mode.", ("DIB_IPA_ENABLE_RESCUE",),
      export="DIB_IPA_ENABLE_RESCUE"),
    S("install_ssh", False, "bool", "Keep an SSH server in the ramdisk (off: sshd removed; keys for the dev "
      "user turn it on).", ("DIB_IPA_INSTALL_SSH",), export="DIB_IPA_INSTALL_SSH"),
    S("install_debug_tools", False, "bool", "Keep ss, dig, diff, top, ping and vim in the ramdisk.",
      ("DIB_IPA_INSTALL_DEBUG_TOOLS",), export="DIB_IPA_INSTALL_DEBUG_TOOLS"),
    S("keep_units", "", "str", "Units the ramdisk keeps although they only make sense on installed systems "
      "(sles-ipa-ramdisk-base disables the others: maintenance timers, smartd, ipmievd...) and boot-time "
      "generators it turns off (systemd-gpt-auto-generator...); space separated.",
      ("DIB_IPA_KEEP_UNITS",), export="DIB_IPA_KEEP_UNITS"),
    S("remove_firmware", DEFAULT_REMOVE_FIRMWARE, "str", "Firmware directories removed (comma separated).",
      ("IPA_REMOVE_FIRMWARE",), export="IPA_REMOVE_FIRMWARE"),
    S("ipa_plugins", "", "str", "IPA plugins (custom hardware managers) pip-installed into the agent's venv, "
      "comma or space separated: each a directory under ipa_plugin_dir (as the Nordix builder's "
      "ipa-plugin-installer), or the path of a project directory, wheel or sdist.", ("DIB_IPA_PLUGINS",),
      export="DIB_IPA_PLUGINS"),
    S("ipa_plugin_dir", "/tmp/hardware_managers", "path", "Where ipa_plugins names are looked up.",
      ("DIB_CUSTOM_HW_MANAGER_DIR",), export="DIB_CUSTOM_HW_MANAGER_DIR"),
    S("hardware_package", None, "str", "pip requirement for the hardware package.", ("DIB_IPA_HARDWARE_PACKAGE",),
      export="DIB_IPA_HARDWARE_PACKAGE", render=optional),
    S("hardware_version", None, "str", "Version of hardware when hardware_package is unset.",
      ("DIB_IPA_HARDWARE_VERSION",), export="DIB_IPA_HARDWARE_VERSION", render=optional),
    S("tls_cert_file", None, "path", "TLS certificate for the agent API (sles-ipa-tls).", ("DIB_IPA_CERT_FILE",),
      export="DIB_IPA_CERT_FILE", render=optional),
    S("tls_key_file", None, "path", "TLS private key matching tls_cert_file.", ("DIB_IPA_KEY_FILE",),
      export="DIB_IPA_KEY_FILE", render=optional),
    S("tls_ca_file", None, "path", "CA for client certificate validation.", ("DIB_IPA_CA_FILE",),
      export="DIB_IPA_CA_FILE", render=optional),
    S("tls_cert_hostname", "ipa-ramdisk.example.com", "str", "CN of a generated certificate.",
      ("DIB_IPA_CERT_HOSTNAME",), export="DIB_IPA_CERT_HOSTNAME"),
    S("tls_cert_expiration", 1095, "int", "Days a generated certificate is valid.", ("DIB_IPA_CERT_EXPIRATION",),
      export="DIB_IPA_CERT_EXPIRATION"),
    "Dev user",
    S("dev_user_pass", False, "bool", "Give the dev user a password ('test', as the seed) and passwordless sudo.",
      ("ENABLE_DEV_USER_PASS",)),
    S("dev_user_ssh", False, "bool", "Install dev_user_ssh_path as the dev user's authorized key.",
      ("ENABLE_DEV_USER_SSH",)),
    S("dev_user_ssh_path", "~/.ssh/id_rsa.pub", "path", "Public key used when dev_user_ssh is on.",
      ("DEV_USER_SSH_PATH",)),
    S("dev_user_username", "metal3", "str", "Dev user name.", ("DIB_DEV_USER_USERNAME",),
      export="DIB_DEV_USER_USERNAME"),
    S("dev_user_password", None, "str", "Dev user password.", ("DIB_DEV_USER_PASSWORD",), secret=True,
      export="DIB_DEV_USER_PASSWORD", render=optional),
    S("dev_user_pwdless_sudo", None, "str", "yes: passwordless sudo for the dev user.",
      ("DIB_DEV_USER_PWDLESS_SUDO",), export="DIB_DEV_USER_PWDLESS_SUDO", render=optional),
    S("dev_user_authorized_keys", None, "path", "authorized_keys file for the dev user.",
      ("DIB_DEV_USER_AUTHORIZED_KEYS",), export="DIB_DEV_USER_AUTHORIZED_KEYS", render=optional),
    S("dev_user_shell", None, "str", "Dev user login shell.", ("DIB_DEV_USER_SHELL",),
      export="DIB_DEV_USER_SHELL", render=optional),
    "Packing",
    S("compress", "zstd", "str", "Compressor: zstd, gzip, xz, none, or a command reading stdin ('zstd -19 -T0').",
      ("DIB_IPA_COMPRESS_CMD", "DIB_IPA_COMPRESS_COMMAND")),
    S("compress_level", None, "int", "Compression level (zstd 1-19, gzip 1-9, xz 0-9; default zstd 9, gzip 6, xz 6)."),
    S("release", False, "bool", "Release profile: zstd level 19 unless a level is given."),
    S("minimal_prune", False, "bool", "Skip most ramdisk pruning (and the module cut).", ("DIB_IPA_MINIMAL_PRUNE",)),
    S("cut_modules", list(DEFAULT_CUT), "list",
      "Kernel module classes cut from the ramdisk, with the firmware only they use; empty keeps all.",
      ("DIB_IPA_CUT_MODULES",), choices=tuple(MODULE_CLASSES)),
    S("drop_packages", list(DROP_GROUPS), "list",
      "Package groups that leave the tree before packing, with the libraries only they linked: "
      "package-manager (zypper, rpm and their databases, and GnuPG, which only they run; the package list "
      "stays in the manifest, SBOM and /usr/lib/sles-ipa-builder), perl (when the agent runs no perl "
      "script); empty keeps both.",
      ("SIB_DROP_PACKAGES",), choices=DROP_GROUPS),
    S("keep_paths", [], "list", "Paths (globs relative to the root) the ramdisk keeps although a prune rule "
      "matches them.", ("SIB_KEEP_PATHS",)),
    S("prune_paths", [], "list", "More paths (globs relative to the root) to leave out of the ramdisk.",
      ("SIB_PRUNE_PATHS",)),
    S("size_limit_mb", 500, "int", "The tar may not reach this size (MiB).", ("IRONIC_SIZE_LIMIT_MB",)),
    S("boot_media", "auto", "choice", "Also write <name>.esp.img (a UEFI ESP with the media's shim and signed grub) "
      "and <name>.iso (bootable: UEFI, and BIOS where the media has isolinux): auto warns when the Secure Boot "
      "chain is incomplete, secure-boot makes that an error before any work, off writes neither.",
      choices=("auto", "secure-boot", "off")),
    S("iso_kernel_args", "", "str", "Kernel parameters the ISO's boot menu adds after the console ones, e.g. "
      "ipa-api-url=http://IRONIC:6385 for a standalone Ironic (no quotes, newlines or grub syntax)."),
    S("source_date_epoch", None, "int", "Clamp mtimes in the initramfs to this time.", ("SOURCE_DATE_EPOCH",)),
    "Build behaviour",
    S("ca_bundle", "/etc/ssl/certs/ca-certificates.crt", "path",
      "CA bundle visible to pip and git inside the target during the build only ('' to disable).", empty_ok=True),
    S("offline", False, "bool", "Use caches only; contact nothing.", ("SIB_OFFLINE", "DIB_OFFLINE"),
      export="DIB_OFFLINE", render=one_or_empty),
    S("keep_workspace", False, "bool", "Keep the build tree after the build."),
    S("cache_generations", 2, "int", "Root trees and cache layers kept per layer (the most recently used)."),
    S("cache", True, "bool", "Start from the deepest cache layer whose inputs match; --no-cache runs every step "
      "(the layers are made again)."),
    S("break", None, "str", "Open a shell in the target: before-<phase>, after-<phase> or after-error (comma list).",
      ("SIB_BREAK", "break")),
    S("report", None, "path", "Also write the build report (manifest, timings) to this JSON file."),
    S("sign_key", None, "path", "minisign secret key: sign <name>.sha256 (<name>.sha256.minisig); "
      "an encrypted key's password comes from SIB_SIGN_PASSWORD."),
    S("publish", None, "str", "After the build, publish the artifacts: oci://REGISTRY/REPO:TAG or "
      "oci-layout:DIR[:TAG] (see `publish`)."),
    S("publish_insecure", False, "bool", "The publish registry speaks plain HTTP or has an untrusted certificate."),
    S("publish_replace", False, "bool", "Publishing replaces the tag's whole index; by default the manifests of "
      "other architectures in it are kept."),
    S("boot_test", False, "bool", "Boot the result in QEMU at the end of the build.", ("ENABLE_BOOTSTRAP_TEST",)),
    S("boot_timeout", 600, "int", "Seconds the boot test waits for the agent."),
    S("boot_memory", 2048, "int", "Boot test VM memory (MiB)."),
    S("accel", "auto", "choice", "QEMU/libguestfs acceleration: auto tries KVM then falls back to TCG.",
      choices=("auto", "kvm", "tcg")),
    S("qemu_cpu", "", "str", "QEMU -cpu of the boot tests, e.g. max or Nehalem (default: the release's, max on "
      "SLES 16; else host under KVM, the arch's own under TCG). SLES 16 needs x86-64-v2: a model below it is "
      "refused.", default_doc="the release's (max on SLES 16), else host (KVM) or the arch's (TCG)"),
    "metal3-dev-env",
    S("quiet_cleanup", False, "bool", "Hide the output of metal3-dev-env's make clean.", ("QUIET_CLEANUP",),
      flag=False),
    S("dev_env_repo", "https://github.com/metal3-io/metal3-dev-env", "str", "metal3-dev-env repository.",
      ("METAL3_DEV_ENV_REPO",), flag=False),
    S("dev_env_location", None, "path", "metal3-dev-env checkout (default <workspace>/metal3-dev-env).",
      ("DEV_ENV_REPO_LOCATION",), flag=False),
    S("dev_env_branch", "main", "str", "metal3-dev-env branch.", ("METAL3_DEV_ENV_BRANCH",), flag=False),
    S("dev_env_commit", "HEAD", "str", "metal3-dev-env commit.", ("METAL3_DEV_ENV_COMMIT",), flag=False),
)


def _grouped(rows: tuple[str | Setting, ...]) -> tuple[Setting, ...]:
    """The rows, each with the heading above it as its group."""
    out: list[Setting] = []
    heading = ""
    for row in rows:
        if isinstance(row, str):
            heading = row
        else:
            out.append(replace(row, group=heading))
    return tuple(out)


SETTINGS: tuple[Setting, ...] = _grouped(_ROWS)
BY_KEY = {s.key: s for s in SETTINGS}
