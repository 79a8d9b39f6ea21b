"""A container's environment, command and arguments, as the kubelet builds them.

Pure: no I/O of its own. Secrets and ConfigMaps come through a ``lookup``
callable so tests hand in dicts and the kubelet hands in API reads. Errors carry
the kubelet's messages (``secret "x" not found``) and become the
``CreateContainerConfigError`` waiting state.
"""

from __future__ import annotations

import base64
import os
import re
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any

__all__ = ["ContainerConfigError", "build_env", "expand", "resolve_command", "BASE_ENV_KEYS"]

Json = Mapping[str, Any]
# Lookup(kind, namespace, name) -> data dict (str -> str, decoded) or None when missing.
Lookup = Callable[[str, str, str], "dict[str, str] | None"]

#: Variables passed from the agent's own environment, standing in for an image's ENV.
BASE_ENV_KEYS = ("PATH", "HOME", "LANG", "LC_ALL", "TZ", "TMPDIR", "VIRTUAL_ENV", "PYTHONPATH")
#: Passed through as well when the agent's own environment has it. The test suite marks
#: every process it starts with it, and its check for leftover runner processes
#: (tests/conftest.py) only sees processes that carry it: without this, runners that the
#: agent starts as pods would escape that check.
TEST_SESSION_KEY = "JUPYTER_FLAME_TEST_SESSION"
_REF = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)")


class ContainerConfigError(Exception):
    """The container cannot be configured (``CreateContainerConfigError``)."""


def decode_secret(secret: Json) -> dict[str, str]:
    """Decode a Secret's ``data`` (base64) and ``stringData``."""
    out: dict[str, str] = {}
    for key, value in (secret.get("data") or {}).items():
        out[key] = base64.b64decode(value).decode("utf-8", "replace")
    for key, value in (secret.get("stringData") or {}).items():
        out[key] = str(value)
    return out


