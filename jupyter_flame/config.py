"""Configuration: the traitlets options of pools, backends and the magic.

Every configurable class (``Pool``, ``LocalBackend``, ``KubernetesBackend``, ``FlameMagics``)
derives from :class:`FlameConfigurable`, a :class:`traitlets.config.Configurable` that

* reads the running IPython's configuration (``ipython_config.py``, the profile, ``--Pool.max=4``
  on the command line, ``%config Pool.max = 4``) when no ``config=`` is given, so a default set
  there applies to every pool of that kernel, the magic's included; outside IPython (scripts)
  there is no configuration and the keyword defaults apply;
* lets an explicit keyword win over configuration (``Pool(max=1)`` keeps 1 whatever
  ``c.Pool.max`` says);
* turns a bad value into :class:`~jupyter_flame.errors.ConfigError` naming the option, the
  value, where it came from and what is allowed;
* remembers where each value came from, for ``%flame config``.

traitlets is Jupyter's own configuration system (the one ``ipython_config.py`` feeds); this
module only adds the error wording and the provenance.
"""

from __future__ import annotations

from abc import ABCMeta
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from traitlets import HasTraits, MetaHasTraits, TraitError, TraitType
from traitlets.config import Config, Configurable
from traitlets.config.loader import DeferredConfig, LazyConfigValue

from jupyter_flame.errors import ConfigError

__all__ = ["FlameConfigurable", "FlameConfigurableMeta", "OptionRow", "check_values", "given",
           "current_config", "describe_options", "reference_markdown", "render_rows"]

KEYWORD = "keyword"
DEFAULT = "default"


class FlameConfigurableMeta(MetaHasTraits, ABCMeta):
    """The metaclass of configurable classes with abstract methods (``Backend``)."""


def current_config() -> Config:
    """The configuration of the running IPython (a copy), or an empty one outside IPython."""
    try:
        from IPython.core.getipython import get_ipython
    except ImportError:  # pragma: no cover - IPython is a dependency
        return Config()
    shell = get_ipython()
    if shell is None:
        return Config()
    return Config(shell.config)


def _sections(cls: type) -> list[str]:
    """The config sections that apply to ``cls``: its own name and its configurable bases',
    most specific first (``c.KubernetesBackend`` beats ``c.Backend``)."""
    return [k.__name__ for k in cls.__mro__
            if isinstance(k, type) and issubclass(k, Configurable) and k is not Configurable
            and k is not FlameConfigurable]


def _configured(cls: type, config: Mapping[str, Any], name: str) -> tuple[bool, Any, str]:
    """Whether ``config`` sets option ``name`` of ``cls``, its value and its ``c.`` spelling."""
    for section in _sections(cls):
        values = config.get(section)
        if isinstance(values, Mapping) and name in values:
            value = values[name]
            trait = cls.class_traits().get(name) if issubclass(cls, HasTraits) else None
            if isinstance(value, DeferredConfig) and trait is not None:
                try:  # a command-line string (--Pool.max=4): parse it as traitlets will
                    value = value.get_value(trait)
                except Exception:
                    pass  # left as given: the check reports it
            return True, value, f"{section}.{name}"
    return False, None, ""


def _config_origin(key: str) -> str:
    """Where the running IPython got ``c.<key>``: the command line or its config files."""
    try:
        from IPython.core.application import BaseIPythonApplication
    except ImportError:  # pragma: no cover
        return "config"
    if not BaseIPythonApplication.initialized():
        return "config"
    app = BaseIPythonApplication.instance()
    section, _, name = key.partition(".")
    cli = getattr(app, "cli_config", None) or {}
    if name in (cli.get(section) or {}):
        return f"command line (--{key})"
    files = [str(f) for f in getattr(app, "loaded_config_files", [])]
    if files:
        return f"config file ({', '.join(files)})"
    return "config"


def _allowed(trait: TraitType[Any, Any]) -> str:
    info: str = trait.info()
    if trait.allow_none and not info.endswith("None"):
        info += " or None"
    return info


def _probe_error(cls: type[HasTraits], name: str, value: Any) -> TraitError | None:
    """Validate ``value`` for trait ``name`` of ``cls`` without building an instance."""
    trait = cls.class_traits().get(name)
    if trait is None or isinstance(value, (DeferredConfig, LazyConfigValue)):
        return None
    probe = HasTraits.__new__(cls)
    try:
        trait._validate(probe, value)
    except TraitError as exc:
        return exc
    return None


def check_values(cls: type[HasTraits], config: Mapping[str, Any],
                 explicit: Mapping[str, Any] | None = None) -> None:
    """Raise :class:`ConfigError` for the first option of ``cls`` that ``explicit`` (keywords)
    or ``config`` sets to a value its trait refuses, naming the option, the value, where it
    came from and what is allowed. A keyword overrides configuration, so a bad configured
    value it replaces is not an error."""
    explicit = explicit or {}
    for name, trait in sorted(cls.class_traits(config=True).items()):
        if name in explicit:
            value, origin = explicit[name], f"the keyword {name}="
        else:
            found, value, key = _configured(cls, config, name)
            if not found:
                continue
            origin = f"c.{key}, {_config_origin(key)}"
        error = _probe_error(cls, name, value)
        if error is not None:
            raise ConfigError(
                f"{cls.__name__} option {name}={value!r} (from {origin}) is invalid: expected "
                f"{_allowed(trait)}. Change that value and try again.") from None


