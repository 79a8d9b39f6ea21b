"""Kubeconfig files of the stand-in: the one writer (:func:`kubeconfig_text`) and the one reader
(:func:`current_context`) that the API server, the agent's REST client and ``sim up`` share.
(The agent's API client loads kubeconfigs with the official client's own loader.)
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

__all__ = ["CurrentContext", "current_context", "kubeconfig_text"]


@dataclass(frozen=True)
class CurrentContext:
    """What a kubeconfig's current context names: its cluster, user and namespace."""

    cluster_name: str
    cluster: dict[str, Any]
    user_name: str
    user: dict[str, Any]
    namespace: str | None

    @property
    def server(self) -> str:
        return str(self.cluster["server"]).rstrip("/")


def current_context(path: Path | str) -> CurrentContext:
    """Read ``path`` and resolve its current context.

    Raises ``ValueError`` naming the file when the context, cluster or user is missing.
    """
    doc = yaml.safe_load(Path(path).read_text()) or {}
    name = doc.get("current-context")

    def find(kind: str, wanted: Any) -> dict[str, Any]:
        for entry in doc.get(kind) or []:
            if entry.get("name") == wanted:
                return dict(entry)
        raise ValueError(f"kubeconfig {path}: no {kind[:-1]} named {wanted!r}")

    context = find("contexts", name).get("context") or {}
    cluster = find("clusters", context.get("cluster"))
    user = find("users", context.get("user"))
    return CurrentContext(cluster["name"], dict(cluster.get("cluster") or {}), user["name"],
                          dict(user.get("user") or {}), context.get("namespace"))


def kubeconfig_text(url: str, token: str, namespace: str = "default", ca_pem: str | None = None,
                    name: str = "jupyter-flame-sim", *, cluster: dict[str, Any] | None = None,
                    user: str | None = None) -> str:
    """A kubeconfig (YAML) with one cluster, user and current context.

    Parameters
    ----------
    url
        ``https://127.0.0.1:PORT`` of the server.
    token
        Bearer token of the user.
    namespace
        Default namespace of the context.
    ca_pem
        PEM of the CA that signed the serving certificate
        (``certificate-authority-data``).
    cluster
        The cluster entry to use as it is (``url`` and ``ca_pem`` ignored): another
        kubeconfig's, for a token on the same server.
    user
        The user's name (default ``name``).
    """
    if cluster is None:
        cluster = {"server": url}
        if ca_pem:
            cluster["certificate-authority-data"] = base64.b64encode(ca_pem.encode()).decode()
    user = user or name
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": name, "cluster": cluster}],
        "users": [{"name": user, "user": {"token": token}}],
        "contexts": [{"name": name, "context": {"cluster": name, "user": user, "namespace": namespace}}],
        "current-context": name,
        "preferences": {},
    }
    return str(yaml.safe_dump(config, sort_keys=False))
