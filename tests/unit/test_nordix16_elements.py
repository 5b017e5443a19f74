"""A user migrating from the Nordix builder's SLES 16 elements (their commit 0e70958 and later) puts
them on --elements-path unchanged: the plan resolves, their elements win, no duplicate-hook error.

The elements here are written by the test in the shape Nordix's have (element names, element-deps,
element-provides, hook names and phases, environment.d files, non-executable data files next to the
hooks), each body a line of our own; no Nordix file is used. `summary` needs no root.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

from conftest import make_element

from sles_ipa_builder import run
from sles_ipa_builder.config.settings import DEFAULT_ELEMENTS

# Nordix's disk-image-create list on 16 (their INCLUDE_PLUGINS=true adds ipa-plugin-installer).
# Their optional simple-init pair is left out: simple-init is DIB's, and not one of our built-ins.
NORDIX_LIST = [*DEFAULT_ELEMENTS.split(), "ipa-plugin-installer"]


def hook(tag: str) -> str:
    return f"#!/bin/bash\nset -eu\necho {tag}\n"


def env(var: str, value: str) -> str:
    return f'export {var}="${{{var}:-{value}}}"\n'


def nordix16_elements(base: Path) -> Path:
    """Elements shaped like Nordix's ipa_builder_elements for SLES 16."""
    make_element(base, "sles", provides=["operating-system"], deps=["cache-url", "sysprep", "zypper-config"],
                 files={"environment.d/10-sles-distro-name.bash":
                        env("DIB_SLES_RELEASE", "SLES-16.0") + env("DIB_SLES_IMAGE_TARGET_PLATFORM", "Cloud-GM"),
                        "root.d/10-sles-image": hook("user-sles-root"),
                        "post-install.d/01-copy-etc-files": hook("user-usr-etc"),  # new with 16
                        "cleanup.d/97-clean-sleas-rootfs": hook("user-clean")})
    make_element(base, "sles-zypper-config", provides=["zypper-config"], deps=["install-bin"],
                 files={"bin/install-packages": hook("user-install-packages"),
                        "root.d/50-zypper-cache": hook("user-zypper-cache"),
                        "pre-install.d/01-zypper-keep-packages": hook("user-keep-packages"),
                        "install.d/01-login-defs": hook("user-login-defs"),
                        "post-install.d/10-mkinitrd": hook("user-mkinitrd"),
                        "post-install.d/98-zypper-clean-cache": hook("user-clean-cache"),
                        "post-install.d/99-zypper-no-keep-packages": hook("user-no-keep")})
    src = "install.d/ironic-python-agent-ramdisk-source-install/"
    make_element(base, "sles-ipa-install", provides=["ironic-python-agent"],
                 deps=["sles-ipa-ramdisk-base", "dhcp-all-interfaces", "ibft-interfaces", "install-static",
                       "source-repositories"],
                 files={"environment.d/10-defaults.bash": env("DIB_IPA_USER_DEFAULTS", "yes"),
                        "environment.d/20-ipa-distro-family.bash": env("DIB_IPA_USER_FAMILY", "suse"),
                        "extra-data.d/15-ssl-ca-copy": hook("user-ca-copy"),
                        src + "60-ironic-python-agent-ramdisk-install": hook("user-ipa-install"),
                        src + "ironic-python-agent.conf": ("[DEFAULT]\n", 0o644),
                        src + "ironic-python-agent.service": ("[Unit]\n", 0o644),
                        "post-install.d/80-ironic-python-agent-ramdisk": hook("user-ipa-ramdisk"),
                        "post-install.d/99-remove-extra-packages": hook("user-remove-extra"),
                        "source-repository-ironic-python-agent":
                        "ironic-python-agent git /tmp/ironic-python-agent https://example.invalid/ipa\n",
                        "source-repository-ironic-lib": "ironic-lib git /tmp/ironic-lib https://example.invalid/il\n",
                        "source-repository-requirements":
                        "requirements git /tmp/requirements https://example.invalid/req\n",
                        "static/usr/local/bin/ironic-python-agent-create-rescue-user.sh":
                        (hook("user-rescue"), 0o755),
                        "static/etc/systemd/system/ironic-agent-create-rescue-user.path": "[Path]\n"})
    make_element(base, "sles-ipa-ramdisk-base", deps=["no-final-image", "runtime-ssh-host-keys", "selinux-permissive"],
                 files={"cleanup.d/98-prepare-resolve-conf": hook("user-resolv"),
                        "cleanup.d/99-ramdisk-create": hook("user-ramdisk-create")})
    make_element(base, "sles-extra-hardware", deps=["sles-ipa-install"],
                 files={"post-install.d/99-package-installs-extra-hardware": hook("user-extra-hw")})
    make_element(base, "sles-ipa-tls", deps=["sles-ipa-ramdisk-base"],
                 files={"pre-finalise.d/10-configure-ipa-tls": hook("user-tls")})
    make_element(base, "ipa-module-autoload", files={"install.d/80-ipa-module-autoload": hook("user-autoload")})
    # not executable in their tree (and not in their list): dib-run-parts would skip it
    make_element(base, "ipa-add-buildinfo", files={"install.d/80-ipa-add-buildinfo": (hook("user-info"), 0o644)})
    make_element(base, "override-simple-init",
                 files={"environment.d/99-override-simple-init": env("DIB_USER_SIMPLE_INIT", "yes"),
                        "post-install.d/99-override-simple-init": hook("user-simple-init"),
                        "post-install.d/glean-early-override-template.service": ("[Unit]\n", 0o644)})
    make_element(base, "ipa-plugin-installer",
                 files={"environment.d/10-hw-manager-defaults":  # no .bash suffix in theirs
                        env("DIB_CUSTOM_HW_MANAGER_DIR", "/tmp/hardware_managers") + env("DIB_IPA_PLUGINS", ""),
                        "root.d/99-cp-plugins": hook("user-cp-plugins"),
                        "install.d/99-install-hardware-managers": hook("user-hw-managers")})
    return base


