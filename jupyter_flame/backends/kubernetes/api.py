"""Talking to the Kubernetes API: configuration, finding our own pod, errors.

The official (synchronous) ``kubernetes`` client is used from threads. Every API failure
becomes a :class:`~jupyter_flame.errors.BackendError` that names the verb and the resource;
403s say which RBAC rule is missing and point to ``deploy/rbac.yaml``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from jupyter_flame.errors import BackendError, ConfigError

__all__ = ["DOWNWARD_API_YAML", "api_error", "call", "load_api_client", "missing_pod_env"]

_SA_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")
_REQUEST_TIMEOUT = (10, 60)

DOWNWARD_API_YAML = """\
    env:
      - name: POD_NAME
        valueFrom:
          fieldRef:
            fieldPath: metadata.name
      - name: POD_NAMESPACE
        valueFrom:
          fieldRef:
            fieldPath: metadata.namespace
      - name: POD_IP
        valueFrom:
          fieldRef:
            fieldPath: status.podIP"""


def missing_pod_env(what: str) -> ConfigError:
    """The error for a notebook that does not know its own pod, with the YAML to add."""
    return ConfigError(
        f"The Kubernetes backend cannot find {what}. It reads the notebook's own pod through "
        "the downward API; add this to the notebook container of your Deployment (or pod "
        "template):\n\n" + DOWNWARD_API_YAML + "\n\nWith Zero-to-JupyterHub put the same three "
        "variables under singleuser.extraEnv (see deploy/z2jh-values.yaml). Outside a cluster, "
        "pass KubernetesBackend(pod_name=..., namespace=..., pod_ip=...) or set KUBECONFIG, "
        "POD_NAME, POD_NAMESPACE and POD_IP (`jupyter flame sim up` writes them to "
        "notebook.env)."
    )


def in_cluster() -> bool:
    """Whether this process runs in a pod with a service-account token mounted."""
    return bool(os.environ.get("KUBERNETES_SERVICE_HOST")) and (_SA_DIR / "token").exists()


def load_api_client(kubeconfig: str | None = None, context: str | None = None
                    ) -> tuple[client.ApiClient, str | None]:
    """An API client, and the namespace the configuration names (if any).

    Order: ``kubeconfig`` (argument), ``$KUBECONFIG``, in-cluster service account,
    ``~/.kube/config``.

    Raises
    ------
    ConfigError
        No configuration found (the message says what to add).
    """
    configuration = client.Configuration()
    path = kubeconfig or os.environ.get("KUBECONFIG")
    default = Path.home() / ".kube" / "config"
    try:
        if path or not in_cluster() and default.exists():
            config_file = path.split(os.pathsep)[0] if path else str(default)
            config.load_kube_config(  # type: ignore[no-untyped-call]
                config_file=config_file, context=context, client_configuration=configuration)
            contexts, active = config.list_kube_config_contexts(  # type: ignore[no-untyped-call]
                config_file=config_file)
            if context:
                active = next((c for c in contexts if c["name"] == context), active)
            namespace = (active or {}).get("context", {}).get("namespace")
            return client.ApiClient(configuration), namespace
        if in_cluster():
            config.load_incluster_config(  # type: ignore[no-untyped-call]
                client_configuration=configuration)
            namespace_file = _SA_DIR / "namespace"
            namespace = namespace_file.read_text().strip() if namespace_file.exists() else None
            return client.ApiClient(configuration), namespace
    except (config.ConfigException, OSError, ValueError) as exc:
        raise ConfigError(
            f"Kubernetes configuration {path or 'in-cluster'} could not be loaded: {exc}. "
            "Check KUBECONFIG, or the notebook pod's service account token."
        ) from exc
    raise ConfigError(
        "No Kubernetes configuration: not in a pod with a service-account token, no "
        "KUBECONFIG and no ~/.kube/config. Run the notebook in a pod whose service account is "
        "jupyter-flame-notebook (kubectl apply -f deploy/rbac.yaml), or set KUBECONFIG."
    )


def _status_body(exc: ApiException) -> dict[str, Any]:
    try:
        body = json.loads(exc.body or "{}")
    except (TypeError, ValueError):
        return {}
    return body if isinstance(body, dict) else {}


def api_error(exc: BaseException, verb: str, resource: str, namespace: str,
              **context: Any) -> BackendError:
    """A :class:`BackendError` for a failed API call, with the fix when there is one."""
    if not isinstance(exc, ApiException):
        return BackendError(
            f"Cannot {verb} {resource} in namespace {namespace}: the Kubernetes API is "
            f"unreachable ({type(exc).__name__}: {exc}).", **context)
    body = _status_body(exc)
    status = exc.status or body.get("code")
    reason = body.get("reason") or exc.reason
    message = body.get("message") or (exc.reason or "")
    text = (f"Kubernetes refused to {verb} {resource} in namespace {namespace}: "
            f"{status} {reason}: {message}")
    if status == 403:
        if "serviceaccount" in message and "not found" in message:
            text += (f". The runners' ServiceAccount is missing: `kubectl apply -n {namespace} "
                     "-f deploy/rbac.yaml` creates jupyter-flame-runner (or set "
                     "KubernetesBackend(service_account=...) to one that exists).")
        else:
            text += (f". The notebook's service account lacks the RBAC rule:\n\n"
                     f"    - apiGroups: [\"\"]\n"
                     f"      resources: [\"{resource}\"]\n"
                     f"      verbs: [\"{verb}\"]\n\n"
                     f"Apply the shipped Role with `kubectl apply -n {namespace} -f "
                     "deploy/rbac.yaml` and run the notebook pod as serviceAccountName: "
                     "jupyter-flame-notebook.")
    return BackendError(text, status=status, reason=reason, **context)


def call(verb: str, resource: str, namespace: str, func: Callable[..., Any], *args: Any,
         raw: bool = False, missing_ok: bool = False, **kwargs: Any) -> Any:
    """Call the client (in the calling thread) and translate its failures.

    ``raw=True`` returns the response JSON as a dict (every field the server sent);
    ``missing_ok=True`` returns ``None`` on 404.
    """
    kwargs.setdefault("_request_timeout", _REQUEST_TIMEOUT)
    try:
        if not raw:
            return func(*args, **kwargs)
        response = func(*args, _preload_content=False, **kwargs)
        if not 200 <= response.status < 300:
            raise ApiException(http_resp=response)
        return json.loads(response.data or b"{}")
    except ApiException as exc:
        if missing_ok and exc.status == 404:
            return None
        raise api_error(exc, verb, resource, namespace) from exc
    except Exception as exc:
        if isinstance(exc, (BackendError, ConfigError)):
            raise
        raise api_error(exc, verb, resource, namespace) from exc
