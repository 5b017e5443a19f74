"""Each built-in element's hooks, run on the test media's root tree, checked against what it promises.

In the spirit of osbuild's stage diff tests: the base root is the lower layer of an overlay, the
element's hooks run (chroot phases inside the merged tree, host phases against it) and the upper
layer is exactly what the element changed. Each test then checks that diff: files, modes, units
enabled (symlinks in *.wants), and secrets absent.

The engine runs the hooks (phases.run_phase: its mounts, environment, install-static, script order)
for just the elements under test, in a child process inside the engine's private namespace, with
the overlay as TARGET_ROOT; each element is tested alone, in seconds. Package installs and clones
are left out (the media's repositories are the end-to-end test's job), and so are the heavy real
pip installs of IPA and hardware: a tiny local package and a fake pip stand in for them.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import stat
import sys
import textwrap
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pytest

from sles_ipa_builder import config, context, elements, hooks, namespace, phases, plan, run
from sles_ipa_builder.context import BuildContext
from sles_ipa_builder.errors import BuildError
from sles_ipa_builder.phase import Phase

HOOKS = elements.HOOKS_DIR
REPO = HOOKS.parent
ORDER = ("extra-data.d", "pre-install.d", "install.d", "post-install.d", "post-root.d", "pre-finalise.d",
         "finalise.d", "cleanup.d")
WANTS = "etc/systemd/system/multi-user.target.wants"
SECRET = "Pa55-w0rd-n0t-in-the-image"

pytestmark = [pytest.mark.root, pytest.mark.media]


@pytest.fixture(scope="module")
def base_root() -> Path:
    if os.geteuid() != 0:
        pytest.skip("needs root (chroot, overlay mounts)")
    if run.which("unshare") is None:
        pytest.skip("unshare (util-linux) is missing")
    given = os.environ.get("SIB_TEST_ROOT_TREE")  # a root tree of your own instead of the test media's
    if given:
        return Path(given)
    from sles_ipa_builder.commands import load_testmedia

    media = load_testmedia().ensure()
    return Path(media.root_tree)


class Target:
    """An overlay over the base root: `upper` holds what the hooks changed (whiteouts = deletions)."""

    def __init__(self, tmp: Path, lower: Path) -> None:
        self.lower = lower
        self.build = tmp / "build"
        self.root = self.build / "root"  # the merged view while hooks run (TARGET_ROOT)
        self.upper = tmp / "upper"
        self.work = tmp / "work"
        self.hooks = self.build / "hooks"  # TMP_HOOKS_PATH
        for d in (self.root, self.upper, self.work):
            d.mkdir(parents=True)
        self.output = ""

    # --- the tree after the run ------------------------------------------------------------------
    def path(self, rel: str) -> Path:
        """The merged view of one path: upper if changed there, else lower."""
        up = self.upper / rel
        return up if os.path.lexists(up) else self.lower / rel

    def exists(self, rel: str) -> bool:
        up = self.upper / rel
        if os.path.lexists(up):
            return not _whiteout(up)
        return os.path.lexists(self.lower / rel)

    def read(self, rel: str) -> str:
        return self.path(rel).read_text()

    def mode(self, rel: str) -> int:
        return stat.S_IMODE(self.path(rel).lstat().st_mode)

    def changed(self) -> dict[str, str]:
        """relpath -> 'deleted' / 'dir' / 'link' / 'file' for everything in the upper layer."""
        out: dict[str, str] = {}
        for dirpath, dirnames, filenames in os.walk(self.upper):
            for name in dirnames + filenames:
                p = Path(dirpath) / name
                rel = str(p.relative_to(self.upper))
                if _whiteout(p):
                    out[rel] = "deleted"
                elif p.is_symlink():
                    out[rel] = "link"
                elif p.is_dir():
                    out[rel] = "dir"
                else:
                    out[rel] = "file"
        return out

    def enabled(self, unit: str, wants: str = WANTS) -> bool:
        """The unit's symlink is in the *.wants dir of the tree after the run (made now or before)."""
        rel = f"{wants}/{unit}"
        return self.exists(rel) and self.path(rel).is_symlink()

    def files_containing(self, needle: str) -> list[str]:
        hits = []
        for rel, kind in self.changed().items():
            if kind == "file" and needle.encode() in (self.upper / rel).read_bytes():
                hits.append(rel)
        return hits

    # --- running hooks ---------------------------------------------------------------------------
    def run(
        self,
        names: Iterable[str],
        phases: Iterable[str] = ORDER,
        env: Mapping[str, str] | None = None,
        setup: str = "",
        check: bool = True,
        resolve: bool = False,
    ) -> run.Result:
        """Run the named elements' hooks of `phases` (e.g. "install.d") with the engine.

        `setup` is shell run first, on the host, with $ROOT = the merged tree. Everything happens in
        a child process that enters the engine's private namespace, so no mount outlives it.
        """
        spec = {
            "lower": str(self.lower), "upper": str(self.upper), "work": str(self.work),
            "build": str(self.build), "names": list(names), "env": dict(env or {}),
            "phases": [p.removesuffix(".d") for p in phases], "setup": setup, "resolve": resolve,
        }
        code = "import runpy, sys; runpy.run_path(sys.argv[1])['_child'](sys.argv[2])"
        result = run.run([sys.executable, "-c", code, __file__, json.dumps(spec)], capture=True, check=False,
                         env={**os.environ, "PYTHONPATH": str(REPO)})
        self.output = result.stdout + result.stderr
        if check:
            assert result.returncode == 0, self.output[-4000:]
        return result


