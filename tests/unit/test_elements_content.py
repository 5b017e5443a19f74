"""Static checks of the built-in elements in hooks/: layout, names, modes, shellcheck, deps, packages.

These catch what dib-run-parts would silently skip (a non-executable script, a name with a dot),
element-deps that cannot resolve, and package lists nobody documented, before any build runs.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

HOOKS = Path(__file__).resolve().parents[2] / "elements"
SCRIPT_RE = re.compile(r"^[0-9A-Za-z_-]+$")  # dib-run-parts
ENV_RE = re.compile(r"^[0-9A-Za-z_.-]+$")
PHASES = ("root.d", "extra-data.d", "pre-install.d", "install.d", "post-install.d", "post-root.d",
          "block-device.d", "pre-finalise.d", "finalise.d", "cleanup.d")
HOST_PHASES = ("root.d", "extra-data.d", "post-root.d", "block-device.d", "pre-finalise.d", "cleanup.d")
MARKERS = ("package-installs", "pkg-map", "source-repositories", "install-static", "install-bin",
           "install-types", "manifests", "no-final-image", "cache-url")
DEFAULT = ("sles-ipa-install sles sles-zypper-config sles-ipa-ramdisk-base dynamic-login journal-to-console "
           "devuser openssh-server sles-extra-hardware ipa-module-autoload").split()
OPTIONAL = ("sles-ipa-tls", "ipa-add-buildinfo")
PKG_KEYS = {"phase", "uninstall", "build-only", "arch", "not-arch", "when", "installtype",
            "dib_python_version"}
REPO_LINE = re.compile(r"^([^ ]+) (git|tar|file|package) ?(/[^ ]+)? ?([^ ]+)? ?([^ ]*)$")

ELEMENTS = sorted(d.name for d in HOOKS.iterdir() if d.is_dir())
REAL = [e for e in ELEMENTS if e not in MARKERS]


def phase_scripts() -> list[Path]:
    """Every file dib-run-parts could consider: depth 1 in phase dirs, and in install.d/*-install dirs."""
    out: list[Path] = []
    for el in ELEMENTS:
        for phase in PHASES:
            d = HOOKS / el / phase
            if not d.is_dir():
                continue
            for entry in sorted(d.iterdir()):
                if entry.is_dir() and phase == "install.d" and entry.name.endswith("-install"):
                    out.extend(sorted(p for p in entry.iterdir() if p.is_file()))
                elif entry.is_file():
                    out.append(entry)
    return out


def is_script(p: Path) -> bool:
    return bool(SCRIPT_RE.match(p.name))


def static_executables() -> list[Path]:
    """Executable shell scripts of static/ (sles-ipa-addon's Python script has its own tests)."""
    return sorted(p for p in HOOKS.glob("*/static/**/*") if p.is_file() and os.access(p, os.X_OK)
                  and not p.read_bytes().startswith(b"#!/usr/bin/python"))


def code_of(f: Path) -> str:
    """A file without its comment lines."""
    lines = f.read_text(errors="replace").splitlines()
    return "\n".join(line for line in lines if not line.lstrip().startswith("#"))


def env_files() -> list[Path]:
    return sorted(HOOKS.glob("*/environment.d/*"))


# --- layout ----------------------------------------------------------------------------------------
def test_element_set_is_complete() -> None:
    for name in (*DEFAULT, *OPTIONAL, *MARKERS, "sysprep", "dhcp-all-interfaces", "ibft-interfaces",
                 "runtime-ssh-host-keys", "selinux-permissive"):
        assert (HOOKS / name).is_dir(), name
    assert not (HOOKS / "base").exists(), "no base element: the engine adds base only when one exists"


@pytest.mark.parametrize("name", MARKERS)
def test_marker_elements_hold_only_a_readme(name: str) -> None:
    entries = sorted(p.name for p in (HOOKS / name).iterdir())
    assert entries == ["README.rst"]
    text = (HOOKS / name / "README.rst").read_text()
    assert len(text.strip().splitlines()) == 1 and "provided natively by sles-ipa-builder" in text


