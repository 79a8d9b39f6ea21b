"""Least privilege, proven: the product runs as the notebook's service account with exactly
the Role of deploy/rbac.yaml (the stand-in enforces RBAC), across boots, calls, failure paths,
log tails, live-state publishing, shutdown, sweeping and `jupyter flame cleanup`; the stand-in's
audit log (audit.k8s.io/v1 Events, as kube-apiserver's --audit-log-path writes) records every
request, and the test fails if one needed more than the Role grants, or if the Role grants a
verb nothing used."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from typing import Any

import pytest
import yaml

from jupyter_flame.backends.base import RunnerSpec
from jupyter_flame.backends.kubernetes.backend import KubernetesBackend
from jupyter_flame.backends.kubernetes.pod_template import RunnerPodTemplate
from jupyter_flame.errors import BootError
from jupyter_flame.pool.pool import Pool

from .sim_harness import Sim

ROOT = __import__('pathlib').Path(__file__).resolve().parent.parent

pytestmark = [pytest.mark.sim]

SA_USER = "system:serviceaccount:default:jupyter-flame-notebook"


def role_grants() -> set[tuple[str, str]]:
    """(verb, resource[/subresource]) the Role in deploy/rbac.yaml grants."""
    docs = [d for d in yaml.safe_load_all((ROOT / "deploy" / "rbac.yaml").read_text()) if d]
    role = next(d for d in docs if d["kind"] == "Role" and d["metadata"]["name"] == "jupyter-flame")
    return {(verb, res) for rule in role["rules"] for res in rule["resources"]
            for verb in rule["verbs"]}


def used(sim: Sim) -> list[dict[str, Any]]:
    lines = (sim.dir / "audit.log").read_text().splitlines()
    return [e for e in map(json.loads, lines) if e["user"]["username"] == SA_USER]


def key(event: dict[str, Any]) -> tuple[str, str]:
    ref = event["objectRef"]
    res = ref["resource"] + (f"/{ref['subresource']}" if ref.get("subresource") else "")
    return event["verb"], res


def backend(sim: Sim, **kw: Any) -> KubernetesBackend:
    return KubernetesBackend(namespace=sim.env["POD_NAMESPACE"], pod_name=sim.env["POD_NAME"],
                             pod_ip=sim.env["POD_IP"], kubeconfig=sim.env["KUBECONFIG"], **kw)


def test_every_request_is_within_the_role_and_every_grant_is_used(sim: Sim) -> None:
    # a working pool: boot, calls, live state published, shutdown
    b = backend(sim)
    pool = Pool("lp-ok", backend=b, boot_timeout=60)
    assert pool.call(os.getpid)
    assert pool.call(sum, [1, 2]) == 3
    pool.shutdown()
    # failure paths: an image that cannot be pulled (events, the pod's log tail), a runner
    # that cannot be scheduled (the scheduler's events), boot timeouts
    bad = backend(sim, template=RunnerPodTemplate(image="example.com/nope:404"))
    with Pool("lp-img", backend=bad, boot_timeout=30) as p, pytest.raises(BootError):
        p.call(os.getpid)
    wait = backend(sim)
    with Pool("lp-gpu", backend=wait, boot_timeout=3, spec=RunnerSpec(gpu=8)) as p, \
            pytest.raises(BootError):
        p.call(os.getpid)
    # leftovers: a backend closed without cleaning (as a crashed kernel would), then another
    # kernel's sweep and `jupyter flame cleanup` as the notebook
    left = backend(sim)
    orphan = Pool("lp-left", backend=left, boot_timeout=60)
    orphan.call(os.getpid)
    for b_ in (b, bad, wait):
        asyncio.run(b_.close())
    out = subprocess.run([sys.executable, "-m", "jupyter_flame.cli", "cleanup"],
                         env={**os.environ, **sim.env}, capture_output=True, text=True,
                         timeout=120)
    listing = subprocess.run([sys.executable, "-m", "jupyter_flame.cli", "list"],
                             env={**os.environ, **sim.env}, capture_output=True, text=True,
                             timeout=120)
    orphan.shutdown()
    asyncio.run(left.close())

    events = used(sim)
    assert events, "the audit log recorded nothing for the notebook's service account"
    forbidden = sorted({key(e) for e in events if e["responseStatus"]["code"] == 403})
    assert not forbidden, f"requests the Role does not allow: {forbidden}"
    grants = role_grants()
    outside = sorted({key(e) for e in events} - grants)
    assert not outside, f"requests outside deploy/rbac.yaml's Role: {outside}"
    unused = sorted(grants - {key(e) for e in events})
    assert not unused, (f"the Role grants what nothing used: {unused} (cleanup: {out.stdout} "
                        f"{out.stderr}; list: {listing.stdout} {listing.stderr})")