def _context(spec: Mapping[str, Any]) -> BuildContext:
    """A BuildContext for just these elements (no operating-system element needed), like make_context."""
    build = Path(spec["build"])
    extra: dict[str, str] = spec["env"]
    environ = {"HOME": str(build.parent), "DIB_SLES_SERVICE_PACK": "SP5", **extra}
    cfg = config.resolve(cli={"workspace": str(build.parent / "ws"), "ca_bundle": ""}, environ=environ)
    if spec.get("resolve"):  # a whole element list, resolved as a build resolves it
        els = elements.resolve(spec["names"], [HOOKS])
    else:
        els = [elements.Element(n, HOOKS / n, None) for n in spec["names"]]
    env = context.hook_env(cfg, build, [HOOKS], els)
    # what the builder does not own (SOURCE_DATE_EPOCH, PIP_NO_INDEX...) goes straight to the hooks
    env.update({k: v for k, v in extra.items() if k not in env or k.startswith("DIB_DEBUG")})
    ctx = BuildContext(cfg=cfg, build_dir=build, root=build / "root", hooks_dir=build / "hooks",
                       outputs=build.parent / "out", log_path=build.parent / "build.log", search_path=[HOOKS],
                       elements=els, tree=elements.merge(els, env), env=env, ca_bundle=None)
    ctx.phase_env = plan.sourced_env(ctx)
    elements.apply_install_types(ctx.tree, ctx.phase_env)
    # no package installs, no clones, and none of the builder's own steps (image, media, wheelhouse):
    # the hooks and DIB's generic elements only. The rest is the end-to-end test's job.
    ctx.steps = [s for s in plan.steps(ctx) if s.run is None or s.element in elements.NATIVE]
    return ctx


def _child(raw: str) -> None:
    """In a fresh process: private namespace, overlay, setup, then the engine runs the phases."""
    # hook output (logged at debug by the engine) and step lines; not our own commands' argv
    logging.basicConfig(level=logging.INFO, stream=sys.stdout, format="%(message)s")
    logging.getLogger("sles_ipa_builder.hook").setLevel(logging.DEBUG)
    spec = json.loads(raw)
    namespace.enter()
    ctx = _context(spec)
    ctx.workspace.mkdir(parents=True, exist_ok=True)  # host hooks run there
    run.run(["mount", "-t", "overlay", "overlay", "-o",
             f"lowerdir={spec['lower']},upperdir={spec['upper']},workdir={spec['work']}", ctx.root])
    if spec["setup"]:
        run.run(["bash", "-euc", spec["setup"]], env={**os.environ, "ROOT": str(ctx.root)})
    hooks.materialise(ctx)
    try:
        for p in spec["phases"]:
            phases.run_phase(ctx, Phase(p), [s for s in ctx.steps if s.stage is Phase(p)])
    except BuildError as e:
        print("\n".join(e.tail))
        print(f"error: {e.message}")
        sys.exit(1)


def _whiteout(p: Path) -> bool:
    st = p.lstat()
    return stat.S_ISCHR(st.st_mode) and st.st_rdev == 0


@pytest.fixture
def target(tmp_path: Path, base_root: Path) -> Target:
    return Target(tmp_path, base_root)


# --- sles-zypper-config ------------------------------------------------------------------------------
def test_sles_zypper_config(target: Target) -> None:
    target.run(["sles", "sles-zypper-config"])
    defs = target.read("etc/login.defs").splitlines()
    assert [line for line in defs if line.startswith("USERGROUPS_ENAB")] == ["USERGROUPS_ENAB yes"]
    assert "98-zypper-clean-cache" in target.output
    # the system python stays: nothing under usr/bin/python3* was touched
    assert not [r for r in target.changed() if r.startswith("usr/bin/python")]


def test_login_defs_added_where_missing(target: Target) -> None:
    target.run(["sles-zypper-config"], ["install.d"],
               setup="sed -i '/USERGROUPS_ENAB/d' $ROOT/etc/login.defs")
    assert target.read("etc/login.defs").splitlines().count("USERGROUPS_ENAB yes") == 1


# --- sles-ipa-install --------------------------------------------------------------------------------
FAKE_BACKEND = '''\
"""A PEP 517 backend that zips this directory's files into a wheel: no setuptools, no index."""
import base64, hashlib, json, os, zipfile

SPEC = json.load(open("fake.json"))
NAME, VERSION = SPEC["name"], "0.0.1"


def _record(z, arc, data):
    z.writestr(arc, data)
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{arc},sha256={digest},{len(data)}"


def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    name = f"{NAME}-{VERSION}-py3-none-any.whl"
    info = f"{NAME}-{VERSION}.dist-info"
    rows = []
    with zipfile.ZipFile(os.path.join(wheel_directory, name), "w") as z:
        for m in SPEC["files"]:
            rows.append(_record(z, m, open(m, "rb").read()))
        meta = f"Metadata-Version: 2.1\\nName: {NAME}\\nVersion: {VERSION}\\n"
        rows.append(_record(z, f"{info}/METADATA", meta.encode()))
        wheel = b"Wheel-Version: 1.0\\nGenerator: fake\\nRoot-Is-Purelib: true\\nTag: py3-none-any\\n"
        rows.append(_record(z, f"{info}/WHEEL", wheel))
        eps = "".join(f"{e} = {SPEC['module']}:main\\n" for e in SPEC["entry_points"])
        rows.append(_record(z, f"{info}/entry_points.txt", ("[console_scripts]\\n" + eps).encode()))
        z.writestr(f"{info}/RECORD", "\\n".join(rows + [f"{info}/RECORD,,"]) + "\\n")
    return name
'''


