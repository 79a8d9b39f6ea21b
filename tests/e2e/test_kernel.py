"""``%%flame`` in a real kernel (jupyter_client) that believes it runs in the notebook pod."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from ..kernel_harness import Kernel
from .conftest import Cluster, unique

pytestmark = [pytest.mark.e2e, pytest.mark.kernel]


@pytest.fixture(scope="module")
def kernel(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Kernel]:
    k = Kernel(cwd=tmp_path_factory.mktemp("nb"), env=cluster.env())
    try:
        yield k
    finally:
        k.run("%flame shutdown --all")
        k.shutdown()


def test_a_flame_cell_runs_in_a_runner_pod_and_its_names_come_back(
    cluster: Cluster, kernel: Kernel
) -> None:
    pool = unique("cell")
    image = f" --image {cluster.image}" if cluster.image else ""
    assert kernel.run(f"%flame pool {pool}{image} --idle-shutdown-after 60").status == "ok"
    assert kernel.run("rows = [1, 2, 3]\nfactor = 7").status == "ok"
    res = kernel.run(
        f"%%flame --pool {pool} --quiet\n"
        "import os\n"
        "rows.append(4)\n"
        "total = sum(rows) * factor\n"
        "print('on', os.environ['POD_NAME'])\n"
        "os.environ['POD_NAME']\n"
    )
    assert res.status == "ok", res.traceback_text()
    assert kernel.value("total") == 70
    assert kernel.value("rows") == [1, 2, 3, 4]  # changed in place on the runner, merged back
    pod = (res.result or "").strip("'")
    assert res.stdout.strip() == f"on {pod}"
    assert pod.startswith(f"{cluster.pod_name}-flame-")
    assert [p.metadata.name for p in cluster.runner_pods(pool)] == [pod]
    assert kernel.run(f"%flame shutdown {pool}").status == "ok"
    assert cluster.wait_no_runner_pods(pool, 30.0) == []


def test_a_failing_cell_raises_the_remote_error_and_binds_nothing(
    cluster: Cluster, kernel: Kernel
) -> None:
    pool = unique("fail")
    image = f" --image {cluster.image}" if cluster.image else ""
    assert kernel.run(f"%flame pool {pool}{image}").status == "ok"
    res = kernel.run(f"%%flame --pool {pool} --quiet\nhalf = 1\n1 / 0\n")
    assert res.status == "error" and res.error is not None
    assert res.error["ename"] == "ZeroDivisionError"
    assert kernel.value("'half' in dir()") is False
    assert kernel.run(f"%flame shutdown {pool}").status == "ok"
    assert cluster.wait_no_runner_pods(pool, 30.0) == []
