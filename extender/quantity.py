"""Kubernetes resource quantities ("500m", "16Gi", "1.5", "2e3") as exact numbers.

Only what placement needs: CPU in milli-cores and memory in MiB, both rounded up
the way the kubelet and kube-scheduler round (a request of 1 byte takes 1 MiB of
our coarser unit, never 0).
"""

from __future__ import annotations

import math
import re
from fractions import Fraction

from extender.errors import ObjectError

_SUFFIX: dict[str, Fraction] = {
    "": Fraction(1),
    "n": Fraction(1, 10**9),
    "u": Fraction(1, 10**6),
    "m": Fraction(1, 1000),
    "k": Fraction(10**3),
    "M": Fraction(10**6),
    "G": Fraction(10**9),
    "T": Fraction(10**12),
    "P": Fraction(10**15),
    "E": Fraction(10**18),
    "Ki": Fraction(2**10),
    "Mi": Fraction(2**20),
    "Gi": Fraction(2**30),
    "Ti": Fraction(2**40),
    "Pi": Fraction(2**50),
    "Ei": Fraction(2**60),
}
_QUANTITY = re.compile(
    r"^([+-]?(?:\d+\.?\d*|\.\d+))(?:([eE][+-]?\d+)|(Ki|Mi|Gi|Ti|Pi|Ei|[numkMGTPE]))?$",
    re.ASCII,  # \d would take any script's digits; the API server's grammar has 0-9 only
)
_MIB = 2**20


def parse_quantity(value: object) -> Fraction:
    """A quantity string (or a JSON number) as an exact fraction of its base unit."""
    if isinstance(value, bool):
        raise ObjectError(f"{value!r} is not a quantity")
    if isinstance(value, int):
        return Fraction(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ObjectError(f"{value!r} is not a quantity")
        return Fraction(value)
    if not isinstance(value, str):
        raise ObjectError(f"{value!r} is not a quantity")
    text = value.strip()
    if text.isascii() and text.isdigit():
        return Fraction(int(text))
    match = _QUANTITY.match(text)
    if match is None:
        raise ObjectError(f"{value!r} is not a quantity")
    number, exponent, suffix = match.groups()
    amount = Fraction(number)
    if exponent:
        power = int(exponent[1:])
        if abs(power) > 30:
            raise ObjectError(f"{value!r} is out of range")
        amount *= Fraction(10) ** power
    return amount * _SUFFIX[suffix or ""]


# The shapes the API server writes back almost always ("500m", "16Gi", "4"), in whole
# numbers: a fast path with integer arithmetic, the exact parser for the rest.
_SIMPLE = re.compile(r"^(\d{1,15})(m|Ki|Mi|Gi|Ti|k|M|G|T)?$", re.ASCII)
_SIMPLE_FACTOR = {
    None: 1,
    "k": 10**3,
    "M": 10**6,
    "G": 10**9,
    "T": 10**12,
    "Ki": 2**10,
    "Mi": 2**20,
    "Gi": 2**30,
    "Ti": 2**40,
}


def _simple(value: object) -> tuple[int, int] | None:
    """``(amount, divisor)`` of a simple quantity string: the value is amount / divisor."""
    if type(value) is not str:
        return None
    match = _SIMPLE.match(value)
    if match is None:
        return None
    digits, suffix = match.groups()
    if suffix == "m":
        return int(digits), 1000
    return int(digits) * _SIMPLE_FACTOR[suffix], 1


def _ceil_div(numerator: int, denominator: int) -> int:
    return -(-numerator // denominator)


def cpu_milli(value: object) -> int:
    """CPU cores as milli-cores, rounded up."""
    simple = _simple(value)
    if simple is not None:
        return _nonnegative(_ceil_div(simple[0] * 1000, simple[1]), value)
    return _nonnegative(math.ceil(parse_quantity(value) * 1000), value)


def memory_mib(value: object) -> int:
    """Bytes as MiB, rounded up."""
    simple = _simple(value)
    if simple is not None:
        return _nonnegative(_ceil_div(simple[0], simple[1] * _MIB), value)
    return _nonnegative(math.ceil(parse_quantity(value) / _MIB), value)


def count(value: object) -> int:
    """A whole count (GPUs, milli-GPU), rounded up as the API server rounds extended resources."""
    simple = _simple(value)
    if simple is not None:
        return _nonnegative(_ceil_div(simple[0], simple[1]), value)
    return _nonnegative(math.ceil(parse_quantity(value)), value)


def _nonnegative(amount: int, value: object) -> int:
    if amount < 0:
        raise ObjectError(f"{value!r} is negative")
    if amount > 2**62:
        raise ObjectError(f"{value!r} is out of range")
    return amount