@pytest.mark.parametrize("name", REAL)
def test_every_element_has_a_readme(name: str) -> None:
    text = (HOOKS / name / "README.rst").read_text()
    assert name in text.splitlines()[1] or name in text.splitlines()[0]


def test_phase_files_are_scripts_or_deliberately_ignored_data() -> None:
    """A runnable name must be executable; a data file (unit, conf) must have a dot so it never runs."""
    files = phase_scripts()
    assert files
    for f in files:
        mode = f.stat().st_mode
        if is_script(f):
            assert mode & 0o111 == 0o111, f"{f} has a hook name but is not executable: it would be skipped"
        else:
            assert "." in f.name, f"{f}: not a hook name and not a data file"
            assert mode & 0o111 == 0, f"{f} is executable but its name makes dib-run-parts ignore it"


def test_static_scripts_are_executable() -> None:
    for f in HOOKS.glob("*/static/usr/local/*bin/*"):
        assert f.stat().st_mode & 0o777 == 0o755, f
    for f in HOOKS.glob("*/static/**/*"):
        if f.is_file() and f.parent.name not in ("bin", "sbin"):
            assert f.stat().st_mode & 0o111 == 0, f"{f}: config files are not executable"


def test_scripts_use_strict_mode_and_trace_switch() -> None:
    for f in [p for p in phase_scripts() if is_script(p)]:
        text = f.read_text()
        assert text.startswith("#!/bin/bash\n"), f
        assert "set -eu" in text and "set -o pipefail" in text, f
        assert '[ "${DIB_DEBUG_TRACE:-0}" -gt 0 ] && set -x' in text, f


def test_environment_files_are_sourceable_names() -> None:
    for f in env_files():
        assert ENV_RE.match(f.name), f
        assert f.stat().st_mode & 0o111 == 0, f"{f} is sourced, not run"


def _source_env(extra: dict[str, str]) -> dict[str, str]:
    """Source every environment.d file, in DIB's byte-wise order, under `set -eu`; return the result."""
    files = sorted(env_files(), key=lambda p: p.name.encode())
    script = "set -eu\n" + "".join(f'. "{f}"\n' for f in files) + "env -0\n"
    env = {"PATH": "/usr/bin:/bin", "HOME": "/root", **extra}
    out = subprocess.run(["bash", "-c", script], env=env, capture_output=True, check=True).stdout
    return dict(item.split("=", 1) for item in out.decode().split("\0") if "=" in item)


def test_environment_defaults() -> None:
    env = _source_env({})
    assert env["DISTRO_NAME"] == "opensuse"
    assert env["DIB_INIT_SYSTEM"] == "systemd"
    assert env["DIB_SLES_OFFLINE_TARGET_DIR"] == "/root/sles_images"  # seed: //root/sles_images, forced
    for builders in ("DIB_RELEASE", "DIB_SLES_PYTHON", "DIB_SLES_ISO_REPO_FILE"):  # releases.py's facts
        assert builders not in env
    assert "DIB_OFFLINE" not in env  # the seed forced it on, freezing the source cache
    assert env["IPA_REMOVE_FIRMWARE"].split(",")[0] == "amdgpu"
    assert env["DIB_IPA_ENABLE_RESCUE"] == "true"
    assert env["DIB_DEV_USER_USERNAME"] == "devuser"


def test_environment_honours_user_values() -> None:
    env = _source_env({"DIB_SLES_SERVICE_PACK": "SP5", "DIB_SLES_OFFLINE_TARGET_DIR": "/srv/media",
                       "IPA_REMOVE_FIRMWARE": "", "DIB_DEV_USER_USERNAME": "metal3"})
    assert env["DIB_SLES_OFFLINE_TARGET_DIR"] == "/srv/media"
    assert env["IPA_REMOVE_FIRMWARE"] == ""  # empty means: remove no firmware
    assert env["DIB_DEV_USER_USERNAME"] == "metal3"