def _without(config: Config, cls: type, names: Iterable[str]) -> Config:
    """A copy of ``config`` without the options ``names`` of ``cls``."""
    names = set(names)
    sections = [s for s in _sections(cls) if names & set(config.get(s) or ())]
    if not sections:
        return config
    copy = Config(config)
    for section in sections:
        copy[section] = Config({k: v for k, v in config[section].items() if k not in names})
    return copy


def given(**options: Any) -> dict[str, Any]:
    """The keywords a caller really gave, for constructors whose ``None`` means "not given":
    ``super().__init__(**given(a=a, b=b))`` lets configuration fill in the rest."""
    return {name: value for name, value in options.items() if value is not None}


class FlameConfigurable(Configurable):
    """A configurable whose explicit keywords win over configuration; see the module doc.

    ``_fallbacks`` maps options to ``(value, source)`` used when neither a keyword nor the
    configuration sets them (the magic's own defaults for the pools it makes).
    """

    def __init__(self, *, _fallbacks: Mapping[str, tuple[Any, str]] | None = None,
                 **kwargs: Any) -> None:
        config = kwargs.pop("config", None)
        if config is None:
            config = current_config()
        cls = type(self)
        check_values(cls, config, kwargs)
        config = _without(config, cls, kwargs)  # traitlets loads config first: drop what
        self._explicit = frozenset(kwargs)  # a keyword replaces, so a bad value there is moot
        self._fallback_sources: dict[str, str] = {}
        for name, (value, source) in (_fallbacks or {}).items():
            if name not in kwargs and not _configured(cls, config, name)[0]:
                kwargs[name] = value
                self._fallback_sources[name] = source
        try:
            super().__init__(config=config, **kwargs)
        except TraitError as exc:  # a cross-check between options (an @validate method)
            raise ConfigError(f"{cls.__name__}: {exc}") from None

    def option_source(self, name: str) -> str:
        """Where the value of option ``name`` came from: keyword, config (which) or default."""
        if name in self._explicit:
            return KEYWORD
        if name in self._fallback_sources:
            return self._fallback_sources[name]
        found, _, key = _configured(type(self), self.config, name)
        if found:
            return f"c.{key} ({_config_origin(key)})"
        return DEFAULT

    def option_values(self) -> dict[str, Any]:
        """Every configurable option of this object and its current value."""
        return {name: getattr(self, name) for name in sorted(self.class_traits(config=True))}


@dataclass(frozen=True)
class OptionRow:
    """One option as ``%flame config`` shows it."""

    section: str
    name: str
    value: Any
    source: str
    allowed: str
    help: str


def describe_options(cls: type[Configurable], config: Mapping[str, Any],
                     instance: Configurable | None = None, section: str | None = None,
                     ) -> list[OptionRow]:
    """The options of ``cls``: the value ``instance`` has (or a new one would get from
    ``config``), where it comes from, what is allowed and what it means."""
    rows = []
    for name, trait in sorted(cls.class_traits(config=True).items()):
        if isinstance(instance, FlameConfigurable):
            value, source = getattr(instance, name), instance.option_source(name)
        elif instance is not None:
            found, _, key = _configured(cls, instance.config, name)
            value = getattr(instance, name)
            source = f"c.{key} ({_config_origin(key)})" if found else DEFAULT
            if not found and value != trait.default():
                source = "set at runtime"
        else:
            found, value, key = _configured(cls, config, name)
            if found:
                source = f"c.{key} ({_config_origin(key)})"
            else:
                value, source = trait.default(), DEFAULT
        rows.append(OptionRow(section or cls.__name__, name, value, source, _allowed(trait),
                              " ".join((trait.help or "").split())))
    return rows


def render_rows(rows: Iterable[OptionRow]) -> str:
    """``%flame config``'s text: one line per option, grouped by class."""
    out: list[str] = []
    section = None
    for row in rows:
        if row.section != section:
            section = row.section
            out.append(f"{section}:")
        out.append(f"  {row.name} = {row.value!r}   [{row.source}]")
        out.append(f"      {row.help}")
    return "\n".join(out)


def reference_markdown(classes: Iterable[type[Configurable]], intro: bool = True) -> str:
    """The configuration reference (docs/configuration.md), generated from the traits;
    ``intro=False``: the tables only."""
    out = ["# Configuration reference", "",
           "<!-- Generated by `jupyter flame config --reference`; do not edit by hand. -->", "",
           "Set these in `ipython_config.py` (or a profile, or on the kernel's command line as",
           "`--Pool.max=4`); an explicit keyword in code wins. `%flame config` shows every",
           "option, its value in the running kernel and where the value came from.", ""
           ] if intro else []
    for cls in classes:
        doc = " ".join((cls.__doc__ or "").strip().split("\n\n")[0].split())
        out += [f"## `{cls.__name__}`", "", doc, "",
                "| option | default | allowed | meaning |", "|---|---|---|---|"]
        for name, trait in sorted(cls.class_traits(config=True).items()):
            help_text = " ".join((trait.help or "").split()).replace("|", "\\|")
            allowed = _allowed(trait).replace("|", "\\|")
            out.append(f"| `c.{cls.__name__}.{name}` | `{trait.default()!r}` | {allowed} | "
                       f"{help_text} |")
        out.append("")
    return "\n".join(out)
