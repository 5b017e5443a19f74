"""Shared fixtures: DIB element trees in tmp_path, a busybox chroot tree, a fake zypper."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import hooktree
import pytest

from sles_ipa_builder import run
from sles_ipa_builder.config import resolve as config
from sles_ipa_builder.config.arch import HOST_DEFAULT, Arch
from sles_ipa_builder.delivery import artifacts
from sles_ipa_builder.engine import elements
from sles_ipa_builder.packing.compress import Compression

BUSYBOX = "/bin/busybox"
# A zypper stand-in for the target: records its argv, one call a line.
FAKE_ZYPPER = """#!/bin/sh
echo "zypper $*" >> /var/log/order
echo "fake zypper: $*"
"""
CHROOT_PHASES = ("pre-install", "install", "post-install", "finalise")
HOST_PHASES = ("root", "extra-data", "post-root", "pre-finalise", "cleanup")


def make_element(
    base: Path,
    name: str,
    *,
    deps: tuple[str, ...] | list[str] = (),
    provides: tuple[str, ...] | list[str] = (),
    files: dict[str, Any] | None = None,
) -> Path:
    """An element dir. files: relpath -> text (mode 0755 in <phase>.d/ and bin/, else 0644), or
    (text, mode), or ('->', link target) for a symlink."""
    d = base / name
    d.mkdir(parents=True, exist_ok=True)
    if deps:
        (d / "element-deps").write_text("\n".join(deps) + "\n")
    if provides:
        (d / "element-provides").write_text("\n".join(provides) + "\n")
    for rel, spec in (files or {}).items():
        p = d / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(spec, tuple) and spec[0] == "->":
            os.symlink(spec[1], p)
            continue
        text, mode = spec if isinstance(spec, tuple) else (spec, None)
        p.write_text(text)
        top = rel.split("/")[0]
        if mode is None:
            mode = 0o755 if (top.endswith(".d") and top != "environment.d") or top == "bin" else 0o644
        os.chmod(p, mode)
    return d


@pytest.fixture
def no_builtin_hooks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Unit tests see only their own elements, not the repository's hooks/."""
    empty = tmp_path / "builtin-hooks"
    empty.mkdir()
    monkeypatch.setattr(elements, "BUILTIN_DIR", empty)
    return empty


def make_config(tmp_path: Path, elements_dir: Path, names: str, **more: Any) -> config.Config:
    cli: dict[str, Any] = {
        "workspace": str(tmp_path / "ws"),
        "output": str(tmp_path / "out"),
        "elements": names,
        "elements_path": str(elements_dir),
        "ca_bundle": "",
    }
    cli.update(more)
    return config.resolve(cli=cli, environ={"HOME": str(tmp_path)})


def _link(root: Path, name: str) -> None:
    p = root / name
    p.parent.mkdir(parents=True, exist_ok=True)
    if not os.path.lexists(p):
        os.symlink("/bin/busybox", p)


def make_busybox_root(dest: Path) -> Path:
    """A minimal root tree: busybox-static + applet links + /usr/bin/zypper recording its argv."""
    if not Path(BUSYBOX).is_file():
        pytest.skip("busybox-static is not installed (apt-get install -y busybox-static)")
    for d in (
        "bin",
        "sbin",
        "usr/bin",
        "usr/sbin",
        "usr/local/bin",
        "etc",
        "proc",
        "sys",
        "dev",
        "tmp",
        "var/log",
        "root",
        "run",
    ):
        (dest / d).mkdir(parents=True, exist_ok=True)
    os.chmod(dest / "tmp", 0o1777)
    shutil.copy2(BUSYBOX, dest / "bin/busybox")
    for applet in (
        "sh",
        "cat",
        "echo",
        "ls",
        "env",
        "sleep",
        "mkdir",
        "grep",
        "sed",
        "test",
        "touch",
        "id",
        "readlink",
        "rm",
        "cp",
        "ln",
        "chmod",
        "stat",
        "wc",
        "head",
        "tail",
        "sort",
        "mount",
        "pwd",
        "true",
        "false",
        "printf",
        "dirname",
        "basename",
        "tr",
        "cut",
        "seq",
    ):
        _link(dest, f"bin/{applet}")
    for applet in ("env",):
        _link(dest, f"usr/bin/{applet}")
    (dest / "usr/bin/zypper").write_text(FAKE_ZYPPER)
    os.chmod(dest / "usr/bin/zypper", 0o755)
    (dest / "etc/resolv.conf").write_text("# the image's own resolv.conf\n")
    (dest / "etc/passwd").write_text("root:x:0:0:root:/root:/bin/sh\n")
    return dest


@pytest.fixture
def busybox_root(tmp_path: Path) -> Path:
    return make_busybox_root(tmp_path / "base-tree")


def is_root() -> bool:
    return os.geteuid() == 0


