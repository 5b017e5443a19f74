"""Stand-ins for the hook tests: tiny installable packages (a PEP 517 backend that needs no index),
and the secret that must never reach the image."""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping

SECRET = "Pa55-w0rd-n0t-in-the-image"


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


def fake_package(dest: str, name: str, entry_points: list[str], extra: Mapping[str, str]) -> str:
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
        if "/" in fname:
            out.append(f"mkdir -p {dest}/{fname.rsplit('/', 1)[0]}")
        out.append(f"echo {b64} | base64 -d > {dest}/{fname}")
    return "\n".join(out)


def fake_ipa_setup(more: Mapping[str, str] | None = None) -> str:
    """A tiny 'ironic-python-agent' (with a certifi stand-in, and `more` files) and constraints where
    the clones go."""
    certifi = {
        "certifi.py": "import os\n\n\ndef where():\n"
                      "    return os.path.join(os.path.dirname(__file__), 'cacert.pem')\n",
        "cacert.pem": "# the venv's own bundle\n",
    }
    return "\n".join([
        fake_package("$ROOT/tmp/ironic-python-agent", "ironic-python-agent",
                      ["ironic-python-agent", "ironic-collect-introspection-data"], {**certifi, **(more or {})}),
        "mkdir -p $ROOT/tmp/requirements $ROOT/tmp/ironic-lib",
        "echo 'pbr===6.0.0' > $ROOT/tmp/requirements/upper-constraints.txt",
    ])
