"""A minimal Kubernetes REST client for ``sim up`` (stdlib only, starts in milliseconds).

``sim up`` must be up in well under 2 s on two cores, and importing the
official client's API modules costs ~0.5 s of CPU. Setting up a namespace,
RBAC and the notebook pod needs a handful of plain requests, so ``sim up``
sends them with :mod:`urllib` using the kubeconfig's server, CA and token (or
client certificate). Agents use the official client.
"""

from __future__ import annotations

import base64
import json
import ssl
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..kubeconfig import current_context

__all__ = ["Rest", "RestError"]

Json = dict[str, Any]


class RestError(Exception):
    """An API request failed; ``status`` is the HTTP status (0: no connection)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"HTTP {status}: {message}")
        self.status = status


def _data_file(data: str, tmp: Path, name: str) -> str:
    path = tmp / name
    path.write_bytes(base64.b64decode(data))
    return str(path)


class Rest:
    """JSON requests against the server of a kubeconfig's current context.

    Parameters
    ----------
    kubeconfig : Path
        Token or client-certificate auth; exec plugins are not supported.
    """

    def __init__(self, kubeconfig: Path) -> None:
        current = current_context(kubeconfig)
        cluster, user = current.cluster, current.user
        self.server = current.server
        self._tmp = tempfile.TemporaryDirectory(prefix="jupyter-flame-rest-")
        tmp = Path(self._tmp.name)
        self.context = ssl.create_default_context()
        if cluster.get("insecure-skip-tls-verify"):
            self.context.check_hostname = False
            self.context.verify_mode = ssl.CERT_NONE
        elif cluster.get("certificate-authority-data"):
            self.context.load_verify_locations(
                cadata=base64.b64decode(cluster["certificate-authority-data"]).decode()
            )
        elif cluster.get("certificate-authority"):
            self.context.load_verify_locations(cafile=cluster["certificate-authority"])
        cert = user.get("client-certificate") or (
            user.get("client-certificate-data")
            and _data_file(user["client-certificate-data"], tmp, "cert.pem")
        )
        key = user.get("client-key") or (
            user.get("client-key-data") and _data_file(user["client-key-data"], tmp, "key.pem")
        )
        if cert and key:
            self.context.load_cert_chain(cert, key)
        self.headers = {"Accept": "application/json", "Content-Type": "application/json"}
        if user.get("token"):
            self.headers["Authorization"] = f"Bearer {user['token']}"
        elif user.get("tokenFile"):
            self.headers["Authorization"] = f"Bearer {Path(user['tokenFile']).read_text().strip()}"

    def _open(self, method: str, path: str, body: Json | None, timeout: float) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(
            self.server + path, data=data, method=method, headers=self.headers
        )
        try:
            return urllib.request.urlopen(req, context=self.context, timeout=timeout)
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode(errors="replace")
            try:
                detail = json.loads(detail).get("message", detail)
            except ValueError:
                pass
            raise RestError(exc.code, f"{method} {path}: {detail}") from exc
        except OSError as exc:
            raise RestError(0, f"{method} {self.server}{path}: {exc}") from exc

    def request(
        self, method: str, path: str, body: Json | None = None, timeout: float = 10.0
    ) -> Json:
        """Send one request; return the decoded JSON body."""
        with self._open(method, path, body, timeout) as resp:
            return dict(json.loads(resp.read() or b"{}"))

    def create(self, path: str, body: Json, exist_ok: bool = True) -> Json | None:
        """POST ``body``; None if it exists already and ``exist_ok``."""
        try:
            return self.request("POST", path, body)
        except RestError as exc:
            if exc.status == 409 and exist_ok:
                return None
            raise

    def watch(self, path: str, resource_version: str, timeout: float) -> Iterator[Json]:
        """Stream watch events of a list ``path`` (with its own query string)."""
        sep = "&" if "?" in path else "?"
        query = urllib.parse.urlencode(
            {"watch": "1", "resourceVersion": resource_version, "timeoutSeconds": int(timeout)}
        )
        with self._open("GET", f"{path}{sep}{query}", None, timeout + 5) as resp:
            for line in resp:
                if line.strip():
                    yield dict(json.loads(line))

    def close(self) -> None:
        """Remove temporary certificate files."""
        self._tmp.cleanup()