def _fake_package(dest: str, name: str, entry_points: list[str], extra: Mapping[str, str]) -> str:
    """Shell writing a tiny installable package to dest (pip builds it offline with FAKE_BACKEND)."""
    module = "fake_" + name.replace("-", "_")
    files = {
        "pyproject.toml": '[build-system]\nrequires = []\nbuild-backend = "fakebackend"\n'
                          'backend-path = ["."]\n',
        "setup.cfg": f"[metadata]\nname = {name}\n",
        "fakebackend.py": FAKE_BACKEND,
        f"{module}.py": f"def main():\n    print('fake {name}')\n",
        **extra,
    }
    spec = {"name": name.replace("-", "_"), "module": module, "entry_points": entry_points,
            "files": [f for f in files if f not in ("pyproject.toml", "setup.cfg", "fakebackend.py")]}
    files["fake.json"] = json.dumps(spec)
    out = [f"mkdir -p {dest}"]
    for fname, text in files.items():
        b64 = base64.b64encode(text.encode()).decode()
        out.append(f"echo {b64} | base64 -d > {dest}/{fname}")
    return "\n".join(out)


def _fake_ipa_setup() -> str:
    """A tiny 'ironic-python-agent' (with a certifi stand-in) and constraints where the clones go."""
    certifi = {
        "certifi.py": "import os\n\n\ndef where():\n"
                      "    return os.path.join(os.path.dirname(__file__), 'cacert.pem')\n",
        "cacert.pem": "# the venv's own bundle\n",
    }
    return "\n".join([
        _fake_package("$ROOT/tmp/ironic-python-agent", "ironic-python-agent",
                      ["ironic-python-agent", "ironic-collect-introspection-data"], certifi),
        "mkdir -p $ROOT/tmp/requirements $ROOT/tmp/ironic-lib",
        "echo 'pbr===6.0.0' > $ROOT/tmp/requirements/upper-constraints.txt",
    ])


AGENT_UNIT = (HOOKS / "sles-ipa-install/install.d/ironic-python-agent-ramdisk-source-install"
              / "ironic-python-agent.service")
CERT = """-----BEGIN CERTIFICATE-----
MIIBfake0certificate0for0the0test0only
-----END CERTIFICATE-----
"""


def test_ipa_install_venv_links_unit_and_ca(target: Target, tmp_path: Path) -> None:
    cert = tmp_path / "ca.pem"
    cert.write_text(CERT)
    target.run(["sles-ipa-install"], ["extra-data.d", "install.d"],
               env={"DIB_IPA_CERT": str(cert), "PIP_NO_INDEX": "1"}, setup=_fake_ipa_setup())
    assert target.exists("opt/ironic-python-agent/bin/python")
    pyvenv = target.read("opt/ironic-python-agent/pyvenv.cfg")
    assert "3.11" in pyvenv  # DIB_SLES_PYTHON=python3.11 for SP5
    for entry in ("ironic-python-agent", "ironic-collect-introspection-data"):
        link = target.upper / "usr/local/bin" / entry
        assert link.is_symlink() and os.readlink(link) == f"/opt/ironic-python-agent/bin/{entry}"
    unit = "usr/lib/systemd/system/ironic-python-agent.service"
    assert target.mode(unit) == 0o644
    assert "ConditionPathExists=!/etc/.rescued" in target.read(unit)
    bundle = next(iter(target.upper.glob("opt/ironic-python-agent/lib/python3*/site-packages/cacert.pem")))
    assert bundle.read_text().endswith(CERT)
    # no pip cache in the image
    assert not [r for r in target.changed() if "/.cache/pip" in r or r.startswith("root/.cache")]


def test_ipa_install_fails_clearly_without_sources(target: Target) -> None:
    result = target.run(["sles-ipa-install"], ["install.d"], check=False)
    assert result.returncode != 0
    assert "were not cloned" in target.output


def test_ipa_install_refuses_a_python_the_agent_does_not_support(target: Target) -> None:
    # IPA 12+ says requires-python >=3.11; SP4's python3.10 must get a clear message, not pip's.
    pyproject = ('[build-system]\nrequires = []\nbuild-backend = "fakebackend"\nbackend-path = ["."]\n'
                 '[project]\nname = "ironic-python-agent"\nrequires-python = ">=3.99"\n')
    setup = "\n".join([
        _fake_package("$ROOT/tmp/ironic-python-agent", "ironic-python-agent", ["ironic-python-agent"],
                      {"pyproject.toml": pyproject}),
        "mkdir -p $ROOT/tmp/requirements && echo 'pbr===6.0.0' > $ROOT/tmp/requirements/upper-constraints.txt",
    ])
    result = target.run(["sles-ipa-install"], ["install.d"], env={"PIP_NO_INDEX": "1"}, setup=setup, check=False)
    assert result.returncode != 0
    assert "requires Python >=3.99, but" in target.output
    assert "DIB_SLES_SERVICE_PACK" in target.output
    assert not target.exists("opt/ironic-python-agent/bin/python")


