"""The agent's own elements: sles-ipa-install (venv, unit, CA, rescue), sles-ipa-tls, sles-extra-hardware.

Run on a small tree (tests/hooktree.py) with the engine; see there."""

from __future__ import annotations

import base64
import os
import textwrap
from collections.abc import Mapping
from pathlib import Path

import pytest
from hookfakes import fake_ipa_setup, fake_package
from hooktree import HOOKS, Target

from sles_ipa_builder import run
from sles_ipa_builder.packing import ramdisk

pytestmark = [pytest.mark.root]


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
               env={"DIB_IPA_CERT": str(cert), "PIP_NO_INDEX": "1"}, setup=fake_ipa_setup())
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
        fake_package("$ROOT/tmp/ironic-python-agent", "ironic-python-agent", ["ironic-python-agent"],
                      {"pyproject.toml": pyproject}),
        "mkdir -p $ROOT/tmp/requirements && echo 'pbr===6.0.0' > $ROOT/tmp/requirements/upper-constraints.txt",
    ])
    result = target.run(["sles-ipa-install"], ["install.d"], env={"PIP_NO_INDEX": "1"}, setup=setup, check=False)
    assert result.returncode != 0
    assert "requires Python >=3.99, but" in target.output
    assert "DIB_SLES_SERVICE_PACK" in target.output
    assert not target.exists("opt/ironic-python-agent/bin/python")


AGENT_PACKAGE = {  # the agent's entry point module, importing a stdlib module of its own
    "ironic_python_agent/__init__.py": "",
    "ironic_python_agent/cmd/__init__.py": "",
    "ironic_python_agent/cmd/agent.py": "import json\n\n\ndef run():\n    return json.dumps({})\n",
}


def _pyc(target: Target, source: str) -> Path | None:
    """The .pyc the hooks wrote for `source` (a path in the tree), if any."""
    src = Path(source)
    found = list(target.upper.glob(f"{src.parent.relative_to('/')}/__pycache__/{src.stem}.cpython-*.pyc"))
    return found[0] if found else None


def test_precompile_writes_unchecked_pyc_for_what_the_agent_imports(target: Target) -> None:
    setup = fake_ipa_setup(AGENT_PACKAGE)
    target.run(["sles-ipa-install"], ["install.d", "finalise.d"], env={"PIP_NO_INDEX": "1"}, setup=setup)
    assert "precompiled" in target.output
    site = next(target.upper.glob("opt/ironic-python-agent/lib/python3*/site-packages"))
    agent = _pyc(target, "/" + str((site / "ironic_python_agent/cmd/agent.py").relative_to(target.upper)))
    stdlib = next(target.upper.glob("usr/lib*/python3*/json/__pycache__/__init__.cpython-*.pyc"), None)
    for pyc in (agent, stdlib):
        assert pyc is not None and ramdisk.unchecked_pyc(bytes(pyc)), pyc
    # what the agent does not import keeps pip's timestamp .pyc, which the packer leaves out
    other = _pyc(target, "/" + str((site / "fake_ironic_python_agent.py").relative_to(target.upper)))
    assert other is None or not ramdisk.unchecked_pyc(bytes(other))


def test_precompile_off(target: Target) -> None:
    setup = fake_ipa_setup(AGENT_PACKAGE)
    target.run(["sles-ipa-install"], ["install.d", "finalise.d"],
               env={"PIP_NO_INDEX": "1", "DIB_IPA_COMPILE_PYTHON": "0"}, setup=setup)
    assert "not precompiled (DIB_IPA_COMPILE_PYTHON=0)" in target.output
    unchecked = [p for p in target.upper.rglob("*.pyc") if ramdisk.unchecked_pyc(bytes(p))]
    assert unchecked == []


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
