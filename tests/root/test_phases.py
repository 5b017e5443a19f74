"""The plan (what summary prints and build runs) and a whole run on a busybox root tree."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import (
    CHROOT_PHASES,
    HOST_PHASES,
    make_busybox_root,
    make_config,
    make_element,
    make_engine_elements,
)

from sles_ipa_builder.config import resolve as config
from sles_ipa_builder.engine import paths, plan
from sles_ipa_builder.engine import runner as phases
from sles_ipa_builder.engine.stages import Phase
from sles_ipa_builder.engine.state import Plan
from sles_ipa_builder.errors import BuildError, ConfigError

REPO = Path(__file__).resolve().parents[2]


def steps_of(made: Plan, phase: str) -> list[tuple[str, str]]:
    return [(s.name, s.element) for s in made.steps if s.stage.value == phase]


@pytest.fixture
def engine_plan(tmp_path: Path, no_builtin_hooks: Path) -> Plan:
    els = make_engine_elements(tmp_path / "elements")
    return plan.make(make_config(tmp_path, els, "bb-os"))


def test_phase_places() -> None:
    assert [p.value for p in Phase] == [
        *HOST_PHASES[:2],
        *CHROOT_PHASES[:3],
        "post-root",
        "pre-finalise",
        "finalise",
        "cleanup",
    ]
    assert {p.value for p in Phase if p.chroot} == set(CHROOT_PHASES)


def test_plan_puts_native_steps_where_dib_had_them(engine_plan: Plan) -> None:
    assert steps_of(engine_plan, "pre-install") == [
        ("01-install-bin", "install-bin"),
        ("05-check-bin", "bb-app"),
        ("10-package-installs", "package-installs"),
        ("20-record", "bb-os"),
        ("50-maybe-sleep", "bb-os"),
        ("60-maybe-fail", "bb-os"),
    ]
    assert steps_of(engine_plan, "install") == [
        ("01-package-installs", "package-installs"),
        ("10-install-static-files", "install-static"),
        ("15-check-static", "bb-app"),
        ("20-record", "bb-os"),
        ("30-from-source", "bb-app"),
        ("50-maybe-sleep", "bb-os"),
        ("60-maybe-fail", "bb-os"),
        ("99-package-uninstalls", "package-installs"),
    ]
    assert steps_of(engine_plan, "root") == [("20-record", "bb-os")]
    assert engine_plan.packages.get("install.d", False) == ["bb-pkg", "bb-build", "bb-when"]
    # sles and sles-ipa-ramdisk-base replaced by stand-ins: no image, no media repositories, no outputs
    assert not any(s.stage.value == "outputs" or s.element == "sles" for s in engine_plan.steps)


def test_the_builders_own_steps_run_without_our_elements_in_the_list(tmp_path: Path, no_builtin_hooks: Path) -> None:
    """A list without sles or sles-ipa-ramdisk-base still gets the qcow2 root, the media and the outputs
    (as before one plan): only a user's element of that name takes them away."""
    els = tmp_path / "elements"
    make_element(els, "my-os", provides=["operating-system"], files={"install.d/50-x": "#!/bin/sh\n"})
    made = plan.make(make_config(tmp_path, els, "my-os"))
    assert made.needs("10-sles-image") and made.needs("05-media-repositories")
    assert made.steps[-1].name == "commit"


def test_describe_is_the_plan(tmp_path: Path, no_builtin_hooks: Path) -> None:
    els = make_engine_elements(tmp_path / "elements")
    made = plan.make(make_config(tmp_path, els, "bb-os"))
    info = plan.describe(made)
    by = {e["name"]: e["by"] for e in info["elements"]}
    assert by["bb-os"] == "requested" and by["bb-app"] == "bb-os" and by["install-static"] == "bb-app"
    assert [(s["stage"], s["name"]) for s in info["steps"]] == [(s.stage.value, s.name) for s in made.steps]
    inst = [s for s in info["steps"] if s["stage"] == "install"]
    assert inst[1] == {"stage": "install", "where": "chroot", "name": "10-install-static-files",
                       "element": "install-static", "kind": "native", "reads": "the elements' static/"}


def test_default_plan_ends_with_the_outputs(tmp_path: Path) -> None:
    made = plan.make(config.resolve({"workspace": str(tmp_path)}, environ={}))
    tail = [(s.stage.value, s.name) for s in made.steps if s.stage.value == "outputs"]
    assert tail == [("outputs", f"ironic-python-agent.{x}") for x in
                    ("kernel", "initramfs", "tar", "tar.gz", "esp.img", "iso", "packages", "cdx.json", "manifest.json",
                     "sha256")
                    ] + [("outputs", "commit")]
    assert made.needs("10-sles-image") and made.needs("05-media-repositories")


