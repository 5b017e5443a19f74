"""A migrating user's own elements (as in the Nordix repository's ipa_builder_elements) run unchanged:
an element named like a built-in one replaces it completely, its native steps included.

The elements here are written by the tests, in the shape such elements have; no Nordix file is used.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import make_busybox_root, make_element

from sles_ipa_builder import run
from sles_ipa_builder.config import resolve as config
from sles_ipa_builder.config.settings import DEFAULT_ELEMENTS
from sles_ipa_builder.engine import plan

REPO = Path(__file__).resolve().parents[2]
# A root.d script with the very name of our native step: the clash a migrating user once hit.
USER_ROOT = """#!/bin/bash
set -eu
# the user's way to make the root: here, a copy of a prepared tree
cp -a "$DIB_USER_TREE"/. "$TARGET_ROOT"/
echo "root.d/10-sles-image (user's sles)" >> "$TARGET_ROOT/var/log/order"
"""
USER_INSTALL = """#!/bin/bash
set -eu
echo "install.d/60-user-ipa (user's sles-ipa-install)" >> /var/log/order
install-packages sib-user-tool sib-user-lib
"""


def user_elements(base: Path) -> Path:
    """User versions of sles, sles-ipa-install and sles-ipa-ramdisk-base."""
    make_element(base, "sles", provides=["operating-system"], deps=["sles-zypper-config"],
                 files={"root.d/10-sles-image": USER_ROOT,
                        "environment.d/10-user-sles.bash": "export DIB_USER_SLES=yes\n"})
    make_element(base, "sles-ipa-install", provides=["ironic-python-agent"], deps=["package-installs"],
                 files={"install.d/60-user-ipa": USER_INSTALL,
                        "package-installs.yaml": "sib-user-listed:\n"})
    make_element(base, "sles-ipa-ramdisk-base",
                 files={"cleanup.d/99-user-ramdisk": "#!/bin/bash\necho cleanup.d/99-user-ramdisk"
                        " >> \"$TARGET_ROOT/var/log/order\"\n"})
    return base


def clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith(("DIB_", "IPA_", "IRONIC_", "SIB_"))}


def test_seed_element_list_with_user_overrides_resolves(tmp_path: Path) -> None:
    """The seed's list, our hooks/ plus the user's directory: no duplicate-hook error, theirs win."""
    els = user_elements(tmp_path / "ipa_builder_elements")
    res = run.run([sys.executable, "-m", "sles_ipa_builder", "summary", "--json", "--elements-path", str(els),
                   "--workspace", str(tmp_path / "ws")], env=clean_env(), capture=True)
    doc = json.loads(res.stdout)
    by_name = {e["name"]: e for e in doc["elements"]}
    assert set(DEFAULT_ELEMENTS.split()) <= set(by_name)
    for name in ("sles", "sles-ipa-install", "sles-ipa-ramdisk-base"):
        assert by_name[name]["replaces_builtin"] and by_name[name]["path"] == str(els / name)
    assert not by_name["sles-zypper-config"]["replaces_builtin"] and by_name["sles-zypper-config"]["builtin"]
    steps = {(s["stage"], s["name"]): s for s in doc["steps"]}
    root = steps[("root", "10-sles-image")]
    assert (root["element"], root["kind"]) == ("sles", "script")  # theirs, not our native step
    assert ("extra-data", "05-media-repositories") not in steps and ("pre-install", "00-zypper-refresh") not in steps
    # both belong to our sles-ipa-install: a user's installs the agent its own way
    assert ("extra-data", "99-check-ipa-python") not in steps and ("finalise", "70-check-agent-tools") not in steps
    assert steps[("install", "60-user-ipa")]["element"] == "sles-ipa-install"
    assert not any(s["stage"] == "outputs" for s in doc["steps"])  # their ramdisk-base, their outputs
    assert ("cleanup", "99-user-ramdisk") in steps
    # our built-in elements that were not replaced keep their hooks
    assert steps[("post-install", "60-sysbench-if-available")]["element"] == "sles-extra-hardware"
    replaced = "\n".join(doc["replaced"])
    assert f"element sles: the built-in one replaced by {els / 'sles'}, with its native steps" in replaced
    assert "root.d/10-sles-image" in replaced and "extra-data.d/05-media-repositories" in replaced
    assert "element sles-ipa-ramdisk-base" in replaced and "the outputs" in replaced
    # the text summary says it too
    text = run.run([sys.executable, "-m", "sles_ipa_builder", "summary", "--elements-path", str(els),
                    "--workspace", str(tmp_path / "ws")], env=clean_env(), capture=True).stdout
    assert "(replaces the built-in)" in text and "element sles-ipa-install: the built-in one replaced" in text


def test_without_user_elements_nothing_is_replaced(tmp_path: Path) -> None:
    made = plan.make(config.resolve({"workspace": str(tmp_path)}, environ={}))
    assert made.replaced == [] and made.needs("10-sles-image")
    assert all(not e["replaces_builtin"] for e in plan.describe(made)["elements"])


def with_bash(dest: Path) -> Path:
    """The busybox tree plus the host's bash and the libraries it links (install-packages is bash)."""
    bash = Path("/bin/bash").resolve()
    libs = [line.split("=>")[-1].split("(")[0].strip() for line in
            run.run(["ldd", bash], capture=True).stdout.splitlines() if "/" in line]
    for f in [str(bash), *libs]:
        target = dest / f.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(f, target)
    for d in ("lib64", "lib"):  # usrmerge hosts: /lib64 -> usr/lib64
        if Path(f"/{d}").is_symlink() and not (dest / d).exists():
            (dest / d).symlink_to(os.readlink(f"/{d}"))
    if not (dest / "bin/bash").exists():
        (dest / "bin/bash").symlink_to(bash)
    return dest


@pytest.mark.root
def test_users_sles_makes_the_root_and_users_ipa_install_calls_install_packages(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root")
    els = user_elements(tmp_path / "ipa_builder_elements")
    tree = with_bash(make_busybox_root(tmp_path / "their-tree"))
    env = {**clean_env(), "DIB_USER_TREE": str(tree)}
    argv = [sys.executable, "-m", "sles_ipa_builder", "build", "--workspace", str(tmp_path / "ws"),
            "--output", str(tmp_path / "out"), "--keep-workspace", "--elements-path", str(els),
            "--elements", "sles-ipa-install", "sles", "sles-ipa-ramdisk-base",
            "--images-dir", str(tmp_path / "no-images")]  # neither a qcow2 nor an ISO anywhere
    r = subprocess.run(argv, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    root = tmp_path / "ws/build/root"
    order = (root / "var/log/order").read_text().splitlines()
    zypper = "zypper --non-interactive"
    assert order[0] == "root.d/10-sles-image (user's sles)"
    assert f"{zypper} install --no-recommends python311" in order, order  # sles-zypper-config, pre-install
    # install.d: their package-installs.yaml, and the python's build-only headers and pip
    assert f"{zypper} install --no-recommends sib-user-listed python311-devel python311-pip" in order
    assert not any("dmidecode" in line or "git-core" in line for line in order)  # not our sles-ipa-install's list
    i = order.index("install.d/60-user-ipa (user's sles-ipa-install)")
    assert order[i + 1] == f"{zypper} install --no-recommends sib-user-tool sib-user-lib"  # their install-packages
    assert order[-1] == "cleanup.d/99-user-ramdisk"
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())  # their ramdisk-base: no outputs
