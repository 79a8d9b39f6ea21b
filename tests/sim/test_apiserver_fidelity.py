"""The stand-in answers like a real API server at the HTTP level: OpenAPI negotiation, decoding, limits.

Each case is a raw HTTPS request (no client library smoothing things over) and
checks the status code, the content type and the ``Status`` body's shape.
"""

from __future__ import annotations

import http.client
import json
import socket
import ssl
import time
from typing import Any

import pytest

from jupyter_flame.sim.apiserver import openapi_pb
from jupyter_flame.sim.apiserver.discovery import AGGREGATED
from jupyter_flame.sim.apiserver.launch import ApiServerProcess
from jupyter_flame.sim.apiserver.protobuf import fields
from jupyter_flame.sim.apiserver.server import MAX_REQUEST_BODY

pytestmark = pytest.mark.sim

CM = "/api/v1/namespaces/default/configmaps"
PB = openapi_pb.CONTENT_TYPE
PB_OLD = openapi_pb.CONTENT_TYPE_DEPRECATED


class Reply:
    def __init__(self, status: int, headers: http.client.HTTPMessage, body: bytes) -> None:
        self.status, self.headers, self.body = status, headers, body

    def json(self) -> Any:
        return json.loads(self.body)


def _context(server: ApiServerProcess) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=server.ca_file)


def call(server: ApiServerProcess, method: str, path: str, body: bytes = b"",
         headers: dict[str, str] | None = None, token: str | None = "admin") -> Reply:
    conn = http.client.HTTPSConnection("127.0.0.1", server.port, context=_context(server), timeout=30)
    head = {"Content-Type": "application/json", **(headers or {})}
    if token:
        head["Authorization"] = "Bearer " + (server.admin_token if token == "admin" else token)
    try:
        conn.request(method, path, body=body, headers=head)
        resp = conn.getresponse()
        return Reply(resp.status, resp.headers, resp.read())
    finally:
        conn.close()


def configmap(name: str, **extra: Any) -> bytes:
    obj = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "namespace": "default"}}
    obj.update(extra)
    return json.dumps(obj).encode()


def assert_status(reply: Reply, code: int, reason: str, message: str | None = None) -> dict[str, Any]:
    assert reply.status == code, (reply.status, reply.body[:300])
    assert reply.headers["Content-Type"] == "application/json"
    body = reply.json()
    assert {k: body[k] for k in ("kind", "apiVersion", "status", "reason", "code")} == {
        "kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": reason, "code": code}
    assert body["metadata"] == {}
    if message is not None:
        assert body["message"] == message
    return body


# -- OpenAPI -----------------------------------------------------------------------------------

@pytest.mark.parametrize(("accept", "status", "ctype"), [
    (PB_OLD, 200, PB),                                     # what client-go sends
    (PB, 200, PB),
    ("application/json", 200, "application/json"),
    (None, 200, "application/json"),                       # no Accept: */*, JSON first
    (f"application/json;q=0.5, {PB_OLD}", 200, PB),       # q values order the clauses
    (f"{PB_OLD};q=0.1, application/json;q=0.9", 200, "application/json"),
    ("application/*", 200, "application/json"),
    ("text/html", 406, None),
    ("application/json;q=0", 406, None),
])
def test_openapi_v2_negotiation(apiserver: ApiServerProcess, accept: str | None, status: int,
                                ctype: str | None) -> None:
    reply = call(apiserver, "GET", "/openapi/v2", headers={"Accept": accept} if accept else {})
    assert reply.status == status
    assert reply.headers.get("Vary") == "Accept"
    if ctype:
        assert reply.headers["Content-Type"] == ctype
        assert reply.headers["Etag"].startswith('"') and len(reply.headers["Etag"]) == 130


def test_openapi_v2_documents_agree(apiserver: ApiServerProcess) -> None:
    doc = call(apiserver, "GET", "/openapi/v2", headers={"Accept": "application/json"}).json()
    pod = doc["definitions"]["io.k8s.api.core.v1.Pod"]
    assert pod["x-kubernetes-group-version-kind"] == [{"group": "", "kind": "Pod", "version": "v1"}]
    containers = doc["definitions"]["io.k8s.api.core.v1.PodSpec"]["properties"]["containers"]
    assert containers["items"] == {"$ref": "#/definitions/io.k8s.api.core.v1.Container"}
    assert containers["x-kubernetes-patch-merge-key"] == "name"
    assert doc["definitions"]["io.k8s.apimachinery.pkg.util.intstr.IntOrString"]["format"] == "int-or-string"
    post = doc["paths"]["/api/v1/namespaces/{namespace}/pods"]["post"]
    assert "fieldValidation" in [p["name"] for p in post["parameters"]]
    # the protobuf form carries the same definitions (field 9: Definitions -> NamedSchema names)
    raw = call(apiserver, "GET", "/openapi/v2", headers={"Accept": PB_OLD}).body
    top = dict(fields(raw))
    assert top[1] == b"2.0"
    named = [dict(fields(item))[1].decode() for _, item in fields(top[9])]  # type: ignore[arg-type]
    assert named == list(doc["definitions"])
    tag = call(apiserver, "GET", "/openapi/v2", headers={"Accept": PB_OLD}).headers["Etag"]
    again = call(apiserver, "GET", "/openapi/v2", headers={"Accept": PB_OLD, "If-None-Match": tag})
    assert again.status == 304 and again.body == b""


