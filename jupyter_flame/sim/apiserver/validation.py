"""Defaults and validation applied on create and update (pure).

Pods get the defaults a real API server and its default admission plugins
fill in (restart and DNS policy, grace period, scheduler, per-container
termination message and pull policy, default tolerations, the
``kube-api-access-*`` service-account volume, QoS class, ``Pending`` phase).
"""

from __future__ import annotations

import re
import secrets
from typing import Any

from .. import quantity
from .status import FieldError

_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_SUBDOMAIN_MSG = (
    "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.',"
    " and must start and end with an alphanumeric character (e.g. 'example.com', regex used for"
    " validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"
)
_LABEL_MSG = (
    "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must"
    " start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for"
    " validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')"
)
_NAME_CHARS = "bcdfghjklmnpqrstvwxz2456789"

POD_UPDATE_FORBIDDEN = (
    "pod updates may not change fields other than `spec.containers[*].image`,"
    "`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` "
    "(only additions to existing tolerations),`spec.terminationGracePeriodSeconds` "
    "(allow it to be set to 1 if it was previously negative)"
)


#: The total size of an object's annotations a real API server accepts (TotalAnnotationSizeLimitB).
ANNOTATIONS_LIMIT = 256 * 1024


def random_suffix(n: int = 5) -> str:
    """Random characters as ``generateName`` and SA volume names use them."""
    return "".join(secrets.choice(_NAME_CHARS) for _ in range(n))


def validate_name(name: str, plural: str) -> list[FieldError]:
    """Name validation (DNS-1123 label for namespaces, subdomain otherwise)."""
    if not name:
        return [FieldError("metadata.name", "FieldValueRequired", "name or generateName is required")]
    if plural == "namespaces":
        if len(name) > 63 or not _LABEL.match(name):
            return [FieldError("metadata.name", "FieldValueInvalid", _LABEL_MSG, name, show_value=True)]
        return []
    if plural in ("roles", "clusterroles", "rolebindings", "clusterrolebindings"):
        bad = name in (".", "..") or "/" in name or "%" in name
        if bad:
            return [FieldError("metadata.name", "FieldValueInvalid",
                               "may not contain '/'", name, show_value=True)]
        return []
    if len(name) > 253 or not _SUBDOMAIN.match(name):
        return [FieldError("metadata.name", "FieldValueInvalid", _SUBDOMAIN_MSG, name, show_value=True)]
    return []


_QUALIFIED = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
_NAME_PART_MSG = (
    "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an"
    " alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is"
    " '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')"
)
_VALUE_MSG = (
    "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and"
    " must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345',"
    " regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')"
)


def _key_errors(field: str, key: str) -> list[FieldError]:
    prefix, _, name = key.rpartition("/")
    errs = []
    if not name or len(name) > 63 or not _QUALIFIED.match(name):
        detail = "name part must be no more than 63 characters" if len(name) > 63 else _NAME_PART_MSG
        errs.append(FieldError(field, "FieldValueInvalid", detail, key, show_value=True))
    if "/" in key and (not prefix or len(prefix) > 253 or not _SUBDOMAIN.match(prefix)):
        errs.append(FieldError(field, "FieldValueInvalid", "prefix part " + _SUBDOMAIN_MSG, key, show_value=True))
    return errs


def validate_meta(meta: dict[str, Any]) -> list[FieldError]:
    """Label keys and values, annotation keys, ownerReferences (as ValidateObjectMeta does)."""
    errs: list[FieldError] = []
    labels = meta.get("labels") or {}
    for key, value in labels.items():
        errs += _key_errors("metadata.labels", str(key))
        value = "" if value is None else str(value)
        if len(value) > 63:
            errs.append(FieldError("metadata.labels", "FieldValueInvalid", "must be no more than 63 characters",
                                   value, show_value=True))
        elif not _LABEL_VALUE.match(value):
            errs.append(FieldError("metadata.labels", "FieldValueInvalid", _VALUE_MSG, value, show_value=True))
    annotations = meta.get("annotations") or {}
    for key in annotations:
        errs += _key_errors("metadata.annotations", str(key))
    size = sum(len(str(k).encode()) + len(str(v or "").encode()) for k, v in annotations.items())
    if size > ANNOTATIONS_LIMIT:
        errs.append(FieldError("metadata.annotations", "FieldValueTooLong",
                               f"may not be more than {ANNOTATIONS_LIMIT} bytes"))
    controllers = 0
    for ref in meta.get("ownerReferences") or []:
        for part, what in (("apiVersion", "version"), ("kind", "kind"), ("name", "name"), ("uid", "uid")):
            if not ref.get(part):
                errs.append(FieldError(f"metadata.ownerReferences.{part}", "FieldValueInvalid",
                                       f"{what} must not be empty", "", show_value=True))
        controllers += 1 if ref.get("controller") else 0
    if controllers > 1:
        errs.append(FieldError("metadata.ownerReferences", "FieldValueInvalid",
                               "Only one reference can have Controller set to true", "", show_value=False))
    return errs


