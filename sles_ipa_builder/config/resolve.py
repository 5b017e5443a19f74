"""The resolved configuration: defaults < TOML file < environment variables < command-line flags.

`resolve()` reads every row of settings.SETTINGS from those four places, converts and validates it,
and returns one frozen Config that remembers where each value came from. All validation happens here,
before any work: a bad value is a ConfigError (exit 2) with a hint.
"""

from __future__ import annotations

import keyword
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..delivery import bootmedia, publish, sign
from ..engine.stages import parse_break_points
from ..errors import ConfigError
from ..inputs import media, repokeys
from ..inputs import repos as repositories
from ..packing.compress import Compression
from ..packing.cuts import PruneSettings
from . import detect, releases
from .arch import Arch
from .releases import Release
from .settings import BY_KEY, SETTINGS, Setting

TRUE = {"1", "true", "yes", "y", "on"}
FALSE = {"0", "false", "no", "n", "off", ""}
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
        items = [str(i) for i in (value if isinstance(value, list) else str(value).split())]
        wrong = [i for i in items if setting.choices and i not in setting.choices]
        if wrong:
            raise ConfigError(f"{where}: '{wrong[0]}' is not one of {', '.join(setting.choices)}",
                              f"give {setting.key} items of {', '.join(setting.choices)}, or none")
        return items
    if kind == "pathlist":
        items = value if isinstance(value, list) else [p for p in str(value).split(":") if p]
        return [Path(os.path.expanduser(str(p))) for p in items]
    if kind == "path":
        text = str(value)
        return Path(os.path.expanduser(text)) if text else None
    if kind == "arch":
        return Arch.parse(str(value))
    if kind == "choice":
        text = str(value)
        if text not in setting.choices:
            raise ConfigError(f"{where}: '{text}' is not one of {', '.join(setting.choices)}",
                              f"set {setting.key} to one of {', '.join(setting.choices)}")
        return text
    return str(value)


def attr(key: str) -> str:
    """The Config attribute of a setting key (`break` is a Python keyword: `break_`)."""
    return f"{key}_" if keyword.iskeyword(key) else key