def clean_env(**more: str) -> dict[str, str]:
    keep = {k: v for k, v in os.environ.items() if not k.startswith(("DIB_", "IPA_", "IRONIC_", "SIB_", "ELEMENTS"))}
    return {**keep, **more}


def summary(els: Path, tmp_path: Path, *more: str, **environ: str) -> dict[str, Any]:
    argv = [sys.executable, "-m", "sles_ipa_builder", "summary", "--json", "--elements-path", str(els),
            "--workspace", str(tmp_path / "ws"), "--images-dir", str(tmp_path / "no-images"), *more]
    doc: dict[str, Any] = json.loads(run.run(argv, env=clean_env(**environ), capture=True).stdout)
    return doc


def test_nordix16_elements_resolve_and_win(tmp_path: Path) -> None:
    els = nordix16_elements(tmp_path / "ipa_builder_elements")
    doc = summary(els, tmp_path, "--elements", *NORDIX_LIST, DIB_SLES_RELEASE="SLES-16.0")
    by_name = {e["name"]: e for e in doc["elements"]}
    assert set(NORDIX_LIST) <= set(by_name)
    for name in ("sles", "sles-zypper-config", "sles-ipa-install", "sles-ipa-ramdisk-base",
                 "sles-extra-hardware", "ipa-module-autoload"):
        assert by_name[name]["replaces_builtin"] and by_name[name]["path"] == str(els / name), name
    assert by_name["ipa-plugin-installer"]["path"] == str(els / "ipa-plugin-installer")
    assert not by_name["ipa-plugin-installer"]["replaces_builtin"]  # we have no element of that name
    # the generic elements their deps pull in come from us
    for name in ("selinux-permissive", "dhcp-all-interfaces", "cache-url", "sysprep", "install-bin"):
        assert by_name[name]["builtin"] and not by_name[name]["replaces_builtin"], name
    steps = {(s["stage"], s["name"]): s for s in doc["steps"]}
    mine = {("root", "10-sles-image"): "sles", ("post-install", "01-copy-etc-files"): "sles",
            ("cleanup", "97-clean-sleas-rootfs"): "sles",
            ("root", "50-zypper-cache"): "sles-zypper-config",
            ("pre-install", "01-zypper-keep-packages"): "sles-zypper-config",
            ("install", "01-login-defs"): "sles-zypper-config",
            ("post-install", "10-mkinitrd"): "sles-zypper-config",
            ("post-install", "98-zypper-clean-cache"): "sles-zypper-config",
            ("post-install", "99-zypper-no-keep-packages"): "sles-zypper-config",
            ("extra-data", "15-ssl-ca-copy"): "sles-ipa-install",
            ("install", "60-ironic-python-agent-ramdisk-install"): "sles-ipa-install",
            ("post-install", "80-ironic-python-agent-ramdisk"): "sles-ipa-install",
            ("post-install", "99-remove-extra-packages"): "sles-ipa-install",
            ("post-install", "99-package-installs-extra-hardware"): "sles-extra-hardware",
            ("install", "80-ipa-module-autoload"): "ipa-module-autoload",
            ("cleanup", "98-prepare-resolve-conf"): "sles-ipa-ramdisk-base",
            ("cleanup", "99-ramdisk-create"): "sles-ipa-ramdisk-base",
            ("root", "99-cp-plugins"): "ipa-plugin-installer",
            ("install", "99-install-hardware-managers"): "ipa-plugin-installer"}
    for key, element in mine.items():
        assert key in steps, key
        assert (steps[key]["element"], steps[key]["kind"]) == (element, "script"), key
    # their sles and sles-ipa-install replace ours with our native steps; their ramdisk-base, our outputs
    assert ("extra-data", "05-media-repositories") not in steps
    assert ("extra-data", "99-check-ipa-python") not in steps
    assert not any(s["stage"] == "outputs" for s in doc["steps"])
    # our sles-ipa-install's hooks that theirs has not are gone with it
    assert ("finalise", "50-ipa-precompile") not in steps and ("post-install", "50-packages-if-available") not in steps
    # their ipa-plugin-installer installs the plugins: our plugin step stays out
    assert not any("plugin" in s["name"] and s["kind"] != "script" for s in doc["steps"])
    # selinux-permissive (their ramdisk-base's dep) is ours and runs: 16's base image enforces SELinux
    assert steps[("pre-install", "11-selinux-permissive")]["element"] == "selinux-permissive"
    # the non-executable data files next to the hooks are not steps
    names = {s["name"] for s in doc["steps"]}
    assert not names & {"ironic-python-agent.conf", "ironic-python-agent.service",
                        "glean-early-override-template.service"}


