"""A stand-in Kubernetes API server for tests and demos (no cluster needed).

Speaks the real Kubernetes REST API on 127.0.0.1 for the kinds jupyter-flame
uses (DESIGN section 5).  Start it with
``python -m jupyter_flame.sim.apiserver --port 0 --state-dir DIR`` or
:func:`~jupyter_flame.sim.apiserver.launch.start_apiserver`; when ready it
writes ``DIR/apiserver.json`` (``url``, ``admin_token``, ``pid``, ``ca_file``,
``kubeconfig``, ``port``) and an admin ``DIR/kubeconfig``.

It serves HTTPS with a CA generated at start (``DIR/pki/ca.crt``): kubectl
will not send bearer tokens over plain HTTP.

Conventions shared with the node agents (which use only the Kubernetes API):

* container logs are files ``DIR/logs/<namespace>/<pod>/<container>.log``
  (``<container>.previous.log`` for ``?previous=true``), served by
  ``GET pods/{name}/log`` (``container``, ``tailLines``, ``limitBytes``,
  ``follow``; following stops when the container or pod terminates or the
  pod goes);
* the state dir reaches agents as ``--state-dir``.

Module map: :mod:`.store` (objects, resourceVersion, watch history),
:mod:`.registry` (create/update/patch semantics), :mod:`.deletion` (grace,
finalizers, propagation, namespaces), :mod:`.gc`, :mod:`.selectors`,
:mod:`.patch`, :mod:`.rbac`, :mod:`.tokens`, :mod:`.validation`,
:mod:`.quantity`, :mod:`.resources` (kinds and discovery), :mod:`.openapi`,
:mod:`.tables`, :mod:`.protobuf`, :mod:`.routes`, :mod:`.streams`,
:mod:`.state`, :mod:`.server`, :mod:`.tls`, :mod:`.kubeconfig`,
:mod:`.launch`; fidelity to a real server: :mod:`.schemas` (upstream schemas),
:mod:`.openapi` and :mod:`.openapi_pb` (v2/v3 documents), :mod:`.discovery`
(aggregated), :mod:`.decoding` (unknown fields, types), :mod:`.managed`
(managedFields, apply conflicts), :mod:`.writes` (per-request context);
workloads: :mod:`.workloads`, :mod:`.controller`, :mod:`.deployment`,
:mod:`.replicaset`, :mod:`.workload_spec`.
"""

from __future__ import annotations

from .launch import ApiServerProcess, start_apiserver

__all__ = ["ApiServerProcess", "start_apiserver"]