def _recorder(phase: str) -> str:
    """A hook that logs its name, environment, mounts, resolv.conf, CA bundle and cwd."""
    log = "/var/log" if phase in CHROOT_PHASES else "$TARGET_ROOT/var/log"
    return f"""#!/bin/sh
set -e
L={log}
echo "{phase}.d/20-record" >> $L/order
env | sort > $L/env-{phase}
cat /proc/self/mountinfo > $L/mounts-{phase} 2>/dev/null || true
cat /etc/resolv.conf > $L/resolv-{phase} 2>/dev/null || true
pwd > $L/cwd-{phase}
dirname "$0" > $L/dirname-{phase}
if [ -n "${{SSL_CERT_FILE:-}}" ]; then cat "$SSL_CERT_FILE" > $L/ca-{phase} || true; fi
"""


SLEEPER = """#!/bin/sh
if [ "${DIB_SLEEP_IN:-}" = "PHASE" ]; then
    touch /tmp/sleeping-PHASE
    sleep 300
fi
"""
FAILER = """#!/bin/sh
if [ "${DIB_FAIL_IN:-}" = "PHASE" ]; then
    for i in $(seq 1 30); do echo "noise line $i"; done
    echo "the last words"
    exit 3
fi
"""


def make_engine_elements(base: Path) -> Path:
    """A tree of DIB elements exercising every phase and every native step (see test_phases).

    bb-os pulls in empty stand-ins for `sles` and `sles-ipa-ramdisk-base`: a user's element of those
    names replaces the builder's own, with its native steps (the qcow2 root, the Media1 repositories,
    the outputs), so a build of bb-os on --base-tree runs the engine alone."""
    files: dict[str, Any] = {"environment.d/10-bb.bash": "export BB_FROM_ENVD=yes\n"}
    for phase in (*HOST_PHASES, *CHROOT_PHASES):
        files[f"{phase}.d/20-record"] = _recorder(phase)
    for phase in CHROOT_PHASES:
        files[f"{phase}.d/50-maybe-sleep"] = SLEEPER.replace("PHASE", phase)
        files[f"{phase}.d/60-maybe-fail"] = FAILER.replace("PHASE", phase)
    make_element(
        base, "bb-os", provides=["operating-system"],
        deps=["bb-app", "package-installs", "sles", "sles-ipa-ramdisk-base"], files=files,
    )
    for stand_in in ("sles", "sles-ipa-ramdisk-base"):
        make_element(base, stand_in, files={"README.rst": "a test stand-in: replaces the built-in element\n"})
    make_element(
        base,
        "bb-app",
        deps=["install-static", "install-bin"],
        files={
            "bin/bb-tool": "#!/bin/sh\necho tool\n",
            "pre-install.d/05-check-bin": "#!/bin/sh\ntest -x /usr/local/bin/bb-tool\n"
            "echo pre-install.d/05-check-bin >> /var/log/order\n",
            "install.d/15-check-static": "#!/bin/sh\ntest -f /etc/bb-static\ntest -L /etc/bb-link\n"
            "echo install.d/15-check-static >> /var/log/order\n",
            "install.d/bb-source-install/30-from-source": "#!/bin/sh\n"
            "echo install.d/30-from-source >> /var/log/order\n",
            "static/etc/bb-static": ("static file\n", 0o640),
            "static/etc/bb-link": ("->", "bb-static"),
            "package-installs.yaml": "bb-pkg:\nbb-build:\n  build-only: true\n"
            "bb-early:\n  phase: pre-install.d\n"
            "bb-when:\n  when: BB_FROM_ENVD=yes\n",
        },
    )
    return base