def test_service_pack_facts_come_from_the_builder() -> None:
    """config/releases.py is the one table: the builder exports its facts, the hooks read them."""
    from sles_ipa_builder.config import resolve as config
    from sles_ipa_builder.engine.hookenv import hook_env

    for sp, python, release in (("SP4", "python3.10", "15.4"), ("SP5", "python3.11", "15.5"),
                                ("sp7", "python3.11", "15.7")):
        cfg = config.resolve({"service_pack": sp}, environ={})
        env = _source_env(hook_env(cfg, [], []))
        assert (env["DIB_SLES_PYTHON"], env["DIB_RELEASE"]) == (python, release), sp
    cfg = config.resolve({}, environ={"DIB_SLES_SERVICE_PACK": "SP5", "DIB_RELEASE": "15.5-custom"})
    env = hook_env(cfg, [], [])
    assert env["DIB_SLES_ISO_REPO_FILE"] == "SLE-15-SP5-Full-x86_64-GM-Media1.iso"
    assert env["DIB_RELEASE"] == "15.5-custom"  # DIB's own variable: the user's value wins


# --- shellcheck ------------------------------------------------------------------------------------
def shell_files() -> list[Path]:
    scripts = [p for p in phase_scripts() if is_script(p)]
    return scripts + static_executables() + env_files()


