"""A fake Ironic API on loopback: the part the agent uses first, and a record of every request.

Ironic Python Agent (IPA), once booted, talks to `ipa-api-url` in this order
(ironic_python_agent/agent.py and ironic_api_client.py):

1. `GET /` to discover the API microversion: it reads `default_version.version` from the body
   (and falls back to 1.31 when that fails);
2. `GET /v1/lookup?addresses=<mac,mac...>[&node_uuid=...]` with `X-OpenStack-Ironic-API-Version`,
   retried with back-off until a 200 carries `node.uuid` and a `config` dict;
3. `POST /v1/heartbeat/<node uuid>` with `callback_url`, `agent_version`, `agent_token`, expecting
   202, then again every `heartbeat_timeout` x 0.3..0.6 seconds.

That is all the boot test needs to see an agent alive. Every response also carries the
`X-OpenStack-Ironic-API-{Minimum,Maximum}-Version` headers, as Ironic's own API does.
"""

from __future__ import annotations

import json
import logging
import secrets
import ssl
import threading
import time
import uuid as uuidlib
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from ..config.arch import HOST_DEFAULT

log = logging.getLogger(__name__)

MIN_VERSION = "1.1"
# 1.68 is the highest version IPA knows (agent_verify_ca); answering it makes the agent use
# every feature it has: agent token, agent version, automatic TLS.
MAX_VERSION = "1.68"
# Heartbeat quickly: IPA waits heartbeat_timeout x 0.3..0.6 between heartbeats.
HEARTBEAT_TIMEOUT = 10
RECORDED_HEADERS = ("x-openstack-ironic-api-version", "content-type", "accept", "user-agent")


@dataclass(frozen=True)
class Request:
    """One request as the endpoint saw it. `at` is seconds since the endpoint started."""

    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: Any
    at: float
    monotonic: float
    client: str

    def param(self, name: str) -> str:
        values = self.query.get(name) or [""]
        return values[0]

    @property
    def addresses(self) -> list[str]:
        """The MAC addresses of a lookup, lower-cased."""
        return [a.strip().lower() for a in self.param("addresses").split(",") if a.strip()]

    def describe(self) -> str:
        q = "&".join(f"{k}={','.join(v)}" for k, v in self.query.items())
        return f"{self.at:7.1f}s {self.method} {self.path}{'?' + q if q else ''}"


@dataclass
class FakeNode:
    """What the lookup answers with: enough of a node for IPA to go on to heartbeat."""

    uuid: str = field(default_factory=lambda: str(uuidlib.uuid4()))
    name: str = "boot-test"
    agent_token: str = field(default_factory=lambda: secrets.token_urlsafe(32))
    heartbeat_timeout: int = HEARTBEAT_TIMEOUT

    def lookup_body(self) -> dict[str, Any]:
        # Shape of ironic/api/controllers/v1/ramdisk.py: node fields the agent caches, then config.
        node = {
            "uuid": self.uuid,
            "name": self.name,
            "properties": {"cpu_arch": HOST_DEFAULT.suse},
            "instance_info": {},
            "driver_internal_info": {"agent_secret_token_pregenerated": False},
            "provision_state": "cleaning",
            "links": [],
        }
        config = {
            "metrics": {
                "backend": "noop",
                "prepend_host": False,
                "prepend_uuid": False,
                "prepend_host_reverse": True,
                "global_prefix": None,
            },
            "metrics_statsd": {"statsd_host": "localhost", "statsd_port": 8125},
            "heartbeat_timeout": self.heartbeat_timeout,
            "agent_token": self.agent_token,
            "agent_token_required": True,
            "agent_md5_checksum_enable": False,
        }
        return {"node": node, "config": config}


