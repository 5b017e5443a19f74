"""Configuration: precedence, conversion, validation, secrets."""

from __future__ import annotations

from pathlib import Path

import pytest

from sles_ipa_builder.config import releases
from sles_ipa_builder.config import resolve as config
from sles_ipa_builder.config.settings import SETTINGS
from sles_ipa_builder.engine.hookenv import hook_env
from sles_ipa_builder.errors import ConfigError


def resolve(cli=None, env=None, toml: str | None = None, tmp_path: Path | None = None):
    path = None
    if toml is not None:
        assert tmp_path is not None
        path = tmp_path / "c.toml"
        path.write_text(toml)
    return config.resolve(cli or {}, config_file=path, environ=env or {})


def _hook_env(cfg: config.Config) -> dict[str, str]:
    return hook_env(cfg, [], [])


def test_defaults_are_the_seeds():
    cfg = resolve()
    assert cfg.workspace == Path("/tmp/dib")
    assert cfg.name == "ironic-python-agent"
    assert cfg.size_limit_mb == 500
    assert cfg.tar_name == "ironic-python-agent.tar"
    assert cfg.output_dir == Path("/tmp/dib")
    assert cfg.build_dir == Path("/tmp/dib/build")
    assert cfg.element_list[0] == "sles-ipa-install" and "sles" in cfg.element_list
    assert cfg.sources["name"] == "default"


def test_precedence_default_toml_env_flag(tmp_path):
    toml = 'name = "from-toml"\nsize_limit_mb = 100\ncompress = "gzip"\n'
    cfg = resolve(toml=toml, tmp_path=tmp_path)
    assert (cfg.name, cfg.size_limit_mb, cfg.compress) == ("from-toml", 100, "gzip")
    assert cfg.sources["name"].startswith("config ")

    cfg = resolve(env={"IPA_IMAGE_NAME": "from-env", "IRONIC_SIZE_LIMIT_MB": "200"}, toml=toml, tmp_path=tmp_path)
    assert (cfg.name, cfg.size_limit_mb) == ("from-env", 200)
    assert cfg.sources["name"] == "env IPA_IMAGE_NAME"

    cfg = resolve(cli={"name": "from-flag"}, env={"IPA_IMAGE_NAME": "from-env"}, toml=toml, tmp_path=tmp_path)
    assert cfg.name == "from-flag"
    assert cfg.sources["name"] == "flag --name"
    assert cfg.size_limit_mb == 100  # untouched keys keep the lower layer


def test_toml_env_table_sits_below_the_real_environment(tmp_path):
    toml = '[env]\nIPA_IMAGE_NAME = "toml-env"\nDIB_FOO = "bar"\nDIB_REPOREF_requirements = "stable"\n'
    cfg = resolve(toml=toml, tmp_path=tmp_path)
    assert cfg.name == "toml-env"
    assert cfg.passthrough["DIB_FOO"] == "bar"
    assert cfg.repo_overrides["requirements"] == (None, "stable")
    cfg = resolve(env={"IPA_IMAGE_NAME": "real"}, toml=toml, tmp_path=tmp_path)
    assert cfg.name == "real"


def test_seed_variable_names_and_fixed_typos():
    cfg = resolve(env={"IPA_COMMIT": "abc123", "IRONIC_LIB_REPO": "file:///x", "DIB_IPA_COMPRESS_COMMAND": "xz"})
    assert cfg.ipa_ref == "abc123"
    assert cfg.ironic_lib_repo == "file:///x"
    assert cfg.compress == "xz"
    # the seed's typo still works, the real name wins when both are set
    cfg = resolve(env={"IRONIc_LIB_REPO": "typo", "IRONIC_LIB_REPO": "real"})
    assert cfg.ironic_lib_repo == "real"
    assert resolve(env={"IRONIc_LIB_REPO": "typo"}).ironic_lib_repo == "typo"


@pytest.mark.parametrize("text,expected", [
    ("true", True), ("yes", True), ("1", True), ("YES", True),
    ("false", False), ("no", False), ("0", False), ("", False),
])
def test_booleans(text, expected):
    assert resolve(env={"DIB_IPA_MINIMAL_PRUNE": text}).minimal_prune is expected


def test_images_dir_and_both_base_image_names(tmp_path):
    cfg = resolve(env={"DIB_SLES_OFFLINE_TARGET_DIR": str(tmp_path)})
    assert cfg.service_pack == "SP7"  # the upstream's default since 2025-08
    names = [p.name for p in cfg.base_image_candidates()]
    assert names == [
        "SLES15-SP7-Minimal-VM.x86_64-OpenStack-Cloud-GM.qcow2",
        "SLE-15-SP7-Minimal-VM.x86_64-OpenStack-Cloud-GM.qcow2",
    ]
    assert all(p.parent == tmp_path for p in cfg.base_image_candidates())
    assert cfg.iso_file_name == "SLE-15-SP7-Full-x86_64-GM-Media1.iso"


@pytest.mark.parametrize("sp", ["SP4", "SP5", "SP6", "SP7"])
def test_every_first_class_service_pack_names_its_media(sp):
    cfg = resolve(env={"DIB_SLES_SERVICE_PACK": sp})
    assert cfg.iso_file_name == f"SLE-15-{sp}-Full-x86_64-GM-Media1.iso"
    assert [p.name for p in cfg.base_image_candidates()][0] == f"SLES15-{sp}-Minimal-VM.x86_64-OpenStack-Cloud-GM.qcow2"
    env = _hook_env(cfg)
    assert env["DIB_SLES_SERVICE_PACK"] == sp and env["DIB_RELEASE"] == f"15.{sp[2:]}"
    assert env["DIB_SLES_PYTHON_PACKAGE"] == env["DIB_SLES_PYTHON"].replace(".", "")
    assert env["DIB_SLES_PKG_MKINITRD"] == ("mkinitrd" if sp == "SP4" else "dracut-mkinitrd-deprecated")