def test_openapi_v3_hash_urls(apiserver: ApiServerProcess) -> None:
    root = call(apiserver, "GET", "/openapi/v3").json()
    url = root["paths"]["api/v1"]["serverRelativeURL"]
    current = call(apiserver, "GET", url, headers={"Accept": "application/json"})
    assert current.status == 200
    assert current.headers["Cache-Control"] == "public, immutable"
    assert current.headers["Etag"] == '"' + url.rsplit("=", 1)[1] + '"'
    schemas = current.json()["components"]["schemas"]
    assert schemas["io.k8s.api.core.v1.PodSpec"]["properties"]["containers"]["items"] == {
        "$ref": "#/components/schemas/io.k8s.api.core.v1.Container"}
    stale = call(apiserver, "GET", "/openapi/v3/api/v1?hash=0123", headers={"Accept": "application/json"})
    assert stale.status == 301 and stale.headers["Location"] == url
    assert call(apiserver, "GET", url, headers={"Accept": "application/com.github.proto-openapi.spec.v3"
                                                          ".v1.0+protobuf"}).status == 406
    assert call(apiserver, "GET", "/openapi/v3/apis/nope/v1").status == 404


# -- decoding: unknown fields, wrong types, missing fields, bad names -----------------------------

# in document order, as Go's decoder meets them (metadata comes before bogus in the body)
WARNED = ['299 - "unknown field \\"metadata.extra\\""', '299 - "unknown field \\"bogus\\""']


@pytest.mark.parametrize(("query", "status", "warnings"), [
    ("?fieldValidation=Strict", 400, None),
    ("?fieldValidation=Warn", 201, WARNED),
    ("", 201, WARNED),
    ("?fieldValidation=Ignore", 201, []),
])
def test_unknown_fields(apiserver: ApiServerProcess, query: str, status: int, warnings: list[str] | None) -> None:
    name = f"u{abs(hash(query)) % 10**6}"
    body = json.loads(configmap(name, bogus=1, data={"a": "b"}))
    body["metadata"]["extra"] = True
    reply = call(apiserver, "POST", CM + query, json.dumps(body).encode())
    if status == 400:
        assert_status(reply, 400, "BadRequest", 'ConfigMap in version "v1" cannot be handled as a ConfigMap: '
                      'strict decoding error: unknown field "metadata.extra", unknown field "bogus"')
        return
    assert reply.status == status
    assert (reply.headers.get_all("Warning") or []) == warnings
    stored = reply.json()
    assert "bogus" not in stored and "extra" not in stored["metadata"] and stored["data"] == {"a": "b"}


@pytest.mark.parametrize(("body", "code", "reason", "message"), [
    ({"spec": {"containers": "nope"}}, 400, "BadRequest",
     'Pod in version "v1" cannot be handled as a Pod: json: cannot unmarshal string into Go struct field '
     "PodSpec.spec.containers of type []v1.Container"),
    ({"spec": {"containers": [{"name": "c", "image": "i", "stdin": "yes"}]}}, 400, "BadRequest",
     'Pod in version "v1" cannot be handled as a Pod: json: cannot unmarshal string into Go struct field '
     "Container.spec.containers.stdin of type bool"),
    ({"spec": {"containers": [{"name": "c", "image": "i"}], "priority": 1.5}}, 400, "BadRequest",
     'Pod in version "v1" cannot be handled as a Pod: json: cannot unmarshal number 1.5 into Go struct '
     "field PodSpec.spec.priority of type int32"),
    ({"spec": {"containers": [{"image": "i"}]}}, 422, "Invalid",
     'Pod "p" is invalid: spec.containers[0].name: Required value'),
    ({"metadata": {"name": "Bad_Name"}, "spec": {"containers": [{"name": "c", "image": "i"}]}}, 422,
     "Invalid", None),
])
def test_rejected_objects(apiserver: ApiServerProcess, body: dict[str, Any], code: int, reason: str,
                          message: str | None) -> None:
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, **body}
    reply = call(apiserver, "POST", "/api/v1/namespaces/default/pods?fieldValidation=Strict",
                 json.dumps(pod).encode())
    status = assert_status(reply, code, reason, message)
    if code == 422:
        assert status["details"]["kind"] == "Pod" and status["details"]["causes"][0]["field"].startswith(
            ("spec.", "metadata."))
    assert call(apiserver, "GET", "/api/v1/namespaces/default/pods/p").status == 404


# -- limits ------------------------------------------------------------------------------------

def test_annotations_are_capped_at_256_kib(apiserver: ApiServerProcess) -> None:
    limit = 256 * 1024
    ok = call(apiserver, "POST", CM, configmap("fits", metadata={
        "name": "fits", "namespace": "default", "annotations": {"a": "x" * (limit - 1)}}))
    assert ok.status == 201
    body = assert_status(call(apiserver, "POST", CM, configmap("big", metadata={
        "name": "big", "namespace": "default", "annotations": {"a": "x" * limit}})), 422, "Invalid",
        'ConfigMap "big" is invalid: metadata.annotations: Too long: may not be more than 262144 bytes')
    assert body["details"]["causes"] == [{"reason": "FieldValueTooLong", "field": "metadata.annotations",
                                          "message": "Too long: may not be more than 262144 bytes"}]


