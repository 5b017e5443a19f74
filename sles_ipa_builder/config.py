"""The resolved configuration: defaults < TOML file < environment variables < command-line flags.

`resolve()` reads every row of settings.SETTINGS from those four places, converts and validates it,
and returns one frozen Config that remembers where each value came from. All validation happens here,
before any work: a bad value is a ConfigError (exit 2) with a hint.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import ConfigError
from .settings import BY_KEY, SETTINGS, Setting

TRUE = {"1", "true", "yes", "y", "on"}
FALSE = {"0", "false", "no", "n", "off", ""}
BUILTIN_COMPRESSORS = ("zstd", "gzip", "xz", "none")
PHASE_NAMES = ("root", "extra-data", "pre-install", "install", "post-install", "post-root", "pre-finalise",
               "finalise", "cleanup")
REPO_ENV = re.compile(r"^DIB_REPO(LOCATION|REF)_(\w+)$")


def parse_bool(value: Any, where: str) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in TRUE:
        return True
    if text in FALSE:
        return False
    raise ConfigError(f"{where}: '{value}' is not a boolean", "use true/false, yes/no or 1/0")


def convert(setting: Setting, value: Any, where: str) -> Any:
    """Turn a raw value (str from env/flag, any from TOML) into the setting's type."""
    if value is None:
        return None
    kind = setting.kind
    if kind == "bool":
        return parse_bool(value, where)
    if kind == "int":
        if isinstance(value, bool):
            raise ConfigError(f"{where}: '{value}' is not a whole number", f"give {setting.key} a number")
        try:
            return int(str(value).strip())
        except ValueError:
            raise ConfigError(
                f"{where}: '{value}' is not a whole number", f"give {setting.key} a number, e.g. {setting.default}"
            ) from None
    if kind == "list":
        items = value if isinstance(value, list) else str(value).split()
        return [str(i) for i in items]
    if kind == "pathlist":
        items = value if isinstance(value, list) else [p for p in str(value).split(":") if p]
        return [Path(os.path.expanduser(str(p))) for p in items]
    if kind == "path":
        text = str(value)
        return Path(os.path.expanduser(text)) if text else None
    if kind == "choice":
        text = str(value)
        if text not in setting.choices:
            raise ConfigError(f"{where}: '{text}' is not one of {', '.join(setting.choices)}",
                              f"set {setting.key} to one of {', '.join(setting.choices)}")
        return text
    return str(value)