def _post_install_only(target: Target, env: Mapping[str, str], extra_setup: str = "") -> None:
    unit = AGENT_UNIT
    setup = textwrap.dedent(f"""\
        install -m 0644 {unit} $ROOT/usr/lib/systemd/system/ironic-python-agent.service
        mkdir -p $ROOT/usr/lib/firmware/amdgpu $ROOT/usr/lib/firmware/keep-me $ROOT/tmp/ironic-python-agent
        touch $ROOT/usr/lib/firmware/amdgpu/a.bin $ROOT/usr/lib/firmware/keep-me/k.bin
        cp -a {HOOKS}/sles-ipa-install/static/. $ROOT/
        """) + extra_setup
    target.run(["sles-ipa-install"], ["post-install.d"], env=env, setup=setup)


def test_ipa_post_install_enables_agent_and_rescue(target: Target) -> None:
    _post_install_only(target, {"DIB_IPA_ENABLE_RESCUE": "yes"})
    assert target.enabled("ironic-python-agent.service")
    assert target.enabled("ironic-agent-create-rescue-user.path")
    assert target.changed().get("etc/ipa-rescue-config") == "dir"
    assert not target.exists("usr/lib/firmware/amdgpu")
    assert target.exists("usr/lib/firmware/keep-me/k.bin")
    assert not target.exists("tmp/ironic-python-agent")


def test_ipa_post_install_without_rescue(target: Target) -> None:
    _post_install_only(target, {"DIB_IPA_ENABLE_RESCUE": "0", "IPA_REMOVE_FIRMWARE": ""})
    assert target.enabled("ironic-python-agent.service")
    assert not target.enabled("ironic-agent-create-rescue-user.path")
    assert not target.exists("etc/ipa-rescue-config")
    assert target.exists("usr/lib/firmware/amdgpu/a.bin")


def test_rescue_user_script(target: Target) -> None:
    crypted = "$6$saltsalt$" + "x" * 86
    setup = textwrap.dedent(f"""\
        cp -a {HOOKS}/sles-ipa-install/static/. $ROOT/
        mkdir -p $ROOT/etc/ipa-rescue-config
        printf '%s\\n' '{crypted}' > $ROOT/etc/ipa-rescue-config/ipa-rescue-password
        chroot $ROOT /bin/bash /usr/local/bin/ironic-python-agent-create-rescue-user.sh
        """)
    target.run([], [], setup=setup)
    assert f"rescue:{crypted}:" in target.read("etc/shadow")
    assert target.read("etc/sudoers.d/rescue") == "rescue ALL=(ALL) NOPASSWD: ALL\n"
    assert target.mode("etc/sudoers.d/rescue") == 0o440
    assert crypted not in target.output


# --- sles-ipa-tls ------------------------------------------------------------------------------------
def _tls(target: Target, env: Mapping[str, str]) -> None:
    target.run(["sles-ipa-tls"], ["pre-finalise.d"], env=env)


def test_tls_generated_certificate(target: Target) -> None:
    _tls(target, {"DIB_IPA_CERT_HOSTNAME": "agent.test", "DIB_IPA_CERT_EXPIRATION": "30"})
    d = "etc/ironic-python-agent.d"
    key, crt = target.path(f"{d}/agent.key"), target.path(f"{d}/agent.crt")
    assert target.mode(f"{d}/agent.key") == 0o600 and key.stat().st_uid == 0
    subject = run.output(["openssl", "x509", "-in", crt, "-noout", "-subject", "-enddate"])
    assert "CN = agent.test" in subject or "CN=agent.test" in subject
    conf = target.read(f"{d}/10-configure-tls.conf")
    assert "cert_file = /etc/ironic-python-agent.d/agent.crt" in conf and "//" not in conf
    assert "listen_tls = True" in conf and "advertise_protocol = https" in conf
    assert not target.exists(f"{d}/11-configure-client-cert-ca.conf")
    assert "PRIVATE KEY" not in target.output


def test_tls_given_files(target: Target, tmp_path: Path) -> None:
    key = tmp_path / "k.pem"
    crt = tmp_path / "c.pem"
    run.run(["openssl", "req", "-x509", "-nodes", "-newkey", "rsa:2048", "-days", "1", "-subj", "/CN=given",
             "-keyout", key, "-out", crt], capture=True)
    ca = tmp_path / "ca.pem"
    ca.write_text(crt.read_text())
    _tls(target, {"DIB_IPA_CERT_FILE": str(crt), "DIB_IPA_KEY_FILE": str(key), "DIB_IPA_CA_FILE": str(ca)})
    d = "etc/ironic-python-agent.d"
    assert target.read(f"{d}/agent.crt") == crt.read_text()
    assert target.read(f"{d}/agent.key") == key.read_text() and target.mode(f"{d}/agent.key") == 0o600
    assert "ca_file = /etc/ironic-python-agent.d/agent.cacert.pem" in target.read(
        f"{d}/11-configure-client-cert-ca.conf")
    assert key.read_text().splitlines()[1] not in target.output


# --- sles-extra-hardware -----------------------------------------------------------------------------
FAKE_PIP = """#!/bin/sh
# records its arguments; 'installs' hardware-detect
echo "$*" >> /var/log/fake-pip.log
printf '#!/bin/sh\\necho detect\\n' > /opt/ironic-python-agent/bin/hardware-detect
chmod 0755 /opt/ironic-python-agent/bin/hardware-detect
"""