@pytest.fixture(scope="session")
def hook_base(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The base root of the hook tests: a small tree made from this host (hooktree.host_tree), built
    once per session, or SIB_TEST_ROOT_TREE (a root tree of your own, e.g. the test media's)."""
    if not is_root():
        pytest.skip("needs root (chroot, overlay mounts)")
    if run.which("unshare") is None:
        pytest.skip("unshare (util-linux) is missing")
    given = os.environ.get("SIB_TEST_ROOT_TREE")
    if given:
        yield Path(given)
        return
    place = hooktree.tree_place(tmp_path_factory.getbasetemp())
    if place is None:
        pytest.skip("no directory on /usr's filesystem to hard-link the small tree into")
    home = Path(tempfile.mkdtemp(prefix="sib-hook-base-", dir=place))
    try:
        yield hooktree.host_tree(home / "root")
    finally:
        hooktree.remove_tree(home)


@pytest.fixture
def target(tmp_path: Path, hook_base: Path) -> hooktree.Target:
    return hooktree.Target(tmp_path, hook_base)


@pytest.fixture(scope="session")
def fixture_media() -> Any:
    """The generated test media (built on first use, cached; see fixtures/README.md)."""
    from sles_ipa_builder.fixtures import testmedia

    return testmedia.ensure(log_progress=False)


REPO = Path(__file__).resolve().parent.parent
OWN_CACHES = ("__pycache__", ".pytest_cache", ".mypy_cache", ".ruff_cache", ".venv", ".egg-info")


def _untracked() -> set[str]:
    """Top-level files and directories of the checkout that git does not track, ignored ones included.

    Top level only: that is where a test writing to a relative path lands, and a developer may add a
    module deeper down while the suite runs."""
    from sles_ipa_builder import run

    if not (REPO / ".git").exists() or run.which("git") is None:
        return set()
    res = run.run(["git", "-C", REPO, "ls-files", "--others", "--directory", "--no-empty-directory"],
                  capture=True, check=False)
    return {p.split("/")[0] for p in res.stdout.splitlines() if not any(c in p for c in OWN_CACHES)}


@pytest.fixture(scope="session", autouse=True)
def checkout_stays_clean() -> Any:
    """No test writes into the source checkout (one once left root/root/.rpmdb there, and it was committed)."""
    before = _untracked()
    yield
    new = sorted(_untracked() - before)
    assert not new, f"tests wrote into the checkout: {new}"


TIERS = Path(__file__).parent
HEAVY = ("guestfs", "qemu", "media", "registry")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Markers follow the folders: tests/root/ is `root`, tests/vm/ is `vm`. The few heavier tests of a
    mostly-unit file carry their own marks: guestfs, qemu, media and registry make them `vm` too, so
    `-m "not vm"` leaves out everything that needs the test media, a VM or the registry. Without root,
    every `root` test is skipped instead of failing."""
    stray = sorted({str(i.path.relative_to(TIERS)) for i in items
                    if i.path.is_relative_to(TIERS) and len(i.path.relative_to(TIERS).parts) == 1})
    if stray:
        raise pytest.UsageError(f"tests/{', tests/'.join(stray)}: a test file goes in tests/unit/, tests/root/ "
                                "or tests/vm/ (see the Makefile's test targets)")
    for item in items:
        if not item.path.is_relative_to(TIERS):
            continue
        tier = item.path.relative_to(TIERS).parts[0]
        if tier == "root":
            item.add_marker(pytest.mark.root)
        elif tier == "vm" or any(item.get_closest_marker(m) for m in HEAVY):
            item.add_marker(pytest.mark.vm)
        if not is_root() and item.get_closest_marker("root"):
            item.add_marker(pytest.mark.skip(reason="needs root"))


def write_artifacts(tree: Path, output_dir: Path, name: str, compression: Compression, *,
                    size_limit_mb: int | None, arch: Arch = HOST_DEFAULT, **options: Any) -> artifacts.Artifacts:
    """Every output at once, through the API the plan's output steps use (open_staging, each Output's
    writer, commit, close), without a build around them."""
    st = artifacts.open_staging(tree, output_dir, name, compression, arch=arch, size_limit_mb=size_limit_mb,
                                **options)
    try:
        for output in artifacts.OUTPUTS:
            output.write(st)
        return artifacts.commit(st)
    finally:
        artifacts.close(st)


# --- the shared end-to-end build -------------------------------------------------------------------
E2E_NAME = "ipa-e2e"
DATA = Path(__file__).resolve().parent / "data"
PLUGIN = "sib-test-hardware-manager"  # tests/data/ipa-plugins/<PLUGIN>: a hardware manager (ipa_plugins)


@pytest.fixture(scope="session")
def built(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The one end-to-end build of the test media (tests/vm: test_isoboot, test_end_to_end share it,
    so CI pays for it once). Its boot test is the ISO's, under Secure Boot (test_isoboot.py)."""
    import secrets
    import sys

    from sles_ipa_builder.fixtures import testmedia

    media = testmedia.ensure()
    work = tmp_path_factory.mktemp("e2e")
    out = work / "out"
    password = "pw-" + secrets.token_hex(8)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DIB_", "IPA_", "IRONIC_", "SIB_"))}
    env.update({
        "ENABLE_DEV_USER_PASS": "true",
        "DIB_DEV_USER_PASSWORD": password,
        "DIB_IPA_INSTALL_SSH": "true",  # the add-on test logs in with SSH (off by default, as upstream)
        # a custom hardware manager, as the Nordix builder's users give them (test_end_to_end checks it)
        "DIB_IPA_PLUGINS": PLUGIN, "DIB_CUSTOM_HW_MANAGER_DIR": str(DATA / "ipa-plugins"),
        "SIB_ACCEL": os.environ.get("SIB_ACCEL", "tcg"),
    })
    argv = [sys.executable, "-m", "sles_ipa_builder", "build", "--config", str(media.profile),
            "--workspace", str(work / "ws"), "--output", str(out), "--name", E2E_NAME,
            "--elements", *"sles-ipa-install sles sles-zypper-config sles-ipa-ramdisk-base dynamic-login "
            "journal-to-console devuser openssh-server sles-extra-hardware ipa-module-autoload "
            "ipa-add-buildinfo sles-ipa-tls".split(),
            "--report", str(work / "report.json")]
    res = run.run(argv, env=env, check=False, capture=True)
    (work / "build-output.txt").write_text(res.stdout + res.stderr)
    assert res.returncode == 0, (res.stdout + res.stderr)[-6000:]
    tree = work / "unpacked"
    tree.mkdir()
    run.pipe(["zstd", "-dc", out / f"{E2E_NAME}.initramfs"], ["cpio", "-idm", "--quiet", "--no-absolute-filenames"],
             cwd=tree)
    return {"out": out, "tree": tree, "password": password, "work": work, "log": res.stdout + res.stderr}


def static_network_data(mac: str, address: str) -> dict[str, Any]:
    """OpenStack network_data.json for one link with a static IPv4 address in QEMU's user network."""
    return {
        "links": [{"id": "nic0", "type": "phy", "ethernet_mac_address": mac}],
        "networks": [{"id": "net0", "link": "nic0", "type": "ipv4", "ip_address": address, "netmask": "255.255.255.0",
                      "routes": [{"network": "0.0.0.0", "netmask": "0.0.0.0", "gateway": "10.0.2.2"}]}],
        "services": [{"type": "dns", "address": "10.0.2.3"}],
    }



# --- timings the slow VM tests print (CI shows them even though pytest captures output) -------------
def clean_env() -> dict[str, str]:
    """The environment of a CLI run in a test: no settings of the caller's, TCG."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DIB_", "IPA_", "IRONIC_", "SIB_"))}
    env.pop("ARCH", None)
    env["SIB_ACCEL"] = "tcg"
    return env


def say(request: pytest.FixtureRequest, line: str) -> None:
    """Timings on the terminal even when pytest captures output (CI prints them)."""
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    if reporter is not None and capture is not None:
        with capture.global_and_fixture_disabled():
            reporter.write_line(line)


def biggest(steps: dict[str, float], n: int = 4) -> str:
    return ", ".join(f"{name} {sec:.0f} s" for name, sec in sorted(steps.items(), key=lambda kv: -kv[1])[:n])


def timed_media(request: pytest.FixtureRequest, label: str, **kwargs: Any) -> Any:
    """testmedia.ensure(**kwargs), saying how long the media took to build (or that they were cached)."""
    import time

    from sles_ipa_builder.fixtures import testmedia

    start = time.monotonic()
    m = testmedia.ensure(**kwargs)
    took = time.monotonic() - start
    made = json.loads((m.profile.parent / "manifest.json").read_text())
    how = f"built in {made['seconds']:.0f} s ({biggest(made['steps'])})" if took > 5 else "cached"
    say(request, f"{label}: test media {how}; load {os.getloadavg()[0]:.1f}")
    return m


def timed_build(request: pytest.FixtureRequest, label: str, work: Path, name: str, *args: str,
                env: dict[str, str] | None = None) -> dict[str, Any]:
    """`build --workspace work/ws --output work/out --report work/report.json ARGS`, asserted to pass, its
    time and boot test said, the initramfs unpacked to work/unpacked; the hooks' output (debug) is the
    build log's."""
    import sys
    import time

    from sles_ipa_builder import run

    out = work / "out"
    argv = [sys.executable, "-m", "sles_ipa_builder", "build", "--workspace", str(work / "ws"), "--output", str(out),
            "--report", str(work / "report.json"), *args]
    start = time.monotonic()
    res = run.run(argv, env=env or clean_env(), check=False, capture=True)
    took = time.monotonic() - start
    (work / "build-output.txt").write_text(res.stdout + res.stderr)
    assert res.returncode == 0, (res.stdout + res.stderr)[-6000:]
    boot = next((ln for ln in res.stdout.splitlines() if ln.startswith("boot test passed")), "")
    timings = json.loads((work / "report.json").read_text())["timings"]
    hooks = {f"{h['phase']}.d/{h['script']}": h["seconds"] for h in timings["hooks"]}
    say(request, f"{label}: build + boot test {took:.0f} s (build {sum(timings['steps'].values()):.0f} s: "
                 f"{biggest(hooks)}); {boot}; load {os.getloadavg()[0]:.1f}")
    tree = work / "unpacked"
    tree.mkdir()
    run.pipe(["zstd", "-dc", out / f"{name}.initramfs"], ["cpio", "-idm", "--quiet", "--no-absolute-filenames"],
             cwd=tree)
    return {"out": out, "tree": tree, "log": res.stdout + res.stderr, "work": work,
            "hooks": (work / "ws" / "build.log").read_text(errors="replace")}
