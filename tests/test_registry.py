"""Backends by name through the ``jupyter_flame.backends`` entry points, a third-party one
included (installed as a real distribution on ``sys.path``)."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import pytest

from jupyter_flame.backends.kubernetes import KubernetesBackend
from jupyter_flame.backends.local import LocalBackend
from jupyter_flame.backends.registry import backend_class, backend_names, make_backend
from jupyter_flame.errors import ConfigError


def install_backend(site: Path, name: str = "elsewhere", target: str = "elsewhere_backend:Elsewhere",
                    code: str | None = None) -> Path:
    """A distribution declaring backend ``name`` (dist-info with entry_points.txt)."""
    info = site / "elsewhere_backend-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: elsewhere-backend\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(f"[jupyter_flame.backends]\n{name} = {target}\n")
    (site / "elsewhere_backend.py").write_text(code if code is not None else textwrap.dedent("""
        from jupyter_flame.backends.local import LocalBackend

        class Elsewhere(LocalBackend):
            name = "elsewhere"
    """))
    return site


@pytest.mark.parametrize(("name", "cls"), [("local", LocalBackend),
                                           ("kubernetes", KubernetesBackend)])
def test_the_builtin_backends_are_found_by_name(name: str, cls: type) -> None:
    assert name in backend_names()
    assert backend_class(name) is cls


def test_an_instance_passes_through_and_none_means_the_default() -> None:
    backend = LocalBackend()
    assert make_backend(backend, "kubernetes") is backend
    assert isinstance(make_backend(None, "local"), LocalBackend)


def test_an_unknown_name_lists_the_installed_backends() -> None:
    with pytest.raises(ConfigError) as info:
        make_backend("nowhere", "local")
    text = str(info.value)
    assert "'nowhere'" in text and "'kubernetes'" in text and "'local'" in text


@pytest.mark.parametrize(("target", "code", "needle"), [
    ("elsewhere_backend:Missing", "", "could not be loaded"),
    ("elsewhere_backend:NotOne", "class NotOne: pass\n", "is not a Backend subclass"),
])
def test_a_broken_entry_point_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                       target: str, code: str, needle: str) -> None:
    monkeypatch.syspath_prepend(str(install_backend(tmp_path, target=target, code=code)))
    monkeypatch.delitem(sys.modules, "elsewhere_backend", raising=False)
    with pytest.raises(ConfigError, match=needle):
        backend_class("elsewhere")


def test_a_third_party_backend_is_found_and_runs(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    from jupyter_flame import Pool

    monkeypatch.syspath_prepend(str(install_backend(tmp_path)))
    monkeypatch.delitem(sys.modules, "elsewhere_backend", raising=False)
    assert "elsewhere" in backend_names()
    with Pool(backend="elsewhere") as pool:
        assert pool.backend.name == "elsewhere"
        assert pool.call(pow, 2, 5) == 32


@pytest.mark.kernel
@pytest.mark.slow
def test_a_cell_can_use_a_third_party_backend(tmp_path: Path) -> None:
    import os

    from kernel_harness import Kernel

    site = install_backend(tmp_path / "site")
    path = os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])
    k = Kernel(cwd=tmp_path, env={"PYTHONPATH": path})
    try:
        res = k.run("%%flame --backend elsewhere\nimport os\nx = os.getpid()\n")
        assert res.status == "ok", res.traceback_text()
        status = k.run("%flame status").text
        assert "[elsewhere;" in status
    finally:
        k.shutdown()