def _hardware(target: Target, env: Mapping[str, str]) -> str:
    b64 = base64.b64encode(FAKE_PIP.encode()).decode()
    setup = textwrap.dedent(f"""\
        mkdir -p $ROOT/opt/ironic-python-agent/bin $ROOT/tmp/requirements
        echo 'hardware===0.30.0' > $ROOT/tmp/requirements/upper-constraints.txt
        echo {b64} | base64 -d > $ROOT/opt/ironic-python-agent/bin/pip
        chmod 0755 $ROOT/opt/ironic-python-agent/bin/pip
        """)
    target.run(["sles-extra-hardware"], ["post-install.d"], env=env, setup=setup)
    return target.read("var/log/fake-pip.log")


def test_extra_hardware_into_the_venv_with_constraints(target: Target) -> None:
    args = _hardware(target, {})
    assert args.split() == ["install", "--no-cache-dir", "-c", "/tmp/requirements/upper-constraints.txt",
                            "hardware"]
    link = target.upper / "usr/local/bin/hardware-detect"
    assert os.readlink(link) == "/opt/ironic-python-agent/bin/hardware-detect"
    # no repository here has sysbench (as on SLE media without it): a warning, not a failed build
    assert "warning: no configured repository provides sysbench" in target.output
    assert not target.exists("usr/bin/sysbench")
    # nothing dropped at the top of the tree (the seed left /lldpad-1.1 behind); zypper keeps its lock in /run
    assert not [r for r in target.changed() if "/" not in r and r not in ("usr", "opt", "tmp", "var", "run")]


def test_extra_hardware_version_and_package(target: Target) -> None:
    assert _hardware(target, {"DIB_IPA_HARDWARE_VERSION": "0.30.0"}).split()[-1] == "hardware==0.30.0"


def test_extra_hardware_package_override(target: Target) -> None:
    assert _hardware(target, {"DIB_IPA_HARDWARE_PACKAGE": "hardware[ipmi]>=0.29",
                              "DIB_IPA_HARDWARE_VERSION": "0.30.0"}).split()[-1] == "hardware[ipmi]>=0.29"


# --- devuser -----------------------------------------------------------------------------------------
def test_devuser_full(target: Target, tmp_path: Path) -> None:
    keys = tmp_path / "keys.pub"
    keys.write_text("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFakeKeyForTheTest test@example\n")
    target.run(["sles-zypper-config", "devuser"], ["extra-data.d", "install.d"], env={
        "DIB_DEV_USER_USERNAME": "metal3", "DIB_DEV_USER_PASSWORD": SECRET,
        "DIB_DEV_USER_PWDLESS_SUDO": "yes", "DIB_DEV_USER_AUTHORIZED_KEYS": str(keys),
        "DIB_DEV_USER_SHELL": "/bin/bash", "DIB_DEBUG_TRACE": "1",
    })
    passwd = [line for line in target.read("etc/passwd").splitlines() if line.startswith("metal3:")]
    assert passwd and passwd[0].endswith(":/home/metal3:/bin/bash")
    shadow = [line for line in target.read("etc/shadow").splitlines() if line.startswith("metal3:")]
    assert shadow and shadow[0].split(":")[1].startswith("$")
    # the password itself: in no file, not in the hook output even with DIB_DEBUG_TRACE=1
    assert target.files_containing(SECRET) == []
    assert SECRET not in target.output
    assert target.read("etc/sudoers.d/metal3") == "metal3 ALL=(ALL) NOPASSWD:ALL\n"
    assert target.mode("etc/sudoers.d/metal3") == 0o440
    ak = target.path("home/metal3/.ssh/authorized_keys")
    assert ak.read_text() == keys.read_text() and target.mode("home/metal3/.ssh/authorized_keys") == 0o600
    assert target.mode("home/metal3/.ssh") == 0o700
    uid = int(passwd[0].split(":")[2])
    assert ak.stat().st_uid == uid


def test_devuser_never_takes_the_builders_key(target: Target, tmp_path: Path) -> None:
    """Seed bug §8.13: with no DIB_DEV_USER_AUTHORIZED_KEYS the builder's ~/.ssh/id_rsa.pub was used."""
    ssh = tmp_path / ".ssh"  # HOME of the hooks is tmp_path's build parent
    ssh.mkdir()
    (ssh / "id_rsa.pub").write_text("ssh-rsa AAAAB3NzaBuilderKey builder@host\n")
    target.run(["devuser"], ["extra-data.d", "install.d"], env={"DIB_DEV_USER_USERNAME": "metal3"})
    assert not target.exists("home/metal3/.ssh/authorized_keys")
    assert target.files_containing("BuilderKey") == []
    assert not target.exists("etc/sudoers.d/metal3")


# --- dynamic-login -----------------------------------------------------------------------------------
def test_dynamic_login(target: Target, tmp_path: Path) -> None:
    crypted = "$6$abc$" + "y" * 86
    cmdline = tmp_path / "cmdline"
    cmdline.write_text(f'BOOT_IMAGE=/vmlinuz rootpwd="{crypted}" sshkey="ssh-ed25519 AAAAkey op@host" ro\n')
    target.run(["dynamic-login"], ["install.d", "post-install.d"])
    assert target.enabled("dynamic-login.service")
    assert target.mode("usr/local/bin/dynamic-login") == 0o755
    # and the script itself, at "boot", with that kernel command line
    boot = (f"mount -t proc proc $ROOT/proc\nmount --bind {cmdline} $ROOT/proc/cmdline\n"
            "chroot $ROOT /usr/local/bin/dynamic-login")
    target.run([], [], setup=boot)
    assert f"root:{crypted}:" in target.read("etc/shadow")
    assert target.read("root/.ssh/authorized_keys") == "ssh-ed25519 AAAAkey op@host\n"
    assert target.mode("root/.ssh/authorized_keys") == 0o600
    assert crypted not in target.output