@dataclass(frozen=True)
class Config:
    """All settings by key (attribute access: cfg.workspace) plus where each came from."""

    values: Mapping[str, Any]
    sources: Mapping[str, str]
    # DIB_* variables of the user's environment and TOML [env] table that no setting claims:
    # elements read arbitrary DIB_ variables, so they pass through to the hooks.
    passthrough: Mapping[str, str] = field(default_factory=dict)
    # name -> (location, ref) from DIB_REPOLOCATION_<name> / DIB_REPOREF_<name>
    repo_overrides: Mapping[str, tuple[str | None, str | None]] = field(default_factory=dict)

    def __getattr__(self, key: str) -> Any:
        try:
            return self.values[key]
        except KeyError:
            raise AttributeError(key) from None

    # --- derived values -------------------------------------------------------------------------
    @property
    def build_dir(self) -> Path:
        return Path(self.values["workspace"]) / "build"

    @property
    def output_dir(self) -> Path:
        return Path(self.values["output"] or self.values["workspace"])

    @property
    def break_points(self) -> set[str]:
        return set(_break_points(self.values["break"]))

    @property
    def tar_name(self) -> str:
        """IPA_IMAGE_TAR of the seed, which derives it from the image name the same way."""
        return f"{self.values['name']}.tar"

    @property
    def element_list(self) -> list[str]:
        """The requested elements, with the seed's `sles` slot taken by IPA_BASE_OS."""
        names = list(self.values["elements"])
        if self.values["base_os"] != "sles":
            names = [self.values["base_os"] if n == "sles" else n for n in names]
        return names

    @property
    def python(self) -> str:
        """Interpreter for the IPA venv: python3.10 on SP4 (as the seed), python3.11 from SP5 on."""
        sp = str(self.values["service_pack"]).upper()
        return "python3.10" if sp in ("SP3", "SP4") else "python3.11"

    @property
    def iso_file_name(self) -> str:
        return self.values["iso_name"] or (
            f"{self.values['sles_release']}-{self.values['service_pack']}-Full-x86_64-GM-Media1.iso"
        )

    def base_image_candidates(self) -> list[Path]:
        """Names the base image may have in images_dir: SUSE's download name and the seed's name."""
        rel, sp = self.values["sles_release"], self.values["service_pack"]
        tail = f"{self.values['install_type']}.x86_64-{self.values['image_platform']}.qcow2"
        d = Path(self.values["images_dir"])
        names = [f"{rel.replace('SLE-', 'SLES')}-{sp}-{tail}", f"{rel}-{sp}-{tail}"]
        return [d / n for n in dict.fromkeys(names)]

    def shown(self, key: str) -> Any:
        """The value as it may be printed: secrets masked."""
        value = self.values[key]
        if BY_KEY[key].secret and value:
            return "***"
        return value

    def hook_env(self) -> dict[str, str]:
        """The seed's variables as the elements expect them in their environment."""
        v = self.values
        env: dict[str, str] = dict(self.passthrough)
        seed = {
            "IMAGE_NAME": v["name"],
            "DIB_SLES_OFFLINE_TARGET_DIR": str(v["images_dir"]),
            "DIB_SLES_RELEASE": v["sles_release"],
            "DIB_SLES_SERVICE_PACK": v["service_pack"],
            "DIB_SLES_INSTALL_TYPE": v["install_type"],
            "DIB_SLES_IMAGE_TARGET_PLATFORM": v["image_platform"],
            "DIB_SLES_ISO_REPO_FILE": self.iso_file_name,
            "DIB_SLES_PYTHON": self.python,
            "DIB_ADDITIONAL_IPA_KERNEL_MODULES": v["kernel_modules"],
            "DIB_IPA_ENABLE_RESCUE": "true" if v["enable_rescue"] else "false",
            "IPA_REMOVE_FIRMWARE": v["remove_firmware"],
            "IRONIC_LIB_FROM_SOURCE": "true" if v["ironic_lib_from_source"] else "false",
            "DIB_IPA_CERT_HOSTNAME": v["tls_cert_hostname"],
            "DIB_IPA_CERT_EXPIRATION": str(v["tls_cert_expiration"]),
            "DIB_DEV_USER_USERNAME": v["dev_user_username"],
            "DIB_OFFLINE": "1" if v["offline"] else "",
        }
        optional = {
            "DIB_IPA_CERT": v["ipa_cert"],
            "DIB_IPA_CERT_FILE": v["tls_cert_file"],
            "DIB_IPA_KEY_FILE": v["tls_key_file"],
            "DIB_IPA_CA_FILE": v["tls_ca_file"],
            "DIB_IPA_HARDWARE_PACKAGE": v["hardware_package"],
            "DIB_IPA_HARDWARE_VERSION": v["hardware_version"],
            "DIB_DEV_USER_SHELL": v["dev_user_shell"],
            "DIB_DEV_USER_PWDLESS_SUDO": v["dev_user_pwdless_sudo"],
            "DIB_DEV_USER_PASSWORD": v["dev_user_password"],
            "DIB_DEV_USER_AUTHORIZED_KEYS": v["dev_user_authorized_keys"],
        }
        env.update(seed)
        env.update({k: str(val) for k, val in optional.items() if val not in (None, "")})
        return env

    def secrets(self) -> list[str]:
        """Secret values, so logs and manifests can be checked for them."""
        return [str(self.values[s.key]) for s in SETTINGS if s.secret and self.values[s.key]]


def load_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(f"config file {path} not found", "check the path given to --config") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"config file {path}: {e}", "fix the TOML syntax") from None


def _env_lookup(setting: Setting, env: Mapping[str, str]) -> tuple[str, str] | None:
    for name in setting.all_envs:
        if name in env:
            return name, env[name]
    return None


def resolve(
    cli: Mapping[str, Any] | None = None,
    *,
    config_file: Path | None = None,
    environ: Mapping[str, str] | None = None,
) -> Config:
    """Build the Config. `cli` holds only the flags the user actually gave (key -> raw value)."""
    environ = os.environ if environ is None else environ
    cli = cli or {}
    data = load_toml(config_file) if config_file else {}
    toml_env = {str(k): str(v) for k, v in (data.pop("env", {}) or {}).items()}
    data.pop("fixture", None)  # documentation table of the test media profile
    unknown = sorted(k for k in data if k not in BY_KEY)
    if unknown:
        raise ConfigError(f"{config_file}: unknown setting(s) {', '.join(unknown)}",
                          "see `sles-ipa-builder summary` or the README's settings table for valid keys")
    # The TOML [env] table sits below real environment variables.
    env: dict[str, str] = {**toml_env, **environ}

    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for s in SETTINGS:
        value, source = s.default, "default"
        if s.key in data:
            value, source = data[s.key], f"config {config_file}"
        hit = _env_lookup(s, env)
        if hit:
            name, raw = hit
            value, source = raw, ("config [env] " if name in toml_env and name not in environ else "env ") + name
        if s.key in cli and cli[s.key] is not None:
            value, source = cli[s.key], f"flag {s.option}"
        values[s.key] = convert(s, value, source if source != "default" else s.key)
        sources[s.key] = source

    claimed = {e for s in SETTINGS for e in s.all_envs}
    passthrough = {k: v for k, v in env.items() if k.startswith("DIB_") and k not in claimed
                   and not REPO_ENV.match(k)}
    overrides: dict[str, tuple[str | None, str | None]] = {}
    for k, v in env.items():
        m = REPO_ENV.match(k)
        if m:
            loc, ref = overrides.get(m.group(2), (None, None))
            overrides[m.group(2)] = (v, ref) if m.group(1) == "LOCATION" else (loc, v)
    _apply_seed_switches(values, sources)
    cfg = Config(values, sources, passthrough, overrides)
    validate(cfg)
    return cfg


