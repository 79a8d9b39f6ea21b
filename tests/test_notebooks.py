"""Every tutorial in notebooks/ runs top to bottom in a fresh kernel (cells meant to fail carry
the ``raises-exception`` tag); the Kubernetes ones (``metadata.jupyter_flame.environment ==
"stand-in"``) run in a kernel started with the local stand-in's ``notebook.env``, exactly as a
user on a laptop would (and as a kernel in a real notebook pod is). Committed notebooks carry no
outputs."""

from __future__ import annotations

import os
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9]*.ipynb"))

pytestmark = pytest.mark.kernel


def _stand_in(nb: nbformat.NotebookNode) -> bool:
    return bool(nb.metadata.get("jupyter_flame", {}).get("environment") == "stand-in")


def test_the_five_tutorials_are_there() -> None:
    assert [p.name for p in NOTEBOOKS] == [
        "01-quickstart.ipynb", "02-pools-and-parallelism.ipynb", "03-kubernetes.ipynb",
        "04-gpus.ipynb", "05-troubleshooting.ipynb"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_committed_notebook_has_no_outputs(path: Path) -> None:
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    dirty = [i for i, c in enumerate(nb.cells) if c.cell_type == "code"
             and (c.get("outputs") or c.get("execution_count") is not None)]
    assert not dirty, f"{path.name}: cells {dirty} carry outputs; clear them before committing"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_runs(path: Path, request: pytest.FixtureRequest) -> None:
    nb = nbformat.read(path, as_version=4)
    env = dict(os.environ)
    if _stand_in(nb):
        env.update(request.getfixturevalue("sim").env)
    else:
        for key in ("POD_NAME", "POD_NAMESPACE", "POD_IP", "KUBECONFIG"):
            env.pop(key, None)  # local runners, as on a laptop
    client = NotebookClient(nb, timeout=180, kernel_name="python3",
                            resources={"metadata": {"path": str(path.parent)}})
    client.execute(env=env)
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
              if o.get("output_type") == "error"
              and "raises-exception" not in c.get("metadata", {}).get("tags", [])]
    assert not errors, errors
    expected = [i for i, c in enumerate(nb.cells) if c.cell_type == "code"
                and "raises-exception" in c.get("metadata", {}).get("tags", [])]
    raised = [i for i in expected if any(o.get("output_type") == "error"
                                         for o in nb.cells[i].get("outputs", []))]
    assert raised == expected, "cells tagged raises-exception that did not raise"