@dataclass(frozen=True)
class Config:
    """Every setting as a typed attribute (checked against settings.SETTINGS by a test), plus where
    each value came from. mypy sees each attribute, so a misspelt setting is a type error."""

    workspace: Path
    output: Path | None
    name: str
    base_os: str
    arch: Arch
    images_dir: Path
    base_image: Path | None
    base_tree: Path | None
    iso: Path | None
    iso_name: str | None
    sles_release: str
    service_pack: str
    sles_python: str | None
    install_type: str
    image_platform: str
    repos: list[str]
    repo_credentials: list[Path]
    repo_keys: list[Path]
    elements: list[str]
    elements_path: list[Path]
    ipa_repo: str
    ipa_ref: str
    ironic_lib_repo: str
    ironic_lib_ref: str
    requirements_repo: str
    requirements_ref: str
    ironic_lib_from_source: bool
    kernel_modules: str
    ipa_cert: Path | None
    enable_rescue: bool
    install_ssh: bool
    install_debug_tools: bool
    keep_units: str
    remove_firmware: str
    ipa_plugins: str
    ipa_plugin_dir: Path
    hardware_package: str | None
    hardware_version: str | None
    tls_cert_file: Path | None
    tls_key_file: Path | None
    tls_ca_file: Path | None
    tls_cert_hostname: str
    tls_cert_expiration: int
    dev_user_pass: bool
    dev_user_ssh: bool
    dev_user_ssh_path: Path
    dev_user_username: str
    dev_user_password: str | None
    dev_user_pwdless_sudo: str | None
    dev_user_authorized_keys: Path | None
    dev_user_shell: str | None
    compress: str
    compress_level: int | None
    release: bool
    minimal_prune: bool
    cut_modules: list[str]
    drop_packages: list[str]
    keep_paths: list[str]
    prune_paths: list[str]
    size_limit_mb: int
    boot_media: str
    iso_kernel_args: str
    source_date_epoch: int | None
    ca_bundle: Path | None
    offline: bool
    keep_workspace: bool
    cache_generations: int
    cache: bool
    break_: str | None
    report: Path | None
    sign_key: Path | None
    publish: str | None
    publish_insecure: bool
    publish_replace: bool
    boot_test: bool
    boot_timeout: int
    boot_memory: int
    accel: str
    qemu_cpu: str
    quiet_cleanup: bool
    dev_env_repo: str
    dev_env_location: Path | None
    dev_env_branch: str
    dev_env_commit: str
    sources: Mapping[str, str] = field(default_factory=dict)
    # DIB_* variables of the user's environment and TOML [env] table that no setting claims:
    # elements read arbitrary DIB_ variables, so they pass through to the hooks.
    passthrough: Mapping[str, str] = field(default_factory=dict)
    # name -> (location, ref) from DIB_REPOLOCATION_<name> / DIB_REPOREF_<name>
    repo_overrides: Mapping[str, tuple[str | None, str | None]] = field(default_factory=dict)

    def value(self, key: str) -> Any:
        """A setting by its key, for code that walks the settings table."""
        return getattr(self, attr(key))

    # --- derived values -------------------------------------------------------------------------
    @property
    def build_dir(self) -> Path:
        return self.workspace / "build"

    @property
    def output_dir(self) -> Path:
        return self.output or self.workspace

    @property
    def break_points(self) -> frozenset[str]:
        return parse_break_points(self.break_)

    @property
    def tar_name(self) -> str:
        """IPA_IMAGE_TAR of the seed, which derives it from the image name the same way."""
        return f"{self.name}.tar"

    @property
    def element_list(self) -> list[str]:
        """The requested elements, with the seed's `sles` slot taken by IPA_BASE_OS."""
        names = list(self.elements)
        if self.base_os != "sles":
            names = [self.base_os if n == "sles" else n for n in names]
        return names

    @property
    def sles(self) -> Release:
        """The release being built, its row of config/releases.py (resolve() settled its name)."""
        return releases.find(self.sles_release, self.service_pack)

    @property
    def release_defaulted(self) -> bool:
        """No setting named the release and detect.py found none in images_dir."""
        return all(self.sources[k].startswith("default") for k in ("sles_release", "service_pack"))

    @property
    def release_source(self) -> str:
        """Why this release: the setting that named it, or what detect.py found in images_dir."""
        return next((self.sources[k] for k in ("sles_release", "service_pack") if self.sources[k] != "default"),
                    "the default")

    @property
    def python(self) -> str:
        """Interpreter for the IPA venv: sles_python, else the release's (config/releases.py)."""
        return self.sles_python or self.sles.python_for()

    @property
    def prune(self) -> PruneSettings:
        return PruneSettings(self.minimal_prune, tuple(self.keep_paths), tuple(self.prune_paths))

    @property
    def compression(self) -> Compression:
        return Compression.parse(self.compress, self.compress_level)

    @property
    def iso_file_name(self) -> str:
        """iso_name, else the release's newest refresh in images_dir, else its GM name."""
        if self.iso_name:
            return self.iso_name
        newest = releases.refreshes(self.images_dir, self.sles.iso_pattern(self.arch.suse))
        return newest[0] if newest else self.sles.iso_name(self.arch.suse)

    @property
    def iso_path(self) -> Path:
        """The Full ISO: --iso, else images_dir/<iso_file_name>."""
        return self.iso or self.images_dir / self.iso_file_name

    @property
    def iso_optional(self) -> bool:
        """With --repo URLs and no ISO given or found by name, the repositories alone provide the packages."""
        return bool(self.repos) and self.iso is None and not self.iso_path.is_file()

    def base_image_candidates(self) -> list[Path]:
        """Names the base image may have in images_dir: SUSE's download name and the seed's; with the
        platform left at its default, the newest -QU<n> refresh there first."""
        sles, arch = self.sles, self.arch.suse
        names = sles.image_names(self.install_type, arch, self.image_platform)
        if self.sources.get("image_platform", "default").startswith("default"):
            names = releases.refreshes(self.images_dir, sles.image_pattern(self.install_type, arch)) + names
        return [self.images_dir / n for n in names]

    def source_env(self) -> dict[str, str]:
        """DIB_REPOLOCATION_/DIB_REPOREF_ of every source the user set: the seed's three repositories
        always (build_ipa_sles.sh exported them, defaults included), then any DIB_REPO* override, which
        wins. elements.source_repos applies them, as DIB's source-repositories element does."""
        env = {}
        for name, location, ref in (("ironic_python_agent", self.ipa_repo, self.ipa_ref),
                                    ("ironic_lib", self.ironic_lib_repo, self.ironic_lib_ref),
                                    ("requirements", self.requirements_repo, self.requirements_ref)):
            env[f"DIB_REPOLOCATION_{name}"], env[f"DIB_REPOREF_{name}"] = location, ref
        for name, (loc, rev) in self.repo_overrides.items():
            env.update({k: v for k, v in ((f"DIB_REPOLOCATION_{name}", loc), (f"DIB_REPOREF_{name}", rev)) if v})
        return env

    def shown(self, key: str) -> Any:
        """The value as it may be printed: secrets masked."""
        value = self.value(key)
        if BY_KEY[key].secret and value:
            return "***"
        if key == "repos":  # a URL may carry a password or a token
            return [repositories.mask(u) for u in value]
        return value

    def shown_settings(self) -> dict[str, Any]:
        """Every setting as JSON can hold it, secrets masked: for summary --json and the manifest."""
        def plain(v: Any) -> Any:
            if isinstance(v, list):
                return [plain(i) for i in v]
            return str(v) if isinstance(v, Path | Arch) else v

        return {s.key: plain(self.shown(s.key)) for s in SETTINGS}

    def secrets(self) -> list[str]:
        """Secret values, so logs and manifests can be checked for them."""
        out = [str(self.value(s.key)) for s in SETTINGS if s.secret and self.value(s.key)]
        out += [secret for r in repositories.parse(self.repos) for secret in r.secrets()]
        out += [c.password for c in repositories.load_credentials(self.repo_credentials).values() if c.password]
        return out


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
                          "see `sles-ipa-builder summary` or docs/settings.md for valid keys")
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
    _required(values, sources)
    _settle_release(values, sources)
    if sources["name"] == "default" and values["arch"].metal3_suffix:
        # metal3's ironic-ipa-downloader names: ironic-python-agent${IPA_ARCH:+_${IPA_ARCH}}
        values["name"] += values["arch"].metal3_suffix
        sources["name"] = f"default for {values['arch']} (metal3's name)"
    cfg = Config(**{attr(k): v for k, v in values.items()}, sources=sources, passthrough=passthrough,
                 repo_overrides=overrides)
    validate(cfg)
    return cfg


