"""Test helpers: real rpm-md repositories (rpmbuild + createrepo_c) served from loopback HTTP with basic auth."""

from __future__ import annotations

import base64
import contextlib
import functools
import http.server
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path

from sles_ipa_builder import run


def build_rpm(work: Path, name: str, files: dict[str, str], version: str = "1.0") -> Path:
    """A small noarch RPM holding `files` (path in the package -> text), built by rpmbuild."""
    top = work / f"rpmbuild-{name}"
    src = top / "payload"
    for rel, text in files.items():
        (src / rel.lstrip("/")).parent.mkdir(parents=True, exist_ok=True)
        (src / rel.lstrip("/")).write_text(text)
    spec = top / f"{name}.spec"
    listed = "\n".join(files)
    spec.write_text(
        f"Name: {name}\nVersion: {version}\nRelease: 1\nSummary: sles-ipa-builder test package {name}\n"
        "License: Apache-2.0\nBuildArch: noarch\n%description\nTest package of sles-ipa-builder's repository "
        f"tests (not SUSE software).\n%install\ncp -a {src}/. %{{buildroot}}/\n%files\n{listed}\n")
    run.run(["rpmbuild", "--quiet", "--define", f"_topdir {top}", "-bb", spec], capture=True)
    return next((top / "RPMS/noarch").glob(f"{name}-{version}-1.noarch.rpm"))


def make_repo(dest: Path, rpms: list[Path]) -> Path:
    """An rpm-md repository: the RPMs and createrepo_c's repodata/."""
    dest.mkdir(parents=True, exist_ok=True)
    for rpm in rpms:
        shutil.copy2(rpm, dest / rpm.name)
    run.run(["createrepo_c", "--quiet", dest], capture=True)
    return dest


class _Handler(http.server.SimpleHTTPRequestHandler):
    auth = ""  # the expected Authorization header ("" = none)
    token = ""  # the expected query string, as SCC's tokenised URLs carry it ("" = none)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass

    def _allowed(self) -> bool:
        query = self.path.partition("?")[2]
        if (self.auth and self.headers.get("Authorization") != self.auth) or (self.token and query != self.token):
            self.send_response(401)
            self.send_header("WWW-Authenticate", 'Basic realm="test"')
            self.send_header("Content-Length", "0")
            self.end_headers()
            return False
        return True

    def do_GET(self) -> None:  # noqa: N802
        if self._allowed():
            super().do_GET()

    def do_HEAD(self) -> None:  # noqa: N802
        if self._allowed():
            super().do_HEAD()


@contextlib.contextmanager
def serve(directory: Path, user: str = "", password: str = "", token: str = "") -> Iterator[str]:
    """Serve `directory` on 127.0.0.1 (basic auth when a user is given, a query token when a token is);
    yields the base URL."""
    auth = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode() if user else ""
    handler = functools.partial(type("H", (_Handler,), {"auth": auth, "token": token}), directory=str(directory))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
