"""Kubernetes resource quantities (``500m``, ``1Gi``, ``2e3``) for the whole stand-in (pure).

One grammar for the API server (which stores quantities in their canonical form, as the real
server does: ``"1000m"`` becomes ``"1"``, ``0.5`` becomes ``"500m"``, ``"2048Mi"`` becomes
``"2Gi"``; the suffix family of the input is kept and values finer than nano are rounded up)
and for the agent's scheduler (which sums and compares them exactly, as
:class:`fractions.Fraction`, like ``resource.Quantity`` in Go).

The stand-in keeps its own parser rather than the product's (``kubernetes.utils``), so that it
stays an independent check of what the product sends.
"""

from __future__ import annotations

import math
import re
from fractions import Fraction
from typing import Any

__all__ = ["QuantityError", "canonical", "canonical_map", "format_cpu_millis", "parse",
           "parse_quantity"]

_BINARY = {"Ki": 1, "Mi": 2, "Gi": 3, "Ti": 4, "Pi": 5, "Ei": 6}
_DECIMAL = {"n": -9, "u": -6, "m": -3, "": 0, "k": 3, "M": 6, "G": 9, "T": 12, "P": 15, "E": 18}
_DECIMAL_BY_EXP = {v: k for k, v in _DECIMAL.items()}
_BINARY_BY_EXP = {v: k for k, v in _BINARY.items()}
_RE = re.compile(r"^([+-]?(?:\d+\.?\d*|\.\d+))(Ki|Mi|Gi|Ti|Pi|Ei|[eE][+-]?\d+|[numkMGTPE]?)$")


class QuantityError(ValueError):
    """Not a quantity (the real server answers 400 when decoding the body)."""


def parse(value: Any) -> tuple[Fraction, str]:
    """(exact value, format) where format is ``binary``, ``decimal`` or ``exponent``."""
    if isinstance(value, bool):
        raise QuantityError(f"quantity {value!r} is not a number")
    text = repr(value) if isinstance(value, float) else str(value).strip()
    m = _RE.match(text)
    if not m:
        raise QuantityError(f"quantities must match the regular expression "
                            f"'^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$' (got {value!r})")
    number, suffix = Fraction(m.group(1)), m.group(2)
    if suffix in _BINARY:
        return number * 1024 ** _BINARY[suffix], "binary"
    if suffix[:1] in ("e", "E"):
        return number * Fraction(10) ** int(suffix[1:]), "exponent"
    return number * Fraction(10) ** _DECIMAL[suffix], "decimal"


def _decimal(value: Fraction, exponent_style: bool) -> str:
    sign = "-" if value < 0 else ""
    value = abs(value)
    nanos = value * 10**9
    n = math.ceil(nanos)  # round up below nano precision
    if n == 0:
        return "0"
    exp = -9
    while n % 1000 == 0 and exp < 18:
        n //= 1000
        exp += 3
    if exponent_style:
        return f"{sign}{n}" + (f"e{exp}" if exp else "")
    return f"{sign}{n}{_DECIMAL_BY_EXP[exp]}"


def canonical(value: Any) -> str:
    """The canonical string form of a quantity."""
    amount, fmt = parse(value)
    if fmt == "binary" and amount.denominator == 1:
        n = int(abs(amount))
        sign = "-" if amount < 0 else ""
        exp = 0
        while n and n % 1024 == 0 and exp < 6:
            n //= 1024
            exp += 1
        return f"{sign}{n}{_BINARY_BY_EXP.get(exp, '')}" if n else "0"
    return _decimal(amount, fmt == "exponent")


def canonical_map(values: Any) -> Any:
    """Canonicalize every value of a ``ResourceList`` (leaves non-dicts alone)."""
    if not isinstance(values, dict):
        return values
    return {k: canonical(v) for k, v in values.items()}


def parse_quantity(value: str | int | float) -> Fraction:
    """A quantity as an exact number in base units (cores, bytes, devices).

    Raises
    ------
    QuantityError
        If ``value`` is not a quantity; the message names the value.
    """
    try:
        return parse(value)[0]
    except QuantityError:
        raise QuantityError(f"quantity {value!r} is not a Kubernetes quantity (e.g. '500m', "
                            "'2', '1Gi', '1e3')") from None


def format_cpu_millis(value: Fraction) -> str:
    """Render a CPU amount the way Kubernetes prints it (``"2"`` or ``"1500m"``).

    Parameters
    ----------
    value : fractions.Fraction
        Cores.

    Returns
    -------
    str
        Whole cores without a suffix, else rounded-up millicores with ``m``.
    """
    if value.denominator == 1:
        return str(value.numerator)
    millis = -((-value * 1000) // 1)
    return f"{millis}m"
