"""The one end-to-end build of the test media that test_end_to_end and test_bootmedia share.

One build per (release, arch): the tests that need the default-element ramdisk take `built`, so CI
pays for it once. Its boot test is the ISO's, under Secure Boot (test_bootmedia.py).
"""

from __future__ import annotations

import os
import secrets
import sys

import pytest

from sles_ipa_builder import run
from sles_ipa_builder.fixtures import testmedia

NAME = "ipa-e2e"


@pytest.fixture(scope="session")
def built(tmp_path_factory):
    media = testmedia.ensure()
    work = tmp_path_factory.mktemp("e2e")
    out = work / "out"
    password = "pw-" + secrets.token_hex(8)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DIB_", "IPA_", "IRONIC_", "SIB_"))}
    env.update({
        "ENABLE_DEV_USER_PASS": "true",
        "DIB_DEV_USER_PASSWORD": password,
        "DIB_IPA_INSTALL_SSH": "true",  # the add-on test logs in with SSH (off by default, as upstream)
        "SIB_ACCEL": os.environ.get("SIB_ACCEL", "tcg"),
    })
    argv = [sys.executable, "-m", "sles_ipa_builder", "build", "--config", str(media.profile),
            "--workspace", str(work / "ws"), "--output", str(out), "--name", NAME,
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


