"""With the defaults, the test media's SP7-named files are the inputs: nothing but the directory given."""

from __future__ import annotations

from typing import Any

import pytest

from sles_ipa_builder.cli.doctor import input_checks
from sles_ipa_builder.config import resolve as config
from sles_ipa_builder.inputs import image, media, repos

pytestmark = [pytest.mark.media]


def test_default_names_find_the_sp7_media(fixture_media: Any) -> None:
    cfg = config.resolve({"images_dir": str(fixture_media.images_dir)}, environ={})
    assert cfg.service_pack == "SP7" and cfg.python == "python3.11"
    assert all(c.ok for c in input_checks(cfg)), input_checks(cfg)
    assert image.find_image(cfg).name == "SLES15-SP7-Minimal-VM.x86_64-OpenStack-Cloud-GM.qcow2"
    assert cfg.iso_path == fixture_media.iso
    # the ISO's modules carry the interpreter the table names for SP7, and the optional xorriso
    names = repos.media_packages(media.open_media(cfg.iso_path))
    assert {"python311", "python311-devel", "python311-pip", "xorriso"} <= names
    assert not {"openvswitch", "nmstate", "kexec-tools"} & names  # left out: the warning path runs