def expand(text: str, env: Mapping[str, str]) -> str:
    """Expand ``$(VAR)`` references like the kubelet (``$$`` escapes ``$``).

    Parameters
    ----------
    text : str
        A value, command or argument.
    env : Mapping[str, str]
        Variables defined so far.

    Returns
    -------
    str
        Unknown references are left as they are.
    """

    def repl(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name = match.group(1)
        return env.get(name, match.group(0))

    return _REF.sub(repl, text)


def _field_ref(path: str, pod: Json, pod_ip: str, host_ip: str) -> str:
    meta = pod.get("metadata") or {}
    spec = pod.get("spec") or {}
    if path.startswith("metadata.labels['") or path.startswith("metadata.annotations['"):
        which, _, rest = path.partition("['")
        key = rest.rstrip("]").rstrip("'")
        return str((meta.get(which.split(".")[1]) or {}).get(key, ""))
    values = {
        "metadata.name": meta.get("name", ""),
        "metadata.namespace": meta.get("namespace", ""),
        "metadata.uid": meta.get("uid", ""),
        "spec.nodeName": spec.get("nodeName", ""),
        "spec.serviceAccountName": spec.get("serviceAccountName", ""),
        "status.podIP": pod_ip,
        "status.podIPs": pod_ip,
        "status.hostIP": host_ip,
        "status.hostIPs": host_ip,
    }
    if path not in values:
        raise ContainerConfigError(f'unsupported fieldRef fieldPath "{path}"')
    return str(values[path] or "")


def _source(kind: str, ref: Json, namespace: str, lookup: Lookup) -> dict[str, str] | None:
    name = ref.get("name", "")
    data = lookup(kind, namespace, name)
    if data is None and not ref.get("optional"):
        raise ContainerConfigError(f'{kind.lower()} "{name}" not found')
    return data


def _cached(lookup: Lookup) -> Lookup:
    """``lookup`` reading each Secret/ConfigMap once (one environment refers to it per key)."""
    seen: dict[tuple[str, str, str], dict[str, str] | None] = {}

    def read(kind: str, namespace: str, name: str) -> dict[str, str] | None:
        key = (kind, namespace, name)
        if key not in seen:
            seen[key] = lookup(kind, namespace, name)
        return seen[key]

    return read


def build_env(
    container: Json,
    pod: Json,
    *,
    pod_ip: str,
    host_ip: str,
    lookup: Lookup,
    base: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The environment of one container.

    Parameters
    ----------
    container : Mapping
        The container spec.
    pod : Mapping
        The pod JSON (for ``fieldRef``).
    pod_ip, host_ip : str
        ``status.podIP`` and ``status.hostIP``.
    lookup : callable
        ``lookup("Secret"|"ConfigMap", namespace, name)`` -> decoded data or None.
    base : Mapping, optional
        The image's environment (defaults to :data:`BASE_ENV_KEYS` of ours, and
        :data:`TEST_SESSION_KEY` when set).

    Returns
    -------
    dict of str to str
        ``base``, ``HOSTNAME``, then ``envFrom`` in order, then ``env`` in order
        (later wins, ``$(VAR)`` expanded against what came before).

    Raises
    ------
    ContainerConfigError
        A referenced Secret/ConfigMap or key is missing (and not optional).
    """
    namespace = (pod.get("metadata") or {}).get("namespace", "default")
    lookup = _cached(lookup)
    if base is None:
        keys = (*BASE_ENV_KEYS, TEST_SESSION_KEY)
        base = {k: os.environ[k] for k in keys if k in os.environ}
    env: dict[str, str] = dict(base)
    env["HOSTNAME"] = (pod.get("metadata") or {}).get("name", "")
    for item in container.get("envFrom") or []:
        prefix = item.get("prefix", "")
        if item.get("secretRef") is not None:
            data = _source("Secret", item["secretRef"], namespace, lookup)
        elif item.get("configMapRef") is not None:
            data = _source("ConfigMap", item["configMapRef"], namespace, lookup)
        else:
            continue
        for key, value in (data or {}).items():
            env[prefix + key] = value
    for var in container.get("env") or []:
        name = var.get("name", "")
        if "value" in var or not var.get("valueFrom"):
            env[name] = expand(str(var.get("value", "")), env)
            continue
        src = var["valueFrom"]
        if src.get("fieldRef"):
            env[name] = _field_ref(src["fieldRef"].get("fieldPath", ""), pod, pod_ip, host_ip)
        elif src.get("secretKeyRef") or src.get("configMapKeyRef"):
            kind = "Secret" if src.get("secretKeyRef") else "ConfigMap"
            ref = src.get("secretKeyRef") or src.get("configMapKeyRef")
            data = _source(kind, ref, namespace, lookup)
            if data is None:
                continue
            key = ref.get("key", "")
            if key not in data:
                if ref.get("optional"):
                    continue
                raise ContainerConfigError(
                    f"couldn't find key {key} in {kind} {namespace}/{ref.get('name')}"
                )
            env[name] = data[key]
        elif src.get("resourceFieldRef"):
            env[name] = "0"
    return env


def resolve_command(container: Json, env: Mapping[str, str]) -> list[str]:
    """The argv of a container: ``command`` + ``args``, expanded.

    ``python``/``python3`` as the executable resolve to ``sys.executable``, so
    runners use the interpreter (and the packages) of the agent.

    Parameters
    ----------
    container : Mapping
        The container spec.
    env : Mapping
        Its environment, for ``$(VAR)``.

    Returns
    -------
    list of str

    Raises
    ------
    ContainerConfigError
        Neither ``command`` nor ``args`` is set (the images here have no entrypoint).
    """
    command: Sequence[str] = container.get("command") or []
    args: Sequence[str] = container.get("args") or []
    argv = [expand(str(a), env) for a in [*command, *args]]
    if not argv:
        raise ContainerConfigError("no command specified")
    exe = os.path.basename(argv[0])
    if exe == "python" or re.fullmatch(r"python3(\.\d+)?", exe):
        argv[0] = sys.executable
    return argv