def test_a_users_script_replaces_the_native_step(tmp_path: Path, no_builtin_hooks: Path) -> None:
    els = tmp_path / "elements"
    make_element(
        els,
        "os",
        provides=["operating-system"],
        files={"bin/x": "#!/bin/sh\n", "pre-install.d/01-install-bin": "#!/bin/sh\n"},
    )
    made = plan.make(make_config(tmp_path, els, "os"))
    assert ("01-install-bin", "os") in steps_of(made, "pre-install")
    assert next(s for s in made.steps if s.name == "01-install-bin").run is None
    assert made.replaced == ["pre-install.d/01-install-bin (install-bin) by os's script"]


def test_a_users_sles_replaces_ours_with_its_native_steps(tmp_path: Path) -> None:
    """A migrating user's own `sles` (root.d making the root its own way) drops our image and media steps."""
    els = tmp_path / "elements"
    make_element(els, "sles", provides=["operating-system"], files={"root.d/10-my-root": "#!/bin/sh\n"})
    made = plan.make(make_config(tmp_path, els, "sles"))
    assert steps_of(made, "root") == [("10-my-root", "sles")]
    assert not made.needs("05-media-repositories") and not made.needs("00-zypper-refresh")


def test_environment_d_feeds_when(tmp_path: Path, no_builtin_hooks: Path) -> None:
    els = tmp_path / "elements"
    make_element(
        els,
        "os",
        provides=["operating-system"],
        files={
            "environment.d/10-x": "export DIB_X=${DIB_X:-from-envd}\n",
            "package-installs.yaml": "a:\n  when: DIB_X=from-envd\nb:\n  when: DIB_X!=from-envd\n",
        },
    )
    made = plan.make(make_config(tmp_path, els, "os"))
    assert made.packages.get("install.d", False) == ["a"]


