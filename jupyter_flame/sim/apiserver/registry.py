"""Create, read, update and patch objects with Kubernetes semantics.

The registry sits between the HTTP handlers and the :class:`~.store.Store`:
it fills metadata (uid, timestamps, ``generateName``), applies defaults and
validation, enforces optimistic concurrency, keeps ``status`` apart from the
main resource, and hands deletions to :mod:`.deletion`.
"""

from __future__ import annotations

import base64
import copy
import json
import uuid
from typing import Any

from .._time import rfc3339
from . import decoding, stored, writes
from . import patch as patches
from .resources import Resource, lookup
from .selectors import Selector
from .status import (
    ApiError,
    FieldError,
    already_exists,
    bad_request,
    conflict,
    forbidden,
    invalid,
    not_found,
    status_body,
    success_body,
    unsupported_media_type,
)
from .store import Store
from .validation import (
    default_pod,
    pod_spec_update_errors,
    random_suffix,
    validate_meta,
    validate_name,
    validate_pod,
)
from .workload_spec import (
    WORKLOADS,
    default_service,
    default_workload,
    scale_of,
    validate_service,
    validate_workload,
    workload_update_errors,
)

_WITH_STATUS = frozenset({"pods", "nodes", "namespaces", "services"}) | WORKLOADS
_NAMESPACES = ("", "namespaces")