def _required(values: dict[str, Any], sources: dict[str, str]) -> None:
    """A path setting with a default may not be emptied (ca_bundle may: '' turns it off)."""
    for s in SETTINGS:
        if s.kind == "path" and s.default is not None and values[s.key] is None and not s.empty_ok:
            raise ConfigError(f"{s.key} is empty ({sources[s.key]})", f"give {s.key} a path, or leave it unset")


def _settle_release(values: dict[str, Any], sources: dict[str, str]) -> None:
    """Name the release in its canonical spelling: the one the user named (DIB_SLES_RELEASE, or a 15
    service pack), else the one whose media are in images_dir (detect.py), else SLE 15 SP7."""
    named = sources["sles_release"] != "default"
    sp_named = sources["service_pack"] != "default" and values["service_pack"] != ""
    if named or sp_named:
        release = releases.find(values["sles_release"], values["service_pack"])
        if release.major != 15 and sp_named:
            raise ConfigError(f"service pack {values['service_pack']} ({sources['service_pack']}) is SLE 15's, "
                              f"but the release is {release.shown} ({sources['sles_release']})",
                              "unset DIB_SLES_SERVICE_PACK for SLES 16, or set DIB_SLES_RELEASE=SLE-15")
    else:
        given = [p for p in (values["iso"], values["base_image"]) if p is not None]
        found = detect.detect(values["images_dir"], values["arch"].suse, values["install_type"], given)
        release = found.release if found else releases.DEFAULT
        why = found.why if found else f"default (no SLES media by name in {values['images_dir']})"
        sources["sles_release"] = why
        if release.major == 15:
            sources["service_pack"] = why
    values["sles_release"] = release.prefix
    if not sp_named:  # a named one stays as the user spelt it (sp4): the hooks see what they were given
        values["service_pack"] = release.service_pack
    if release.major != 15 and sources["service_pack"] == "default":
        sources["service_pack"] = f"{release.shown} has none"
    if sources["image_platform"] == "default" and release.platform != releases.DEFAULT.platform:
        values["image_platform"] = f"{release.platform}-GM"
        sources["image_platform"] = f"default for {release.shown}"
    if sources["qemu_cpu"] == "default" and release.qemu_cpu:
        values["qemu_cpu"], sources["qemu_cpu"] = release.qemu_cpu, f"default for {release.shown}"


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
    # keys for the dev user ask for an SSH server, unless DIB_IPA_INSTALL_SSH says otherwise
    if values["dev_user_authorized_keys"] is not None and sources["install_ssh"] == "default":
        values["install_ssh"], sources["install_ssh"] = True, "dev_user_authorized_keys"
    if values["release"] and values["compress_level"] is None and values["compress"] == "zstd":
        values["compress_level"], sources["compress_level"] = 19, "release"


