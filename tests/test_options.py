"""Table-driven tests of %%flame / %flame pool option parsing (pure)."""

from __future__ import annotations

import pytest

from jupyter_flame.backends.base import RunnerSpec
from jupyter_flame.errors import ConfigError
from jupyter_flame.notebook.options import parse_cell_line, parse_pool_args


@pytest.mark.parametrize(
    ("line", "spec"),
    [
        ("", RunnerSpec()),
        ("--gpu 1", RunnerSpec(gpu=1)),
        (
            "--gpu 2 --gpu-type NVIDIA-H100-80GB-HBM3",
            RunnerSpec(gpu=2, gpu_type="NVIDIA-H100-80GB-HBM3"),
        ),
        ("--cpu 500m --memory 24Gi", RunnerSpec(cpu="500m", memory="24Gi")),
        ("--cpu 2 --memory 1e9", RunnerSpec(cpu="2", memory="1e9")),
        # the grammar RunnerPodTemplate accepts (kubernetes.utils.parse_quantity) is the magic's
        ("--memory 1E9", RunnerSpec(memory="1E9")),
        ("--cpu 1.5 --memory 1.5Gi", RunnerSpec(cpu="1.5", memory="1.5Gi")),
        ("--cpu 250m --memory 500M", RunnerSpec(cpu="250m", memory="500M")),
        (
            "--node-selector pool=gpu --node-selector zone=a",
            RunnerSpec(node_selector=(("pool", "gpu"), ("zone", "a"))),
        ),
        (
            "--toleration nvidia.com/gpu:NoSchedule",
            RunnerSpec(tolerations=(("nvidia.com/gpu", None, "NoSchedule"),)),
        ),
        (
            "--toleration dedicated=ml:NoExecute",
            RunnerSpec(tolerations=(("dedicated", "ml", "NoExecute"),)),
        ),
        ("--env A=1 --env B=x=y", RunnerSpec(env=(("A", "1"), ("B", "x=y")))),
        ("--volume data:/data", RunnerSpec(volumes=(("data", "/data"),))),
        ("--image python:3.11", RunnerSpec(image="python:3.11")),
    ],
)
def test_cell_spec(line: str, spec: RunnerSpec) -> None:
    opts = parse_cell_line(line)
    assert opts.spec == spec
    assert opts.shaped is (spec != RunnerSpec())


def test_cell_flags() -> None:
    opts = parse_cell_line(
        "--pool big --bg --quiet --skip fh --skip sock --timeout 2.5 --backend local"
    )
    assert (opts.pool, opts.bg, opts.quiet, opts.skip, opts.timeout, opts.backend) == (
        "big",
        True,
        True,
        ("fh", "sock"),
        2.5,
        "local",
    )


@pytest.mark.parametrize(
    ("line", "needle"),
    [
        ("--gpu -1", "--gpu '-1'"),
        ("--gpu two", "--gpu 'two'"),
        ("--cpu lots", "--cpu 'lots'"),
        ("--memory 24GB", "--memory '24GB'"),
        ("--node-selector pool", "--node-selector 'pool'"),
        ("--toleration gpu", "--toleration 'gpu'"),
        ("--toleration gpu:Sometimes", "EFFECT one of"),
        ("--env =1", "--env '=1'"),
        ("--env 1A=x", "'1A'"),
        ("--volume data", "--volume 'data'"),
        ("--volume data:relative", "absolute"),
        ("--timeout 0", "--timeout '0'"),
        ("--timeout soon", "--timeout 'soon'"),
        ("--backend cloud", "--backend 'cloud' is not an installed backend: use one of "
                            "kubernetes, local"),
        ("--memory=-1Gi", "--memory '-1Gi'"),
        ("--cpu 1Q", "--cpu '1Q'"),
        ("--frobnicate", "unrecognized arguments"),
    ],
)
def test_cell_errors_name_option_value_and_fix(line: str, needle: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_cell_line(line)
    assert needle in str(info.value)


@pytest.mark.parametrize(
    ("args", "limits"),
    [
        (["p"], {}),
        (["p", "--min", "1", "--max", "4"], {"min": 1, "max": 4}),
        (
            ["p", "--max-concurrency", "3", "--single-use"],
            {"max_concurrency": 3, "single_use": True},
        ),
        (["p", "--idle-shutdown-after", "never"], {"idle_shutdown_after": None}),
        (
            ["p", "--idle-shutdown-after", "10", "--boot-timeout", "5", "--timeout", "60"],
            {"idle_shutdown_after": 10.0, "boot_timeout": 5.0, "timeout": 60.0},
        ),
    ],
)
def test_pool_args(args: list[str], limits: dict[str, object]) -> None:
    parsed = parse_pool_args(args)
    assert parsed.name == "p"
    assert parsed.limits == limits


@pytest.mark.parametrize(
    "args", [["p", "--max", "0"], ["p", "--min", "-1"], ["p", "--max-concurrency", "x"], []]
)
def test_pool_arg_errors(args: list[str]) -> None:
    with pytest.raises(ConfigError):
        parse_pool_args(args)


@pytest.mark.parametrize("line", ["--pool ''", "--pool ' '", "--pool ' train'"])
def test_an_empty_or_padded_pool_name_is_refused(line: str) -> None:
    with pytest.raises(ConfigError, match="is not a pool name"):
        parse_cell_line(line)


def test_pool_command_refuses_an_empty_name() -> None:
    with pytest.raises(ConfigError, match="%flame pool NAME: '' is not a pool name"):
        parse_pool_args([""])