@pytest.mark.skipif(shutil.which("shellcheck") is None, reason="shellcheck is not installed")
def test_shellcheck_clean() -> None:
    files = shell_files()
    assert len(files) > 20
    proc = subprocess.run(["shellcheck", "-x", *map(str, files)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_bash_syntax() -> None:
    for f in shell_files():
        subprocess.run(["bash", "-n", str(f)], check=True)


# --- dependencies ----------------------------------------------------------------------------------
def _names(file: Path) -> list[str]:
    return [n.strip() for n in file.read_text().splitlines() if n.strip()] if file.is_file() else []


def test_element_deps_resolve_within_hooks() -> None:
    provided = {p for el in ELEMENTS for p in _names(HOOKS / el / "element-provides")}
    for el in ELEMENTS:
        for dep in _names(HOOKS / el / "element-deps"):
            assert (HOOKS / dep).is_dir() or dep in provided, f"{el} depends on missing {dep}"


def test_default_and_optional_lists_resolve_with_the_engine() -> None:
    elements = pytest.importorskip("sles_ipa_builder.engine.elements")
    for names in (DEFAULT, [*DEFAULT, *OPTIONAL]):
        resolved = {e.name for e in elements.resolve(names, [HOOKS])}
        assert {"sles-ipa-install", "sles", "sysprep", "dhcp-all-interfaces", "ibft-interfaces",
                "runtime-ssh-host-keys", "selinux-permissive", "no-final-image"} <= resolved
        assert "base" not in resolved


def test_extra_hardware_runs_before_the_sources_are_removed() -> None:
    elements = pytest.importorskip("sles_ipa_builder.engine.elements")
    names = ["98-zypper-clean-cache", "99-remove-extra-packages", "99-package-installs-extra-hardware",
             "99-harden-sshd-config", "80-ironic-python-agent-ramdisk"]
    order = sorted(names, key=elements.sort_key)
    assert order.index("99-package-installs-extra-hardware") < order.index("99-remove-extra-packages")
    assert order.index("80-ironic-python-agent-ramdisk") < order.index("99-package-installs-extra-hardware")


def test_source_repository_files() -> None:
    files = sorted(HOOKS.glob("*/source-repository-*"))
    assert {f.name for f in files} == {"source-repository-ironic-python-agent",
                                       "source-repository-ironic-lib", "source-repository-requirements"}
    for f in files:
        lines = _names(f)
        assert len(lines) == 1
        m = REPO_LINE.match(lines[0])
        assert m, lines[0]
        assert m.group(1) == f.name.removeprefix("source-repository-")
        assert m.group(3) == "/tmp/" + m.group(1)
        assert m.group(4).startswith("https://opendev.org/openstack/")


# --- packages --------------------------------------------------------------------------------------
def package_files() -> list[Path]:
    return sorted(HOOKS.glob("*/package-installs.yaml"))


def test_package_installs_are_valid_and_documented() -> None:
    files = package_files()
    assert len(files) >= 6
    for f in files:
        data = yaml.safe_load(f.read_text())
        assert isinstance(data, dict) and data, f
        readme = (f.parent / "README.rst").read_text()
        for pkg, params in data.items():
            params = params or {}
            assert set(params) <= PKG_KEYS, (f, pkg)
            phase = params.get("phase", "install.d")
            assert phase in ("pre-install.d", "install.d", "post-install.d"), (f, pkg)
            documented = re.search(rf"(?<![\w-]){re.escape(pkg)}(?![\w-])", readme)
            assert documented, f"{pkg} is not documented in {f.parent}/README.rst"


def test_python_interpreter_follows_the_service_pack() -> None:
    packages = pytest.importorskip("sles_ipa_builder.engine.packages")
    elements = pytest.importorskip("sles_ipa_builder.engine.elements")
    el = elements.Element("sles-zypper-config", HOOKS / "sles-zypper-config", None)
    for python, want in (("python3.10", "python310"), ("python3.11", "python311")):
        got = packages.entries(el, {"DIB_SLES_PYTHON": python})
        # the interpreter in pre-install; its headers and pip build-only in install.d, where the venv is built
        assert sorted(got) == sorted([(want, "pre-install.d", False),
                                      (f"{want}-devel", "install.d", False), (f"{want}-devel", "install.d", True),
                                      (f"{want}-pip", "install.d", False), (f"{want}-pip", "install.d", True)])


def test_build_only_packages_are_removed_again() -> None:
    data = yaml.safe_load((HOOKS / "sles-ipa-install" / "package-installs.yaml").read_text())
    build_only = {p for p, v in data.items() if v and v.get("build-only")}
    assert build_only == {"gcc", "libffi-devel", "libopenssl-devel", "git-core"}
    # nothing forces python3* out of the image any more (seed: zypper remove --force-resolution "python3*")
    for f in HOOKS.rglob("*"):
        if f.is_file() and f.name != "README.rst":
            assert "python3*" not in code_of(f), f


# --- units -----------------------------------------------------------------------------------------
def test_agent_unit() -> None:
    unit = (HOOKS / "sles-ipa-install/install.d/ironic-python-agent-ramdisk-source-install"
            / "ironic-python-agent.service").read_text()
    for line in ("ConditionPathExists=!/etc/.rescued", "After=network-online.target",
                 "Wants=network-online.target", "ExecStartPre=-/sbin/modprobe vfat",
                 "ExecStart=/usr/local/bin/ironic-python-agent --config-dir /etc/ironic-python-agent.d/",
                 "Restart=always", "RestartSec=30s", "WantedBy=multi-user.target"):
        assert line in unit.splitlines(), line


def test_units_have_install_sections_where_enabled() -> None:
    for unit in HOOKS.glob("*/static/**/*.service"):
        text = unit.read_text()
        assert text.startswith("[Unit]\n"), unit
        assert "[Service]" in text, unit
    for unit in ("dynamic-login/static/usr/lib/systemd/system/dynamic-login.service",
                 "ibft-interfaces/static/usr/lib/systemd/system/init-ibft-interfaces.service",
                 "runtime-ssh-host-keys/static/usr/lib/systemd/system/runtime-ssh-host-keys.service",
                 "sles-ipa-install/static/etc/systemd/system/ironic-agent-create-rescue-user.path"):
        assert "WantedBy=multi-user.target" in (HOOKS / unit).read_text(), unit


def test_no_fallback_to_the_builders_ssh_key() -> None:
    """Seed bug §8.13: devuser installed ~/.ssh/id_rsa.pub of whoever ran the build."""
    for f in HOOKS.rglob("*"):
        if f.is_file() and f.name != "README.rst":
            text = code_of(f)
            assert "id_rsa" not in text and "id_dsa" not in text and ".ssh/" not in text.replace(
                "/root/.ssh/", "").replace('$home/.ssh/', "").replace('"$home/.ssh"', ""), f