class FakeIronic:
    """The endpoint: `with FakeIronic() as api: ... api.url`, or start()/stop()."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, node: FakeNode | None = None,
                 tls: tuple[Path, Path] | None = None) -> None:  # fmt: skip
        """tls: (certificate chain, key) to serve HTTPS, for a client that must verify the API."""
        self.node = node or FakeNode()
        self.scheme = "https" if tls else "http"
        self._requests: list[Request] = []
        self._cond = threading.Condition()
        self._started = time.monotonic()
        self._server = ThreadingHTTPServer((host, port), _handler_for(self))
        self._server.daemon_threads = True
        if tls is not None:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(str(tls[0]), str(tls[1]))
            self._server.socket = ctx.wrap_socket(self._server.socket, server_side=True)
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}"

    def start(self) -> FakeIronic:
        self._started = time.monotonic()
        self._thread = threading.Thread(target=self._server.serve_forever, name="fake-ironic", daemon=True)
        self._thread.start()
        log.debug("fake Ironic API listening on %s", self.url)
        return self

    def stop(self) -> None:
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join(timeout=5)
            self._thread = None
        self._server.server_close()

    def __enter__(self) -> FakeIronic:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- the record
    def record(self, req: Request) -> None:
        with self._cond:
            self._requests.append(req)
            self._cond.notify_all()
        log.debug("fake Ironic: %s", req.describe())

    def requests(self) -> list[Request]:
        with self._cond:
            return list(self._requests)

    def lookups(self) -> list[Request]:
        return [r for r in self.requests() if r.method == "GET" and r.path.rstrip("/") == "/v1/lookup"]

    def heartbeats(self) -> list[Request]:
        return [r for r in self.requests() if r.method == "POST" and r.path.startswith("/v1/heartbeat/")]

    def wait_for(self, predicate: Callable[[list[Request]], bool], timeout: float) -> bool:
        """Block until predicate(requests) is true or timeout seconds pass; returns the last verdict."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while not predicate(list(self._requests)):
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)
            return True

    def summary(self) -> str:
        """One line per request, for error messages."""
        reqs = self.requests()
        if not reqs:
            return "no request reached the fake Ironic API"
        return "\n".join(r.describe() for r in reqs)

    # --- the answers
    def respond(self, method: str, path: str, query: dict[str, list[str]]) -> tuple[int, Any]:
        p = path.rstrip("/") or "/"
        if method == "GET" and p == "/":
            return 200, self._root()
        if method == "GET" and p == "/v1":
            return 200, self._v1()
        if method == "GET" and p == "/v1/lookup":
            if not (query.get("addresses") or query.get("node_uuid")):
                return 400, _fault("Lookup requires addresses or node_uuid")
            return 200, self.node.lookup_body()
        if method == "POST" and p.startswith("/v1/heartbeat/"):
            node_uuid = p.rsplit("/", 1)[1]
            if node_uuid != self.node.uuid:
                return 404, _fault(f"Node {node_uuid} could not be found.")
            return 202, None
        return 404, _fault(f"The resource could not be found: {method} {path}")

    def _version(self) -> dict[str, Any]:
        return {
            "id": "v1",
            "links": [{"href": f"{self.url}/v1/", "rel": "self"}],
            "status": "CURRENT",
            "min_version": MIN_VERSION,
            "version": MAX_VERSION,
        }

    def _root(self) -> dict[str, Any]:
        v = self._version()
        return {
            "name": "OpenStack Ironic API",
            "description": "Fake Ironic API of sles-ipa-builder's boot test",
            "default_version": v,
            "versions": [v],
        }

    def _v1(self) -> dict[str, Any]:
        def link(name: str) -> list[dict[str, str]]:
            return [{"href": f"{self.url}/v1/{name}/", "rel": "self"}]

        return {
            "id": "v1",
            "links": [{"href": f"{self.url}/v1/", "rel": "self"}],
            "media_types": [{"base": "application/json", "type": "application/vnd.openstack.ironic.v1+json"}],
            "version": self._version(),
            "lookup": link("lookup"),
            "heartbeat": link("heartbeat"),
        }


def _fault(message: str) -> dict[str, Any]:
    # Ironic wraps errors as a JSON string inside error_message; IPA unwraps both forms.
    return {"error_message": json.dumps({"faultstring": message, "faultcode": "Client", "debuginfo": None})}


def _handler_for(api: FakeIronic) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = "FakeIronic/1.0"

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
            pass  # the record is the log

        def _serve(self) -> None:
            parts = urlsplit(self.path)
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            try:
                body: Any = json.loads(raw) if raw else None
            except ValueError:
                body = raw.decode(errors="replace")
            headers = {k.lower(): v for k, v in self.headers.items() if k.lower() in RECORDED_HEADERS}
            now = time.monotonic()
            req = Request(
                method=self.command,
                path=parts.path,
                query=parse_qs(parts.query),
                headers=headers,
                body=body,
                at=now - api._started,
                monotonic=now,
                client=self.client_address[0],
            )
            status, payload = api.respond(req.method, req.path, req.query)
            data = b"" if payload is None else json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("X-OpenStack-Ironic-API-Minimum-Version", MIN_VERSION)
            self.send_header("X-OpenStack-Ironic-API-Maximum-Version", MAX_VERSION)
            self.send_header("X-OpenStack-Ironic-API-Version", MAX_VERSION)
            if payload is not None:
                self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if data and self.command != "HEAD":
                self.wfile.write(data)
            # Record after answering so a waiter sees the request only once the agent got its reply.
            api.record(req)

        do_GET = _serve
        do_POST = _serve
        do_PUT = _serve
        do_PATCH = _serve
        do_DELETE = _serve
        do_HEAD = _serve

    return Handler
