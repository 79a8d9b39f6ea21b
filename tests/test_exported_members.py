"""The public API is exactly ``jupyter_flame.__all__`` (STYLE.md convention 1)."""

from __future__ import annotations

import subprocess
import sys

import jupyter_flame

EXPECTED = {
    "Backend",
    "BackendError",
    "BootError",
    "ChannelAuthError",
    "ConfigError",
    "FlameError",
    "FlameJob",
    "FlameTimeoutError",
    "KubernetesBackend",
    "LifecycleEvent",
    "LocalBackend",
    "Pool",
    "RemoteError",
    "RunnerLostError",
    "RunnerPodTemplate",
    "RunnerSpec",
    "SerializationError",
}


def test_all_is_the_public_api() -> None:
    assert set(jupyter_flame.__all__) == EXPECTED
    for name in jupyter_flame.__all__:
        member = getattr(jupyter_flame, name)
        assert member.__module__.startswith("jupyter_flame"), name


def test_error_tree() -> None:
    from jupyter_flame import errors

    for name in (
        "BootError",
        "RunnerLostError",
        "RemoteError",
        "SerializationError",
        "FlameTimeoutError",
        "ChannelAuthError",
        "BackendError",
        "ConfigError",
    ):
        assert issubclass(getattr(errors, name), errors.FlameError)


def test_load_ext_is_light() -> None:
    """Loading the extension must not import the heavy parts (kubernetes, cloudpickle)."""
    code = (
        "import sys, IPython\n"
        "from IPython.testing.globalipapp import start_ipython\n"
        "ip = start_ipython()\n"
        "ip.run_line_magic('load_ext', 'jupyter_flame')\n"
        "heavy = [m for m in ('kubernetes', 'cloudpickle', 'jupyter_flame.channel.channel', 'jupyter_flame.pool.pool') "
        "if m in sys.modules]\n"
        "print(heavy)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "[]"