def _apply_seed_switches(values: dict[str, Any], sources: dict[str, str]) -> None:
    """The seed's ENABLE_DEV_USER_* switches fill the devuser element's variables."""
    if values["dev_user_pass"]:
        if values["dev_user_password"] is None:
            values["dev_user_password"], sources["dev_user_password"] = "test", "dev_user_pass (seed default)"
        if values["dev_user_pwdless_sudo"] is None:
            values["dev_user_pwdless_sudo"], sources["dev_user_pwdless_sudo"] = "yes", "dev_user_pass"
    if values["dev_user_ssh"] and values["dev_user_authorized_keys"] is None:
        values["dev_user_authorized_keys"] = values["dev_user_ssh_path"]
        sources["dev_user_authorized_keys"] = "dev_user_ssh_path"
    if values["release"] and values["compress_level"] is None and values["compress"] == "zstd":
        values["compress_level"], sources["compress_level"] = 19, "release"


def validate(cfg: Config) -> None:
    v = cfg.values
    for key in ("size_limit_mb", "tls_cert_expiration", "boot_timeout", "boot_memory"):
        if v[key] is not None and v[key] <= 0:
            raise ConfigError(f"{key} must be positive, not {v[key]}", f"set {key} to a number above 0")
    comp = str(v["compress"]).strip()
    if not comp:
        raise ConfigError("compression is empty", f"use one of {', '.join(BUILTIN_COMPRESSORS)} or a command")
    if " " not in comp and comp not in BUILTIN_COMPRESSORS and not _is_command(comp):
        raise ConfigError(f"unknown compression '{comp}'",
                          f"use one of {', '.join(BUILTIN_COMPRESSORS)}, or a command such as 'zstd -19 -T0'")
    level = v["compress_level"]
    if level is not None and comp in ("zstd", "gzip", "xz"):
        lo, hi = {"zstd": (1, 19), "gzip": (1, 9), "xz": (0, 9)}[comp]
        if not lo <= level <= hi:
            raise ConfigError(f"{comp} level {level} is out of range {lo}-{hi}",
                              "levels above 19 use zstd windows the kernel cannot unpack" if comp == "zstd" else "")
    for key in ("ipa_cert", "tls_cert_file", "tls_key_file", "tls_ca_file", "dev_user_authorized_keys"):
        p = v[key]
        if p is not None and not Path(p).is_file():
            raise ConfigError(f"{key}: {p} is not a readable file ({cfg.sources[key]})",
                              "give the path of an existing file, or unset it")
    if bool(v["tls_cert_file"]) != bool(v["tls_key_file"]):
        raise ConfigError("a TLS certificate needs its key (DIB_IPA_CERT_FILE and DIB_IPA_KEY_FILE go together)",
                          "set both, or neither to have a certificate generated")
    if v["dev_user_password"] and not v["dev_user_username"]:
        raise ConfigError("a dev user password is set but no user name",
                          "set DIB_DEV_USER_USERNAME, or drop DIB_DEV_USER_PASSWORD")
    if v["base_tree"] is not None and not Path(v["base_tree"]).is_dir():
        raise ConfigError(f"base tree {v['base_tree']} is not a directory", "give an extracted root filesystem")
    for point in _break_points(v["break"]):
        when, _, phase = point.partition("-")
        if point != "after-error" and (when not in ("before", "after") or phase not in PHASE_NAMES):
            raise ConfigError(f"unknown break point '{point}'",
                              "use before-<phase>, after-<phase> or after-error; phases: " + ", ".join(PHASE_NAMES))
    if not v["elements"]:
        raise ConfigError("the element list is empty", "give at least an operating-system element such as sles")


def _break_points(value: str | None) -> list[str]:
    return [p.strip() for p in (value or "").split(",") if p.strip()]


def _is_command(word: str) -> bool:
    from .run import which

    return which(word) is not None