def test_python_per_service_pack():
    assert resolve().python == "python3.11"
    assert resolve(env={"DIB_SLES_SERVICE_PACK": "SP4"}).python == "python3.10"  # the GM media's
    assert resolve(env={"DIB_SLES_SERVICE_PACK": "SP5"}).python == "python3.11"
    assert resolve(env={"DIB_SLES_SERVICE_PACK": "SP9"}).python == "python3.11"  # newer than the table
    # SP4 takes python311 when a repository provides it (the update channel), else python310
    sp4 = releases.find("SLE-15", "SP4")
    assert sp4.python_for(lambda name: name == "python311") == "python3.11"
    assert sp4.python_for(lambda name: False) == "python3.10"
    assert releases.find("SLE-15", "SP7").python_for(lambda name: False) == "python3.11"
    # an explicit choice wins, and a wrong one is refused
    cfg = resolve(env={"DIB_SLES_SERVICE_PACK": "SP4", "DIB_SLES_PYTHON": "python3.11"})
    assert cfg.python == "python3.11" and _hook_env(cfg)["DIB_SLES_PYTHON_PACKAGE"] == "python311"
    with pytest.raises(ConfigError, match="not one of"):
        resolve(env={"DIB_SLES_PYTHON": "python3.6"})


@pytest.mark.parametrize("env,fragment", [
    ({"IRONIC_SIZE_LIMIT_MB": "abc"}, "not a whole number"),
    ({"IRONIC_SIZE_LIMIT_MB": "0"}, "must be positive"),
    ({"DIB_IPA_COMPRESS_CMD": "lz5"}, "unknown compression"),
    ({"DIB_IPA_CERT": "/nonexistent/cert.pem"}, "not a readable file"),
    ({"DIB_DEV_USER_PASSWORD": "pw", "DIB_DEV_USER_USERNAME": ""}, "no user name"),
    ({"DIB_IPA_MINIMAL_PRUNE": "maybe"}, "not a boolean"),
    ({"DIB_IPA_CERT_FILE": "/etc/hostname"}, "needs its key"),
    ({"SIB_BREAK": "after-lunch"}, "unknown break point"),
    ({"SIB_ACCEL": "warp"}, "not one of"),
])
def test_bad_values(env, fragment):
    with pytest.raises(ConfigError) as exc:
        resolve(env=env)
    assert fragment in exc.value.message
    assert exc.value.hint
    assert exc.value.exit_code == 2


def test_unknown_toml_key(tmp_path):
    with pytest.raises(ConfigError, match="unknown setting"):
        resolve(toml="nmae = 'x'\n", tmp_path=tmp_path)


def test_compress_level_range_and_release():
    with pytest.raises(ConfigError, match="out of range"):
        resolve(env={"SIB_COMPRESS_LEVEL": "22"})
    assert resolve(cli={"release": True}).compress_level == 19


def test_dev_user_switches_and_secret_masking():
    cfg = resolve(env={"ENABLE_DEV_USER_PASS": "true"})
    assert cfg.dev_user_password == "test"
    assert cfg.shown("dev_user_password") == "***"
    env = _hook_env(cfg)
    assert env["DIB_DEV_USER_PWDLESS_SUDO"] == "yes"
    assert env["DIB_DEV_USER_USERNAME"] == "metal3"
    assert cfg.secrets() == ["test"]


def test_dev_user_ssh_uses_the_given_key_only(tmp_path):
    key = tmp_path / "id.pub"
    key.write_text("ssh-ed25519 AAAA test\n")
    assert "DIB_DEV_USER_AUTHORIZED_KEYS" not in _hook_env(resolve(env={"DEV_USER_SSH_PATH": str(key)}))
    cfg = resolve(env={"ENABLE_DEV_USER_SSH": "yes", "DEV_USER_SSH_PATH": str(key)})
    assert _hook_env(cfg)["DIB_DEV_USER_AUTHORIZED_KEYS"] == str(key)


def test_base_os_takes_the_sles_slot():
    cfg = resolve(env={"IPA_BASE_OS": "my-os"})
    assert "my-os" in cfg.element_list and "sles" not in cfg.element_list


def test_elements_path_colon_list(tmp_path):
    cfg = resolve(env={"ELEMENTS_PATH": f"{tmp_path}/a:{tmp_path}/b"})
    assert cfg.elements_path == [tmp_path / "a", tmp_path / "b"]


def test_config_attributes_are_the_settings_table() -> None:
    """Config is written out for mypy; this keeps it and settings.SETTINGS one list, in one order."""
    import dataclasses

    from sles_ipa_builder.config.resolve import Config, attr

    kinds = {"str": "str", "int": "int", "bool": "bool", "path": "Path", "list": "list[str]",
             "pathlist": "list[Path]", "choice": "str", "arch": "Arch"}
    fields = [f for f in dataclasses.fields(Config) if f.name not in ("sources", "passthrough", "repo_overrides")]
    assert [f.name for f in fields] == [attr(s.key) for s in SETTINGS]
    for f, s in zip(fields, SETTINGS, strict=True):
        optional = s.default is None or s.empty_ok
        assert f.type == kinds[s.kind] + (" | None" if optional else ""), s.key


def test_break_points_one_grammar() -> None:
    cfg = resolve(env={"SIB_BREAK": "before-install after-error,after-cleanup"})
    assert cfg.break_points == {"before-install", "after-error", "after-cleanup"}
    with pytest.raises(ConfigError, match="unknown break point"):
        resolve(env={"SIB_BREAK": "before-ramdisk"})