class Registry:
    """Kubernetes object semantics over a :class:`Store`.

    Parameters
    ----------
    store
        Where objects live.
    """

    def __init__(self, store: Store) -> None:
        self.store = store

    # -- reads ---------------------------------------------------------------
    def get(self, res: Resource, namespace: str, name: str, subresource: str = "") -> dict[str, Any]:
        """A copy of the object (its ``Scale`` for ``subresource="scale"``), or 404."""
        obj = self.store.get(res.key, namespace, name)
        if obj is None:
            raise not_found(res.plural, name, res.group)
        return scale_of(obj) if subresource == "scale" else copy.deepcopy(obj)

    def list(self, res: Resource, namespace: str | None, selector: Selector,
             limit: int | None = None, cont: str | None = None) -> dict[str, Any]:
        """A ``<Kind>List`` of matching objects with the current resourceVersion.

        ``limit``/``cont`` page through the (namespace, name)-ordered objects;
        the ``continue`` token encodes the last key returned.
        """
        objs = [o for o in self.store.list(res.key, namespace) if selector.matches(o)]
        meta: dict[str, Any] = {"resourceVersion": str(self.store.rv)}
        if cont:
            try:
                token = json.loads(base64.urlsafe_b64decode(cont.encode()))
                after = (str(token["ns"]), str(token["name"]))
            except (ValueError, KeyError, TypeError) as exc:
                raise bad_request("continue key is not valid: incorrect encoded start resourceVersion (version meta.k8s.io/v1)") from exc
            objs = [o for o in objs if (o["metadata"].get("namespace") or "", o["metadata"]["name"]) > after]
        if limit and limit > 0 and len(objs) > limit:
            last = objs[limit - 1]["metadata"]
            token_text = json.dumps({"ns": last.get("namespace") or "", "name": last["name"]})
            meta["continue"] = base64.urlsafe_b64encode(token_text.encode()).decode()
            meta["remainingItemCount"] = len(objs) - limit
            objs = objs[:limit]
        return {
            "kind": f"{res.kind}List",
            "apiVersion": res.api_version,
            "metadata": meta,
            "items": [copy.deepcopy(o) for o in objs],
        }

    # -- create --------------------------------------------------------------
    def _check_body(self, res: Resource, namespace: str, body: Any) -> dict[str, Any]:
        if not isinstance(body, dict):
            raise bad_request("the request body must be a JSON object")
        obj = copy.deepcopy(body)
        kind, api_version = obj.get("kind"), obj.get("apiVersion")
        if (kind and kind != res.kind) or (api_version and api_version != res.api_version):
            raise bad_request(
                f"the API version in the data ({api_version}) does not match the expected API version "
                f"({res.api_version})" if api_version != res.api_version else
                f"the kind in the data ({kind}) does not match the expected kind ({res.kind})"
            )
        obj["kind"], obj["apiVersion"] = res.kind, res.api_version
        obj = decoding.decode(obj, res.group, res.version, res.kind)
        meta = obj.get("metadata")
        if not isinstance(meta, dict):
            meta = obj["metadata"] = {}
        if res.namespaced:
            if meta.get("namespace") and meta["namespace"] != namespace:
                raise bad_request("the namespace of the provided object does not match the namespace sent on the request")
            meta["namespace"] = namespace
        else:
            meta.pop("namespace", None)
        return obj

    def require_namespace(self, namespace: str, res: Resource, creating: bool = False) -> None:
        """404 when ``namespace`` does not exist; 403 when creating in a terminating one."""
        ns = self.store.get(_NAMESPACES, "", namespace)
        if ns is None:
            raise not_found("namespaces", namespace)
        if creating and ns["metadata"].get("deletionTimestamp"):
            raise forbidden(res.plural, None, res.group,
                            f"unable to create new content in namespace {namespace} because it is being terminated")

    def create(self, res: Resource, namespace: str, body: Any) -> dict[str, Any]:
        """Create an object (201 semantics); 409 if the name is taken."""
        obj = self._check_body(res, namespace, body)
        meta = obj["metadata"]
        if res.namespaced:
            self.require_namespace(namespace, res, creating=True)
        if not meta.get("name") and meta.get("generateName"):
            for _ in range(10):
                meta["name"] = str(meta["generateName"])[:58] + random_suffix()
                if self.store.get(res.key, namespace, meta["name"]) is None:
                    break
        name = meta.get("name") or ""
        stored.canonical_quantities(obj, res.plural)
        errs = validate_name(name, res.plural) + validate_meta(meta)
        if res.plural == "pods":
            sa_name = (obj.get("spec") or {}).get("serviceAccountName") or "default"
            sa = self.store.get(("", "serviceaccounts"), namespace, sa_name)
            if sa is None:
                raise forbidden("pods", name or None, "",
                                f'error looking up service account {namespace}/{sa_name}: serviceaccount "{sa_name}" not found')
            obj["status"] = {}
            default_pod(obj, sa.get("automountServiceAccountToken", True) is not False)
            errs += validate_pod(obj)
        if res.plural in WORKLOADS:
            obj["status"] = {"replicas": 0} if res.plural == "replicasets" else {}
            meta["generation"] = 1
            default_workload(obj, res.plural)
            errs += validate_workload(obj, res.plural)
        if res.plural == "services":
            obj.pop("status", None)
            default_service(obj, self._free_cluster_ip())
            errs += validate_service(obj)
        if res.plural == "events":
            inv_ns = (obj.get("involvedObject") or {}).get("namespace")
            if inv_ns and inv_ns != namespace:
                errs.append(FieldError("involvedObject.namespace", "FieldValueInvalid",
                                       "does not match event.namespace", inv_ns, show_value=True))
        if errs:
            raise invalid(res.kind, name, errs, res.group)
        if self.store.get(res.key, namespace, name) is not None:
            raise already_exists(res.plural, name, res.group)
        for key in ("resourceVersion", "deletionTimestamp", "deletionGracePeriodSeconds", "selfLink"):
            meta.pop(key, None)
        meta["uid"] = str(uuid.uuid4())
        meta["creationTimestamp"] = rfc3339()
        if res.plural == "namespaces":
            obj.setdefault("spec", {})["finalizers"] = ["kubernetes"]
            obj["status"] = {"phase": "Active"}
            meta.setdefault("labels", {})["kubernetes.io/metadata.name"] = name
        if res.plural == "secrets":
            obj.setdefault("type", "Opaque")
            stored.fold_string_data(obj)
        obj = stored.own(None, obj, "")
        self.store.add(res.key, obj)
        return copy.deepcopy(obj)

    # -- update --------------------------------------------------------------
    def update(self, res: Resource, namespace: str, name: str, body: Any,
               subresource: str = "", check_rv: bool = True) -> dict[str, Any]:
        """Replace an object (PUT); 409 on a stale ``resourceVersion``."""
        if subresource == "scale":
            return self._update_scale(res, namespace, name, body, check_rv)
        new = self._check_body(res, namespace, body)
        meta = new["metadata"]
        if meta.get("name") and meta["name"] != name:
            raise bad_request(f"the name of the object ({meta['name']}) does not match the name on the URL ({name})")
        meta["name"] = name
        old = self.store.get(res.key, namespace, name)
        if old is None:
            raise not_found(res.plural, name, res.group)
        rv = meta.get("resourceVersion")
        if check_rv and rv and rv != old["metadata"]["resourceVersion"]:
            raise conflict(res.plural, name, res.group)
        return self._commit(res, old, new, subresource)

    def _commit(self, res: Resource, old: dict[str, Any], new: dict[str, Any], subresource: str) -> dict[str, Any]:
        meta, old_meta = new["metadata"], old["metadata"]
        meta.pop("managedFields", None)  # the server keeps the record: writes never set it
        if old_meta.get("managedFields"):
            meta["managedFields"] = copy.deepcopy(old_meta["managedFields"])
        if subresource == "status":
            status = new.get("status")
            new = copy.deepcopy(old)
            new["status"] = status if status is not None else {}
            meta = new["metadata"]
        elif res.plural in _WITH_STATUS:
            new["status"] = copy.deepcopy(old.get("status", {}))
        for key in ("uid", "creationTimestamp", "deletionTimestamp", "deletionGracePeriodSeconds"):
            if key in old_meta:
                meta[key] = old_meta[key]
            else:
                meta.pop(key, None)
        meta["namespace"] = old_meta.get("namespace")
        if not res.namespaced:
            meta.pop("namespace", None)
        if res.plural == "pods" and subresource != "status":
            status = new.pop("status")  # the stored status (above): defaulting must not touch it
            default_pod(new, sa_automount=False)
            new["status"] = status
            errs = validate_pod(new) + pod_spec_update_errors(old, new)
            if errs:
                raise invalid(res.kind, old_meta["name"], errs)
        if res.plural in WORKLOADS:
            meta["generation"] = old_meta.get("generation", 1)
            if subresource != "status":
                default_workload(new, res.plural)
                errs = validate_workload(new, res.plural) + workload_update_errors(old, new)
                if errs:
                    raise invalid(res.kind, old_meta["name"], errs, res.group)
                if new.get("spec") != old.get("spec"):
                    meta["generation"] += 1
        if res.plural == "services" and subresource != "status":
            old_ip = (old.get("spec") or {}).get("clusterIP")
            default_service(new, old_ip or self._free_cluster_ip())
            errs = validate_service(new)
            if errs:
                raise invalid(res.kind, old_meta["name"], errs, res.group)
        meta_errs = validate_meta(meta)
        if meta_errs:
            raise invalid(res.kind, old_meta["name"], meta_errs, res.group)
        if res.plural == "namespaces" and subresource != "status":
            new["spec"] = copy.deepcopy(old.get("spec", {}))
        stored.canonical_quantities(new, res.plural)
        if res.plural == "secrets":
            stored.fold_string_data(new)
        new = stored.own(old, new, subresource)
        meta = new["metadata"]
        if stored.strip_rv(new) == stored.strip_rv(old):
            return copy.deepcopy(old)
        if meta.get("deletionTimestamp") and not meta.get("finalizers"):
            if res.plural != "pods" or meta.get("deletionGracePeriodSeconds") == 0:
                self.store.replace(res.key, new)
                return self.store.remove(res.key, meta.get("namespace") or "", meta["name"])
        self.store.replace(res.key, new)
        return copy.deepcopy(new)

    # -- patch ---------------------------------------------------------------
    def patch(self, res: Resource, namespace: str, name: str, content_type: str, body: Any,
              subresource: str = "", field_manager: str | None = None) -> tuple[dict[str, Any], int]:
        """Apply a patch; returns (object, HTTP code) — 201 when apply created it."""
        ctype = content_type.split(";")[0].strip()
        old = self.store.get(res.key, namespace, name)
        if ctype == "application/apply-patch+yaml":
            if not field_manager:
                raise invalid("PatchOptions", "", [FieldError("fieldManager", "FieldValueRequired", "is required for apply patch")], "meta.k8s.io")
            request = writes.current()
            if request is not None and isinstance(body, dict):
                request.applied = {**body, "apiVersion": res.api_version, "kind": res.kind}
            if old is None:
                body = dict(body or {})
                body.setdefault("metadata", {})["name"] = name
                return self.create(res, namespace, body), 201
        if old is None:
            raise not_found(res.plural, name, res.group)
        target = scale_of(old) if subresource == "scale" else old
        try:
            if ctype == "application/merge-patch+json":
                new = patches.merge_patch(target, body)
            elif ctype in ("application/strategic-merge-patch+json", "application/apply-patch+yaml"):
                new = patches.strategic_merge_patch(target, body)
            elif ctype == "application/json-patch+json":
                new = patches.json_patch(target, body)
            else:
                raise unsupported_media_type(ctype)
        except patches.PatchError as exc:
            raise ApiError(status_body(422, "Invalid", str(exc))) from exc
        if not isinstance(new, dict):
            raise bad_request("the patch did not produce an object")
        meta = new.get("metadata") or {}
        new["metadata"] = meta
        rv = meta.get("resourceVersion")
        if rv and rv != old["metadata"]["resourceVersion"] and ctype != "application/apply-patch+yaml":
            raise conflict(res.plural, name, res.group)
        meta["resourceVersion"] = old["metadata"]["resourceVersion"]
        if meta.get("name") != name:
            raise invalid(res.kind, name, [FieldError("metadata.name", "FieldValueInvalid", "field is immutable", meta.get("name"), show_value=True)], res.group)
        obj = self.update(res, namespace, name, new, subresource, check_rv=False)
        return obj, 200

    # -- scale -----------------------------------------------------------------
    def _update_scale(self, res: Resource, namespace: str, name: str, body: Any,
                      check_rv: bool) -> dict[str, Any]:
        """PUT ``<workload>/scale``: set ``spec.replicas`` from an ``autoscaling/v1 Scale``."""
        if res.plural not in WORKLOADS:
            raise not_found(res.plural, name, res.group)
        old = self.store.get(res.key, namespace, name)
        if old is None:
            raise not_found(res.plural, name, res.group)
        scale = body if isinstance(body, dict) else {}
        rv = (scale.get("metadata") or {}).get("resourceVersion")
        if check_rv and rv and rv != old["metadata"]["resourceVersion"]:
            raise conflict(res.plural, name, res.group)
        replicas = (scale.get("spec") or {}).get("replicas", 0)
        if not isinstance(replicas, int) or isinstance(replicas, bool) or replicas < 0:
            raise invalid("Scale", name, [FieldError("spec.replicas", "FieldValueInvalid",
                                                     "must be greater than or equal to 0", replicas,
                                                     show_value=True)], "autoscaling")
        new = copy.deepcopy(old)
        new["spec"]["replicas"] = replicas
        return scale_of(self._commit(res, old, new, "scale"))

    def _free_cluster_ip(self) -> str:
        """The next unused Service IP of ``10.96.0.0/12`` (``10.96.0.1`` is ``kubernetes``)."""
        taken = {(o.get("spec") or {}).get("clusterIP") for o in self.store.list(("", "services"))}
        for n in range(10, 1 << 20):
            ip = f"10.{96 + (n >> 16)}.{(n >> 8) & 255}.{n & 255}"
            if ip not in taken:
                return ip
        raise bad_request("the Service IP range 10.96.0.0/12 is full")

    # -- pod binding -----------------------------------------------------------
    def bind(self, namespace: str, name: str, binding: dict[str, Any]) -> dict[str, Any]:
        """``POST pods/{name}/binding``: set ``spec.nodeName`` once."""
        pods = lookup("", "v1", "pods")
        assert pods is not None
        pod = self.store.get(pods.key, namespace, name)
        if pod is None:
            raise not_found("pods", name)
        target = (binding or {}).get("target") or {}
        node = target.get("name")
        if not node:
            raise invalid("Binding", name, [FieldError("target.name", "FieldValueRequired", "")])
        if pod["metadata"].get("deletionTimestamp"):
            raise conflict("pods/binding", name, why=f"pod {name} is being deleted, cannot be assigned to a host")
        current = (pod.get("spec") or {}).get("nodeName")
        if current:
            raise conflict("pods/binding", name, why=f'pod {name} is already assigned to node "{current}"')
        new = copy.deepcopy(pod)
        new["spec"]["nodeName"] = node
        conds = new.setdefault("status", {}).setdefault("conditions", [])
        conds[:] = [c for c in conds if c.get("type") != "PodScheduled"]
        conds.append({"type": "PodScheduled", "status": "True", "lastProbeTime": None,
                      "lastTransitionTime": rfc3339()})
        self.store.replace(pods.key, new)
        return success_body(201)