# --- journal-to-console ------------------------------------------------------------------------------
def test_journal_to_console(target: Target) -> None:
    target.run(["journal-to-console"])
    conf = "etc/systemd/journald.conf.d/log-to-console.conf"
    assert target.read(conf) == "[Journal]\nForwardToConsole=yes\n" and target.mode(conf) == 0o644


# --- openssh-server / runtime-ssh-host-keys ----------------------------------------------------------
def _sshd_unit(target: Target) -> tuple[str, str]:
    """(unit name, path) of the base root's real sshd unit (sshd.service on SUSE, ssh.service on Debian)."""
    for unit in ("sshd.service", "ssh.service"):
        for d in ("usr/lib/systemd/system", "lib/systemd/system"):
            p = target.lower / d / unit
            if p.is_file() and not p.is_symlink():
                return unit, f"{d}/{unit}"
    pytest.skip("the base root has no sshd unit")


def test_openssh_server_enabled_and_hardened(target: Target) -> None:
    unit, _ = _sshd_unit(target)
    target.run(["openssh-server"], ["post-install.d"])
    assert target.enabled(unit)
    merged = target.read("etc/ssh/sshd_config")
    dropin = "etc/ssh/sshd_config.d/10-hardening.conf"
    text = target.read(dropin) if target.exists(dropin) else merged
    assert "Ciphers chacha20-poly1305@openssh.com," in text
    assert "MACs hmac-sha2-512-etm@openssh.com," in text
    assert "KexAlgorithms curve25519-sha256@libssh.org," in text
    assert not target.files_containing("BEGIN OPENSSH PRIVATE KEY")  # the sshd -t key was removed


def test_openssh_hardening_in_sshd_config_before_match(target: Target) -> None:
    setup = textwrap.dedent("""\
        printf 'Port 22\\n# Ciphers and keying\\nCiphers aes128-ctr\\n' > $ROOT/etc/ssh/sshd_config
        printf 'Match User nobody\\n    X11Forwarding no\\n' >> $ROOT/etc/ssh/sshd_config
        """)
    target.run(["openssh-server"], ["post-install.d"], setup=setup)
    lines = target.read("etc/ssh/sshd_config").splitlines()
    match = lines.index("Match User nobody")
    for key in ("Ciphers", "MACs", "KexAlgorithms"):
        at = [i for i, line in enumerate(lines) if line.startswith(key + " ")]
        assert len(at) == 1 and at[0] < match, (key, lines)


def test_openssh_hardening_off(target: Target) -> None:
    target.run(["openssh-server"], ["post-install.d"], env={"DIB_OPENSSH_SERVER_HARDENING": "0"})
    assert not target.exists("etc/ssh/sshd_config.d/10-hardening.conf")
    assert "etc/ssh/sshd_config" not in target.changed()


def test_runtime_ssh_host_keys(target: Target) -> None:
    setup = "ssh-keygen -q -t ed25519 -N '' -f $ROOT/etc/ssh/ssh_host_test_ed25519_key"
    target.run(["runtime-ssh-host-keys"], ["install.d", "post-install.d", "cleanup.d"], setup=setup)
    keys = {p.name for d in (target.lower / "etc/ssh", target.upper / "etc/ssh") if d.is_dir()
            for p in d.glob("ssh_host_*")}
    # the key made by setup (only ever in upper, so gone without a trace) and the base's own keys
    assert not target.exists("etc/ssh/ssh_host_test_ed25519_key")
    assert [k for k in keys if target.exists(f"etc/ssh/{k}")] == []
    sshd = target.read(_sshd_unit(target)[1])
    if "ssh-keygen" in sshd or "gen-keys" in sshd:
        assert not target.enabled("runtime-ssh-host-keys.service")
    else:
        assert target.enabled("runtime-ssh-host-keys.service")


def test_runtime_ssh_host_keys_not_enabled_where_sshd_makes_keys(target: Target) -> None:
    setup = textwrap.dedent("""\
        mkdir -p $ROOT/usr/lib/systemd/system
        printf '[Service]\\nExecStartPre=/usr/sbin/sshd-gen-keys-start\\nExecStart=/usr/sbin/sshd -D\\n' \\
            > $ROOT/usr/lib/systemd/system/sshd.service
        printf '[Install]\\nWantedBy=multi-user.target\\n' >> $ROOT/usr/lib/systemd/system/sshd.service
        """)
    target.run(["runtime-ssh-host-keys"], ["install.d", "post-install.d"], setup=setup)
    assert not target.enabled("runtime-ssh-host-keys.service")


# --- dhcp-all-interfaces -----------------------------------------------------------------------------
def test_dhcp_networkd(target: Target) -> None:
    if not target.exists("usr/lib/systemd/systemd-networkd"):
        pytest.skip("the base root has no systemd-networkd")
    target.run(["dhcp-all-interfaces"], ["install.d"])
    net = target.read("etc/systemd/network/80-dhcp-all-interfaces.network")
    assert "Type=ether" in net and "DHCP=yes" in net
    assert target.enabled("systemd-networkd.service")


