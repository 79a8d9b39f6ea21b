"""``ipython_config.py`` and the kernel's command line set pool and magic defaults, through a
real kernel (the way a JupyterHub deployment ships them)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from kernel_harness import Kernel

pytestmark = [pytest.mark.kernel, pytest.mark.slow]

CONFIG = """
c = get_config()  # noqa
c.Pool.max = 3
c.Pool.idle_shutdown_after = 600
c.Pool.max_concurrency = 2
c.FlameMagics.default_backend = "local"
"""


def ipython_dir(tmp_path: Path, text: str) -> Path:
    profile = tmp_path / "ipython" / "profile_default"
    profile.mkdir(parents=True)
    (profile / "ipython_config.py").write_text(text)
    return tmp_path / "ipython"


@pytest.fixture
def configured(tmp_path: Path) -> Iterator[Kernel]:
    k = Kernel(cwd=tmp_path, env={"IPYTHONDIR": str(ipython_dir(tmp_path, CONFIG))})
    try:
        yield k
    finally:
        k.shutdown()


def test_ipython_config_sets_user_pools_and_the_magic_default_pool(configured: Kernel) -> None:
    k = configured
    res = k.run("from jupyter_flame import Pool\np = Pool()\nq = Pool(max=1)\n"
                "print(p.max, p.idle_shutdown_after, p.max_concurrency, q.max)")
    assert res.status == "ok", res.traceback_text()
    assert res.stdout.split() == ["3", "600.0", "2", "1"]  # the explicit max=1 keeps 1

    cell = k.run("%%flame\nimport os\nwhere = os.getpid()\n")
    assert cell.status == "ok", cell.traceback_text()
    opts = k.value("(lambda o: (o.max, o.idle_shutdown_after, o.max_concurrency))"
                   "(__import__('jupyter_flame.pool.pool', fromlist=['get_pool'])"
                   ".get_pool('default').options)")
    assert opts == (3, 600.0, 2)
    assert k.value("__import__('jupyter_flame.pool.pool', fromlist=['x'])"
                   ".get_pool('default').backend.name") == "local"

    shown = k.run("%flame config")
    assert shown.status == "ok", shown.traceback_text()
    text = shown.stdout
    assert "Pool 'default':" in text
    assert "max = 3   [c.Pool.max (config file (" in text and "ipython_config.py" in text
    assert "default_backend = 'local'   [c.FlameMagics.default_backend (config file" in text
    assert "min = 0   [default]" in text
    assert k.run("p.shutdown(); q.shutdown()").status == "ok"


def test_command_line_config_and_the_magics_own_default(tmp_path: Path) -> None:
    k = Kernel(cwd=tmp_path, env={"IPYTHONDIR": str(ipython_dir(tmp_path, "c = get_config()\n"))},
               arguments=["--Pool.idle_shutdown_after=42"])
    try:
        res = k.run("%%flame\nx = 1\n")
        assert res.status == "ok", res.traceback_text()
        text = k.run("%flame config").stdout
        assert "idle_shutdown_after = 42.0   [c.Pool.idle_shutdown_after (command line " \
               "(--Pool.idle_shutdown_after))]" in text
        # the magic's pools default to FlameMagics.default_max when c.Pool.max is unset
        assert "max = 4   [FlameMagics.default_max]" in text
        assert k.run("%config Pool.max = 2").status == "ok"  # a live %config applies to new pools
        assert k.value("__import__('jupyter_flame').Pool(max_concurrency=1).max") == 2
    finally:
        k.shutdown()


def test_a_bad_configured_value_fails_the_cell_with_a_clear_error(tmp_path: Path) -> None:
    config = "c = get_config()\nc.Pool.max = 'four'\n"
    k = Kernel(cwd=tmp_path, env={"IPYTHONDIR": str(ipython_dir(tmp_path, config))})
    try:
        res = k.run("%%flame\nx = 1\n")
        assert res.status == "error"
        err = res.error
        assert err is not None and err["ename"] == "ConfigError"
        assert "Pool option max='four'" in err["evalue"] and "ipython_config.py" in err["evalue"]
        assert "expected an int" in err["evalue"]
        assert k.run("'x' in dir()").result == "False"  # nothing ran, nothing landed
    finally:
        k.shutdown()