def _pull_policy(image: str) -> str:
    tail = image.rsplit("/", 1)[-1]
    if "@" in tail:
        return "IfNotPresent"
    if ":" not in tail or tail.endswith(":latest"):
        return "Always"
    return "IfNotPresent"


def _default_container(c: dict[str, Any]) -> None:
    c.setdefault("terminationMessagePath", "/dev/termination-log")
    c.setdefault("terminationMessagePolicy", "File")
    if c.get("image"):
        c.setdefault("imagePullPolicy", _pull_policy(c["image"]))
    res = c.setdefault("resources", {})
    limits = res.get("limits") or {}
    if limits:  # requests default to limits, per resource
        requests = res.setdefault("requests", {})
        for key, value in limits.items():
            requests.setdefault(key, value)
    for port in c.get("ports") or []:
        port.setdefault("protocol", "TCP")
    for env in c.get("env") or []:
        ref = (env.get("valueFrom") or {}).get("fieldRef")
        if ref is not None:
            ref.setdefault("apiVersion", "v1")


def _qos(spec: dict[str, Any]) -> str:
    containers = list(spec.get("containers") or []) + list(spec.get("initContainers") or [])
    any_set = False
    guaranteed = True
    for c in containers:
        res = c.get("resources") or {}
        req, lim = res.get("requests") or {}, res.get("limits") or {}
        if req or lim:
            any_set = True
        for name in ("cpu", "memory"):
            if name not in lim or req.get(name, lim.get(name)) != lim.get(name):
                guaranteed = False
    if not any_set:
        return "BestEffort"
    return "Guaranteed" if guaranteed else "Burstable"


def default_pod(pod: dict[str, Any], sa_automount: bool = True) -> None:
    """Fill in the defaults a real API server (and its admission) sets on a new pod."""
    spec = pod.setdefault("spec", {})
    spec.setdefault("restartPolicy", "Always")
    spec.setdefault("terminationGracePeriodSeconds", 30)
    spec.setdefault("dnsPolicy", "ClusterFirst")
    spec.setdefault("securityContext", {})
    spec.setdefault("schedulerName", "default-scheduler")
    spec.setdefault("enableServiceLinks", True)
    spec.setdefault("preemptionPolicy", "PreemptLowerPriority")
    spec.setdefault("priority", 0)
    sa = spec.get("serviceAccountName") or spec.get("serviceAccount") or "default"
    spec["serviceAccountName"] = sa
    spec["serviceAccount"] = sa
    tolerations = spec.setdefault("tolerations", [])
    for key in ("node.kubernetes.io/not-ready", "node.kubernetes.io/unreachable"):
        if not any(t.get("key") == key for t in tolerations):
            tolerations.append({"key": key, "operator": "Exists", "effect": "NoExecute",
                                "tolerationSeconds": 300})
    for c in list(spec.get("containers") or []) + list(spec.get("initContainers") or []):
        _default_container(c)
    automount = spec.get("automountServiceAccountToken")
    if automount is None:
        automount = sa_automount
    if automount and not any(
        m.get("mountPath") == "/var/run/secrets/kubernetes.io/serviceaccount"
        for c in spec.get("containers") or [] for m in c.get("volumeMounts") or []
    ):
        vol = f"kube-api-access-{random_suffix()}"
        spec.setdefault("volumes", []).append(_sa_volume(vol))
        for c in list(spec.get("containers") or []) + list(spec.get("initContainers") or []):
            c.setdefault("volumeMounts", []).append({
                "name": vol, "readOnly": True,
                "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount"})
    status = pod.setdefault("status", {})
    status["phase"] = status.get("phase") or "Pending"
    status["qosClass"] = _qos(spec)