def test_deep_json_is_a_bad_request(apiserver: ApiServerProcess) -> None:
    deep = b'{"a":' * 100_000 + b"1" + b"}" * 100_000
    assert_status(call(apiserver, "POST", CM, deep), 400, "BadRequest")
    assert call(apiserver, "GET", "/healthz").status == 200


def test_oversized_bodies_get_413(apiserver: ApiServerProcess) -> None:
    message = f"Request entity too large: limit is {MAX_REQUEST_BODY}"
    # declared: answered from the headers
    status, head, _ = raw_post(apiserver, MAX_REQUEST_BODY + 1, send=0, token=apiserver.admin_token)
    assert status == 413 and json.loads(head)["message"] == message
    # chunked, no Content-Length: answered once the limit is crossed
    conn = http.client.HTTPSConnection("127.0.0.1", apiserver.port, context=_context(apiserver), timeout=30)
    chunk = b"x" * (1 << 20)
    try:
        conn.request("POST", CM, body=iter([chunk] * 4), encode_chunked=True,
                     headers={"Authorization": f"Bearer {apiserver.admin_token}",
                              "Content-Type": "application/json"})
        resp = conn.getresponse()
        assert resp.status == 413 and json.loads(resp.read())["message"] == message
    finally:
        conn.close()
    assert call(apiserver, "POST", CM, configmap("after")).status == 201


def raw_post(server: ApiServerProcess, length: int, send: int, token: str | None) -> tuple[int, bytes, int]:
    """POST declaring ``length`` bytes, send up to ``send`` of them, return (status, body, bytes sent)."""
    sock = _context(server).wrap_socket(socket.create_connection(("127.0.0.1", server.port)),
                                        server_hostname="127.0.0.1")
    head = f"POST {CM} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {length}\r\n"
    if token:
        head += f"Authorization: Bearer {token}\r\n"
    sock.sendall((head + "\r\n").encode())
    sent = 0
    try:
        while sent < send:
            sock.sendall(b"x" * 65536)
            sent += 65536
    except OSError:
        pass  # the server answered and closed: the rest is never read
    sock.settimeout(10)
    data = b""
    try:
        while b"\r\n\r\n" not in data or len(data.split(b"\r\n\r\n", 1)[1]) < 60:
            part = sock.recv(65536)
            if not part:
                break
            data += part
    finally:
        sock.close()
    head_bytes, _, body = data.partition(b"\r\n\r\n")
    return int(head_bytes.split(b" ", 2)[1]), body, sent


def test_unauthenticated_body_is_never_read(apiserver: ApiServerProcess) -> None:
    total = 64 << 20
    t0 = time.monotonic()
    status, body, sent = raw_post(apiserver, total, send=total, token=None)
    assert status == 401 and json.loads(body)["reason"] == "Unauthorized"
    assert sent < total // 4, f"the server read {sent} bytes of an unauthenticated body"
    assert time.monotonic() - t0 < 10
    status, body, _ = raw_post(apiserver, 2**62, send=0, token="not-a-token")
    assert status == 401


# -- discovery ---------------------------------------------------------------------------------

@pytest.mark.parametrize(("accept", "aggregated"), [
    (AGGREGATED + ",application/json", True),              # what kubectl and client-go send
    ("application/json", False),
    (None, False),
    (AGGREGATED + ";q=0.5,application/json", False),       # the client prefers the legacy form
    ("application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList,application/json", False),
])
def test_aggregated_discovery_negotiation(apiserver: ApiServerProcess, accept: str | None, aggregated: bool) -> None:
    for path in ("/api", "/apis"):
        reply = call(apiserver, "GET", path, headers={"Accept": accept} if accept else {})
        assert reply.status == 200 and reply.headers["Vary"] == "Accept"
        body = reply.json()
        if not aggregated:
            assert reply.headers["Content-Type"] == "application/json"
            assert body["kind"] == ("APIVersions" if path == "/api" else "APIGroupList")
            continue
        assert reply.headers["Content-Type"] == AGGREGATED
        assert body["kind"] == "APIGroupDiscoveryList" and body["apiVersion"] == "apidiscovery.k8s.io/v2"
        names = [g["metadata"].get("name", "") for g in body["items"]]
        assert names == ([""] if path == "/api" else sorted(n for n in names if n))
    core = call(apiserver, "GET", "/api", headers={"Accept": AGGREGATED}).json()["items"][0]["versions"][0]
    pods = next(r for r in core["resources"] if r["resource"] == "pods")
    assert pods["responseKind"] == {"group": "", "version": "v1", "kind": "Pod"}
    assert pods["scope"] == "Namespaced" and pods["shortNames"] == ["po"]
    assert {s["subresource"] for s in pods["subresources"]} >= {"log", "status", "binding"}