NM_UNIT = "printf '[Unit]\\nDescription=NM\\n[Install]\\nWantedBy=multi-user.target\\n' > " \
    "$ROOT/usr/lib/systemd/system/NetworkManager.service"


def test_dhcp_network_manager(target: Target) -> None:
    setup = "printf '#!/bin/sh\\n' > $ROOT/usr/sbin/NetworkManager; chmod 0755 $ROOT/usr/sbin/NetworkManager\n"
    setup += NM_UNIT
    target.run(["dhcp-all-interfaces"], ["install.d"], setup=setup, env={"DIB_DHCP_TIMEOUT": "45"})
    conf = target.read("etc/NetworkManager/conf.d/00-main.conf")
    assert "ignore-carrier=*" in conf and "ipv4.dhcp-timeout=45" in conf and "dhcp=internal" in conf
    assert not target.exists("etc/systemd/network/80-dhcp-all-interfaces.network")
    assert target.enabled("NetworkManager.service")


def test_dhcp_network_manager_replaces_wicked(target: Target) -> None:
    # SLES with NetworkManager added: NM must be the one stack that runs, not wicked's network.service
    units = "$ROOT/usr/lib/systemd/system"
    setup = "\n".join([
        "for b in NetworkManager wicked; do",
        "  printf '#!/bin/sh\\n' > $ROOT/usr/sbin/$b; chmod 0755 $ROOT/usr/sbin/$b",
        "done",
        NM_UNIT,
        f"printf '[Unit]\\nDescription=wicked\\n[Install]\\nWantedBy=multi-user.target\\n' > {units}/wicked.service",
        "ln -s /usr/lib/systemd/system/wicked.service $ROOT/etc/systemd/system/multi-user.target.wants/",
    ])
    target.run(["dhcp-all-interfaces"], ["install.d"], setup=setup)
    assert target.enabled("NetworkManager.service")
    assert not target.enabled("wicked.service")
    assert "disabling wicked" in target.output


def test_dhcp_wicked(target: Target) -> None:
    setup = "printf '#!/bin/sh\\n' > $ROOT/usr/sbin/wicked; chmod 0755 $ROOT/usr/sbin/wicked"
    target.run(["dhcp-all-interfaces"], ["install.d"], setup=setup)
    unit = target.read("usr/lib/systemd/system/dhcp-interface@.service")
    assert "ExecStart=/usr/local/sbin/dhcp-all-interfaces.sh %i /usr/sbin/wicked" in unit
    assert "TimeoutStartSec=60s" in unit and "Environment=DHCP_CARRIER_WAIT=10" in unit
    assert "ConditionPathExists=!/etc/sysconfig/network/ifcfg-%i" in unit
    assert 'SYSTEMD_WANTS}+="dhcp-interface@$name.service"' in target.read(
        "etc/udev/rules.d/99-dhcp-all-interfaces.rules")
    assert target.mode("usr/local/sbin/dhcp-all-interfaces.sh") == 0o755
    # the runtime script, for an interface of this host (lo is skipped, a real one gets an ifcfg)
    target.run([], [], setup="mount -t sysfs sysfs $ROOT/sys\n"
                             "chroot $ROOT /usr/local/sbin/dhcp-all-interfaces.sh lo")
    assert not target.exists("etc/sysconfig/network/ifcfg-lo")
    # in a network namespace of its own: a veth whose peer is down has no link, then gets one
    veth = ("unshare --net sh -euc 'ip link add sib0 type veth peer name sib1; mount -t sysfs sysfs $ROOT/sys;"
            " DHCP_CARRIER_WAIT=1 chroot $ROOT /usr/local/sbin/dhcp-all-interfaces.sh sib0;"
            " test ! -e $ROOT/etc/sysconfig/network/ifcfg-sib0; ip link set sib1 up;"
            " DHCP_CARRIER_WAIT=5 chroot $ROOT /usr/local/sbin/dhcp-all-interfaces.sh sib0'")
    target.run([], [], setup=veth)
    assert "no link on sib0: not configured" in target.output
    assert target.read("etc/sysconfig/network/ifcfg-sib0") == 'BOOTPROTO="dhcp"\nSTARTMODE="auto"\n'


def test_dhcp_without_any_stack_fails(target: Target) -> None:
    setup = "rm -f $ROOT/usr/lib/systemd/systemd-networkd $ROOT/lib/systemd/systemd-networkd"
    result = target.run(["dhcp-all-interfaces"], ["install.d"], setup=setup, check=False)
    assert result.returncode != 0 and "no way to run DHCP" in target.output


# --- ibft-interfaces, selinux-permissive, sysprep ----------------------------------------------------
def test_ibft_interfaces(target: Target) -> None:
    target.run(["ibft-interfaces"])
    assert target.enabled("init-ibft-interfaces.service")
    assert target.read("etc/modules-load.d/ibft.conf").split("\n")[1:4] == ["iscsi_boot_sysfs", "iscsi_ibft",
                                                                            "iscsi_tcp"]
    assert target.mode("usr/local/sbin/init-ibft-interfaces.sh") == 0o755


def test_selinux_permissive(target: Target) -> None:
    target.run(["selinux-permissive"])
    assert target.read("etc/selinux/config") == "SELINUX=permissive\nSELINUXTYPE=targeted\n"


