"""Node agents of the local Kubernetes stand-in: kubelet and scheduler in one process.

The agents talk to the API server only through the Kubernetes API (the official
``kubernetes`` client), so they run unchanged against a real kube-apiserver.
Run them with ``python -m jupyter_flame.sim.agent``; ``jupyter flame sim up``
starts one for all nodes.

Modules, pure ones first:

- :mod:`.quantity` - Kubernetes quantities as exact numbers.
- :mod:`.scheduler` - filters (resources, nodeSelector, node affinity, taints)
  and kube-scheduler's ``FailedScheduling`` wording.
- :mod:`.images` - the image pull allow-list.
- :mod:`.devices` - pod IP (``127.0.0.x``) and GPU id allocators.
- :mod:`.podenv` - container environment (``fieldRef``, ``secretKeyRef``,
  ``envFrom``, ``$(VAR)``) and command.
- :mod:`.podstatus` - container states, pod phase and conditions.
- :mod:`.node` - Node objects and heartbeat status.
- :mod:`.api` - the client wrapper (dicts in, dicts out).
- :mod:`.events` - event recording, aggregated.
- :mod:`.process` - container processes: sessions, logs, reaping by pidfd.
- :mod:`.runtime` - pull, configure, start one container.
- :mod:`.kubelet` - the per-pod state machine.
- :mod:`.agent` - the loop: watches, scheduling, status writes.
- :mod:`.rest` - a stdlib REST client used by ``sim up``.
- :mod:`.certs` - the kubelet API's CA, serving and client certificates.
- :mod:`.logtimes` - when each container log line was written (``timestamps``).
- :mod:`.logserver` - the kubelet API's ``/containerLogs`` over HTTPS (``kubectl logs``).
"""
