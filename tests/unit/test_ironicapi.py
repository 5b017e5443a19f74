"""The fake Ironic endpoint, spoken to the way IPA speaks to it (urllib instead of requests)."""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from sles_ipa_builder.verify.fake_ironic import MAX_VERSION, FakeIronic, FakeNode

MAC = "52:54:00:12:34:56"


@pytest.fixture
def api() -> Iterator[FakeIronic]:
    with FakeIronic() as server:
        yield server


def settled(api: FakeIronic, n: int) -> None:
    """The server records a request just after answering it: wait until the last one is in."""
    assert api.wait_for(lambda reqs: len(reqs) >= n, 10), api.summary()


def call(url: str, method: str = "GET", body: Any = None, version: str | None = None) -> tuple[int, Any, Any]:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method)
    req.add_header("Accept", "application/json")
    if data is not None:
        req.add_header("Content-Type", "application/json")
    if version:
        req.add_header("X-OpenStack-Ironic-API-Version", version)
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            raw = resp.read()
            return resp.status, resp.headers, json.loads(raw) if raw else None
    except urllib.error.HTTPError as e:
        raw = e.read()
        return e.code, e.headers, json.loads(raw) if raw else None


def test_version_discovery_as_ipa_reads_it(api: FakeIronic) -> None:
    status, headers, body = call(api.url + "/")
    assert status == 200
    # IPA: data['default_version']['version'].split('.')
    major, minor = (int(x) for x in body["default_version"]["version"].split("."))
    assert (major, minor) >= (1, 62)  # agent tokens are in play
    assert headers["X-OpenStack-Ironic-API-Maximum-Version"] == MAX_VERSION
    assert headers["X-OpenStack-Ironic-API-Minimum-Version"] == "1.1"

    status, headers, body = call(api.url + "/v1")
    assert status == 200
    assert body["version"]["version"] == MAX_VERSION
    assert "lookup" in body and "heartbeat" in body


def test_lookup_then_heartbeat_is_recorded(api: FakeIronic) -> None:
    status, _, body = call(f"{api.url}/v1/lookup?addresses={MAC},52:54:00:aa:bb:cc", version="1.62")
    assert status == 200
    node = body["node"]
    assert node["uuid"] == api.node.uuid
    for key in ("properties", "instance_info", "driver_internal_info"):
        assert isinstance(node[key], dict)
    config = body["config"]
    assert 1 <= config["heartbeat_timeout"] <= 30
    assert len(config["agent_token"]) >= 32  # IPA ignores shorter tokens
    assert config["metrics"]["backend"] == "noop"

    hb = {"callback_url": "http://10.0.2.15:9999", "agent_token": config["agent_token"], "agent_version": "9"}
    status, _, body = call(f"{api.url}/v1/heartbeat/{node['uuid']}", "POST", hb, version="1.68")
    assert status == 202 and body is None

    settled(api, 2)
    lookups, beats = api.lookups(), api.heartbeats()
    assert [r.addresses for r in lookups] == [[MAC, "52:54:00:aa:bb:cc"]]
    assert lookups[0].headers["x-openstack-ironic-api-version"] == "1.62"
    assert len(beats) == 1
    assert beats[0].body == hb
    assert beats[0].headers["content-type"] == "application/json"
    assert lookups[0].at <= beats[0].at
    assert "GET /v1/lookup?addresses=" in api.summary()


def test_unknown_paths_and_nodes_are_refused(api: FakeIronic) -> None:
    status, _, body = call(api.url + "/v1/nodes")
    assert status == 404 and "faultstring" in json.loads(body["error_message"])
    status, _, _ = call(api.url + "/v1/heartbeat/not-our-node", "POST", {})
    assert status == 404
    status, _, _ = call(api.url + "/v1/lookup")
    assert status == 400
    settled(api, 3)
    assert api.heartbeats()[0].path == "/v1/heartbeat/not-our-node"  # failures are recorded too
    assert len(api.requests()) == 3


def test_wait_for_wakes_on_a_request_from_another_thread(api: FakeIronic) -> None:
    assert not api.wait_for(lambda reqs: bool(reqs), timeout=0.1)
    t = threading.Timer(0.2, call, args=(f"{api.url}/v1/lookup?addresses={MAC}",))
    t.start()
    try:
        assert api.wait_for(lambda reqs: any(r.addresses == [MAC] for r in reqs), timeout=30)
    finally:
        t.join()


def test_given_port_and_node() -> None:
    node = FakeNode(uuid="11111111-2222-3333-4444-555555555555", heartbeat_timeout=5)
    with FakeIronic(node=node) as first:
        port = first.port
    with FakeIronic(port=port, node=node) as api:
        assert api.port == port
        _, _, body = call(f"{api.url}/v1/lookup?node_uuid={node.uuid}")
        assert body["node"]["uuid"] == node.uuid
        assert body["config"]["heartbeat_timeout"] == 5
    assert api.summary().count("\n") == 0