def test_sysprep_machine_id(target: Target) -> None:
    setup = "echo 0123456789abcdef0123456789abcdef > $ROOT/etc/machine-id"
    target.run(["sysprep"], setup=setup)
    assert target.read("etc/machine-id") == "uninitialized\n"
    dbus = target.lower / "var/lib/dbus/machine-id"
    if dbus.is_symlink():
        assert (target.upper / "var/lib/dbus/machine-id").exists() is False  # link left alone


def test_sysprep_dbus_copy_emptied(target: Target) -> None:
    setup = textwrap.dedent("""\
        mkdir -p $ROOT/var/lib/dbus; rm -f $ROOT/var/lib/dbus/machine-id
        echo 0123456789abcdef0123456789abcdef > $ROOT/var/lib/dbus/machine-id
        """)
    target.run(["sysprep"], setup=setup)
    assert target.read("var/lib/dbus/machine-id") == ""
    assert target.read("etc/machine-id") == "uninitialized\n"


# --- ipa-module-autoload, ipa-add-buildinfo ----------------------------------------------------------
def test_module_autoload_idempotent(target: Target) -> None:
    env = {"DIB_ADDITIONAL_IPA_KERNEL_MODULES": "megaraid_sas  mpt3sas"}
    target.run(["ipa-module-autoload"], ["install.d"], env=env)
    target.run(["ipa-module-autoload"], ["install.d"], env=env)
    assert target.read("etc/modules-load.d/load.conf") == "megaraid_sas\nmpt3sas\n"


def test_module_autoload_rejects_garbage(target: Target) -> None:
    result = target.run(["ipa-module-autoload"], ["install.d"],
                        env={"DIB_ADDITIONAL_IPA_KERNEL_MODULES": "ok ../../etc"}, check=False)
    assert result.returncode != 0 and "not a module name" in target.output


def test_add_buildinfo(target: Target) -> None:
    target.run(["ipa-add-buildinfo"], ["install.d"], env={
        "SOURCE_DATE_EPOCH": "1700000000", "SIB_BUILDER_VERSION": "9.9.9",
        "SIB_BASE_IMAGE_SHA256": "ab" * 32})
    info = target.read("buildinfo.txt")
    assert "build date (UTC): 2023-11-14T22:13:20Z" in info
    assert "builder version: 9.9.9" in info and "base image sha256: " + "ab" * 32 in info
    assert "elements: ipa-add-buildinfo" in info and "image name: ironic-python-agent" in info
    assert "media: unknown" in info



# --- the whole default list, plus the optional elements, together --------------------------------------
DEFAULT = ("sles-ipa-install sles sles-zypper-config sles-ipa-ramdisk-base dynamic-login journal-to-console "
           "devuser openssh-server sles-extra-hardware ipa-module-autoload").split()


def test_default_elements_together(target: Target, tmp_path: Path) -> None:
    """All hooks of the default list + sles-ipa-tls + ipa-add-buildinfo in one run, in the engine's order."""
    keys = tmp_path / "keys.pub"
    keys.write_text("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIDevKey dev@example\n")
    setup = "\n".join([
        _fake_ipa_setup(),
        _fake_package("$ROOT/tmp/fake-hardware", "hardware", ["hardware-detect"], {}),
        "ssh-keygen -q -t ed25519 -N '' -f $ROOT/etc/ssh/ssh_host_test_key",
    ])
    env = {"ENABLE_DEV_USER_PASS": "true", "DIB_DEV_USER_PASSWORD": SECRET,
           "DIB_DEV_USER_AUTHORIZED_KEYS": str(keys), "DIB_IPA_HARDWARE_PACKAGE": "/tmp/fake-hardware",
           "PIP_NO_INDEX": "1", "DIB_DEBUG_TRACE": "1"}
    target.run([*DEFAULT, "sles-ipa-tls", "ipa-add-buildinfo"], ORDER, env=env, setup=setup, resolve=True)
    for unit in ("ironic-python-agent.service", "ironic-agent-create-rescue-user.path",
                 "dynamic-login.service", "init-ibft-interfaces.service", _sshd_unit(target)[0]):
        assert target.enabled(unit), unit
    for entry in ("ironic-python-agent", "ironic-collect-introspection-data", "hardware-detect"):
        assert os.readlink(target.upper / "usr/local/bin" / entry) == f"/opt/ironic-python-agent/bin/{entry}"
    assert target.read("etc/modules-load.d/load.conf") == "megaraid_sas\n"
    assert target.exists("etc/systemd/journald.conf.d/log-to-console.conf")
    assert target.read("etc/selinux/config").startswith("SELINUX=permissive")
    assert target.read("etc/machine-id") == "uninitialized\n"
    assert target.read("home/metal3/.ssh/authorized_keys") == keys.read_text()
    assert target.read("etc/sudoers.d/metal3") == "metal3 ALL=(ALL) NOPASSWD:ALL\n"
    assert target.mode("etc/ironic-python-agent.d/agent.key") == 0o600
    assert "elements: " in target.read("buildinfo.txt") and "sles-ipa-install" in target.read("buildinfo.txt")
    # gone before packing: sources, host keys; never anywhere: the password
    for gone in ("tmp/ironic-python-agent", "tmp/requirements", "etc/ssh/ssh_host_test_key"):
        assert not target.exists(gone), gone
    base_keys = [p.name for p in (target.lower / "etc/ssh").glob("ssh_host_*")]
    assert [k for k in base_keys if target.exists(f"etc/ssh/{k}")] == []
    assert target.files_containing(SECRET) == [] and SECRET not in target.output