def test_nordix16_release_named_or_found(tmp_path: Path) -> None:
    """SLES 16 as their build names it (DIB_SLES_RELEASE=SLES-16.0), as a flag (16.1), or found by the
    media's names in the images directory: each resolves the same plan of their elements."""
    els = nordix16_elements(tmp_path / "ipa_builder_elements")

    def plan_of(doc: dict[str, Any]) -> list[tuple[str, str, str]]:
        return [(s["stage"], s["name"], s["element"]) for s in doc["steps"]]

    named = summary(els, tmp_path, "--elements", *NORDIX_LIST, DIB_SLES_RELEASE="SLES-16.0")
    assert named["release"]["release"] == "SLES 16.0" and named["release"]["media"] == "install"
    assert named["settings"]["sles_release"]["source"] == "env DIB_SLES_RELEASE"
    flag = summary(els, tmp_path, "--elements", *NORDIX_LIST, "--sles-release", "16.1")
    assert flag["release"]["release"] == "SLES 16.1" and plan_of(flag) == plan_of(named)
    images = tmp_path / "no-images"  # summary's --images-dir: SUSE's 16.0 names, empty files
    images.mkdir()
    for name in ("SLES-16.0-Minimal-VM.x86_64-Cloud-GM.qcow2", "SLES-16.0-Full-x86_64-GM.install.iso"):
        (images / name).touch()
    found = summary(els, tmp_path, "--elements", *NORDIX_LIST, "--arch", "x86_64")
    assert found["release"]["release"] == "SLES 16.0" and plan_of(found) == plan_of(named)


def test_nordix16_optional_simple_init_override(tmp_path: Path) -> None:
    """Their override-simple-init (with INCLUDE_SIMPLE_INIT) resolves too; its .service template,
    not executable, is no step."""
    els = nordix16_elements(tmp_path / "ipa_builder_elements")
    doc = summary(els, tmp_path, "--elements", *NORDIX_LIST, "override-simple-init", DIB_SLES_RELEASE="SLES-16.0")
    steps = {(s["stage"], s["name"]): s for s in doc["steps"]}
    assert steps[("post-install", "99-override-simple-init")]["element"] == "override-simple-init"
    assert ("post-install", "glean-early-override-template.service") not in steps
