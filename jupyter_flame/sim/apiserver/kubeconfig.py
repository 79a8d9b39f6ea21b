"""Kubeconfig files pointing at the stand-in API server."""

from __future__ import annotations

import base64

import yaml


def kubeconfig_text(url: str, token: str, namespace: str = "default", ca_pem: str | None = None,
                    name: str = "jupyter-flame-sim") -> str:
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
    """
    cluster: dict[str, str] = {"server": url}
    if ca_pem:
        cluster["certificate-authority-data"] = base64.b64encode(ca_pem.encode()).decode()
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": name, "cluster": cluster}],
        "users": [{"name": name, "user": {"token": token}}],
        "contexts": [{"name": name, "context": {"cluster": name, "user": name, "namespace": namespace}}],
        "current-context": name,
        "preferences": {},
    }
    return str(yaml.safe_dump(config, sort_keys=False))
