"""The stand-in's one kubeconfig reader/writer and its one quantity grammar (pure)."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import pytest

from jupyter_flame.sim.kubeconfig import current_context, kubeconfig_text
from jupyter_flame.sim.quantity import QuantityError, canonical, parse, parse_quantity


@pytest.mark.parametrize(("text", "value", "fmt", "stored"), [
    ("1E9", Fraction(10**9), "exponent", "1e9"),
    ("1e3", Fraction(1000), "exponent", "1e3"),
    ("1Gi", Fraction(2**30), "binary", "1Gi"),
    ("2048Mi", Fraction(2**31), "binary", "2Gi"),
    ("500m", Fraction(1, 2), "decimal", "500m"),
    ("1000m", Fraction(1), "decimal", "1"),
    (0.5, Fraction(1, 2), "decimal", "500m"),
    (3, Fraction(3), "decimal", "3"),
])
def test_one_grammar_for_server_and_scheduler(text: object, value: Fraction, fmt: str,
                                              stored: str) -> None:
    assert parse(text) == (value, fmt)
    assert parse_quantity(text) == value  # type: ignore[arg-type]
    assert canonical(text) == stored


@pytest.mark.parametrize("bad", ["1Q", "abc", "", "1.2.3", True])
def test_not_a_quantity(bad: object) -> None:
    with pytest.raises(QuantityError):
        parse(bad)
    with pytest.raises(QuantityError, match="is not a"):
        parse_quantity(bad)  # type: ignore[arg-type]


def test_kubeconfig_round_trip_and_derived_token(tmp_path: Path) -> None:
    admin = tmp_path / "admin.kubeconfig"
    admin.write_text(kubeconfig_text("https://127.0.0.1:6443/", "admin-token", "default",
                                     "-----BEGIN CERTIFICATE-----\nX\n-----END CERTIFICATE-----\n"))
    current = current_context(admin)
    assert current.server == "https://127.0.0.1:6443"
    assert current.user == {"token": "admin-token"} and current.namespace == "default"
    assert "certificate-authority-data" in current.cluster
    notebook = tmp_path / "kubeconfig"
    notebook.write_text(kubeconfig_text(current.server, "nb-token", "ml", cluster=current.cluster,
                                        user="jupyter-flame-notebook"))
    derived = current_context(notebook)
    assert derived.cluster == current.cluster  # the same server and CA
    assert (derived.user_name, derived.user, derived.namespace) == (
        "jupyter-flame-notebook", {"token": "nb-token"}, "ml")


def test_a_broken_kubeconfig_names_what_is_missing(tmp_path: Path) -> None:
    path = tmp_path / "kc"
    path.write_text("apiVersion: v1\ncurrent-context: gone\ncontexts: []\n")
    with pytest.raises(ValueError, match=r"no context named 'gone'"):
        current_context(path)