def validate(cfg: Config) -> None:
    for key in ("size_limit_mb", "tls_cert_expiration", "boot_timeout", "boot_memory"):
        if cfg.value(key) <= 0:
            raise ConfigError(f"{key} must be positive, not {cfg.value(key)}", f"set {key} to a number above 0")
    cfg.compression  # noqa: B018 - compress.py is the one judge of compressors and their levels
    _check_media_release(cfg)
    offered = releases.pythons(cfg.sles.major)
    if cfg.sles_python is not None and cfg.sles_python not in offered:
        raise ConfigError(f"{cfg.sles_python} ({cfg.sources['sles_python']}) is no interpreter of {cfg.sles.shown}",
                          f"set DIB_SLES_PYTHON to {' or '.join(offered)}, or leave it unset")
    for key in ("ipa_cert", "tls_cert_file", "tls_key_file", "tls_ca_file", "dev_user_authorized_keys"):
        p = cfg.value(key)
        if p is not None and not Path(p).is_file():
            raise ConfigError(f"{key}: {p} is not a readable file ({cfg.sources[key]})",
                              "give the path of an existing file, or unset it")
    if bool(cfg.tls_cert_file) != bool(cfg.tls_key_file):
        raise ConfigError("a TLS certificate needs its key (DIB_IPA_CERT_FILE and DIB_IPA_KEY_FILE go together)",
                          "set both, or neither to have a certificate generated")
    if cfg.dev_user_password and not cfg.dev_user_username:
        raise ConfigError("a dev user password is set but no user name",
                          "set DIB_DEV_USER_USERNAME, or drop DIB_DEV_USER_PASSWORD")
    if cfg.sign_key is not None:
        sign.check_key(cfg.sign_key)
    bootmedia.check_kernel_args(cfg.iso_kernel_args)
    if cfg.publish is not None:
        publish.parse_destination(cfg.publish)
    if cfg.base_tree is not None and not cfg.base_tree.is_dir():
        raise ConfigError(f"base tree {cfg.base_tree} is not a directory", "give an extracted root filesystem")
    cfg.break_points  # noqa: B018 - phase.py parses break points, here as at the build
    creds = repositories.load_credentials(cfg.repo_credentials)
    for repo in repositories.parse(cfg.repos):
        repositories.credentials_for(repo, creds)
        if repo.key_file is not None:
            repokeys.read_file(repo.key_file, f"gpgkey= of {repo.shown}")
    for key_file in cfg.repo_keys:
        repokeys.read_file(key_file)
    from ..steps import plugins  # here: the steps import the engine, which imports this module

    plugins.paths(cfg)
    if not cfg.elements:
        raise ConfigError("the element list is empty", "give at least an operating-system element such as sles")


def _check_media_release(cfg: Config) -> None:
    """A 16 install.iso with a 15 release, or a Media1 ISO with a 16 one, is refused before any work;
    so is a qcow2 given by SUSE's name of the other major release. The ISO's top directories say which
    it is (cheap: pycdlib's directory records, cached for the build); a file that is no ISO is judged
    by its name, and open_media() refuses it later. A name SUSE's patterns do not know is no mismatch
    (files get renamed); the qcow2 has only its name."""
    _check_iso_release(cfg)
    _check_image_release(cfg)


def _named(path: Path, cfg: Config) -> Release | None:
    """The release SUSE's name of this file says, None when the name is not one of SUSE's."""
    return next(iter(detect.media([path.name], cfg.arch.suse, cfg.install_type)), None)


def _switch_to(major: int, named: Release | None) -> str:
    """How to set the release to `major`'s (the one `named` when its name says one of that major)."""
    if major == 16:
        other = named.prefix if named is not None and named.major == 16 else "SLES-16.<n>"
        return f"set DIB_SLES_RELEASE={other} (--sles-release) and unset DIB_SLES_SERVICE_PACK"
    sp = named.service_pack if named is not None and named.major == 15 else "SP<n>"
    return f"set DIB_SLES_RELEASE=SLE-15 and DIB_SLES_SERVICE_PACK={sp} (--sles-release SLE-15 --service-pack {sp})"


def _check_iso_release(cfg: Config) -> None:
    iso, sles, arch = cfg.iso_path, cfg.sles, cfg.arch.suse
    if not iso.is_file():
        return
    named = _named(iso, cfg)
    layout = media.layout_of(iso) or (named.layout if named else None)
    if layout is None or layout == sles.layout:
        return
    what, major = ("a SLES 16 install ISO", 16) if layout == releases.INSTALL else ("a SLE 15 Media1 ISO", 15)
    raise ConfigError(f"{iso.name} is {what}, but the build is for {sles.shown} ({cfg.release_source})",
                      f"{_switch_to(major, named)}, or give the {sles.iso_name(arch)}")


def _check_image_release(cfg: Config) -> None:
    image, sles = cfg.base_image, cfg.sles
    named = _named(image, cfg) if image is not None else None
    if image is None or named is None or named.major == sles.major:
        return
    wanted = sles.image_names(cfg.install_type, cfg.arch.suse, cfg.image_platform)[0]
    raise ConfigError(f"{image.name} is SUSE's name of a {named.shown} qcow2, but the build is for {sles.shown} "
                      f"({cfg.release_source})", f"{_switch_to(named.major, named)}, or give the {wanted}")