def test_workspace_refuses_dangerous_dirs(
    tmp_path: Path, no_builtin_hooks: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    els = make_engine_elements(tmp_path / "elements")
    ws = tmp_path / "ws"
    made = plan.make(make_config(tmp_path, els, "bb-os", output=str(ws / "build" / "out")))
    with pytest.raises(ConfigError, match="output directory"):
        phases.prepare_workspace(made)
    made = plan.make(make_config(tmp_path, els, "bb-os"))
    monkeypatch.setenv("HOME", str(ws / "build"))
    with pytest.raises(ConfigError, match="home directory"):
        phases.prepare_workspace(made)


def test_workspace_is_emptied_not_the_outputs(engine_plan: Plan) -> None:
    made = engine_plan
    (made.build_dir / "stale").mkdir(parents=True)
    made.outputs.mkdir(parents=True, exist_ok=True)
    (made.outputs / "previous.initramfs").write_text("good")
    phases.prepare_workspace(made)
    assert list(made.build_dir.iterdir()) == []
    assert (made.outputs / "previous.initramfs").read_text() == "good"


# --- a whole run -----------------------------------------------------------------------------------
def drive(
    tmp_path: Path, extra_env: dict[str, str] | None = None, **flags: str
) -> subprocess.CompletedProcess[str]:
    els = make_engine_elements(tmp_path / "elements")
    return build(tmp_path, els, make_busybox_root(tmp_path / "base-tree"), extra_env, **flags)


def build(tmp_path: Path, els: Path, base: Path, extra_env: dict[str, str] | None = None,
          breaks: str = "", **flags: str) -> subprocess.CompletedProcess[str]:
    """The real CLI on a busybox base tree: bb-os has no sles and no sles-ipa-ramdisk-base element, so
    the plan has no image, no media and no outputs: only the engine."""
    argv = [sys.executable, "-m", "sles_ipa_builder", "build", "--workspace", str(tmp_path / "ws"),
            "--output", str(tmp_path / "out"), "--elements", "bb-os", "--elements-path", str(els),
            "--base-tree", str(base)]
    for key, value in flags.items():
        argv += [f"--{key.replace('_', '-')}"] + ([] if value == "true" else [value])
    if breaks:
        argv += ["--break", breaks]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DIB_", "SIB_"))}
    env.update(extra_env or {})
    return subprocess.run(argv, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=300)


@pytest.mark.root
def test_every_phase_runs_in_order_in_its_place(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root")
    ca = tmp_path / "build-ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\nbuild-time CA\n")
    leak = {
        "SSL_CERT_FILE": "/host/leak.pem",
        "REQUESTS_CA_BUNDLE": "/host/leak.pem",
        "SIB_HOST_ONLY": "leak",
    }
    r = drive(tmp_path, leak, ca_bundle=str(ca), keep_workspace="true")
    assert r.returncode == 0, r.stderr[-3000:]
    root = tmp_path / "ws" / "build" / "root"
    log = root / "var/log"
    order = (log / "order").read_text().splitlines()
    assert order == [
        "root.d/20-record",
        "extra-data.d/20-record",
        "pre-install.d/05-check-bin",
        "zypper --non-interactive refresh",  # first call of the build, under the cache lock
        "zypper --non-interactive install --no-recommends bb-early",
        "pre-install.d/20-record",
        "zypper --non-interactive install --no-recommends bb-pkg bb-build bb-when",
        "install.d/15-check-static",
        "install.d/20-record",
        "install.d/30-from-source",
        "zypper --non-interactive remove --clean-deps bb-build",
        "post-install.d/20-record",
        "post-root.d/20-record",
        "pre-finalise.d/20-record",
        "finalise.d/20-record",
        "cleanup.d/20-record",
    ]
    for phase in CHROOT_PHASES:
        env = (log / f"env-{phase}").read_text()
        assert "/host/leak" not in env and "SIB_HOST_ONLY" not in env
        assert "BB_FROM_ENVD=yes" in env and "ARCH=amd64" in env and "DIB_INIT_SYSTEM=systemd" in env
        assert "SSL_CERT_FILE=/tmp/sib-build-ca.pem" in env
        assert (log / f"ca-{phase}").read_text() == ca.read_text()
        mounts = (log / f"mounts-{phase}").read_text()
        for mp in (
            " /proc ",
            " /sys ",
            " /dev ",
            " /dev/pts ",
            " /tmp/in_target.d ",
            " /tmp/sib-build-ca.pem ",
        ):
            assert mp in mounts, (phase, mp)
        assert any(" /sys " in m and " ro," in m for m in mounts.splitlines())
        assert (log / f"cwd-{phase}").read_text().strip() == "/"
        assert (log / f"dirname-{phase}").read_text().strip() == f"/tmp/in_target.d/{phase}.d"
        assert (log / f"resolv-{phase}").read_text() == Path("/etc/resolv.conf").read_text()
    assert (log / "cwd-cleanup").read_text().strip() == str(tmp_path / "ws")
    assert "TARGET_ROOT=" + str(root) in (log / "env-root").read_text()
    # after the build: no CA file, no hooks dir, the image's own resolv.conf, static files root-owned
    assert not (root / "tmp/sib-build-ca.pem").exists() and not (root / "tmp/in_target.d").exists()
    assert (root / "etc/resolv.conf").read_text() == "# the image's own resolv.conf\n"
    assert not (root / "etc/resolv.conf.ORIG").exists()
    st = (root / "etc/bb-static").stat()
    assert (st.st_uid, st.st_mode & 0o777) == (0, 0o640)
    assert os.readlink(root / "etc/bb-link") == "bb-static"
    assert oct((root / "usr/local/bin/bb-tool").stat().st_mode & 0o777) == "0o755"
    assert "20-record" in (tmp_path / "ws" / "build.log").read_text()


@pytest.mark.root
def test_failing_hook_names_script_element_and_tail(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root")
    r = drive(tmp_path, {"DIB_FAIL_IN": "install"}, ca_bundle="")
    assert r.returncode == 1
    assert "error: hook install.d/60-maybe-fail of element bb-os exited 3" in r.stderr
    # the error shows the hook's last 20 lines
    assert "  | the last words" in r.stderr and "  | noise line 12" in r.stderr and "  | noise line 11" not in r.stderr
    assert "--break after-error" in r.stderr and "build.log" in r.stderr
    assert not (tmp_path / "ws" / "build").exists()  # a failed build's tree is removed too
    assert "the last words" in (tmp_path / "ws" / "build.log").read_text()


@pytest.mark.root
def test_break_without_a_terminal_warns_and_goes_on(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root")
    els = make_engine_elements(tmp_path / "elements")
    r = build(tmp_path, els, make_busybox_root(tmp_path / "base-tree"), {"DIB_FAIL_IN": "post-install"},
              breaks="before-install,after-error")
    assert r.returncode == 1
    assert "break at before-install: stdin is not a terminal" in r.stderr
    assert "break at after-error: stdin is not a terminal" in r.stderr


def test_in_root_keeps_absolute_links_inside(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "usr/lib").mkdir(parents=True)
    os.symlink("/usr/lib", root / "lib")
    os.symlink("../../..", root / "usr/lib/up")
    assert paths.in_root(root, "lib/x") == root / "usr/lib/x"
    assert paths.in_root(root, "lib/up/usr/lib/up/x") == root / "x"  # `..` stops at the root, as in a chroot
    # a link in the middle of another link's target: still resolved inside, never on the host
    host = tmp_path / "host-side"
    host.mkdir()
    os.symlink(str(host), root / "usr/h")  # means root/<host path>, not the host's directory
    os.symlink("../usr/h/sub", root / "etc")
    got = paths.in_root(root, "etc/file")
    assert got == root / str(host).lstrip("/") / "sub/file"
    assert not str(got.resolve()).startswith(str(host))
    os.symlink("loop-b", root / "loop-a")
    os.symlink("loop-a", root / "loop-b")
    with pytest.raises(BuildError, match="too many levels"):
        paths.in_root(root, "loop-a/x")
