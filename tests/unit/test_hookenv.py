"""The hook environment (engine/hookenv.py), pinned: every variable and value the hooks got before the
settings table carried its exports (the literals below are the old code's output, key for key)."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import pytest

from sles_ipa_builder.config import resolve as config
from sles_ipa_builder.config.settings import SETTINGS
from sles_ipa_builder.engine.elements import Element
from sles_ipa_builder.engine.hookenv import hook_env

SEARCH_PATH = [Path("/sib/extra"), Path("/sib/elements")]
ELEMENTS = [Element("sles", Path("/sib/elements/sles"), None),
            Element("sles-ipa-install", Path("/sib/extra/sles-ipa-install"), None),
            Element("pkg-map", None, "sles")]
FIRMWARE = ("amdgpu,netronome,qcom,ti-communication,ti-keystone,ueagle-atm,rsi,mrvl,brcm,mediatek,ath10k,"
            "rtlwifi")
DEFAULT_ELEMENTS = ("sles-ipa-install sles sles-zypper-config sles-ipa-ramdisk-base dynamic-login journal-to-console "
                    "devuser openssh-server sles-extra-hardware ipa-module-autoload")

# The build's places and element list, the same in both pins.
BUILD_PLACES = {
    "ARCH": "amd64",
    "TARGET_ROOT": "/sib/ws/build/root",
    "TMP_MOUNT_PATH": "/sib/ws/build/root",
    "TMP_HOOKS_PATH": "/sib/ws/build/hooks",
    "TMP_BUILD_DIR": "/sib/ws/build",
    "TMP_IMAGE_DIR": "/sib/ws/build",
    "IMAGE_ELEMENT": "sles sles-ipa-install pkg-map",
    "IMAGE_ELEMENT_YAML": "{pkg-map: '', sles: /sib/elements/sles, sles-ipa-install: /sib/extra/sles-ipa-install}",
    "ELEMENTS_PATH": "/sib/extra:/sib/elements",
    "DIB_PYTHON_EXEC": sys.executable,
    "_LIB": "/sib/ws/build/lib",
}

DEFAULT_ENV = {
    "DIB_DEFAULT_INSTALLTYPE": "source",
    "DIB_INIT_SYSTEM": "systemd",
    "DIB_PYTHON_VERSION": "3",
    "DIB_DEBUG_TRACE": "0",
    "DIB_NO_TMPFS": "1",
    "DIB_CHECKSUM": "0",
    "DISTRO_NAME": "opensuse",
    "DIB_IMAGE_CACHE": "/home/sib/.cache/sles-ipa-builder/image-create",
    "DIB_REPOLOCATION_ironic_python_agent": "https://opendev.org/openstack/ironic-python-agent",
    "DIB_REPOREF_ironic_python_agent": "master",
    "DIB_REPOLOCATION_ironic_lib": "https://opendev.org/openstack/ironic-lib",
    "DIB_REPOREF_ironic_lib": "master",
    "DIB_REPOLOCATION_requirements": "https://opendev.org/openstack/requirements",
    "DIB_REPOREF_requirements": "master",
    "DIB_RELEASE": "15.7",
    "IMAGE_NAME": "ironic-python-agent",
    "DIB_SLES_OFFLINE_TARGET_DIR": "/home/sib/sles_images",
    "DIB_SLES_RELEASE": "SLE-15",
    "DIB_SLES_SERVICE_PACK": "SP7",
    "DIB_SLES_INSTALL_TYPE": "Minimal-VM",
    "DIB_SLES_IMAGE_TARGET_PLATFORM": "OpenStack-Cloud-GM",
    "DIB_SLES_ISO_REPO_FILE": "SLE-15-SP7-Full-x86_64-GM-Media1.iso",
    "DIB_ADDITIONAL_IPA_KERNEL_MODULES": "megaraid_sas",
    "DIB_IPA_ENABLE_RESCUE": "true",
    "IPA_REMOVE_FIRMWARE": FIRMWARE,
    "DIB_IPA_PLUGINS": "",
    "DIB_CUSTOM_HW_MANAGER_DIR": "/tmp/hardware_managers",
    "DIB_IPA_INSTALL_SSH": "false",
    "DIB_IPA_INSTALL_DEBUG_TOOLS": "false",
    "DIB_IPA_KEEP_UNITS": "",
    "IRONIC_LIB_FROM_SOURCE": "false",
    "DIB_IPA_CERT_HOSTNAME": "ipa-ramdisk.example.com",
    "DIB_IPA_CERT_EXPIRATION": "1095",
    "DIB_DEV_USER_USERNAME": "metal3",
    "DIB_OFFLINE": "",
    "DIB_SLES_PYTHON": "python3.11",
    "DIB_SLES_PYTHON_PACKAGE": "python311",
    "DIB_SLES_PKG_MKINITRD": "dracut-mkinitrd-deprecated",
    "DIB_SLES_NETWORK_STACK": "wicked",
    "DIB_SLES_USR_ETC": "false",
    "DIB_SLES_SELINUX": "none",
    "DIB_SLES_PKG_DHCP_CLIENT": "dhcp-client",
    **BUILD_PLACES,
    "DIB_ARGS": DEFAULT_ELEMENTS,
}

# Optional values set, booleans turned, the user's DIB_* variables (passed through, or overruled by the
# builder's), a source override, another service pack and operating-system element.
ENVIRON = {
    "DIB_SLES_SERVICE_PACK": "sp4", "DIB_SLES_PYTHON": "python3.11", "IPA_IMAGE_NAME": "agent", "DIB_OFFLINE": "1",
    "DIB_IPA_ENABLE_RESCUE": "no", "IRONIC_LIB_FROM_SOURCE": "yes", "DIB_IPA_INSTALL_DEBUG_TOOLS": "1",
    "DIB_IPA_KEEP_UNITS": "smartd.service", "IPA_REMOVE_FIRMWARE": "", "DIB_IPA_HARDWARE_PACKAGE": "hardware==1.2",
    "DIB_IPA_HARDWARE_VERSION": "", "DIB_DEV_USER_SHELL": "/bin/zsh", "ENABLE_DEV_USER_PASS": "true",
    "DIB_IPA_CERT_EXPIRATION": "30", "DIB_SLES_ISO_REPO_FILE": "media.iso", "DIB_RELEASE": "15.4-custom",
    "DIB_FOO": "bar", "DIB_SLES_PKG_MKINITRD": "mine", "DIB_DEBUG_TRACE": "1",
    "DIB_REPOLOCATION_ironic_lib": "/src/ironic-lib", "DIB_REPOREF_extra": "v1",
    "DIB_SLES_OFFLINE_TARGET_DIR": "/srv/media", "IPA_BASE_OS": "my-os",
}
FILES = {"ipa_cert": "/certs/ca.pem", "tls_cert_file": "/certs/agent.pem", "tls_key_file": "/certs/agent.key",
         "tls_ca_file": "/certs/clients.pem", "dev_user_authorized_keys": "/keys/id.pub"}
SET_ENV = {
    "DIB_DEFAULT_INSTALLTYPE": "source",
    "DIB_INIT_SYSTEM": "systemd",
    "DIB_PYTHON_VERSION": "3",
    "DIB_DEBUG_TRACE": "1",
    "DIB_NO_TMPFS": "1",
    "DIB_CHECKSUM": "0",
    "DISTRO_NAME": "opensuse",
    "DIB_IMAGE_CACHE": "/home/sib/.cache/sles-ipa-builder/image-create",
    "DIB_REPOLOCATION_ironic_python_agent": "https://opendev.org/openstack/ironic-python-agent",
    "DIB_REPOREF_ironic_python_agent": "master",
    "DIB_REPOLOCATION_ironic_lib": "/src/ironic-lib",
    "DIB_REPOREF_ironic_lib": "master",
    "DIB_REPOLOCATION_requirements": "https://opendev.org/openstack/requirements",
    "DIB_REPOREF_requirements": "master",
    "DIB_REPOREF_extra": "v1",
    "DIB_RELEASE": "15.4-custom",
    "DIB_FOO": "bar",
    "DIB_SLES_PKG_MKINITRD": "mkinitrd",
    "DIB_SLES_NETWORK_STACK": "wicked",
    "DIB_SLES_USR_ETC": "false",
    "DIB_SLES_SELINUX": "none",
    "DIB_SLES_PKG_DHCP_CLIENT": "dhcp-client",
    "IMAGE_NAME": "agent",
    "DIB_SLES_OFFLINE_TARGET_DIR": "/srv/media",
    "DIB_SLES_RELEASE": "SLE-15",
    "DIB_SLES_SERVICE_PACK": "sp4",
    "DIB_SLES_INSTALL_TYPE": "Minimal-VM",
    "DIB_SLES_IMAGE_TARGET_PLATFORM": "OpenStack-Cloud-GM",
    "DIB_SLES_ISO_REPO_FILE": "media.iso",
    "DIB_ADDITIONAL_IPA_KERNEL_MODULES": "megaraid_sas",
    "DIB_IPA_ENABLE_RESCUE": "false",
    "IPA_REMOVE_FIRMWARE": "",
    "DIB_IPA_PLUGINS": "",
    "DIB_CUSTOM_HW_MANAGER_DIR": "/tmp/hardware_managers",
    "DIB_IPA_INSTALL_SSH": "false",
    "DIB_IPA_INSTALL_DEBUG_TOOLS": "true",
    "DIB_IPA_KEEP_UNITS": "smartd.service",
    "IRONIC_LIB_FROM_SOURCE": "true",
    "DIB_IPA_CERT_HOSTNAME": "ipa-ramdisk.example.com",
    "DIB_IPA_CERT_EXPIRATION": "30",
    "DIB_DEV_USER_USERNAME": "metal3",
    "DIB_OFFLINE": "1",
    "DIB_SLES_PYTHON": "python3.11",
    "DIB_SLES_PYTHON_PACKAGE": "python311",
    "DIB_IPA_CERT": "/certs/ca.pem",
    "DIB_IPA_CERT_FILE": "/certs/agent.pem",
    "DIB_IPA_KEY_FILE": "/certs/agent.key",
    "DIB_IPA_CA_FILE": "/certs/clients.pem",
    "DIB_IPA_HARDWARE_PACKAGE": "hardware==1.2",
    "DIB_DEV_USER_SHELL": "/bin/zsh",
    "DIB_DEV_USER_PWDLESS_SUDO": "yes",
    "DIB_DEV_USER_PASSWORD": "test",
    "DIB_DEV_USER_AUTHORIZED_KEYS": "/keys/id.pub",
    **BUILD_PLACES,
    "DIB_ARGS": DEFAULT_ELEMENTS.replace(" sles ", " my-os "),
}


@pytest.fixture(autouse=True)
def _home(monkeypatch: pytest.MonkeyPatch) -> None:
    """~ in the defaults (images_dir) and the cache root (DIB_IMAGE_CACHE) resolve under a fixed home."""
    monkeypatch.setenv("HOME", "/home/sib")
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)


def _cfg(environ: dict[str, str]) -> config.Config:
    return config.resolve({"arch": "x86_64", "workspace": "/sib/ws"}, environ=environ)


def test_default_environment() -> None:
    assert hook_env(_cfg({}), SEARCH_PATH, ELEMENTS) == DEFAULT_ENV


def test_environment_with_optional_values_and_the_users_variables() -> None:
    # the files need not exist here: validation is resolve()'s, not the environment's
    cfg = dataclasses.replace(_cfg(ENVIRON), **{k: Path(v) for k, v in FILES.items()})
    assert hook_env(cfg, SEARCH_PATH, ELEMENTS) == SET_ENV


def test_a_dib_export_is_read_back_by_its_own_setting() -> None:
    """A user's DIB_ variable of an exported setting sets the setting (it is not passed through as well)."""
    for s in SETTINGS:
        if s.export and s.export.startswith("DIB_"):
            assert s.export in s.all_envs, s.key
        if s.export_from:
            assert s.export and isinstance(getattr(config.Config, s.export_from), property), s.key
