"""Configuration through traitlets: precedence, errors that name the option, provenance, the
generated reference (pure: no runner is started)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from traitlets import Int
from traitlets.config import Config

from jupyter_flame import Pool
from jupyter_flame.config import FlameConfigurable, check_values, describe_options, render_rows
from jupyter_flame.errors import ConfigError
from jupyter_flame.pool.pool import LIMITS

ROOT = Path(__file__).resolve().parents[1]


def config(**sections: dict[str, Any]) -> Config:
    return Config({name: Config(values) for name, values in sections.items()})


@pytest.fixture
def pools() -> Any:
    made: list[Pool] = []

    def make(*args: Any, **kwargs: Any) -> Pool:
        pool = Pool(*args, **kwargs)
        made.append(pool)
        return pool

    yield make
    for pool in made:
        pool.shutdown()


@pytest.mark.parametrize(("cfg", "keywords", "option", "expected", "source"), [
    ({}, {}, "max", 1, "default"),
    ({"max": 4}, {}, "max", 4, "c.Pool.max (config)"),
    ({"max": 4}, {"max": 1}, "max", 1, "keyword"),  # an explicit keyword wins, even the default
    ({"idle_shutdown_after": 600}, {}, "idle_shutdown_after", 600.0, "c.Pool.idle_shutdown_after (config)"),
    ({"idle_shutdown_after": 600}, {"idle_shutdown_after": None}, "idle_shutdown_after", None, "keyword"),
    ({"max_concurrency": 3}, {}, "max_concurrency", 3, "c.Pool.max_concurrency (config)"),
    ({"timeout": None}, {"timeout": 5}, "timeout", 5.0, "keyword"),
    ({"single_use": True}, {}, "single_use", True, "c.Pool.single_use (config)"),
    ({"boot_timeout": 12}, {}, "boot_timeout", 12.0, "c.Pool.boot_timeout (config)"),
])
def test_precedence(pools: Any, cfg: dict[str, Any], keywords: dict[str, Any], option: str,
                    expected: Any, source: str) -> None:
    pool = pools(config=config(Pool=cfg), **keywords)
    assert getattr(pool, option) == expected
    assert getattr(pool.options, option) == expected  # the core runs with the same value
    assert pool.option_source(option) == source


@pytest.mark.parametrize(("cfg", "keywords", "needles"), [
    ({"max": "four"}, {}, ["Pool option max='four'", "c.Pool.max", "expected an int"]),
    ({}, {"max": "four"}, ["Pool option max='four'", "the keyword max=", "expected an int"]),
    ({"idle_shutdown_after": "soon"}, {}, ["idle_shutdown_after='soon'", "a float or None"]),
    ({"single_use": "yes"}, {}, ["single_use='yes'", "a boolean"]),
    ({"max": 0}, {}, ["Pool option max=0", "c.Pool.max", "integer >= 1"]),
    ({"min": 3}, {}, ["Pool option min=3", "must not exceed max (1)"]),
    ({"heartbeat_interval": 20}, {}, ["parent_timeout=10.0", "exceed heartbeat_interval"]),
    ({"backend": 7}, {}, ["backend=7", "a Backend or a unicode string"]),
])
def test_bad_values_name_option_value_and_fix(cfg: dict[str, Any], keywords: dict[str, Any],
                                              needles: list[str]) -> None:
    from jupyter_flame.pool.pool import all_pools

    before = {p.name for p in all_pools()}
    with pytest.raises(ConfigError) as info:
        Pool(config=config(Pool=cfg), **keywords)
    for needle in needles:
        assert needle in str(info.value)
    assert {p.name for p in all_pools()} == before  # nothing half-made is left registered


def test_a_keyword_replaces_a_bad_configured_value(pools: Any) -> None:
    assert pools(config=config(Pool={"max": "four"}), max=2).max == 2


def test_an_unknown_backend_names_the_installed_ones() -> None:
    with pytest.raises(ConfigError, match=r"'nowhere'.*'kubernetes', 'local'"):
        Pool(config=config(Pool={"backend": "nowhere"}))


def test_assigning_a_limit_resizes_and_a_bad_one_changes_nothing(pools: Any) -> None:
    pool = pools(max=2)
    pool.max = 5
    assert pool.options.max == 5 and pool.max == 5
    with pytest.raises(ConfigError, match="max=0"):
        pool.max = 0
    assert pool.options.max == 5 and pool.max == 5
    pool.resize(max=3)
    assert pool.max == 3  # resize keeps the trait in step
    for fixed, value in (("spec", None), ("name", "other"), ("parent_timeout", 30.0)):
        before = getattr(pool, fixed)
        with pytest.raises(ConfigError, match=f"Pool.{fixed} is fixed"):
            setattr(pool, fixed, value)
        assert getattr(pool, fixed) == before


def test_every_keyword_is_a_documented_trait() -> None:
    import inspect

    from jupyter_flame.pool.pool import PoolKeywords

    traits = Pool.class_traits(config=True)
    keywords = set(PoolKeywords.__annotations__) - {"config", "_fallbacks"}
    keywords |= {p for p in inspect.signature(Pool).parameters if p != "options"}
    assert keywords == set(traits)
    for name in set(LIMITS):
        assert name in traits
    for name, trait in traits.items():
        assert trait.help, f"Pool.{name} has no help text"


class Demo(FlameConfigurable):
    size = Int(2, help="a size").tag(config=True)


def test_fallbacks_yield_to_config_and_keywords() -> None:
    fb = {"size": (9, "Demo.fallback")}
    assert Demo(config=Config(), _fallbacks=fb).size == 9
    assert Demo(config=Config(), _fallbacks=fb).option_source("size") == "Demo.fallback"
    assert Demo(config=config(Demo={"size": 4}), _fallbacks=fb).size == 4
    assert Demo(config=Config(), _fallbacks=fb, size=1).size == 1


def test_check_values_reports_the_configured_origin() -> None:
    with pytest.raises(ConfigError, match=r"Demo option size='x' \(from c.Demo.size"):
        check_values(Demo, config(Demo={"size": "x"}))


def test_describe_options_lists_every_option_with_value_and_source() -> None:
    rows = describe_options(Pool, config(Pool={"max": 4}))
    by_name = {r.name: r for r in rows}
    assert set(by_name) == set(Pool.class_traits(config=True))
    assert by_name["max"].value == 4 and by_name["max"].source.startswith("c.Pool.max")
    assert by_name["min"].value == 0 and by_name["min"].source == "default"
    text = render_rows(rows)
    assert "max = 4   [c.Pool.max (config)]" in text and "Most runners at once." in text


def test_the_committed_configuration_reference_is_current() -> None:
    from jupyter_flame.notebook.reference import configuration_reference

    committed = (ROOT / "docs" / "configuration.md").read_text()
    assert committed == configuration_reference(), (
        "docs/configuration.md is stale: regenerate it with "
        "`jupyter flame config --reference > docs/configuration.md`")


def test_the_reference_covers_every_configurable_and_magic_option() -> None:
    from jupyter_flame.notebook.reference import configuration_reference

    text = configuration_reference()
    for needle in ("`c.Pool.max`", "`c.Pool.idle_shutdown_after`", "`c.FlameMagics.default_backend`",
                   "`c.KubernetesBackend.namespace`", "`c.LocalBackend.", "--memory", "--bg",
                   "--max-concurrency"):
        assert needle in text


def test_the_deployment_config_files_are_valid_and_agree() -> None:
    import yaml
    from traitlets.config.loader import PyFileConfigLoader

    from jupyter_flame.notebook.magic import FlameMagics
    from jupyter_flame.notebook.settings import backend_classes

    path = ROOT / "deploy" / "ipython_config.py"
    loaded = PyFileConfigLoader(path.name, path=str(path.parent)).load_config()
    classes = {cls.__name__: cls for cls in (Pool, FlameMagics, *backend_classes())}
    assert set(loaded) <= set(classes)
    for section, values in loaded.items():
        unknown = set(values) - set(classes[section].class_traits(config=True))
        assert not unknown, f"deploy/ipython_config.py sets unknown options {section}.{unknown}"
        check_values(classes[section], loaded)
    values = yaml.safe_load((ROOT / "deploy" / "z2jh-values.yaml").read_text())
    mounted = values["singleuser"]["extraFiles"]["jupyter-flame-ipython-config"]
    assert mounted["mountPath"] == "/etc/ipython/ipython_config.py"
    assert mounted["stringData"] == path.read_text()


@pytest.mark.parametrize(("cfg", "keywords", "option", "expected", "source"), [
    ({}, {}, "env", {}, "default"),
    ({"env": {"A": "1"}}, {}, "env", {"A": "1"}, "c.LocalBackend.env (config)"),
    ({"env": {"A": "1"}}, {"env": {"B": "2"}}, "env", {"B": "2"}, "keyword"),
    ({"log_dir": "/tmp/flame-logs"}, {}, "log_dir", "/tmp/flame-logs",
     "c.LocalBackend.log_dir (config)"),
    ({}, {"cwd": Path("/tmp")}, "cwd", "/tmp", "keyword"),  # paths become strings
])
def test_local_backend_options(cfg: dict[str, Any], keywords: dict[str, Any], option: str,
                               expected: Any, source: str) -> None:
    from jupyter_flame.backends.local import LocalBackend

    backend = LocalBackend(config=config(LocalBackend=cfg), **keywords)
    assert getattr(backend, option) == expected
    assert backend.option_source(option) == source


def test_a_backend_option_set_through_the_backend_base_section() -> None:
    from jupyter_flame.backends.local import LocalBackend

    # c.Backend.* applies to every backend; c.LocalBackend.* wins over it
    assert LocalBackend(config=config(Backend={"log_dir": "/a"})).log_dir == "/a"
    both = config(Backend={"log_dir": "/a"}, LocalBackend={"log_dir": "/b"})
    assert LocalBackend(config=both).log_dir == "/b"


def test_a_bad_local_backend_option_names_it() -> None:
    from jupyter_flame.backends.local import LocalBackend

    with pytest.raises(ConfigError, match=r"LocalBackend option env=\['A'\] \(from c.LocalBackend.env"):
        LocalBackend(config=config(LocalBackend={"env": ["A"]}))


@pytest.mark.parametrize("name", ["", "  ", "x "])
def test_pool_refuses_an_empty_name_and_registers_nothing(name: str) -> None:
    from jupyter_flame.pool import all_pools

    before = list(all_pools())
    with pytest.raises(ConfigError, match="is not a pool name"):
        Pool(name)
    assert list(all_pools()) == before
