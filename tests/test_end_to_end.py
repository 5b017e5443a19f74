"""The whole pipeline on the test media: build with the default elements, boot, check the artifacts.

This is what `make demo` does for a newcomer. It is slow (a real libguestfs extraction, zypper
installs from the ISO, a pip install of IPA from source, a QEMU boot under TCG) and runs in CI.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import sys
import tarfile
from pathlib import Path

import pytest

from sles_ipa_builder import ramdisk, run
from sles_ipa_builder.commands import load_testmedia

pytestmark = [pytest.mark.root, pytest.mark.guestfs, pytest.mark.qemu, pytest.mark.media, pytest.mark.slow]
NAME = "ipa-e2e"


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    media = load_testmedia().ensure()
    work = tmp_path_factory.mktemp("e2e")
    out = work / "out"
    password = "pw-" + secrets.token_hex(8)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DIB_", "IPA_", "IRONIC_", "SIB_"))}
    env.update({
        "ENABLE_DEV_USER_PASS": "true",
        "DIB_DEV_USER_PASSWORD": password,
        "SIB_ACCEL": os.environ.get("SIB_ACCEL", "tcg"),
    })
    argv = [sys.executable, "-m", "sles_ipa_builder", "build", "--config", str(media.profile),
            "--workspace", str(work / "ws"), "--output", str(out), "--name", NAME, "--boot-test",
            "--elements", *"sles-ipa-install sles sles-zypper-config sles-ipa-ramdisk-base dynamic-login "
            "journal-to-console devuser openssh-server sles-extra-hardware ipa-module-autoload "
            "ipa-add-buildinfo sles-ipa-tls".split(),
            "--report", str(work / "report.json")]
    res = run.run(argv, env=env, check=False, capture=True)
    (work / "build-output.txt").write_text(res.stdout + res.stderr)
    assert res.returncode == 0, (res.stdout + res.stderr)[-6000:]
    tree = work / "unpacked"
    tree.mkdir()
    run.pipe(["zstd", "-dc", out / f"{NAME}.initramfs"], ["cpio", "-idm", "--quiet", "--no-absolute-filenames"],
             cwd=tree)
    return {"out": out, "tree": tree, "password": password, "work": work, "log": res.stdout + res.stderr}


def test_artifacts_and_checksums(built):
    out = built["out"]
    for suffix in ("kernel", "initramfs", "tar", "sha256", "packages", "manifest.json"):
        assert (out / f"{NAME}.{suffix}").is_file(), suffix
    with tarfile.open(out / f"{NAME}.tar") as tar:
        assert tar.getnames() == [f"{NAME}.kernel", f"{NAME}.initramfs"]
    sums = dict(reversed(line.split()) for line in (out / f"{NAME}.sha256").read_text().splitlines())
    for name, digest in sums.items():
        assert hashlib.sha256((out / name).read_bytes()).hexdigest() == digest


def test_boot_test_saw_the_agent(built):
    assert "lookup" in built["log"] and "heartbeat" in built["log"]


def test_manifest(built):
    manifest = json.loads((built["out"] / f"{NAME}.manifest.json").read_text())
    text = json.dumps(manifest)
    assert built["password"] not in text
    assert "ironic-python-agent" in text
    report = json.loads((built["work"] / "report.json").read_text())
    assert report


def test_tree_holds_what_the_elements_promise(built):
    t = built["tree"]
    assert os.readlink(t / "init") == "./sbin/init" or os.readlink(t / "init") == "sbin/init"
    assert (t / "etc/fstab").read_text().strip() == "#disabled"
    assert (t / "opt/ironic-python-agent/bin/ironic-python-agent").exists()
    for link in ("ironic-python-agent", "hardware-detect"):  # absolute links: resolve inside the tree
        target = os.readlink(t / "usr/local/bin" / link)
        assert (t / target.lstrip("/")).is_file(), (link, target)
    unit = t / "usr/lib/systemd/system/ironic-python-agent.service"
    assert "ConditionPathExists=!/etc/.rescued" in unit.read_text()
    assert (t / "etc/systemd/system/multi-user.target.wants/ironic-python-agent.service").is_symlink()
    assert "megaraid_sas" in (t / "etc/modules-load.d/load.conf").read_text()
    assert (t / "etc/systemd/journald.conf.d/log-to-console.conf").is_file()
    assert (t / "etc/machine-id").read_text().strip() in ("", "uninitialized")
    assert not list((t / "etc/ssh").glob("ssh_host_*"))
    assert (t / "etc/ironic-python-agent.d/agent.key").stat().st_mode & 0o077 == 0
    assert (t / "buildinfo.txt").is_file()
    assert (t / "usr/bin/sysbench").is_file()  # the test media has it: 60-sysbench-if-available installed it
    for cmd in ("install-packages", "pkg-map"):  # for users' DIB elements, as DIB's install-bin leaves them
        assert os.access(t / "usr/local/bin" / cmd, os.X_OK), cmd
    assert not (t / "etc/zypp/repos.d").exists() or not any(
        "127.0.0.1" in p.read_text() for p in (t / "etc/zypp/repos.d").glob("*.repo"))
    assert not (t / "tmp/ironic-python-agent").exists()
    assert not list(t.glob("lldpad*"))


def test_what_the_ramdisk_leaves_out_and_precompiles(built):
    t = built["tree"]
    manifest = json.loads((built["out"] / f"{NAME}.manifest.json").read_text())
    assert not (t / "usr/bin/git").exists()  # build-only
    site = next((t / "opt/ironic-python-agent/lib").glob("python3*/site-packages"))
    agent = list(site.glob("ironic_python_agent/cmd/__pycache__/agent.cpython-*.pyc"))
    assert agent and ramdisk.unchecked_pyc(bytes(agent[0]))
    stale = [p for p in t.rglob("*.pyc") if not ramdisk.unchecked_pyc(bytes(p)) and "/encodings/" not in str(p)]
    assert stale == []
    pruned = {c["rule"]: c for c in manifest["ramdisk"]["pruned"]}
    assert pruned["left out usr/lib*/*.a"]["bytes"] > 0 and not list(t.glob("usr/lib/*/*.a"))
    assert [c["rule"] for c in manifest["cuts"]][-1] == "firmware only removed modules named"
    assert "lsblk" not in manifest["agent_tools_missing"]  # a core tool: the build would have failed


def test_no_secret_outside_shadow(built):
    t, password = built["tree"], built["password"].encode()
    leaks = []
    for root, _dirs, files in os.walk(t):
        for f in files:
            p = Path(root) / f
            if p.is_symlink() or not p.is_file() or p == t / "etc/shadow":
                continue
            if password in p.read_bytes():
                leaks.append(str(p.relative_to(t)))
    assert leaks == []
    assert password.decode() not in built["log"]


def test_offline_rebuild_contacts_nothing(built, tmp_path):
    """After the online build, `--offline` builds again in a network namespace with only loopback:
    the root from the cache, git from the mirrors, packages from the ISO, pip from the wheelhouse."""
    media = load_testmedia().ensure()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DIB_", "IPA_", "IRONIC_", "SIB_"))}
    env["SIB_ACCEL"] = os.environ.get("SIB_ACCEL", "tcg")
    for var in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY"):
        env.pop(var, None)
    out = tmp_path / "out"
    argv = ["unshare", "--net", "sh", "-c", 'ip link set lo up && exec "$@"', "sh",
            sys.executable, "-m", "sles_ipa_builder", "build", "--offline", "--config", str(media.profile),
            "--workspace", str(tmp_path / "ws"), "--output", str(out), "--name", NAME]
    res = run.run(argv, env=env, check=False, capture=True)
    assert res.returncode == 0, (res.stdout + res.stderr)[-6000:]
    packages = (out / f"{NAME}.packages").read_text()
    assert "ironic-python-agent==" in packages and "hardware==" in packages
