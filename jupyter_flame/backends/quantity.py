"""Kubernetes quantities (``"500m"``, ``"24Gi"``, ``"1E9"``), parsed by the Kubernetes client.

The one grammar of the product: the magic's ``--cpu``/``--memory``, ``RunnerPodTemplate`` and
the pod clone all use :func:`parse_quantity`, which is ``kubernetes.utils.parse_quantity`` (the
official client's reading of the API's grammar) with errors that name the option.
"""

from __future__ import annotations

from decimal import Decimal
from fractions import Fraction

from jupyter_flame.errors import ConfigError

__all__ = ["parse_quantity"]


def parse_quantity(value: object, option: str = "quantity") -> Fraction:
    """``value`` (a quantity string, or a plain number) as an exact, non-negative Fraction.

    Raises
    ------
    ConfigError
        If ``value`` is not a quantity, or is negative; the message names ``option``.
    """
    example = "'2', '500m', '1.5', '24Gi' or '1E9'"
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ConfigError(f"{option}={value!r} is not a Kubernetes quantity (e.g. {example})")
    if isinstance(value, str):
        from kubernetes.utils import parse_quantity as k8s_parse_quantity

        text = value.strip()
        try:
            amount: Decimal = k8s_parse_quantity(text)
        except (ValueError, ArithmeticError):
            raise ConfigError(
                f"{option}={value!r} is not a Kubernetes quantity (e.g. {example})") from None
        if not text or text[0] in "+-" or not amount.is_finite():
            raise ConfigError(f"{option}={value!r} is not a Kubernetes quantity (e.g. {example})")
        result = Fraction(amount)
    else:
        result = Fraction(str(value))
    if result < 0:
        raise ConfigError(f"{option}={value!r} must not be negative")
    return result
