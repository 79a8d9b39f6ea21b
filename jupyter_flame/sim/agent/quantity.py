"""Kubernetes resource quantities (``500m``, ``1Gi``, ``2e3``) as exact numbers.

Pure: no I/O. Quantities become :class:`fractions.Fraction` so that sums and
comparisons are exact, like ``resource.Quantity`` in Go.
"""

from __future__ import annotations

import re
from fractions import Fraction

__all__ = ["QuantityError", "parse_quantity", "format_cpu_millis"]

_BINARY = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}
_DECIMAL = {
    "n": Fraction(1, 10**9),
    "u": Fraction(1, 10**6),
    "m": Fraction(1, 1000),
    "": Fraction(1),
    "k": Fraction(10**3),
    "M": Fraction(10**6),
    "G": Fraction(10**9),
    "T": Fraction(10**12),
    "P": Fraction(10**15),
    "E": Fraction(10**18),
}
_PATTERN = re.compile(
    r"^(?P<sign>[+-]?)(?P<num>\d+(?:\.\d*)?|\.\d+)"
    r"(?:(?P<bin>Ki|Mi|Gi|Ti|Pi|Ei)|(?P<exp>[eE][+-]?\d+)|(?P<dec>[numkMGTPE]?))$"
)


class QuantityError(ValueError):
    """A string is not a Kubernetes quantity."""


def parse_quantity(value: str | int | float) -> Fraction:
    """Parse a Kubernetes quantity into an exact number.

    Parameters
    ----------
    value : str or int or float
        ``"100m"``, ``"1.5"``, ``"2Gi"``, ``"1e3"``, ``"12k"`` or a plain number.

    Returns
    -------
    fractions.Fraction
        The value in base units (cores, bytes, devices).

    Raises
    ------
    QuantityError
        If ``value`` is not a quantity; the message names the value.
    """
    if isinstance(value, bool):
        raise QuantityError(f"quantity {value!r} is not a number")
    if isinstance(value, int):
        return Fraction(value)
    if isinstance(value, float):
        return Fraction(str(value))
    match = _PATTERN.match(value.strip())
    if match is None:
        raise QuantityError(
            f"quantity {value!r} is not a Kubernetes quantity (e.g. '500m', '2', '1Gi', '1e3')"
        )
    number = Fraction(match["num"])
    if match["bin"]:
        number *= _BINARY[match["bin"]]
    elif match["exp"]:
        number *= Fraction(10) ** int(match["exp"][1:])
    else:
        number *= _DECIMAL[match["dec"] or ""]
    return -number if match["sign"] == "-" else number


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