def _sa_volume(name: str) -> dict[str, Any]:
    return {"name": name, "projected": {"defaultMode": 420, "sources": [
        {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
        {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
        {"downwardAPI": {"items": [{"path": "namespace", "fieldRef": {
            "apiVersion": "v1", "fieldPath": "metadata.namespace"}}]}},
    ]}}


def validate_pod(pod: dict[str, Any]) -> list[FieldError]:
    """Structural checks on a pod spec (containers present, named, with images)."""
    errs: list[FieldError] = []
    spec = pod.get("spec") or {}
    containers = spec.get("containers") or []
    if not containers:
        errs.append(FieldError("spec.containers", "FieldValueRequired", ""))
    seen: set[str] = set()
    for field in ("initContainers", "containers"):
        for i, c in enumerate(spec.get(field) or []):
            path = f"spec.{field}[{i}]"
            name = c.get("name") or ""
            if not name:
                errs.append(FieldError(f"{path}.name", "FieldValueRequired", ""))
            elif not _LABEL.match(name):
                errs.append(FieldError(f"{path}.name", "FieldValueInvalid", _LABEL_MSG, name, show_value=True))
            elif name in seen:
                errs.append(FieldError(f"{path}.name", "FieldValueDuplicate", "", name, show_value=True))
            seen.add(name)
            if not c.get("image"):
                errs.append(FieldError(f"{path}.image", "FieldValueRequired", ""))
    volumes: set[str] = set()
    for i, vol in enumerate(spec.get("volumes") or []):
        vname = vol.get("name") or ""
        if vname in volumes:
            errs.append(FieldError(f"spec.volumes[{i}].name", "FieldValueDuplicate", "", vname, show_value=True))
        volumes.add(vname)
    for field in ("initContainers", "containers"):
        for i, c in enumerate(spec.get(field) or []):
            path = f"spec.{field}[{i}]"
            for j, mount in enumerate(c.get("volumeMounts") or []):
                if mount.get("name") not in volumes:
                    errs.append(FieldError(f"{path}.volumeMounts[{j}].name", "FieldValueNotFound", "",
                                           mount.get("name")))
                if not mount.get("mountPath"):
                    errs.append(FieldError(f"{path}.volumeMounts[{j}].mountPath", "FieldValueRequired", ""))
            for j, env in enumerate(c.get("env") or []):
                if not _ENV_NAME.match(str(env.get("name") or "")):
                    errs.append(FieldError(f"{path}.env[{j}].name", "FieldValueInvalid", _ENV_MSG,
                                           env.get("name") or "", show_value=True))
            errs += _resource_errors(f"{path}.resources", c.get("resources") or {})
    policy = spec.get("restartPolicy")
    if policy not in ("Always", "OnFailure", "Never"):
        errs.append(FieldError("spec.restartPolicy", "FieldValueNotSupported",
                               'supported values: "Always", "OnFailure", "Never"', policy, show_value=True))
    return errs


# RelaxedEnvironmentVariableValidation is on by default since 1.32
_ENV_NAME = re.compile(r"^[ -<>-~]+$")
_ENV_MSG = "a valid environment variable name must consist only of printable ASCII characters other than '='"
_OVERCOMMITTABLE = ("cpu", "memory", "ephemeral-storage")


def _resource_errors(path: str, res: dict[str, Any]) -> list[FieldError]:
    """requests <= limits; extended resources need limits equal to requests."""
    errs: list[FieldError] = []
    limits, requests = res.get("limits") or {}, res.get("requests") or {}
    try:
        for name, value in requests.items():
            extended = name not in _OVERCOMMITTABLE and not name.startswith("hugepages-")
            if name in limits:
                req, lim = quantity.parse(value)[0], quantity.parse(limits[name])[0]
                if extended and req != lim:
                    errs.append(FieldError(f"{path}.requests[{name}]", "FieldValueInvalid",
                                           f"must be equal to {name} limit of {limits[name]}", value, show_value=True))
                elif req > lim:
                    errs.append(FieldError(f"{path}.requests[{name}]", "FieldValueInvalid",
                                           f"must be less than or equal to {name} limit of {limits[name]}",
                                           value, show_value=True))
            elif extended and "/" in name:
                errs.append(FieldError(f"{path}.limits[{name}]", "FieldValueRequired",
                                       "Limit must be set for non overcommitable resources"))
    except quantity.QuantityError:
        pass  # reported when decoding
    return errs


def pod_spec_update_errors(old: dict[str, Any], new: dict[str, Any]) -> list[FieldError]:
    """Refuse spec changes a real server refuses (``spec.nodeName`` among them)."""
    a, b = dict(old.get("spec") or {}), dict(new.get("spec") or {})
    for spec in (a, b):
        spec.pop("activeDeadlineSeconds", None)
        spec.pop("terminationGracePeriodSeconds", None)
        spec.pop("tolerations", None)
        for field in ("containers", "initContainers"):
            spec[field] = [{k: v for k, v in c.items() if k != "image"} for c in spec.get(field) or []]
    if a != b:
        return [FieldError("spec", "FieldValueForbidden", POD_UPDATE_FORBIDDEN)]
    return []
