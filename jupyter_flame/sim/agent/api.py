"""The agent's only door to the cluster: the official ``kubernetes`` client.

Every call goes through :class:`kubernetes.client.CoreV1Api` with
``_preload_content=False`` and returns plain JSON dicts. That keeps the agent
light (no model deserialization) and sidesteps the client's known failure to
deserialize the ``Binding`` create response. Status writes are JSON merge
patches of the whole ``status`` (lists replaced wholesale), so the agent never
needs a resourceVersion and never conflicts with other writers.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any, cast

from kubernetes import client, config, watch
from kubernetes.client.exceptions import ApiException

__all__ = ["Api", "ApiException", "load_api", "load_api_from_info"]

Json = dict[str, Any]
MERGE_PATCH = "application/merge-patch+json"


def load_api(kubeconfig: str | None) -> Api:
    """Build an :class:`Api` from a kubeconfig file, or in-cluster config.

    Parameters
    ----------
    kubeconfig : str or None
        Path of a kubeconfig; None tries in-cluster config, then ``~/.kube/config``.

    Returns
    -------
    Api
    """
    configuration = client.Configuration()
    if kubeconfig:
        config.load_kube_config(config_file=kubeconfig, client_configuration=configuration)  # type: ignore[no-untyped-call]
    else:
        try:
            config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
        except config.ConfigException:
            config.load_kube_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
    configuration.connection_pool_maxsize = 8
    return Api(client.ApiClient(configuration))


def load_api_from_info(info: Json) -> Api:
    """Build an :class:`Api` from the stand-in API server's ``apiserver.json``.

    Parameters
    ----------
    info : dict
        ``url``, ``admin_token`` and ``ca_file`` (or ``insecure``).

    Returns
    -------
    Api
    """
    configuration = client.Configuration()
    configuration.host = str(info["url"])
    configuration.api_key = {"authorization": f"Bearer {info['admin_token']}"}
    if info.get("ca_file"):
        configuration.ssl_ca_cert = str(info["ca_file"])
    if info.get("insecure"):
        configuration.verify_ssl = False
    configuration.connection_pool_maxsize = 8
    return Api(client.ApiClient(configuration))


def _json(resp: Any) -> Json:
    data = resp.data
    return json.loads(data) if data else {}


class Api:
    """Dict-in, dict-out wrapper over ``CoreV1Api``.

    Parameters
    ----------
    api_client : kubernetes.client.ApiClient
        A configured client (token, server, TLS).
    """

    def __init__(self, api_client: client.ApiClient) -> None:
        self.api_client = api_client
        self.core = client.CoreV1Api(api_client)

    # -- pods -------------------------------------------------------------------------
    def list_pods(self) -> Json:
        """List pods in all namespaces (``items`` and ``metadata.resourceVersion``)."""
        return _json(self.core.list_pod_for_all_namespaces(_preload_content=False))

    def list_nodes(self) -> Json:
        """List nodes."""
        return _json(self.core.list_node(_preload_content=False))

    def watch(self, kind: str, resource_version: str, timeout_seconds: int = 300) -> Iterator[Json]:
        """Watch ``pods`` (all namespaces) or ``nodes`` from ``resource_version``.

        Parameters
        ----------
        kind : str
            ``"pods"`` or ``"nodes"``.
        resource_version : str
            Where to start.
        timeout_seconds : int
            Server-side timeout; the caller re-watches.

        Yields
        ------
        dict
            Raw watch events ``{"type": ..., "object": {...}}``.
        """
        func = self.core.list_pod_for_all_namespaces if kind == "pods" else self.core.list_node
        w = watch.Watch()  # type: ignore[no-untyped-call]
        yield from w.stream(  # type: ignore[no-untyped-call]
            func,
            resource_version=resource_version,
            timeout_seconds=timeout_seconds,
            allow_watch_bookmarks=True,
            deserialize=False,
        )

    def bind(self, namespace: str, name: str, uid: str, node: str) -> None:
        """Bind a pod to a node through the ``pods/binding`` subresource."""
        body = client.V1Binding(
            api_version="v1",
            kind="Binding",
            metadata=client.V1ObjectMeta(name=name, namespace=namespace, uid=uid),
            target=client.V1ObjectReference(api_version="v1", kind="Node", name=node),
        )
        self.core.create_namespaced_pod_binding(name, namespace, body, _preload_content=False)

    def patch_pod_status(self, namespace: str, name: str, status: Json) -> None:
        """Replace the pod's status fields by a JSON merge patch."""
        self.core.patch_namespaced_pod_status(
            name, namespace, {"status": status}, _content_type=MERGE_PATCH, _preload_content=False
        )

    def delete_pod_now(self, namespace: str, name: str, uid: str) -> None:
        """Finish a graceful deletion: ``gracePeriodSeconds=0`` with a uid precondition."""
        body = client.V1DeleteOptions(
            grace_period_seconds=0, preconditions=client.V1Preconditions(uid=uid)
        )
        self.core.delete_namespaced_pod(
            name, namespace, body=body, grace_period_seconds=0, _preload_content=False
        )

    def read_secret(self, namespace: str, name: str) -> Json:
        """Read a Secret (``data`` is base64)."""
        return _json(self.core.read_namespaced_secret(name, namespace, _preload_content=False))

    def read_config_map(self, namespace: str, name: str) -> Json:
        """Read a ConfigMap."""
        return _json(self.core.read_namespaced_config_map(name, namespace, _preload_content=False))

    # -- events -----------------------------------------------------------------------
    def create_event(self, namespace: str, body: Json) -> None:
        """Create a core/v1 Event."""
        self.core.create_namespaced_event(namespace, cast(Any, body), _preload_content=False)

    def patch_event(self, namespace: str, name: str, body: Json) -> None:
        """Merge-patch an Event (count, lastTimestamp)."""
        self.core.patch_namespaced_event(
            name, namespace, body, _content_type=MERGE_PATCH, _preload_content=False
        )

    # -- nodes ------------------------------------------------------------------------
    def create_node(self, body: Json) -> None:
        """Create a Node."""
        self.core.create_node(cast(Any, body), _preload_content=False)

    def patch_node(self, name: str, body: Json) -> None:
        """Merge-patch a Node (labels, taints)."""
        self.core.patch_node(name, body, _content_type=MERGE_PATCH, _preload_content=False)

    def patch_node_status(self, name: str, status: Json) -> None:
        """Merge-patch a Node's status."""
        self.core.patch_node_status(
            name, {"status": status}, _content_type=MERGE_PATCH, _preload_content=False
        )
